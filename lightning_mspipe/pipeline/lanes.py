"""Producer lanes: a thread that prepares items ahead of its consumer and hands them over through a bounded queue.

A lane runs ``work(index, run)`` for ``index = start … end − 1`` in order and hands the results
to its consumer (the training thread, or the next lane) through a queue of ``capacity`` items.
The pipeline chains two lanes: the **sampler** (stage 1) and the **fetcher** (stages 2 and 3,
which take its samples); the writer lane (stage 5) is :mod:`lightning_mspipe.pipeline.writer`.
Each start creates a fresh :class:`LaneRun` (stop flag, current stage, queue), so a thread
that outlives its shutdown (stuck in a C call) can never touch a later run. Every wait has a
timeout, and :func:`shutdown_lanes` stops several lanes at once and joins them within one
deadline.
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

from lightning_mspipe.pipeline.errors import PipelineError, PipelineTimeout, Stopped, stage_failure

__all__ = ["JOIN_TIMEOUT", "POLL", "THREAD_PREFIX", "LaneRun", "ProducerLane", "join_or_warn", "shutdown_lanes"]

log = logging.getLogger(__name__)

POLL = 0.05  # seconds between checks of a stop flag while waiting
JOIN_TIMEOUT = 5.0  # longest a shutdown waits for its threads (a stage stuck in C code cannot be interrupted)
THREAD_PREFIX = "mspipe-"  # every pipeline thread's name starts with it (tests check that none survives)

T = TypeVar("T")


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
        self.raise_if_stopped()

    def raise_if_stopped(self) -> None:
        """Raise :class:`Stopped` if the run was asked to stop."""
        if self.stop.is_set():
            raise Stopped


def join_or_warn(thread: threading.Thread, run: LaneRun, role: str, join_timeout: float, deadline: float | None = None,
                 unblock: Callable[[], None] = lambda: None) -> None:
    """Stop ``run`` and wait for ``thread`` for ``join_timeout`` seconds (or until ``deadline``, a
    ``time.monotonic()`` shared by several joins); warn, naming its stage, if it hangs.

    ``unblock`` is called between join attempts (for example to drain a full queue).
    """
    run.stop.set()
    deadline = time.monotonic() + join_timeout if deadline is None else deadline
    while thread.is_alive():
        unblock()
        thread.join(timeout=POLL)
        if thread.is_alive() and time.monotonic() > deadline:
            stage, index = run.stage
            message = (
                f"MSPipe pipeline: the {role} thread ({thread.name}) did not stop within {join_timeout:g}s; it is in stage "
                f"'{stage}' of batch {index}, inside a call that cannot be interrupted (C code or I/O). "
                "It is left running as a daemon thread and whatever it produces is discarded."
            )
            log.warning(message)
            warnings.warn(message, RuntimeWarning, stacklevel=3)
            return


class _IntraOpThreads:
    """One intra-op thread for lane threads on a CPU, restored when the last of them ends.

    With OpenMP the setting is per thread, so every lane thread sets it; with a thread-pool
    backend that shares it with the main thread, restoring per thread could leave the main
    thread at 1 when lanes end out of order, so only the last lane to end restores the value
    the first one found.
    """

    _lock = threading.Lock()
    _active = 0
    _saved = 0

    @classmethod
    def enter(cls) -> None:
        with cls._lock:
            if cls._active == 0:
                cls._saved = torch.get_num_threads()
            torch.set_num_threads(1)  # leave the cores to the training step (DESIGN §5)
            cls._active += 1

    @classmethod
    def exit(cls) -> None:
        with cls._lock:
            cls._active -= 1
            if cls._active == 0:
                torch.set_num_threads(cls._saved)


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

    def drain(self) -> None:
        """Take one item, if any (unblocks a thread waiting on a full queue)."""
        try:
            self.queue.get_nowait()
        except queue.Empty:
            pass


class ProducerLane(Generic[T]):
    """A producer thread with a bounded hand-over queue, started per segment and shut down with a deadline.

    Args:
        name: The thread's name (starts with :data:`THREAD_PREFIX`).
        role: What the lane is called in messages (``"sampler"``, ``"fetcher"``).
        capacity: Items the queue holds (prepared but not yet taken).
        device: The compute device: on CUDA the thread sets it; on a CPU it runs with one intra-op
            thread (restored when it ends).
        timeout: Seconds :meth:`take` waits for one item before it raises :class:`PipelineTimeout`.
        describe: Extra context for the timeout message (for example the memory version).
        join_timeout: Seconds :meth:`shutdown` waits for the thread to end.
        stream: Whether the thread works on a CUDA stream of its own (on CUDA only; :attr:`stream`).
    """

    def __init__(
        self,
        name: str,
        role: str,
        capacity: int,
        device: torch.device,
        timeout: float,
        describe: Callable[[], str] = lambda: "",
        join_timeout: float = JOIN_TIMEOUT,
        stream: bool = False,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"ProducerLane {name}: capacity must be ≥ 1 item, got {capacity}.")
        self.name, self.role, self.capacity, self.device, self.timeout = name, role, capacity, device, timeout
        self.describe, self.join_timeout = describe, join_timeout
        self.stream = torch.cuda.Stream(device) if stream and device.type == "cuda" else None
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
        one_thread = False
        try:
            run.stage = ("thread set-up", start)
            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)
            else:
                _IntraOpThreads.enter()
                one_thread = True
            with torch.cuda.stream(self.stream) if self.stream is not None else nullcontext():
                for index in range(start, end):
                    run.put(work(index, run))
        except Stopped:
            pass
        except BaseException as error:  # re-raised in the consumer by take()
            try:
                run.put(_Failure(run.stage[0], run.stage[1], error))
            except Stopped:
                pass
        finally:
            if one_thread:
                _IntraOpThreads.exit()
            on_exit()

    def request_stop(self) -> None:
        """Ask the current run to stop (without waiting; :meth:`shutdown` waits)."""
        if self._run is not None:
            self._run.stop.set()

    def shutdown(self, deadline: float | None = None) -> None:
        """Stop the thread and wait for it until ``deadline`` (default: ``join_timeout`` from now); warn if it hangs."""
        run, self._run = self._run, None
        if run is None or run.thread is None:
            return
        join_or_warn(run.thread, run, self.role, self.join_timeout, deadline, unblock=run.drain)

    def running(self) -> bool:
        """Whether a run is started and not shut down."""
        return self._run is not None

    def where(self) -> str:
        """Where the lane is, for messages: ``"the sampler is in stage 'sample' of batch 4"``."""
        run = self._run
        if run is None:
            return f"the {self.role} is not running"
        stage, index = run.stage
        return f"the {self.role} is in stage '{stage}' of batch {index}"

    # ------------------------------------------------------------------ hand-over
    def take(self, index: int, check: Callable[[], None] = lambda: None, waiter: str = "training") -> T:
        """The next item, which must be batch ``index``'s; a failure in the thread is re-raised here.

        ``check`` is called while waiting and may raise (a failure of another lane, or
        :class:`Stopped` when the taking lane is stopped).

        Raises:
            PipelineTimeout: Nothing arrived within ``timeout`` seconds (the message names the lane's stage).
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
                    raise PipelineTimeout(
                        f"MSPipe pipeline: {waiter} waited {self.timeout:g}s for batch {index}; {self.where()}"
                        f"{self.describe()}. Raise `timeout` if stages are this slow."
                    ) from None
                if not run.thread.is_alive() and run.queue.empty():
                    raise PipelineError(f"MSPipe pipeline: the {self.role} thread ended before batch {index}.")
        if isinstance(item, _Failure):
            if isinstance(item.error, PipelineError):  # a timeout or an upstream lane's failure keeps type and message
                raise type(item.error)(str(item.error)) from item.error
            raise stage_failure(item.stage, item.index, item.error)
        return item


def shutdown_lanes(lanes: list[ProducerLane], join_timeout: float) -> None:
    """Stop every lane at once, then join their threads within one deadline of ``join_timeout`` seconds."""
    for lane in lanes:
        lane.request_stop()
    deadline = time.monotonic() + join_timeout
    for lane in lanes:
        lane.shutdown(deadline)
