"""The key-value facial motion memory of MemoryTalker (paper Section 3.1; `memorytalker.md` 1.3-1.4).

A memory M_m of n slots by c dims stores general, phoneme-aligned motion. It is
*written* in stage 1 through value addressing: a motion encoder E_m embeds the
ground-truth motion, and the memory learns to reconstruct that embedding from a
soft combination of its slots. It is *read* through key addressing: the audio
encoder's per-frame n-way "text representation" logits, soft-maxed, say which
slots to combine. An alignment loss pulls the key address (from audio) towards
the value address (from motion), so that at inference, with audio alone, the
key address recalls the motion the value address would have.

Shapes: B batch, T frames, n slots, c memory dims. kappa is the softmax scale (16).

    value address (Eq. 1)  V = softmax_n(kappa * cos(f_m, M_i))          (B, T, n)
    value read    (Eq. 2)  f_val = V M                                    (B, T, c)
    L_mem         (Eq. 3)  MSE(f_val, sg(f_m))
    key address   (Eq. 5)  K = softmax_n(kappa * logits)                  (B, T, n)
    key read      (Eq. 6)  f_key = K M   (M detached in stage 1)          (B, T, c)
    L_align       (Eq. 7)  KL(sg(K) || V), summed over frames, / B

sg() is stop-gradient. As in the released code, L_mem and L_align move only the
memory: the targets are detached, and the decoder reads a detached memory.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class MotionMemory(nn.Module):
    """M_m: an (n, c) parameter with Xavier-normal init, and the addressing rules above."""

    def __init__(self, n_slots: int = 32, dim: int = 96, kappa: float = 16.0, slot_norm: float | None = None):
        super().__init__()
        self.kappa = kappa
        self.M = nn.Parameter(torch.empty(n_slots, dim))
        nn.init.xavier_normal_(self.M)
        if slot_norm is not None:               # start the slots on the scale of the features they store
            with torch.no_grad():
                self.M.mul_(slot_norm / self.M.norm(dim=-1, keepdim=True))

    @property
    def n_slots(self) -> int:
        return self.M.shape[0]

    def key_address(self, logits: torch.Tensor) -> torch.Tensor:
        """Eq. 5: logits (B, T, n) -> K (B, T, n), rows sum to 1."""
        return F.softmax(self.kappa * logits, dim=-1)

    def value_address(self, f_m: torch.Tensor) -> torch.Tensor:
        """Eq. 1: motion features (B, T, c) -> V (B, T, n) by scaled cosine similarity with the slots."""
        cos = F.normalize(f_m, dim=-1) @ F.normalize(self.M, dim=-1).t()          # (B, T, n)
        return F.softmax(self.kappa * cos, dim=-1)

    def read(self, address: torch.Tensor, memory: torch.Tensor | None = None) -> torch.Tensor:
        """Eq. 2 / Eq. 6: address (B, T, n) times memory (n, c) or per-sample (B, n, c) -> (B, T, c)."""
        M = self.M if memory is None else memory
        return address @ M if M.dim() == 2 else torch.bmm(address, M)

    def memory_loss(self, f_m: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. 1-3: (L_mem, V). f_m (B, T, c) is detached here; mask (B, T) marks real frames."""
        f = f_m.detach()
        V = self.value_address(f)
        f_val = self.read(V)                                                       # (B, T, c)
        err = ((f_val - f) ** 2).mean(-1)                                          # (B, T)
        return (err * mask).sum() / mask.sum().clamp(min=1), V

    @torch.no_grad()
    def revive(self, V: torch.Tensor, f_m: torch.Tensor, mask: torch.Tensor, min_usage: float,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Reset dead slots (not in the paper; the kit's default preset, see docs/deviations.md).

        A slot whose share of the value address over the batch's real frames is below `min_usage` gets
        no gradient from L_mem again (softmax(16 cos) is nearly hard), so the memory collapses onto a few
        slots. As in VQ-VAE codebook restarts, such a slot is set to the motion feature of a random real
        frame of the batch. Returns the number of slots reset (a scalar tensor, for the logs).
        """
        usage = (V * mask[..., None]).sum((0, 1)) / mask.sum().clamp(min=1)       # (n,) sums to 1
        dead = torch.nonzero(usage < min_usage).flatten()
        if len(dead):
            frames = f_m.detach()[mask]                                              # (frames, c)
            pick = torch.randint(len(frames), (len(dead),), generator=generator, device=frames.device)
            self.M.data[dead] = frames[pick]
        return torch.tensor(float(len(dead)))

    @staticmethod
    def align_loss(logits: torch.Tensor, V: torch.Tensor, kappa: float, mask: torch.Tensor) -> torch.Tensor:
        """Eq. 7: KL(softmax(kappa logits) || V), the key address detached; summed over frames, divided by B.

        With B = 1 this equals the released code's F.kl_div(V.log(), K, reduction="batchmean").
        """
        K = F.softmax(kappa * logits.detach(), dim=-1)
        kl = (K * (torch.log(K.clamp(min=1e-12)) - torch.log(V.clamp(min=1e-12)))).sum(-1)     # (B, T)
        return (kl * mask).sum() / logits.shape[0]


def slot_usage(address) -> dict:
    """How many of the memory's slots the frames actually read: address (frames, n) of K or V rows.

    perplexity = exp(H(p)), p = the address averaged over frames (the slots' share of all reading), the
    "codebook perplexity" VQ models report: n if every slot is read equally, 1 if one slot takes all.
    frame_perplexity = exp(mean H(address_t)): how many slots one frame mixes (1: a hard lookup).
    used = slots holding at least 1/(10 n) of the reading."""
    a = torch.as_tensor(address, dtype=torch.float64)
    if a.dim() != 2 or len(a) == 0:
        raise ValueError(f"slot_usage: expected an address of shape (frames, n) with frames > 0, got {tuple(a.shape)}")
    p = a.mean(0)
    n = a.shape[1]
    ent = lambda q: -(q * torch.log(q.clamp(min=1e-300))).sum(-1)          # noqa: E731, nats
    return {"n": n, "perplexity": float(torch.exp(ent(p))),
            "frame_perplexity": float(torch.exp(ent(a).mean())), "used": int((p >= 1 / (10 * n)).sum())}
