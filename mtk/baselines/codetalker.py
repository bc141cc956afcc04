"""CodeTalker (Xing et al., CVPR 2023): speech-driven facial motion as code query in a learned discrete prior.

Follows the released code `Doubiiu/CodeTalker` (`models/stage1_vocaset.py`, `models/stage2.py`,
`models/lib/quantizer.py`, `config/vocaset/stage{1,2}.yaml`; `baselines.md` 2.3). Two stages:

Stage 1, the motion prior: a VQ-VAE of ground-truth motion (no audio).

    x   = (v - template)                                   (B, T, V*3) displacements
    z   = Enc(x)                                           (B, T, N*c): Linear + LeakyReLU(0.2), Conv1d k=5
                                                           (replicate padding) + LeakyReLU + InstanceNorm,
                                                           Linear, pre-LN transformer encoder (GELU), Linear
    z_q = nearest codebook entry for each of the N tokens  (B, T, N, c), codebook (n_codes, c)
    v^  = template + Dec(z + sg[z_q - z])                  the straight-through estimator; Dec mirrors Enc,
                                                           ending in Linear(hidden -> V*3, bias=False)
    L_1 = mean|v^ - v| + beta ||sg[z_q] - z||^2 + ||z_q - sg[z]||^2   (nn.L1Loss in metres; beta 0.25)

Stage 2, speech -> codes: a FaceFormer decoder (biased causal mask, PPE, diagonal alignment mask,
reused from `faceformer.py`) predicts each frame's latent feature; features are quantised to their
nearest codes and decoded by the **frozen** stage-1 decoder.

    h   = audio_map(E_aud(audio))                          (B, T, d)
    s   = style(speaker)                                   (B, 1, d) `nn.Embedding(n_train, d)`
    x_0 = s;  x_t = vertex_map(v_{t-1} - template) + s     teacher forcing: ground truth shifted by one
    f   = feat_map(Decoder(PPE(x), memory=h))              (B, T, N*c), `feat_map` zero-init, no bias
    v^  = template + Dec(quantise(f))                      gradients reach f through the straight-through
    L_2 = MSE(v^, v) + MSE(f, sg[z_q of the ground truth])  both weights 1.0

Inference is autoregressive, as in CodeTalker's `predict`: at each step the whole sequence of quantised
features so far is re-decoded by the stage-1 decoder (it is not causal: its conv, instance norm and
self-attention see the whole prefix), and the decoded last frame is fed back; the final animation is
the decoding of all codes at once. The predictor itself runs one position per step with cached keys
and values (`faceformer.decoder_step`), which computes what re-running it on the prefix computes.
`condition` picks the training speaker; None uses the clip's own speaker if it is a training speaker,
otherwise training speaker index 2 (`default_condition`). `predict_batch(stage=1)` returns the VQ-VAE
reconstruction of the batch's ground truth (stage 1 learns no audio mapping; this is what CodeTalker's
`test_vq.py` evaluates), so its stage-1 validation loss is that reconstruction's error.

Budget split: stage 1 (VQ-VAE) gets 40 % of the preset's epochs, stage 2 60 % (the released schedule is
200 + 100 epochs; the kit's total budget is shared by every method, and the predictor, which hears the
audio, is the part that decides the comparison). Stage-1 parameters are the VQ-VAE; stage-2 parameters
the predictor and its audio encoder.

Deviations (each with its reason):
* one optimiser for both stages, Adam at the budget's learning rate without a scheduler (the released
  stage 1 uses AdamW 1e-4 with StepLR(20, 0.5)): the kit's single training loop (`mtk.train.fit`);
* the VQ-VAE transformers are standard `nn.TransformerEncoderLayer`s (pre-LN, GELU, no dropout); the
  released attention scales its logits by 1/sqrt(hidden) instead of 1/sqrt(head dim), and has no bias
  on the q/k/v projections;
* no positional encoding inside the VQ-VAE: the released `PositionalEncoding` indexes a batch-first
  tensor by its batch axis, so at batch 1 every frame gets the position-0 vector, a constant that the
  preceding Linear's bias absorbs; only its dropout (0.1) is kept;
* padding: clips in a batch are padded at the end; the VQ-VAE's conv sees each clip's own last frame
  replicated (as per-clip replicate padding does), the instance norm and the quantisation loss use real
  frames only, the transformers mask padded keys; so a clip's output does not depend on the batch;
* the frozen VQ-VAE runs in eval mode during stage 2 (the released code leaves its dropout active);
* `motion_scale` (as MemoryTalker's and FaceFormer's): the VQ-VAE reads displacement / scale and writes
  offsets * scale, and `vertex_map` reads displacement / scale; a reparametrisation (1.0 is the released
  code); the losses stay in metres;
* the teacher-forced start token is the style embedding alone, as in the released inference path (see
  `faceformer.py`).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..configs import Config
from ..audio import AudioConfig, make_audio_encoder
from ..losses import masked_mse, vertex_losses
from ..model import PeriodicPositionalEncoding
from ..recipes import Recipe, budget, train_config, method_recipe
from ..train import eval_mode
from .faceformer import alibi_slopes, condition_indices, decode, decoder_step, wav2vec2_base


@dataclass
class CodeTalkerConfig(Config):
    """CodeTalker's two networks. Presets: `smoke` (CI), `default` (SynthVOCA on a CPU), `paper` (VOCASET)."""

    vertex_dim: int = 15069              # V * 3
    # stage 1: the VQ-VAE (config/vocaset/stage1.yaml: hidden 1024, 6 layers, 8 heads, FFN 1536)
    vq_dim: int = 128                    # hidden_size
    vq_layers: int = 2                   # num_hidden_layers
    vq_heads: int = 4                    # num_attention_heads
    vq_ff_dim: int = 192                 # intermediate_size
    n_codes: int = 256                   # n_embed
    code_dim: int = 16                   # zquant_dim
    tokens_per_frame: int = 8            # face_quan_num
    beta: float = 0.25                   # commitment cost
    leaky_slope: float = 0.2             # neg
    vq_dropout: float = 0.1              # the dropout of the released (constant) positional encoding
    quant_weight: float = 1.0            # quant_loss_weight
    # stage 2: the predictor (config/vocaset/stage2.yaml: feature_dim 1024, 6 layers, 4 heads, FFN 2 * d)
    dim: int = 128                       # feature_dim
    n_layers: int = 2
    n_heads: int = 4
    ff_dim: int = 256
    period: int = 30
    dropout: float = 0.1
    motion_weight: float = 1.0
    feature_weight: float = 1.0          # reg_weight
    motion_scale: float = 1.0            # metres per unit of motion (1.0: the released parametrisation)
    default_condition: int = 2           # training speaker used for unseen speakers when condition is None
    audio: AudioConfig = field(default_factory=AudioConfig.default)

    @classmethod
    def smoke(cls, vertex_dim: int, **kw) -> "CodeTalkerConfig":
        kw.setdefault("audio", AudioConfig.smoke())
        small = dict(vq_dim=32, vq_layers=1, vq_heads=2, vq_ff_dim=48, n_codes=32, code_dim=8, tokens_per_frame=4,
                     dim=32, n_layers=1, ff_dim=64)
        return cls(vertex_dim=vertex_dim, **{**small, **kw})

    @classmethod
    def default(cls, vertex_dim: int, **kw) -> "CodeTalkerConfig":
        return cls(vertex_dim=vertex_dim, **kw)

    @classmethod
    def paper(cls, vertex_dim: int = 15069, **kw) -> "CodeTalkerConfig":
        kw.setdefault("audio", wav2vec2_base())
        published = dict(vq_dim=1024, vq_layers=6, vq_heads=8, vq_ff_dim=1536, n_codes=256, code_dim=64,
                         tokens_per_frame=16, dim=1024, n_layers=6, n_heads=4, ff_dim=2048)
        return cls(vertex_dim=vertex_dim, **{**published, **kw})



# --------------------------------------------------------------------------- padding-aware temporal ops
def replicate_conv(conv: nn.Conv1d, x: torch.Tensor, n_frames: torch.Tensor | None) -> torch.Tensor:
    """Conv1d over time with replicate padding per clip: x (B, T, C) -> (B, T, C'). Frames past a clip's end
    are replaced by its last real frame first, so each clip is convolved as if it were alone."""
    if n_frames is not None:
        B, T, _ = x.shape
        last = x[torch.arange(B, device=x.device), n_frames - 1]                  # (B, C)
        real = torch.arange(T, device=x.device)[None] < n_frames[:, None]          # (B, T)
        x = torch.where(real[..., None], x, last[:, None])
    k = conv.kernel_size[0] // 2
    return conv(F.pad(x.transpose(1, 2), (k, k), mode="replicate")).transpose(1, 2)


def instance_norm(x: torch.Tensor, mask: torch.Tensor | None, eps: float = 1e-5) -> torch.Tensor:
    """InstanceNorm1d (no affine) over time, statistics of real frames only: x (B, T, C), mask (B, T)."""
    m = torch.ones_like(x[..., :1]) if mask is None else mask[..., None].to(x.dtype)
    n = m.sum(1, keepdim=True).clamp(min=1)
    mean = (x * m).sum(1, keepdim=True) / n
    var = ((x - mean) ** 2 * m).sum(1, keepdim=True) / n
    return (x - mean) / torch.sqrt(var + eps)


# --------------------------------------------------------------------------- stage 1: the motion prior
class MotionVQVAE(nn.Module):
    """The VQ-VAE motion codebook (`stage1_vocaset.py` VQAutoEncoder, `quantizer.py` VectorQuantizer).

    Shapes: displacements (B, T, V*3) <-> latents (B, T, N*c), N = tokens_per_frame, c = code_dim.
    """

    def __init__(self, cfg: CodeTalkerConfig):
        super().__init__()
        self.cfg = cfg
        h, zc = cfg.vq_dim, cfg.tokens_per_frame * cfg.code_dim

        def transformer():
            layer = nn.TransformerEncoderLayer(d_model=h, nhead=cfg.vq_heads, dim_feedforward=cfg.vq_ff_dim,
                                               dropout=0.0, activation="gelu", batch_first=True, norm_first=True)
            return nn.TransformerEncoder(layer, num_layers=cfg.vq_layers, enable_nested_tensor=False)

        self.enc_in = nn.Linear(cfg.vertex_dim, h)                     # vertice_mapping
        self.enc_conv = nn.Conv1d(h, h, 5)                             # squasher (quant_factor 0: stride 1)
        self.enc_embed = nn.Linear(h, h)                               # encoder_linear_embedding
        self.enc_transformer = transformer()
        self.enc_out = nn.Linear(h, zc)                                # encoder_linear_embedding_post
        self.codebook = nn.Embedding(cfg.n_codes, cfg.code_dim)
        nn.init.uniform_(self.codebook.weight, -1.0 / cfg.n_codes, 1.0 / cfg.n_codes)
        self.dec_in = nn.Linear(zc, h)                                 # decoder_linear_embedding_pre
        self.dec_conv = nn.Conv1d(h, h, 5)                             # expander
        self.dec_embed = nn.Linear(h, h)                               # decoder_linear_embedding
        self.dec_transformer = transformer()
        self.dec_out = nn.Linear(h, cfg.vertex_dim, bias=False)        # vertice_map_reverse
        self.pe_dropout = nn.Dropout(cfg.vq_dropout)

    def _temporal(self, x, conv, embed, transformer, mask, n_frames):
        """(B, T, h) -> conv (replicate padding), LeakyReLU, instance norm, Linear, (PE) dropout, transformer."""
        a = self.cfg.leaky_slope
        x = instance_norm(F.leaky_relu(replicate_conv(conv, x, n_frames), a), mask)
        x = self.pe_dropout(embed(x))
        return transformer(x, src_key_padding_mask=None if mask is None else ~mask)

    def encode(self, disp: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """disp (B, T, V*3) in units of motion_scale -> z (B, T, N*c), before quantisation."""
        n = None if mask is None else mask.sum(1)
        x = F.leaky_relu(self.enc_in(disp), self.cfg.leaky_slope)
        return self.enc_out(self._temporal(x, self.enc_conv, self.enc_embed, self.enc_transformer, mask, n))

    def quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Nearest codebook entry per token: z (B, T, N*c) -> (z_q (B, T, N*c), codes (B, T, N)).
        z_q carries no gradient to z: use `straight_through` for the decoder's input."""
        B, T, _ = z.shape
        zf = z.reshape(-1, self.cfg.code_dim)                                       # (B*T*N, c)
        E = self.codebook.weight                                                    # (n_codes, c)
        dist = zf.pow(2).sum(1, keepdim=True) + E.pow(2).sum(1) - 2 * zf @ E.t()
        codes = dist.argmin(1)
        return self.codebook(codes).view_as(z), codes.view(B, T, -1)

    @staticmethod
    def straight_through(z: torch.Tensor, z_q: torch.Tensor) -> torch.Tensor:
        """The value of z_q with the gradient of z (the straight-through estimator)."""
        return z + (z_q - z).detach()

    def quant_loss(self, z: torch.Tensor, z_q: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """beta * ||sg[z_q] - z||^2 (commitment, trains the encoder) + ||z_q - sg[z]||^2 (codebook), real frames."""
        return self.cfg.beta * masked_mse(z, z_q.detach(), mask) + masked_mse(z_q, z.detach(), mask)

    def decode(self, z_q: torch.Tensor, mask: torch.Tensor | None = None, last_only: bool = False) -> torch.Tensor:
        """z_q (B, T, N*c) -> displacements (B, T, V*3) in units of motion_scale (last_only: (B, V*3), the
        last frame of an unpadded sequence, skipping the output layer elsewhere)."""
        n = None if mask is None else mask.sum(1)
        y = self._temporal(self.dec_in(z_q), self.dec_conv, self.dec_embed, self.dec_transformer, mask, n)
        return self.dec_out(y[:, -1] if last_only else y)


# --------------------------------------------------------------------------- the model
class CodeTalker(nn.Module):
    """CodeTalker: stage 1 trains `vq` (the motion prior), stage 2 the speech-to-code predictor."""

    n_stages = 2

    def __init__(self, cfg: CodeTalkerConfig, n_speakers: int):
        super().__init__()
        self.cfg, self.n_speakers = cfg, n_speakers
        d = cfg.dim
        self.vq = MotionVQVAE(cfg)
        self.audio_encoder = make_audio_encoder(cfg.audio)
        self.audio_map = nn.Linear(self.audio_encoder.hidden_size, d)              # audio_feature_map
        self.vertex_map = nn.Linear(cfg.vertex_dim, d)                             # vertice_map
        self.style = nn.Embedding(n_speakers, d)                                   # learnable_style_emb
        self.ppe = PeriodicPositionalEncoding(d, cfg.period, cfg.dropout)
        layer = nn.TransformerDecoderLayer(d_model=d, nhead=cfg.n_heads, dim_feedforward=cfg.ff_dim,
                                           dropout=cfg.dropout, batch_first=True)
        self.decoder = nn.TransformerDecoder(layer, num_layers=cfg.n_layers)
        self.feat_map = nn.Linear(d, cfg.tokens_per_frame * cfg.code_dim, bias=False)
        nn.init.zeros_(self.feat_map.weight)
        self.register_buffer("slopes", torch.tensor(alibi_slopes(cfg.n_heads)), persistent=False)

    @classmethod
    def from_dataset(cls, cfg: CodeTalkerConfig, dataset) -> "CodeTalker":
        return cls(cfg, len(dataset.train_subjects))

    # ------------------------------------------------------------------ stage 1
    def reconstruct(self, disp: torch.Tensor, mask: torch.Tensor) -> dict:
        """The VQ-VAE on displacements (B, T, V*3) (units of motion_scale) -> recon, z, z_q, codes."""
        z = self.vq.encode(disp, mask)
        z_q, codes = self.vq.quantize(z)
        recon = self.vq.decode(self.vq.straight_through(z, z_q), mask)
        return {"recon": recon, "z": z, "z_q": z_q, "codes": codes}

    def _stage1(self, batch: dict) -> dict:
        verts, template, mask = batch["vertices"], batch["template"], batch["frame_mask"]
        s = self.cfg.motion_scale
        r = self.reconstruct((verts - template[:, None]) / s, mask)
        pred = template[:, None] + r["recon"] * s
        l1 = ((pred - verts).abs().mean(-1) * mask).sum() / mask.sum().clamp(min=1)    # nn.L1Loss, metres
        quant = self.vq.quant_loss(r["z"], r["z_q"], mask)
        mse, vel = vertex_losses(pred, verts, mask)
        used = r["codes"][mask]                                                       # (n_real, N)
        p = torch.bincount(used.reshape(-1), minlength=self.cfg.n_codes).float()
        p = p / p.sum().clamp(min=1)
        perplexity = torch.exp(-(p * torch.log(p + 1e-10)).sum())
        return {"loss": l1 + self.cfg.quant_weight * quant, "l1": l1, "quant": quant, "mse": mse, "vel": vel,
                "perplexity": perplexity, "pred": pred}

    # ------------------------------------------------------------------ stage 2
    def audio_features(self, batch: dict) -> torch.Tensor:
        """-> h (B, T, d): the audio encoder at 30 fps, mapped to the predictor width."""
        return self.audio_map(self.audio_encoder(batch["audio"], batch["audio_mask"].sum(1), batch["n_frames"]))

    def teacher_forced(self, h: torch.Tensor, style: torch.Tensor, disp: torch.Tensor) -> torch.Tensor:
        """One parallel pass: h (B, T, d), style (B, 1, d), disp (B, T, V*3) ground truth (units of
        motion_scale) -> predicted features f (B, T, N*c), before quantisation. Frame t sees disp[:t] only."""
        x = torch.cat([style, self.vertex_map(disp[:, :-1]) + style], 1)             # shift by one frame
        return self.feat_map(decode(self.decoder, self.ppe(x), h, self.slopes, self.cfg.period))

    def generate(self, h: torch.Tensor, style: torch.Tensor, teacher: torch.Tensor | None = None) -> torch.Tensor:
        """Autoregressive decoding (eval-mode arithmetic): h (B, T, d), style (B, 1, d) -> features f (B, T, N*c).

        Each step re-decodes the quantised features so far with the stage-1 decoder and feeds back the
        last frame (`teacher` (B, T, V*3), if given, is fed back instead; then the result equals
        `teacher_forced`). A one-frame prefix needs no special case (the released code decodes it twice
        over to get past InstanceNorm1d; the masked instance norm here gives the same result directly).
        """
        B, T, _ = h.shape
        pe = self.ppe.pe
        cache: list = []
        x = style[:, 0]                                                              # (B, d) start token
        feats = []
        for t in range(T):
            y = decoder_step(self.decoder, x + pe[t % pe.shape[0]], h[:, t], t, cache, self.slopes,
                             self.cfg.period)
            feats.append(self.feat_map(y))                                           # (B, N*c)
            if t + 1 == T:
                break
            if teacher is None:
                z_q = self.vq.quantize(torch.stack(feats, 1))[0]                     # (B, t+1, N*c)
                prev = self.vq.decode(z_q, last_only=True)                           # (B, V*3) re-decoded frame t
            else:
                prev = teacher[:, t]
            x = self.vertex_map(prev) + style[:, 0]
        return torch.stack(feats, 1)

    def _stage2(self, batch: dict) -> dict:
        verts, template, mask = batch["vertices"], batch["template"], batch["frame_mask"]
        s = self.cfg.motion_scale
        disp = (verts - template[:, None]) / s
        with eval_mode(self.vq), torch.no_grad():
            z_q_gt = self.vq.quantize(self.vq.encode(disp, mask))[0]                  # (B, T, N*c) targets
        h = self.audio_features(batch)
        f = self.teacher_forced(h, self.style(batch["speaker"])[:, None], disp)       # (B, T, N*c)
        with eval_mode(self.vq):
            f_q = self.vq.quantize(f)[0]
            pred = template[:, None] + self.vq.decode(self.vq.straight_through(f, f_q), mask) * s
        motion = masked_mse(pred, verts, mask)
        feature = masked_mse(f, z_q_gt, mask)
        mse, vel = vertex_losses(pred, verts, mask)
        return {"loss": self.cfg.motion_weight * motion + self.cfg.feature_weight * feature, "motion": motion,
                "feature": feature, "mse": mse, "vel": vel, "pred": pred}

    # ------------------------------------------------------------------ the protocol
    def forward(self, batch: dict, stage: int = 1) -> dict:
        """Stage 1: VQ-VAE reconstruction losses; stage 2: teacher-forced prediction losses."""
        if stage == 1:
            return self._stage1(batch)
        if stage == 2:
            return self._stage2(batch)
        raise ValueError(f"stage must be 1 or 2, got {stage!r}")

    def stage_parameters(self, stage: int) -> list:
        """Stage 1: the VQ-VAE. Stage 2: everything else (predictor, audio encoder except its frozen CNN)."""
        if stage == 1:
            return list(self.vq.parameters())
        frozen = "audio_encoder.model.feature_extractor." if self.cfg.audio.freeze_feature_encoder else "\0"
        return [p for n, p in self.named_parameters() if not n.startswith(("vq.", frozen)) and p.requires_grad]

    @torch.no_grad()
    def predict_batch(self, batch: dict, stage=None, condition=None, return_features: bool = False):
        """Inference on a collated batch, in eval mode -> vertices (B, T, V*3) (and, with return_features,
        the predicted features (B, T, N*c) and codes (B, T, N)). Stage 2 (default): autoregressive speech
        -> codes -> frozen decoder. Stage 1: the VQ-VAE's reconstruction of the ground truth."""
        template, mask, s = batch["template"], batch["frame_mask"], self.cfg.motion_scale
        with eval_mode(self):
            if stage == 1:
                r = self.reconstruct((batch["vertices"] - template[:, None]) / s, mask)
                f, codes, offsets = r["z"], r["codes"], r["recon"]
            else:
                spk = condition_indices(batch["speaker"], self.n_speakers, condition, self.cfg.default_condition)
                f = self.generate(self.audio_features(batch), self.style(spk)[:, None])
                z_q, codes = self.vq.quantize(f)
                offsets = self.vq.decode(z_q, mask)                                      # all codes at once
        pred = template[:, None] + offsets * s
        return (pred, f, codes) if return_features else pred


# --------------------------------------------------------------------------- recipe
STAGE1_SHARE = 0.4      # of the preset's epochs; the rest goes to stage 2


def recipe(preset: str, dataset, progress: bool = True, **model_kw) -> Recipe:
    """CodeTalker under a preset's budget: stage 1 (VQ-VAE) 40 % of the epochs, stage 2 the rest.

    Audio: the kit's shared pretrained encoder (smoke/default) or wav2vec2-base-960h (paper).
    Stage 2 uses plain shuffled batches (no speaker-pair sampling) and, in "paper", the released lr 1e-4.
    """
    b = budget(preset)
    e1 = max(1, round(STAGE1_SHARE * b["epochs"]))
    e2 = max(1, b["epochs"] - e1)
    stage2 = replace(train_config(preset, 2, e2, triplets="none"), lr=b["lr"])
    presets = {"smoke": CodeTalkerConfig.smoke, "default": CodeTalkerConfig.default, "paper": CodeTalkerConfig.paper}
    return method_recipe("codetalker", preset, dataset, presets, CodeTalker, progress,
                         stages=[train_config(preset, 1, e1), stage2], **model_kw)
