"""The tensor memory store and memory updaters shared by TGN, JODIE and APAN."""

from __future__ import annotations

from lightning_mspipe.memory.store import MemorySnapshot, MemoryStore, MemoryWrite, last_occurrence

__all__ = ["MemorySnapshot", "MemoryStore", "MemoryWrite", "last_occurrence"]
