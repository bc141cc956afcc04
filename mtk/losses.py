"""The vertex losses every method in the kit trains with (shared by `mtk.model`, the baselines and `mtk.train`).

    L_mse  mean squared vertex error over real (unpadded) frames        pred, gt (B, T, D), mask (B, T)
    L_vel  the same on consecutive-frame differences (Eq. 10 of MemoryTalker, FaceFormer's velocity loss)

Units are those of the inputs (metres in, m^2 out); `mtk.train.loss_scale` and `ModelConfig.loss_units`
decide what the optimiser sees.

D is large (V*3 = 15k on FLAME-size meshes), so every elementwise pass over a (B, T, D) tensor costs about
as much as a small matmul. `vertex_losses` is therefore one autograd Function with its gradient written
out: four passes forward, three backward, where autograd's graph of the same formula makes about twenty
(its slices, squares and means each allocate, fill and copy a (B, T, D) tensor). Same function, same
gradient (tests/test_losses.py checks both against autograd, and gradcheck in float64).
"""
from __future__ import annotations

import torch


def masked_mse(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over real frames: pred, gt (B, T, D), mask (B, T)."""
    err = ((pred - gt) ** 2).mean(-1)
    return (err * mask).sum() / mask.sum().clamp(min=1)


def vertex_losses(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(L_mse, L_vel) over real frames: pred, gt (B, T, D), mask (B, T) bool -> two scalars.

    L_mse = sum_{b,t} m_bt |d_bt|^2 / (D sum m),  d = pred - gt
    L_vel = sum_{b,t} v_bt |d_b,t+1 - d_bt|^2 / (D sum v),  v_bt = m_bt m_b,t+1
    (the velocity error is the difference of the errors: (p_t+1 - p_t) - (g_t+1 - g_t) = d_t+1 - d_t)."""
    return _VertexLosses.apply(pred, gt, mask)


def vertex_losses_reference(pred, gt, mask):
    """`vertex_losses` written with autograd (the test's reference, and the formula in plain torch)."""
    d = pred - gt
    m = mask.to(pred.dtype)
    mse = ((d * d).mean(-1) * m).sum() / m.sum().clamp(min=1)
    v = m[:, 1:] * m[:, :-1]
    dv = d[:, 1:] - d[:, :-1]
    vel = ((dv * dv).mean(-1) * v).sum() / v.sum().clamp(min=1)
    return mse, vel


class _VertexLosses(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pred, gt, mask):
        D = pred.shape[-1]
        m = mask.to(pred.dtype)                                              # (B, T)
        v = m[:, 1:] * m[:, :-1]                                             # (B, T-1) both frames real
        d = pred - gt                                                        # (B, T, D)    pass 1
        dv = d[:, 1:] - d[:, :-1]                                            # (B, T-1, D)  pass 2
        wm = m / (D * m.sum().clamp(min=1))                                  # per-frame weights
        wv = v / (D * v.sum().clamp(min=1))
        mse = torch.einsum("btd,btd,bt->", d, d, wm)                         # pass 3
        vel = torch.einsum("btd,btd,bt->", dv, dv, wv)                       # pass 4
        ctx.save_for_backward(d, dv, wm, wv)
        ctx.gt_needs_grad = ctx.needs_input_grad[1]
        return mse, vel

    @staticmethod
    def backward(ctx, g_mse, g_vel):
        d, dv, wm, wv = ctx.saved_tensors
        # dL/dd = 2 g_mse wm d  +  2 g_vel (wv_{t-1} dv_{t-1} - wv_t dv_t)
        grad = d * (2 * g_mse * wm)[..., None]                               # pass 1
        if dv.shape[1]:
            w = (2 * g_vel * wv)[..., None]                                  # (B, T-1, 1)
            grad[:, 1:].addcmul_(dv, w)                                      # pass 2
            grad[:, :-1].addcmul_(dv, -w)                                    # pass 3
        return grad, (-grad if ctx.gt_needs_grad else None), None
