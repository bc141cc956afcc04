"""Animate your own recording: `python -m mtk animate speech.wav --out face.mp4` (or .html, .npy).

Uses the trained default MemoryTalker: this machine's run in runs/, else the one shipped with the kit
(mtk/pretrained/, when its recipe is the code's), else trains it first, saying so (`mtk.shipped`); animates the kit's neutral face from the audio alone, and writes

    .npy   the vertices, (T, V, 3) float32 metres at the model's frame rate (30 fps; BIWI models 25)
    .html  an interactive k3d page (drag to rotate, press play)
    .mp4   a rendered video with the sound (H.264 + AAC, through the ffmpeg binary of imageio-ffmpeg)

Any sample rate and channel count is accepted (resampled to 16 kHz mono); clips longer than 20 s are
animated in overlapping windows. What is accepted is checked before any work (`mtk.checks`): an
unreadable, empty, silent, constant or non-finite file, an unknown output type or an unwritable output
folder gets a clear error naming the file. The mp4 has exactly one video frame per animation frame.
"""
from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

import numpy as np

from .checks import check_audio, check_outputs, check_stage
from .data import load_audio

def default_preset() -> str:
    """"smoke" when MTK_SMOKE=1 (as everywhere in the kit), else "default"."""
    from .paths import smoke
    return "smoke" if smoke() else "default"


def trained_model(preset: str | None = None, progress: bool = True, device: str | None = None):
    """The preset's MemoryTalker (both stages), in eval mode: this machine's trained run, else the one shipped
    with the kit if its recipe is the code's, else trained on first use (`mtk.shipped.load_or_train`), on
    `device` (default "auto": a CUDA GPU if torch sees one, else the CPU; `train.resolve_device`)."""
    from . import shipped
    from .train import resolve_device
    device = resolve_device(device or "auto")
    model, _ = shipped.load_or_train(preset or default_preset(), progress=progress, device=device)
    return model.to(device)


def load_checkpoint(path, device: str = "cpu"):
    """A trained MemoryTalker from `path`: a run folder (`runs/<run>/`, whose `model/` is written when both
    stages finish) or a model folder written by `save_pretrained` (config.json, model.safetensors,
    template.npz). It animates on its own template: the face it was trained with. Raises FileNotFoundError
    or ValueError naming the folder and what it holds."""
    import json
    from .model import MemoryTalker
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path}: no such folder; expected a run folder (runs/<run>/) or a model "
                                "folder written by save_pretrained")
    folder = path / "model" if (path / "model" / "config.json").exists() else path
    if not (folder / "config.json").exists():
        held = ""
        if (path / "recipe.json").exists():
            recipe = json.loads((path / "recipe.json").read_text())
            held = f" It is the run of a {recipe.get('class')} ({recipe.get('name')})"
            held += (": its model/ folder is written when both stages finish (run `mtk train` again to resume)."
                     if recipe.get("class") == "MemoryTalker" else
                     "; `--checkpoint` animates MemoryTalker runs (the baselines animate in notebook 04).")
        raise ValueError(f"checkpoint {path}: no trained model (config.json) here or in {path / 'model'}.{held}")
    return MemoryTalker.from_pretrained(folder, device=device)


def animate_file(audio_path, out_paths, preset: str | None = None, stage: int | None = None, model=None,
                 template=None, progress: bool = True, size: int = 480, device: str | None = None,
                 stream=None) -> dict:
    """Animate `audio_path` and write every requested output. Returns {suffix: path} and the frame count.

    Everything the user gave is checked before any dataset generation, training or rendering
    (`mtk.checks`): the outputs' types and folders, the audio file, the stage. preset: "default" or
    "smoke" (default: "smoke" when MTK_SMOKE=1, else "default"); ignored when `model` is given.
    template: default the model's own neutral face. device: where the model runs (and trains, if it must):
    "auto" (default), "cpu", "cuda[:i]" or "mps" (`train.resolve_device`); ignored when `model` is given.
    stream: a `stream.StreamConfig` to animate the file chunk by chunk as if it were live (`mtk.stream`); the
    result then also holds "compute" (seconds per chunk).
    """
    from .train import resolve_device
    audio_path = Path(audio_path)
    outs = check_outputs(out_paths)
    audio = load_audio(audio_path)                                   # (N,) 16 kHz mono, or a clear error
    try:
        check_audio(audio, 16000)
        if stage is not None:
            check_stage(stage, 2 if model is None or model.cfg.use_memory else 1)
    except ValueError as e:
        raise ValueError(f"{audio_path}: {e}") from None
    if model is None:
        device = resolve_device(device or "auto")                    # a wrong device fails here, before any work
        model = trained_model(preset, progress, device)
    template = template if template is not None else model.template
    compute = None
    try:
        if stream is not None:
            from .stream import stream_file
            verts, compute = stream_file(model, audio, stream, template=template,
                                         stage=stage or (2 if model.cfg.use_memory else 1))
        else:
            verts = model.animate(audio, 16000, template, stage=stage)   # (T, V, 3)
    except ValueError as e:
        raise ValueError(f"{audio_path}: {e}") from None
    faces = getattr(template, "faces", None)
    fps = getattr(getattr(model, "cfg", None), "fps", 30)             # the model's mesh frame rate (BIWI: 25)
    written = {}
    for p in outs:
        if p.suffix == ".npy":
            np.save(p, verts.astype(np.float32))
        elif p.suffix == ".html":
            from .viz import k3d_face, k3d_html
            plot = k3d_face(template, verts)
            p.write_text(k3d_html(plot, autoplay=True))           # k3d's viewer inlined: opens offline
        else:
            if faces is None or not len(faces):
                raise ValueError(f"{p}: writing {p.suffix} needs the template's faces; pass a `Template`")
            if p.suffix in (".glb", ".gltf"):                          # glTF 2.0, morph targets (mtk.export)
                from .export import write_gltf
                write_gltf(p, template.vertices, faces, verts, fps=fps)
            elif p.suffix == ".obj":                                   # face.obj -> face_00000.obj, ...
                from .export import write_obj_sequence
                write_obj_sequence(p, verts, faces)
            else:
                write_video(verts, faces, audio, 16000, p, fps=fps, size=size, progress=progress)
        written[p.suffix] = p
    out = {"outputs": written, "frames": len(verts), "seconds": len(audio) / 16000}
    return out if compute is None else {**out, "compute": compute}


def write_video(vertices, faces, audio, sample_rate, path, fps: int = 30, size: int = 480, progress=True):
    """Render frames with `viz.render_frames` and mux the audio: H.264 (yuv420p) + AAC in an mp4."""
    import imageio_ffmpeg
    import soundfile as sf
    from tqdm.auto import tqdm

    from .viz import render_frames
    path = Path(path)
    # the sound track lasts exactly as long as the frames: T / fps seconds, padded with silence or trimmed
    # (a clip that is not a whole number of frames would otherwise make `-shortest` drop the last frame)
    n = int(round(len(vertices) * sample_rate / fps))
    audio = np.pad(np.asarray(audio, np.float32), (0, max(0, n - len(audio))))[:n]
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "audio.wav"
        sf.write(wav, np.clip(audio, -1, 1), sample_rate, subtype="PCM_16")
        if np.abs(audio).max() > 1:
            import warnings
            warnings.warn(f"{path}: audio peak {np.abs(audio).max():.2f} > 1 was clipped in the video's sound track",
                          stacklevel=2)
        writer = imageio_ffmpeg.write_frames(str(path), (size, size), fps=fps, codec="libx264",
                                             pix_fmt_in="rgb24", pix_fmt_out="yuv420p", quality=7,
                                             audio_path=str(wav), audio_codec="aac", macro_block_size=16)
        writer.send(None)
        bar = tqdm(total=len(vertices), desc="rendering", disable=not progress)   # not handed the frames: `train.fit`
        for frame in render_frames(vertices, faces, size=size):
            writer.send(frame)
            bar.update(1)
        bar.close()
        writer.close()
    return path


def probe(path) -> dict:
    """Frames, duration and whether an mp4 has an audio stream (ffmpeg's own report)."""
    import imageio_ffmpeg
    frames, secs = imageio_ffmpeg.count_frames_and_secs(str(path))
    res = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path)],
                         capture_output=True, text=True)
    return {"frames": frames, "seconds": secs, "has_audio": "Audio:" in res.stderr,
            "has_video": "Video:" in res.stderr}
