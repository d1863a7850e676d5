"""MSPipeDDPStrategy: Lightning's DDP with MSPipe's pipeline and one consistent memory on every rank."""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import lightning as L
from lightning.pytorch.strategies import DDPStrategy
from torch.nn import Module
from torch.nn.parallel import DistributedDataParallel
from typing_extensions import override

from lightning_mspipe.distributed.failures import FailureNotice
from lightning_mspipe.distributed.memory_sync import MemoryWriteAllGather
from lightning_mspipe.distributed.slicing import scale_step_output, slice_loss_scale
from lightning_mspipe.memory.store import MemoryStore, MemoryWrite
from lightning_mspipe.staleness_mitigation import StalenessMitigation
from lightning_mspipe.strategy import PipelineHooks

__all__ = ["LR_SCALING", "MSPipeDDPStrategy", "memory_buffer_names"]

log = logging.getLogger(__name__)

#: Values of ``lr_scaling``.
LR_SCALING: tuple[str | None, ...] = (None, "sqrt")


#: DDP's switches for syncing buffers before each forward (``forward_sync_buffers`` replaces
#: ``broadcast_buffers`` in recent torch); the memory's buffers are also excluded from DDP's init sync.
_BUFFER_SYNC_FLAGS = ("broadcast_buffers", "forward_sync_buffers")


def _buffer_sync_flag() -> str:
    """The name this torch's ``DistributedDataParallel`` takes for per-forward buffer sync."""
    parameters = inspect.signature(DistributedDataParallel.__init__).parameters
    return "forward_sync_buffers" if "forward_sync_buffers" in parameters else "broadcast_buffers"


def memory_buffer_names(model: Module) -> list[str]:
    """Fully qualified names of the buffers of every :class:`MemoryStore` in ``model`` (DDP must leave them alone)."""
    return [
        f"{prefix}.{name}" if prefix else name
        for prefix, module in model.named_modules()
        if isinstance(module, MemoryStore)
        for name, _ in module.named_buffers(recurse=False)
    ]


class MSPipeDDPStrategy(PipelineHooks, DDPStrategy):
    """Trains a :class:`~lightning_mspipe.models.base.MemoryTGNN` on several devices and nodes with MSPipe's pipeline.

    ``Trainer(strategy=MSPipeDDPStrategy(max_staleness="auto"), devices=8, num_nodes=2)`` (or
    ``strategy="mspipe_ddp"``), launched by ``torchrun``, SLURM or Lightning's own launcher, on
    ``torch.distributed`` (NCCL on GPUs, gloo on CPUs).

    - **Data.** ``TemporalDataModule(batch_size=B)`` is the global batch; rank ``r`` of ``W``
      samples, fetches and trains the ``r``-th contiguous slice of every global batch. Each
      rank's loss is scaled by ``W · b_r / B`` so that DDP's gradient average is the gradient of
      one process at batch ``B``, also for uneven slices (:func:`slice_loss_scale`).
    - **Memory.** After each step the ranks all-gather their memory writes on a process group
      of their own, in the writer lane, and apply the merged write (rank order = event order;
      last event wins), so every rank holds the same memory and mailbox after every version and
      the staleness gate counts global versions. Evaluation writes are merged the same way.
      DDP neither broadcasts nor averages the memory (its buffers are excluded from DDP, and
      per-step buffer sync is off).
    - **Checkpoints** (rank 0) hold the one global memory; they resume on any number of ranks.
      In-flight memory snapshots are not saved (they are per rank): a mid-epoch resume
      re-fetches those batches' memory, fresher and within the bound.
    - **Metrics** equal one process's: AP and AUROC gather the scores of every rank, MRR sums
      reciprocal ranks (:class:`~lightning_mspipe.models.evaluation.LinkEvaluation`).
    - **Failures.** ``timeout`` bounds every collective (also ``init_process_group``) and every
      pipeline wait; a rank's error is recorded for the others, which add it to theirs.

    Args:
        max_staleness, mode, mitigation, memory_device, max_auto_staleness: As
            :class:`~lightning_mspipe.strategy.MSPipeStrategy`. With ``"auto"`` each rank picks its
            bound from its own stage times (the bound holds on each rank; memory stays identical).
        timeout: Seconds any pipeline wait or collective may last before it raises.
        lr_scaling: ``None`` (default) or ``"sqrt"``: multiply every learning rate by ``√W`` when
            the optimizers are set up, as MSPipe does for its larger global batch (learning-rate
            schedulers' base rates too). A resumed run keeps the rates saved in its checkpoint.
        **kwargs: Further arguments of Lightning's ``DDPStrategy`` (``process_group_backend``,
            ``start_method``, ``find_unused_parameters``, ...); buffer sync (``broadcast_buffers``,
            ``forward_sync_buffers``) must stay off.

    Raises:
        ValueError: on an unknown ``lr_scaling``, buffer sync turned on, or a bad pipeline setting.
    """

    strategy_name = "mspipe_ddp"
    keep_inflight_snapshots = False

    def __init__(
        self,
        max_staleness: int | str = 2,
        mode: str = "bounded",
        mitigation: StalenessMitigation | None = None,
        memory_device: str | None = None,
        max_auto_staleness: int = 8,
        timeout: float = 120.0,
        lr_scaling: str | None = None,
        **kwargs: Any,
    ) -> None:
        for flag in _BUFFER_SYNC_FLAGS:
            if kwargs.pop(flag, False):
                raise ValueError(
                    f"MSPipeDDPStrategy: {flag}=True would overwrite every rank's memory with rank 0's before each "
                    "step (the memory is kept identical by all-gathering writes instead). Leave it False."
                )
        if lr_scaling not in LR_SCALING:
            raise ValueError(f"MSPipeDDPStrategy: unknown lr_scaling {lr_scaling!r}; choose one of {LR_SCALING}.")
        if isinstance(timeout, (int, float)) and timeout > 0:
            kwargs["timeout"] = timedelta(seconds=timeout)
        super().__init__(**{_buffer_sync_flag(): False}, **kwargs)
        self.configure_pipeline(max_staleness, mode, mitigation, memory_device, max_auto_staleness, timeout)
        self.lr_scaling = lr_scaling
        self.memory_sync: MemoryWriteAllGather | None = None
        self._failures: FailureNotice | None = None

    # ------------------------------------------------------------------ process groups
    @override
    def setup_distributed(self) -> None:
        """Join the default process group (timeout: ``timeout``), then create the memory exchange's own group."""
        super().setup_distributed()
        if self.memory_sync is None:  # a collective: every rank creates it here, in the same order
            self.memory_sync = MemoryWriteAllGather(self.timeout, backend=self.process_group_backend)
        self._failures = FailureNotice(self.global_rank)

    @override
    def write_exchange(self) -> Callable[[int, MemoryWrite], MemoryWrite] | None:
        return self.memory_sync if self.world_size > 1 else None

    def exchange_memory_write(self, write: MemoryWrite) -> MemoryWrite:
        """Every rank's write of the same batch, merged (:class:`~lightning_mspipe.memory.exchange.MemoryWriteExchange`)."""
        if self.memory_sync is None or self.world_size == 1:
            return write
        return self.memory_sync.exchange(write)

    # ------------------------------------------------------------------ model and optimizers
    @override
    def setup(self, trainer: L.Trainer) -> None:
        """Keep the memory store's buffers out of DDP (no broadcast at wrap time, none per step), then set up."""
        assert self.model is not None
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(self.model, memory_buffer_names(self.model))
        super().setup(trainer)

    @override
    def setup_optimizers(self, trainer: L.Trainer) -> None:
        """Set up the optimizers; with ``lr_scaling="sqrt"`` multiply their learning rates by ``√W``."""
        super().setup_optimizers(trainer)
        if self.lr_scaling != "sqrt" or self.world_size == 1:
            return
        factor = math.sqrt(self.world_size)
        for optimizer in self.optimizers:
            for group in optimizer.param_groups:
                group["lr"] *= factor
                if "initial_lr" in group:
                    group["initial_lr"] *= factor
        for config in self.lr_scheduler_configs:
            if hasattr(config.scheduler, "base_lrs"):
                config.scheduler.base_lrs = [lr * factor for lr in config.scheduler.base_lrs]
        log.info("MSPipeDDPStrategy: learning rates × √%d = %.3f (lr_scaling='sqrt')", self.world_size, factor)

    # ------------------------------------------------------------------ the step
    @override
    def training_step(self, *args: Any, **kwargs: Any) -> Any:
        """The module's step, its loss scaled by this rank's share of the global batch (:func:`slice_loss_scale`)."""
        output = super().training_step(*args, **kwargs)
        batch = args[0] if args else kwargs["batch"]
        global_size = getattr(batch, "global_size", None)
        return scale_step_output(output, slice_loss_scale(len(batch), global_size, self.world_size))

    # ------------------------------------------------------------------ failures
    @override
    def on_exception(self, exception: BaseException) -> None:
        """Stop the pipeline; record this rank's error for the others, or add the rank that failed first to it."""
        if self._failures is not None:
            first = self._failures.record_or_explain(exception)
            if first is not None:
                message = (
                    f"MSPipeDDPStrategy: {first} (that rank failed first; rank {self.global_rank} stopped because of "
                    f"it, with: {exception})"
                )
                exception.args = (message, *exception.args[1:])
        super().on_exception(exception)

    @classmethod
    @override
    def register_strategies(cls, strategy_registry: Any) -> None:
        strategy_registry.register(
            cls.strategy_name, cls, description="MSPipe staleness-aware pipeline on several devices and nodes (DDP)"
        )
