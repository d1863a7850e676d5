"""PipelinedLoader: composes the sampler, fetcher and writer lanes, the staleness gate and the auto policy into
Lightning's training iterable."""

from __future__ import annotations

import time
import warnings
from contextlib import AbstractContextManager
from typing import Any, Callable, Iterator

import torch

from lightning_mspipe.data.batch import TemporalBatch
from lightning_mspipe.memory.store import MemorySnapshot, MemoryStore, MemoryWrite
from lightning_mspipe.pipeline.auto import DISCARD, AutoBound
from lightning_mspipe.pipeline.contract import BatchSource
from lightning_mspipe.pipeline.errors import PipelineError, PipelineTimeout
from lightning_mspipe.pipeline.gate import StalenessGate
from lightning_mspipe.pipeline.lanes import JOIN_TIMEOUT, POLL, LaneRun, ProducerLane, shutdown_lanes
from lightning_mspipe.pipeline.profile import PipelineProfile, StageSpan, StageTimer, cuda_timing_events
from lightning_mspipe.pipeline.schedule import check_mode, parse_max_staleness
from lightning_mspipe.pipeline.transfer import BatchTransfer, make_transfer
from lightning_mspipe.pipeline.writer import WriterLane

__all__ = ["FaultHook", "PipelineError", "PipelineTimeout", "PipelinedLoader"]

FaultHook = Callable[[str, int, Any], None]
"""Test hook called as ``hook(stage, index, stop_event)`` before each stage (``"sample"``, ``"features"``,
``"memory"``, ``"write"``)."""


class PipelinedLoader:
    """Wraps a :class:`~lightning_mspipe.pipeline.contract.BatchSource` with MSPipe's pipeline.

    Four lanes run the five stages of upcoming batches while the current batch trains: the
    **sampler** (a :class:`~lightning_mspipe.pipeline.lanes.ProducerLane`) runs stage 1 (sample)
    up to ``s + 2`` batches ahead of the fetcher (batches are seeded by index, so timing does
    not change them); the **fetcher** (a second lane) takes its samples and runs stage 2 (fetch
    features) and stage 3 (fetch memory), one after the other, as they share the host → device
    link; the training thread runs stage 4; the **writer**
    (:class:`~lightning_mspipe.pipeline.writer.WriterLane`) applies stage 5
    (:meth:`submit_write`) in batch order. The best period is ``max(τ1, τ2 + τ3, τ4, τ5)``. The
    :class:`~lightning_mspipe.pipeline.gate.StalenessGate` lets the memory fetch of batch ``j``
    start once the store's version is at least ``j − s`` (``s = max_staleness``), later in
    ``bounded`` mode, and holds writes in ``exact`` mode.

    ``max_staleness="auto"`` first runs a phase of batches without the lanes to measure the
    stage times, lets :class:`~lightning_mspipe.pipeline.auto.AutoBound` pick ``s``, runs a
    phase pipelined and one more inline, and keeps whichever was faster (on a CPU the lanes and
    the step compete for cores, so the pipeline can cost more than it hides). When the stage
    times drifted by more than ``drift`` at an epoch start, it measures both again and chooses
    the bound and the mode anew.

    The wrapper is sized and stateful, so Lightning's loop, progress bar and checkpointing work
    unchanged; its state holds the in-flight batches whose memory snapshot predates a
    checkpoint (for exact mid-epoch resume) and the auto policy's choice.

    Args:
        loader: The training batch source (stages 1 and 2).
        store: The model's memory store.
        max_staleness: ``s ≥ 0`` or ``"auto"``.
        mode: ``"bounded"``, ``"exact"`` or ``"sequential"`` (no lanes; needs ``max_staleness=0``).
        device: Where batches go (the compute device).
        timeout: Seconds any single wait may last before it raises :class:`PipelineTimeout`; a
            shutdown waits at most ``min(timeout, 5)`` seconds for the lanes' threads, then warns.
        max_auto_staleness: Upper clamp of the automatic bound.
        warmup: Measured batches per phase of ``"auto"``.
        drift: Relative change of stage times that triggers re-estimation.
        max_batches: Callable giving how many batches of the epoch will be trained (Lightning's
            ``limit_train_batches``), or ``None`` for all.
        fault_hook: Test hook called as ``hook(stage, index, stop_event)`` before each stage.
        exchange: Passed to the :class:`~lightning_mspipe.pipeline.writer.WriterLane`: maps each
            write to the one applied (several ranks: all ranks' writes merged), or ``None``.
        keep_inflight: Save and restore the memory snapshots of in-flight batches in the state
            (exact mid-epoch resume). With several ranks they are one rank's slices while a
            checkpoint holds rank 0's state, so the distributed strategy turns this off: those
            batches fetch memory again on resume (fresher, within the bound).
    """

    def __init__(
        self,
        loader: BatchSource,
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
        exchange: Callable[[int, MemoryWrite], MemoryWrite] | None = None,
        keep_inflight: bool = True,
    ) -> None:
        self.max_staleness = parse_max_staleness(max_staleness)
        self.keep_inflight = keep_inflight
        check_mode("PipelinedLoader", mode, self.max_staleness)
        if timeout <= 0:
            raise ValueError(f"PipelinedLoader: timeout must be > 0 seconds, got {timeout}.")
        if max_auto_staleness < 0:
            raise ValueError(f"PipelinedLoader: max_auto_staleness must be ≥ 0, got {max_auto_staleness}.")
        self.loader, self.store, self.mode = loader, store, mode
        self.device = torch.device(device) if device is not None else store.device
        if self.device.type == "cuda" and self.device.index is None:  # every lane sets this very device
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.timeout, self.max_batches, self.fault_hook = timeout, max_batches, fault_hook
        self.profile = PipelineProfile()
        cuda = self.device.type == "cuda"
        self.timer = StageTimer(self.profile, cuda_timing_events(self.device) if cuda else None)  # stages 2–4
        self.host_timer = StageTimer(self.profile)  # stage 1: host work only
        self.auto = AutoBound(max_auto_staleness, warmup, drift) if self.max_staleness == "auto" else None
        fixed = 0 if self.auto is not None else int(self.max_staleness)
        self.gate = StalenessGate(store, fixed, mode, timeout, writer_state=lambda: self.writer.describe())
        largest = max_auto_staleness if self.auto is not None else fixed  # the largest s this loader may use
        self.writer = WriterLane(store, self.device, self.profile, timeout, hold=self.gate.hold_write,
                                 fault_hook=fault_hook, join_timeout=min(timeout, JOIN_TIMEOUT), exchange=exchange,
                                 bound=largest)
        join_timeout = min(timeout, JOIN_TIMEOUT)
        self.sampler: ProducerLane[TemporalBatch] = ProducerLane(
            "mspipe-sampler", "sampler", largest + 2, self.device, timeout, join_timeout=join_timeout,
        )
        self.fetcher: ProducerLane[TemporalBatch] = ProducerLane(
            "mspipe-fetcher", "fetcher", largest + 2, self.device, timeout, describe=self._describe,
            join_timeout=join_timeout, stream=True,
        )
        self.transfer: BatchTransfer = make_transfer(self.device, largest, timeout)
        self.threaded_now = False
        self._restored_snapshots: dict[int, tuple[MemorySnapshot, torch.Tensor]] = {}
        self._write_seconds: dict[int, float] = {}
        self._handed_at: dict[int, float] = {}
        self._training: dict[int, StageSpan] = {}  # stage 4 of the batches handed over, until the next request

    # ------------------------------------------------------------------ the choice
    @property
    def bound(self) -> int:
        """The staleness bound in force."""
        return self.gate.bound

    @property
    def threaded(self) -> bool:
        """Whether batches are prepared by the sampler and fetcher lanes (``"auto"`` may keep them inline;
        ``mode="sequential"`` always does)."""
        return self.mode != "sequential" and (self.auto is None or self.auto.pipelined)

    @property
    def decided(self) -> bool:
        """Whether ``"auto"`` has made its choice (always true for a fixed bound)."""
        return self.auto is None or self.auto.decided

    @property
    def choices(self) -> list[dict[str, Any]]:
        """Every choice of ``"auto"`` with the stage times it came from (empty for a fixed bound)."""
        return [] if self.auto is None else self.auto.choices

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int) -> None:
        """Forward the trainer's epoch to the wrapped loader (it seeds the epoch's random draws)."""
        self.loader.set_epoch(epoch)

    # ------------------------------------------------------------------ consumer side
    def __iter__(self) -> Iterator[TemporalBatch]:
        start = self.loader.start_epoch()
        cap = len(self) if self.max_batches is None else min(len(self), int(self.max_batches()))
        self.gate.reset()
        self._handed_at.clear()
        self._training.clear()  # a batch of a cut epoch never got its _after_step
        measured = self.profile.count("train") > 0  # a resumed run has no stage times yet
        if self.auto is not None and measured:
            self.auto.reestimate(self.profile.stage_times())  # on drift: undecided, measured again below
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
        """``"auto"``: measure inline, then pipelined with the derived bound, then inline again; keep the faster.

        The second inline phase brackets the pipelined one, so one-time costs that the first
        phase absorbed (the allocator growing, caches warming) do not count against inline.
        """
        assert self.auto is not None
        length = self.auto.phase_length(len(self))
        first, index = index, (yield from self._inline_segment(index, min(index + length, cap)))
        inline_periods = [self._period(first, index)]
        times = self.profile.stage_times(last=max(index - first - DISCARD, 1))
        self.gate.bound = self.auto.choose_bound(times)
        first, index = index, (yield from self._threaded_segment(index, min(index + length, cap)))
        pipelined_period, pipelined_batches = self._period(first, index), index - first - DISCARD
        first, index = index, (yield from self._inline_segment(index, min(index + length, cap)))
        inline_periods.append(self._period(first, index))  # inf when the epoch ended first
        measured = tuple(period for period in inline_periods if period != float("inf"))
        self.auto.decide(times, min(inline_periods), pipelined_period, pipelined_batches, inline_phases=measured)
        return index

    def _period(self, first: int, end: int) -> float:
        """Mean seconds per batch from the hand-over of batch ``first + DISCARD`` to now (after batch ``end − 1``)."""
        measured = end - first - DISCARD
        if measured < 1:
            return float("inf")
        return (time.perf_counter() - self._handed_at[first + DISCARD]) / measured

    def _hand_over(self, batch: TemporalBatch, waited: float) -> TemporalBatch:
        now = time.perf_counter()
        staleness = batch.index - batch.memory.version
        if not 0 <= staleness <= self.bound:  # the gate guarantees it: a failure here is a bug
            raise PipelineError(
                f"MSPipe pipeline: batch {batch.index} read memory version {batch.memory.version}, staleness "
                f"{staleness}, outside the bound 0 … {self.bound}. Please report this as a bug."
            )
        self.profile.record_wait(waited)
        self.profile.record_staleness(staleness)
        self._handed_at[batch.index] = now
        self._training[batch.index] = self.timer.start("train", batch.index)
        self.gate.mark_taken(batch.index, now)
        self.loader.advance(batch.index)
        return batch

    def _after_step(self, index: int) -> None:
        """Stage 4's time: from hand-over to the next request, minus a write the training thread waited for."""
        self.timer.stop(self._training.pop(index), minus=self._write_seconds.pop(index, 0.0))

    def _inline_segment(self, index: int, end: int) -> Iterator[TemporalBatch]:
        """Stages 1–3 on demand in the main thread (the sequential baseline; staleness 0)."""
        self.threaded_now = False
        self.writer.flush()  # after a pipelined segment its last writes may still run: inline reads fresh memory
        run = LaneRun()
        while index < end:
            batch = self._fetch(self._sample(index, run), run, gate=False)
            yield self._hand_over(batch, waited=0.0)
            self._after_step(index)
            index += 1
        return index

    def _threaded_segment(self, index: int, end: int) -> Iterator[TemporalBatch]:
        self.threaded_now = True
        self.gate.start_segment(end)
        self.sampler.start(self._sample, index, end, on_exit=lambda: None)
        self.fetcher.start(self._take_and_fetch, index, end, on_exit=self.gate.end_segment)
        try:
            while index < end:
                requested = time.perf_counter()
                batch = self.fetcher.take(index, check=self.writer.raise_if_failed)
                assert batch.index == index, f"pipeline order broken: expected batch {index}, got {batch.index}"
                batch = self.transfer.hand_over(batch)  # the training stream waits for the batch's event
                yield self._hand_over(batch, waited=time.perf_counter() - requested)
                self._after_step(index)
                index += 1
        finally:
            self._shutdown()
        return index

    def _describe(self) -> str:
        """Context for the timeout message of a wait for the fetcher: the other lanes and the memory version."""
        return f" ({self.sampler.where()}; memory version {self.store.current_version}; {self.writer.describe()})"

    def close(self) -> None:
        """Stop every lane now, dropping pending writes (on an exception, Ctrl-C or teardown)."""
        self._shutdown()
        self.writer.close()

    def _shutdown(self) -> None:
        """Stop the sampler and fetcher lanes (joined within one deadline) and release the gate's holds."""
        shutdown_lanes([self.fetcher, self.sampler], self.sampler.join_timeout)
        self.gate.end_segment()

    # ------------------------------------------------------------------ stage 5: the model's MemoryWriter
    # (MSPipeStrategy hands this loader to the model with use_memory_writer; see memory/writer.py)
    def submit_write(self, index: int, write: MemoryWrite) -> None:
        """Hand the write of batch ``index`` to the writer lane (in batch order); returns at once.

        Between pipelined batches the training thread goes on while the write runs; in an inline
        segment (``mode="sequential"``, or the sequential phase of ``"auto"``) the training thread
        applies the write itself (:meth:`WriterLane.write_now`).
        """
        if self.threaded_now:
            self.writer.submit(index, write)
            return
        started = time.perf_counter()
        self.writer.write_now(index, write)
        self._write_seconds[index] = time.perf_counter() - started

    def flush_writes(self) -> None:
        """Block until every submitted write is committed (before validation, checkpoints, epoch ends)."""
        self.writer.flush()

    def live_memory(self, index: int) -> MemoryStore:
        """The store for a reader of live memory during the step of batch ``index`` (staleness mitigation):
        in ``exact`` mode once the writes of every batch before ``index`` are committed (so the read
        does not depend on timing), in ``bounded`` mode as it is."""
        if self.mode == "exact":
            self.wait_for_writes_before(index)
        return self.store

    def wait_for_writes_before(self, index: int) -> None:
        """Block until the writes of every batch before ``index`` are committed (memory version ``≥ index``).

        Readers of the live store that must not depend on timing (``exact`` mode) call it first.

        Raises:
            PipelineError: A write failed (naming its batch).
            PipelineTimeout: The version did not reach ``index`` within ``timeout`` seconds.
        """
        deadline = time.monotonic() + self.timeout
        while not self.store.wait_for_version(index, timeout=POLL):
            self.writer.raise_if_failed()
            if time.monotonic() > deadline:
                raise PipelineTimeout(
                    f"MSPipe pipeline: waited {self.timeout:g}s for memory version {index} (the writes of the batches "
                    f"before batch {index}); it is {self.store.current_version} and {self.writer.describe()}. "
                    "Raise `timeout` if writes are this slow."
                )

    # ------------------------------------------------------------------ stages 1–3
    def _stage(self, run: LaneRun, name: str, index: int, timer: StageTimer | None = None) -> AbstractContextManager:
        run.enter(name, index)
        if self.fault_hook is not None:
            self.fault_hook(name, index, run.stop)
        return (timer or self.timer).span(name, index)

    def _sample(self, index: int, run: LaneRun) -> TemporalBatch:
        """Stage 1 of batch ``index`` (in the sampler lane, or inline)."""
        with self._stage(run, "sample", index, self.host_timer):
            batch = self.loader.sample(index)
        run.enter("hand over", index)
        return batch

    def _take_and_fetch(self, index: int, run: LaneRun) -> TemporalBatch:
        """The fetcher lane's work: batch ``index`` from the sampler lane, then stages 2 and 3."""
        run.enter("wait for the sampler", index)
        batch = self.sampler.take(index, check=run.raise_if_stopped, waiter="the fetcher")
        return self._fetch(batch, run, gate=True)

    def _fetch(self, batch: TemporalBatch, run: LaneRun, gate: bool) -> TemporalBatch:
        """Stages 2 and 3 of a sampled batch, one after the other (in the fetcher lane, or inline with ``gate=False``).

        On a GPU both run on the current stream (the fetcher's) without a host sync; the batch
        carries the event that ends them (see :mod:`lightning_mspipe.pipeline.transfer`).
        """
        index = batch.index
        with self._stage(run, "features", index):
            staged = self.transfer.features(self.loader.fetch_features(batch), run.raise_if_stopped)
        try:
            restored = self._restored_snapshots.pop(index, None)
            if gate and restored is None:
                self.gate.wait_to_fetch(index, run, self.profile.stage_times)
            with self._stage(run, "memory", index):
                batch = self.transfer.memory(staged, self.store, restored)
        finally:
            self.transfer.abandon(staged)  # gives the staging slot back if stage 3 did not
        run.enter("hand over", index)
        self.gate.mark_fetched(batch)
        return batch

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """The base loader's position, the ``max_staleness`` setting, the bound and ``"auto"``'s choice
        (with its inputs), and the memory snapshots
        of fetched, not yet trained batches that predate the current memory version (for exact resume)."""
        version = self.store.current_version
        stale = [batch for batch in self.gate.inflight()
                 if self.keep_inflight and batch.memory is not None and batch.memory.version < version]
        for batch in stale:
            self.transfer.settle(batch)  # its device copies may still be running
        inflight = {batch.index: {"memory": vars(batch.memory.to("cpu")), "memory_index": batch.memory_index.cpu()}
                    for batch in stale}
        return {"loader": self.loader.state_dict(), "inflight": inflight, "max_staleness": self.max_staleness,
                "bound": self.bound, "auto": None if self.auto is None else self.auto.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume the position; keep the checkpoint's in-flight snapshots and ``"auto"`` choice when the
        ``max_staleness`` setting is the same. When it differs, this run's setting wins: a warning says so
        and the snapshots are dropped (those batches fetch memory again, so the resume is not bit-identical)."""
        self.loader.load_state_dict(state["loader"])
        saved = state.get("max_staleness", state["bound"])  # earlier checkpoints saved only the bound
        if saved != self.max_staleness:
            warnings.warn(
                f"MSPipe pipeline: the checkpoint was trained with max_staleness={saved!r}; this run keeps its own "
                f"max_staleness={self.max_staleness!r}. The checkpoint's in-flight memory snapshots are dropped and "
                "refetched, so the run is not bit-identical to an uninterrupted one. Pass "
                f"max_staleness={saved!r} to continue with the checkpoint's bound.",
                UserWarning,
                stacklevel=2,
            )
            self._restored_snapshots = {}
            return
        self._restored_snapshots = {
            int(index): (MemorySnapshot(**entry["memory"]).to(self.device), entry["memory_index"].to(self.device))
            for index, entry in state["inflight"].items()
            if self.keep_inflight
        }
        if self.auto is not None:
            self.auto.load_state_dict(state["auto"])
            self.gate.bound = self.auto.bound
