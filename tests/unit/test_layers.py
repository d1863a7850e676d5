"""Building blocks of lightning_mspipe/layers.py."""

from __future__ import annotations

import torch

from lightning_mspipe.layers import TimeEncoder


def _reference(encoder: TimeEncoder, delta: torch.Tensor) -> torch.Tensor:
    """The encoding written with autograd's own ops: tanh(log1p|Δt| · w + b)."""
    scaled = torch.log1p(delta.to(encoder.linear.weight.dtype).abs())
    return torch.tanh(torch.addcmul(encoder.linear.bias, scaled.unsqueeze(-1), encoder.linear.weight.squeeze(1)))


def test_time_encoder_gradients_match_autograd_of_the_formula() -> None:
    torch.manual_seed(0)
    encoder = TimeEncoder(16).double()
    with torch.no_grad():
        encoder.linear.bias.uniform_(-1.0, 1.0)  # a non-zero bias, so its gradient is checked too
    delta = torch.rand(7, 5, dtype=torch.float64) * 1e6
    grad = torch.randn(7, 5, 16, dtype=torch.float64)

    encoder(delta).backward(grad)
    ours = [p.grad.clone() for p in encoder.parameters()]
    encoder.zero_grad()
    _reference(encoder, delta).backward(grad)
    for mine, expected in zip(ours, (p.grad for p in encoder.parameters())):
        torch.testing.assert_close(mine, expected)
    torch.testing.assert_close(encoder(delta), _reference(encoder, delta))


def test_time_encoder_gradient_in_the_time_difference_passes_gradcheck() -> None:
    torch.manual_seed(1)
    encoder = TimeEncoder(6).double()
    delta = (torch.rand(4, 3, dtype=torch.float64) * 100 + 1).requires_grad_()  # away from |Δt|'s kink at 0
    assert torch.autograd.gradcheck(encoder, (delta,))


def test_time_encoder_starts_monotone_in_the_age_so_long_ages_saturate_instead_of_wrapping() -> None:
    encoder = TimeEncoder(32)
    ages = torch.logspace(0, 10, 200)  # 1 … 1e10 time units, beyond the 1e8 the steps cover
    with torch.no_grad():
        encoding = encoder(ages)
    assert bool((encoding.diff(dim=0) >= 0).all())  # every dimension rises with the age
    assert float(encoding.diff(dim=0).abs().sum(dim=1)[-20:].max()) < 1e-2  # flat past the last step
    # distinct ages a decade apart stay distinguishable throughout the covered range
    decades = encoder(torch.tensor([1e2, 1e3, 1e4, 1e5, 1e6, 1e7])).detach()
    assert float(torch.cdist(decades, decades).add(torch.eye(6) * 1e9).min()) > 1.0
