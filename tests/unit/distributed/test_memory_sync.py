import torch

from lightning_mspipe.distributed.memory_sync import pack_write, unpack_write
from lightning_mspipe.memory.store import MemoryWrite


def random_write(rows: int, mails: int, dim: int = 4, mail_dim: int = 9) -> MemoryWrite:
    return MemoryWrite(
        nodes=torch.randperm(100)[:rows], memory=torch.randn(rows, dim),
        last_update=torch.rand(rows, dtype=torch.float64), mail_nodes=torch.randperm(100)[:mails],
        mail=torch.randn(mails, mail_dim), mail_ts=torch.rand(mails, dtype=torch.float64),
        own_mail=torch.rand(mails) > 0.5,
    )


def test_a_packed_write_unpacks_to_itself_with_the_layout_of_another_write():
    write, other = random_write(5, 7), random_write(2, 0)
    sizes, payload = pack_write(write)
    padded = torch.cat([payload, torch.zeros(13, dtype=torch.uint8)])  # all-gather pads to the longest rank
    back = unpack_write(padded, sizes, like=other)
    assert sizes.tolist() == [5, 7]
    for name, value in vars(write).items():
        assert torch.equal(getattr(back, name), value), name


def test_a_write_without_own_mail_flags_packs_them_as_all_own():
    write = random_write(3, 4)
    write.own_mail = None
    sizes, payload = pack_write(write)
    assert unpack_write(payload, sizes, like=write).own_mail.tolist() == [True] * 4
