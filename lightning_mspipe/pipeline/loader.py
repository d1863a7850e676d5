"""PipelinedLoader: stages 1–3 of upcoming batches in a background thread, gated by memory version."""

from __future__ import annotations

import logging
import queue
import threading
import time
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch

from lightning_mspipe.data.batch import TemporalBatch
from lightning_mspipe.data.loader import TemporalBatchLoader
from lightning_mspipe.memory.store import MemorySnapshot, MemoryStore
from lightning_mspipe.pipeline.profile import PipelineProfile, StageClock
from lightning_mspipe.pipeline.schedule import MODES, auto_staleness, parse_max_staleness
from lightning_mspipe.pipeline.stages import fetch_memory

__all__ = ["PipelineError", "PipelineTimeout", "PipelinedLoader"]

log = logging.getLogger(__name__)

_POLL = 0.05  # seconds between checks of the stop flag while waiting


class PipelineError(RuntimeError):
    """A pipeline stage failed; the message names the stage and the batch."""


class PipelineTimeout(PipelineError):
    """A pipeline wait ran past its timeout; the message says what it waited for."""


class _Stopped(Exception):
    """Internal: the consumer asked the producer to stop."""


@dataclass
class _Failure:
    stage: str
    index: int
    error: BaseException


FaultHook = Callable[[str, int, threading.Event], None]


class PipelinedLoader:
    """Wraps a :class:`~lightning_mspipe.data.loader.TemporalBatchLoader` with MSPipe's pipeline.

    A producer thread runs stage 1 (sample), stage 2 (fetch features) and stage 3 (fetch
    memory) of upcoming batches while the current batch trains. The memory fetch of batch
    ``j`` waits until the store's version is at least ``j − s`` (``s = max_staleness``):

    - ``bounded`` mode also delays the fetch to its latest start that does not stall training
      (from the measured stage times), so it reads the freshest memory it can;
    - ``exact`` mode makes batch ``j`` read exactly version ``max(0, j − s)``: the write of batch
      ``i`` waits (:meth:`before_write`) until batch ``i + s`` has been fetched, so results do
      not depend on timing.

    ``max_staleness="auto"`` first runs ``warmup`` batches without a thread to measure the stage
    times, picks ``s`` with :func:`~lightning_mspipe.pipeline.schedule.auto_staleness`, runs
    ``warmup`` batches pipelined, and keeps whichever was faster (on a CPU the producer and the
    step compete for cores, so the pipeline can cost more than it hides). The bound is
    re-estimated at each epoch start when stage times drifted by more than ``drift``.

    The wrapper is sized and stateful, so Lightning's loop, progress bar and checkpointing work
    unchanged; its state holds the in-flight batches whose memory snapshot predates a
    checkpoint, for exact mid-epoch resume.

    Args:
        loader: The training batch iterable (stages 1 and 2).
        store: The model's memory store.
        max_staleness: ``s ≥ 0`` or ``"auto"``.
        mode: ``"bounded"`` or ``"exact"``.
        device: Where batches go (the compute device).
        timeout: Seconds any single wait may last before it raises :class:`PipelineTimeout`.
        max_auto_staleness: Upper clamp of the automatic bound.
        warmup: Batches per measurement phase of ``"auto"`` (at most a quarter of an epoch, at least 2).
        drift: Relative change of stage times that triggers re-estimation.
        max_batches: Callable giving how many batches of the epoch will be trained (Lightning's
            ``limit_train_batches``), or ``None`` for all.
        fault_hook: Test hook called as ``hook(stage, index, stop_event)`` before each stage.
    """

    def __init__(
        self,
        loader: TemporalBatchLoader,
        store: MemoryStore,
        *,
        max_staleness: int | str = 2,
        mode: str = "bounded",
        device: torch.device | str | None = None,
        timeout: float = 120.0,
        max_auto_staleness: int = 8,
        warmup: int = 8,
        drift: float = 0.25,
        max_batches: Callable[[], int | float] | None = None,
        fault_hook: FaultHook | None = None,
    ) -> None:
        self.max_staleness = parse_max_staleness(max_staleness)
        if mode not in MODES:
            raise ValueError(f"PipelinedLoader: unknown mode {mode!r}; choose one of {MODES}.")
        if mode == "exact" and self.max_staleness == "auto":
            raise ValueError("PipelinedLoader: mode='exact' needs a fixed max_staleness (an int), not 'auto'.")
        if timeout <= 0:
            raise ValueError(f"PipelinedLoader: timeout must be > 0 seconds, got {timeout}.")
        if max_auto_staleness < 0:
            raise ValueError(f"PipelinedLoader: max_auto_staleness must be ≥ 0, got {max_auto_staleness}.")
        self.loader, self.store, self.mode = loader, store, mode
        self.device = torch.device(device) if device is not None else store.device
        self.timeout, self.max_auto_staleness, self.warmup, self.drift = timeout, max_auto_staleness, warmup, drift
        self.max_batches = max_batches
        self.fault_hook = fault_hook
        self.profile = PipelineProfile()
        self.bound = 0 if self.max_staleness == "auto" else int(self.max_staleness)
        self.threaded = self.max_staleness != "auto"  # "auto" decides after measuring
        self.decided = self.max_staleness != "auto"
        self.choices: list[dict[str, Any]] = []
        self._capacity = (self.max_auto_staleness if self.max_staleness == "auto" else self.bound) + 2
        self._reset_epoch_state()
        self._restored_snapshots: dict[int, tuple[MemorySnapshot, torch.Tensor]] = {}
        self._choice_times: dict[str, float] | None = None
        self._write_seconds: dict[int, float] = {}
        self.threaded_now = False
        self._stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int) -> None:
        """Forward the trainer's epoch to the wrapped loader (it seeds the epoch's random draws)."""
        self.loader.set_epoch(epoch)

    # ------------------------------------------------------------------ epoch state
    def _reset_epoch_state(self) -> None:
        self._cv = threading.Condition()
        self._fetched: dict[int, TemporalBatch] = {}  # fetched, not yet handed to training
        self._fetched_upto = -1  # highest batch index fetched (stage 3 done)
        self._taken_at: dict[int, float] = {}
        self._segment_end = 0
        self._producer_done = True
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=self._capacity)
        self._current_stage = ("idle", -1)

    # ------------------------------------------------------------------ consumer side
    def __iter__(self) -> Iterator[TemporalBatch]:
        start = self.loader.start_epoch()
        cap = len(self) if self.max_batches is None else min(len(self), int(self.max_batches()))
        self._reset_epoch_state()
        self._maybe_reestimate()
        index = start
        try:
            if not self.decided:
                index = yield from self._measure_and_decide(index, cap)
            while index < cap:
                segment = self._threaded_segment if self.threaded else self._inline_segment
                index = yield from segment(index, cap)
        finally:
            self._shutdown()

    def _measure_and_decide(self, index: int, cap: int) -> Iterator[TemporalBatch]:
        """``"auto"``: measure inline, then pipelined with the derived bound; keep the faster."""
        warmup = max(2, min(self.warmup, len(self) // 4))  # short epochs: decide within the first one
        first, inline_end = index, min(index + warmup, cap)
        started = time.perf_counter()
        index = yield from self._inline_segment(index, inline_end)
        inline_rate = (time.perf_counter() - started) / max(index - first, 1)
        self.bound = auto_staleness(self.profile.stage_times(), self.max_auto_staleness)
        piped_end = min(index + warmup, cap)
        started = time.perf_counter()
        done = index
        index = yield from self._threaded_segment(index, piped_end)
        piped_rate = (time.perf_counter() - started) / max(index - done, 1)
        if index - done >= 2:  # enough pipelined batches to compare
            self.threaded = piped_rate < inline_rate
            self.decided = True
        self._record_choice(inline_period=inline_rate, pipelined_period=piped_rate)
        return index

    def _maybe_reestimate(self) -> None:
        if self.max_staleness != "auto" or not self.decided or self._choice_times is None:
            return
        times = self.profile.stage_times().as_dict()
        changed = max(abs(times[k] - v) / max(v, 1e-9) for k, v in self._choice_times.items())
        if changed > self.drift:
            self.bound = auto_staleness(self.profile.stage_times(), self.max_auto_staleness)
            self._record_choice(reason=f"stage times drifted by {changed:.0%}")

    def _record_choice(self, **extra: Any) -> None:
        times = self.profile.stage_times()
        self._choice_times = times.as_dict()
        choice = {"max_staleness": self.bound, "pipelined": self.threaded, **times.as_dict(), **extra}
        self.choices.append(choice)
        log.info("MSPipe auto: max_staleness=%d, pipelined=%s, from stage times (s) %s; %s",
                 self.bound, self.threaded, {k: round(v, 5) for k, v in times.as_dict().items()}, extra)

    def _hand_over(self, batch: TemporalBatch, waited: float) -> TemporalBatch:
        now = time.perf_counter()
        self.profile.record_wait(waited)
        self.profile.record_staleness(batch.index - batch.memory.version)
        with self._cv:
            self._taken_at[batch.index] = now
            self._fetched.pop(batch.index, None)
            self._cv.notify_all()
        self.loader.advance(batch.index)
        return batch

    def _after_step(self, yielded_at: float, index: int) -> None:
        """Stage 4's time: from hand-over to the next request, minus the write (stage 5)."""
        write = self._write_seconds.pop(index, 0.0)
        self.profile.record("train", max(time.perf_counter() - yielded_at - write, 0.0))

    def _inline_segment(self, index: int, end: int) -> Iterator[TemporalBatch]:
        """Stages 1–3 on demand in the main thread (the sequential baseline; staleness 0)."""
        self.threaded_now = False
        self._stop = threading.Event()
        while index < end:
            batch = self._prepare(index, gate=False)
            yielded_at = time.perf_counter()
            yield self._hand_over(batch, waited=0.0)
            self._after_step(yielded_at, index)
            index += 1
        return index

    def _threaded_segment(self, index: int, end: int) -> Iterator[TemporalBatch]:
        self.threaded_now = True
        self._stop = threading.Event()
        self._queue = queue.Queue(maxsize=self._capacity)
        self._segment_end = end
        self._producer_done = False
        self._thread = threading.Thread(target=self._produce, args=(index, end), name="mspipe-producer", daemon=True)
        self._thread.start()
        try:
            while index < end:
                requested = time.perf_counter()
                batch = self._take(index)
                yielded_at = time.perf_counter()
                yield self._hand_over(batch, waited=yielded_at - requested)
                self._after_step(yielded_at, index)
                index += 1
        finally:
            self._shutdown()
        return index

    def _take(self, index: int) -> TemporalBatch:
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                item = self._queue.get(timeout=_POLL)
                break
            except queue.Empty:
                if time.monotonic() > deadline:
                    stage, at = self._current_stage
                    raise PipelineTimeout(
                        f"MSPipe pipeline: training waited {self.timeout:g}s for batch {index}; the producer is in "
                        f"stage '{stage}' of batch {at} (memory version {self.store.current_version}). "
                        "Raise `timeout` if stages are this slow."
                    ) from None
                if self._thread is not None and not self._thread.is_alive() and self._queue.empty():
                    raise PipelineError(f"MSPipe pipeline: the producer thread ended before batch {index}.")
        if isinstance(item, _Failure):
            if isinstance(item.error, PipelineError):  # a timeout in the producer keeps its type and message
                raise type(item.error)(str(item.error)) from item.error
            raise PipelineError(
                f"MSPipe pipeline: stage '{item.stage}' failed on batch {item.index}: "
                f"{type(item.error).__name__}: {item.error}"
            ) from item.error
        assert item.index == index, f"pipeline order broken: expected batch {index}, got {item.index}"
        return self._finish_transfer(item)

    def close(self) -> None:
        """Stop the producer thread now (on an exception, Ctrl-C or teardown); the next epoch starts a new one."""
        self._shutdown()

    def _shutdown(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            while thread.is_alive():
                try:  # unblock a producer waiting on a full queue
                    self._queue.get_nowait()
                except queue.Empty:
                    pass
                thread.join(timeout=_POLL)
        self._producer_done = True
        with self._cv:
            self._cv.notify_all()

    # ------------------------------------------------------------------ writes (called by MemoryUpdate)
    def before_write(self, index: int) -> None:
        """``exact`` mode: hold the write of batch ``index`` until batch ``index + s`` has read memory."""
        if self.mode != "exact" or not self.threaded_now:
            return
        needed = min(index + self.bound, self._segment_end - 1)
        deadline = time.monotonic() + self.timeout
        with self._cv:
            while self._fetched_upto < needed and not self._producer_done:
                if time.monotonic() > deadline:
                    raise PipelineTimeout(
                        f"MSPipe pipeline (exact mode): the memory write of batch {index} waited {self.timeout:g}s "
                        f"for batch {needed} to read memory version {needed - self.bound}."
                    )
                self._cv.wait(timeout=_POLL)

    def after_write(self, index: int, seconds: float) -> None:
        """Record stage 5's time of batch ``index``."""
        self.profile.record("write", seconds)
        self._write_seconds[index] = seconds

    # ------------------------------------------------------------------ producer side
    def _produce(self, start: int, end: int) -> None:
        if self._stream is None:
            torch.set_num_threads(1)  # leave the cores to the training step (DESIGN §5)
        else:
            torch.cuda.set_device(self.device)
        try:
            with torch.cuda.stream(self._stream) if self._stream is not None else nullcontext():
                for index in range(start, end):
                    batch = self._prepare(index, gate=True)
                    self._put(batch)
        except _Stopped:
            pass
        except BaseException as error:  # re-raised in the main thread by _take
            self._put_failure(_Failure(self._current_stage[0], self._current_stage[1], error))
        finally:
            with self._cv:
                self._producer_done = True
                self._cv.notify_all()

    def _put(self, item: Any) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_POLL)
                return
            except queue.Full:
                continue
        raise _Stopped

    def _put_failure(self, failure: _Failure) -> None:
        try:
            self._put(failure)
        except _Stopped:
            pass

    def _stage(self, name: str, index: int) -> StageClock:
        self._current_stage = (name, index)
        if self._stop.is_set():
            raise _Stopped
        if self.fault_hook is not None:
            self.fault_hook(name, index, self._stop)
        return StageClock(self.profile, name)

    def _prepare(self, index: int, gate: bool) -> TemporalBatch:
        """Stages 1–3 of batch ``index``."""
        with self._stage("sample", index):
            batch = self.loader.sample(index)
        with self._stage("features", index):
            batch = self.loader.fetch_features(batch)
            batch = self._to_device(batch)
        restored = self._restored_snapshots.pop(index, None)
        if gate and restored is None:
            self._wait_for_memory(index)
        with self._stage("memory", index):
            if restored is not None:
                batch.memory, batch.memory_index = restored
            else:
                batch = fetch_memory(self.store, batch, self.device)
            self._synchronize()
        with self._cv:
            self._fetched[index] = batch
            self._fetched_upto = max(self._fetched_upto, index)
            self._cv.notify_all()
        return batch

    def _wait_for_memory(self, index: int) -> None:
        """The gate (version ≥ j − s) and, in bounded mode, the delay to the latest non-stalling start."""
        self._current_stage = ("wait for memory", index)
        self._wait_version(max(0, index - self.bound), index, "the staleness gate")
        if self.mode == "exact" or self.bound == 0:
            return
        deadline = None
        started = time.monotonic()
        while self.store.current_version < index:  # not yet fully fresh
            if self._stop.is_set():
                raise _Stopped
            with self._cv:
                taken = self._taken_at.get(index - 1)
            if taken is not None and deadline is None:
                times = self.profile.stage_times()
                margin = 0.1 * times.train + times.memory
                deadline = taken + times.train + times.write - times.memory - margin
            if deadline is not None and time.perf_counter() >= deadline:
                return
            wait = _POLL if deadline is None else min(_POLL, max(deadline - time.perf_counter(), 0.0))
            self.store.wait_for_version(index, timeout=max(wait, 1e-4))
            if time.monotonic() - started > self.timeout:
                return  # the gate is already satisfied; fetch rather than wait any longer

    def _wait_version(self, version: int, index: int, what: str) -> None:
        deadline = time.monotonic() + self.timeout
        while not self.store.wait_for_version(version, timeout=_POLL):
            if self._stop.is_set():
                raise _Stopped
            if time.monotonic() > deadline:
                raise PipelineTimeout(
                    f"MSPipe pipeline: batch {index} waited {self.timeout:g}s at {what} for memory version {version} "
                    f"(it is {self.store.current_version}). Memory writes have stopped: is the MemoryUpdate callback "
                    "installed and is training still running?"
                )

    # ------------------------------------------------------------------ devices
    def _in_producer(self) -> bool:
        return self._thread is not None and threading.current_thread() is self._thread

    def _to_device(self, batch: TemporalBatch) -> TemporalBatch:
        """Move a batch to the compute device; in the producer, an asynchronous copy from pinned memory."""
        if self.device.type == "cpu":
            return batch
        if self._in_producer():
            return batch.pin_memory().to(self.device, non_blocking=True)
        return batch.to(self.device)

    def _synchronize(self) -> None:
        """In the producer on CUDA: wait for the stage's copies on the producer stream."""
        if self._stream is not None and self._in_producer():
            self._stream.synchronize()  # a host sync in the producer thread, so the stage times are real

    def _finish_transfer(self, batch: TemporalBatch) -> TemporalBatch:
        """Hand a batch from the producer stream to the training stream."""
        if self._stream is not None:
            current = torch.cuda.current_stream(self.device)
            current.wait_stream(self._stream)
            batch.record_stream(current)
        return batch

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """The base loader's position and the memory snapshots of fetched, not yet trained batches
        that predate the current memory version (needed for exact resume), as plain tensors."""
        version = self.store.current_version
        with self._cv:
            inflight = {
                index: {"memory": vars(batch.memory.to("cpu")), "memory_index": batch.memory_index.cpu()}
                for index, batch in self._fetched.items()
                if batch.memory is not None and batch.memory.version < version
            }
        return {"loader": self.loader.state_dict(), "inflight": inflight, "bound": self.bound,
                "threaded": self.threaded, "decided": self.decided}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loader.load_state_dict(state["loader"])
        self._restored_snapshots = {
            int(index): (MemorySnapshot(**entry["memory"]).to(self.device), entry["memory_index"].to(self.device))
            for index, entry in state["inflight"].items()
        }
        self.bound, self.threaded, self.decided = state["bound"], state["threaded"], state["decided"]
