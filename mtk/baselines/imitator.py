"""Imitator (Thambiraja et al., ICCV 2023): a style-agnostic viseme decoder, a style-adaptable motion decoder.

Follows the released code `bala1144/Imitator` (`imitator/models/nn_model.py`, `pl_trainer.py`,
`pl_style_trainer.py`, `utils/mbp_loss.py`; `baselines.md` section 2.5):

    h        = E_aud(audio)                                  (B, T, H) at 30 fps (`audio.AudioEncoder`)
    a        = audio_map(h)                                  (B, T, d)
    x_0      = 0;  y_t = Decoder(x_0..x_t, a_t);  x_t+1 = y_t   the viseme features y (B, T, d):
               autoregressive on its own output features, plain causal self-attention, and the
               diagonal alignment mask (frame t reads audio frame t only); no speaker identity
    s        = style(one_hot)                                (B, d)  Linear(n_train -> d, bias=False)
    offsets  = final(MLP(y + s)) * motion_scale              (B, T, V*3)  MLP = 4 x [Linear + LeakyReLU(0.01)],
                                                             `final` zero-initialised
    vertices = template + offsets

Generalised training (`pl_trainer.py`):  L = L_mse + L_mbp + 10 L_vel, where the lip-closure loss
L_mbp is the per-frame squared error weighted by 5 w_t, w_t = 1 on frames of a bilabial consonant
(/p b m/), 0.61 and 0.14 one and two frames away (a Gaussian of one frame's width), else 0 (`mbp_weights`).

Test-time style adaptation (`pl_style_trainer.py`, `Style_only_optim`): for an unseen speaker the style
code starts from training speaker 2 (Imitator's FaceTalk_170725_00137_TA) and only it is optimised
(L_mse + 10 L_vel, Adam) on the speaker's reference sentences, with the viseme features computed
once and cached. The comparison harness adapts to every test speaker and then evaluates:

    model, _ = recipes.load_or_train(imitator.recipe("default", ds), ds)
    report = imitator.adapt_to_speakers(model, ds, "test", imitator.AdaptConfig.default())  # seconds
    recipes.evaluate(model, ds, "test", stage=1)      # predict_batch uses each subject's adapted code

`adapt(model, sequences, steps, lr)` is the single-speaker step. Imitator's second stage
(`Style_and_disp_final_layer_optim_voca`: the style code and the motion decoder's final layer) is
`AdaptConfig(final_layer=True)`, off by default; its final layer is a per-speaker copy, so the shared
model is never modified.

Where the kit differs from the released code, and why:

* Audio: the kit's shared phoneme-pretrained HuBERT in "smoke"/"default", the published
  `facebook/wav2vec2-base-960h` (CNN frozen, transformer fine-tuned) in "paper".
* Start token: the released loop feeds a zero start token at the first step but the style embedding
  in position 0 at every later step, so its "style-agnostic" features do depend on the speaker. Here
  the start token is zero throughout, as the paper describes, so the viseme features are truly
  style-free (and the autoregression is exact: `viseme_features(teacher=y)` reproduces y).
* Positional encoding: the released sinusoidal encoding is indexed on the batch axis
  (`pe[:x.size(0)]` with batch-first tensors, batch 1), so it adds the position-0 vector, a
  constant, to every token; it is left out.
* Training is autoregressive as released (`train_teacher_forcing: False`): T steps per clip, with
  a cache of each layer's past inputs so that a step costs one token, not the whole prefix.
* MBP weights come from the clip's phoneme labels (`batch["phonemes"]`, the phonemes whose
  stress-stripped name is p, b or m) instead of the released precomputed weight files
  (`assets/release/mbp_weights_win03_weight05`), with the same window and fall-off.
* Units: the output layer writes offsets in units of the dataset's motion size (as MemoryTalker's
  `motion_scale`), so Adam's steps are on the motion's scale; losses stay in m^2, unweighted, as
  released (so, as for MemoryTalker in the kit, most gradients are below Adam's epsilon, 1e-8).
* Adaptation: a fixed number of full-batch Adam steps on all of a speaker's reference sentences
  (SynthVOCA's held-out first half; `AdaptConfig.paper` takes the first 4, as Imitator's sentences
  1-4), with the objective in units of the motion size so that Adam's epsilon does not stall the
  code. With the final layer fixed the objective is an exact quadratic form in the MLP output
  (`StyleObjective`), so a step costs no output layer and adapting takes seconds. The released
  schedule (lr 1e-4, batch 1, early stopping on sentences 19-20) has a debug epoch count, so its
  length is not known; here the code is optimised to convergence (500 steps, lr 0.03).
* Unseen speakers without an adapted code use training speaker 2 (Imitator's default condition);
  `condition=k` forces speaker k for every clip.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from ..synthvoca.articulation import PHONEMES, strip_stress
from ..configs import Config
from ..audio import AudioConfig, make_audio_encoder
from ..data import FaceDataset, collate
from ..losses import vertex_losses
from ..model import alignment_mask
from ..recipes import Recipe, method_recipe
from ..train import eval_mode

BILABIALS = ("p", "b", "m")


@dataclass
class ImitatorConfig(Config):
    """Imitator's architecture and generalised-training loss. Presets: smoke, default, paper."""

    vertex_dim: int = 15069              # V * 3
    dim: int = 64                        # feature_dim
    n_heads: int = 4
    ff_dim: int = 128                    # 2 * dim
    n_layers: int = 1                    # viseme decoder layers
    dropout: float = 0.1
    n_mlp_layers: int = 4                # motion decoder: num_dec_layers = 5 -> 4 hidden layers + final
    leaky_slope: float = 0.01
    lambda_mbp: float = 5.0              # closed_frame_weight
    mbp_falloff: tuple[float, ...] = (1.0, 0.61, 0.14)   # weight at 0, 1, 2 frames from a bilabial
    lambda_vel: float = 10.0
    default_condition: int = 2           # FaceTalk_170725_00137_TA, Imitator's default and initial style
    motion_scale: float = 1.0            # metres per unit of motion written by the output layer
    audio: AudioConfig = field(default_factory=AudioConfig.default)

    @classmethod
    def smoke(cls, vertex_dim: int, **kw) -> "ImitatorConfig":
        kw.setdefault("audio", AudioConfig.smoke())
        return cls(**{**dict(vertex_dim=vertex_dim, dim=32, ff_dim=64), **kw})

    @classmethod
    def default(cls, vertex_dim: int, **kw) -> "ImitatorConfig":
        """The published sizes (d 64): already smaller than MemoryTalker's default decoder."""
        return cls(vertex_dim=vertex_dim, **kw)

    @classmethod
    def paper(cls, vertex_dim: int = 15069, **kw) -> "ImitatorConfig":
        kw.setdefault("audio", paper_audio())
        return cls(vertex_dim=vertex_dim, **kw)


def paper_audio() -> AudioConfig:
    """Imitator's encoder: wav2vec2-base-960h (hidden 768, 12 layers, CNN frozen)."""
    return AudioConfig(kind="wav2vec2", pretrained="facebook/wav2vec2-base-960h", hidden_size=768,
                       num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072, conv_dim=(512,) * 7,
                       num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16, mask_time_prob=0.05)


def causal_mask(T: int, device=None) -> torch.Tensor:
    """(T, T) bool, True = masked: frame t attends to frames 0..t (`casual_mask`, no ALiBi bias)."""
    return torch.triu(torch.ones(T, T, dtype=torch.bool, device=device), diagonal=1)


def bilabial_ids() -> list[int]:
    """Label ids (into `PHONEMES`) of the phonemes whose stress-stripped name is p, b or m."""
    return [i for i, ph in enumerate(PHONEMES) if strip_stress(ph)[0] in BILABIALS]


def mbp_weights(phonemes: torch.Tensor, falloff=(1.0, 0.61, 0.14)) -> torch.Tensor:
    """Lip-closure frame weights: phonemes (B, T) label ids (-1 unknown) -> w (B, T) in [0, 1].

    w_t = max over bilabial frames s with |t - s| < len(falloff) of falloff[|t - s|], else 0.
    e.g. bilabial at frame 3 of 8: [0, 0.14, 0.61, 1, 0.61, 0.14, 0, 0].
    """
    ids = torch.tensor(bilabial_ids(), device=phonemes.device)
    hit = torch.isin(phonemes, ids).float()                                  # (B, T)
    w = hit * falloff[0]
    for k, f in enumerate(falloff[1:hit.shape[1]], start=1):
        w[:, k:] = torch.maximum(w[:, k:], hit[:, :-k] * f)                 # k frames after a bilabial
        w[:, :-k] = torch.maximum(w[:, :-k], hit[:, k:] * f)                # k frames before
    return w


class Imitator(nn.Module):
    """Viseme decoder (style-agnostic, autoregressive) + motion decoder (style-adaptable)."""

    n_stages = 1

    def __init__(self, cfg: ImitatorConfig, n_speakers: int):
        super().__init__()
        self.cfg = cfg
        d = cfg.dim
        self.n_speakers = n_speakers
        self.audio_encoder = make_audio_encoder(cfg.audio)
        self.audio_map = nn.Linear(self.audio_encoder.hidden_size, d)
        layer = nn.TransformerDecoderLayer(d_model=d, nhead=cfg.n_heads, dim_feedforward=cfg.ff_dim,
                                           dropout=cfg.dropout, batch_first=True)
        self.decoder = nn.TransformerDecoder(layer, num_layers=cfg.n_layers)
        self.style = nn.Linear(n_speakers, d, bias=False)                      # obj_vector
        mlp = []
        for _ in range(cfg.n_mlp_layers):
            mlp += [nn.Linear(d, d), nn.LeakyReLU(cfg.leaky_slope)]
        self.mlp = nn.Sequential(*mlp)
        self.final = nn.Linear(d, cfg.vertex_dim)                              # final_out_layer
        for m in self.mlp:                                                     # motion_decoder.init_weight
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.zeros_(self.final.weight)
        nn.init.zeros_(self.final.bias)
        # test-time adaptation results, per unseen subject (not part of the state dict)
        self.adapted_style: dict[str, torch.Tensor] = {}
        self.adapted_final: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    @classmethod
    def from_dataset(cls, cfg: ImitatorConfig, dataset) -> "Imitator":
        return cls(cfg, len(dataset.train_subjects))

    # ------------------------------------------------------------------ viseme decoder
    def audio_features(self, batch) -> torch.Tensor:
        """a (B, T, d): the audio encoder's features mapped to the decoder width."""
        h = self.audio_encoder(batch["audio"], batch["audio_mask"].sum(1), batch["n_frames"])
        return self.audio_map(h)

    def viseme_features(self, a: torch.Tensor, teacher: torch.Tensor | None = None) -> torch.Tensor:
        """The style-agnostic viseme features y (B, T, d) from audio features a (B, T, d).

        Autoregressive (teacher None): the input at frame t is the output at frame t-1 (zero at t = 0),
        decoded one frame at a time. Each layer keeps its past inputs, so a step attends over them with
        one query; with the causal mask this equals running the layer on the whole prefix.
        teacher (B, T, d): decode all frames in parallel from the inputs [0, teacher_0, ..., teacher_T-2]
        (with teacher = the autoregressive output this reproduces it: used to check the recursion).
        Padded frames sit after the real ones, so the causal mask keeps them out of real frames.
        """
        B, T, d = a.shape
        if teacher is not None:
            x = torch.cat([a.new_zeros(B, 1, d), teacher[:, :-1]], 1)
            return self.decoder(x, a, tgt_mask=causal_mask(T, a.device), memory_mask=alignment_mask(T, a.device))
        past: list[list[torch.Tensor]] = [[] for _ in self.decoder.layers]    # per layer: its inputs so far
        x = a.new_zeros(B, 1, d)                                               # the start token
        out = []
        for t in range(T):
            a_t = a[:, t:t + 1]                                                # the aligned audio frame only
            y = x
            for layer, keys in zip(self.decoder.layers, past):
                keys.append(y)
                y = decoder_step(layer, y, torch.cat(keys, 1), a_t)
            out.append(y)
            x = y
        return torch.cat(out, 1)                                               # (B, T, d)

    # ------------------------------------------------------------------ motion decoder
    def motion_offsets(self, y: torch.Tensor, style: torch.Tensor, final=None) -> torch.Tensor:
        """y (B, T, d) viseme features, style (B, d) codes -> offsets (B, T, V*3) in metres.
        final: an optional (weight, bias) to use instead of the shared final layer (adapted speakers)."""
        z = self.mlp(y + style[:, None])
        o = self.final(z) if final is None else nn.functional.linear(z, *final)
        return o * self.cfg.motion_scale

    def default_speaker(self) -> int:
        """The training speaker for unseen, unadapted speakers (`default_condition`, within range)."""
        return min(self.cfg.default_condition, self.n_speakers - 1)

    def style_codes(self, batch, condition=None) -> torch.Tensor:
        """(B, d): a forced training speaker `condition`; else the clip's own training speaker, its subject's
        adapted code, or training speaker `default_condition` (unseen, not adapted)."""
        W = self.style.weight                                                  # (d, n_train)
        default = self.default_speaker()
        codes = []
        for spk, subj in zip(batch["speaker"].tolist(), batch["subject"]):
            if condition is not None:
                codes.append(W[:, int(condition)])
            elif spk >= 0:
                codes.append(W[:, spk])
            elif subj in self.adapted_style:
                codes.append(self.adapted_style[subj].to(W))
            else:
                codes.append(W[:, default])
        return torch.stack(codes)

    # ------------------------------------------------------------------ forward
    def mbp_loss(self, pred, gt, phonemes, mask) -> torch.Tensor:
        """L_mbp = mean over real frames of lambda_mbp * w_t * (per-frame squared error), w from `mbp_weights`."""
        w = mbp_weights(phonemes, self.cfg.mbp_falloff) * mask                 # (B, T)
        err = ((pred - gt) ** 2).mean(-1)
        return self.cfg.lambda_mbp * (w * err).sum() / mask.sum().clamp(min=1)

    def forward(self, batch: dict, stage: int = 1) -> dict:
        """Generalised training on a collated batch: loss = mse + mbp + 10 vel, and pred (B, T, V*3)."""
        mask = batch["frame_mask"]
        y = self.viseme_features(self.audio_features(batch))
        pred = batch["template"][:, None] + self.motion_offsets(y, self.style(batch["one_hot"]))
        out: dict = {}
        out["mse"], out["vel"] = vertex_losses(pred, batch["vertices"], mask)
        out["mbp"] = self.mbp_loss(pred, batch["vertices"], batch["phonemes"], mask)
        out["loss"] = out["mse"] + out["mbp"] + self.cfg.lambda_vel * out["vel"]
        out["pred"] = pred
        return out

    def stage_parameters(self, stage: int = 1):
        """Everything trainable (the audio CNN stays frozen)."""
        if stage != 1:
            raise ValueError(f"Imitator has one training stage (adaptation is `adapt`), got {stage!r}")
        return [p for p in self.parameters() if p.requires_grad]

    @torch.no_grad()
    def predict_batch(self, batch: dict, stage=None, condition=None, return_features: bool = False):
        """Vertices (B, T, V*3), autoregressive, in eval mode. condition: a training-speaker index for every
        clip, or None (each clip's own speaker / adapted code / speaker `default_condition`: `style_codes`).
        The viseme features are `viseme_features(audio_features(batch))`."""
        if return_features:
            raise NotImplementedError("Imitator has no recalled features; use viseme_features() for its features")
        with eval_mode(self):
            y = self.viseme_features(self.audio_features(batch))
            codes = self.style_codes(batch, condition)
            offsets = self.motion_offsets(y, codes)
            if condition is None:                               # clips of speakers with an adapted final layer
                for b, (spk, subj) in enumerate(zip(batch["speaker"].tolist(), batch["subject"])):
                    if spk < 0 and subj in self.adapted_final:
                        offsets[b] = self.motion_offsets(y[b:b + 1], codes[b:b + 1], self.adapted_final[subj])[0]
        return batch["template"][:, None] + offsets



def decoder_step(layer: nn.TransformerDecoderLayer, x, keys, a_t) -> torch.Tensor:
    """One frame through a post-norm nn.TransformerDecoderLayer: query x (B, 1, d) over its own past inputs
    keys (B, t+1, d) (all allowed by the causal mask) and the aligned audio frame a_t (B, 1, d)."""
    if layer.norm_first:
        raise NotImplementedError("decoder_step implements the post-norm layer (PyTorch's default)")
    x = layer.norm1(x + layer.dropout1(layer.self_attn(x, keys, keys, need_weights=False)[0]))
    x = layer.norm2(x + layer.dropout2(layer.multihead_attn(x, a_t, a_t, need_weights=False)[0]))
    return layer.norm3(x + layer.dropout3(layer.linear2(layer.dropout(layer.activation(layer.linear1(x))))))


# --------------------------------------------------------------------------- test-time style adaptation
@dataclass
class AdaptConfig(Config):
    """How to adapt the style code to an unseen speaker (evaluation, not part of the training budget)."""

    steps: int = 500                     # Adam steps (style only: each on all reference frames)
    lr: float = 3e-2                     # on the code, with the objective in units of the motion size
    batch_size: int = 8                  # clips per feature-caching pass (and per step with final_layer)
    n_sequences: int | None = None       # reference sentences per speaker (None: all; Imitator: 4)
    init: int | None = None              # training speaker to start from (None: cfg.default_condition)
    final_layer: bool = False            # also tune a copy of the final layer (Imitator's second stage)
    seed: int = 0

    @classmethod
    def smoke(cls, **kw) -> "AdaptConfig":
        return cls(**{**dict(steps=100), **kw})

    @classmethod
    def default(cls, **kw) -> "AdaptConfig":
        return cls(**kw)

    @classmethod
    def paper(cls, **kw) -> "AdaptConfig":
        """Imitator's protocol: the first 4 reference sentences (its sentences 1-4)."""
        return cls(**{**dict(n_sequences=4), **kw})


@torch.no_grad()
def cache_reference(model: Imitator, sequences, batch_size: int = 8) -> list[dict]:
    """The viseme features of reference clips, computed once (the released `transformer_ff_features`),
    in batches: {"y" (B, T, d), "vertices" (B, T, V*3), "template" (B, V*3), "frame_mask" (B, T)}."""
    dev = next(model.parameters()).device
    data = FaceDataset(sequences, model.n_speakers)
    batches = []
    with eval_mode(model):
        for i in range(0, len(sequences), batch_size):
            b = collate([data[j] for j in range(i, min(len(sequences), i + batch_size))])
            b = {k: (v.to(dev) if torch.is_tensor(v) else v) for k, v in b.items()}
            batches.append({"y": model.viseme_features(model.audio_features(b)), "vertices": b["vertices"],
                            "template": b["template"], "frame_mask": b["frame_mask"]})
    return batches


def adaptation_loss(model: Imitator, batches: list[dict], code: torch.Tensor, final=None) -> torch.Tensor:
    """L_mse + 10 L_vel (the objective of `pl_style_trainer.py`, m^2) pooled over all real frames of the
    cached batches, for the style code (d,) and optionally a final layer (weight, bias)."""
    sse, svel, n, m = 0.0, 0.0, 0, 0
    for b in batches:
        mask = b["frame_mask"]
        pred = b["template"][:, None] + model.motion_offsets(b["y"], code[None].expand(len(mask), -1), final)
        d = pred - b["vertices"]                                               # (B, T, V*3)
        pairs = mask[:, 1:] & mask[:, :-1]
        dv = d[:, 1:] - d[:, :-1]
        sse, n = sse + ((d * d).sum(-1) * mask).sum(), n + mask.sum()
        svel, m = svel + ((dv * dv).sum(-1) * pairs).sum(), m + pairs.sum()
    D = model.cfg.vertex_dim
    return sse / (n.clamp(min=1) * D) + model.cfg.lambda_vel * svel / (m.clamp(min=1) * D)


class StyleObjective:
    """`adaptation_loss` as an exact function of the style code alone, the final layer (W, b) held fixed.

    With the error e_t = s (W z_t + b) + template - v_t = s W z_t - r_t, where z_t = MLP(y_t + code),
    s = motion_scale and r_t = v_t - template - s b:

        ||e_t||^2 = s^2 z_t' G z_t - 2 s z_t' q_t + ||r_t||^2,    G = W'W (d, d),  q_t = W' r_t (d,)

    and likewise for frame differences. G, q and the norms of r are computed once (in float64), so a
    step costs the MLP on the cached features and d x d products instead of the (V*3)-wide output
    layer: adaptation takes seconds, and every step sees all reference frames.
    """

    @torch.no_grad()
    def __init__(self, model: Imitator, batches: list[dict]):
        self.model = model
        s = model.cfg.motion_scale
        W, bias = model.final.weight.double(), model.final.bias.double()           # (V*3, d), (V*3,)
        self.G = W.T @ W
        ys, qs, prev, cur = [], [], [], []
        self.rr, self.drr, N = 0.0, 0.0, 0
        for b in batches:
            for i, T in enumerate(b["frame_mask"].sum(1).tolist()):
                r = b["vertices"][i, :T].double() - b["template"][i].double() - s * bias   # (T, V*3)
                dr = r[1:] - r[:-1]
                ys.append(b["y"][i, :T])
                qs.append(r @ W)
                self.rr += float((r * r).sum())
                self.drr += float((dr * dr).sum())
                prev.append(torch.arange(N, N + T - 1, device=r.device))
                cur.append(torch.arange(N + 1, N + T, device=r.device))
                N += T
        self.Y, self.Q = torch.cat(ys), torch.cat(qs)                               # (N, d), (N, d)
        self.prev, self.cur = torch.cat(prev), torch.cat(cur)                       # frame pairs (M,)
        self.n_frames, self.n_pairs = N, len(self.cur)

    def __call__(self, code: torch.Tensor) -> torch.Tensor:
        s, D = self.model.cfg.motion_scale, self.model.cfg.vertex_dim
        z = self.model.mlp(self.Y + code).double()                                  # (N, d)
        sse = s * s * ((z @ self.G) * z).sum() - 2 * s * (z * self.Q).sum() + self.rr
        dz, dq = z[self.cur] - z[self.prev], self.Q[self.cur] - self.Q[self.prev]
        svel = s * s * ((dz @ self.G) * dz).sum() - 2 * s * (dz * dq).sum() + self.drr
        loss = sse / (self.n_frames * D) + self.model.cfg.lambda_vel * svel / (max(self.n_pairs, 1) * D)
        return loss.float()


def adapt(model: Imitator, sequences, steps: int = 500, lr: float = 3e-2, init: int | None = None,
          batch_size: int = 8, final_layer: bool = False, seed: int = 0, history: list | None = None):
    """Fit a style code (d,) to one unseen speaker's reference `sequences`; nothing in `model` changes.

    The code starts from training speaker `init` (default `cfg.default_condition`) and is the only
    thing optimised: Adam, `steps` steps on all reference frames (`StyleObjective`). With
    final_layer=True (Imitator's second stage) a copy of the final layer is tuned too, each step on
    `batch_size` clips in a seeded order, and (code, (weight, bias)) is returned.
    history: a list that receives the loss (m^2) at every step.

    Adam sees the objective divided by motion_scale^2: the same minimiser, but gradients of order
    one, where in m^2 (~1e-9) Adam's epsilon (1e-8) would shrink every step of the code.
    """
    return _adapt(model, cache_reference(model, sequences, batch_size), steps, lr, init, final_layer, seed, history)


def _adapt(model: Imitator, batches, steps, lr, init, final_layer, seed, history):
    was_training = model.training
    frozen = {p: p.requires_grad for p in model.parameters()}
    model.eval().requires_grad_(False)                 # the model only carries gradients to the code
    init = model.default_speaker() if init is None else init
    code = model.style.weight[:, init].detach().clone().requires_grad_(True)
    params, final = [code], None
    if final_layer:
        final = (model.final.weight.detach().clone().requires_grad_(True),
                 model.final.bias.detach().clone().requires_grad_(True))
        params += list(final)
    else:
        objective = StyleObjective(model, batches)
    opt = torch.optim.Adam(params, lr=lr, fused=True)
    order = torch.randperm(len(batches), generator=torch.Generator().manual_seed(seed)).tolist()
    unit = model.cfg.motion_scale ** 2
    for step in range(steps):
        if final_layer:
            loss = adaptation_loss(model, [batches[order[step % len(order)]]], code, final)
        else:
            loss = objective(code)
        opt.zero_grad(set_to_none=True)
        (loss / unit).backward()
        opt.step()
        if history is not None:
            history.append(float(loss.detach()))
    model.train(was_training)
    for p, r in frozen.items():
        p.requires_grad_(r)
    code = code.detach()
    return (code, tuple(t.detach() for t in final)) if final_layer else code


def adapt_to_speakers(model: Imitator, dataset, split: str = "test", cfg: AdaptConfig | None = None,
                      progress: bool = True) -> dict:
    """Adapt a style code to every speaker of `split` on its reference sentences and store it on the model
    (`model.adapted_style[subject]`, and `model.adapted_final` with final_layer=True), so that `predict_batch`
    (and `recipes.evaluate`) use it. Returns {subject: {"seconds", "loss_before", "loss_after", "n_sequences"}}.
    """
    cfg = cfg or AdaptConfig()
    try:
        refs = dataset.sequences(split, part="reference")
    except ValueError as e:
        raise ValueError(f"style adaptation needs reference sentences of the {split} speakers: {e}") from None
    report = {}
    for subject in dict.fromkeys(s.subject for s in refs):
        seqs = [s for s in refs if s.subject == subject][:cfg.n_sequences]
        t0 = time.time()
        batches = cache_reference(model, seqs, cfg.batch_size)
        res = _adapt(model, batches, cfg.steps, cfg.lr, cfg.init, cfg.final_layer, cfg.seed, None)
        code, final = res if cfg.final_layer else (res, None)
        model.adapted_style[subject] = code
        if final is not None:
            model.adapted_final[subject] = final
        seconds = time.time() - t0
        init = model.default_speaker() if cfg.init is None else cfg.init
        with torch.no_grad():
            before = float(adaptation_loss(model, batches, model.style.weight[:, init]))
            after = float(adaptation_loss(model, batches, code, final))
        report[subject] = {"seconds": seconds, "loss_before": before, "loss_after": after, "n_sequences": len(seqs)}
        if progress:
            print(f"adapted {subject} on {len(seqs)} sentences: loss {before:.3e} -> {after:.3e} ({seconds:.1f} s)",
                  flush=True)
    return report


def recipe(preset: str, dataset, progress: bool = True, **model_kw) -> Recipe:
    """Imitator's generalised training under a preset's budget (one stage, all the preset's epochs).
    Adaptation (`adapt_to_speakers`, `AdaptConfig.<preset>()`) is part of evaluation."""
    presets = {"smoke": ImitatorConfig.smoke, "default": ImitatorConfig.default, "paper": ImitatorConfig.paper}
    return method_recipe("imitator", preset, dataset, presets, Imitator, progress, **model_kw)
