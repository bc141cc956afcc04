"""Training speed: `python -m mtk.bench train` and `python -m mtk.bench profile`.

    python -m mtk.bench train                 # steps/s and clips/s per method and stage, speed-ups on vs off
    python -m mtk.bench profile memorytalker 1   # where one epoch of a method's stage spends its time

Both build every method exactly as the default preset does (`recipes.memorytalker`, `baselines.<name>.recipe`)
on the default SynthVOCA, except that the audio encoder is the default architecture with random weights
instead of the phoneme-pretrained one: speed does not depend on the weights, and the pretraining is its own
row. Every method trains through its real training loop (`train.fit`, UniTalker's `fit`, the phoneme
pretraining) on the same clips: `--per-speaker` clips of each training speaker.

"Off" restores the kit's behaviour before the speed work (`AudioEncoder.set_speedups(False)`: transformers'
gradient flag on the frozen CNN, no feature caches). `--bucket` also groups the "on" arm's batches by length
(`TrainConfig.bucket`: faster, but not exact, so off by default).
The ratio on/off is the figure: absolute times on shared cores vary from run to run.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Sequence as Seq

import torch

METHODS = ["memorytalker", "phonemes", "faceformer", "codetalker", "selftalk", "imitator", "scantalk", "unitalker"]


def set_speedups(model: torch.nn.Module, on: bool) -> None:
    """Turn every audio encoder's exact speed-ups on or off (`AudioEncoder.set_speedups`)."""
    for m in model.modules():
        if hasattr(m, "set_speedups"):
            m.set_speedups(on)


class Subset:
    """A dataset restricted to the first `per_speaker` training clips of each speaker (and a few val clips)."""

    def __init__(self, dataset, per_speaker: int):
        self.base, self.per_speaker = dataset, per_speaker
        self.template, self.train_subjects, self.key = dataset.template, dataset.train_subjects, dataset.key
        self.has_phonemes = getattr(dataset, "has_phonemes", False)

    def sequences(self, split: str = "train", part: str = "protocol"):
        seqs = self.base.sequences(split, part)
        if split != "train":
            return seqs[:4]
        out, seen = [], {}
        for s in seqs:
            if seen.get(s.speaker, 0) < self.per_speaker:
                out.append(s)
                seen[s.speaker] = seen.get(s.speaker, 0) + 1
        return out

    def __getattr__(self, name):
        return getattr(self.base, name)


def _audio(preset: str):
    from .audio import AudioConfig
    return AudioConfig.smoke() if preset == "smoke" else AudioConfig.default()


def _recipe(method: str, dataset, preset: str = "default", audio=None):
    """The preset's recipe, with the preset's encoder architecture at random weights (CNN frozen), or `audio`."""
    audio = audio or _audio(preset)
    if method == "memorytalker":
        from . import recipes
        return recipes.memorytalker(preset, dataset, progress=False, audio=audio)
    import importlib
    from .baselines import METHODS as BASELINES
    return importlib.import_module(BASELINES[method]).recipe(preset, dataset, progress=False, audio=audio)


def stages(method: str, dataset, preset: str = "default") -> list[int]:
    if method == "phonemes":
        return [1]
    r = _recipe(method, dataset, preset)
    return [1, 2] if r.stage2 is not None and getattr(r.model, "use_memory", True) else [1]


def time_epochs(method: str, stage: int, dataset, on: bool, epochs: int = 2, preset: str = "default",
                bucket: bool = False, audio=None) -> dict:
    """Train `method`'s `stage` for `epochs` epochs on `dataset` with the speed-ups on or off (and the encoder
    `audio`, default the preset's architecture at random weights).
    -> {"seconds": [per epoch], "batches": per epoch, "clips": per epoch}."""
    from . import recipes
    from .audio import pretrain_on_phonemes
    from .train import fit
    train = dataset.sequences("train")
    with tempfile.TemporaryDirectory() as tmp:
        if method == "phonemes":
            out = pretrain_on_phonemes(dataset, _audio(preset), Path(tmp) / "enc", epochs=epochs,
                                       progress=False, speedups=on, bucket=on and bucket)
            hist = json.loads((out / "pretrain.json").read_text())["history"]
            return {"seconds": [h["seconds"] for h in hist], "batches": -(-len(train) // 8), "clips": len(train)}
        recipe = _recipe(method, dataset, preset, audio)
        cfg = replace(recipe.stage1 if stage == 1 else recipe.stage2, epochs=epochs, bucket=on and bucket)
        model = recipes.build(recipe, dataset)
        set_speedups(model, on)
        if method == "unitalker":
            from .baselines import unitalker
            data = [(train, len(dataset.train_subjects))] + [
                (Subset(ds, dataset.per_speaker).sequences("train"), len(ds.train_subjects)) for ds in model.datasets[1:]]
            hist = unitalker.fit(model, data, cfg, Path(tmp) / "s", None, len(dataset.train_subjects), progress=False)
            clips = sum(len(d[0]) for d in data)
        else:
            hist = fit(model, train, cfg, Path(tmp) / "s", len(dataset.train_subjects), None, progress=False)
            clips = len(train)
    return {"seconds": hist["seconds"], "batches": -(-clips // cfg.batch_size), "clips": clips}


def bench_train(argv: Seq[str] = ()) -> int:
    """Training steps per second and clips per second, per method and stage, speed-ups on and off."""
    p = argparse.ArgumentParser(prog="python -m mtk.bench train", description=bench_train.__doc__)
    p.add_argument("--methods", nargs="*", default=METHODS, help=f"any of {METHODS}")
    p.add_argument("--per-speaker", type=int, default=6, help="training clips per speaker (default 6)")
    p.add_argument("--epochs", type=int, default=2, help="epochs per run; the last is timed (the caches fill in the "
                                                         "first, as they do in every real run's first epoch)")
    p.add_argument("--preset", default="default", choices=["smoke", "default"],
                   help="the preset's models and its SynthVOCA (default: default)")
    p.add_argument("--bucket", action="store_true", help="the 'on' arm also groups batches by length (not exact, "
                                                         "off by default in the kit: docs/performance.md)")
    p.add_argument("--json", type=Path, default=None, help="also write the rows to this file")
    args = p.parse_args(list(argv))
    unknown = sorted(set(args.methods) - set(METHODS))
    if unknown:
        p.error(f"unknown method(s) {unknown}; expected any of {METHODS}")
    from .data import load_dataset
    dataset = Subset(load_dataset(args.preset, progress=False), args.per_speaker)
    print(f"{args.preset} preset, {len(dataset.sequences('train'))} training clips, {args.epochs} epochs per run, "
          f"torch threads {torch.get_num_threads()}; times are of the last epoch (first epoch in brackets)")
    print(f"{'method':14s} {'stage':>5s} {'off steps/s':>12s} {'on steps/s':>11s} {'on clips/s':>11s} {'speed-up':>9s}")
    rows = []
    for method in args.methods:
        for stage in stages(method, dataset, args.preset):
            r = {s: time_epochs(method, stage, dataset, s == "on", args.epochs, args.preset, args.bucket)
                 for s in ("off", "on")}
            off, on = (r[k]["batches"] / r[k]["seconds"][-1] for k in ("off", "on"))
            row = {"method": method, "stage": stage, "off_steps_per_s": off, "on_steps_per_s": on,
                   "on_clips_per_s": r["on"]["clips"] / r["on"]["seconds"][-1], "speedup": on / off,
                   "off_seconds": r["off"]["seconds"], "on_seconds": r["on"]["seconds"]}
            rows.append(row)
            print(f"{method:14s} {stage:5d} {off:12.2f} {on:11.2f} {row['on_clips_per_s']:11.1f} {on / off:8.2f}x"
                  f"   (first epoch {r['off']['seconds'][0]:.1f} s -> {r['on']['seconds'][0]:.1f} s)", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


def bench_whisper(argv: Seq[str] = ()) -> int:
    """MemoryTalker's stage-1 epoch on Whisper tiny.en frozen (features cached) and fine-tuned (transformer
    layers trained, 30 s of padded input per clip), beside the kit's encoder; and what the default preset's
    whole stage 1 would take at that rate."""
    p = argparse.ArgumentParser(prog="python -m mtk.bench whisper", description=bench_whisper.__doc__)
    p.add_argument("--per-speaker", type=int, default=2, help="training clips per speaker (default 2)")
    p.add_argument("--epochs", type=int, default=2, help="epochs per run; the last is timed (default 2)")
    args = p.parse_args(list(argv))
    from . import recipes
    from .audio import AudioConfig
    from .data import load_dataset
    full = load_dataset("default", progress=False)
    dataset = Subset(full, args.per_speaker)
    n_full, n = len(full.sequences("train")), len(dataset.sequences("train"))
    epochs_full = recipes.memorytalker("default", full, pretrain=False).stage1.epochs
    print(f"MemoryTalker stage 1, default preset, {n} training clips, {args.epochs} epochs per run, torch threads "
          f"{torch.get_num_threads()}; the last epoch is timed; the estimate scales it to {n_full} clips x "
          f"{epochs_full} epochs")
    print(f"{'encoder':34s} {'s / epoch':>10s} {'s / clip':>9s} {'stage 1, default (min)':>23s}")
    for name, audio in (("kit's encoder (CNN frozen)", _audio("default")),
                        ("Whisper tiny.en, frozen", AudioConfig.whisper_tiny_en()),
                        ("Whisper tiny.en, fine-tuned", AudioConfig.whisper_tiny_en(frozen=False))):
        r = time_epochs("memorytalker", 1, dataset, True, args.epochs, audio=audio)
        per_clip = r["seconds"][-1] / r["clips"]
        print(f"{name:34s} {r['seconds'][-1]:10.1f} {per_clip:9.2f} {per_clip * n_full * epochs_full / 60:23.0f}",
              flush=True)
    return 0


# --------------------------------------------------------------------------- profile
def bench_profile(argv: Seq[str] = ()) -> int:
    """Where one epoch of a method's training stage spends its time: data, forward (per top-level module),
    backward, optimiser step; and the costliest operators (torch.profiler)."""
    p = argparse.ArgumentParser(prog="python -m mtk.bench profile", description=bench_profile.__doc__)
    p.add_argument("method", choices=[m for m in METHODS if m != "phonemes"])
    p.add_argument("stage", type=int, nargs="?", default=1)
    p.add_argument("--per-speaker", type=int, default=6)
    p.add_argument("--off", action="store_true", help="profile with the speed-ups off")
    p.add_argument("--ops", type=int, default=15, help="operators listed")
    p.add_argument("--preset", default="default", choices=["smoke", "default"])
    p.add_argument("--shapes", action="store_true", help="list operators by input shape")
    args = p.parse_args(list(argv))
    from torch.profiler import ProfilerActivity, profile

    from . import recipes
    from .data import FaceDataset, load_dataset
    from .train import TripletDataset, epoch_loader, loss_scale, to_device, trainable_only
    dataset = Subset(load_dataset(args.preset, progress=False), args.per_speaker)
    recipe = _recipe(args.method, dataset, args.preset)
    cfg = recipe.stage1 if args.stage == 1 else recipe.stage2
    if args.stage not in (1, 2) or cfg is None:
        p.error(f"{args.method} has no training stage {args.stage}; its stages: {stages(args.method, dataset, args.preset)}")
    model = recipes.build(recipe, dataset)
    set_speedups(model, not args.off)
    train = dataset.sequences("train")
    if args.method == "unitalker":
        model.trained_jointly = True                       # one dataset here: profile its batches only
    base = FaceDataset(train, len(dataset.train_subjects), cache=True)
    sampled = cfg.stage == 2 and cfg.triplets == "sampled"
    dataset_ = TripletDataset(base, cfg.seed) if sampled else base
    lengths = [len(base[i]["audio"]) for i in range(len(base))]
    gen = torch.Generator()
    in_batch = cfg.stage == 2 and cfg.triplets == "in_batch"
    params = model.stage_parameters(cfg.stage)
    scale = loss_scale(model, cfg)
    n_batches = 0
    phases: dict[str, float] = {}
    modules: dict[str, float] = {}
    starts: dict[str, float] = {}
    hooks = []
    for name, child in model.named_children():
        hooks.append(child.register_forward_pre_hook(lambda m, a, n=name: starts.__setitem__(n, time.perf_counter())))
        hooks.append(child.register_forward_hook(
            lambda m, a, o, n=name: modules.__setitem__(n, modules.get(n, 0.0) + time.perf_counter() - starts[n])))

    def epoch(record: bool):
        nonlocal n_batches
        loader = epoch_loader(dataset_, cfg, int(record), gen, lengths, [s.speaker for s in train], sampled)
        n_batches = len(loader)
        model.train()
        t = time.perf_counter()
        for batch in loader:
            t1 = time.perf_counter()
            batch["in_batch_triplets"] = in_batch
            out = model(to_device(batch, "cpu"), stage=cfg.stage)
            t2 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            (out["loss"] * scale).backward()
            t3 = time.perf_counter()
            opt.step()
            t4 = time.perf_counter()
            if record:
                for k, v in (("data", t1 - t), ("forward", t2 - t1), ("backward", t3 - t2), ("optimiser", t4 - t3)):
                    phases[k] = phases.get(k, 0.0) + v
            t = time.perf_counter()

    with trainable_only(model, params):
        groups = model.param_groups(cfg.stage, cfg.lr) if hasattr(model, "param_groups") else [{"params": params}]
        opt = torch.optim.Adam(groups, lr=cfg.lr, fused=True)          # one kernel for all parameters
        epoch(False)                                       # warm-up: fills the data and feature caches
        modules.clear()
        with profile(activities=[ProfilerActivity.CPU], record_shapes=args.shapes) as prof:
            epoch(True)
    for h in hooks:
        h.remove()
    total = sum(phases.values())
    print(f"{args.method} stage {args.stage}, speed-ups {'off' if args.off else 'on'}: {n_batches} batches of "
          f"{cfg.batch_size}, {total:.2f} s per epoch (profiled, so slower than unprofiled), "
          f"{n_batches / total:.2f} steps/s")
    print("phase        seconds   share")
    for k, v in phases.items():
        print(f"{k:10s} {v:9.2f} {100 * v / total:6.1f} %")
    print("forward by top-level module (inclusive)")
    for k, v in sorted(modules.items(), key=lambda kv: -kv[1]):
        print(f"  {k:24s} {v:7.2f} s {100 * v / total:6.1f} % of the epoch")
    print(prof.key_averages(group_by_input_shape=args.shapes).table(sort_by="self_cpu_time_total", row_limit=args.ops))
    return 0
