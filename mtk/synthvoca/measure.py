"""Measurements of a SynthVOCA dataset that need no model: how audible each speaker's style is from the
audio alone (`style_audibility`), what the motion is made of (`motion_report`) and the lip shapes each
viseme makes (`lip_shapes`) and how a style factor reaches each viseme (`effort_response`). Notebook 01 reports
both; the generator (`generator.py`) never imports this module."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from . import articulation as art
from .articulation import BASIS, PAUSES, VISEMES, viseme_segments
from .corpus import SENTENCES
from .generator import (AUDIBLE_FACTORS, CAPTURE_FPS, SynthConfig, articulate, load_speakers, make_speakers, speak,
                        speaker_template)
from .template import Template


# --------------------------------------------------------------------------- how audible is style?
def audio_features(x: np.ndarray, sr: int = 16000) -> np.ndarray:
    """A few plain acoustic features of one utterance (no learning), for `style_audibility`.

    [RMS level dB, spectral tilt dB (2-5 kHz vs 0.1-1 kHz), log mean spectral
    centroid, 8 band log-energies relative to their mean], over voiced frames.
    """
    from scipy.signal import stft
    f, _, Z = stft(x, sr, nperseg=512, noverlap=352)
    P = np.abs(Z) ** 2 + 1e-10                                          # (F, frames)
    e = P.sum(0)
    voiced = e > 0.1 * np.median(e[e >= np.percentile(e, 50)])
    Pv = P[:, voiced]
    lo, hi = Pv[(f > 100) & (f < 1000)].sum(), Pv[(f > 2000) & (f < 5000)].sum()
    cent = ((f[:, None] * Pv).sum(0) / Pv.sum(0)).mean()
    edges = (100, 300, 600, 1000, 1600, 2400, 3400, 5000, 8000)
    bands = np.log([Pv[(f >= a) & (f < b)].sum(0).mean() for a, b in zip(edges[:-1], edges[1:])])
    return np.concatenate([[10 * np.log10(np.mean(x ** 2) + 1e-12), 10 * np.log10(hi / lo), np.log(cent)],
                           bands - bands.mean()])


def style_audibility(coupling: float, n_speakers: int = 36, sentences=(0, 5, 10), seed: int = 1,
                     normalize: bool = False, n_fit: int | None = None) -> dict[str, float]:
    """How well a speaker's audible style factors can be predicted from their audio alone.

    Draws `n_speakers` speakers at this coupling, synthesises the same few
    sentences for each, averages `audio_features` (plus the log duration of each
    sentence relative to the other speakers: the speaking rate) per speaker, and
    fits a ridge regression from features to each factor z_k. Reported: R^2 per
    factor (0 = chance, 1 = perfect; negative is worse than predicting the mean).
    Deterministic.

    normalize: each utterance scaled to zero mean and unit variance first, as every model's speech input is
    (`mtk.audio.normalize_waveform`): loudness is then no cue. n_fit: None scores each speaker left out of a
    fit on all the others (leave-one-speaker-out); a number fits on `n_fit` speakers only and scores all the
    others, averaged over the disjoint groups of `n_fit` speakers (what a model trained on that many speakers
    could learn from these features).
    """
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import LeaveOneOut, cross_val_predict
    if n_fit is not None and not 2 <= n_fit <= n_speakers - 2:
        raise ValueError(f"n_fit = {n_fit}: expected None or 2 to {n_speakers - 2} of the {n_speakers} speakers")
    cfg = SynthConfig(n_train=n_speakers, n_val=0, n_test=1, coupling=coupling, seed=seed)
    speakers = make_speakers(cfg)[:n_speakers]
    feats, durs = [], []
    for spk in speakers:
        rng = np.random.default_rng([seed, 4])
        utts = [speak(spk, SENTENCES[i], rng) for i in sentences]
        waves = [(u.audio - u.audio.mean()) / np.sqrt(u.audio.var() + 1e-7) if normalize else u.audio for u in utts]
        feats.append(np.mean([audio_features(w) for w in waves], 0))
        durs.append([u.duration for u in utts])
    logd = np.log(np.array(durs))
    X = np.column_stack([np.array(feats), (logd - logd.mean(0)).mean(1)])
    r2 = lambda pred, y: 1 - ((pred - y) ** 2).sum() / ((y - y.mean()) ** 2).sum()   # noqa: E731
    out = {}
    for k in AUDIBLE_FACTORS:
        y = np.array([s.z[k] for s in speakers])
        model = RidgeCV(alphas=np.logspace(-3, 3, 13))
        if n_fit is None:
            Xs = (X - X.mean(0)) / (X.std(0) + 1e-9)
            out[k] = float(r2(cross_val_predict(model, Xs, y, cv=LeaveOneOut()), y))
            continue
        scores = []                                     # each disjoint group of n_fit speakers fits; the rest score
        for g in range(n_speakers // n_fit):
            fit = np.zeros(n_speakers, bool)
            fit[g * n_fit:(g + 1) * n_fit] = True
            mu, sd = X[fit].mean(0), X[fit].std(0) + 1e-9
            scores.append(r2(model.fit((X[fit] - mu) / sd, y[fit]).predict((X[~fit] - mu) / sd), y[~fit]))
        out[k] = float(np.mean(scores))
    return out


# --------------------------------------------------------------------------- what the motion is made of
def motion_report(root: str | Path, split: str = "train", variance: float = 0.95) -> dict:
    """What a generated SynthVOCA's motion is made of, from its files (the 30 fps frames the loaders use).

    energy     {articulator: share} of the lip region's motion energy, each articulator alone
               (sum over frames and lip vertices of |w_k(t) B_k|^2; left and right fields summed), and
               "cross" = the share of the total energy |sum_k w_k B_k|^2 the cross terms add or remove
    n_pcs      principal components of the lower face's vertex offsets that explain `variance` of it
               (eigenvalues of cov(W) B B^T: the offsets are W @ B, so no (frames, 3V) matrix is formed)
    lip_gap    the vertical gap between the upper- and lower-lip midpoints (mm): percentiles over all frames,
               the share of frames where the lips cross (gap < 0), and the rest aperture: the median gap in
               pauses ("_", "_:", ...). The template's own gap is included, as in the loaded vertices.
    """
    root = Path(root)
    meta = json.loads((root / "meta.json").read_text())
    base = Template.load(root / "template.npz")
    B = np.load(root / "basis.npz")["fields"].astype(np.float64)                 # (K, V, 3)
    K = len(B)
    speakers = {s.name: s for s in load_speakers(root)}
    resolution = meta["config"]["resolution"]
    lips, lower = base.mask("lips"), base.mask("lower_face")
    up, lo = base.landmarks["upper_lip_mid"], base.landmarks["lower_lip_mid"]
    Bl = B[:, lips].reshape(K, -1)
    Bf = B[:, lower].reshape(K, -1)
    dgap = B[:, up, 1] - B[:, lo, 1]                                                # (K,) gap change per unit weight
    alone, total, frames, gaps, rest = np.zeros(K), 0.0, [], [], []
    face_gap = {}                                                                   # speaker -> the neutral face's lip gap
    for s in meta["sequences"]:
        if speakers[s["subject"]].split != split:
            continue
        d = np.load(root / "seq" / f"{s['name']}.npz")
        W = d["weights"].astype(np.float64)[::2]                                    # (T, K) at 30 fps
        alone += (W ** 2).sum(0) * (Bl ** 2).sum(1)
        total += float(((W @ Bl) ** 2).sum())
        frames.append(W)
        if s["subject"] not in face_gap:
            t = speaker_template(base, speakers[s["subject"]], resolution).vertices
            face_gap[s["subject"]] = t[up, 1] - t[lo, 1]
        gap = face_gap[s["subject"]] + W @ dgap                                     # (T,) metres
        gaps.append(gap)
        times = np.arange(len(W)) / (meta["capture_fps"] / 2)
        pause = np.zeros(len(W), bool)
        for a, b, name in zip(d["ph_start"], d["ph_end"], d["ph_name"]):
            if str(name) in PAUSES:
                pause |= (times >= a) & (times < b)
        rest.append(gap[pause])
    if not frames:
        raise ValueError(f"{root}: no clips of split {split!r}")
    W = np.concatenate(frames)
    groups = {}
    for k, name in enumerate(BASIS):
        g = name.rsplit("_", 1)[0] if name.endswith(("_l", "_r")) else name
        groups[g] = groups.get(g, 0.0) + alone[k]
    energy = {g: float(e / total) for g, e in groups.items()}
    energy["cross"] = float(1.0 - alone.sum() / total)
    C = np.cov(W, rowvar=False)                                                     # (K, K)
    ev = np.sort(np.clip(np.linalg.eigvals(C @ (Bf @ Bf.T)).real, 0, None))[::-1]
    n_pcs = int(np.searchsorted(np.cumsum(ev) / ev.sum(), variance) + 1)
    g = np.concatenate(gaps) * 1000
    r = np.concatenate(rest) * 1000
    return {"split": split, "frames": len(W), "energy": energy, "n_pcs": n_pcs, "variance": variance,
            "pc_shares": (ev / ev.sum()).tolist(),
            "lip_gap": {"p0": float(g.min()), "p1": float(np.percentile(g, 1)), "p50": float(np.median(g)),
                        "p99": float(np.percentile(g, 99)), "crossing": float((g < -1e-3).mean()),
                        "rest_median": float(np.median(r)) if len(r) else float("nan")}}


def lip_shapes(root: str | Path, split: str = "train", speaker: str | None = None) -> dict[str, dict[str, float]]:
    """The mouth each viseme makes, in millimetres, at the middle frame of each of its segments (30 fps frames,
    the loaders' rate), averaged over a split's clips (or one `speaker`'s, whatever their split):

    width       change of the distance between the mouth corners from the speaker's neutral face (+ = wider)
    protrusion  forward motion of the upper lip's midpoint (+ = towards the viewer)
    aperture    the vertical gap between the lip midpoints (the neutral face's own gap included)
    jaw         the jaw's opening rotation (degrees)
    n           segments measured

    The scale to compare with real speech: lip width differs by about a centimetre between spread and rounded
    vowels, protrusion by several millimetres, and the lips open 1-2 cm on open vowels (docs/synthvoca-v2.md)."""
    root = Path(root)
    meta = json.loads((root / "meta.json").read_text())
    base = Template.load(root / "template.npz")
    B = np.load(root / "basis.npz")["fields"].astype(np.float64)                 # (K, V, 3)
    speakers = {s.name: s for s in load_speakers(root)}
    lm = base.landmarks
    idx = [lm["mouth_corner_left"], lm["mouth_corner_right"], lm["upper_lip_mid"], lm["lower_lip_mid"]]
    Bm = B[:, idx]                                                                # (K, 4, 3)
    jaw = BASIS.index("jaw")                                                      # its weight is in radians
    fps = meta["capture_fps"] / 2
    rows: dict[str, list[tuple[float, float, float]]] = {}
    face_gap = {}
    for s in meta["sequences"]:
        if (speakers[s["subject"]].split != split) if speaker is None else (s["subject"] != speaker):
            continue
        if s["subject"] not in face_gap:
            t = speaker_template(base, speakers[s["subject"]], meta["config"]["resolution"]).vertices
            face_gap[s["subject"]] = t[idx[2], 1] - t[idx[3], 1]
        d = np.load(root / "seq" / f"{s['name']}.npz")
        W = d["weights"].astype(np.float64)[::2]                                    # (T, K) at 30 fps
        off = np.einsum("tk,kmc->tmc", W, Bm)                                       # (T, 4, 3)
        width = off[:, 0, 0] - off[:, 1, 0]
        gap = face_gap[s["subject"]] + off[:, 2, 1] - off[:, 3, 1]
        for t0, t1, v, _, _ in viseme_segments(zip(d["ph_start"], d["ph_end"], map(str, d["ph_name"]))):
            i = int(np.clip(round(0.5 * (t0 + t1) * fps), 0, len(W) - 1))
            rows.setdefault(v, []).append((width[i], off[i, 2, 2], gap[i], W[i, jaw]))
    if not rows:
        raise ValueError(f"{root}: no clips of " + (f"split {split!r}" if speaker is None else f"speaker {speaker!r}"))
    out = {}
    for v in VISEMES:
        if v in rows:
            r = np.array(rows[v]) * np.array([1000, 1000, 1000, 180 / np.pi])
            out[v] = {"n": len(r), "width": float(r[:, 0].mean()), "protrusion": float(r[:, 1].mean()),
                      "aperture": float(r[:, 2].mean()), "jaw": float(r[:, 3].mean())}
    return out


def effort_response(root: str | Path, visemes=("aa", "SS"), step: float = 0.5, max_clips: int = 10) -> dict[str, float]:
    """How vocal effort reaches the jaw on each viseme, coarticulation included: d log(jaw) / d effort.

    For each speaker of a generated dataset, their own clips' phonemes are articulated again by the dataset's
    generator version with their style as drawn but effort moved by -step and +step (no motion noise), and the
    jaw's rotation at the middle of each segment of a viseme is compared. Averaged over speakers and segments.
    Version 1's single gain gives every viseme the same response; version 2's `articulation.EFFORT_JAW` gives
    open vowels more than sibilants. Coarticulation blends each segment with its neighbours, so the responses
    measured here are closer together than the designed shares. Deterministic; regenerates no audio."""
    from dataclasses import replace
    root = Path(root)
    meta = json.loads((root / "meta.json").read_text())
    version = meta["config"].get("version", 1)
    base = Template.load(root / "template.npz")
    B = np.load(root / "basis.npz")["fields"]
    jaw = BASIS.index("jaw")
    seqs: dict[str, list[str]] = {}
    for s in meta["sequences"]:
        seqs.setdefault(s["subject"], []).append(s["name"])
    out: dict[str, list[float]] = {v: [] for v in visemes}
    for spk in load_speakers(root):
        contact = (art.contact_geometry(base, B, speaker_template(base, spk, meta["config"]["resolution"]).vertices)
                   if version >= 2 else None)
        for name in seqs.get(spk.name, [])[:max_clips]:
            d = np.load(root / "seq" / f"{name}.npz")
            ph = list(zip(d["ph_start"].tolist(), d["ph_end"].tolist(), map(str, d["ph_name"])))
            n = len(d["weights"])
            W = [articulate(replace(spk, z={**spk.z, "effort": spk.z["effort"] + sgn * step}), ph, n, CAPTURE_FPS,
                            np.random.default_rng(0), noise=0.0, version=version, contact=contact)[:, jaw]
                 for sgn in (-1, 1)]
            for t0, t1, v, _, _ in viseme_segments(ph):
                i = min(int(round(0.5 * (t0 + t1) * CAPTURE_FPS)), n - 1)
                if v in out and min(W[0][i], W[1][i]) > 1e-4:
                    out[v].append(float(np.log(W[1][i] / W[0][i]) / (2 * step)))
    missing = [v for v, r in out.items() if not r]
    if missing:
        raise ValueError(f"{root}: no segments of viseme(s) {missing} with an open jaw; expected some of each")
    return {v: float(np.mean(r)) for v, r in out.items()}
