"""`vertex_losses` (one autograd Function with its gradient written out) against the same formula in autograd."""
import pytest
import torch

from mtk.losses import vertex_losses, vertex_losses_reference


def _batch(B=3, T=7, D=12, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    pred = torch.randn(B, T, D, generator=g, dtype=dtype, requires_grad=True)
    gt = torch.randn(B, T, D, generator=g, dtype=dtype)
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[1, 4:] = False
    if B > 2:
        mask[2, 1:] = False                               # one real frame: no velocity pair
    return pred, gt, mask


def test_values_and_gradients_match_autograd():
    pred, gt, mask = _batch()
    for f in (vertex_losses, vertex_losses_reference):
        pred.grad = None
        mse, vel = f(pred, gt, mask)
        (0.3 * mse + 1.7 * vel).backward()
        if f is vertex_losses:
            ours = (mse.detach(), vel.detach(), pred.grad.clone())
    assert torch.allclose(ours[0], mse.detach(), rtol=1e-12) and torch.allclose(ours[1], vel.detach(), rtol=1e-12)
    assert torch.allclose(ours[2], pred.grad, rtol=1e-10, atol=1e-14)
    assert ours[2][1, 4:].abs().max() == 0                # padding gets no gradient


def test_gradcheck_both_inputs():
    pred, gt, mask = _batch(B=2, T=5, D=3)
    gt.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p, g: vertex_losses(p, g, mask), (pred, gt))


@pytest.mark.parametrize("T", [1, 2])
def test_short_clips(T):
    pred, gt, mask = _batch(T=T)
    mse, vel = vertex_losses(pred, gt, mask)
    ref = vertex_losses_reference(pred, gt, mask)
    assert torch.allclose(mse, ref[0]) and torch.allclose(vel, ref[1])
    if T == 1:
        assert vel == 0


def test_float32_close_to_float64():
    pred, gt, mask = _batch(B=4, T=60, D=3000)
    p32 = pred.detach().float().requires_grad_(True)
    mse, vel = vertex_losses(p32, gt.float(), mask)
    ref = vertex_losses_reference(pred, gt, mask)
    assert abs(float(mse.detach()) / float(ref[0].detach()) - 1) < 1e-5
    assert abs(float(vel.detach()) / float(ref[1].detach()) - 1) < 1e-5
