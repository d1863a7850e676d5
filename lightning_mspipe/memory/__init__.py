"""The tensor memory store and memory updaters shared by TGN, JODIE and APAN."""

from __future__ import annotations

from lightning_mspipe.memory.store import MemorySnapshot, MemoryStore, MemoryWrite, last_occurrence
from lightning_mspipe.memory.writer import DirectWriter, MemoryWriter

__all__ = ["DirectWriter", "MemorySnapshot", "MemoryStore", "MemoryWrite", "MemoryWriter", "last_occurrence"]
