"""Mouth checks on speech the kit did not synthesise: does the mouth follow the voice, rest near closed in
pauses and close on /p b m/?

SynthVOCA's speech comes from espeak-ng, a formant synthesiser; users animate recordings. The clips shipped
in `mtk/voices/` (read by `clips()`) are English sentences rich in bilabials, spoken by two Festival voices
built from recordings of real speakers: an HTS statistical-parametric voice (CMU ARCTIC's SLT, female) and a
diphone-concatenation voice (KAL, male); see `mtk/voices/README.md` for their licences and how to regenerate
them. Festival gives each clip's phone timings, so the checks know when the lips must close.

Per clip, with the lip gap g(t) = y(upper-lip midpoint) - y(lower-lip midpoint) (`viz.mouth_opening`; the
neutral face's own gap included, 0 when the lips meet) and frame t at time t / fps:

    energy_corr       Pearson correlation of g(t) with the speech's RMS amplitude over frame t's interval
                      [t / fps, (t + 1) / fps): the mouth opens when the voice is loud (real talkers show
                      positive correlations of mouth area with the acoustic envelope: Chandrasekaran et al.
                      2009, "The natural statistics of audiovisual speech")
    pause_gap_mm      median g over the frames inside pauses (lips at rest)
    bilabial_gap_mm   mean over /p b m/ tokens of the smallest g among the frames overlapping the token
                      (a bilabial is a closure: 0 when the lips meet at some point of it)
    neutral_gap_mm    the template's own gap (the face at rest, before any motion)

The same checks apply to SynthVOCA clips (`sequence_checks`), ground truth or predicted, so a model's numbers
on real speech can be read against its numbers, and the data's, on the speech it was trained on.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .synthvoca.articulation import PAUSES as ESPEAK_PAUSES, strip_stress
from .viz import mouth_opening

VOICES_DIR = Path(__file__).parent / "voices"
PAUSES = frozenset({"pau", "sil", "sp"}) | ESPEAK_PAUSES         # Festival's, common aligners', espeak-ng's
BILABIALS = frozenset({"p", "b", "m"})                            # the same symbols in Festival and espeak-ng
CHECKS = ("energy_corr", "pause_gap_mm", "bilabial_gap_mm")


@dataclass
class Clip:
    name: str
    voice: str
    text: str
    audio: np.ndarray                          # (N,) float at `sample_rate`
    sample_rate: int
    phones: list[tuple[float, float, str]]     # (start s, end s, phone), contiguous from 0


def clips(folder: str | Path = VOICES_DIR) -> list[Clip]:
    """The clips of a voices folder: clips.json (name, voice, text, phones per clip) and <name>.wav beside it."""
    from .data import load_audio
    folder = Path(folder)
    index = folder / "clips.json"
    if not index.exists():
        raise FileNotFoundError(f"{index}: no such file; expected a clips.json listing the folder's clips")
    meta = json.loads(index.read_text())
    out = []
    for c in meta["clips"]:
        phones = [(float(a), float(b), str(p)) for a, b, p in c["phones"]]
        bad = [p for p in phones if not p[0] <= p[1]]
        if bad:
            raise ValueError(f"{index}: clip {c['name']!r} has phones ending before they start: {bad[:3]}")
        out.append(Clip(c["name"], c["voice"], c["text"], load_audio(folder / f"{c['name']}.wav"), 16000, phones))
    return out


def frame_rms(audio: np.ndarray, sample_rate: int, n_frames: int, fps: int = 30) -> np.ndarray:
    """(T,) RMS amplitude of the samples in each frame's interval [t / fps, (t + 1) / fps) (0 past the end)."""
    x = np.asarray(audio, dtype=np.float64).reshape(-1)
    edges = np.round(np.arange(n_frames + 1) * sample_rate / fps).astype(int)
    out = np.zeros(n_frames)
    for t in range(n_frames):
        seg = x[edges[t]:edges[t + 1]]
        out[t] = np.sqrt(np.mean(seg ** 2)) if len(seg) else 0.0
    return out


def _frames_in(phones, n_frames: int, fps: int, names) -> tuple[np.ndarray, list[np.ndarray]]:
    """(frames whose time t / fps lies inside a phone in `names`, per token the frames overlapping it)."""
    times = np.arange(n_frames) / fps
    inside = np.zeros(n_frames, bool)
    tokens = []
    for a, b, name in phones:
        if strip_stress(name)[0] not in names:
            continue
        inside |= (times >= a) & (times < b)
        overlap = np.flatnonzero((times < b) & (times + 1 / fps > a))     # frame interval meets [a, b)
        if len(overlap):
            tokens.append(overlap)
    return inside, tokens


def mouth_checks(vertices, template, audio, sample_rate: int, phones, fps: int = 30) -> dict:
    """The module's checks for one animation: vertices (T, V, 3) or (T, V*3) in metres, `template` a `Template`
    (its lip landmarks), the audio it was made from, `phones` [(start s, end s, name), ...].
    -> {"energy_corr", "pause_gap_mm", "bilabial_gap_mm", "neutral_gap_mm", "pause_frames", "bilabials",
    "gap_mm" (T,), "rms" (T,)}; a check with nothing to measure (no pause frames, no bilabial) is NaN."""
    gap = mouth_opening(vertices, template)                                     # (T,) metres
    T = len(gap)
    rms = frame_rms(audio, sample_rate, T, fps)
    pause, _ = _frames_in(phones, T, fps, PAUSES)
    _, bilabials = _frames_in(phones, T, fps, BILABIALS)
    corr = float(np.corrcoef(gap, rms)[0, 1]) if gap.std() > 0 and rms.std() > 0 else float("nan")
    neutral = np.asarray(template.vertices)
    return {
        "energy_corr": corr,
        "pause_gap_mm": float(np.median(gap[pause]) * 1000) if pause.any() else float("nan"),
        "bilabial_gap_mm": float(np.mean([gap[f].min() for f in bilabials]) * 1000) if bilabials else float("nan"),
        "neutral_gap_mm": float((neutral[template.landmarks["upper_lip_mid"], 1]
                                 - neutral[template.landmarks["lower_lip_mid"], 1]) * 1000),
        "pause_frames": int(pause.sum()),
        "bilabials": len(bilabials),
        "gap_mm": gap * 1000,
        "rms": rms,
    }


def clip_checks(model, clip: Clip, stage: int | None = None) -> dict:
    """`mouth_checks` of `model` animating `clip` on its own template; adds "vertices" (T, V, 3)."""
    verts = model.animate(clip.audio, clip.sample_rate, stage=stage)
    return {**mouth_checks(verts, model.template, clip.audio, clip.sample_rate, clip.phones), "vertices": verts}


def sequence_checks(seq, vertices=None) -> dict:
    """`mouth_checks` on a SynthVOCA clip: its ground truth (vertices None) or a prediction for it, on the
    clip's own template, with its espeak-ng phone timings."""
    if not seq.phoneme_intervals:
        raise ValueError(f"{seq.name}: no phone timings (SynthVOCA clips have them; VOCASET's do not)")
    verts = seq.vertices() if vertices is None else vertices
    return mouth_checks(verts, seq.template, seq.audio(), 16000, seq.phoneme_intervals)


def summary(rows: list[dict]) -> dict:
    """Mean of each check over clips (NaNs skipped)."""
    return {k: float(np.nanmean([r[k] for r in rows])) for k in (*CHECKS, "neutral_gap_mm")}
