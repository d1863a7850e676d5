"""MSPipeStrategy: Lightning's single-device strategy with MSPipe's staleness-aware pipeline, and the hooks
it shares with :class:`~lightning_mspipe.distributed.MSPipeDDPStrategy`."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from typing import Any

import lightning as L
import torch
from lightning.pytorch.strategies import SingleDeviceStrategy, StrategyRegistry
from typing_extensions import override

from lightning_mspipe.memory.store import MemoryWrite
from lightning_mspipe.models.base import MemoryTGNN
from lightning_mspipe.pipeline.contract import BatchSource, missing_members
from lightning_mspipe.pipeline.loader import FaultHook, PipelinedLoader
from lightning_mspipe.pipeline.schedule import check_mode, parse_max_staleness
from lightning_mspipe.staleness_mitigation import StalenessMitigation

__all__ = ["MSPipeStrategy", "PipelineHooks", "register_strategies"]

log = logging.getLogger(__name__)

_MEMORY_DEVICES = (None, "pinned")


class PipelineHooks:
    """The Lightning hooks shared by MSPipe's strategies: the pipelined training loader and the model's seams.

    A mixin placed before a Lightning strategy class (``class S(PipelineHooks, SingleDeviceStrategy)``);
    :meth:`configure_pipeline` validates and keeps the pipeline's settings. Subclasses choose how each
    memory write is exchanged between ranks (:meth:`write_exchange`) and whether in-flight memory
    snapshots go into checkpoints (:attr:`keep_inflight_snapshots`).
    """

    keep_inflight_snapshots = True
    lightning_module: Any
    root_device: torch.device

    def configure_pipeline(
        self,
        max_staleness: int | str,
        mode: str,
        mitigation: StalenessMitigation | None,
        memory_device: str | None,
        max_auto_staleness: int,
        timeout: float,
    ) -> None:
        """Validate and keep the pipeline's settings (see :class:`MSPipeStrategy` for their meaning).

        Raises:
            ValueError: on an unknown mode or memory device, ``mode="exact"`` with ``"auto"``,
                ``mode="sequential"`` with a bound other than 0, or a timeout ≤ 0.
            TypeError: on a mitigation that is not a :class:`~lightning_mspipe.staleness_mitigation.StalenessMitigation`.
        """
        name = type(self).__name__
        self.max_staleness = parse_max_staleness(max_staleness)
        check_mode(name, mode, self.max_staleness)
        if memory_device not in _MEMORY_DEVICES:
            raise ValueError(f"{name}: unknown memory_device {memory_device!r}; choose None or 'pinned'.")
        if mitigation is not None and not isinstance(mitigation, StalenessMitigation):
            raise TypeError(f"{name}: mitigation must be a StalenessMitigation, got {type(mitigation).__name__}.")
        if timeout <= 0:
            raise ValueError(f"{name}: timeout must be > 0 seconds, got {timeout}.")
        self.mode, self.mitigation, self.memory_device = mode, mitigation, memory_device
        self.max_auto_staleness, self.timeout = max_auto_staleness, timeout
        self.pipeline: PipelinedLoader | None = None  # the last training pipeline (kept for its statistics)
        self.fault_hook: FaultHook | None = None  # tests: called before each stage (sample, features, memory, write)

    def write_exchange(self) -> Callable[[int, MemoryWrite], MemoryWrite] | None:
        """How the writer lane maps each rank's memory write to the one applied; ``None``: as it is (one device)."""
        return None

    @override
    def connect(self, model: L.LightningModule) -> None:
        if not isinstance(model, MemoryTGNN):
            raise TypeError(
                f"{type(self).__name__} trains memory-based TGNNs (TGN, JODIE, APAN); got {type(model).__name__}, "
                "which is not a lightning_mspipe.models.MemoryTGNN."
            )
        super().connect(model)  # type: ignore[misc]
        if self.mitigation is not None:  # the model blends stale batches at the start of each step
            model.use_staleness_mitigation(self.mitigation)
        if self.memory_device == "pinned":
            model.memory.pin()

    @override
    def on_train_start(self) -> None:
        """Refuse validation in the middle of a training epoch (see :func:`check_validation_schedule`)."""
        super().on_train_start()  # type: ignore[misc]
        check_validation_schedule(self.lightning_module.trainer)

    @override
    def process_dataloader(self, dataloader: object) -> object:
        trainer = self.lightning_module.trainer
        if not trainer.training:
            return dataloader
        name = type(self).__name__
        if not isinstance(dataloader, BatchSource):
            warnings.warn(
                f"{name}: the training loader ({type(dataloader).__name__}) cannot be pipelined: it is not a "
                f"lightning_mspipe.pipeline.BatchSource (it lacks {', '.join(missing_members(dataloader))}). It trains "
                "sequentially, without the pipeline. Use TemporalDataModule's train_dataloader() or implement "
                "BatchSource.",
                UserWarning,
                stacklevel=2,
            )
            return dataloader
        self.pipeline = PipelinedLoader(
            dataloader,
            self.lightning_module.memory,
            max_staleness=self.max_staleness,
            mode=self.mode,
            device=self.root_device,
            timeout=self.timeout,
            max_auto_staleness=self.max_auto_staleness,
            max_batches=lambda: trainer.num_training_batches,
            fault_hook=self.fault_hook,
            exchange=self.write_exchange(),
            keep_inflight=self.keep_inflight_snapshots,
        )
        self.lightning_module.use_memory_writer(self.pipeline)  # stage 5 now goes to the pipeline's writer lane
        log.info("%s: pipelining training with max_staleness=%s, mode=%s", name, self.max_staleness, self.mode)
        return self.pipeline

    @override
    def lightning_module_state_dict(self) -> dict[str, Any]:
        """The model's state once every submitted memory write is committed (checkpoints hold complete memory)."""
        if self.pipeline is not None:
            self.pipeline.flush_writes()
        return super().lightning_module_state_dict()  # type: ignore[misc]

    @override
    def on_exception(self, exception: BaseException) -> None:
        """Stop the pipeline's threads when training ends with an error or Ctrl-C."""
        self._close_pipeline()
        super().on_exception(exception)  # type: ignore[misc]

    @override
    def teardown(self) -> None:
        self._close_pipeline()
        super().teardown()  # type: ignore[misc]

    def _close_pipeline(self) -> None:
        """Stop the pipeline's threads and give the model its direct memory writer back."""
        if self.pipeline is None:
            return
        self.pipeline.close()
        module = self.lightning_module
        if isinstance(module, MemoryTGNN) and module.memory_writer is self.pipeline:
            module.use_memory_writer(None)


class MSPipeStrategy(PipelineHooks, SingleDeviceStrategy):
    """Trains a :class:`~lightning_mspipe.models.base.MemoryTGNN` with MSPipe's pipeline on one device.

    The training loader is wrapped in a :class:`~lightning_mspipe.pipeline.loader.PipelinedLoader`
    that samples, fetches features and fetches memory of upcoming batches while the current
    one trains, with memory at most ``max_staleness`` writes old. Lightning's own loop,
    progress bar, gradient accumulation, ``limit_train_batches``, validation and
    checkpointing run unchanged; validation and test are not pipelined.

    Stage 5 meets the model at one seam (:mod:`lightning_mspipe.memory.writer`): when the
    pipeline is built the strategy hands it to the model as its memory writer
    (:meth:`~lightning_mspipe.models.base.MemoryTGNN.use_memory_writer`), so every training
    step's write goes to the pipeline's writer lane; at teardown (or on an error) the model gets
    its direct writer back. The loader checks every batch's staleness against the bound. A
    ``mitigation``, when given, goes to the model the same way
    (:meth:`~lightning_mspipe.models.base.MemoryTGNN.use_staleness_mitigation`), which applies it
    at the start of every training step and keeps its state in its checkpoints; the strategy
    adds nothing to the trainer's callbacks.

    Args:
        max_staleness: Writes a memory fetch may miss: ``0`` is synchronous training (bit-identical
            to no pipeline), ``"auto"`` picks the smallest bound that keeps training busy.
        mode: ``"bounded"`` (freshest memory available, fetched as late as possible) or
            ``"exact"`` (batch ``j`` reads exactly version ``max(0, j − s)``: timing-independent, for
            tests and exact resume) or ``"sequential"`` (no lanes: every stage on the training thread,
            one batch at a time, with ``max_staleness=0``; the baseline for profiling and debugging).
        mitigation: A :class:`~lightning_mspipe.staleness_mitigation.StalenessMitigation`, or ``None``.
        memory_device: ``None`` keeps the memory store with the model; ``"pinned"`` keeps it in
            pinned host memory (the paper's large-graph setting).
        max_auto_staleness: Upper clamp of the ``"auto"`` bound.
        timeout: Seconds any pipeline wait may last before it raises with a message.
        device: The compute device; default: the device the Trainer assigns (``devices=1`` or
            ``devices=[i]``). Several devices need
            :class:`~lightning_mspipe.distributed.MSPipeDDPStrategy` (see :attr:`parallel_devices`).
    """

    strategy_name = "mspipe"

    def __init__(
        self,
        max_staleness: int | str = 2,
        mode: str = "bounded",
        mitigation: StalenessMitigation | None = None,
        memory_device: str | None = None,
        max_auto_staleness: int = 8,
        timeout: float = 120.0,
        device: torch.device | str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(device=device if device is not None else "cpu", **kwargs)
        self._device_given = device is not None
        self._parallel_devices: list[torch.device] | None = None
        self.configure_pipeline(max_staleness, mode, mitigation, memory_device, max_auto_staleness, timeout)

    @property
    def parallel_devices(self) -> list[torch.device] | None:
        """The devices Lightning's accelerator connector assigns from ``Trainer(accelerator=..., devices=...)``."""
        return self._parallel_devices

    @parallel_devices.setter
    def parallel_devices(self, devices: list[torch.device] | None) -> None:
        if devices is not None and len(devices) > 1:
            raise ValueError(
                f"MSPipeStrategy trains on one device, but the Trainer asked for {len(devices)} "
                f"({', '.join(str(d) for d in devices)}). For several devices or nodes use "
                "MSPipeDDPStrategy (strategy='mspipe_ddp', or lightning_mspipe.MSPipeDDPStrategy(...)); "
                "or pass devices=1, or devices=[i] to train on device i."
            )
        self._parallel_devices = devices

    @property
    @override
    def root_device(self) -> torch.device:
        """The ``device`` argument if given, else the device the Trainer assigned (``devices=[1]`` → ``cuda:1``)."""
        if self._device_given or not self._parallel_devices:
            return self._root_device
        return torch.device(self._parallel_devices[0])

    @classmethod
    @override
    def register_strategies(cls, strategy_registry: Any) -> None:
        strategy_registry.register(cls.strategy_name, cls, description="MSPipe staleness-aware pipeline, one device")


def check_validation_schedule(trainer: L.Trainer) -> None:
    """Raise when validation would interrupt a training epoch under the pipeline.

    The fetcher lane fetches memory for the next batches while the training loop runs; a validation
    in the middle of an epoch writes memory (and advances its version) under those fetches, so
    in-flight batches could read validation events. Plain training supports it (the validation
    is rolled back); the pipeline refuses it until it pauses its lanes around validation.

    Raises:
        ValueError: when ``val_check_interval`` makes validation run before an epoch ends.
    """
    if not trainer.enable_validation:
        return
    time_based = getattr(trainer, "_val_check_time_interval", None) is not None
    check_batch = trainer.val_check_batch
    if time_based or (check_batch is not None and check_batch < trainer.num_training_batches):
        raise ValueError(
            f"MSPipeStrategy: val_check_interval={trainer.val_check_interval!r} runs validation in the middle of a "
            "training epoch, which the pipeline does not support (its in-flight batches would read validation "
            "memory). Validate at epoch ends (val_check_interval=1.0, check_val_every_n_epoch=N), or train "
            "without the pipeline, which rolls mid-epoch validation back."
        )


def register_strategies() -> None:
    """Register ``"mspipe"`` and ``"mspipe_ddp"`` with Lightning's StrategyRegistry (idempotent)."""
    from lightning_mspipe.distributed.strategy import MSPipeDDPStrategy  # it builds on this module

    for strategy in (MSPipeStrategy, MSPipeDDPStrategy):
        if strategy.strategy_name not in StrategyRegistry:
            strategy.register_strategies(StrategyRegistry)
