"""Benchmarks: `python -m mtk.bench <command> [options]`.

Each sub-command is a function `fn(argv) -> exit code` registered in
`COMMANDS`; it parses its own options, so adding one (e.g. `inference`) is
one function and one dict entry.

    python -m mtk.bench metrics            # evaluate() on a VOCA-sized test set
    python -m mtk.bench inference          # frames per second and real-time factor on a 10 s clip, per method
    python -m mtk.bench train              # training steps/s per method and stage, speed-ups on vs off
    python -m mtk.bench profile memorytalker 1   # where one training epoch spends its time
    python -m mtk.bench paper              # seconds per step of the paper recipe (HuBERT-base) on a CPU
    python -m mtk.bench whisper            # a stage-1 epoch on Whisper tiny.en, frozen vs fine-tuned
    python -m mtk.bench stream             # streaming: compute per chunk, latency, FVE cost per look-ahead
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Callable, Sequence

import numpy as np

# constants

FPS = 30
N_VERTICES = 5023  # FLAME topology
N_TEST_SEQS = 40
N_TRAIN_SEQS = 40
N_FRAMES = 150  # 5 s at 30 fps
N_LIPS, N_UPPER, N_LOWER = 250, 827, 1500  # FLAME lips (250 unique), forehead+eyes, lower face
METRICS_TARGET_S = 5.0


# synthetic VOCA-like data


def _face_template(rng: np.random.Generator) -> np.ndarray:
    """A head-sized ellipsoid of N_VERTICES points, (V, 3), metres."""
    u = rng.normal(size=(N_VERTICES, 3))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    return u * np.array([0.075, 0.10, 0.09])  # semi-axes x (width), y (height), z (depth)


def _face_masks(template: np.ndarray) -> dict[str, np.ndarray]:
    """Lips, upper face and lower face index sets on the front of the head."""
    front = np.flatnonzero(template[:, 2] > 0.02)  # facing the camera (+z)
    mouth = np.array([0.0, -0.045, 0.08])
    by_mouth = np.argsort(np.linalg.norm(template - mouth, axis=1))
    lips = by_mouth[:N_LIPS]
    lips = np.sort(np.concatenate([lips, lips[:4]]))  # 254 entries, 250 unique, like FLAME `lips`
    by_height = front[np.argsort(template[front, 1])]  # low to high
    upper, lower = np.sort(by_height[-N_UPPER:]), np.sort(by_height[:N_LOWER])
    return {"lips": lips, "upper_face": upper, "lower_face": lower}


def _motion_basis(rng: np.random.Generator, template: np.ndarray, n_basis: int = 40) -> np.ndarray:
    """Smooth spatial displacement fields, (n_basis, V, 3), peaks <= 3 mm.

    Gaussian bumps (2-3 cm wide) around front vertices, 3/4 of them on the
    lower face, each moving its neighbourhood along one direction, with
    gains decaying like a PCA spectrum; the upper face moves less.
    """
    front = np.flatnonzero(template[:, 2] > 0.02)
    low = front[template[front, 1] < -0.02]
    high = front[template[front, 1] > 0.02]
    basis = np.empty((n_basis, len(template), 3))
    for b in range(n_basis):
        on_lower = b % 4 != 3
        centre = template[rng.choice(low if on_lower else high)]
        width = rng.uniform(0.02, 0.03)
        weight = np.exp(-np.sum((template - centre) ** 2, axis=1) / (2 * width**2))  # (V,)
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        gain = (1.0 if on_lower else 0.2) / (1 + b / 8)
        basis[b] = gain * 3e-3 * weight[:, None] * direction  # (V, 3)
    return basis


def _smooth_curves(rng: np.random.Generator, n_frames: int, n_curves: int) -> np.ndarray:
    """Sums of random 0.5-5 Hz sinusoids, (T, n_curves), unit-scale."""
    t = np.arange(n_frames)[:, None, None] / FPS  # (T, 1, 1)
    freq = rng.uniform(0.5, 5.0, size=(1, n_curves, 4))
    phase = rng.uniform(0, 2 * np.pi, size=(1, n_curves, 4))
    amp = rng.uniform(0.5, 1.5, size=(1, n_curves, 4))
    return (amp * np.sin(2 * np.pi * freq * t + phase)).sum(axis=2) / 2  # (T, n_curves)


def make_metrics_data(seed: int = 0) -> dict:
    """Seeded VOCA-sized data: test preds/gts, train gts, templates, masks.

    40 test and 40 training sequences of 150 frames over 5,023 vertices,
    float32 like network outputs, with smooth millimetre-scale motion
    (40 Gaussian-bump fields driven by 0.5-5 Hz curves); 8 subjects with
    their own templates.  Predictions are the ground truth delayed by 1-2
    frames, damped to 85 %, plus smooth noise at 30 % of the motion scale;
    every 5th is one frame longer than its ground truth.
    """
    rng = np.random.default_rng(seed)
    base = _face_template(rng)
    masks = _face_masks(base)
    basis = _motion_basis(rng, base)  # (n_basis, V, 3)
    n_basis = len(basis)
    subjects = [base * rng.uniform(0.95, 1.05, size=3) for _ in range(8)]  # (V, 3) each

    def sequence(coef: np.ndarray, template: np.ndarray) -> np.ndarray:
        disp = coef @ basis.reshape(n_basis, -1)  # (T, V*3)
        return (template.reshape(1, -1) + disp).astype(np.float32).reshape(len(coef), -1, 3)  # (T, V, 3)

    def split(n_seqs: int, with_preds: bool):
        gts, preds, tmpls = [], [], []
        for k in range(n_seqs):
            template = subjects[k % len(subjects)]
            coef = _smooth_curves(rng, N_FRAMES + 3, n_basis)  # (T+3, n_basis)
            gts.append(sequence(coef[3:], template))
            tmpls.append(template.astype(np.float32))
            if with_preds:
                lag = 1 + k % 2
                extra = 1 if k % 5 == 0 else 0
                noise = 0.3 * _smooth_curves(rng, N_FRAMES + extra, n_basis)
                pred_coef = 0.85 * coef[3 - lag : 3 - lag + N_FRAMES + extra] + noise
                preds.append(sequence(pred_coef, template))
        return gts, preds, tmpls

    train_gts, _, train_tmpls = split(N_TRAIN_SEQS, with_preds=False)
    gts, preds, tmpls = split(N_TEST_SEQS, with_preds=True)
    return {
        "preds": preds,
        "gts": gts,
        "templates": tmpls,
        "train_gts": train_gts,
        "train_templates": train_tmpls,
        "masks": masks,
    }


# sub-commands


def bench_metrics(argv: Sequence[str] = ()) -> int:
    """Time `mtk.metrics.evaluate` (all metrics, DTW and FID included)."""
    parser = argparse.ArgumentParser(
        prog="python -m mtk.bench metrics",
        description=f"Time evaluate() on {N_TEST_SEQS} seqs x {N_FRAMES} frames x {N_VERTICES} vertices.",
    )
    parser.add_argument("--seed", type=int, default=0, help="data seed (default 0)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs after one warm-up; best is kept")
    args = parser.parse_args(list(argv))

    from mtk import metrics

    t0 = time.perf_counter()
    data = make_metrics_data(args.seed)
    masks = data["masks"]
    t1 = time.perf_counter()
    extractor = metrics.MotionFeatureExtractor.fit(
        data["train_gts"], data["train_templates"], masks["lower_face"]
    )
    t2 = time.perf_counter()
    print(
        f"data: {N_TEST_SEQS} test + {N_TRAIN_SEQS} train seqs x {N_FRAMES} frames x {N_VERTICES} vertices "
        f"(lips {len(masks['lips'])}, upper {len(masks['upper_face'])}, lower {len(masks['lower_face'])}), "
        f"built in {t1 - t0:.2f} s"
    )
    print(f"extractor fitted in {t2 - t1:.2f} s: {extractor.describe()}")

    def run():
        return metrics.evaluate(
            data["preds"], data["gts"], {"lips": masks["lips"], "upper_face": masks["upper_face"]},
            templates=data["templates"], extractor=extractor,
        )

    result = run()  # warm-up
    times = []
    for _ in range(max(1, args.repeats)):
        start = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - start)
    best = min(times)
    print(result.to_markdown())
    ok = best < METRICS_TARGET_S
    print(
        f"evaluate: best of {len(times)} = {best:.3f} s (runs {', '.join(f'{t:.3f}' for t in times)}); "
        f"target < {METRICS_TARGET_S:g} s on 2 cores ({os.cpu_count()} here): {'OK' if ok else 'TOO SLOW'}"
    )
    return 0 if ok else 1


INFERENCE_TARGET_SPEEDUP = 100.0      # MemoryTalker default: at least 100x faster than real time on 2 cores


def _inference_models(which: Sequence[str], V3: int, n_train: int) -> dict:
    """Default-size models with the kit's default audio encoder architecture (random weights: speed does not
    depend on them), keyed by method name."""
    import importlib

    from mtk.audio import AudioConfig
    from mtk.model import MemoryTalker, ModelConfig

    class _Stub:                       # what from_dataset needs from a dataset
        def __init__(self, template):
            self.template = template
            self.train_subjects = [f"S{i}" for i in range(n_train)]

        def style(self, subject):
            return np.zeros(107, np.float32)

        meta = {"key": "bench-stub"}                   # UniTalker caches its PCA by the dataset's key

        def sequences(self, *a, **k):              # a few random clips: UniTalker fits its PCA head on them
            rng = np.random.default_rng(0)
            tpl = self.template

            class _Clip:
                template = tpl

                def __init__(self):
                    self._v = tpl.vertices[None] + 1e-3 * rng.standard_normal((30, tpl.V, 3)).astype(np.float32)

                def vertices(self):
                    return self._v
            return [_Clip() for _ in range(4)]

    from mtk.synthvoca.template import Template
    stub = _Stub(Template.procedural("default"))
    models = {}
    for name in which:
        if name == "memorytalker":
            models[name] = MemoryTalker(ModelConfig.default(V3), stub.template.mask("lips"))
            continue
        mod = importlib.import_module(f"mtk.baselines.{name}")
        cfg_cls = next(v for k, v in vars(mod).items() if k.endswith("Config") and k.lower().startswith(name))
        model_cls = next(v for k, v in vars(mod).items() if k.lower() == name)
        cfg = cfg_cls.default(V3, audio=AudioConfig.default())
        models[name] = model_cls.from_dataset(cfg, stub)
    return models


def bench_inference(argv: Sequence[str] = ()) -> int:
    """Frames generated per second and real-time factor of each method on a 10-second clip (CPU)."""
    parser = argparse.ArgumentParser(prog="python -m mtk.bench inference",
                                     description="Inference speed per method on a 10 s clip.")
    parser.add_argument("--seconds", type=float, default=10.0, help="clip length (default 10)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs after one warm-up; best is kept")
    parser.add_argument("--methods", nargs="*", default=["memorytalker", "faceformer", "codetalker", "selftalk",
                                                          "imitator", "scantalk", "unitalker"])
    args = parser.parse_args(list(argv))

    import torch

    from mtk.synthvoca.corpus import SENTENCES
    from mtk.synthvoca.speech import synthesize
    from mtk.synthvoca.template import Template

    audio = np.zeros(0, np.float32)
    i = 0
    while len(audio) < args.seconds * 16000:
        audio = np.concatenate([audio, synthesize(SENTENCES[i]).audio])
        i += 1
    audio = audio[: int(args.seconds * 16000)]
    T = int(args.seconds * 30)
    template = Template.procedural("default")
    V3 = template.V * 3
    print(f"clip: {args.seconds:g} s of espeak-ng speech -> {T} frames; template V = {template.V}; "
          f"torch threads {torch.get_num_threads()}")
    models = _inference_models(args.methods, V3, 8)
    batch = {"audio": torch.from_numpy(audio)[None], "audio_mask": torch.ones(1, len(audio), dtype=torch.bool),
             "n_frames": torch.tensor([T]), "frame_mask": torch.ones(1, T, dtype=torch.bool),
             "template": torch.from_numpy(template.vertices.reshape(1, -1).copy()),
             "vertices": torch.zeros(1, T, V3), "speaker": torch.tensor([-1]), "one_hot": torch.zeros(1, 8),
             "phonemes": torch.full((1, T), -1), "subject": ["bench"], "sentence": [0], "name": ["bench"],
             "style": torch.zeros(1, 107)}
    rows, status = [], 0
    for name, model in models.items():
        model.eval()
        stage = getattr(model, "n_stages", 1)

        def run():
            with torch.no_grad():
                if name == "memorytalker":
                    return model.animate(audio, 16000, template, stage=2)
                return model.predict_batch(batch, stage=stage)

        run()
        times = []
        for _ in range(max(1, args.repeats)):
            t0 = time.perf_counter()
            run()
            times.append(time.perf_counter() - t0)
        best = min(times)
        speedup = args.seconds / best
        rows.append((name, T / best, best / args.seconds, speedup))
        print(f"{name:14s} {T / best:8.0f} frames/s   real-time factor {best / args.seconds:.4f}   "
              f"{speedup:6.1f}x faster than real time   ({best:.3f} s)", flush=True)
        if name == "memorytalker" and speedup < INFERENCE_TARGET_SPEEDUP:
            status = 1
    mt = next((r for r in rows if r[0] == "memorytalker"), None)
    if mt is not None:
        print(f"MemoryTalker default: {mt[3]:.0f}x real time (target >= {INFERENCE_TARGET_SPEEDUP:g}x on 2 cores, "
              f"{os.cpu_count()} here): {'OK' if mt[3] >= INFERENCE_TARGET_SPEEDUP else 'TOO SLOW'}")
    return status


def bench_train(argv: Sequence[str] = ()) -> int:
    from .bench_train import bench_train as run
    return run(argv)


def bench_whisper(argv: Sequence[str] = ()) -> int:
    from .bench_train import bench_whisper as run
    return run(argv)


def bench_profile(argv: Sequence[str] = ()) -> int:
    from .bench_train import bench_profile as run
    return run(argv)


def bench_paper(argv: Sequence[str] = ()) -> int:
    """Seconds per training step of the `paper` MemoryTalker (HuBERT-base, batch 1) on a FLAME-sized mesh and a
    VOCASET-length clip (4.3 s), stage 1 and stage 2, with random weights (speed does not depend on them), and
    what that makes an epoch of VOCASET's 314 training clips and the released 100 + 100 epochs."""
    import torch
    from dataclasses import replace

    from mtk.audio import AudioConfig
    from mtk.data import FaceDataset, Sequence as Clip, collate
    from mtk.model import MemoryTalker, ModelConfig
    from mtk.synthvoca.template import Template
    from mtk.train import TrainConfig, trainable_only
    p = argparse.ArgumentParser(prog="python -m mtk.bench paper", description=bench_paper.__doc__)
    p.add_argument("--steps", type=int, default=3, help="timed steps per stage, after one warm-up step")
    p.add_argument("--seconds", type=float, default=4.3, help="clip length (VOCASET's mean: 4.3 s)")
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    verts = _face_template(rng).astype(np.float32)
    masks = _face_masks(verts)
    template = Template("bench-flame", verts, np.zeros((0, 3), np.int32), masks, {})
    T = int(args.seconds * FPS)
    motion = (verts[None] + 1e-3 * rng.standard_normal((T, N_VERTICES, 3))).astype(np.float32)
    audio = (0.1 * rng.standard_normal(int(args.seconds * 16000))).astype(np.float32)
    clip = Clip("bench", "S0", 1, "train", 0, template, lambda: audio, lambda: motion)
    batch = collate([FaceDataset([clip], 8)[0]])
    torch.manual_seed(0)
    cfg = ModelConfig.paper(N_VERTICES * 3, audio=replace(AudioConfig.paper(), pretrained=None))
    model = MemoryTalker(cfg, masks["lips"], template=template).train()
    print(f"paper MemoryTalker: {sum(q.numel() for q in model.parameters()) / 1e6:.1f} M parameters, "
          f"{N_VERTICES} vertices, a {args.seconds} s clip ({T} frames), batch 1, {torch.get_num_threads()} threads")
    per_step = {}
    for stage, cold in ((1, True), (1, False), (2, False)):
        tc = TrainConfig.paper(stage)
        params = model.stage_parameters(stage)
        opt = torch.optim.Adam(params, lr=tc.lr)
        times = []
        with trainable_only(model, params):                        # as `train.fit`: only this stage's weights
            for i in range(args.steps + 1):
                if cold:                                           # a clip's first epoch: its CNN features computed
                    model.audio_encoder._cache.clear()
                t = time.perf_counter()
                out = model(dict(batch, in_batch_triplets=False), stage=stage)
                opt.zero_grad(set_to_none=True)
                out["loss"].backward()
                opt.step()
                if i:
                    times.append(time.perf_counter() - t)
        per_step[stage, cold] = float(np.median(times))
        print(f"stage {stage}, {'first epoch (CNN features computed)' if cold else 'later epochs (CNN features cached)'}: "
              f"{per_step[stage, cold]:.2f} s per step (median of {args.steps})")
    e1 = 314 * per_step[1, True] + 99 * 314 * per_step[1, False]
    e2 = 100 * 314 * per_step[2, False]
    print(f"one VOCASET epoch (314 clips): stage 1 {314 * per_step[1, True] / 60:.0f} min (first), "
          f"{314 * per_step[1, False] / 60:.0f} min (later); stage 2 {314 * per_step[2, False] / 60:.0f} min; "
          f"100 + 100 epochs: {(e1 + e2) / 3600:.0f} h on this machine")
    return 0


def bench_stream(argv: Sequence[str] = ()) -> int:
    """Streaming animation (`mtk.stream`) with the default MemoryTalker: for each look-ahead, the compute per
    chunk on this machine, the latency from a sound to its frame, and the FVE of the streamed frames beside
    whole-clip animation on the unseen test speakers' evaluation clips."""
    p = argparse.ArgumentParser(prog="python -m mtk.bench stream")
    p.add_argument("--lookahead", type=float, nargs="+", default=[0, 50, 100, 200], help="look-aheads (ms)")
    p.add_argument("--chunk", type=float, default=1000 / 30, help="chunk length (ms; default one frame)")
    p.add_argument("--context", type=float, default=2.0, help="seconds of past speech in the window")
    p.add_argument("--clips", type=int, default=40, help="test clips to score (default all 40)")
    p.add_argument("--preset", default="default", choices=["smoke", "default"])
    args = p.parse_args(argv)
    import torch

    from . import metrics, shipped
    from .data import load_dataset
    from .stream import StreamConfig, stream_file
    model, _ = shipped.load_or_train(args.preset, progress=False)
    ds = load_dataset(args.preset, progress=False)
    clips = ds.sequences("test")[: args.clips]
    masks = {"lips": ds.template.mask("lips"), "upper_face": ds.template.mask("upper_face")}
    gts = [c.vertices() for c in clips]
    whole = [model.animate(c.audio(), 16000, c.template) for c in clips]
    base = metrics.evaluate(whole, gts, masks).paper_units()
    seconds = sum(len(c.audio()) for c in clips) / 16000
    print(f"{len(clips)} test clips ({seconds:.0f} s), {torch.get_num_threads()} threads, chunk {args.chunk:.0f} ms, "
          f"context {args.context:g} s; whole-clip animation: FVE {base['fve']:.3f}, LVE {base['lve']:.3f}")
    print("| look-ahead (ms) | compute per chunk, median / 95th pct (ms) | latency (ms) | real-time factor | "
          "FVE (x1e-6) | LVE (x1e-5) | FVE cost |")
    print("|---|---|---|---|---|---|---|")
    for la in args.lookahead:
        cfg = StreamConfig(chunk=args.chunk / 1000, lookahead=la / 1000, context=args.context)
        preds, compute = [], []
        for c in clips:
            v, t = stream_file(model, c.audio(), cfg, template=c.template)
            preds.append(v)
            compute += t
        res = metrics.evaluate(preds, gts, masks).paper_units()
        ms = 1000 * np.asarray(compute)
        p95 = float(np.percentile(ms, 95))
        print(f"| {la:.0f} | {np.median(ms):.1f} / {p95:.1f} | {la + args.chunk + p95:.0f} | "
              f"{np.mean(ms) / args.chunk:.2f} | {res['fve']:.3f} | {res['lve']:.3f} | {res['fve'] - base['fve']:+.3f} |")
    print("latency = look-ahead + one chunk + the 95th-percentile compute of a chunk; real-time factor = mean compute "
          "per chunk / chunk length (below 1 keeps up with live speech)")
    return 0


COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "metrics": bench_metrics,
    "inference": bench_inference,
    "train": bench_train,
    "profile": bench_profile,
    "paper": bench_paper,
    "whisper": bench_whisper,
    "stream": bench_stream,
}


def main(argv: Sequence[str] | None = None) -> int:
    available = ", ".join(sorted(COMMANDS))
    parser = argparse.ArgumentParser(
        prog="python -m mtk.bench",
        description="mtk benchmarks",
        epilog=f"available sub-commands: {available}; '<command> --help' shows its options",
    )
    parser.add_argument("command", nargs="?", help=f"sub-command, one of: {available}")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="options of the sub-command")
    args = parser.parse_args(argv)
    if args.command is None:
        parser.error(f"missing sub-command; available: {available}")
    if args.command not in COMMANDS:
        parser.error(f"unknown sub-command {args.command!r}; available: {available}")
    return COMMANDS[args.command](args.args)


if __name__ == "__main__":
    raise SystemExit(main())
