"""Part 2 of bench/pipeline.py: emulated host↔device transfers that respect the pipeline's link model.

Two emulated links, each a lock around a sleep, so transfers in one direction queue behind each
other as on a real PCIe link: **host→device** carries stage 2 (fetch features, added in
:class:`LinkedSource`) and stage 3 (fetch memory, added in :class:`LinkedStore.gather`), so
their times add, ``τ2 + τ3``; **device→host** carries stage 5 (write memory,
:meth:`LinkedStore.scatter`). The sleeps come before the real work and outside the store's
lock and release the GIL, like a DMA copy. Nothing is patched: the sequential baseline and the
pipeline get the same wrapped batch source and a model whose store is a :class:`LinkedStore`,
so both pay exactly the same latencies.

Three regimes, sized from the measured compute time ``τ4`` of a sequential calibration run
(see :func:`regimes`): copy-bound (``τ2 + τ3`` largest), write-bound (``τ5 > τ4``) and
compute-bound (``τ4`` largest).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from lightning_mspipe.data.batch import TemporalBatch
from lightning_mspipe.memory.store import MemorySnapshot, MemoryStore, MemoryWrite
from lightning_mspipe.models.base import MemoryTGNN
from lightning_mspipe.pipeline.contract import BatchSource

__all__ = ["Link", "LinkedSource", "LinkedStore", "Regime", "WrappedSource", "linked_model", "regimes"]


class Link:
    """One emulated transfer direction: each transfer holds the link for its duration."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._busy = threading.Lock()

    def transfer(self, seconds: float) -> None:
        """Wait for the link, then hold it ``seconds`` (a sleep: the GIL is free meanwhile)."""
        if seconds <= 0:
            return
        with self._busy:
            time.sleep(seconds)


@dataclass(frozen=True)
class Regime:
    """Emulated transfer seconds per batch of stages 2 and 3 (host→device) and stage 5 (device→host)."""

    name: str
    features_s: float
    memory_s: float
    write_s: float

    def latencies_ms(self) -> list[float]:
        return [1e3 * self.features_s, 1e3 * self.memory_s, 1e3 * self.write_s]


def regimes(tau4: float) -> list[Regime]:
    """The three regimes for a measured compute time ``tau4`` (seconds):

    - copy-bound: ``τ2 + τ3 ≈ 1.5 τ4`` (each 0.75 τ4), ``τ5 ≈ 0.25 τ4``;
    - write-bound: ``τ5 ≈ 1.5 τ4``, ``τ2 + τ3 ≈ 0.2 τ4``;
    - compute-bound: ``τ2 + τ3 ≈ 0.4 τ4``, ``τ5 ≈ 0.5 τ4``.
    """
    return [
        Regime("copy-bound", 0.75 * tau4, 0.75 * tau4, 0.25 * tau4),
        Regime("write-bound", 0.1 * tau4, 0.1 * tau4, 1.5 * tau4),
        Regime("compute-bound", 0.2 * tau4, 0.2 * tau4, 0.5 * tau4),
    ]


class WrappedSource:
    """A :class:`~lightning_mspipe.pipeline.contract.BatchSource` that delegates every stage to ``source``;
    subclasses change one (composition, never a patch of the library)."""

    def __init__(self, source: BatchSource) -> None:
        self.source = source

    def __len__(self) -> int:
        return len(self.source)

    def __iter__(self) -> Iterator[TemporalBatch]:
        """Stages 1 and 2 of each batch in turn (Lightning checks that a training loader iterates)."""
        for index in range(self.start_epoch(), len(self)):
            batch = self.fetch_features(self.sample(index))
            self.advance(index)
            yield batch

    def sample(self, index: int) -> TemporalBatch:
        return self.source.sample(index)

    def fetch_features(self, batch: TemporalBatch) -> TemporalBatch:
        return self.source.fetch_features(batch)

    def set_epoch(self, epoch: int) -> None:
        self.source.set_epoch(epoch)

    def start_epoch(self) -> int:
        return self.source.start_epoch()

    def advance(self, index: int) -> None:
        self.source.advance(index)

    def state_dict(self) -> dict[str, Any]:
        return self.source.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.source.load_state_dict(state)


class LinkedSource(WrappedSource):
    """A batch source whose stage 2 also crosses the host→device link."""

    def __init__(self, source: BatchSource, h2d: Link, seconds: float) -> None:
        super().__init__(source)
        self.h2d, self.seconds = h2d, seconds

    def fetch_features(self, batch: TemporalBatch) -> TemporalBatch:
        self.h2d.transfer(self.seconds)
        return self.source.fetch_features(batch)


class LinkedStore(MemoryStore):
    """A memory store whose reads (stage 3) cross the host→device link and writes (stage 5) the device→host one."""

    def __init__(self, store: MemoryStore, h2d: Link, d2h: Link, regime: Regime) -> None:
        super().__init__(store.num_nodes, store.memory_dim, store.mail_dim, store.mailbox_size, store.pin_memory)
        self.h2d, self.d2h, self.regime = h2d, d2h, regime

    def gather(self, nodes: Any, out: MemorySnapshot | None = None) -> MemorySnapshot:
        self.h2d.transfer(self.regime.memory_s)
        return super().gather(nodes, out)

    def scatter(self, write: MemoryWrite, synchronize: bool = False) -> int:
        self.d2h.transfer(self.regime.write_s)
        return super().scatter(write, synchronize)


def linked_model(model_cls: type[MemoryTGNN], h2d: Link, d2h: Link, regime: Regime) -> type[MemoryTGNN]:
    """A subclass of ``model_cls`` whose network keeps its memory in a :class:`LinkedStore`."""
    network_cls = model_cls.network_class

    class LinkedNetwork(network_cls):  # type: ignore[valid-type, misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.memory = LinkedStore(self.memory, h2d, d2h, regime)

    return type(f"Linked{model_cls.__name__}", (model_cls,), {"network_class": LinkedNetwork})
