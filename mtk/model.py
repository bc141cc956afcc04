"""MemoryTalker: audio -> text representation -> motion memory -> decoder -> vertex offsets.

Follows the released code (`memorytalker.md` sections 1-2, 7), equation numbers from its comments:

    h        = E_aud(audio)                      (B, T, H) at 30 fps (`audio.AudioEncoder`)
    logits   = head(dropout(h))                  (B, T, n) the "text representation" (CTC-head-like)
    f_txt    = psi(logits)                       (B, T, c)  Eq. 4
    K        = softmax(kappa logits)             (B, T, n)  Eq. 5
    f_key    = K M   (stage 2: K M~)             (B, T, c)  Eq. 6 / Eq. 14
    q        = PPE(fusion([f_txt ; f_key]))      (B, T, c)
    y        = Decoder(q, memory=f_txt, memory_mask = diagonal alignment)
    vertices = template + out(y)                 (B, T, V*3), `out` zero-initialised

Non-autoregressive: all frames are decoded at once, self-attention is
bidirectional, and the cross-attention alignment mask lets frame t see audio
frame t only (FaceFormer's VOCASET alignment bias). Stage 1 adds the memory
losses and, behind `teacher_forced_pass`, the released code's second decoder pass
with the ground-truth motion feature f_m in place of f_key (the only path that
trains the motion encoder E_m). Stage 2 trains only the style encoder.

Losses (Section 2.1): stage 1  L = L_mse + L_vel + 0.01 (L_mem + L_align)
                      stage 2  L = L_mse + L_vel + 0.01 (L_lip + L_style)
L_mse is the mean squared vertex error (metres), L_vel the same on frame
differences, both over real (unpadded) frames.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .configs import Config
from .audio import AudioConfig, make_audio_encoder, frames_for
from .losses import masked_mse, vertex_losses
from .checks import check_audio, check_stage, check_template
from .memory import MotionMemory
from .stylize import StyleConfig, StyleEncoder, stylize_memory, triplet_loss


@dataclass
class ModelConfig(Config):
    """MemoryTalker's architecture. Presets: `smoke` (CI), `default` (SynthVOCA on a CPU), `paper` (VOCASET)."""

    ADDED_FIELDS = {"fps": 30}           # added later: earlier run keys stay valid (`configs.Config`)

    vertex_dim: int = 15069              # V * 3 (FLAME: 5023 * 3)
    n_slots: int = 32                    # n: memory slots = size of the text representation
    dim: int = 96                        # c: memory and decoder width
    kappa: float = 16.0                  # addressing softmax scale
    period: int = 30                     # PPE period (frames)
    n_heads: int = 4
    ff_dim: int = 192
    n_layers: int = 1
    dropout: float = 0.1
    teacher_forced_pass: bool = True     # stage-1 second decoder pass on ground-truth motion (released code)
    use_memory: bool = True              # False: the "no memory" ablation (decoder on f_txt only)
    phoneme_supervision: float = 0.0     # weight of an auxiliary phoneme loss on the head (0: off, faithful)
    n_phonemes: int = 0
    lambda_mem: float = 0.01             # lambda_1
    lambda_style: float = 0.01           # lambda_2
    triplet: bool = True                 # False: the "no triplet loss" ablation
    max_window_frames: int = 600         # longer clips are animated in overlapping windows
    motion_scale: float = 1.0            # metres per unit of motion: the output layer writes offsets * scale
                                         # (see docs/deviations.md)
    memory_lr_scale: float = 1.0         # the memory's learning rate relative to the rest (stage 1)
    slot_init: str = "xavier"            # "xavier" (released) or "matched": slots start at E_m's output norm
    revive_slots: float = 0.0            # stage 1: a slot addressed less than this fraction of the batch's frames
                                         # (by V) is reset to a random motion feature of the batch (0: off)
    loss_units: str = "metres"           # "metres" (released: MSE in m^2) or "motion": vertex losses divided
                                         # by motion_scale^2, so the lambda-weighted terms are balanced
    fps: int = 30                        # the mesh frame rate it animates at (VOCASET, SynthVOCA 30; BIWI 25)
    audio: AudioConfig = field(default_factory=AudioConfig.default)
    style: StyleConfig = field(default_factory=StyleConfig)

    @classmethod
    def smoke(cls, vertex_dim: int, **kw) -> "ModelConfig":
        kw = {"audio": AudioConfig.smoke(), "n_slots": 16, "dim": 32, "ff_dim": 64, "style": StyleConfig.smoke(),
              "memory_lr_scale": 10.0, "loss_units": "motion", **kw}
        return cls(vertex_dim=vertex_dim, **kw)

    @classmethod
    def default(cls, vertex_dim: int, **kw) -> "ModelConfig":
        """The released architecture with a narrower style encoder (64 channels, not 128), trained on a
        CPU budget: see docs/deviations.md for the training-speed settings (memory learning rate, loss
        units) and why."""
        kw = {"memory_lr_scale": 10.0, "loss_units": "motion", "style": StyleConfig.default(), **kw}
        return cls(vertex_dim=vertex_dim, **kw)

    @classmethod
    def paper(cls, vertex_dim: int = 15069, **kw) -> "ModelConfig":
        return cls(**{"vertex_dim": vertex_dim, "audio": AudioConfig.paper(), **kw})


class PeriodicPositionalEncoding(nn.Module):
    """FaceFormer's PPE: sinusoidal encoding of (t mod period), added to the input; any length."""

    def __init__(self, dim: int, period: int, dropout: float = 0.1):
        super().__init__()
        pos = torch.arange(period, dtype=torch.float32)[:, None]
        div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
        pe = torch.zeros(period, dim)
        pe[:, 0::2] = torch.sin(pos * div)
        pe[:, 1::2] = torch.cos(pos * div)[:, : dim // 2]
        self.register_buffer("pe", pe, persistent=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T = x.shape[1]
        idx = torch.arange(T, device=x.device) % self.pe.shape[0]
        return self.dropout(x + self.pe[idx][None])


def alignment_mask(T: int, device=None) -> torch.Tensor:
    """(T, T) bool, True = masked: decoder frame t may attend to audio frame t only (VOCASET, 30 fps)."""
    return ~torch.eye(T, dtype=torch.bool, device=device)


def in_batch_triplets(speaker: torch.Tensor):
    """(anchor, positive, negative) index triplets within a batch: every ordered pair (i, j) of clips of
    one speaker, with a clip of another speaker as the negative (cycling through them).
    speaker (B,) -> three (N,) long tensors (empty if no speaker has two clips or all clips share one)."""
    spk = speaker.tolist()
    a, p, n = [], [], []
    for i, si in enumerate(spk):
        negs = [k for k, sk in enumerate(spk) if sk != si]
        for j, sj in enumerate(spk):
            if j != i and sj == si and negs:
                a.append(i), p.append(j), n.append(negs[(i + j) % len(negs)])
    t = lambda x: torch.tensor(x, dtype=torch.long, device=speaker.device)  # noqa: E731
    return t(a), t(p), t(n)


class MemoryTalker(nn.Module):
    """The full model (both stages). `forward(batch, stage)` returns predictions and losses."""

    n_stages = 2

    def __init__(self, cfg: ModelConfig, lip_idx=None, template=None, audio_hf_config: dict | None = None):
        """lip_idx: the lip vertices (for L_lip); template: the neutral face `animate` uses by default (a
        `Template`, saved with `save_pretrained`); audio_hf_config: the speech encoder's transformers config
        (`from_pretrained` builds it from this instead of loading `cfg.audio.pretrained`)."""
        super().__init__()
        self.cfg = cfg
        self.template = template
        c, n = cfg.dim, cfg.n_slots
        self.audio_encoder = make_audio_encoder(cfg.audio, hf_config=audio_hf_config)
        self.head_dropout = nn.Dropout(0.1)
        self.head = nn.Linear(self.audio_encoder.hidden_size, n)              # "lm_head": the text representation
        self.txt_proj = nn.Linear(n, c)                                         # psi, Eq. 4
        nn.init.xavier_uniform_(self.txt_proj.weight)
        # E_m's default init maps unit-variance input to features of std ~ 1/sqrt(3) per dim
        self.memory = MotionMemory(n, c, cfg.kappa, slot_norm=math.sqrt(c / 3) if cfg.slot_init == "matched" else None)
        self.motion_encoder = nn.Linear(cfg.vertex_dim, c)                      # E_m
        self.fusion = nn.Linear(2 * c if cfg.use_memory else c, c)
        self.ppe = PeriodicPositionalEncoding(c, cfg.period, cfg.dropout)
        layer = nn.TransformerDecoderLayer(d_model=c, nhead=cfg.n_heads, dim_feedforward=cfg.ff_dim,
                                           dropout=cfg.dropout, batch_first=True)
        self.decoder = nn.TransformerDecoder(layer, num_layers=cfg.n_layers)
        self.out = nn.Linear(c, cfg.vertex_dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.style_encoder = StyleEncoder(n, cfg.style)
        self.phoneme_head = nn.Linear(n, cfg.n_phonemes) if cfg.phoneme_supervision > 0 else None
        lip = torch.as_tensor(np.asarray(lip_idx if lip_idx is not None else [], dtype=np.int64))
        self.register_buffer("lip_idx", lip, persistent=True)

    @classmethod
    def from_dataset(cls, cfg: ModelConfig, dataset) -> "MemoryTalker":
        return cls(cfg, dataset.template.mask("lips"), template=dataset.template)

    # ------------------------------------------------------------------ sharing
    def save_pretrained(self, folder) -> "Path":
        """Write config.json, model.safetensors and template.npz to `folder` (`mtk.checkpoint`): everything
        `from_pretrained` needs, without the dataset or the pretrained-encoder folder."""
        from .checkpoint import save_pretrained
        return save_pretrained(folder, self, self.cfg.to_dict(), self.template,
                               self.audio_encoder.model.config.to_dict())

    @classmethod
    def from_pretrained(cls, folder, device="cpu") -> "MemoryTalker":
        """A model written by `save_pretrained` (or a run's `model/` folder), in eval mode. Nothing is unpickled."""
        from .checkpoint import read_pretrained
        config, weights, template = read_pretrained(folder, device)
        if config.get("class") != cls.__name__:
            raise ValueError(f"{folder}: holds a {config.get('class')!r}, not a {cls.__name__}")
        model = cls(ModelConfig.from_dict(config["config"]), weights["lip_idx"], template=template,
                    audio_hf_config=config.get("audio_config"))
        model.load_state_dict(weights)
        return model.to(device).eval()

    def prepare_stage(self, stage: int, train: list) -> None:
        """Called by `train.fit` before a stage's first epoch: stage 2 with `StyleConfig.mel_norm == "dataset"`
        takes the per-bin log-mel statistics of the training clips (`StyleEncoder.fit_mel_stats`)."""
        if stage == 2 and self.cfg.style.mel_norm == "dataset":
            self.style_encoder.fit_mel_stats([torch.as_tensor(s.audio()) for s in train])

    # ------------------------------------------------------------------ pieces
    def text_representation(self, audio, audio_lengths, n_frames):
        """-> logits (B, T, n) and f_txt (B, T, c)."""
        h = self.audio_encoder(audio, audio_lengths, n_frames)
        logits = self.head(self.head_dropout(h))
        return logits, self.txt_proj(logits)

    def motion_features(self, displacement):
        """f_m = E_m(displacement) (B, T, c), displacement in metres as in the released code.

        (E_m has a fan-in of V*3 = 15k: under Adam each weight moves by ~lr per step, so on inputs of
        unit scale its output would change by ~lr * 15k per step, far faster than the memory can follow.)"""
        return self.motion_encoder(displacement)

    def vertex_losses(self, pred, gt, mask):
        """(L_mse, L_vel) in m^2, or in motion units (divided by motion_scale^2) if cfg.loss_units == "motion"."""
        mse, vel = vertex_losses(pred, gt, mask)
        if self.cfg.loss_units == "motion":
            k = 1.0 / self.cfg.motion_scale ** 2
            return mse * k, vel * k
        return mse, vel

    def decoder_output(self, f_txt, f_mem, frame_mask):
        """[f_txt ; f_mem] -> the decoder's output y (B, T, c), before the output layer."""
        q = self.fusion(f_txt if f_mem is None else torch.cat([f_txt, f_mem], -1))
        q = self.ppe(q)
        T = q.shape[1]
        padding = None if bool(frame_mask.all()) else ~frame_mask     # no mask: PyTorch's fused attention path
        return self.decoder(q, f_txt, memory_mask=alignment_mask(T, q.device), tgt_key_padding_mask=padding)

    def decode(self, f_txt, f_mem, frame_mask, template):
        """[f_txt ; f_mem] -> vertices (B, T, V*3). f_mem is None for the no-memory ablation."""
        y = self.decoder_output(f_txt, f_mem, frame_mask)
        # vertices = template + out(y) * motion_scale, in one fused pass over the (B, T, V*3) output:
        # the scale is applied to y (B, T, c), not to the (V*3, c) weight, and the template rides in the bias
        # (measured faster, forward + backward, than F.linear over B*T frames followed by adding the template)
        s = self.cfg.motion_scale
        bias = (template + self.out.bias * s)[:, None]                   # (B, 1, V*3)
        return torch.baddbmm(bias, y * s, self.out.weight.t().expand(y.shape[0], -1, -1))

    def batch_style(self, batch: dict):
        """Stage 2's (f_s, w_s) for a batch: from its audio (MemoryTalker); oracle variants override this."""
        return self.style_weights(batch["audio"], batch["audio_mask"].sum(1))

    def style_weights(self, audio, audio_lengths):
        """Stage 2: f_s (B, n) and w_s (B, n) from the same (normalised) audio the encoder hears."""
        f_s = self.style_encoder.style(audio, audio_lengths)
        return f_s, self.style_encoder.weights(f_s)

    # ------------------------------------------------------------------ forward
    def forward(self, batch: dict, stage: int = 1) -> dict:
        """batch from `data.collate` (on the model's device). Returns pred (B, T, V*3), loss and its terms."""
        audio, verts, template = batch["audio"], batch["vertices"], batch["template"]
        mask = batch["frame_mask"]
        a_len = batch["audio_mask"].sum(1)
        n_frames = batch["n_frames"]
        logits, f_txt = self.text_representation(audio, a_len, n_frames)
        K = self.memory.key_address(logits)
        out: dict = {}
        if not self.cfg.use_memory:
            pred = self.decode(f_txt, None, mask, template)
            out["mse"], out["vel"] = self.vertex_losses(pred, verts, mask)
            loss = out["mse"] + out["vel"]
        elif stage == 1:
            f_key = self.memory.read(K, self.memory.M.detach())
            pred = self.decode(f_txt, f_key, mask, template)
            f_m = self.motion_features(verts - template[:, None])               # (B, T, c)
            l_mem, V = self.memory.memory_loss(f_m, mask)
            if self.training and self.cfg.revive_slots > 0:
                out["revived"] = self.memory.revive(V, f_m, mask, self.cfg.revive_slots)
            l_align = self.memory.align_loss(logits, V, self.cfg.kappa, mask)
            out["mse"], out["vel"] = self.vertex_losses(pred, verts, mask)
            if self.cfg.teacher_forced_pass:
                pred_tf = self.decode(f_txt, f_m, mask, template)
                mse_tf, vel_tf = self.vertex_losses(pred_tf, verts, mask)
                out["mse"], out["vel"] = out["mse"] + mse_tf, out["vel"] + vel_tf
            out["mem"], out["align"] = l_mem, l_align
            out["f_m_norm"] = f_m.detach().norm(dim=-1)[mask].mean()
            out["slot_norm"] = self.memory.M.detach().norm(dim=-1).mean()
            loss = out["mse"] + out["vel"] + self.cfg.lambda_mem * (l_mem + l_align)
        elif stage == 2:
            f_s, w_s = self.batch_style(batch)
            f_key = self.memory.read(K, stylize_memory(self.memory.M, w_s))
            pred = self.decode(f_txt, f_key, mask, template)
            out["mse"], out["vel"] = self.vertex_losses(pred, verts, mask)
            out["lip"] = self.lip_loss(pred, verts, mask)
            loss = out["mse"] + out["vel"] + self.cfg.lambda_style * out["lip"]
            e = self.style_encoder.embed
            if "positive" in batch:                    # released sampling: a positive and a negative per clip
                p, n_ = batch["positive"], batch["negative"]
                f_p = self.style_weights(p["audio"], p["audio_mask"].sum(1))[0]
                f_n = self.style_weights(n_["audio"], n_["audio_mask"].sum(1))[0]
                out["style"] = triplet_loss(e(f_s), e(f_p), e(f_n), self.cfg.style.triplet_margin)
            elif batch.get("in_batch_triplets"):       # positives and negatives taken from the batch itself
                a, p, n_ = in_batch_triplets(batch["speaker"])
                if len(a):
                    emb = e(f_s)
                    out["style"] = triplet_loss(emb[a], emb[p], emb[n_], self.cfg.style.triplet_margin)
            if "style" in out and self.cfg.triplet:
                loss = loss + self.cfg.lambda_style * out["style"]
            out["w_s"] = w_s.detach()
        else:
            raise ValueError(f"stage must be 1 or 2, got {stage!r}")
        if self.phoneme_head is not None and (batch["phonemes"] >= 0).any():
            ph = self.phoneme_head(logits)                                         # (B, T, P)
            out["phoneme"] = F.cross_entropy(ph.reshape(-1, ph.shape[-1]), batch["phonemes"].reshape(-1),
                                             ignore_index=-1)
            loss = loss + self.cfg.phoneme_supervision * out["phoneme"]
        out["loss"], out["pred"], out["logits"] = loss, pred, logits
        return out

    def lip_loss(self, pred, gt, mask):
        """L_lip: MSE restricted to the lip vertices (B, T, V*3 -> lips)."""
        if self.lip_idx.numel() == 0:
            raise ValueError("MemoryTalker was built without lip indices; pass lip_idx=template.mask('lips')")
        B, T, _ = pred.shape
        p = pred.view(B, T, -1, 3)[:, :, self.lip_idx]
        g = gt.view(B, T, -1, 3)[:, :, self.lip_idx]
        lip = masked_mse(p.reshape(B, T, -1), g.reshape(B, T, -1), mask)
        return lip / self.cfg.motion_scale ** 2 if self.cfg.loss_units == "motion" else lip

    # ------------------------------------------------------------------ inference
    def stage_parameters(self, stage: int):
        """Stage 1: everything except the style encoder (and the frozen CNN). Stage 2: the style encoder only."""
        if stage == 2:
            return list(self.style_encoder.parameters())
        return [p for n, p in self.named_parameters() if not n.startswith("style_encoder.") and p.requires_grad]

    def param_groups(self, stage: int, lr: float) -> list[dict]:
        """Optimizer groups: in stage 1 the memory may learn faster (`memory_lr_scale`)."""
        params = self.stage_parameters(stage)
        if stage != 1 or self.cfg.memory_lr_scale == 1.0:
            return [{"params": params, "lr": lr}]
        mem = [p for p in params if p is self.memory.M]
        rest = [p for p in params if p is not self.memory.M]
        return [{"params": rest, "lr": lr}, {"params": mem, "lr": lr * self.cfg.memory_lr_scale}]

    @torch.no_grad()
    def predict(self, audio, audio_lengths, n_frames, template, stage: int = 2, return_features=False, w_s=None):
        """Batched inference: audio (B, N), template (B, V*3) -> vertices (B, T, V*3) (and recalled features).

        w_s (B, n): slot weights to use in stage 2 instead of the style encoder's (oracle, analysis)."""
        logits, f_txt = self.text_representation(audio, audio_lengths, n_frames)
        T = int(n_frames.max())
        mask = torch.arange(T, device=audio.device)[None] < n_frames[:, None]
        K = self.memory.key_address(logits)
        if not self.cfg.use_memory:
            f_key = None
        elif stage == 2:
            if w_s is None:
                _, w_s = self.style_weights(audio, audio_lengths)
            f_key = self.memory.read(K, stylize_memory(self.memory.M, w_s))
        else:
            f_key = self.memory.read(K)
        pred = self.decode(f_txt, f_key, mask, template)
        return (pred, f_key, K) if return_features else pred

    @torch.no_grad()
    def predict_batch(self, batch: dict, stage: int = 2, condition=None, return_features: bool = False):
        """The kit's common inference interface: a collated batch -> vertices (B, T, V*3). `condition` is
        accepted for interface compatibility and ignored: MemoryTalker uses no speaker identity."""
        stage = stage if self.cfg.use_memory else 1
        w_s = self.batch_style(batch)[1] if stage == 2 else None
        return self.predict(batch["audio"], batch["audio_mask"].sum(1), batch["n_frames"], batch["template"],
                            stage=stage, return_features=return_features, w_s=w_s)

    @torch.no_grad()
    def animate(self, audio, sample_rate: int, template=None, stage: int | None = None, style=None) -> np.ndarray:
        """Animate a neutral face from speech alone: -> vertices (T, V, 3) at `cfg.fps` (30; BIWI 25), metres.

        audio: (N,) or (N, channels) samples, any sample rate >= 4 kHz in Hz (resampled to 16 kHz,
        downmixed to mono). template: (V, 3) or (V*3,) neutral vertices in metres, or a `Template`;
        default the model's own (`self.template`). stage: 2 (default; 1 for the no-memory model) or 1.
        Everything is checked first (`mtk.checks`). No speaker identity is used. Clips longer than
        `max_window_frames` (20 s) are animated in overlapping windows blended with a linear cross-fade.
        style: (n,) slot weights w_s to speak in instead of the style encoder's (stage 2; `mtk.style_edit`).
        """
        from .data import to_mono_16k
        n_stages = 2 if self.cfg.use_memory else 1
        stage = check_stage(n_stages if stage is None else stage, n_stages)
        if template is None:
            if self.template is None:
                raise ValueError("no template given and the model carries none: pass the neutral face (V, 3)")
            template = self.template
        tmpl = check_template(template, self.cfg.vertex_dim)
        if style is not None:
            style = np.asarray(style, dtype=np.float32)
            if stage != 2 or style.shape != (self.cfg.n_slots,) or not np.isfinite(style).all():
                raise ValueError(f"animate(style=...): got shape {style.shape} at stage {stage}; expected {self.cfg.n_slots} "
                                 "finite slot weights (one per memory slot), at stage 2")
        x = check_audio(audio, sample_rate)
        x = to_mono_16k(x, int(sample_rate), source="animate(audio)")
        was_training = self.training
        self.eval()
        try:
            return self._animate_windows(x, tmpl, stage, style).reshape(-1, tmpl.size // 3, 3)
        finally:
            self.train(was_training)

    def _animate_windows(self, x: np.ndarray, tmpl: np.ndarray, stage: int, style=None) -> np.ndarray:
        """16 kHz mono (N,) -> (T, V*3): one pass, or overlapping windows of `max_window_frames`."""
        dev = next(self.parameters()).device
        w_s = None if style is None else torch.from_numpy(style)[None].to(dev)   # (1, n)
        T, W = frames_for(len(x), fps=self.cfg.fps), self.cfg.max_window_frames
        spf = 16000 / self.cfg.fps                                                 # samples per frame
        template = torch.from_numpy(tmpl)[None].to(dev)                            # (1, V*3)

        def window(s: int, e: int) -> np.ndarray:                                  # frames [s, e) -> (e-s, V*3)
            a = x[int(s * spf): int(min(len(x), round(e * spf)))]
            return self.predict(torch.from_numpy(a)[None].to(dev), torch.tensor([len(a)], device=dev),
                                torch.tensor([e - s], device=dev), template, stage=stage, w_s=w_s)[0].cpu().numpy()

        if T <= W:
            return window(0, T)
        out = np.zeros((T, tmpl.size), np.float32)
        weight = np.zeros(T, np.float32)
        for s, e, ramp in window_plan(T, W):
            out[s:e] += window(s, e) * ramp[:, None]
            weight[s:e] += ramp
        return out / weight[:, None]


def window_plan(T: int, W: int) -> list[tuple[int, int, np.ndarray]]:
    """How `animate` covers T frames with windows of W frames: [(start, end, ramp (W,))].

    Windows overlap by W // 6 frames; the last one ends at T. Inside an overlap the earlier window's
    weight falls linearly while the next one's rises (a cross-fade), so every frame's weights sum to a
    positive number and frames covered by one window only take that window's prediction unchanged."""
    if T <= W:
        return [(0, T, np.ones(T, np.float32))]
    fade, hop = W // 6, W - W // 6
    plan = []
    for s in list(range(0, T - W, hop)) + [T - W]:
        e = s + W
        ramp = np.ones(W, np.float32)
        if s > 0:
            ramp[:fade] = np.linspace(0, 1, fade + 2, dtype=np.float32)[1:-1]
        if e < T:
            ramp[-fade:] = np.minimum(ramp[-fade:], np.linspace(1, 0, fade + 2, dtype=np.float32)[1:-1])
        plan.append((s, e, ramp))
    return plan
