"""TGN, JODIE and APAN as LightningModules over plain ``nn.Module`` networks, and the EdgeBank baseline."""

from __future__ import annotations

from lightning_mspipe.models.apan import APAN, APANNetwork
from lightning_mspipe.models.base import MemoryTGNN
from lightning_mspipe.models.edgebank import EdgeBank
from lightning_mspipe.models.jodie import JODIE, JODIENetwork
from lightning_mspipe.models.network import MemoryNetwork, StepOutput
from lightning_mspipe.models.tgn import TGN, TGNNetwork

__all__ = [
    "APAN",
    "APANNetwork",
    "EdgeBank",
    "JODIE",
    "JODIENetwork",
    "MemoryNetwork",
    "MemoryTGNN",
    "StepOutput",
    "TGN",
    "TGNNetwork",
]
