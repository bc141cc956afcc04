"""The task's exact bounds on SynthVOCA: what the best possible prediction scores, given what it may know.

SynthVOCA's motion is a known function (`synthvoca.articulate`) of the phoneme timing, the speaker's
style and random nuisance (articulator drift, brow-raise amplitudes, blinks):

    W = articulate(style, phonemes, rng)                  (T60, K) basis weights at 60 fps
    vertices = template_speaker + W[::2] @ basis          (T, V, 3) at 30 fps, as loaded

FVE and LVE are mean squared errors (`metrics.fve`, `metrics.lve`), so for any information I the best
prediction is the conditional mean E[vertices | I], and its error is a bound no model can beat on
average. Three information sets, from most to least:

    floor        phonemes + the speaker's true style       only the nuisance is unknown
    audible      phonemes + the audible style factors a    effort, rate, round: z_k | a_k ~ N(c a_k, 1 - c^2)
                                                           (c = the data's coupling); every other factor and
                                                           the per-viseme deviations from their prior
    style_blind  phonemes only                             the whole style from its prior

so floor <= audible <= style_blind in expectation. A model that hears the audio and knows the template is
somewhere above the floor: the audio carries the phoneme timing only as well as its encoder recognises
it (a model's content error), and at most the audible part of the style.

The conditional means are Monte Carlo averages over `n_draws` draws of everything unknown. Vertices are
linear in W, so the mean prediction is template + mean(W) @ basis. An N-draw mean m_N misses the true
mean m by the draws' own spread: E|G - m_N|^2 = E|G - m|^2 + E|m - m_N|^2, and E|m - m_N|^2 = s^2 / N
with s^2 the draws' unbiased variance around m_N (per frame, through the basis' Gram matrix). The bounds
reported subtract it, so they do not depend on N beyond Monte Carlo noise.

Approximation: the style factors are N(0, 1) clipped at +-2.5 (`synthvoca.make_speakers`); the audible
posterior above ignores the clipping of the prior (it moves 1.2 % of draws) and clips the drawn z.

Results are in the paper's units (FVE x1e-6 m^2, LVE x1e-5 m^2), pooled over frames like `metrics.evaluate`.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .synthvoca import articulation as art
from .metrics import PAPER_UNITS
from .synthvoca import AUDIBLE_FACTORS, CAPTURE_FPS, STYLE_FACTORS, Speaker, articulate
from .synthvoca.generator import speaker_number

BOUNDS = ("floor", "audible", "style_blind")


@dataclass
class ClipBounds:
    """One clip's bounds: per-frame squared errors of each bound's best prediction, pooled later."""
    name: str
    subject: str
    frames: int
    sq_fve: dict[str, float]          # bound -> sum over frames of mean_v |m - G|^2 (corrected), m^2
    sq_lve: dict[str, float]          # the same over the lip vertices


def _prior_style(spk: Speaker, rng: np.random.Generator, keep: dict[str, float] | None = None) -> Speaker:
    """A speaker like `spk` whose style is drawn from SynthVOCA's prior (`make_speakers`), except the
    factors given in `keep`."""
    z = {k: float(np.clip(rng.standard_normal(), -2.5, 2.5)) for k in STYLE_FACTORS}
    z.update(keep or {})
    return replace(spk, z=z, deviations=rng.standard_normal((len(art.VISEMES), len(art.ARTICULATORS))),
                   blink_rate=float(rng.uniform(0.15, 0.45)))


def _draw_speaker(bound: str, spk: Speaker, coupling: float, rng: np.random.Generator) -> Speaker:
    if bound == "floor":
        return spk
    if bound == "style_blind":
        return _prior_style(spk, rng)
    sd = float(np.sqrt(max(1.0 - coupling ** 2, 0.0)))
    keep = {k: float(np.clip(coupling * spk.audio_factors[k] + sd * rng.standard_normal(), -2.5, 2.5))
            for k in AUDIBLE_FACTORS}
    return _prior_style(spk, rng, keep)


def _clip(dataset, name: str):
    """(speaker, phonemes, frames at 60 fps, noise, coupling, generator version, lip contact geometry or None)
    of a SynthVOCA clip."""
    d = dataset._seq_meta[name]
    z = dataset._npz(name)
    phonemes = [(float(a), float(b), str(c)) for a, b, c in zip(z["ph_start"], z["ph_end"], z["ph_name"])]
    cfg = dataset.meta["config"]
    version = int(cfg.get("version", 1))
    contact = art.contact_geometry(dataset.template, dataset.basis, dataset.templates[d["subject"]].vertices) \
        if version >= 2 else None
    return (dataset.speaker(d["subject"]), phonemes, int(d["frames_60fps"]), float(cfg["noise"]),
            float(cfg["coupling"]), version, contact)


def draws(dataset, name: str, bound: str, n_draws: int, rng: np.random.Generator) -> np.ndarray:
    """(N, T, K) basis weights at 30 fps: `n_draws` samples of the clip's motion given the bound's information."""
    if bound not in BOUNDS:
        raise ValueError(f"bound {bound!r}: expected one of {BOUNDS}")
    spk, phonemes, n60, noise, coupling, version, contact = _clip(dataset, name)
    return np.stack([articulate(_draw_speaker(bound, spk, coupling, rng), phonemes, n60, CAPTURE_FPS, rng,
                                noise, version, contact)[::2] for _ in range(n_draws)]).astype(np.float64)


def _rng(dataset, name: str, seed: int) -> np.random.Generator:
    d = dataset._seq_meta[name]
    return np.random.default_rng([seed, speaker_number(d["subject"]), int(d["sentence"])])


def prediction(dataset, name: str, bound: str, n_draws: int = 128, seed: int = 0) -> np.ndarray:
    """(T, V, 3) the bound's best prediction of a clip (the Monte Carlo conditional mean), in metres."""
    W = draws(dataset, name, bound, n_draws, _rng(dataset, name, seed)).mean(0)          # (T, K)
    K, V, _ = dataset.basis.shape
    t = dataset.templates[dataset._seq_meta[name]["subject"]].vertices
    return t[None] + (W @ dataset.basis.reshape(K, V * 3)).reshape(len(W), V, 3)


def clip_bounds(dataset, name: str, n_draws: int = 128, seed: int = 0, bounds=BOUNDS, correct: bool = True) -> ClipBounds:
    """The bounds of one SynthVOCA clip (`dataset`: `data.SynthVOCA`), each from `n_draws` draws.
    correct=False: the plain error of the N-draw mean (what `prediction` scores), without the s^2 / N term."""
    if n_draws < 2:
        raise ValueError(f"n_draws = {n_draws}: need at least 2 draws to correct for Monte Carlo error")
    d = dataset._seq_meta[name]
    K, V, _ = dataset.basis.shape
    lips = np.asarray(dataset.template.mask("lips"))
    B = dataset.basis.reshape(K, V * 3).astype(np.float64)
    gram = B @ B.T / V                                                 # (K, K): mean_v <B_k(v), B_l(v)>
    Bl = dataset.basis[:, lips].reshape(K, -1).astype(np.float64)
    gram_l = Bl @ Bl.T / len(lips)
    W_gt = dataset.weights_60fps(name)[::2].astype(np.float64)         # (T, K): the ground truth's weights
    rng = _rng(dataset, name, seed)
    out_f, out_l = {}, {}
    for bound in bounds:
        D = draws(dataset, name, bound, n_draws, rng)                  # (N, T, K)
        mean = D.mean(0)                                               # (T, K)
        dev = D - mean
        err = mean - W_gt                                              # (T, K): the template cancels
        # per frame: mean_v |err @ B|^2 = err G err^T; the Monte Carlo term s^2 / N likewise
        k = float(correct) / (n_draws - 1) / n_draws
        out_f[bound] = float(np.einsum("tk,kl,tl->", err, gram, err) - k * np.einsum("ntk,kl,ntl->", dev, gram, dev))
        out_l[bound] = float(np.einsum("tk,kl,tl->", err, gram_l, err) - k * np.einsum("ntk,kl,ntl->", dev, gram_l, dev))
    return ClipBounds(name, d["subject"], len(W_gt), out_f, out_l)


def bounds(dataset, split: str = "test", n_draws: int = 128, seed: int = 0, progress: bool = False) -> list[dict]:
    """The bounds of a split's protocol clips (the clips `recipes.evaluate` scores), per speaker and overall.

    -> rows {"split", "speaker" ("all" for the pooled row), "bound", "fve", "lve"}, in the paper's units.
    Raises for a dataset that is not SynthVOCA (only a generated dataset knows its motion's law)."""
    if not hasattr(dataset, "basis") or not hasattr(dataset, "speakers"):
        raise TypeError(f"bounds need a generated SynthVOCA dataset (data.SynthVOCA), got {type(dataset).__name__}: "
                        "only the generator knows the motion's law")
    from tqdm.auto import tqdm
    clips = [clip_bounds(dataset, s.name, n_draws, seed) for s in
             tqdm(dataset.sequences(split), desc=f"bounds {split}", disable=not progress)]
    rows = []
    groups = {spk: [c for c in clips if c.subject == spk] for spk in dict.fromkeys(c.subject for c in clips)}
    groups["all"] = clips
    for spk, cs in groups.items():
        frames = sum(c.frames for c in cs)
        for b in BOUNDS:
            rows.append({"split": split, "speaker": spk, "bound": b,
                         "fve": sum(c.sq_fve[b] for c in cs) / frames / PAPER_UNITS["fve"],
                         "lve": sum(c.sq_lve[b] for c in cs) / frames / PAPER_UNITS["lve"]})
    return rows
