"""SynthVOCA: the kit's embedded default dataset, generated in code and mirroring VOCASET.

VOCASET (12 speakers, FLAME meshes at 60 fps, 16 kHz audio) needs a registration
to download, and pretrained speech encoders need the Hugging Face hub. SynthVOCA
stands in for both so that the whole story of MemoryTalker can run on a laptop:

* speech: espeak-ng (`speech.py`), 12 voice variants, phoneme timings;
* faces: the procedural template (`template.py`) with a per-speaker identity shape;
* motion: phonemes -> visemes -> coarticulated articulation (`articulation.py`),
  played on that speaker's face with that speaker's hidden *speaking style*.

Each speaker's style (all latent factors z ~ N(0, 1), clipped to +-2.5):

    factor      motion effect                          audible through (real-speech mechanism)
    effort      mouth opening gain (with open_idio;    loudness and flatter spectral tilt (vocal effort)
                version 2: most on open vowels)
    rate        smaller excursions when fast           speaking rate: shorter articulations
    round       lip rounding/protrusion gain           lower formants (longer vocal tract): resampling warp
    open_idio   mouth opening gain                     -
    spread      lip spreading gain                     -
    stiffness   less coarticulation (sharper)          -
    lead        motion anticipates the sound by more   -
    rest        resting mouth aperture                 -
    asym        left-right asymmetry of the lips       -
    brow        brow-raise expressiveness              -
    + per-viseme deviations (16 visemes x 6 articulators), blink rate

stiffness and lead are timing (when and how sharply the face moves), rate is timing and amplitude, the rest
amplitude (`STYLE_KINDS`, in meta.json): Eq. 14's re-weighting of memory slots can express amplitude only.

Only the first three reach the audio, and only through `coupling` c in [0, 1]:
the audio-side factor is a = c z + sqrt(1 - c^2) n with n ~ N(0, 1) independent
of everything, so a has the same distribution for every c, and its correlation
with the style is exactly c. At c = 0 the audio carries no information about
style; at c = 1 three factors are fully audible and the rest never are. Voice
variant and pitch are drawn independently of style (the formant warp also
scales pitch; espeak-ng's pitch parameter compensates it).

Layout on disk (compact; vertices are materialised on load):

    <root>/meta.json              config, speakers (split, voice, style), sentences
    <root>/speakers.npz           identity shapes, style vectors, per-viseme deviations
    <root>/template.npz           the base procedural template with masks
    <root>/basis.npz              the articulation basis fields (K, V, 3)
    <root>/seq/<subject>_sentenceNN.npz   weights (T60, K) at 60 fps, audio int16 16 kHz, phonemes
    <root>/fid_extractor.npz      the FID motion-feature extractor, fitted on the train split

The reader is `mtk.data.SynthVOCA`; `mtk.data.export_vocaset_layout` writes the FaceFormer-processed
VOCASET layout (`vertices_npy/`, `wav/`, `templates.pkl`), so the real loader reads it too. This module
never imports `mtk.data` (imports flow one way: data -> synthvoca).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter1d

from ..paths import data_dir
from . import articulation as art
from .corpus import SENTENCES
from .speech import VOICES, pitch_for, synthesize
from .template import IDENTITY_SHAPES, Template

FORMAT_VERSION = 1         # the layout on disk (data.SynthVOCA reads it)
GENERATOR_VERSIONS = {
    1: "the kit's first SynthVOCA (jaw-dominated motion, lips that cross and rest apart; notebook 01, section 7)",
    2: "the default: lips that meet and stop (never cross), close on bilabials and at rest; vocal effort opens the "
       "jaw per viseme group (docs/synthvoca-v2.md)",
}
DEFAULT_VERSION = 2
# A version is pinned by a fingerprint of its smoke data (tests/golden/synthvoca-v<N>-smoke.json): from then on
# what it generates never changes. Before that, while it was a draft, each change to what it generated bumped a
# revision that is part of the data key, so a folder an older draft wrote was never read as the newer one's.
# Version 2 was pinned at its revision 2 (1: lip contact, 2: vocal effort per viseme group) and keeps it in its
# key, so data that revision wrote stay valid.
KEY_REVISION = {2: 2}
STYLE_FACTORS = ("effort", "rate", "round", "open_idio", "spread", "stiffness", "lead", "rest", "asym", "brow")
AUDIBLE_FACTORS = ("effort", "rate", "round")
# What each factor changes: how far articulators move ("amplitude": Eq. 14's re-weighting of the memory's
# slots can express it) or when and how sharply ("timing": re-weighting slots cannot). Written to meta.json.
STYLE_KINDS = {"effort": "amplitude", "rate": "timing and amplitude", "round": "amplitude",
               "open_idio": "amplitude", "spread": "amplitude", "stiffness": "timing", "lead": "timing",
               "rest": "amplitude", "asym": "amplitude", "brow": "amplitude"}
CAPTURE_FPS = 60           # like VOCASET's raw capture; loaders take every second frame -> 30 fps
_ADDED_FIELDS = {"train_sentences": None}   # config fields added later: in the key only when set (keys stay valid)


@dataclass
class SynthConfig:
    """What to generate. Presets: `smoke` (CI), `default` (the kit's dataset: VOCASET's protocol), `many`
    (many speakers, few sentences each) and `speaker_pool` (nested speakers for a speaker-count sweep)."""

    name: str = "default"
    n_train: int = 8
    n_val: int = 2
    n_test: int = 2
    sentences_per_speaker: int = 40
    shared_sentences: int = 10        # read by every speaker (sentence01..): partial overlap, as in VOCASET
    coupling: float = 1.0             # how much of the audible style factors reaches the audio, in [0, 1]
    seed: int = 0
    resolution: str = "default"       # procedural template resolution
    max_words: int = 99               # only sentences with at most this many words (smoke: short clips)
    noise: float = 1.0                # scale of the natural motion noise
    version: int = DEFAULT_VERSION    # the generator's design (`GENERATOR_VERSIONS`): a version's data never changes
    train_sentences: int | tuple[int, ...] | None = None   # sentences each training speaker reads (None:
                                      # sentences_per_speaker; a tuple: one count per training speaker, in order)

    @classmethod
    def smoke(cls, **kw) -> "SynthConfig":
        return cls(**{**dict(name="smoke", n_train=3, n_val=1, n_test=2, sentences_per_speaker=6,
                             shared_sentences=2, resolution="smoke", max_words=7), **kw})

    @classmethod
    def default(cls, **kw) -> "SynthConfig":
        return cls(**kw)

    @classmethod
    def speaker_pool(cls, sizes=(8, 16, 32, 64, 128), total: int = 256, **kw) -> "SynthConfig":
        """Training speakers nested for a sweep of their number at a fixed number of training clips: the first
        `sizes[0]` speakers read `total / sizes[0]` sentences, the next up to `sizes[1]` read `total / sizes[1]`,
        and so on, so the first N speakers' first `total / N` sentences are `total` clips for every N in
        `sizes` (`data.SynthVOCA.training_subset`). 4 validation and 12 test speakers read 40, as in `many`."""
        counts = tuple(total // next(n for n in sizes if i < n) for i in range(sizes[-1]))
        return cls(**{**dict(name="speakers", n_train=sizes[-1], n_val=4, n_test=12, train_sentences=counts,
                             shared_sentences=min(2, min(counts))), **kw})

    @classmethod
    def many(cls, **kw) -> "SynthConfig":
        """The `many` protocol: 96 training speakers reading 4 sentences each (384 clips, near the default's
        320), 4 validation and 12 unseen test speakers reading 40 (reference 1-20, evaluation 21-40)."""
        return cls(**{**dict(name="many", n_train=96, n_val=4, n_test=12, train_sentences=4, shared_sentences=2),
                      **kw})

    def __post_init__(self):
        if not 0.0 <= self.coupling <= 1.0:
            raise ValueError(f"SynthConfig.coupling = {self.coupling}, expected a value in [0, 1]")
        if isinstance(self.train_sentences, list):                 # from JSON (a dataset's meta.json)
            self.train_sentences = tuple(self.train_sentences)
        if isinstance(self.train_sentences, tuple) and len(self.train_sentences) != self.n_train:
            raise ValueError(f"train_sentences has {len(self.train_sentences)} counts, expected one per training "
                             f"speaker ({self.n_train})")
        reads = [self.sentences_per_speaker] + [self.reads(i) for i in range(self.n_train)]
        if not all(1 <= n <= self.sentences_per_speaker for n in reads):
            raise ValueError(f"train_sentences = {self.train_sentences}: expected None or counts from 1 to "
                             f"sentences_per_speaker ({self.sentences_per_speaker})")
        if self.shared_sentences > min(reads):
            raise ValueError(f"shared_sentences {self.shared_sentences} > the sentences a speaker reads "
                             f"(as few as {min(reads)})")
        if min(self.n_train, self.n_test) < 1 or self.n_val < 0:
            raise ValueError("SynthConfig needs at least one train and one test speaker")
        if self.version not in GENERATOR_VERSIONS:
            raise ValueError(f"SynthConfig.version = {self.version!r}, expected one of {sorted(GENERATOR_VERSIONS)} "
                             f"({'; '.join(f'{v}: {d}' for v, d in GENERATOR_VERSIONS.items())})")

    def reads(self, train_rank: int | None) -> int:
        """Sentences a speaker reads: the `train_rank`-th training speaker (0-based), or None for val/test."""
        n = self.train_sentences
        if train_rank is None or n is None:
            return self.sentences_per_speaker
        return n[train_rank] if isinstance(n, tuple) else n

    @property
    def n_speakers(self) -> int:
        return self.n_train + self.n_val + self.n_test

    def key(self) -> str:
        """Short hash of what decides the generated data: this config, its generator version included.

        The key names content, not code: a version's data stays the same whatever else is edited, which
        tests/test_synthvoca.py checks against a recorded fingerprint of version 1; a change to what a version
        generates is a new version (`KEY_REVISION` tells how a draft's revisions entered the key). So run folders
        and the shipped model's identity survive unrelated edits."""
        draft = {"draft": KEY_REVISION[self.version]} if self.version in KEY_REVISION else {}
        blob = json.dumps({**self.fields(), "v": FORMAT_VERSION, **draft}, sort_keys=True)
        return hashlib.sha1(blob.encode()).hexdigest()[:8]

    def fields(self) -> dict:
        """The config as a plain dict, leaving out fields added after version 1 while they hold their default:
        what the key hashes, and what a recipe that names a dataset should embed (so neither changes when a
        field is added)."""
        return {k: v for k, v in asdict(self).items() if k not in _ADDED_FIELDS or v != _ADDED_FIELDS[k]}

    def default_root(self) -> Path:
        return data_dir() / f"synthvoca-{self.name}-{self.key()}"


# --------------------------------------------------------------------------- speakers
def speaker_number(name: str) -> int:
    """1 for "SynthVOCA_S01", 101 for "SynthVOCA_S101" (the number that seeds a speaker's clips)."""
    return int(name.rsplit("_S", 1)[1])


@dataclass
class Speaker:
    """A synthetic speaker: identity, voice and hidden speaking style."""

    name: str
    split: str                                   # "train" | "val" | "test"
    voice: str
    pitch_factor: float                          # F0 relative to the voice's default, independent of style
    z: dict[str, float]                          # latent style factors, N(0, 1)
    audio_factors: dict[str, float]              # what reaches the audio: c z + sqrt(1-c^2) n
    identity: list[float]
    deviations: np.ndarray = field(repr=False)   # (16 visemes, 6 articulators), N(0, 1)
    blink_rate: float = 0.3                      # blinks per second

    # ---- motion parameters derived from the latent style
    @property
    def open_gain(self) -> float:
        return self.jaw_gain(1.0)

    def jaw_gain(self, effort_share: float | np.ndarray = 1.0) -> float | np.ndarray:
        """Mouth-opening gain with `effort_share` of the effort factor (version 2: `articulation.EFFORT_JAW`
        per viseme; version 1 and `open_gain`: 1 everywhere)."""
        g = np.exp(0.22 * (0.8 * self.z["effort"] * np.asarray(effort_share, float) + 0.6 * self.z["open_idio"]))
        return float(g) if np.ndim(g) == 0 else g

    @property
    def round_gain(self) -> float:
        return float(np.exp(0.20 * self.z["round"]))

    @property
    def spread_gain(self) -> float:
        return float(np.exp(0.25 * self.z["spread"]))

    @property
    def excursion(self) -> float:
        return float(np.clip(1 - 0.10 * self.z["rate"], 0.7, 1.3))

    @property
    def stiffness(self) -> float:
        return float(np.exp(0.25 * self.z["stiffness"]))

    @property
    def lead(self) -> float:
        return float(np.clip(0.030 + 0.015 * self.z["lead"], 0.0, 0.075))

    @property
    def rest_jaw(self) -> float:
        return float(np.clip(0.010 + 0.008 * self.z["rest"], 0.0, 0.035))

    @property
    def asym(self) -> float:
        return float(np.clip(0.12 * self.z["asym"], -0.3, 0.3))

    @property
    def brow_gain(self) -> float:
        return float(np.exp(0.35 * self.z["brow"]))

    # ---- audio parameters derived from the audible factors
    @property
    def rate_wpm(self) -> int:
        return int(round(170 * np.exp(0.12 * self.audio_factors["rate"])))

    @property
    def formant_scale(self) -> float:
        return float(np.exp(-0.06 * self.audio_factors["round"]))

    @property
    def effort_gain_db(self) -> float:
        return float(4.0 * self.audio_factors["effort"])

    @property
    def tilt(self) -> float:
        """Pre-emphasis coefficient: higher vocal effort, flatter spectrum (more high-frequency energy)."""
        return float(np.clip(0.45 + 0.18 * self.audio_factors["effort"], 0.0, 0.9))

    def style_params(self) -> dict[str, float]:
        names = ("open_gain", "round_gain", "spread_gain", "excursion", "stiffness", "lead", "rest_jaw",
                 "asym", "brow_gain", "blink_rate")
        return {k: float(getattr(self, k)) for k in names}

    def style_vector(self) -> np.ndarray:
        """The true style the oracle model is given: latent factors, blink rate, per-viseme deviations."""
        return np.concatenate([[self.z[k] for k in STYLE_FACTORS], [self.blink_rate],
                               self.deviations.reshape(-1)]).astype(np.float32)

    def to_json(self) -> dict:
        d = {k: getattr(self, k) for k in ("name", "split", "voice", "pitch_factor", "z", "audio_factors",
                                            "identity", "blink_rate")}
        d["style_params"] = self.style_params()
        d["audio_params"] = dict(rate_wpm=self.rate_wpm, formant_scale=self.formant_scale,
                                 effort_gain_db=self.effort_gain_db, tilt=self.tilt,
                                 espeak_pitch=pitch_for(self.pitch_factor / self.formant_scale))
        return d


def make_speakers(cfg: SynthConfig) -> list[Speaker]:
    """Draw the speakers of a dataset (deterministic from cfg.seed)."""
    rng = np.random.default_rng([cfg.seed, 1])
    splits = ["train"] * cfg.n_train + ["val"] * cfg.n_val + ["test"] * cfg.n_test
    c = cfg.coupling
    speakers = []
    voices = rng.permutation(np.resize(np.array(VOICES), cfg.n_speakers))
    for i, split in enumerate(splits):
        z = {k: float(np.clip(rng.standard_normal(), -2.5, 2.5)) for k in STYLE_FACTORS}
        nuisance = {k: float(np.clip(rng.standard_normal(), -2.5, 2.5)) for k in AUDIBLE_FACTORS}
        audio = {k: c * z[k] + float(np.sqrt(1 - c * c)) * nuisance[k] for k in AUDIBLE_FACTORS}
        ident = np.clip(rng.standard_normal(len(IDENTITY_SHAPES)), -2, 2)
        dev = rng.standard_normal((len(art.VISEMES), len(art.ARTICULATORS)))
        speakers.append(Speaker(
            name=f"SynthVOCA_S{i + 1:02d}", split=split, voice=str(voices[i]),
            pitch_factor=float(rng.uniform(0.85, 1.2)), z=z, audio_factors=audio,
            identity=[float(v) for v in ident], deviations=dev.astype(np.float32),
            blink_rate=float(rng.uniform(0.15, 0.45))))
    return speakers


def assign_sentences(cfg: SynthConfig, speakers: list[Speaker]) -> dict[str, list[int]]:
    """Corpus indices each speaker reads: `shared_sentences` read by all, the rest drawn per speaker."""
    rng = np.random.default_rng([cfg.seed, 2])
    pool = np.array([i for i, s in enumerate(SENTENCES) if len(s.split()) <= cfg.max_words])
    if len(pool) < cfg.sentences_per_speaker:
        raise ValueError(f"only {len(pool)} corpus sentences have at most {cfg.max_words} words; "
                         f"{cfg.sentences_per_speaker} per speaker requested")
    pool = rng.permutation(pool)
    shared, rest = pool[:cfg.shared_sentences], pool[cfg.shared_sentences:]
    out = {}
    rank = {s.name: i for i, s in enumerate(s for s in speakers if s.split == "train")}
    for spk in speakers:
        n = cfg.reads(rank.get(spk.name))
        own = rng.choice(rest, n - cfg.shared_sentences, replace=False)
        out[spk.name] = [int(i) for i in np.concatenate([shared, own])]
    return out


# --------------------------------------------------------------------------- one utterance
def speak(spk: Speaker, text: str, rng: np.random.Generator):
    """Audio of one sentence in the speaker's voice, with effort applied. -> (Utterance, gain applied)."""
    jitter_rate = float(np.exp(0.03 * rng.standard_normal()))
    rate = int(np.clip(round(spk.rate_wpm * jitter_rate), 80, 450))
    utt = synthesize(text, voice=spk.voice, rate=rate, pitch=pitch_for(spk.pitch_factor / spk.formant_scale),
                     formant_scale=spk.formant_scale)
    x = utt.audio
    # vocal effort: flatter spectral tilt (pre-emphasis) and loudness; plus recording-level jitter
    x = np.append(x[:1], x[1:] - spk.tilt * x[:-1]) / (1 + spk.tilt)
    gain_db = spk.effort_gain_db + 1.5 * rng.standard_normal() - 3.0
    x = x * np.float32(10 ** (gain_db / 20))
    utt.audio = x.astype(np.float32)
    return utt


def articulate(spk: Speaker, phonemes, n_frames: int, fps: float, rng: np.random.Generator,
               noise: float = 1.0, version: int = DEFAULT_VERSION, contact: tuple[np.ndarray, np.ndarray] | None = None
               ) -> np.ndarray:
    """Basis weights (T, K) for phoneme intervals, in this speaker's style, at `fps`.

    version 2 (the default, `GENERATOR_VERSIONS`): vocal effort opens the jaw per viseme
    (`articulation.EFFORT_JAW`: open vowels most, sibilants least, whose jaw resists coarticulation), the jaw
    does not rise past the teeth meeting, bilabials and long pauses close the lips (`articulation.closure_demand`), and the lips meet and
    stop (`articulation.lip_contact`, with `contact` = (D, g0) of this speaker's face from
    `articulation.contact_geometry`). Version 1 is unchanged.
    """
    if version >= 2 and contact is None:
        raise ValueError("articulate(version=2) needs `contact` (articulation.contact_geometry of the speaker's face)")
    segs = art.viseme_segments(phonemes)
    vis = [s[2] for s in segs]
    stress = np.array([s[3] for s in segs])
    scale = np.array([0.03, 0.25, 0.25, 0.15, 0.15, 0.15])          # size of per-viseme deviations
    dev = spk.deviations[[art.VISEMES.index(v) for v in vis]] * scale * 0.6
    targets = np.stack([art.VISEME_TARGETS[v] for v in vis]) + dev   # (N, 6)
    dominance = np.stack([art.VISEME_DOMINANCE[v] for v in vis])
    is_vowel = np.array([v in ("aa", "E", "I", "O", "U", "@") for v in vis])
    targets[:, 0] *= 1 + 0.12 * stress * is_vowel                   # stressed vowels open wider
    gains = np.array([spk.open_gain, spk.round_gain, spk.spread_gain, 0.6 + 0.4 * spk.open_gain, 1.0, 1.0])
    gains[[0, 1, 2, 5]] *= spk.excursion
    gains = np.tile(gains, (len(vis), 1))                            # (N, 6): per segment
    if version >= 2:                                                 # effort opens open vowels most
        gains[:, 0] = spk.jaw_gain(np.array([art.EFFORT_JAW[v] for v in vis])) * spk.excursion
        dominance[np.isin(vis, ("SS", "CH")), 0] = art.SIBILANT_JAW_DOMINANCE    # and the jaw stays high on /s/
    targets = np.maximum(targets * gains, 0.0)
    targets[np.array(vis) == "sil"] = 0.0                             # silence is the rest pose

    times = np.arange(n_frames) / fps
    A = art.coarticulate(segs, times, targets, dominance, spk.stiffness, spk.lead)   # (T, 6)
    A[:, 0] += spk.rest_jaw
    # natural noise: slow random drift of each articulator (a few Hz)
    sig = np.array([0.004, 0.03, 0.03, 0.02, 0.01, 0.02]) * noise
    drift = gaussian_filter1d(rng.standard_normal((n_frames, 6)), sigma=0.06 * fps, axis=0, mode="nearest")
    A = A + drift / (drift.std(0, keepdims=True) + 1e-9) * sig
    A[:, 1:] = np.maximum(A[:, 1:], 0.0)
    if version >= 2:
        A[:, 0] = np.maximum(A[:, 0], 0.0)                            # the jaw stops where the teeth meet

    W = np.zeros((n_frames, len(art.BASIS)), np.float32)
    W[:, art.BASIS.index("jaw")] = A[:, 0]
    for a, f in enumerate(art.LIP_FIELDS, start=1):
        W[:, art.BASIS.index(f"{f}_l")] = A[:, a] * (1 + spk.asym)
        W[:, art.BASIS.index(f"{f}_r")] = A[:, a] * (1 - spk.asym)
    # brows: a raise on each primary-stressed vowel, more for expressive speakers
    brow = np.zeros(n_frames)
    for (t0, t1, v, st, _), amp in zip(segs, rng.uniform(0.4, 1.0, len(segs))):
        if st == 2 and v in ("aa", "E", "I", "O", "U", "@"):
            brow += amp * np.exp(-0.5 * ((times - 0.5 * (t0 + t1) + spk.lead) / 0.09) ** 2)
    W[:, art.BASIS.index("brow")] = 0.6 * spk.brow_gain * np.tanh(brow)
    # blinks: a Poisson process; each closes in ~70 ms and opens in ~130 ms
    blink = np.zeros(n_frames)
    t = rng.exponential(1 / spk.blink_rate) * 0.5
    end = times[-1] if n_frames else 0.0
    while t < end:
        d = times - t
        blink = np.maximum(blink, np.where(d < 0, np.exp(-0.5 * (d / 0.035) ** 2), np.exp(-0.5 * (d / 0.065) ** 2)))
        t += 0.25 + rng.exponential(1 / spk.blink_rate)
    W[:, art.BASIS.index("blink")] = blink
    if version >= 2:
        W = art.lip_contact(W, *contact, demand=art.closure_demand(segs, times))
    return W


# --------------------------------------------------------------------------- the dataset
def generate(cfg: SynthConfig | None = None, root: str | Path | None = None, overwrite: bool = False,
             progress: bool = True) -> Path:
    """Generate SynthVOCA into `root` (default: data/synthvoca-<name>-<hash>/) and return the path.

    Deterministic from `cfg`. Writes into a temporary folder and renames it at
    the end, so an interrupted run never leaves a half-written dataset behind.
    """
    from tqdm.auto import tqdm

    cfg = cfg or SynthConfig.default()
    root = Path(root) if root is not None else cfg.default_root()
    if (root / "meta.json").exists() and not overwrite:
        return root
    t_start = time.time()
    speakers = make_speakers(cfg)
    sentences = assign_sentences(cfg, speakers)
    base = Template.procedural(cfg.resolution)
    B = art.basis_fields(base)                                          # (K, V, 3)

    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=root.name + ".tmp-", dir=root.parent))
    try:
        (tmp / "seq").mkdir()
        base.save(tmp / "template.npz")
        np.savez_compressed(tmp / "basis.npz", fields=B, names=np.array(art.BASIS))
        seq_meta = []
        train_weights: dict[str, list[np.ndarray]] = {}                  # subject -> (T60, K) per clip
        faces = {s.name: speaker_template(base, s, cfg.resolution) for s in speakers}
        contact = {n: art.contact_geometry(base, B, t.vertices) for n, t in faces.items()} if cfg.version >= 2 else {}
        jobs = [(s, k, idx) for s in speakers for k, idx in enumerate(sentences[s.name], start=1)]
        for spk, k, idx in tqdm(jobs, desc=f"SynthVOCA {cfg.name}", disable=not progress):
            rng = np.random.default_rng([cfg.seed, 3, speaker_number(spk.name), k])
            utt = speak(spk, SENTENCES[idx], rng)
            n60 = int(np.floor(utt.duration * CAPTURE_FPS))
            W = articulate(spk, utt.phonemes, n60, CAPTURE_FPS, rng, cfg.noise, cfg.version, contact.get(spk.name))
            peak = float(np.abs(utt.audio).max())
            if peak > 1.0:   # should not happen with the gains above; never clip silently
                raise RuntimeError(f"{spk.name} sentence {k}: audio peak {peak:.2f} > 1 would clip")
            name = f"{spk.name}_sentence{k:02d}"
            if spk.split == "train":
                train_weights.setdefault(spk.name, []).append(W.astype(np.float32))
            np.savez_compressed(
                tmp / "seq" / f"{name}.npz", weights=W.astype(np.float32),
                audio=np.round(utt.audio * 32767).astype(np.int16),
                ph_start=np.array([p[0] for p in utt.phonemes], np.float32),
                ph_end=np.array([p[1] for p in utt.phonemes], np.float32),
                ph_name=np.array([p[2] for p in utt.phonemes]))
            seq_meta.append(dict(name=name, subject=spk.name, sentence=k, corpus_index=idx,
                                 text=SENTENCES[idx], frames_60fps=n60, seconds=round(utt.duration, 4)))
        np.savez_compressed(tmp / "speakers.npz", names=np.array([s.name for s in speakers]),
                            identity=np.array([s.identity for s in speakers], np.float32),
                            style=np.stack([s.style_vector() for s in speakers]),
                            deviations=np.stack([s.deviations for s in speakers]))
        meta = dict(format_version=FORMAT_VERSION, config=cfg.fields(), key=cfg.key(), capture_fps=CAPTURE_FPS,
                    fps=CAPTURE_FPS // 2, sample_rate=16000, basis=list(art.BASIS),
                    style_factors=list(STYLE_FACTORS), audible_factors=list(AUDIBLE_FACTORS), style_kinds=STYLE_KINDS,
                    speakers=[s.to_json() for s in speakers], sequences=seq_meta,
                    generation_seconds=round(time.time() - t_start, 2))
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        _fit_fid_extractor(tmp, base, B, train_weights, [faces[s.name] for s in speakers if s.split == "train"])
        if root.exists():
            shutil.rmtree(root)
        os.replace(tmp, root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root


def _fit_fid_extractor(root: Path, base: Template, basis: np.ndarray, train_weights: dict[str, list[np.ndarray]],
                       templates: list[Template]) -> None:
    """Fit the FID feature extractor on the train split's ground truth (30 fps, as loaded) and save it
    with the data. Vertices are rebuilt from the generated weights: template + weights[::2] @ basis."""
    from ..metrics import MotionFeatureExtractor
    K, V, _ = basis.shape
    seqs, tmpls = [], []
    for t in templates:
        for W in train_weights[t.name]:
            W30 = W[::2]                                                       # 60 -> 30 fps, as the loader
            seqs.append((t.vertices[None] + (W30 @ basis.reshape(K, V * 3)).reshape(len(W30), V, 3)).astype(np.float32))
            tmpls.append(t.vertices)
    # SynthVOCA motion is exactly a combination of the 13 basis fields, about 10 of
    # which move the lower face, so 10 components (not the 16 used for VOCASET)
    ext = MotionFeatureExtractor.fit(seqs, tmpls, base.mask("lower_face"), n_components=10)
    ext.save(root / "fid_extractor.npz")


def load_speakers(root: str | Path) -> list[Speaker]:
    """The speakers of a generated dataset, with their hidden style."""
    root = Path(root)
    meta = json.loads((root / "meta.json").read_text())
    z = np.load(root / "speakers.npz")
    out = []
    for i, d in enumerate(meta["speakers"]):
        out.append(Speaker(name=d["name"], split=d["split"], voice=d["voice"], pitch_factor=d["pitch_factor"],
                           z=d["z"], audio_factors=d["audio_factors"], identity=d["identity"],
                           deviations=z["deviations"][i], blink_rate=d["blink_rate"]))
    return out


def speaker_template(base: Template, spk: Speaker, resolution: str) -> Template:
    """A speaker's neutral face: the procedural head with their identity shape."""
    t = Template.procedural(resolution, identity=spk.identity)
    return base.with_vertices(t.vertices, name=spk.name)
