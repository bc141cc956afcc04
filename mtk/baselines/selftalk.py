"""SelfTalk (Peng et al., ACM MM 2023): a non-autoregressive animator checked by a lip reader.

Follows the released code `psyai-net/SelfTalk_release` (`SelfTalk.py`, `main.py`;
`baselines.md` section 2.4). Two networks are trained together:

the facial animator (no masks, no positional encoding, no speaker identity)

    h        = E_aud(audio)                                 (B, T, H) at 30 fps (`audio.AudioEncoder`, fine-tuned)
    x        = audio_map(h)                                 (B, T, d)
    y        = TransformerDecoder(tgt=x, memory=x)          (B, T, d) every frame sees every frame
    offsets  = out(y) * motion_scale                        (B, T, V*3), `out` zero-initialised
    vertices = template + offsets

and the lip-reading interpreter, which reads the text back from the *predicted* lips

    lips     = offsets[:, :, lip vertices] / motion_scale   (B, T, L*3)
    z        = Transformer(src = tgt = lip_map(lips))       (B, T, H) "lip features"
    logits   = lm_head(z)                                   (B, T, P + 1) phonemes + the CTC blank

checked against a frozen speech recogniser, a copy of the pretrained audio encoder:

    h_asr    = E_aud_frozen(audio)                          (B, T, H), no gradient

Loss (`main.py`):

    L = 1000 L_mse + 1000 L_vel + 0.001 MSE(z, h_asr) + 0.0001 CTC(logits, text)

The two consistency terms are the method's idea: their gradients reach the
animator only through the predicted lip vertices, so the animator is pushed to
produce lip motion from which the words can be read (and whose lip-reading
features look like the speech features of the same frames).

Where the kit differs from the released code, and why:

* Audio. "smoke"/"default" use the kit's shared phoneme-pretrained HuBERT
  (`recipes.pretrained_audio`), "paper" the published
  `jonatasgrosman/wav2vec2-large-xlsr-53-english` (hidden 1024, 24 layers).
  The frozen recogniser is, as published, a second copy of the same pretrained
  checkpoint; its features come out at 30 fps (the kit's encoder interpolates
  before its transformer), so the released 30 -> 50 fps interpolation of the
  lip features is not needed: the interpreter works on the mesh frames.
* Text. SynthVOCA's "text" is the clip's per-frame phoneme labels
  (`batch["phonemes"]`). The released code decodes the frozen recogniser's
  greedy CTC output and re-tokenises it; here the transcript is the clip's
  phoneme sequence itself (runs of equal labels collapsed, unknown frames
  dropped: `ctc_targets`), with the blank an extra index P. CTC (the default,
  `text_loss="ctc"`) rather than frame-level cross-entropy because SelfTalk's
  text loss says *what* is said, not *when*: CTC leaves the lip reader free to
  align, while frame labels would hand the interpreter the acoustic timing
  (SynthVOCA's lips move ahead of the sound) that SelfTalk never had.
  `text_loss="ce"` (cross-entropy against `phonemes`, -1 ignored) is kept as an
  option for ablations.
* Units. Vertices are in metres as in VOCASET, and the hidden states are
  layer-normalised like wav2vec2's, so the published weights (1000, 1000,
  0.001, 0.0001) keep their ratios and are kept (the 1000 also lifts the m^2
  gradients above Adam's epsilon, as on VOCASET). As in MemoryTalker
  (`model.ModelConfig.motion_scale`), the output layer writes offsets in units
  of the dataset's motion size and the interpreter reads lips in those units,
  so Adam's steps are on the motion's scale; this reparametrises, it does not
  change the model.
* Sizes. "paper" is the published model (animator d 512, FFN 1024; interpreter
  d 1024, 8 heads, FFN 2048, 6 + 6 layers). "default" gives the animator
  MemoryTalker's decoder width (96, FFN 192) and keeps the interpreter's
  published depth (6 + 6, 8 heads, FFN 2 x width) at the kit encoder's width 96.
* Batches. The released code trains with batch 1 and no masks; here padded
  batches carry key-padding masks so padding never leaks into real frames.
* Lips: the template's `lips` mask (FLAME `lips`, 254 indices, on VOCASET).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..synthvoca.articulation import PHONEMES
from ..configs import Config
from ..audio import AudioConfig, make_audio_encoder
from ..losses import vertex_losses
from ..recipes import Recipe, method_recipe
from ..train import eval_mode


@dataclass
class SelfTalkConfig(Config):
    """SelfTalk's architecture. The interpreter's width is the audio encoder's hidden size
    (its features are compared with the recogniser's hidden states, 1024 = 1024 as published)."""

    vertex_dim: int = 15069              # V * 3
    dim: int = 512                       # animator width (feature_dim, VOCASET)
    n_heads: int = 4
    ff_dim: int = 1024                   # 2 * dim
    n_layers: int = 1
    dropout: float = 0.1                 # nn.TransformerDecoderLayer / nn.Transformer default
    lip_heads: int = 8                   # interpreter: nn.Transformer defaults
    lip_ff_dim: int = 2048
    lip_encoder_layers: int = 6
    lip_decoder_layers: int = 6
    n_phonemes: int = len(PHONEMES)      # the text vocabulary; the CTC blank is index n_phonemes
    text_loss: str = "ctc"               # "ctc" (published, alignment-free) or "ce" (frame labels)
    lambda_mse: float = 1000.0
    lambda_vel: float = 1000.0
    lambda_feat: float = 0.001
    lambda_text: float = 0.0001
    motion_scale: float = 1.0            # metres per unit of motion (output layer and interpreter input)
    audio: AudioConfig = field(default_factory=AudioConfig.default)

    @classmethod
    def smoke(cls, vertex_dim: int, **kw) -> "SelfTalkConfig":
        kw.setdefault("audio", AudioConfig.smoke())
        return cls(**{**dict(vertex_dim=vertex_dim, dim=32, ff_dim=64, lip_heads=4, lip_ff_dim=64,
                             lip_encoder_layers=1, lip_decoder_layers=1), **kw})

    @classmethod
    def default(cls, vertex_dim: int, **kw) -> "SelfTalkConfig":
        """MemoryTalker's decoder width (96) for the animator; the interpreter at the published depth (6 + 6)
        and the published FFN ratio (2 x width) on the kit's 96-wide audio features."""
        return cls(**{**dict(vertex_dim=vertex_dim, dim=96, ff_dim=192, lip_ff_dim=192), **kw})

    @classmethod
    def paper(cls, vertex_dim: int = 15069, **kw) -> "SelfTalkConfig":
        kw.setdefault("audio", paper_audio())
        return cls(vertex_dim=vertex_dim, **kw)




def paper_audio() -> AudioConfig:
    """SelfTalk's encoder: wav2vec2-large-xlsr-53-english (hidden 1024, 24 layers, CNN frozen)."""
    return AudioConfig(kind="wav2vec2", pretrained="jonatasgrosman/wav2vec2-large-xlsr-53-english",
                       hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                       conv_dim=(512,) * 7, num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16,
                       mask_time_prob=0.05)


def ctc_targets(phonemes: torch.Tensor, n_frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The "transcript" of each clip for CTC: its frame labels with unknown frames (-1) dropped and runs of
    one label collapsed to one token. phonemes (B, T) long, n_frames (B,) -> (targets (sum L,), lengths (B,)).
    e.g. [5, 5, 7, 7, 7, -1, 7, 2] -> [5, 7, 2]."""
    seqs = []
    for b in range(phonemes.shape[0]):
        p = phonemes[b, :int(n_frames[b])]
        seqs.append(torch.unique_consecutive(p[p >= 0]))
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long, device=phonemes.device)
    return torch.cat(seqs) if seqs else phonemes.new_zeros(0), lengths


class SelfTalk(nn.Module):
    """Animator + lip-reading interpreter + frozen recogniser. `forward(batch, stage)` returns losses."""

    n_stages = 1

    def __init__(self, cfg: SelfTalkConfig, lip_idx):
        super().__init__()
        self.cfg = cfg
        d = cfg.dim
        # the facial animator
        self.audio_encoder = make_audio_encoder(cfg.audio)
        H = self.audio_encoder.hidden_size
        self.audio_map = nn.Linear(H, d)
        layer = nn.TransformerDecoderLayer(d_model=d, nhead=cfg.n_heads, dim_feedforward=cfg.ff_dim,
                                           dropout=cfg.dropout, batch_first=True)
        self.decoder = nn.TransformerDecoder(layer, num_layers=cfg.n_layers)
        self.out = nn.Linear(d, cfg.vertex_dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        # the frozen speech recogniser: a second copy of the same pretrained encoder
        self.asr = copy.deepcopy(self.audio_encoder)
        self.asr.requires_grad_(False)
        self.asr.eval()
        # the lip-reading interpreter
        lip = torch.as_tensor(np.asarray(lip_idx, dtype=np.int64))
        if lip.numel() == 0:
            raise ValueError("SelfTalk needs the template's lip vertices (template.mask('lips'))")
        self.register_buffer("lip_idx", lip, persistent=True)
        self.lip_map = nn.Linear(lip.numel() * 3, H)
        self.interpreter = nn.Transformer(d_model=H, nhead=cfg.lip_heads, num_encoder_layers=cfg.lip_encoder_layers,
                                          num_decoder_layers=cfg.lip_decoder_layers, dim_feedforward=cfg.lip_ff_dim,
                                          dropout=cfg.dropout, batch_first=True)
        self.lm_head = nn.Linear(H, cfg.n_phonemes + 1)

    @classmethod
    def from_dataset(cls, cfg: SelfTalkConfig, dataset) -> "SelfTalk":
        return cls(cfg, dataset.template.mask("lips"))

    def train(self, mode: bool = True):
        super().train(mode)
        self.asr.eval()                                     # the recogniser never trains (no dropout either)
        return self

    # ------------------------------------------------------------------ pieces
    def animate_offsets(self, batch) -> torch.Tensor:
        """The animator: audio -> vertex offsets from the template (B, T, V*3), metres."""
        mask = batch["frame_mask"]
        h = self.audio_encoder(batch["audio"], batch["audio_mask"].sum(1), batch["n_frames"])   # (B, T, H)
        x = self.audio_map(h)                                                                     # (B, T, d)
        y = self.decoder(x, x, tgt_key_padding_mask=~mask, memory_key_padding_mask=~mask)
        return self.out(y) * self.cfg.motion_scale

    def read_lips(self, offsets: torch.Tensor, frame_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The interpreter: offsets (B, T, V*3) -> lip features z (B, T, H), phoneme logits (B, T, P + 1)."""
        B, T, _ = offsets.shape
        lips = offsets.view(B, T, -1, 3)[:, :, self.lip_idx].reshape(B, T, -1) / self.cfg.motion_scale
        x = self.lip_map(lips)                                                                    # (B, T, H)
        pad = ~frame_mask
        z = self.interpreter(x, x, src_key_padding_mask=pad, tgt_key_padding_mask=pad, memory_key_padding_mask=pad)
        return z, self.lm_head(z)

    def text_loss(self, logits: torch.Tensor, phonemes: torch.Tensor, n_frames: torch.Tensor) -> torch.Tensor:
        """CTC against the collapsed phoneme sequence (blank = P; `main.py`'s reduction "mean": per clip divided
        by its target length, then averaged over the clips that have labels), or frame cross-entropy."""
        if self.cfg.text_loss == "ce":
            P = self.cfg.n_phonemes
            return F.cross_entropy(logits[..., :P].reshape(-1, P), phonemes.reshape(-1), ignore_index=-1)
        if self.cfg.text_loss != "ctc":
            raise ValueError(f"text_loss {self.cfg.text_loss!r}: expected 'ctc' or 'ce'")
        targets, lengths = ctc_targets(phonemes, n_frames)
        labelled = lengths > 0
        if not labelled.any():
            return logits.sum() * 0.0
        log_probs = F.log_softmax(logits.float(), dim=-1).transpose(0, 1)                       # (T, B, P + 1)
        per_clip = F.ctc_loss(log_probs, targets, n_frames, lengths, blank=self.cfg.n_phonemes,
                              reduction="none", zero_infinity=True)                              # (B,)
        return (per_clip / lengths.clamp(min=1))[labelled].mean()

    # ------------------------------------------------------------------ forward
    def forward(self, batch: dict, stage: int = 1) -> dict:
        """Training losses on a collated batch: loss, mse, vel (m^2), feat, text, and pred (B, T, V*3)."""
        mask = batch["frame_mask"]
        offsets = self.animate_offsets(batch)
        pred = batch["template"][:, None] + offsets
        out: dict = {}
        out["mse"], out["vel"] = vertex_losses(pred, batch["vertices"], mask)
        z, logits = self.read_lips(offsets, mask)
        with torch.no_grad():
            h_asr = self.asr(batch["audio"], batch["audio_mask"].sum(1), batch["n_frames"])      # (B, T, H)
        err = ((z - h_asr) ** 2).mean(-1)
        out["feat"] = (err * mask).sum() / mask.sum().clamp(min=1)
        out["text"] = self.text_loss(logits, batch["phonemes"], batch["n_frames"])
        c = self.cfg
        out["loss"] = (c.lambda_mse * out["mse"] + c.lambda_vel * out["vel"] + c.lambda_feat * out["feat"]
                       + c.lambda_text * out["text"])
        out["pred"] = pred
        return out

    def stage_parameters(self, stage: int = 1):
        """Animator and interpreter (not the frozen recogniser, not the frozen CNN)."""
        if stage != 1:
            raise ValueError(f"SelfTalk has one training stage, got {stage!r}")
        return [p for n, p in self.named_parameters() if not n.startswith("asr.") and p.requires_grad]

    @torch.no_grad()
    def predict_batch(self, batch: dict, stage=None, condition=None, return_features: bool = False):
        """Vertices (B, T, V*3) from audio alone, in eval mode (one prediction per clip; `condition` is ignored:
        SelfTalk has no speaker identity). The interpreter is not needed at inference."""
        if return_features:
            raise NotImplementedError("SelfTalk has no recalled features; use read_lips() for the lip reading")
        with eval_mode(self):
            return batch["template"][:, None] + self.animate_offsets(batch)



def recipe(preset: str, dataset, progress: bool = True, **model_kw) -> Recipe:
    """SelfTalk under a preset's budget (one stage, all the preset's epochs)."""
    presets = {"smoke": SelfTalkConfig.smoke, "default": SelfTalkConfig.default, "paper": SelfTalkConfig.paper}
    return method_recipe("selftalk", preset, dataset, presets, SelfTalk, progress, **model_kw)
