"""The writer lane: stage 5 (memory write) off the training thread, in batch order.

The training thread submits each batch's :class:`~lightning_mspipe.memory.store.MemoryWrite`
and goes on with the next batch; one thread applies the writes in submission order, so they
commit in batch order, and the store's version advances only when a write is complete. Before
applying the write of batch ``i`` the
writer calls ``hold(i)`` (the exact-mode hold of the staleness gate). A failure in the writer
is re-raised in the training thread naming the batch; every wait has a timeout that names
what it waited for.

With several ranks, ``exchange`` maps each rank's write to the write of all ranks merged (an
all-gather on the exchange's own process group, so it never interleaves with the training
thread's gradient collectives); it runs in this thread in batch order, so every rank issues
the same collectives in the same order.

On CUDA the thread works on its own stream, which waits (device-side, ``wait_event``) for an
event the training stream recorded after the step that computed the write; the thread then
waits on the host only for the write's own completion: the store's write event (store on the
GPU), or the device → host copy into a pinned slot before the host scatter (store in host
memory, :mod:`lightning_mspipe.pipeline.writeback`). Stage 5's time comes from CUDA events on
the writer's stream.
"""

from __future__ import annotations

import queue
import threading
import time
from contextlib import nullcontext
from typing import Any, Callable

import torch

from lightning_mspipe.memory.ordering import CudaStreams
from lightning_mspipe.memory.store import MemoryStore, MemoryWrite
from lightning_mspipe.pipeline.errors import PipelineError, PipelineTimeout, Stopped, stage_failure
from lightning_mspipe.pipeline.lanes import JOIN_TIMEOUT, POLL, LaneRun, join_or_warn
from lightning_mspipe.pipeline.profile import PipelineProfile, StageTimer, cuda_timing_events
from lightning_mspipe.pipeline.writeback import make_write_back

__all__ = ["WriterLane"]

_Item = tuple[int, MemoryWrite, torch.cuda.Event | None] | None  # None ends the thread


class WriterLane:
    """One thread that applies memory writes in the order they are submitted.

    The thread starts with the first write after a :meth:`flush` and ends at the next flush, so
    an idle pipeline holds no thread.

    Args:
        store: The memory store written to.
        device: The compute device (where the writes are computed); on CUDA the thread works on
            its own stream (see the module docstring).
        profile: Receives stage 5's times (``"write"``).
        timeout: Seconds :meth:`flush` waits for the pending writes before it raises.
        hold: Called with the batch index before each write (the exact-mode hold); may block.
        fault_hook: Test hook called as ``hook("write", index, stop_event)`` before each write.
        join_timeout: Seconds :meth:`close` waits for the thread to end.
        exchange: Maps this rank's write of a batch to the write to apply (``exchange(index, write)``;
            the distributed strategy merges all ranks' writes), or ``None``: apply it as it is.
        bound: The largest staleness bound in use (the write-back ring has ``bound + 2`` pinned slots).
    """

    def __init__(
        self,
        store: MemoryStore,
        device: torch.device,
        profile: PipelineProfile,
        timeout: float,
        hold: Callable[[int], None] = lambda index: None,
        fault_hook: Callable[[str, int, Any], None] | None = None,
        join_timeout: float = JOIN_TIMEOUT,
        exchange: Callable[[int, MemoryWrite], MemoryWrite] | None = None,
        bound: int = 0,
    ) -> None:
        self.store, self.profile, self.timeout, self.hold = store, profile, timeout, hold
        self.exchange = exchange
        self.fault_hook, self.join_timeout = fault_hook, join_timeout
        self.device = device
        cuda = device.type == "cuda"
        self.stream = torch.cuda.Stream(device) if cuda else None
        self.streams = CudaStreams(device) if cuda else None
        self.timer = StageTimer(profile, cuda_timing_events(device) if cuda else None)
        self.write_back = make_write_back(device, bound, timeout)
        self._cv = threading.Condition()
        self._queue: queue.Queue[_Item] = queue.Queue()
        self._submitted = self._committed = 0
        self._failure: PipelineError | None = None
        self._run: LaneRun | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ training thread
    def submit(self, index: int, write: MemoryWrite) -> None:
        """Queue the write of batch ``index`` (after the one submitted before it); returns at once."""
        self.raise_if_failed()
        if self._thread is None:
            self._start()
        event = None
        if write.memory.is_cuda:  # the writer must wait for the step that computed the write
            event = torch.cuda.Event()
            event.record(torch.cuda.current_stream(write.memory.device))
        with self._cv:
            self._submitted += 1
        self._queue.put((index, write, event))

    def write_now(self, index: int, write: MemoryWrite) -> None:
        """Apply the write of batch ``index`` on the calling thread, after every write submitted before it.

        Inline segments (``mode="sequential"``, ``"auto"``'s measurements and choice of inline) use
        it: starting and joining the thread for every batch costs more than the write itself.

        Raises:
            PipelineError: This write or an earlier one failed (naming its stage and batch).
            PipelineTimeout: The earlier writes did not complete within ``timeout`` seconds.
        """
        self.flush()
        with self._cv:
            self._submitted += 1
        run = LaneRun()
        try:
            self._write(run, index, write, event=None)  # same thread and stream as the step
        except Exception as error:  # named as a failure on the writer thread would be
            raise stage_failure(*run.stage, error) from error

    def flush(self) -> None:
        """Block until every submitted write is committed.

        Raises:
            PipelineError: A write failed (naming its batch).
            PipelineTimeout: The writes did not complete within ``timeout`` seconds.
        """
        deadline = time.monotonic() + self.timeout
        with self._cv:
            while self._committed < self._submitted and self._failure is None:
                if time.monotonic() > deadline:
                    stage, index = self._run.stage if self._run is not None else ("idle", -1)
                    raise PipelineTimeout(
                        f"MSPipe pipeline: waited {self.timeout:g}s for memory writes to complete "
                        f"({self._submitted - self._committed} pending, memory version {self.store.current_version}); "
                        f"the writer is in stage '{stage}' of batch {index}. Raise `timeout` if writes are this slow."
                    )
                self._cv.wait(timeout=POLL)
        self.raise_if_failed()
        self._end_thread()

    def raise_if_failed(self) -> None:
        """Re-raise a failure of the writer thread in the caller."""
        if self._failure is not None:
            raise type(self._failure)(str(self._failure)) from (self._failure.__cause__ or self._failure)

    def describe(self) -> str:
        """Where the writer is, for messages."""
        if self._run is None:
            return "the writer is idle"
        stage, index = self._run.stage
        return f"the writer is in stage '{stage}' of batch {index}"

    def close(self) -> None:
        """Stop the thread without applying pending writes (on an error or at teardown); warn if it hangs."""
        if self._run is not None:
            self._run.stop.set()
        self._end_thread()
        with self._cv:
            self._submitted = self._committed = 0
            self._failure = None

    def _end_thread(self) -> None:
        run, thread, items = self._run, self._thread, self._queue
        self._run, self._thread, self._queue = None, None, queue.Queue()
        if run is None or thread is None:
            return
        items.put(None)
        join_or_warn(thread, run, "writer", self.join_timeout)

    # ------------------------------------------------------------------ writer thread
    def _start(self) -> None:
        self._run = LaneRun()
        self._thread = threading.Thread(target=self._main, args=(self._run, self._queue), name="mspipe-writer",
                                        daemon=True)
        self._thread.start()

    def _main(self, run: LaneRun, items: queue.Queue[_Item]) -> None:
        try:
            run.stage = ("thread set-up", -1)
            if self.stream is not None:
                torch.cuda.set_device(self.device)
            with torch.cuda.stream(self.stream) if self.stream is not None else nullcontext():
                while (item := items.get()) is not None:
                    self._write(run, *item)
        except Stopped:
            pass
        except BaseException as error:  # re-raised in the training thread by submit/flush
            failure = stage_failure(*run.stage, error)  # a timeout of the hold keeps its type and message
            with self._cv:
                self._failure = failure
                self._cv.notify_all()

    def _write(self, run: LaneRun, index: int, write: MemoryWrite, event: torch.cuda.Event | None) -> None:
        run.enter("write", index)
        if self.fault_hook is not None:
            self.fault_hook("write", index, run.stop)
        run.enter("hold write", index)
        self.hold(index)
        run.enter("write", index)
        if event is not None and self.streams is not None:
            self.streams.wait(event)  # this stream starts after the step's kernels (no host wait)
        if self.exchange is not None:
            run.enter("exchange write", index)
            write = self.exchange(index, write)
            run.enter("write", index)
        with self.timer.span("write", index):
            if self.write_back is not None and write.memory.is_cuda and self.store.device.type == "cpu":
                with self.write_back.to_host(write, run.raise_if_stopped) as on_host:
                    self.store.scatter(on_host)
            else:
                self.store.scatter(write, synchronize=True)  # the version advances once the device is done
        with self._cv:
            self._committed += 1
            self._cv.notify_all()
