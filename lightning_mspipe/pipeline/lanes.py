"""The producer lane: one thread that prepares batches ahead of training, its queue and its CUDA stream.

A lane runs ``work(index, run)`` for ``index = start … end − 1`` in order and hands the results
to the training thread through a bounded queue. Each start creates a fresh :class:`LaneRun`
(stop flag, current stage, queue), so a thread that outlives its shutdown (stuck in a C call)
can never touch a later run. On CUDA the lane's thread works on its own stream; the training
stream waits on it when a batch is taken.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable, Generic, TypeVar

import torch

from lightning_mspipe.data.batch import TemporalBatch
from lightning_mspipe.pipeline.errors import PipelineError, PipelineTimeout, Stopped

__all__ = ["POLL", "LaneRun", "ProducerLane"]

log = logging.getLogger(__name__)

POLL = 0.05  # seconds between checks of a stop flag while waiting
JOIN_TIMEOUT = 5.0  # longest a shutdown waits for the thread (a stage stuck in C code cannot be interrupted)

T = TypeVar("T")


def join_or_warn(thread: threading.Thread, run: LaneRun, role: str, join_timeout: float,
                 unblock: Callable[[], None] = lambda: None) -> None:
    """Stop ``run`` and wait up to ``join_timeout`` seconds for ``thread``; warn, naming its stage, if it hangs.

    ``unblock`` is called between join attempts (for example to drain a full queue).
    """
    run.stop.set()
    deadline = time.monotonic() + join_timeout
    while thread.is_alive():
        unblock()
        thread.join(timeout=POLL)
        if thread.is_alive() and time.monotonic() > deadline:
            stage, index = run.stage
            message = (
                f"MSPipe pipeline: the {role} thread ({thread.name}) did not stop within {join_timeout:g}s; it is in "
                f"stage '{stage}' of batch {index}, inside a call that cannot be interrupted (C code or I/O). "
                "It is left running as a daemon thread and whatever it produces is discarded."
            )
            log.warning(message)
            warnings.warn(message, RuntimeWarning, stacklevel=3)
            return


class LaneRun:
    """One run of a lane: its stop flag and the stage it is in (for messages).

    The main thread's inline work uses a run too, which is never stopped.
    """

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.stage: tuple[str, int] = ("thread set-up", -1)

    def enter(self, stage: str, index: int) -> None:
        """Record that ``stage`` of batch ``index`` starts; raise :class:`Stopped` if the run was stopped."""
        self.stage = (stage, index)
        if self.stop.is_set():
            raise Stopped


@dataclass
class _Failure:
    stage: str
    index: int
    error: BaseException


class _ThreadRun(LaneRun, Generic[T]):
    def __init__(self, capacity: int) -> None:
        super().__init__()
        self.queue: queue.Queue[T | _Failure] = queue.Queue(maxsize=capacity)
        self.thread: threading.Thread | None = None

    def put(self, item: T | _Failure) -> None:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=POLL)
                return
            except queue.Full:
                continue
        raise Stopped


class ProducerLane(Generic[T]):
    """A producer thread with a bounded hand-over queue, started per segment and shut down with a deadline.

    Args:
        name: The thread's name.
        capacity: Items the queue holds (prepared but not yet taken).
        device: The compute device; on CUDA the thread sets it and works on its own stream.
        timeout: Seconds :meth:`take` waits for one item before it raises :class:`PipelineTimeout`.
        describe: Extra context for the timeout message (for example the memory version).
        join_timeout: Seconds :meth:`shutdown` waits for the thread to end.
    """

    def __init__(
        self,
        name: str,
        capacity: int,
        device: torch.device,
        timeout: float,
        describe: Callable[[], str] = lambda: "",
        join_timeout: float = JOIN_TIMEOUT,
    ) -> None:
        self.name, self.capacity, self.device, self.timeout = name, capacity, device, timeout
        self.describe, self.join_timeout = describe, join_timeout
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self._run: _ThreadRun[T] | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self, work: Callable[[int, LaneRun], T], start: int, end: int, on_exit: Callable[[], None]) -> None:
        """Start a thread that puts ``work(index, run)`` for ``index = start … end − 1``; then calls ``on_exit``."""
        self.shutdown()
        run: _ThreadRun[T] = _ThreadRun(self.capacity)
        run.thread = threading.Thread(target=self._main, args=(run, work, start, end, on_exit), name=self.name, daemon=True)
        self._run = run
        run.thread.start()

    def _main(self, run: _ThreadRun[T], work: Callable[[int, LaneRun], T], start: int, end: int,
              on_exit: Callable[[], None]) -> None:
        threads = None
        try:
            run.stage = ("thread set-up", start)
            if self.stream is None:
                previous = torch.get_num_threads()
                torch.set_num_threads(1)  # leave the cores to the training step (DESIGN §5)
                threads = previous
            else:
                torch.cuda.set_device(self.device)
            with torch.cuda.stream(self.stream) if self.stream is not None else nullcontext():
                for index in range(start, end):
                    run.put(work(index, run))
        except Stopped:
            pass
        except BaseException as error:  # re-raised in the main thread by take()
            try:
                run.put(_Failure(run.stage[0], run.stage[1], error))
            except Stopped:
                pass
        finally:
            if threads is not None:
                torch.set_num_threads(threads)  # a thread-pool backend may share the setting with the main thread
            on_exit()

    def shutdown(self) -> None:
        """Stop the thread and wait up to ``join_timeout`` seconds for it; warn, naming its stage, if it hangs."""
        run, self._run = self._run, None
        if run is None or run.thread is None:
            return

        def drain() -> None:  # unblock a thread waiting on a full queue
            try:
                run.queue.get_nowait()
            except queue.Empty:
                pass

        join_or_warn(run.thread, run, "producer", self.join_timeout, unblock=drain)

    def running(self) -> bool:
        """Whether a run is started and not shut down."""
        return self._run is not None

    # ------------------------------------------------------------------ hand-over
    def take(self, index: int, check: Callable[[], None] = lambda: None) -> T:
        """The next item, which must be batch ``index``'s; a failure in the thread is re-raised here.

        ``check`` is called while waiting and may raise (for example a failure of another lane).

        Raises:
            PipelineTimeout: Nothing arrived within ``timeout`` seconds (the message names the thread's stage).
            PipelineError: The thread failed (naming stage and batch) or ended early.
        """
        run = self._run
        assert run is not None and run.thread is not None, "take() without a started lane"
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                item = run.queue.get(timeout=POLL)
                break
            except queue.Empty:
                check()
                if time.monotonic() > deadline:
                    stage, at = run.stage
                    raise PipelineTimeout(
                        f"MSPipe pipeline: training waited {self.timeout:g}s for batch {index}; the producer is in "
                        f"stage '{stage}' of batch {at}{self.describe()}. Raise `timeout` if stages are this slow."
                    ) from None
                if not run.thread.is_alive() and run.queue.empty():
                    raise PipelineError(f"MSPipe pipeline: the producer thread ended before batch {index}.")
        if isinstance(item, _Failure):
            if isinstance(item.error, PipelineError):  # a timeout in the thread keeps its type and message
                raise type(item.error)(str(item.error)) from item.error
            raise PipelineError(
                f"MSPipe pipeline: stage '{item.stage}' failed on batch {item.index}: "
                f"{type(item.error).__name__}: {item.error}"
            ) from item.error
        return item

    # ------------------------------------------------------------------ devices
    def in_thread(self) -> bool:
        """Whether the caller is this lane's current thread."""
        return self._run is not None and threading.current_thread() is self._run.thread

    def to_device(self, batch: TemporalBatch) -> TemporalBatch:
        """Move a batch to the compute device; in the lane's thread, an asynchronous copy from pinned memory."""
        if self.device.type == "cpu":
            return batch
        if self.in_thread():
            return batch.pin_memory().to(self.device, non_blocking=True)
        return batch.to(self.device)

    def synchronize(self) -> None:
        """In the lane's thread on CUDA: wait for the stage's copies (a host sync, so stage times are real)."""
        if self.stream is not None and self.in_thread():
            self.stream.synchronize()

    def finish_transfer(self, batch: TemporalBatch) -> TemporalBatch:
        """Hand a batch from the lane's stream to the current (training) stream."""
        if self.stream is not None:
            current = torch.cuda.current_stream(self.device)
            current.wait_stream(self.stream)
            batch.record_stream(current)
        return batch
