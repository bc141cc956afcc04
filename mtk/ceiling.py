"""A true ceiling for stage 2: fit the memory's style on the test speaker's own reference sentences.

Stage 2 reads a speaker's style from the audio alone. How much *could* the trained model express if it
knew the speaker? With every weight of a stage-1 model frozen, fit per test speaker, on that speaker's
reference sentences (1-20; never evaluated), one of

    "slots"    w (n,)         M~ = diag(w) M       Eq. 14's own capacity: the best w_s stage 2 could output
    "gain"     g              M~ = g M             a single memory gain
    "memory"   Delta (n, c)   M~ = M + Delta       a free speaker memory

by Adam on the vertex losses (L_mse + L_vel, stage 1's), starting at w = 1, g = 1, Delta = 0 (the stage-1
model itself), and score the protocol sentences (21-40) like every model (`recipes.evaluate`). The gap
between stage 2 and "slots" is what audio-guided stylization leaves on the table with this memory;
the gap between "slots" and "memory" is what Eq. 14's diagonal re-weighting cannot express.

It replaces the earlier "oracle style" row, which mapped the true style vector through an MLP trained on
only 8 training speakers and so was arbitrary for an unseen speaker (not a ceiling).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .configs import Config
from .data import FaceDataset, collate
from .train import to_device

KINDS = ("slots", "gain", "memory")


@dataclass
class CeilingConfig(Config):
    steps: int = 60               # full-batch Adam steps on a speaker's reference clips
    lr: float = 0.02
    batch_size: int = 8           # clips per forward pass at prediction

    @classmethod
    def smoke(cls) -> "CeilingConfig":
        return cls(steps=4)

    @classmethod
    def default(cls) -> "CeilingConfig":
        return cls()

    @classmethod
    def paper(cls) -> "CeilingConfig":
        return cls(steps=200, lr=0.01)


def _stylized(M: torch.Tensor, kind: str, p: torch.Tensor) -> torch.Tensor:
    """M (n, c) and the fitted parameter -> the speaker's memory (n, c)."""
    if kind == "slots":
        return p[:, None] * M
    if kind == "gain":
        return p * M
    return M + p


def _init(kind: str, M: torch.Tensor) -> torch.Tensor:
    if kind == "slots":
        return torch.ones(M.shape[0])
    if kind == "gain":
        return torch.ones(())
    return torch.zeros_like(M)


@torch.no_grad()
def _audio_side(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """What does not depend on the memory, computed once: key address K (B, T, n), f_txt (B, T, c), mask (B, T)."""
    logits, f_txt = model.text_representation(batch["audio"], batch["audio_mask"].sum(1), batch["n_frames"])
    mask = torch.arange(f_txt.shape[1], device=f_txt.device)[None] < batch["n_frames"][:, None]
    return model.memory.key_address(logits), f_txt, mask


def _decode(model, batch: dict, audio_side, M: torch.Tensor) -> torch.Tensor:
    """Vertices (B, T, V*3) of a batch read from memory M ((n, c) or (B, n, c))."""
    K, f_txt, mask = audio_side
    return model.decode(f_txt, model.memory.read(K, M), mask, batch["template"])


class QuadraticLoss:
    """L_mse + L_vel (`losses.vertex_losses`, in m^2) of the frozen model as a function of its decoder output
    y (B, T, c), exactly, without forming the (B, T, V*3) vertices.

    The output layer is linear: pred = template + s b + s y W^T (W (D, c), s = motion_scale), so with the
    residual r = gt - template - s b (B, T, D) and A = W^T W (c, c), q = r W (B, T, c),

        |pred - gt|^2 = s^2 y A y^T - 2 s y q^T + |r|^2          per frame,

    and the velocity term is the same on consecutive-frame differences of y and r. A, q and |r|^2 are
    computed once; each step then costs O(T c^2) instead of O(T c D) (D = 15,069 on the default mesh).
    """

    def __init__(self, model, batch: dict, mask: torch.Tensor):
        s = model.cfg.motion_scale
        W = model.out.weight.detach().double()                                      # (D, c)
        r = (batch["vertices"] - batch["template"][:, None] - s * model.out.bias.detach()).double()   # (B, T, D)
        rv = r[:, 1:] - r[:, :-1]
        self.s, self.D = s, W.shape[0]
        # float64: the three terms nearly cancel when the fit is good
        self.A = W.t() @ W                                                          # (c, c)
        self.q, self.qv = r @ W, rv @ W                                             # (B, T, c), (B, T-1, c)
        self.rr, self.rrv = (r * r).sum(-1), (rv * rv).sum(-1)                      # (B, T), (B, T-1)
        m = mask.double()
        self.wm = m / (self.D * m.sum().clamp(min=1))
        v = m[:, 1:] * m[:, :-1]
        self.wv = v / (self.D * v.sum().clamp(min=1))

    def __call__(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """y (B, T, c) -> (L_mse, L_vel) in m^2 (float64)."""
        y = y.double()

        def sq(y, q, rr):                                                           # |s y W^T - r|^2 per frame
            return self.s ** 2 * torch.einsum("btc,cd,btd->bt", y, self.A, y) - 2 * self.s * (y * q).sum(-1) + rr
        yv = y[:, 1:] - y[:, :-1]
        return (sq(y, self.q, self.rr) * self.wm).sum(), (sq(yv, self.qv, self.rrv) * self.wv).sum()


def fit_speaker(model, reference: list, kind: str, cfg: CeilingConfig, n_train: int) -> torch.Tensor:
    """The fitted parameter of one speaker (`KINDS`) from their reference clips; the model is left unchanged."""
    if kind not in KINDS:
        raise ValueError(f"ceiling kind {kind!r}: expected one of {KINDS}")
    if not reference:
        raise ValueError("the ceiling needs the speaker's reference sentences (dataset.sequences(split, "
                         "part='reference')); this speaker has none")
    ds = FaceDataset(reference, n_train)
    M = model.memory.M.detach()
    batch = to_device(collate([ds[i] for i in range(len(ds))]), M.device)
    p = _init(kind, M).to(M.device).requires_grad_(True)
    opt = torch.optim.Adam([p], lr=cfg.lr)
    flags = [q.requires_grad for q in model.parameters()]
    model.eval().requires_grad_(False)
    K, f_txt, mask = _audio_side(model, batch)
    loss = QuadraticLoss(model, batch, mask)
    k = 1.0 / model.cfg.motion_scale ** 2                  # motion units, as stage 1 trained (Adam is scale-free)
    try:
        for _ in range(cfg.steps):
            mse, vel = loss(model.decoder_output(f_txt, model.memory.read(K, _stylized(M, kind, p)), mask))
            opt.zero_grad()
            ((mse + vel) * k).backward()
            opt.step()
    finally:
        for q, f in zip(model.parameters(), flags):
            q.requires_grad_(f)
    return p.detach()


@torch.no_grad()
def predictions(model, dataset, split: str, kind: str, cfg: CeilingConfig | None = None) -> list[np.ndarray]:
    """(T, V, 3) per protocol clip of `split` (`dataset.sequences(split)` order), each speaker's memory
    fitted on their reference sentences. `model`: a MemoryTalker after stage 1 (stage 2's encoder unused)."""
    cfg = cfg or CeilingConfig()
    if not getattr(model.cfg, "use_memory", True):
        raise ValueError("the ceiling fits the memory's style; this model has no memory")
    seqs = dataset.sequences(split)
    n_train = len(dataset.train_subjects)
    ref = dataset.sequences(split, part="reference")
    fitted = {}
    for spk in dict.fromkeys(s.subject for s in seqs):
        with torch.enable_grad():
            fitted[spk] = fit_speaker(model, [s for s in ref if s.subject == spk], kind, cfg, n_train)
    M = model.memory.M.detach()
    ds = FaceDataset(seqs, n_train)
    preds = []
    for i in range(0, len(seqs), cfg.batch_size):
        idx = range(i, min(len(seqs), i + cfg.batch_size))
        batch = to_device(collate([ds[j] for j in idx]), M.device)
        Ms = torch.stack([_stylized(M, kind, fitted[seqs[j].subject]) for j in idx])       # (B, n, c)
        pred = _decode(model, batch, _audio_side(model, batch), Ms)
        for b, T in enumerate(batch["n_frames"].tolist()):
            preds.append(pred[b, :T].reshape(T, -1, 3).cpu().numpy())
    return preds


def evaluate(model, dataset, split: str = "test", kinds=KINDS, cfg: CeilingConfig | None = None) -> dict:
    """{kind: metrics.EvalResult} of the ceiling rows on a split's protocol sentences."""
    from . import recipes
    return {k: recipes.evaluate(model, dataset, split, stage=1, preds=predictions(model, dataset, split, k, cfg))
            for k in kinds}
