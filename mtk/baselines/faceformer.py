"""FaceFormer (Fan et al., CVPR 2022): speech-driven 3D facial animation with an autoregressive transformer.

Follows the released code `EvelynFan/FaceFormer` (`faceformer.py`, `main.py`; `baselines.md` 2.2):

    h      = audio_map(E_aud(audio))                           (B, T, d) at 30 fps (`audio.AudioEncoder`)
    s      = style(one_hot)                                    (B, 1, d) `Linear(n_train -> d, bias=False)`
    x_0    = s                                                 the start token is the style embedding
    x_t    = vertex_map(v_{t-1} - template) + s                (B, 1, d) the previous frame's displacement
    y      = Decoder(PPE(x), memory=h, tgt_mask = biased causal mask, memory_mask = diagonal alignment)
    v_t    = template + out(y_t)                               (B, V*3), `out` zero-initialised

* Periodic positional encoding (PPE, period p = 30): `mtk.model.PeriodicPositionalEncoding`, any length.
* Biased causal self-attention (`init_biased_mask`, the ALiBi-like temporal bias):
  mask[h, i, j] = -slope_h * floor((i - j) / p) for j <= i and -inf for j > i, slopes 1/4, 1/16, 1/64,
  1/256 for 4 heads (ALiBi's geometric sequence). Built for any T (the released code caps it at 600).
* Alignment bias (`enc_dec_mask`, VOCASET): frame t attends to audio frame t only (`mtk.model.alignment_mask`).
* Published size (VOCASET): d 64, 4 heads, FFN 128, 1 post-norm layer, dropout 0.1; wav2vec2-base-960h
  with its CNN frozen and its transformer fine-tuned; loss `nn.MSELoss` on vertices only.

Training. The released `main.py` trains with `teacher_forcing=False`: T sequential decoder passes per
clip, feeding back its own predictions. The kit trains with **teacher forcing** (the ground-truth
displacements shifted by one frame, one parallel decoder pass), as the comparison's specification asks,
because autoregressive training costs T sequential passes per clip. The loss is the vertex MSE only
(the velocity term is computed for the logs, never optimised). The one-hot embedding of the clip's
training speaker conditions every token.

Budget: the one stage gets all of the preset's epochs (`recipes.budget`; "paper": 200, the kit's common
budget, where the released schedule is 100 epochs of Adam 1e-4 at batch 1).

Inference is autoregressive (`generate`): the audio is encoded once, then one frame per step, feeding
back `vertex_map(prediction) + style`. Each step runs only the new position through the decoder, with
the keys and values of earlier positions cached (`decoder_step`); this computes what the released
`predict` computes by re-running the decoder (and the output layer) on the whole prefix at every step,
at the cost of one position per step. `condition` (`predict_batch`) picks the training speaker; None
uses the clip's own speaker if it is a training speaker, otherwise training speaker index 2
(`default_condition`, Imitator's default test condition, `baselines.md` 2.5).

Deviations (each with its reason):
* teacher-forced training (see above);
* the teacher-forced start token is the style embedding alone, as in the released autoregressive path
  (the released teacher-forced path feeds `vertice_map(0) + style`, i.e. adds `vertice_map`'s bias, so
  its two paths disagree on the first token; the kit's two paths compute the same function);
* `motion_scale` (metres per unit, as MemoryTalker's): `vertex_map` reads displacement / scale and
  `out` writes offsets * scale. A reparametrisation that leaves the function class unchanged (1.0 is
  the released code) and gives Adam well-scaled weights; the loss stays in metres;
* clips in a batch are padded at the end; since every mask is causal or diagonal, real frames never
  see padded ones, and the loss averages over real frames only (the released code uses batch 1).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..configs import Config
from ..audio import AudioConfig, make_audio_encoder
from ..losses import vertex_losses
from ..model import PeriodicPositionalEncoding, alignment_mask
from ..recipes import Recipe, method_recipe
from ..train import eval_mode


@dataclass
class FaceFormerConfig(Config):
    """FaceFormer's architecture. Presets: `smoke` (CI), `default` (SynthVOCA on a CPU), `paper` (VOCASET)."""

    vertex_dim: int = 15069              # V * 3
    dim: int = 64                        # feature_dim (VOCASET 64, BIWI 128)
    n_heads: int = 4
    ff_dim: int = 128                    # 2 * dim
    n_layers: int = 1
    period: int = 30                     # PPE and biased-mask period (frames)
    dropout: float = 0.1
    motion_scale: float = 1.0            # metres per unit of motion (1.0: the released parametrisation)
    default_condition: int = 2           # training speaker used for unseen speakers when condition is None
    audio: AudioConfig = field(default_factory=AudioConfig.default)

    @classmethod
    def smoke(cls, vertex_dim: int, **kw) -> "FaceFormerConfig":
        kw.setdefault("audio", AudioConfig.smoke())
        return cls(vertex_dim=vertex_dim, **{**dict(dim=32, ff_dim=64), **kw})

    @classmethod
    def default(cls, vertex_dim: int, **kw) -> "FaceFormerConfig":
        """The published size (d 64, 1 layer): already cheaper per epoch than MemoryTalker's default."""
        return cls(vertex_dim=vertex_dim, **kw)

    @classmethod
    def paper(cls, vertex_dim: int = 15069, **kw) -> "FaceFormerConfig":
        kw.setdefault("audio", wav2vec2_base())
        return cls(vertex_dim=vertex_dim, **kw)



def wav2vec2_base() -> AudioConfig:
    """FaceFormer's and CodeTalker's encoder: facebook/wav2vec2-base-960h (CNN frozen, transformer fine-tuned)."""
    return replace(AudioConfig.paper(), kind="wav2vec2", pretrained="facebook/wav2vec2-base-960h")


# --------------------------------------------------------------------------- the temporal biases
def alibi_slopes(n_heads: int) -> list[float]:
    """ALiBi's per-head slopes: 2^(-8/n) * (2^(-8/n))^h for n a power of two (4 heads: 1/4, 1/16, 1/64,
    1/256); otherwise those of the nearest lower power of two, then every other slope of the next one."""
    def power_of_2(n):
        start = 2.0 ** (-8.0 / n)
        return [start ** (h + 1) for h in range(n)]
    if math.log2(n_heads).is_integer():
        return power_of_2(n_heads)
    lower = 2 ** math.floor(math.log2(n_heads))
    return power_of_2(lower) + alibi_slopes(2 * lower)[0::2][: n_heads - lower]


def biased_mask(slopes: torch.Tensor, T: int, period: int) -> torch.Tensor:
    """FaceFormer's biased causal mask (H, T, T), float: -slope_h * floor((i - j) / period) for j <= i,
    -inf for j > i (frame i never sees a later frame). slopes (H,)."""
    i = torch.arange(T, device=slopes.device)
    lag = i[:, None] - i[None, :]                                                  # (T, T) i - j
    bias = -slopes[:, None, None] * torch.div(lag, period, rounding_mode="floor")[None].to(slopes.dtype)
    return bias.masked_fill((lag < 0)[None], float("-inf"))


def bias_row(slopes: torch.Tensor, t: int, period: int) -> torch.Tensor:
    """Row t of `biased_mask` over the keys 0..t: (H, t + 1)."""
    lag = t - torch.arange(t + 1, device=slopes.device)
    return -slopes[:, None] * torch.div(lag, period, rounding_mode="floor").to(slopes.dtype)[None]


def decode(decoder: nn.TransformerDecoder, x: torch.Tensor, memory: torch.Tensor, slopes: torch.Tensor,
           period: int) -> torch.Tensor:
    """All frames at once (teacher forcing): x (B, T, d) tokens after PPE, memory (B, T, d) audio -> (B, T, d).

    The biased mask is per head; nn.MultiheadAttention takes a 3-D mask as (B * heads, T, T), batch-major.
    """
    B, T, _ = x.shape
    tgt_mask = biased_mask(slopes, T, period).repeat(B, 1, 1)                     # (B*H, T, T)
    return decoder(x, memory, tgt_mask=tgt_mask, memory_mask=alignment_mask(T, x.device))


def decoder_step(decoder: nn.TransformerDecoder, x: torch.Tensor, memory_t: torch.Tensor, t: int, cache: list,
                 slopes: torch.Tensor, period: int) -> torch.Tensor:
    """One autoregressive step of a post-norm `nn.TransformerDecoder` (eval-mode arithmetic, no dropout).

    x (B, d): the token at position t (after PPE); memory_t (B, d): audio frame t; cache: a list with one
    (keys, values) pair per layer, grown in place. -> (B, d), the decoder output at position t; equal to
    row t of `decode` on the first t + 1 tokens, because position t attends to 0..t only (biased causal
    mask) and to audio frame t only (diagonal alignment: one key, so its attention weight is exactly 1
    and cross-attention reduces to out_proj(v_proj(memory_t))).
    """
    B, d = x.shape
    for li, layer in enumerate(decoder.layers):
        if layer.norm_first:
            raise NotImplementedError("decoder_step implements post-norm layers (FaceFormer's)")
        sa = layer.self_attn
        H = sa.num_heads
        q, k, v = F.linear(x, sa.in_proj_weight, sa.in_proj_bias).chunk(3, dim=-1)  # (B, d) each
        if li == len(cache):
            cache.append((k[:, None], v[:, None]))
        else:
            cache[li] = (torch.cat([cache[li][0], k[:, None]], 1), torch.cat([cache[li][1], v[:, None]], 1))
        K, V = cache[li]                                                           # (B, t+1, d)
        qh = q.view(B, H, 1, d // H)
        Kh, Vh = K.view(B, -1, H, d // H).transpose(1, 2), V.view(B, -1, H, d // H).transpose(1, 2)
        scores = qh @ Kh.transpose(-1, -2) / math.sqrt(d // H) + bias_row(slopes, t, period)[None, :, None]
        a = (scores.softmax(-1) @ Vh).reshape(B, d)                                 # (B, d)
        x = layer.norm1(x + sa.out_proj(a))
        ca = layer.multihead_attn
        _, _, w_v = ca.in_proj_weight.chunk(3, dim=0)
        b_v = ca.in_proj_bias.chunk(3)[2] if ca.in_proj_bias is not None else None
        x = layer.norm2(x + ca.out_proj(F.linear(memory_t, w_v, b_v)))
        x = layer.norm3(x + layer.linear2(layer.activation(layer.linear1(x))))
    return decoder.norm(x) if decoder.norm is not None else x


def condition_indices(speaker: torch.Tensor, n_speakers: int, condition=None, default: int = 2) -> torch.Tensor:
    """The training speaker each clip is conditioned on (B,) long: `condition` for all if given, else the
    clip's own speaker if it is a training speaker (>= 0), else `default` (capped to the last speaker)."""
    if condition is not None:
        if not 0 <= int(condition) < n_speakers:
            raise ValueError(f"condition {condition} out of range: {n_speakers} training speakers")
        return torch.full_like(speaker, int(condition))
    fallback = min(default, n_speakers - 1)
    return torch.where(speaker >= 0, speaker, torch.full_like(speaker, fallback))



# --------------------------------------------------------------------------- the model
class FaceFormer(nn.Module):
    """FaceFormer, one training stage. `forward(batch)` trains with teacher forcing; `predict_batch` is
    autoregressive."""

    n_stages = 1

    def __init__(self, cfg: FaceFormerConfig, n_speakers: int):
        super().__init__()
        self.cfg, self.n_speakers = cfg, n_speakers
        d = cfg.dim
        self.audio_encoder = make_audio_encoder(cfg.audio)
        self.audio_map = nn.Linear(self.audio_encoder.hidden_size, d)              # audio_feature_map
        self.vertex_map = nn.Linear(cfg.vertex_dim, d)                             # vertice_map
        self.style = nn.Linear(n_speakers, d, bias=False)                          # obj_vector
        self.ppe = PeriodicPositionalEncoding(d, cfg.period, cfg.dropout)
        layer = nn.TransformerDecoderLayer(d_model=d, nhead=cfg.n_heads, dim_feedforward=cfg.ff_dim,
                                           dropout=cfg.dropout, batch_first=True)
        self.decoder = nn.TransformerDecoder(layer, num_layers=cfg.n_layers)
        self.out = nn.Linear(d, cfg.vertex_dim)                                    # vertice_map_r
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.register_buffer("slopes", torch.tensor(alibi_slopes(cfg.n_heads)), persistent=False)

    @classmethod
    def from_dataset(cls, cfg: FaceFormerConfig, dataset) -> "FaceFormer":
        return cls(cfg, len(dataset.train_subjects))

    # ------------------------------------------------------------------ pieces
    def audio_features(self, batch: dict) -> torch.Tensor:
        """-> h (B, T, d): the audio encoder at 30 fps, mapped to the decoder width."""
        return self.audio_map(self.audio_encoder(batch["audio"], batch["audio_mask"].sum(1), batch["n_frames"]))

    def style_embedding(self, speaker: torch.Tensor) -> torch.Tensor:
        """speaker (B,) training-speaker indices -> (B, 1, d) style embedding of their one-hot vectors."""
        return self.style(F.one_hot(speaker, self.n_speakers).to(self.style.weight.dtype))[:, None]

    def teacher_forced(self, h: torch.Tensor, style: torch.Tensor, disp: torch.Tensor) -> torch.Tensor:
        """One parallel pass: h (B, T, d), style (B, 1, d), disp (B, T, V*3) ground-truth displacements in
        units of motion_scale -> offsets (B, T, V*3) (same units). Frame t sees disp[:t] only."""
        x = torch.cat([style, self.vertex_map(disp[:, :-1]) + style], 1)            # shift by one frame
        return self.out(decode(self.decoder, self.ppe(x), h, self.slopes, self.cfg.period))

    def generate(self, h: torch.Tensor, style: torch.Tensor, teacher: torch.Tensor | None = None) -> torch.Tensor:
        """Autoregressive decoding (eval-mode arithmetic): h (B, T, d), style (B, 1, d) -> offsets (B, T, V*3)
        in units of motion_scale. `teacher` (B, T, V*3), if given, is fed back instead of the predictions
        (then the result equals `teacher_forced`: the two paths implement one function)."""
        B, T, _ = h.shape
        pe = self.ppe.pe
        cache: list = []
        x = style[:, 0]                                                             # (B, d) start token
        outs = []
        for t in range(T):
            y = decoder_step(self.decoder, x + pe[t % pe.shape[0]], h[:, t], t, cache, self.slopes,
                             self.cfg.period)
            outs.append(self.out(y))                                                # (B, V*3)
            x = self.vertex_map(outs[-1] if teacher is None else teacher[:, t]) + style[:, 0]
        return torch.stack(outs, 1)

    # ------------------------------------------------------------------ the protocol
    def forward(self, batch: dict, stage: int = 1) -> dict:
        """Teacher-forced training pass -> {"loss" (= mse), "mse", "vel", "pred" (B, T, V*3)}."""
        verts, template, mask = batch["vertices"], batch["template"], batch["frame_mask"]
        s = self.cfg.motion_scale
        h = self.audio_features(batch)                                              # (B, T, d)
        style = self.style(batch["one_hot"])[:, None]                               # (B, 1, d)
        pred = template[:, None] + self.teacher_forced(h, style, (verts - template[:, None]) / s) * s
        mse, vel = vertex_losses(pred, verts, mask)
        return {"loss": mse, "mse": mse, "vel": vel, "pred": pred}

    def stage_parameters(self, stage: int = 1) -> list:
        """Everything except the frozen CNN feature encoder."""
        frozen = "audio_encoder.model.feature_extractor." if self.cfg.audio.freeze_feature_encoder else None
        return [p for n, p in self.named_parameters() if not (frozen and n.startswith(frozen)) and p.requires_grad]

    @torch.no_grad()
    def predict_batch(self, batch: dict, stage=None, condition=None, return_features: bool = False):
        """Autoregressive inference on a collated batch -> vertices (B, T, V*3), always in eval mode.
        condition: a training-speaker index for every clip; None: `condition_indices`' default."""
        if return_features:
            raise NotImplementedError("FaceFormer has no recalled features to return")
        spk = condition_indices(batch["speaker"], self.n_speakers, condition, self.cfg.default_condition)
        with eval_mode(self):
            h = self.audio_features(batch)                                          # encoded once
            offsets = self.generate(h, self.style_embedding(spk))
        return batch["template"][:, None] + offsets * self.cfg.motion_scale


# --------------------------------------------------------------------------- recipe
def recipe(preset: str, dataset, progress: bool = True, **model_kw) -> Recipe:
    """FaceFormer under a preset's budget: one stage gets all `budget(preset)["epochs"]`.

    Audio: the kit's shared pretrained encoder (smoke/default) or wav2vec2-base-960h (paper).
    """
    presets = {"smoke": FaceFormerConfig.smoke, "default": FaceFormerConfig.default, "paper": FaceFormerConfig.paper}
    return method_recipe("faceformer", preset, dataset, presets, FaceFormer, progress, **model_kw)
