"""The vertex losses every method in the kit trains with (shared by `mtk.model`, the baselines and `mtk.train`).

    L_mse  mean squared vertex error over real (unpadded) frames        pred, gt (B, T, D), mask (B, T)
    L_vel  the same on consecutive-frame differences (Eq. 10 of MemoryTalker, FaceFormer's velocity loss)

Units are those of the inputs (metres in, m^2 out); `mtk.train.loss_scale` and `ModelConfig.loss_units`
decide what the optimiser sees.
"""
from __future__ import annotations

import torch


def masked_mse(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over real frames: pred, gt (B, T, D), mask (B, T)."""
    err = ((pred - gt) ** 2).mean(-1)
    return (err * mask).sum() / mask.sum().clamp(min=1)


def vertex_losses(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(L_mse, L_vel) over real frames. L_vel (Eq. 10) is the MSE of consecutive-frame differences,
    computed as the differences of the error d = pred - gt (the same thing, one big tensor fewer)."""
    d = pred - gt                                                            # (B, T, D)
    mse = ((d * d).mean(-1) * mask).sum() / mask.sum().clamp(min=1)
    m = mask[:, 1:] & mask[:, :-1]
    dv = d[:, 1:] - d[:, :-1]
    vel = ((dv * dv).mean(-1) * m).sum() / m.sum().clamp(min=1)
    return mse, vel

