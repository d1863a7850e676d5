"""TGN, JODIE and APAN as LightningModules on one tensor memory store, and the EdgeBank baseline."""

from __future__ import annotations

from lightning_mspipe.models.apan import APAN
from lightning_mspipe.models.base import MemoryTGNN, StepOutput
from lightning_mspipe.models.edgebank import EdgeBank
from lightning_mspipe.models.jodie import JODIE
from lightning_mspipe.models.tgn import TGN

__all__ = ["APAN", "EdgeBank", "JODIE", "MemoryTGNN", "StepOutput", "TGN"]
