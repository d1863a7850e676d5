"""The stage-5 seam: a MemoryTGNN hands each training write to its MemoryWriter."""

import lightning as L
import pytest
import torch

from lightning_mspipe.memory import DirectWriter, MemoryWrite
from lightning_mspipe.models import TGN
from tests.conftest import SMALL_MODEL, small_datamodule


class RecordingWriter(DirectWriter):
    """Applies writes at once, recording (event, batch index, memory version) for each call."""

    def __init__(self, store):
        super().__init__(store)
        self.events = []

    def submit_write(self, index, write):
        super().submit_write(index, write)
        self.events.append(("write", index, self.store.current_version))

    def flush_writes(self):
        self.events.append(("flush", None, self.store.current_version))


def test_the_model_hands_every_training_write_to_its_writer_in_batch_order():
    dm = small_datamodule()
    model = TGN(num_nodes=dm.num_nodes, edge_dim=dm.edge_dim, **SMALL_MODEL)
    writer = RecordingWriter(model.memory)
    model.use_memory_writer(writer)
    trainer = L.Trainer(max_epochs=1, limit_val_batches=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, dm)
    writes = [(index, version) for event, index, version in writer.events if event == "write"]
    assert writes == [(index, index + 1) for index in range(trainer.num_training_batches)]
    assert writer.events[-1][0] == "flush"  # flushed when the epoch (and training) ended
    assert model.memory_writer is writer


def test_none_gives_the_model_its_direct_writer_back():
    model = TGN(num_nodes=10, **SMALL_MODEL)
    model.use_memory_writer(RecordingWriter(model.memory))
    model.use_memory_writer(None)
    assert type(model.memory_writer) is DirectWriter and model.memory_writer.store is model.memory


def test_an_object_that_is_not_a_writer_is_refused_with_what_it_needs():
    with pytest.raises(TypeError, match=r"dict is not a MemoryWriter; it needs submit_write\(index, write\), flush_writes\(\) and live_memory"):
        TGN(num_nodes=10, **SMALL_MODEL).use_memory_writer({})


def test_the_direct_writer_applies_a_write_at_once():
    model = TGN(num_nodes=10, **SMALL_MODEL)
    write_of_node_3 = torch.ones(1, SMALL_MODEL["memory_dim"])
    model.memory_writer.submit_write(0, MemoryWrite(
        torch.tensor([3]), write_of_node_3, torch.tensor([1.0], dtype=torch.float64), torch.tensor([3]),
        torch.zeros(1, model.memory.mail_dim), torch.tensor([1.0], dtype=torch.float64)))
    assert model.memory.current_version == 1 and torch.equal(model.memory.memory[3], write_of_node_3[0])
