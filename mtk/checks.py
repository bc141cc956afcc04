"""What `animate` accepts, checked before any work starts (no dataset generation, training or rendering).

    sample rate   an integer-valued number of Hz, at least 4,000 (a rate typed in kHz, e.g. 16, is an error)
    audio         (N,) or (N, channels) samples, samples along the first axis; finite; at least 0.1 s; not
                  silent or constant (judged by the energy of the signal around its mean, not by the peak);
                  very quiet audio (RMS below -60 dBFS) gets a warning
    template      (V, 3) or (V*3,) finite vertices in metres, V matching the model; a (3, V) array is an error
    stage         1 or 2 (2 only for models with a memory)
    outputs       .mp4, .html or .npy paths whose folders can be written

Every error is a ValueError that names the value and what was expected; the caller adds the file name.
"""
from __future__ import annotations

import numbers
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np

MIN_SAMPLE_RATE = 4000
MIN_SECONDS = 0.1
SILENT_RMS = 1e-4           # -80 dBFS: digital silence, a DC offset, or dither only
QUIET_RMS = 1e-3            # -60 dBFS: speech is usually -40 to -20 dBFS
OUTPUT_SUFFIXES = (".mp4", ".html", ".npy", ".glb", ".gltf", ".obj")


def check_sample_rate(sample_rate) -> int:
    """An integer-valued number of Hz >= 4,000 (bool and kHz values are rejected) -> int."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, numbers.Real) \
            or not float(sample_rate).is_integer():
        raise ValueError(f"sample_rate {sample_rate!r}: expected a whole number of Hz, e.g. 16000")
    sr = int(sample_rate)
    if sr < MIN_SAMPLE_RATE:
        hint = f" (did you give kHz? {sr} kHz is {sr * 1000})" if 0 < sr < 200 else ""
        raise ValueError(f"sample_rate {sr} Hz: expected at least {MIN_SAMPLE_RATE} Hz{hint}")
    return sr


def check_audio(audio, sample_rate) -> np.ndarray:
    """Validate audio for inference -> float32 (N,) or (N, channels). See the module docstring."""
    import torch
    sr = check_sample_rate(sample_rate)
    x = np.asarray(audio.detach().cpu() if torch.is_tensor(audio) else audio)
    if not (np.issubdtype(x.dtype, np.number) and not np.iscomplexobj(x)) and x.dtype != bool:
        raise ValueError(f"audio has dtype {x.dtype}: expected real-valued samples")
    x = x.astype(np.float32)
    if x.ndim not in (1, 2):
        raise ValueError(f"audio has shape {x.shape}: expected (N,) or (N, channels)")
    if x.ndim == 2 and x.shape[1] > x.shape[0]:
        raise ValueError(f"audio has shape {x.shape}: expected (N, channels) with the samples along the first "
                         f"axis; this looks channels-first ({x.shape[0]} channels of {x.shape[1]} samples): pass "
                         "its transpose")
    if x.size == 0:
        raise ValueError(f"audio is empty: expected at least {MIN_SECONDS} s of speech")
    if not np.isfinite(x).all():
        raise ValueError(f"audio has {int((~np.isfinite(x)).sum())} non-finite samples (NaN or inf): "
                         "expected finite values")
    n = x.shape[0]
    if n / sr < MIN_SECONDS:
        raise ValueError(f"audio is {n / sr * 1000:.0f} ms long: expected at least {MIN_SECONDS * 1000:.0f} ms")
    mono = x if x.ndim == 1 else x.mean(1)
    ac = mono.astype(np.float64) - mono.mean()
    rms = float(np.sqrt(np.mean(ac ** 2)))
    db = 20 * np.log10(max(rms, 1e-12))
    if rms < SILENT_RMS:
        what = f"constant at {mono.mean():+.3f} (a DC offset, no signal)" if abs(mono.mean()) > SILENT_RMS \
            else "silent"
        raise ValueError(f"audio is {what}: RMS around its mean {db:.0f} dBFS (peak {np.abs(mono).max():.1e}), "
                         f"expected speech above {20 * np.log10(SILENT_RMS):.0f} dBFS")
    if rms < QUIET_RMS:
        warnings.warn(f"audio is very quiet (RMS {db:.0f} dBFS; speech is usually -40 to -20 dBFS). It is "
                      "normalised per clip and will be animated, but check that it holds speech, not only noise",
                      stacklevel=3)
    if np.abs(x).max() > 1.0 + 1e-6:
        warnings.warn(f"audio peak amplitude {np.abs(x).max():.2f} > 1: the waveform is normalised per clip, "
                      "so this is fine, but check that it is float audio in [-1, 1]", stacklevel=3)
    return x


def check_template(template, vertex_dim: int) -> np.ndarray:
    """(V, 3), (V*3,) or a `Template` with V*3 == vertex_dim, finite, in metres -> (V*3,) float32."""
    t = np.asarray(getattr(template, "vertices", template))
    V = vertex_dim // 3
    if not np.issubdtype(t.dtype, np.number):
        raise ValueError(f"template has dtype {t.dtype}: expected float vertices")
    if t.shape == (3, V) and V != 3:
        raise ValueError(f"template has shape {t.shape}: expected ({V}, 3), one row per vertex; this is its "
                         "transpose (pass template.T)")
    if t.shape not in ((V, 3), (vertex_dim,)):
        raise ValueError(f"template has shape {t.shape}: expected ({V}, 3) or ({vertex_dim},) for this model "
                         f"(it animates {V} vertices)")
    t = t.astype(np.float32).reshape(-1)
    if not np.isfinite(t).all():
        raise ValueError(f"template has {int((~np.isfinite(t)).sum())} non-finite coordinates (NaN or inf): "
                         "expected finite vertices in metres")
    extent = float(np.ptp(t.reshape(-1, 3), axis=0).max())
    if extent > 10:
        raise ValueError(f"template spans {extent:.0f} units: expected metres (a head is about 0.2 m); "
                         "millimetres? divide by 1000")
    if extent == 0:
        raise ValueError("template has all vertices at one point: expected a face mesh")
    return t


def check_stage(stage, n_stages: int) -> int:
    if isinstance(stage, bool) or stage not in range(1, n_stages + 1):
        raise ValueError(f"stage {stage!r}: expected " + ("1 or 2" if n_stages == 2 else "1 (this model has one "
                                                                                            "stage: no memory)"))
    return int(stage)


def check_outputs(paths, suffixes=OUTPUT_SUFFIXES) -> list[Path]:
    """Each output has a known suffix and a folder that can be created and written, checked by writing a
    temporary file there (permission bits alone say nothing for root)."""
    outs = [Path(p) for p in ([paths] if isinstance(paths, (str, os.PathLike)) else paths)]
    if not outs:
        raise ValueError(f"no output given: expected at least one path ending in {', '.join(suffixes)}")
    for p in outs:
        if p.suffix not in suffixes:
            raise ValueError(f"{p}: unsupported output type {p.suffix!r}; expected one of {suffixes}")
        if p.is_dir():
            raise ValueError(f"{p}: is a folder; expected a file path ending in {p.suffix}")
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=p.parent, prefix=".mtk-write-check-"):
                pass
        except OSError as e:
            raise ValueError(f"{p}: cannot write here ({e.strerror or e}); choose another output folder") from None
    return outs
