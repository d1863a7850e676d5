"""Moving batches from the fetcher lane to the training thread's device and stream."""

from __future__ import annotations

import torch

from lightning_mspipe.data.batch import TemporalBatch

__all__ = ["DeviceTransfer"]


class DeviceTransfer:
    """Host → device copies of batches on the fetcher's CUDA stream, and their hand-over to the training stream.

    Args:
        device: The compute device (nothing to do on a CPU).
        stream: The fetcher lane's stream, or ``None`` (CPU, or inline work on the current stream).
    """

    def __init__(self, device: torch.device, stream: torch.cuda.Stream | None) -> None:
        self.device, self.stream = device, stream

    def to_device(self, batch: TemporalBatch, in_lane: bool) -> TemporalBatch:
        """Move a batch to the compute device; in the lane, an asynchronous copy from pinned memory."""
        if self.device.type == "cpu":
            return batch
        if in_lane:
            return batch.pin_memory().to(self.device, non_blocking=True)
        return batch.to(self.device)

    def complete(self, in_lane: bool) -> None:
        """In the lane on CUDA: wait for the stage's copies (a host sync, so stage times are real)."""
        if self.stream is not None and in_lane:
            self.stream.synchronize()

    def hand_over(self, batch: TemporalBatch) -> TemporalBatch:
        """Hand a batch from the lane's stream to the current (training) stream."""
        if self.stream is not None:
            current = torch.cuda.current_stream(self.device)
            current.wait_stream(self.stream)
            batch.record_stream(current)
        return batch
