"""Training: one loop for every model in the kit, with checkpoints, resume and seeded determinism.

A model plugs in by providing
    forward(batch, stage) -> {"loss": scalar, "<term>": scalar, ...}
    stage_parameters(stage) -> the parameters this stage trains
and `fit` does the rest: padded batches from `data.collate`, Adam, tqdm progress
bars, a validation loss per epoch (or every few: `TrainConfig.val_every`), loss curves,
a checkpoint written atomically after every epoch, and resuming from it after an interruption.

MemoryTalker's released schedule (`memorytalker.md` 2.3): stage 1 Adam 1e-4,
stage 2 Adam 5e-5 (only the style encoder trains), 100 epochs each, batch 1.
Stage 2 batches carry a triplet: for each clip, a positive (another clip of the
same training speaker) and a negative (a clip of another training speaker).
"""
from __future__ import annotations

import hashlib
import json
import random
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from . import checkpoint
from .configs import Config
from .data import FaceDataset, Sequence, collate, length_batches
from .losses import vertex_losses


@dataclass
class TrainConfig(Config):
    """How to train one stage. Presets: `smoke`, `default`, `paper` (per stage)."""

    stage: int = 1
    epochs: int = 100
    lr: float = 1e-4
    batch_size: int = 1
    seed: int = 0
    device: str = "auto"                  # where it trains (`resolve_device`): "auto", "cpu", "cuda[:i]", "mps";
                                          # not part of a run's identity (`identity_dict`)
    grad_clip: float | None = None
    max_batches: int | None = None        # cap batches per epoch (smoke tests)
    triplets: str = "sampled"             # stage 2: "sampled" (released: a positive and a negative per clip,
                                          # 3 style-encoder passes) or "in_batch" (batches of speaker pairs)
    cache: bool = True                    # keep materialised clips in memory (SynthVOCA fits easily)
    bucket: bool = False                  # batches of clips of similar length (`length_batches`): less padding,
                                          # but not exact (see docs/performance.md), so off by default
    normalize_loss: bool = True           # divide the loss by motion_scale^2 before backward (see `loss_scale`)
    val_every: int = 1                    # the validation loss after every val_every-th epoch and after the last
                                          # (0: after the last only); reporting only, so not part of the identity

    def identity_dict(self) -> dict:
        """The config as a run's key hashes it. The device is not part of it: the same recipe trained on a
        GPU is the same model (up to floating-point order), so a run trained on one device is found and
        resumed on another. It is hashed as "cpu", the value every key made before the device could be
        chosen holds, so those runs (and the shipped model's identity) stay valid. Nor is `val_every`: the
        validation loss is computed in eval mode without gradients, and a skipped validation makes the one
        random draw a validation makes (`validation`), so how often it runs does not change the trained weights
        (tests/test_train.py checks every method bit for bit)."""
        d = {**self.to_dict(), "device": "cpu"}
        d.pop("val_every")
        return d

    @classmethod
    def paper(cls, stage: int, **kw) -> "TrainConfig":
        kw = {"epochs": 100, "lr": 1e-4 if stage == 1 else 5e-5, "normalize_loss": False, **kw}
        return cls(stage=stage, batch_size=1, **kw)

    @classmethod
    def default(cls, stage: int, **kw) -> "TrainConfig":
        return cls(**{**dict(stage=stage, epochs=30 if stage == 1 else 10, lr=1e-3 if stage == 1 else 5e-4,
                             batch_size=4, triplets="in_batch"), **kw})

    @classmethod
    def smoke(cls, stage: int, **kw) -> "TrainConfig":
        return cls(**{**dict(stage=stage, epochs=2, lr=1e-3, batch_size=4, triplets="in_batch"), **kw})


def loss_scale(model, cfg: TrainConfig) -> float:
    """The factor the loss is multiplied by before backward (logged losses stay in their own units).

    Vertex losses in m^2 are ~1e-6, so their gradients (~1e-10) fall below Adam's epsilon (1e-8) and
    Adam's steps shrink by orders of magnitude. With `normalize_loss` every method's whole loss is
    divided by motion_scale^2 (the squared RMS displacement of the training set): the same minimiser
    and the same balance between a method's terms, with gradients Adam does not damp. A model whose
    config already expresses its vertex losses in motion units (`loss_units="motion"`) is left as is.
    """
    mcfg = getattr(model, "cfg", None)
    if not cfg.normalize_loss or mcfg is None or getattr(mcfg, "loss_units", "metres") == "motion":
        return 1.0
    s = getattr(mcfg, "motion_scale", 1.0)
    return 1.0 / s ** 2 if s != 1.0 else 1.0


def resolve_device(name: str) -> str:
    """The torch device for "auto", "cpu", "cuda", "cuda:<i>" or "mps", checked against this machine.

    "auto" is the first CUDA GPU when torch sees one, else the CPU (Apple's "mps" only when asked for:
    not every operation the kit uses has an MPS kernel). Raises ValueError naming the device and what
    this machine has, so a wrong `--device` fails before any data is generated or any model built.
    """
    name = str(name).strip().lower()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return name
    kind, _, index = name.partition(":")
    if kind == "cuda" and (not index or index.isdigit()):
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise ValueError(f"device {name!r}: torch sees no CUDA GPU on this machine (torch {torch.__version__}, "
                             f"CUDA build: {torch.version.cuda or 'no'}); expected 'cpu' or 'auto' here")
        if index and int(index) >= n:
            raise ValueError(f"device {name!r}: this machine has {n} CUDA GPU(s) (cuda:0 to cuda:{n - 1})")
        return name
    if name == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ValueError(f"device {name!r}: Apple's Metal backend is not available on this machine; "
                             "expected 'cpu' or 'auto' here")
        return name
    raise ValueError(f"device {name!r}: expected 'auto', 'cpu', 'cuda', 'cuda:<index>' or 'mps'")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def config_hash(*parts) -> str:
    """Short hash of configs and names: a run's identity. It does not depend on where the checkout or the
    data live: a local pretrained-encoder folder (any `"pretrained"` entry naming an existing folder) counts
    by its content (`audio.pretrained_identity`), not by its path."""
    from .audio import pretrained_identity

    def portable(x):
        if isinstance(x, dict):
            return {k: (pretrained_identity(v) if k == "pretrained" and isinstance(v, str) else portable(v))
                    for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [portable(v) for v in x]
        return x
    blob = json.dumps(portable(list(parts)), sort_keys=True, default=str).encode()
    return hashlib.sha1(blob).hexdigest()[:10]


class TripletDataset(torch.utils.data.Dataset):
    """Wraps a FaceDataset: each item also carries a positive and a negative clip (audio only).

    positive: a random other clip of the same training speaker; negative: a random
    clip of a different training speaker (`memorytalker.md` 1.7, data_loader_contrastive.py).
    Sampling is seeded per (epoch, index), so runs are reproducible.
    """

    def __init__(self, base: FaceDataset, seed: int = 0):
        self.base = base
        self.by_speaker: dict[int, list[int]] = {}
        for i, s in enumerate(base.sequences):
            if s.speaker < 0:
                raise ValueError(f"triplets need training speakers; {s.name} has none")
            self.by_speaker.setdefault(s.speaker, []).append(i)
        if len(self.by_speaker) < 2:
            raise ValueError("triplets need at least two training speakers")
        self.seed, self.epoch = seed, 0

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        rng = random.Random(hash((self.seed, self.epoch, i)))
        item = self.base[i]
        spk = self.base.sequences[i].speaker
        same = [j for j in self.by_speaker[spk] if j != i] or [i]
        other = rng.choice([s for s in self.by_speaker if s != spk])
        pos, neg = self.base.sequences[rng.choice(same)], self.base.sequences[rng.choice(self.by_speaker[other])]
        return {**item, "positive_audio": torch.from_numpy(pos.audio()), "negative_audio": torch.from_numpy(neg.audio())}


class SpeakerPairBatches(torch.utils.data.Sampler):
    """Batches made of pairs of clips of one speaker (so every batch holds positives and negatives).

    Each epoch: the clips of every speaker are shuffled and paired, the pairs shuffled and packed
    `batch_size // 2` to a batch. Seeded by (seed, epoch). With `lengths` (one per clip), pairs of
    similar length are packed together (mega-batches of 50 batches sorted by the pair's length, as in
    `length_batches`), so less of a batch is padding.
    """

    def __init__(self, speakers: list[int], batch_size: int, seed: int = 0, lengths: list[int] | None = None):
        if batch_size < 4:
            raise ValueError(f"in-batch triplets need batch_size >= 4 (two pairs), got {batch_size}")
        self.speakers, self.batch_size, self.seed, self.epoch = speakers, batch_size, seed, 0
        self.lengths = lengths

    def _batches(self):
        rng = random.Random(hash((self.seed, self.epoch)))
        pairs = []
        for s in sorted(set(self.speakers)):
            idx = [i for i, si in enumerate(self.speakers) if si == s]
            rng.shuffle(idx)
            pairs += [idx[k:k + 2] for k in range(0, len(idx), 2)]
        rng.shuffle(pairs)
        per = self.batch_size // 2
        if self.lengths is None:
            return [sum(pairs[k:k + per], []) for k in range(0, len(pairs), per)]
        size = 50 * per
        batches = []
        for k in range(0, len(pairs), size):
            mega = sorted(pairs[k:k + size], key=lambda pair: -max(self.lengths[i] for i in pair))
            while mega:
                # the longest pair left, then the next-longest pairs of *other* speakers: a speaker's clips
                # share its speech rate, so length-sorted neighbours are often one speaker's, and a batch of
                # one speaker has no negatives for the triplet loss
                batch = [mega.pop(0)]
                for j in range(len(mega)):
                    if len(batch) == per:
                        break
                    if all(self.speakers[mega[j][0]] != self.speakers[b[0]] for b in batch):
                        batch.append(mega[j])
                        mega[j] = None
                mega = [pair for pair in mega if pair is not None]
                while len(batch) < per and mega:                # fewer speakers than pairs per batch
                    batch.append(mega.pop(0))
                batches.append(sum(batch, []))
        rng.shuffle(batches)
        return batches

    def __iter__(self):
        return iter(self._batches())

    def __len__(self):
        return len(self._batches())


def collate_triplets(batch):
    out = collate(batch)
    for key in ("positive", "negative"):
        audios = [b[f"{key}_audio"] for b in batch]
        n = max(len(a) for a in audios)
        pad = torch.zeros(len(audios), n)
        m = torch.zeros(len(audios), n, dtype=torch.bool)
        for i, a in enumerate(audios):
            pad[i, :len(a)], m[i, :len(a)] = a, True
        out[key] = {"audio": pad, "audio_mask": m}
    return out


def epoch_loader(dataset, cfg: TrainConfig, epoch: int, gen: torch.Generator, lengths: list[int] | None,
                 speakers: list[int], sampled: bool, shard: tuple[int, int] = (0, 1)) -> torch.utils.data.DataLoader:
    """One epoch's batches of `dataset` (a FaceDataset, or a TripletDataset when `sampled`), seeded by
    (cfg.seed, epoch): speaker pairs for in-batch triplets (stage 2), else shuffled batches, grouped by
    length when `cfg.bucket` (`lengths`: samples per clip). shard (rank, processes): under DDP, this process's
    share of batches `processes` times as large (`distributed.ShardedBatches`)."""
    from .distributed import ShardedBatches
    rank, size = shard
    B = cfg.batch_size * size                                          # the global batch
    gen.manual_seed(cfg.seed * 1000 + epoch)
    if isinstance(dataset, TripletDataset):
        dataset.epoch = epoch
    if cfg.stage == 2 and cfg.triplets == "in_batch":
        sampler = SpeakerPairBatches(speakers, B, cfg.seed, lengths if cfg.bucket else None)
        sampler.epoch = epoch
        batches, fn = sampler, collate
    else:
        fn = collate_triplets if sampled else collate
        if cfg.bucket and B > 1:
            batches = length_batches(lengths, B, gen)
        else:
            batches = torch.utils.data.BatchSampler(torch.utils.data.RandomSampler(dataset, generator=gen), B, False)
    if size > 1:
        batches = ShardedBatches(batches, rank, size)
    return torch.utils.data.DataLoader(dataset, batch_sampler=batches, collate_fn=fn)


def to_device(batch: dict, device) -> dict:
    out = {}
    for k, v in batch.items():
        if torch.is_tensor(v):
            out[k] = v.to(device)
        elif isinstance(v, dict):
            out[k] = to_device(v, device)
        else:
            out[k] = v
    return out


@contextmanager
def eval_mode(model: torch.nn.Module):
    """Run a block with `model` in eval mode (no dropout), then restore its mode."""
    was_training = model.training
    if not was_training:                       # already in eval mode: nothing to toggle (saves a module walk)
        yield model
        return
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


@contextmanager
def trainable_only(model: torch.nn.Module, params):
    """Within the block only `params` require gradients; on leaving (normally, by an error, or when a
    finished run is loaded instead of trained) every parameter gets its flag back. So a model that was
    just trained and one loaded from its checkpoint are the same object, bit for bit, flags included."""
    before = {id(p): p.requires_grad for p in model.parameters()}
    trainable = {id(p) for p in params}
    for p in model.parameters():
        p.requires_grad_(id(p) in trainable)
    try:
        yield
    finally:
        for p in model.parameters():
            p.requires_grad_(before[id(p)])


def check_finite(out: dict, batch: dict, where: str) -> None:
    """Stop training with an error naming the batch's clips when the loss is NaN or infinite."""
    loss = out["loss"]
    if not bool(torch.isfinite(loss)):
        terms = {k: float(v.detach()) for k, v in out.items() if torch.is_tensor(v) and v.dim() == 0 and k != "loss"}
        bad = [k for k, v in terms.items() if not np.isfinite(v)]
        raise FloatingPointError(
            f"{where}: the loss is {float(loss.detach())} (non-finite terms: {bad or 'none'}; all terms: {terms}) on the "
            f"clips {list(batch.get('name', []))}. Check these clips' audio and vertices for NaN/inf or extreme "
            "values, or lower the learning rate; the last checkpoint is the previous epoch's.")


def fit(model: torch.nn.Module, train: list[Sequence], cfg: TrainConfig, ckpt: str | Path,
        n_train_speakers: int, val: list[Sequence] | None = None, progress: bool = True, callback=None) -> dict:
    """Train `model` for one stage; resume from the checkpoint at `ckpt` if it holds an unfinished run of
    the same config (a finished one is loaded, not trained again).

    ckpt: the checkpoint's path without suffix, e.g. runs/<run>/stage1 (`mtk.checkpoint` writes
    stage1.safetensors, stage1.optim.safetensors and stage1.json after every epoch).
    Returns the history: {"train": [{term: mean per epoch}], "val": [...], "seconds": [...]}.
    callback(epoch, history) runs after each epoch's checkpoint is written (e.g. a live loss plot).
    A non-finite loss stops training with an error naming the batch's clips (`check_finite`).
    """
    from tqdm.auto import tqdm

    from . import distributed
    rank, world = distributed.world()
    progress = progress and rank == 0
    ckpt = Path(ckpt)
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    device = torch.device(resolve_device(cfg.device))
    model.to(device)
    params = model.stage_parameters(cfg.stage)
    with trainable_only(model, params):
        groups = model.param_groups(cfg.stage, cfg.lr) if hasattr(model, "param_groups") else [{"params": params}]
        opt = torch.optim.Adam(groups, lr=cfg.lr, fused=True)          # one kernel for all parameters
        model_cfg = getattr(model, "cfg", None) and model.cfg.to_dict()
        key = config_hash(cfg.identity_dict(), model_cfg, [s.name for s in train])
        history = {"train": [], "val": [], "seconds": []}
        start = 0
        if (record := checkpoint.load_training_state(ckpt, key, model, opt, device)) is not None:
            history, start = record["history"], record["epoch"]
            if start >= cfg.epochs:
                return history
            if progress:
                print(f"resuming {ckpt.name} at epoch {start + 1}/{cfg.epochs}")
        if start == 0:
            seed_everything(cfg.seed)
            if hasattr(model, "prepare_stage"):
                model.prepare_stage(cfg.stage, train)
        base = FaceDataset(train, n_train_speakers, cache=cfg.cache)
        sampled = cfg.stage == 2 and cfg.triplets == "sampled" and getattr(model, "cfg", None) is not None \
            and getattr(model.cfg, "use_memory", False)
        in_batch = cfg.stage == 2 and cfg.triplets == "in_batch"
        dataset = TripletDataset(base, cfg.seed) if sampled else base
        gen = torch.Generator().manual_seed(cfg.seed)
        scale = loss_scale(model, cfg)
        val_loader = None
        if val:
            val_loader = torch.utils.data.DataLoader(FaceDataset(val, n_train_speakers), batch_size=cfg.batch_size,
                                                     collate_fn=collate)
        lengths = [len(base[i]["audio"]) for i in range(len(base))] if cfg.bucket else None
        net = model                                                   # what the batches go through
        if world > 1:                                                 # DDP: gradients averaged after backward
            net = torch.nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)
        for epoch in range(start, cfg.epochs):
            t0 = time.time()
            loader = epoch_loader(dataset, cfg, epoch, gen, lengths, [s.speaker for s in train], sampled,
                                  shard=(rank, world))
            model.train()
            sums: dict[str, float] = {}
            n = 0
            # the bar counts steps and is never handed the loader: Jupyter's bar (tqdm.notebook) is a reference
            # cycle that would keep the loader, and with it the epoch's cached dataset, alive until a full
            # garbage collection (README, Known issues: notebook kernels grew by about 1 GB per training)
            bar = tqdm(total=min(len(loader), cfg.max_batches or len(loader)), leave=False, disable=not progress,
                       desc=f"stage {cfg.stage} epoch {epoch + 1}/{cfg.epochs}")
            for i, batch in enumerate(loader):
                if cfg.max_batches is not None and i >= cfg.max_batches:
                    break
                batch["in_batch_triplets"] = in_batch
                out = net(to_device(batch, device), stage=cfg.stage)
                check_finite(out, batch, f"stage {cfg.stage}, epoch {epoch + 1}, batch {i + 1}")
                opt.zero_grad(set_to_none=True)
                (out["loss"] * scale).backward()
                if cfg.grad_clip:
                    torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                opt.step()
                for k, v in out.items():
                    if torch.is_tensor(v) and v.dim() == 0:
                        sums[k] = sums.get(k, 0.0) + float(v.detach())
                n += 1
                bar.set_postfix(loss=f"{sums['loss'] / n:.3e}", refresh=False)
                bar.update(1)
            bar.close()
            history["train"].append(distributed.average({k: v / max(n, 1) for k, v in sums.items()}))
            val_loss = validation(model, val_loader, cfg, epoch, device) if val_loader is not None else None
            if val_loss is not None:
                history["val"].append(val_loss)
            history["seconds"].append(time.time() - t0)
            if rank == 0:                                            # written once; the others wait for it
                checkpoint.save_training_state(ckpt, model, opt, {
                    "key": key, "epoch": epoch + 1, "history": history, "train_config": asdict(cfg),
                    "model_config": getattr(model, "cfg", None) and model.cfg.to_dict()})
            distributed.barrier()
            if progress:
                msg = f"stage {cfg.stage} epoch {epoch + 1}/{cfg.epochs}: train loss {history['train'][-1]['loss']:.4e}"
                if val_loss is not None:
                    msg += f", val mse {history['val'][-1]['mse']:.4e}"
                left = (cfg.epochs - epoch - 1) * float(np.mean(history["seconds"][start:]))
                eta = f"; about {_duration(left)} left in this stage" if left > 0 else ""
                print(msg + f" ({history['seconds'][-1]:.1f} s{eta})", flush=True)
            if callback is not None:
                callback(epoch + 1, history)
    return history


def _duration(seconds: float) -> str:
    """3725 -> "1 h 2 min", 95 -> "2 min", 20 -> "20 s"."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    m = int(round(seconds / 60))
    return f"{m // 60} h {m % 60} min" if m >= 60 else f"{m} min"


def validates(cfg: TrainConfig, epoch: int) -> bool:
    """Whether training validates after `epoch` (0-based): every `cfg.val_every`-th epoch and the last."""
    return epoch + 1 == cfg.epochs or (cfg.val_every > 0 and (epoch + 1) % cfg.val_every == 0)


def validation(model, loader, cfg: TrainConfig, epoch: int, device) -> dict | None:
    """history["val"]'s entry after `epoch` (0-based), {"epoch": 1-based, "mse", "vel"} (`evaluate_loss`), or
    None if `validates` says this epoch does not validate. Validating draws one number from torch's global
    generator (a DataLoader's iterator takes its base seed from it, even without workers), and the next
    epoch's dropout masks follow from that generator; so a skipped validation makes the same draw, and the
    trained weights are the same whether or not validation ran (every run trained before `val_every`
    validated after every epoch). Nothing else in validation is random, and what it does change in a model
    (ScanTalk clamps its diffusion times in every forward) the next training step changes alike."""
    if not validates(cfg, epoch):
        iter(loader)                                   # the base-seed draw, nothing else
        return None
    return {"epoch": epoch + 1, **evaluate_loss(model, loader, cfg.stage, device, cfg.max_batches)}


def val_epochs(history: dict) -> list[int]:
    """The epochs (1-based) history["val"]'s entries were measured after. Runs trained before `val_every`
    existed validated after every epoch and did not record it."""
    return [v.get("epoch", i + 1) for i, v in enumerate(history["val"])]


@torch.no_grad()
def inference_losses(model, batch: dict, stage: int) -> dict:
    """{"mse", "vel"} (m^2) of the model's inference path, `predict_batch(batch, stage)`, against the batch's
    vertices: no teacher forcing, no auxiliary losses. Every method's validation loss unless it defines its
    own `validation_loss` (ScanTalk's samples frames)."""
    pred = model.predict_batch(batch, stage=stage)
    mse, vel = vertex_losses(pred, batch["vertices"], batch["frame_mask"])
    return {"mse": mse, "vel": vel}


@torch.no_grad()
def evaluate_loss(model, loader, stage: int, device, max_batches: int | None = None) -> dict:
    """Mean vertex MSE (and velocity loss) on a loader, in eval mode: `model.validation_loss` if it has
    one, else `inference_losses`. max_batches: the first batches only (as training caps them)."""
    model.eval()
    sums, n = {}, 0
    for i, batch in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        b = to_device(batch, device)
        out = model.validation_loss(b, stage) if hasattr(model, "validation_loss") else inference_losses(model, b, stage)
        for k in ("mse", "vel"):
            sums[k] = sums.get(k, 0.0) + float(out[k])
        n += 1
    model.train()
    return {k: v / max(n, 1) for k, v in sums.items()}
