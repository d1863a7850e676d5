import pytest
import torch

from lightning_mspipe.distributed.slicing import scale_step_output, slice_loss_scale


@pytest.mark.parametrize("sizes", [[50, 50], [34, 33, 33], [1, 2]])
def test_averaged_scaled_slice_gradients_equal_the_global_batch_gradient(sizes):
    torch.manual_seed(0)
    weight = torch.randn(3, requires_grad=True)
    x = torch.randn(sum(sizes), 3)
    (torch.nn.functional.softplus(x @ weight)).mean().backward()
    expected, weight.grad = weight.grad.clone(), None
    for part in torch.split(x, sizes):  # DDP sums then divides by W: accumulate, then divide
        scale = slice_loss_scale(len(part), sum(sizes), len(sizes))
        (scale * torch.nn.functional.softplus(part @ weight).mean() / len(sizes)).backward()
    torch.testing.assert_close(weight.grad, expected)


def test_one_process_is_not_scaled():
    loss = torch.tensor(2.0)
    assert slice_loss_scale(10, None, 1) == 1.0 and scale_step_output(loss, 1.0) is loss


def test_step_outputs_are_scaled_and_others_refused():
    assert float(scale_step_output(torch.tensor(2.0), 0.5)) == 1.0
    assert float(scale_step_output({"loss": torch.tensor(2.0), "x": 1}, 0.5)["loss"]) == 1.0
    with pytest.raises(TypeError, match="must return the loss tensor or a dict with 'loss'"):
        scale_step_output([torch.tensor(1.0)], 0.5)
    with pytest.raises(ValueError, match="a slice of 0 events"):
        slice_loss_scale(0, 10, 2)
