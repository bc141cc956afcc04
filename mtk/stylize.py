"""Audio-guided stylization: MemoryTalker stage 2 ("animating"; paper Section 3.2, `memorytalker.md` 1.7).

From the same audio that drives the face, a speaking-style encoder E_s reads an
80-bin log-mel spectrogram and produces a style vector f_s (B, n), one weight per
memory slot. The memory is re-weighted slot by slot,

    w_s = sigmoid(f_s) * psi(f_s)             (Eq. 15; psi: Linear(n -> 1), no bias)
    M~  = diag(w_s) M_m                       (Eq. 14; per sample: (B, n, c))

A second, documented form (`StyleConfig.weights = "residual"`, `docs/deviations.md`) starts
stage 2 exactly where stage 1 ended and keeps every slot weight in (0, 2):

    w_s = 1 + tanh(f_s) * tanh(psi(f_s))      (psi zero-initialised, so w_s = 1 at the first step)

The released form starts wherever the random encoder puts it (|f_s| ~ 100 on raw dB log-mels, so
the gates are saturated and w_s scales the memory by tens) and is unbounded: the triplet loss is
met by growing f_s, and w_s grows with it. `StyleConfig.mel_norm = "dataset"` standardises the
log-mel per bin by the training set's mean and std (AdaIN-VC's own pipeline normalises its mels).

and read with the same key address as in stage 1, so the recalled motion carries
the speaker's style with no speaker ID and no reference mesh. E_s is trained with
a triplet loss (Eq. 13) on f_s through a small MLP: the anchor and a positive from
the same training speaker, a negative from another one, plus a lip loss.

Unlike the released code, which averages w_s over the batch (harmless there, as
it trains with batch 1), each sample keeps its own style here.

The encoder is AdaIN-VC's speaker encoder (Chou et al. 2019; also in VQMIVC):
a bank of convolutions with kernels 1..8, a 1x1 convolution, residual
convolution blocks with subsampling, global average pooling, residual dense
blocks and a linear output.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from .audio import normalize_waveform
from .configs import Config


@dataclass
class StyleConfig(Config):
    n_mels: int = 80
    channels: int = 128            # c_h and c_bank
    bank_size: int = 8
    n_conv_blocks: int = 6
    n_dense_blocks: int = 6
    subsample: tuple[int, ...] = (1, 2, 1, 2, 1, 2)
    kernel_size: int = 5
    out_dim: int = 256
    triplet_margin: float = 1.0    # released code default (README: 5.0)
    # how stage 2 starts (`docs/deviations.md`): the dataclass's defaults are the released form (the `paper`
    # preset keeps it); the `smoke` and `default` presets use "dataset" and "residual" (notebook 05, section 1)
    mel_norm: str = "clip"         # "clip": dB log-mel of the clip's normalised waveform (released);
                                   # "dataset": then standardised per mel bin by the training set's statistics
    weights: str = "released"      # "released": Eq. 15; "residual": 1 + tanh(f_s) tanh(psi(f_s)), psi = 0 at start

    def __post_init__(self):
        if self.mel_norm not in ("clip", "dataset"):
            raise ValueError(f"StyleConfig.mel_norm: expected 'clip' or 'dataset', got {self.mel_norm!r}")
        if self.weights not in ("released", "residual"):
            raise ValueError(f"StyleConfig.weights: expected 'released' or 'residual', got {self.weights!r}")

    @classmethod
    def default(cls) -> "StyleConfig":
        """The released architecture at half the width (about a quarter of its cost on a CPU), with the stage-2
        start that leaves stage 1 undisturbed (standardised log-mel, residual slot weights)."""
        return cls(channels=64, mel_norm="dataset", weights="residual")

    @classmethod
    def smoke(cls) -> "StyleConfig":
        return cls(channels=32, bank_size=4, n_conv_blocks=2, n_dense_blocks=2, subsample=(1, 2), out_dim=64,
                   mel_norm="dataset", weights="residual")


# --------------------------------------------------------------------------- log-mel
def mel_filterbank(n_freqs: int, n_mels: int, sample_rate: int, f_min: float = 0.0, f_max: float | None = None):
    """(n_freqs, n_mels) triangular HTK-mel filters, no normalisation: torchaudio's `melscale_fbanks` defaults,
    which the released code uses, built by `transformers.audio_utils.mel_filter_bank` (equal to torchaudio's
    formula to 5e-6; torchaudio has no build for the kit's torch)."""
    from transformers.audio_utils import mel_filter_bank
    fb = mel_filter_bank(num_frequency_bins=n_freqs, num_mel_filters=n_mels, min_frequency=f_min,
                         max_frequency=f_max or sample_rate / 2, sampling_rate=sample_rate, norm=None, mel_scale="htk")
    return torch.from_numpy(fb).float()


class LogMel(nn.Module):
    """Waveform (B, N) -> log-mel (B, n_mels, frames): n_fft 400, hop 160 (100 frames/s), power in dB.

    Matches the released code's torchaudio MelSpectrogram(16000, n_fft=400, hop=160, n_mels=80)
    followed by AmplitudeToDB() (10 log10 of the power, floored at 1e-10).
    """

    def __init__(self, n_mels: int = 80, sample_rate: int = 16000, n_fft: int = 400, hop: int = 160):
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        self.register_buffer("fb", mel_filterbank(n_fft // 2 + 1, n_mels, sample_rate), persistent=False)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        spec = torch.stft(audio, self.n_fft, self.hop, window=self.window, center=True, pad_mode="reflect",
                          return_complex=True).abs() ** 2                       # (B, F, frames)
        mel = torch.einsum("bft,fm->bmt", spec, self.fb)
        return 10.0 * torch.log10(mel.clamp(min=1e-10))


# --------------------------------------------------------------------------- the speaker encoder
def _same_pad(k: int) -> tuple[int, int]:
    """(left, right) padding that keeps the length of a stride-1 conv of kernel k (AdaIN-VC's pad_layer)."""
    return (k // 2, k // 2 - 1) if k % 2 == 0 else (k // 2, k // 2)


def _pad_conv(x: torch.Tensor, conv: nn.Conv1d) -> torch.Tensor:
    """Reflect-pad so a stride-1 conv keeps the length (AdaIN-VC's pad_layer); replicate if x is too short."""
    pad = _same_pad(conv.kernel_size[0])
    if pad == (0, 0):
        return conv(x)                                 # 1x1: nothing to pad (F.pad would still copy x)
    if x.shape[-1] <= max(pad):
        return conv(F.pad(x, pad, mode="replicate"))
    return conv(F.pad(x, pad, mode="reflect"))


def _conv_bank(x: torch.Tensor, bank: nn.ModuleList) -> torch.Tensor:
    """[relu(pad_conv(x, conv_k)) for each k] concatenated with x on channels, (B, C, L) -> (B, c*K + C, L).

    The input is reflect-padded once, to the widest kernel's padding; each conv reads the slice whose
    margins equal its own reflect padding (the inner part of a wider reflect pad is the narrower one)."""
    pads = [_same_pad(conv.kernel_size[0]) for conv in bank]
    left, right = max(p[0] for p in pads), max(p[1] for p in pads)
    if x.shape[-1] <= max(left, right):
        return torch.cat([F.relu(_pad_conv(x, conv)) for conv in bank] + [x], dim=1)
    xp = F.pad(x, (left, right), mode="reflect")
    L = x.shape[-1]
    outs = [F.relu(conv(xp[..., left - pl: left + L + pr])) for conv, (pl, pr) in zip(bank, pads)]
    return torch.cat(outs + [x], dim=1)


class SpeakerEncoder(nn.Module):
    """AdaIN-VC speaker encoder: log-mel (B, n_mels, frames) -> (B, out_dim)."""

    def __init__(self, cfg: StyleConfig):
        super().__init__()
        c, n = cfg.channels, cfg.n_mels
        self.bank = nn.ModuleList([nn.Conv1d(n, c, k) for k in range(1, cfg.bank_size + 1)])
        self.in_conv = nn.Conv1d(c * cfg.bank_size + n, c, 1)
        self.conv1 = nn.ModuleList([nn.Conv1d(c, c, cfg.kernel_size) for _ in range(cfg.n_conv_blocks)])
        self.conv2 = nn.ModuleList([nn.Conv1d(c, c, cfg.kernel_size, stride=s) for s in cfg.subsample])
        self.subsample = cfg.subsample
        self.dense1 = nn.ModuleList([nn.Linear(c, c) for _ in range(cfg.n_dense_blocks)])
        self.dense2 = nn.ModuleList([nn.Linear(c, c) for _ in range(cfg.n_dense_blocks)])
        self.out = nn.Linear(c, cfg.out_dim)
        for m in self.modules():
            if isinstance(m, (nn.Conv1d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        h = _conv_bank(mel, self.bank)                                              # (B, c*K + n_mels, frames)
        h = F.relu(_pad_conv(h, self.in_conv))                                      # (B, c, frames)
        for c1, c2, s in zip(self.conv1, self.conv2, self.subsample):
            y = F.relu(_pad_conv(h, c1))
            y = F.relu(_pad_conv(y, c2))
            if s > 1:
                h = F.avg_pool1d(h, kernel_size=s, ceil_mode=True)
            h = h + y
        h = h.mean(-1)                                                              # global average pool
        for d1, d2 in zip(self.dense1, self.dense2):
            h = h + F.relu(d2(F.relu(d1(h))))
        return self.out(h)


class StyleEncoder(nn.Module):
    """E_s: waveform -> f_s (B, n) and slot weights w_s (B, n) (Eq. 15); `embed` feeds the triplet loss."""

    CACHE_CLIPS = 2048                 # log-mels kept (80 x 400 frames: ~128 KB for a 4 s clip)

    def __init__(self, n_slots: int, cfg: StyleConfig | None = None):
        super().__init__()
        self.cfg = cfg or StyleConfig()
        self.logmel = LogMel(self.cfg.n_mels)
        self.encoder = SpeakerEncoder(self.cfg)
        self.to_style = nn.Linear(self.cfg.out_dim, n_slots)                       # psi' (merged, as released)
        self.to_scale = nn.Linear(n_slots, 1, bias=False)                          # psi_{->1}
        if self.cfg.weights == "residual":
            nn.init.zeros_(self.to_scale.weight)                                   # w_s = 1 at the start
        # per-bin log-mel statistics of the training set (`fit_mel_stats`; used when mel_norm == "dataset")
        self.register_buffer("mel_mean", torch.zeros(self.cfg.n_mels, 1))
        self.register_buffer("mel_std", torch.ones(self.cfg.n_mels, 1))
        self.style_mlp = nn.Sequential(nn.Linear(n_slots, n_slots), nn.ReLU(), nn.Linear(n_slots, n_slots))
        self._mel_cache: dict = {}
        self.set_speedups(True)

    def style(self, audio: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """audio (B, N) raw, padded; lengths (B,) -> f_s (B, n). Each clip is encoded on its own valid samples,
        normalised to zero mean and unit variance (as the speech encoder hears it, as released)."""
        return torch.cat([self.to_style(self.encoder(self.clip_mel(audio[b, :int(lengths[b])])))
                          for b in range(audio.shape[0])], 0)

    def clip_mel(self, wave: torch.Tensor) -> torch.Tensor:
        """One clip's raw samples (N,) -> its log-mel of the normalised waveform (1, n_mels, frames).

        Has no parameters, so with the speed-ups on (`set_speedups`) it is computed once per clip and
        kept, keyed by the clip's samples: bit-identical to recomputing it."""
        key = None
        if self.speedups:
            key = (hashlib.blake2b(wave.detach().cpu().numpy().tobytes(), digest_size=16).digest(), len(wave))
            if (hit := self._mel_cache.get(key)) is not None:
                return hit
        mel = self.logmel(normalize_waveform(wave[None], torch.tensor([len(wave)], device=wave.device)))
        if self.cfg.mel_norm == "dataset":
            mel = (mel - self.mel_mean) / self.mel_std
        if key is not None:
            if len(self._mel_cache) >= self.CACHE_CLIPS:
                self._mel_cache.pop(next(iter(self._mel_cache)))
            self._mel_cache[key] = mel
        return mel

    @torch.no_grad()
    def fit_mel_stats(self, waves: list[torch.Tensor]) -> None:
        """Per-bin mean and std (n_mels, 1) of the log-mels of `waves` (raw samples (N,) each, the training
        clips), over all their frames; kept as buffers, so they travel with the weights."""
        mels = [self.logmel(normalize_waveform(w[None].float(), torch.tensor([len(w)])))[0] for w in waves]
        allm = torch.cat(mels, dim=1).double()                                    # (n_mels, all frames)
        self.mel_mean.copy_(allm.mean(1, keepdim=True).float())
        self.mel_std.copy_(allm.std(1, keepdim=True).clamp(min=1e-3).float())
        self._mel_cache.clear()

    def set_speedups(self, on: bool) -> "StyleEncoder":
        """True: log-mels cached per clip (exact). False: recomputed every time (`python -m mtk.bench train`)."""
        self.speedups = on
        self._mel_cache.clear()
        return self

    def weights(self, f_s: torch.Tensor) -> torch.Tensor:
        """f_s (B, n) -> w_s (B, n): Eq. 15 or the residual form (`slot_weights`)."""
        return slot_weights(f_s, self.to_scale, self.cfg.weights)

    def embed(self, f_s: torch.Tensor) -> torch.Tensor:
        return self.style_mlp(f_s)


def slot_weights(f_s: torch.Tensor, psi: nn.Linear, form: str = "released") -> torch.Tensor:
    """f_s (B, n) -> w_s (B, n).

    "released" (Eq. 15):  w_s = sigmoid(f_s) * psi(f_s)             psi: Linear(n -> 1), no bias
    "residual":           w_s = 1 + tanh(f_s) * tanh(psi(f_s))      in (0, 2); 1 when psi = 0
    """
    if form == "released":
        return torch.sigmoid(f_s) * psi(f_s)
    return 1.0 + torch.tanh(f_s) * torch.tanh(psi(f_s))


def stylize_memory(M: torch.Tensor, w_s: torch.Tensor) -> torch.Tensor:
    """Eq. 14: M (n, c), w_s (B, n) -> M~ (B, n, c) = w_s[b, i] * M[i], one style per sample."""
    return w_s[:, :, None] * M[None]


def triplet_loss(anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, margin: float) -> torch.Tensor:
    """Eq. 13: mean over the batch of max(0, |a - p|_2 - |a - n|_2 + margin) (F.triplet_margin_loss, p = 2)."""
    return F.triplet_margin_loss(anchor, positive, negative, margin=margin, p=2)
