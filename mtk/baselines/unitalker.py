"""UniTalker (Fan et al., ECCV 2024): one model trained across datasets with different annotations.

Follows the released code, `X-niper/UniTalker` `models/unitalker.py`,
`models/unitalker_decoder.py` (`UniTalkerDecoderTCN`), `models/model_utils.py` (`TCN`,
`SeqTranslator1D`, `ConvNormRelu`), `models/pca.py` (`PCALayer`), `loss/loss.py` and
`main/train.py` (`baselines.md` 2.7). Non-autoregressive:

    h     = E_aud(audio)                            (B, T, H)   at 30 fps (`audio.AudioEncoder`)
    x     = dropout(Linear(H -> 256)(h))            (B, T, 256)
    s     = Embedding(n_ids + 1, 64)(id)            (B, 64)     broadcast over time
    y     = TCN([x ; s])                            (B, T, 256) 3 x (Conv1d k3 -> LayerNorm, + residual, ReLU)
    c     = head_d(y)                               (B, T, P)   per-dataset Linear into PCA space, zero-init
    verts = template + mean_d + c U_d               (B, T, V_d*3)   fixed PCA basis U_d (P, V_d*3) of dataset d

Unified training: each dataset (annotation type) has its own head and PCA basis,
fitted once on its training displacements (vertices - template); the audio
encoder, the TCN and the identity embedding are shared. Batches come from one
dataset at a time (`fit`, shuffled between datasets every epoch). The identity
embedding covers the training speakers of every dataset plus one shared "pivot"
identity (the last row): in training each clip's identity is replaced by the pivot
with probability 0.1 (`random_id_prob`), and at inference unseen speakers use the
pivot (`condition_id 'common'`).

Loss (`loss.py`, `train_eval_loop.py`): MSE(vertices) + 0.01 MSE(PCA coefficients),
the ground-truth coefficients being the PCA encoding of the true displacements. The
audio encoder is frozen during the first epoch (`fix_encoder_first`), then fine-tuned
(its CNN feature encoder stays frozen). Adam 1e-4, 100 epochs, batch 1 (released).

In the kit: SynthVOCA (the dataset given to `from_dataset`) plus a second synthetic
set on another template resolution (`UniTalkerConfig.second`, a `SynthConfig`:
different vertex count, speakers, PCA head). A head is keyed by its annotation
type, "<template name>_<V>_vertices" like the released "FLAME_5023_vertices", and a
batch is routed to the head whose vertex count it has. Evaluation on SynthVOCA
uses the SynthVOCA head.

Deviations:
* The head's coefficients are multiplied by a fixed scalar, the RMS of the training
  coefficients of that dataset (MemoryTalker's `motion_scale` device in the kit), so
  Adam's steps are on the coefficients' scale. The basis is not whitened.
* The pivot identity is drawn per clip (released: per batch, with batch 1: the same).
* Padded frames are zeroed before every convolution, so batched clips see no padding.
* The PCA is fitted on at most `pca_frames` training frames (evenly spaced) with a
  randomized SVD; SynthVOCA motion has rank 13 (13 basis fields), so `pca_dim` 13
  keeps all of it.
* Paper preset: `microsoft/wavlm-base-plus` through transformers' WavLMModel
  (`audio.kind = "wavlm"`, supported here by `make_audio_encoder`); the kit's own
  presets use the shared pretrained HuBERT like every method.
* `mtk.recipes.load_or_train` drives `mtk.train.fit`, which sees one dataset only;
  train UniTalker with this module's `load_or_train` (which uses `fit` below).
* An epoch passes over both training sets (SynthVOCA's clips as often as every
  other method's, plus the second set's): more data is UniTalker's idea.

Sizes (parameters besides the audio encoder):
    smoke    width 32, identity 16, PCA 13
    default  the released TCN: width 256, identity 64, 3 layers, dropout 0.1; PCA 13 (all of
             SynthVOCA's motion); 919,642 parameters (+ the kit's HuBERT: 1,253,834). Second set:
             coarse template (1,917 vertices), 4 training speakers x 20 sentences (80 clips, +25 %)
    paper    WavLM-base-plus + 1,348,416 (PCA 512, two heads), batch 1, Adam 1e-4
"""
from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..configs import Config
from ..audio import AudioConfig, AudioEncoder
from ..audio import make_audio_encoder as _make_encoder
from ..data import motion_scale, FaceDataset, Sequence, SynthVOCA, collate
from ..losses import masked_mse, vertex_losses
from ..paths import data_dir
from ..recipes import build, dataset_key, method_recipe
from ..synthvoca import SynthConfig, generate
from .. import checkpoint
from ..train import (TrainConfig, check_finite, config_hash, resolve_device, seed_everything,
                     to_device, trainable_only, validation)


def second_dataset_config(preset: str) -> dict:
    """The second dataset (SynthConfig fields) of a preset: another template resolution, other speakers."""
    if preset == "smoke":
        cfg = SynthConfig.smoke(name="unitalker-second", resolution=(30, 18), seed=7, n_val=0, n_test=1)
    elif preset == "default":
        cfg = SynthConfig(name="unitalker-second", resolution="coarse", seed=7, n_train=4, n_val=0, n_test=1,
                          sentences_per_speaker=20, shared_sentences=5)
    elif preset == "paper":
        cfg = SynthConfig(name="unitalker-second", resolution="coarse", seed=7)
    else:
        raise ValueError(f"unknown preset {preset!r}; expected 'smoke', 'default' or 'paper'")
    d = cfg.fields()                                  # (fields added later, at their default, left out: stable keys)
    d["resolution"] = list(d["resolution"]) if isinstance(d["resolution"], tuple) else d["resolution"]
    return d


@dataclass
class UniTalkerConfig(Config):
    """UniTalker's architecture. Presets: `smoke` (CI), `default` (SynthVOCA on a CPU), `paper` (UniTalker-B)."""

    vertex_dim: int = 15069              # V * 3 of the main dataset's template
    width: int = 256                     # `decoder_dimension`
    id_dim: int = 64
    tcn_layers: int = 3                  # `min_layers_num`
    dropout: float = 0.1
    pca_dim: int = 512
    pca_weight: float = 0.01
    pivot_prob: float = 0.1              # `random_id_prob`
    freeze_encoder_first_epoch: bool = True   # `fix_encoder_first`
    pca_frames: int = 4000               # training frames (evenly spaced) the PCA is fitted on
    second: dict | None = None           # SynthConfig fields of the second dataset; None: the main one alone
    audio: AudioConfig = field(default_factory=AudioConfig.default)

    @classmethod
    def smoke(cls, vertex_dim: int, **kw) -> "UniTalkerConfig":
        kw.setdefault("audio", AudioConfig.smoke())
        kw.setdefault("second", second_dataset_config("smoke"))
        return cls(**{**dict(vertex_dim=vertex_dim, width=32, id_dim=16, pca_dim=13, pca_frames=1000), **kw})

    @classmethod
    def default(cls, vertex_dim: int, **kw) -> "UniTalkerConfig":
        """Released TCN (width 256, identity 64, 3 layers); PCA 13 = the rank of SynthVOCA motion."""
        kw.setdefault("second", second_dataset_config("default"))
        return cls(**{**dict(vertex_dim=vertex_dim, pca_dim=13), **kw})

    @classmethod
    def paper(cls, vertex_dim: int = 15069, **kw) -> "UniTalkerConfig":
        kw.setdefault("audio", wavlm_base_plus())
        kw.setdefault("second", second_dataset_config("paper"))
        return cls(vertex_dim=vertex_dim, **kw)




# --------------------------------------------------------------------------- audio: WavLM for the paper preset
def wavlm_base_plus() -> AudioConfig:
    """UniTalker-B's encoder, `microsoft/wavlm-base-plus` (768-d, 12 layers), CNN frozen."""
    return AudioConfig(kind="wavlm", pretrained="microsoft/wavlm-base-plus", hidden_size=768, num_hidden_layers=12,
                       num_attention_heads=12, intermediate_size=3072, conv_dim=(512,) * 7,
                       num_conv_pos_embeddings=128, num_conv_pos_embedding_groups=16, mask_time_prob=0.05)


class WavLMAudioEncoder(AudioEncoder):
    """`audio.AudioEncoder` on a transformers WavLMModel (same CNN -> interpolate -> transformer path)."""

    def __init__(self, cfg: AudioConfig):
        nn.Module.__init__(self)
        from transformers import WavLMConfig, WavLMModel
        self.cfg = cfg
        if cfg.pretrained is None:                                           # random init (tests, from scratch)
            self.model = WavLMModel(WavLMConfig(
                hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_hidden_layers,
                num_attention_heads=cfg.num_attention_heads, intermediate_size=cfg.intermediate_size,
                conv_dim=tuple(cfg.conv_dim), num_conv_pos_embeddings=cfg.num_conv_pos_embeddings,
                num_conv_pos_embedding_groups=cfg.num_conv_pos_embedding_groups, mask_time_prob=cfg.mask_time_prob,
                hidden_dropout=cfg.dropout, attention_dropout=cfg.dropout, activation_dropout=0.0, layerdrop=0.0,
                feat_proj_dropout=0.0))
        else:
            try:
                self.model = WavLMModel.from_pretrained(cfg.pretrained)
            except (OSError, ValueError) as e:
                raise OSError(f"could not load WavLM weights {cfg.pretrained!r} (no hub access?): {e}\nDownload "
                              "them elsewhere and pass the local folder as AudioConfig.pretrained.") from e
        self._setup()


def make_audio_encoder(cfg: AudioConfig) -> AudioEncoder:
    return WavLMAudioEncoder(cfg) if cfg.kind == "wavlm" else _make_encoder(cfg)


# --------------------------------------------------------------------------- PCA heads
def fit_pca(sequences: list[Sequence], pca_dim: int, max_frames: int = 4000, seed: int = 0) -> dict:
    """A PCA of the per-frame displacements (vertices - template) of training clips (`models/pca.py`).

    -> {"basis" (P, D) orthonormal rows, "mean" (D,), "explained" fraction of the variance the P
    components keep, "coef_rms" RMS of the training coefficients}. P = min(pca_dim, frames, D).
    Fitted on at most about `max_frames` frames, evenly spaced: one pass over the clips, keeping every
    `step`-th frame, `step` doubling whenever the kept frames pass max_frames.
    """
    if not sequences:
        raise ValueError("fit_pca: no training sequences to fit UniTalker's PCA head on (an empty train split?)")
    rows, step, n = [], 1, 0
    for s in sequences:
        d = (s.vertices() - s.template.vertices).reshape(-1, s.template.V * 3)   # (T, D)
        rows.append(d[(-n) % step::step])                                     # global frame index % step == 0
        n += len(d)
        while sum(len(r) for r in rows) > max_frames:
            step *= 2
            kept, m = [], 0                                                   # re-subsample what is kept
            for r in rows:
                kept.append(r[(-m) % 2::2])
                m += len(r)
            rows = kept
    X = torch.from_numpy(np.concatenate(rows))                                 # (N, D) float32
    mean = X.mean(0)
    Xc = X - mean
    P = min(pca_dim, *Xc.shape)
    with torch.random.fork_rng(devices=[]):         # seeded here, and torch's global generator left as it was: the
        torch.manual_seed(seed)                     # model built after the head inits the same with or without a
        _, S, Vt = torch.svd_lowrank(Xc, q=min(P + 10, *Xc.shape), niter=4)   # cached PCA (`dataset_pca`)
    basis = Vt.T[:P]                                                          # (P, D)
    coef = Xc @ basis.T
    return {"basis": basis, "mean": mean,
            "explained": min(1.0, float((S[:P].double() ** 2).sum() / (Xc.double() ** 2).sum())),
            "coef_rms": float(coef.pow(2).mean().sqrt().clamp(min=1e-12))}


def dataset_pca(dataset, pca_dim: int, max_frames: int) -> dict:
    """`fit_pca` on a dataset's training split, cached on disk (data/unitalker-pca/) by the dataset's key."""
    path = data_dir() / "unitalker-pca" / f"{config_hash(dataset_key(dataset), pca_dim, max_frames, 'v1')}.safetensors"
    if path.exists():
        t = checkpoint.load_tensors(path)
        return {"basis": t["basis"], "mean": t["mean"], "explained": float(t["explained"]),
                "coef_rms": float(t["coef_rms"])}
    pca = fit_pca(dataset.sequences("train"), pca_dim, max_frames)
    path.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.save_tensors(path, {k: v if torch.is_tensor(v) else torch.tensor(v) for k, v in pca.items()})
    return pca


class PCAHead(nn.Module):
    """One dataset's output head: Linear(width -> P) (zero-init) into its fixed PCA space."""

    def __init__(self, width: int, pca: dict, n_ids: int, id_offset: int):
        super().__init__()
        P = pca["basis"].shape[0]
        self.proj = nn.Linear(width, P)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)
        self.register_buffer("basis", pca["basis"])                            # (P, D) fixed
        self.register_buffer("mean", pca["mean"])                              # (D,)
        self.register_buffer("coef_scale", torch.tensor(pca["coef_rms"]))
        self.register_buffer("explained", torch.tensor(pca["explained"]))
        self.n_ids, self.id_offset = n_ids, id_offset                         # this dataset's training identities

    @property
    def vertex_dim(self) -> int:
        return self.basis.shape[1]

    def coefficients(self, y: torch.Tensor) -> torch.Tensor:
        """y (B, T, width) -> PCA coefficients (B, T, P)."""
        return self.proj(y) * self.coef_scale

    def encode(self, displacement: torch.Tensor) -> torch.Tensor:
        """(..., D) displacements -> (..., P) coefficients (`PCALayer.encode`)."""
        return (displacement - self.mean) @ self.basis.T

    def decode(self, coef: torch.Tensor) -> torch.Tensor:
        """(..., P) coefficients -> (..., D) displacements (`PCALayer.decode`)."""
        return coef @ self.basis + self.mean


# --------------------------------------------------------------------------- the network
class ConvNormReLU(nn.Module):
    """relu(LayerNorm(Conv1d_k3(x)) + residual(x)); residual = identity, or a Conv1d_k3 if widths differ."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv = nn.Conv1d(c_in, c_out, 3, padding=1)
        self.norm = nn.LayerNorm(c_out)
        self.residual = nn.Identity() if c_in == c_out else nn.Conv1d(c_in, c_out, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C_in, T) -> (B, C_out, T)."""
        y = self.norm(self.conv(x).transpose(1, 2)).transpose(1, 2)
        return F.relu(y + self.residual(x))


def load_second_dataset(cfg: UniTalkerConfig, progress: bool = False):
    """The second SynthVOCA-like dataset of a config (generated on first use, cached under data/)."""
    d = dict(cfg.second)
    if isinstance(d.get("resolution"), list):
        d["resolution"] = tuple(d["resolution"])
    return SynthVOCA(generate(SynthConfig(**d), progress=progress))


class UniTalker(nn.Module):
    """The full model: shared audio encoder + TCN + identity embedding, one PCA head per dataset."""

    n_stages = 1

    def __init__(self, cfg: UniTalkerConfig, heads: dict[str, PCAHead]):
        super().__init__()
        self.cfg = cfg
        self.audio_encoder = make_audio_encoder(cfg.audio)
        self.audio_map = nn.Linear(self.audio_encoder.hidden_size, cfg.width)   # `audio_feature_map`
        self.dropout = nn.Dropout(cfg.dropout)
        self.n_ids = sum(h.n_ids for h in heads.values())
        self.pivot = self.n_ids                                                  # the extra, last identity
        self.id_embedding = nn.Embedding(self.n_ids + 1, cfg.id_dim)           # `learnable_style_emb`
        dims = [cfg.width + cfg.id_dim] + [cfg.width] * cfg.tcn_layers
        self.tcn = nn.ModuleList(ConvNormReLU(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.heads = nn.ModuleDict(heads)
        self.trained_jointly = False                                            # set by this module's `fit`

    @classmethod
    def from_dataset(cls, cfg: UniTalkerConfig, dataset) -> "UniTalker":
        """Heads for `dataset` (first: its head evaluates it) and for `cfg.second`; PCA fitted on each train split."""
        datasets = [dataset] + ([load_second_dataset(cfg)] if cfg.second else [])
        heads, offset = {}, 0
        for ds in datasets:
            key = annotation_type(ds.template)
            if key in heads:
                raise ValueError(f"two datasets share the annotation type {key!r}; UniTalker keys heads by it")
            pca = dataset_pca(ds, cfg.pca_dim, cfg.pca_frames)
            heads[key] = PCAHead(cfg.width, pca, len(ds.train_subjects), offset)
            offset += len(ds.train_subjects)
        model = cls(cfg, heads)
        model.datasets = datasets                                               # not a module: for `fit`
        return model

    # ------------------------------------------------------------------ pieces
    def head_for(self, batch: dict) -> PCAHead:
        """The head whose annotation (vertex count) the batch has."""
        D = batch["template"].shape[1]
        for head in self.heads.values():
            if head.vertex_dim == D:
                return head
        raise ValueError(f"no UniTalker head for V*3 = {D}; heads: "
                         f"{ {k: h.vertex_dim for k, h in self.heads.items()} }")

    def identities(self, batch: dict, head: PCAHead, condition=None) -> torch.Tensor:
        """(B,) identity ids: `condition` k -> that dataset's training speaker k for every clip; "pivot" -> the
        pivot; None -> each clip's own training identity, the pivot for unseen speakers (speaker -1)."""
        spk = batch["speaker"]
        if condition is None:
            ids = torch.where(spk >= 0, spk + head.id_offset, torch.full_like(spk, self.pivot))
        elif condition == "pivot":
            ids = torch.full_like(spk, self.pivot)
        else:
            k = int(condition)
            if not 0 <= k < head.n_ids:
                raise ValueError(f"condition {condition!r}: this dataset has {head.n_ids} training identities")
            ids = torch.full_like(spk, head.id_offset + k)
        return ids

    def trunk(self, audio, audio_lengths, n_frames, ids) -> torch.Tensor:
        """Audio (B, N) and identities (B,) -> TCN features y (B, T, width)."""
        h = self.audio_encoder(audio, audio_lengths, n_frames)                  # (B, T, H)
        x = self.dropout(self.audio_map(h))                                     # (B, T, width)
        T = x.shape[1]
        s = self.id_embedding(ids)[:, None].expand(-1, T, -1)                   # (B, T, id_dim)
        mask = (torch.arange(T, device=x.device)[None] < n_frames[:, None])[:, None].to(x.dtype)   # (B, 1, T)
        y = torch.cat([x, s], -1).transpose(1, 2)                               # (B, C, T)
        for layer in self.tcn:
            y = layer(y * mask)
        return y.transpose(1, 2)

    def run(self, batch: dict, ids: torch.Tensor, head: PCAHead):
        """-> predicted vertices (B, T, D) and PCA coefficients (B, T, P)."""
        y = self.trunk(batch["audio"], batch["audio_mask"].sum(1), batch["n_frames"], ids)
        coef = head.coefficients(y)
        return batch["template"][:, None] + head.decode(coef), coef

    # ------------------------------------------------------------------ training
    def forward(self, batch: dict, stage: int = 1) -> dict:
        """Loss = MSE(vertices) + pca_weight * MSE(PCA coefficients); identities replaced by the pivot
        with probability `pivot_prob` per clip."""
        if self.training and len(self.heads) > 1 and not self.trained_jointly and not getattr(self, "_warned", 0):
            warnings.warn("UniTalker is being trained on one dataset only (mtk.train.fit); its multi-dataset "
                          "training is mtk.baselines.unitalker.load_or_train / fit", stacklevel=2)
            self._warned = 1
        head = self.head_for(batch)
        ids = self.identities(batch, head)
        if self.training and self.cfg.pivot_prob > 0:
            swap = torch.rand(ids.shape, device=ids.device) < self.cfg.pivot_prob
            ids = torch.where(swap, torch.full_like(ids, self.pivot), ids)
        pred, coef = self.run(batch, ids, head)
        verts, mask = batch["vertices"], batch["frame_mask"]
        mse, vel = vertex_losses(pred, verts, mask)
        pca = masked_mse(coef, head.encode(verts - batch["template"][:, None]), mask)
        return {"loss": mse + self.cfg.pca_weight * pca, "mse": mse, "vel": vel, "pca": pca}

    def stage_parameters(self, stage: int = 1):
        """One stage: everything except the frozen CNN feature encoder."""
        return [p for p in self.parameters() if p.requires_grad]

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def predict_batch(self, batch: dict, stage=None, condition=None, return_features: bool = False):
        """A collated batch (of any dataset with a head) -> vertices (B, T, V*3).

        condition: None (training speakers: their own identity; unseen speakers: the pivot), an int k
        (the dataset's training speaker k for every clip) or "pivot".
        """
        if return_features:
            raise NotImplementedError("UniTalker has no recalled features to return")
        head = self.head_for(batch)
        return self.run(batch, self.identities(batch, head, condition), head)[0]


def annotation_type(template) -> str:
    """A head's key, like the released "FLAME_5023_vertices"."""
    return f"{template.name}_{template.V}_vertices"


# --------------------------------------------------------------------------- multi-dataset training
def fit(model: UniTalker, datasets: list[tuple[list[Sequence], int]], cfg: TrainConfig, ckpt_path,
        val: list[Sequence] | None = None, n_val_speakers: int | None = None, progress: bool = True) -> dict:
    """Train on several datasets, one dataset per batch; resume from `ckpt_path` like `mtk.train.fit`.

    datasets: [(training clips, number of training speakers)], the first being the one validated.
    Every epoch is one pass over all of them: each dataset's clips are shuffled into batches and
    the batches of all datasets shuffled together. The audio encoder is frozen in epoch 0 when
    `model.cfg.freeze_encoder_first_epoch` (released `fix_encoder_first`). History as `mtk.train.fit`,
    plus the vertex MSE per head ("mse/<annotation type>").
    """
    from tqdm.auto import tqdm

    ckpt_path = Path(ckpt_path)
    ckpt_path.parent.mkdir(parents=True, exist_ok=True)
    device = torch.device(resolve_device(cfg.device))
    model.to(device)
    model.trained_jointly = True
    params = model.stage_parameters(cfg.stage)
    trainable = {id(p) for p in params}
    with trainable_only(model, params):
        opt = torch.optim.Adam(params, lr=cfg.lr, fused=True)
        history = {"train": [], "val": [], "seconds": []}
        start = 0
        key = config_hash(cfg.identity_dict(), model.cfg.to_dict(), [[s.name for s in seqs] for seqs, _ in datasets])
        if (record := checkpoint.load_training_state(ckpt_path, key, model, opt, device)) is not None:
            history, start = record["history"], record["epoch"]
            if start >= cfg.epochs:
                return history
        if start == 0:
            seed_everything(cfg.seed)
        bases = [FaceDataset(seqs, n, cache=cfg.cache) for seqs, n in datasets]
        # the kit's Adam-epsilon fix (mtk.train.loss_scale): each dataset's loss divided by its squared RMS motion
        scales = [1.0 / motion_scale(seqs) ** 2 if cfg.normalize_loss else 1.0 for seqs, _ in datasets]
        val_loader = None
        if val:
            val_loader = torch.utils.data.DataLoader(FaceDataset(val, n_val_speakers or datasets[0][1]),
                                                     batch_size=cfg.batch_size, collate_fn=collate)
        encoder = [p for p in model.audio_encoder.parameters() if id(p) in trainable]
        gen = torch.Generator()
        for epoch in range(start, cfg.epochs):
            t0 = time.time()
            for p in encoder:                                                  # epoch 0: encoder frozen (warm-up)
                p.requires_grad_(not (epoch == 0 and model.cfg.freeze_encoder_first_epoch))
            gen.manual_seed(cfg.seed * 1000 + epoch)
            loaders = [torch.utils.data.DataLoader(b, batch_size=cfg.batch_size, shuffle=True, generator=gen,
                                                   collate_fn=collate) for b in bases]
            order = torch.cat([torch.full((len(ld),), i) for i, ld in enumerate(loaders)])
            order = order[torch.randperm(len(order), generator=gen)].tolist()   # which dataset each batch is from
            if cfg.max_batches is not None:                                    # short runs alternate the datasets
                lens = [len(ld) for ld in loaders]
                order = [i for r in range(max(lens)) for i in range(len(lens)) if r < lens[i]][:cfg.max_batches]
            iters = [iter(ld) for ld in loaders]
            model.train()
            sums: dict[str, float] = {}
            counts: dict[str, int] = {}
            bar = tqdm(order, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, disable=not progress)
            for d in bar:
                batch = to_device(next(iters[d]), device)
                out = model(batch, stage=cfg.stage)
                check_finite(out, batch, f"UniTalker epoch {epoch + 1}")
                opt.zero_grad(set_to_none=True)
                (out["loss"] * scales[d]).backward()
                if cfg.grad_clip:
                    torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                opt.step()
                terms = {k: float(v.detach()) for k, v in out.items() if torch.is_tensor(v) and v.dim() == 0}
                terms[f"mse/{annotation_type_of(model, batch)}"] = terms["mse"]
                for k, v in terms.items():
                    sums[k], counts[k] = sums.get(k, 0.0) + v, counts.get(k, 0) + 1
                bar.set_postfix(loss=f"{sums['loss'] / counts['loss']:.3e}")
            history["train"].append({k: v / counts[k] for k, v in sums.items()})
            val_loss = validation(model, val_loader, cfg, epoch, device) if val_loader is not None else None
            if val_loss is not None:
                history["val"].append(val_loss)
            history["seconds"].append(time.time() - t0)
            checkpoint.save_training_state(ckpt_path, model, opt, {
                "key": key, "epoch": epoch + 1, "history": history, "train_config": cfg.to_dict(),
                "model_config": model.cfg.to_dict()})
            if progress:
                msg = f"epoch {epoch + 1}/{cfg.epochs}: train loss {history['train'][-1]['loss']:.4e}"
                if val_loss is not None:
                    msg += f", val mse {history['val'][-1]['mse']:.4e}"
                print(msg + f" ({history['seconds'][-1]:.1f} s)", flush=True)
    return history


def annotation_type_of(model: UniTalker, batch: dict) -> str:
    head = model.head_for(batch)
    return next(k for k, h in model.heads.items() if h is head)


def load_or_train(recipe, dataset, progress: bool = True):
    """UniTalker's `mtk.recipes.load_or_train`: the same run folder and checkpoint, trained with `fit` above
    on `dataset` and the recipe's second dataset. -> (model, {"run_dir", "history1", "stage1_state"})."""
    run = recipe.run_dir(dataset)
    run.mkdir(parents=True, exist_ok=True)
    (run / "recipe.json").write_text(json.dumps(
        {"name": recipe.name, "class": recipe.model_class.__name__, "model": recipe.model.to_dict(),
         "stage1": recipe.stage1.__dict__, "stage2": None, "dataset": dataset_key(dataset)}, indent=1))
    model = build(recipe, dataset)
    data = [(ds.sequences("train"), len(ds.train_subjects)) for ds in model.datasets]
    h1 = fit(model, data, recipe.stage1, run / "stage1", dataset.sequences("val") or None,
             len(dataset.train_subjects), progress=progress)
    model.eval()
    return model, {"run_dir": run, "history1": h1,
                   "stage1_state": {k: v.detach().clone() for k, v in model.state_dict().items()}}


def recipe(preset: str, dataset, progress: bool = True, **model_kw):
    """UniTalker's recipe for a preset ("smoke", "default", "paper"); model_kw override config fields.

    One stage with the preset's whole budget (`recipes.budget`); an epoch passes over both datasets.
    `mtk.recipes.load_or_train` trains it with this module's `load_or_train` (the recipe's trainer).
    """
    presets = {"smoke": UniTalkerConfig.smoke, "default": UniTalkerConfig.default, "paper": UniTalkerConfig.paper}
    return method_recipe("unitalker", preset, dataset, presets, UniTalker, progress, trainer=load_or_train, **model_kw)
