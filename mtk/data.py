"""Datasets: SynthVOCA and the real VOCASET behind one `Sequence` interface, a torch Dataset and collate.

The VOCASET protocol of FaceFormer, CodeTalker, SelfTalk and MemoryTalker
(`baselines.md` section 1): vertices recorded at 60 fps are subsampled `[::2]` to
30 fps; audio is 16 kHz mono; 8 train / 2 validation / 2 test speakers; train
speakers use sentences 1-40, validation and test speakers sentences 21-40. Test
speakers are never seen in training. SynthVOCA follows the same protocol (its
raw weights are at 60 fps too), and its evaluation sentences are the second
half of each speaker's list; the first half of a test speaker is the
"reference" part (Imitator adapts its style code on it; nobody evaluates on it).

What a `FaceDataset` item holds (one clip):

    audio      (N,) float32, 16 kHz mono
    vertices   (T, V*3) float32, metres, 30 fps
    template   (V*3,) float32, metres
    speaker    int, index into the training speakers (-1 for unseen speakers)
    one_hot    (n_train,) float32 (all zeros for unseen speakers)
    phonemes   (T,) int64, index into `articulation.PHONEMES`, -1 where unknown
    style      (S,) float32, the speaker's true style vector (SynthVOCA only; for analysis)
    subject, sentence, name
"""
from __future__ import annotations

import copy
import json
import pickle
import re
import shutil
import warnings
from dataclasses import dataclass, field
from math import gcd
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .synthvoca.template import Template

FPS = 30
SAMPLE_RATE = 16000

VOCASET_SUBJECTS = {
    "train": ["FaceTalk_170728_03272_TA", "FaceTalk_170904_00128_TA", "FaceTalk_170725_00137_TA",
              "FaceTalk_170915_00223_TA", "FaceTalk_170811_03274_TA", "FaceTalk_170913_03279_TA",
              "FaceTalk_170904_03276_TA", "FaceTalk_170912_03278_TA"],
    "val": ["FaceTalk_170811_03275_TA", "FaceTalk_170908_03277_TA"],
    "test": ["FaceTalk_170809_00138_TA", "FaceTalk_170731_00024_TA"],
}
VOCASET_SENTENCES = {"train": range(1, 41), "val": range(21, 41), "test": range(21, 41)}
# VOCASET lacks 7 of its 480 sequences (CodeTalker issue #42; Imitator's 473 weight files).
VOCASET_KNOWN_MISSING = frozenset({
    "FaceTalk_170811_03274_TA_sentence01", "FaceTalk_170811_03274_TA_sentence02",
    "FaceTalk_170811_03274_TA_sentence24", "FaceTalk_170913_03279_TA_sentence12",
    "FaceTalk_170913_03279_TA_sentence38", "FaceTalk_170912_03278_TA_sentence11",
    "FaceTalk_170809_00138_TA_sentence32",
})


# --------------------------------------------------------------------------- audio io
def load_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Read a sound file as mono float32 at `sample_rate` (downmixes channels, resamples with resample_poly)."""
    import soundfile as sf
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: audio file not found")
    try:
        x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # noqa: BLE001 - soundfile raises several types; rethrow with the file name
        raise ValueError(f"{path}: cannot read audio ({e})") from e
    if x.size == 0:
        raise ValueError(f"{path}: the audio file holds no samples")
    if not np.isfinite(x).all():
        raise ValueError(f"{path}: {int((~np.isfinite(x)).sum())} audio samples are NaN or infinite")
    return to_mono_16k(x, sr, source=str(path), sample_rate=sample_rate)


def to_mono_16k(x: np.ndarray, sr: int, source: str = "audio", sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """(N,) or (N, C) samples at `sr` -> (N',) float32 mono at `sample_rate`."""
    from scipy.signal import resample_poly
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 2:
        if x.shape[1] > x.shape[0]:
            raise ValueError(f"{source}: audio has shape {x.shape}, expected (N, channels) with the samples "
                             "along the first axis (soundfile's layout); pass the transpose of a channels-first array")
        x = x.mean(axis=1)
    elif x.ndim != 1:
        raise ValueError(f"{source}: audio has shape {x.shape}, expected (N,) or (N, channels)")
    if isinstance(sr, bool) or int(sr) != sr or sr <= 0:
        raise ValueError(f"{source}: sample rate {sr!r}, expected a positive whole number of Hz")
    if sr != sample_rate:
        g = gcd(int(sr), sample_rate)
        x = resample_poly(x, sample_rate // g, int(sr) // g).astype(np.float32)
    return x


# --------------------------------------------------------------------------- sequences
@dataclass
class Sequence:
    """One clip of one speaker; audio and vertices are read lazily."""

    name: str
    subject: str
    sentence: int
    split: str
    speaker: int                                   # index into the training speakers, -1 if unseen
    template: Template
    _audio: Callable[[], np.ndarray] = field(repr=False)
    _vertices: Callable[[], np.ndarray] = field(repr=False)
    phoneme_intervals: list[tuple[float, float, str]] | None = field(default=None, repr=False)
    text: str | None = None
    style: np.ndarray | None = field(default=None, repr=False)    # the speaker's true style (SynthVOCA only)
    read_per_batch: bool = False                   # large clips read from disk each time, never kept (VOCASET)

    def audio(self) -> np.ndarray:
        """(N,) float32 at 16 kHz."""
        return self._audio()

    def vertices(self) -> np.ndarray:
        """(T, V, 3) float32 metres at the dataset's frame rate (30 fps; BIWI 25)."""
        return self._vertices()

    def phoneme_labels(self, n_frames: int) -> np.ndarray:
        """(T,) int64 phoneme id per frame (the phoneme sounding at frame time t / 30), -1 if unknown."""
        from .synthvoca.articulation import PHONEMES, strip_stress
        if not self.phoneme_intervals:
            return np.full(n_frames, -1, np.int64)
        starts = np.array([p[0] for p in self.phoneme_intervals])
        ids = np.array([PHONEMES.index(strip_stress(p[2])[0]) for p in self.phoneme_intervals])
        k = np.clip(np.searchsorted(starts, np.arange(n_frames) / FPS, side="right") - 1, 0, len(ids) - 1)
        return ids[k]


class SynthVOCA:
    """A generated SynthVOCA dataset (see `mtk.synthvoca`); vertices = template + weights @ basis."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        meta_path = self.root / "meta.json"
        if not meta_path.exists():
            raise FileNotFoundError(f"{self.root}: not a SynthVOCA dataset (no meta.json); "
                                    "generate one with mtk.synthvoca.generate()")
        self.meta = json.loads(meta_path.read_text())
        from .synthvoca import FORMAT_VERSION, load_speakers, speaker_template
        if self.meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{meta_path}: format_version {self.meta.get('format_version')}, expected "
                             f"{FORMAT_VERSION}; regenerate with mtk.synthvoca.generate(overwrite=True)")
        self.template = Template.load(self.root / "template.npz")
        b = np.load(self.root / "basis.npz")
        self.basis = b["fields"]                                          # (K, V, 3)
        self.speakers = load_speakers(self.root)
        res = self.meta["config"]["resolution"]
        self.templates = {s.name: speaker_template(self.template, s, res) for s in self.speakers}
        self.train_subjects = [s.name for s in self.speakers if s.split == "train"]
        self._seq_meta = {d["name"]: d for d in self.meta["sequences"]}

    def __repr__(self):
        n = {sp: sum(s.split == sp for s in self.speakers) for sp in ("train", "val", "test")}
        return f"SynthVOCA({self.root.name}: {len(self._seq_meta)} clips, speakers {n})"

    has_phonemes = True               # every clip carries its phoneme timings

    @property
    def config(self) -> dict:
        return self.meta["config"]

    @property
    def key(self) -> str:
        """The dataset's identity for run names: the generator's key (config and code), not its path."""
        return self.meta["key"]

    def training_subset(self, n_speakers: int, sentences: int) -> "SynthVOCA":
        """The same dataset with only its first `n_speakers` training speakers, each reading its first
        `sentences` sentences: a speaker-count sweep at a fixed number of training clips (the nested pool of
        `SynthConfig.speaker_pool`). Validation and test speakers, the FID extractor (fitted on the whole
        training split) and every file stay the same; the key names the subset, so runs are kept apart.
        Raises ValueError naming the speaker that reads fewer sentences than asked."""
        train = [s for s in self.speakers if s.split == "train"]
        if not 1 <= n_speakers <= len(train):
            raise ValueError(f"{self.root}: training_subset({n_speakers}, ...): the dataset has {len(train)} "
                             "training speakers")
        keep = {s.name for s in train[:n_speakers]}
        clips = [d for d in self.meta["sequences"] if d["subject"] in keep and d["sentence"] <= sentences]
        for name in sorted(keep):
            have = sum(d["subject"] == name for d in clips)
            if have < sentences:
                raise ValueError(f"{self.root}: training speaker {name} reads {have} sentences, "
                                 f"training_subset asked for {sentences}")
        sub = copy.copy(self)
        dropped = {s.name for s in train} - keep
        sub.speakers = [s for s in self.speakers if s.name not in dropped]
        sub.templates = {k: v for k, v in self.templates.items() if k not in dropped}
        sub.train_subjects = [s.name for s in train[:n_speakers]]
        sub.meta = {**self.meta, "key": f"{self.key}-train{n_speakers}x{sentences}",
                    "sequences": [d for d in self.meta["sequences"]
                                  if d["subject"] not in dropped and (d["subject"] not in keep or d["sentence"] <= sentences)]}
        sub._seq_meta = {d["name"]: d for d in sub.meta["sequences"]}
        return sub

    def subjects(self, split: str) -> list[str]:
        return [s.name for s in self.speakers if split in ("all", s.split)]

    def speaker(self, subject: str):
        return next(s for s in self.speakers if s.name == subject)

    def style(self, subject: str) -> np.ndarray:
        """The true style vector of a speaker (for analysis: audibility, bounds)."""
        return self.speaker(subject).style_vector()

    def _npz(self, name: str):
        path = self.root / "seq" / f"{name}.npz"
        try:
            return np.load(path)
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: missing SynthVOCA clip; the dataset is incomplete, regenerate it") from None

    def weights_60fps(self, name: str) -> np.ndarray:
        return self._npz(name)["weights"]

    def vertices_60fps(self, name: str, step: int = 1) -> np.ndarray:
        """(T60, V, 3) at the 60 fps 'capture' rate (every `step`-th frame): template + weights @ basis."""
        d = self._seq_meta[name]
        W = self.weights_60fps(name)[::step]                             # (T, K)
        t = self.templates[d["subject"]].vertices                        # (V, 3)
        K, V, _ = self.basis.shape
        return (t[None] + (W @ self.basis.reshape(K, V * 3)).reshape(len(W), V, 3)).astype(np.float32)

    def sequences(self, split: str = "train", part: str = "protocol") -> list[Sequence]:
        """Clips of a split ("train", "val", "test", "all").

        part: "protocol" (train: every sentence; val/test: the second half, as
        VOCASET's 21-40), "reference" (the first half of val/test speakers, held
        out from evaluation), or "all".
        """
        if split not in ("train", "val", "test", "all"):
            raise ValueError(f"split {split!r}, expected 'train', 'val', 'test' or 'all'")
        if part not in ("protocol", "reference", "all"):
            raise ValueError(f"part {part!r}, expected 'protocol', 'reference' or 'all'")
        n = self.meta["config"]["sentences_per_speaker"]
        out = []
        for d in self.meta["sequences"]:
            spk = self.speaker(d["subject"])
            if split not in ("all", spk.split):
                continue
            second_half = d["sentence"] > n // 2
            if spk.split != "train" and part != "all" and second_half != (part == "protocol"):
                continue
            if spk.split == "train" and part == "reference":
                continue
            out.append(self._sequence(d, spk))
        return out

    def _sequence(self, d: dict, spk) -> Sequence:
        name = d["name"]

        def audio(name=name):
            return self._npz(name)["audio"].astype(np.float32) / 32767.0

        def vertices(name=name):
            return self.vertices_60fps(name, step=2)                          # 60 -> 30 fps

        z = self._npz(name)
        phon = [(float(a), float(b), str(c)) for a, b, c in zip(z["ph_start"], z["ph_end"], z["ph_name"])]
        speaker = self.train_subjects.index(spk.name) if spk.name in self.train_subjects else -1
        return Sequence(name, spk.name, d["sentence"], spk.split, speaker, self.templates[spk.name],
                        audio, vertices, phon, d["text"], spk.style_vector())

    def extractor(self):
        """The FID motion-feature extractor saved with the dataset."""
        from .metrics import MotionFeatureExtractor
        return MotionFeatureExtractor.load(self.root / "fid_extractor.npz")


class VOCASET:
    """FaceFormer-processed VOCASET (or any dataset in that layout, e.g. an exported SynthVOCA).

        root/vertices_npy/<subject>_sentenceNN.npy   (T60, V*3) float, metres, 60 fps
        root/wav/<subject>_sentenceNN.wav            any sample rate, mono or stereo
        root/templates.pkl                           {subject: (V, 3)}
        root/FLAME_sample.ply, root/FLAME_masks.pkl  optional: faces and region masks (the masks are
                                                     needed to train and evaluate: lips, upper face)
        root/mtk_template.npz                        optional: faces and masks (exported SynthVOCA)
        root/mtk_splits.json                         optional: {"subjects": {split: [...]}, "sentences":
                                                     {split: [first, last]}} instead of VOCASET's standard
                                                     split (exported SynthVOCA)

    Vertex files are memory-mapped, so a full VOCASET never sits in RAM at once. Opening the folder
    checks every file cheaply (headers, shapes, dtypes, the first frame, audio lengths) and raises an
    error naming the file for anything malformed: a missing or unreadable file, a non-numeric array,
    NaN or infinite values, vertices in millimetres, an empty wav, audio and vertices of lengths more
    than MAX_LENGTH_MISMATCH seconds apart (a warning above WARN_LENGTH_MISMATCH). Each clip's full
    vertex array and audio are checked for NaN/inf when they are read.
    """

    MAX_LENGTH_MISMATCH = 0.5         # seconds between audio and vertex lengths: an error beyond this
    WARN_LENGTH_MISMATCH = 0.1        # ... and a warning beyond this
    has_phonemes = False              # VOCASET has no phoneme alignment
    NAME = "VOCASET"                  # in messages and the dataset key (a subclass reads another layout: mtk.biwi)
    REGION_FILES = "FLAME_masks.pkl (from the FLAME website)"   # where the lips and upper-face regions come from
    CAPTURE_FPS = 60                  # the vertex files' frame rate ...
    FRAME_STEP = 2                    # ... and the step the loader takes: 60 -> 30 fps, as FaceFormer's loader

    def __init__(self, root: str | Path, subjects: dict[str, list[str]] | None = None,
                 sentences: dict[str, range] | None = None, known_missing=VOCASET_KNOWN_MISSING,
                 strict: bool = True):
        self.root = Path(root)
        own = json.loads((self.root / "mtk_splits.json").read_text()) if (self.root / "mtk_splits.json").exists() else {}
        self.subjects_by_split = subjects or own.get("subjects") or VOCASET_SUBJECTS
        self.sentence_ranges = sentences or {sp: range(a, b + 1) for sp, (a, b) in own.get("sentences", {}).items()} \
            or VOCASET_SENTENCES
        need = [self.root / "vertices_npy", self.root / "wav", self.root / "templates.pkl"]
        missing = [str(p) for p in need if not p.exists()]
        if missing:
            raise FileNotFoundError(f"{self.NAME} at {self.root} is incomplete; missing: {missing}. Expected the "
                                    "FaceFormer-processed layout (vertices_npy/, wav/, templates.pkl); see README 'Data'.")
        self.train_subjects = list(self.subjects_by_split["train"])
        raw = self._read_templates()
        self.template = self._base_template(raw)
        self.templates: dict[str, Template] = {s: self.template.with_vertices(v, name=s) for s, v in raw.items()}
        self._index = self._scan(known_missing, strict)

    def __repr__(self):
        n = {sp: sum(v[0] == sp for v in self._index.values()) for sp in self.subjects_by_split}
        return f"{self.NAME}({self.root}: {len(self._index)} clips, {n})"

    # ------------------------------------------------------------------ checks on opening
    def _read_templates(self) -> dict[str, np.ndarray]:
        """templates.pkl -> {subject: (V, 3) float32}, every required subject present, one V for all, metres."""
        path = self.root / "templates.pkl"
        with open(path, "rb") as f:
            try:
                raw = pickle.load(f, encoding="latin1")
            except Exception as e:  # noqa: BLE001
                raise ValueError(f"{path}: cannot unpickle ({e})") from e
        if not isinstance(raw, dict) or not raw:
            raise ValueError(f"{path}: holds {type(raw).__name__}"
                             f"{' (empty)' if isinstance(raw, dict) else ''}; expected a dict {{subject: (V, 3) "
                             "vertices}}")
        wanted = self.subjects("all")
        absent = [s for s in wanted if s not in raw]
        if absent:
            raise KeyError(f"{path} has no template for subject(s) {absent}; it has {sorted(raw)[:12]}")
        arrays = {}
        for s in wanted:
            try:
                arrays[s] = np.asarray(raw[s], dtype=np.float32)
            except (TypeError, ValueError) as e:
                raise ValueError(f"{path}[{s!r}]: not a numeric array ({e}); expected (V, 3) vertices") from None
        V = self._vertex_count(arrays)
        out = {}
        for s, v in arrays.items():
            if v.size != V * 3:
                raise ValueError(f"{path}[{s!r}] has shape {v.shape}, expected ({V}, 3) like the other subjects")
            v = v.reshape(V, 3)
            if not np.isfinite(v).all():
                raise ValueError(f"{path}[{s!r}]: {int((~np.isfinite(v)).sum())} coordinates are NaN or infinite")
            if np.ptp(v, axis=0).max() > 10:
                raise ValueError(f"{path}[{s!r}] spans {np.ptp(v, axis=0).max():.0f} units: {self.NAME} is in metres "
                                 "(a head is about 0.2 m); these look like millimetres")
            out[s] = v
        return out

    def _vertex_count(self, arrays: dict[str, np.ndarray]) -> int:
        """V from the mesh files if there are any, else the size most subjects' templates agree on."""
        if (self.root / "mtk_template.npz").exists():
            return Template.load(self.root / "mtk_template.npz").V
        if (self.root / "FLAME_sample.ply").exists():
            from .synthvoca.template import read_ply
            return len(read_ply(self.root / "FLAME_sample.ply")[0])
        sizes = [v.size for v in arrays.values()]
        return max(set(sizes), key=sizes.count) // 3

    def _base_template(self, raw: dict[str, np.ndarray]) -> Template:
        first = raw[self.train_subjects[0]]
        if (self.root / "mtk_template.npz").exists():
            return Template.load(self.root / "mtk_template.npz")
        ply = self.root / "FLAME_sample.ply"
        masks = self.root / "FLAME_masks.pkl"
        return Template.from_flame(first, ply if ply.exists() else None, masks if masks.exists() else None)

    def _scan(self, known_missing, strict):
        import soundfile as sf
        found, skipped, absent, drift = {}, [], [], []
        V3 = self.template.V * 3
        for split, subs in self.subjects_by_split.items():
            for subj in subs:
                for k in self.sentence_ranges[split]:
                    name = self._clip_name(subj, k)
                    npy, wav = self.root / "vertices_npy" / f"{name}.npy", self.root / "wav" / f"{name}.wav"
                    if not npy.exists() or not wav.exists():
                        (skipped if name in known_missing else absent).append(name)
                        continue
                    n = self._check_vertex_file(npy, V3, self.templates[subj])   # frames at CAPTURE_FPS
                    try:
                        info = sf.info(str(wav))
                    except Exception as e:  # noqa: BLE001
                        raise ValueError(f"{wav}: cannot read audio ({e})") from e
                    if info.frames == 0:
                        raise ValueError(f"{wav}: the audio file holds no samples")
                    gap = abs(info.frames / info.samplerate - n / self.CAPTURE_FPS)
                    if gap > self.MAX_LENGTH_MISMATCH:
                        raise ValueError(f"{wav}: {info.frames / info.samplerate:.2f} s of audio for {n / self.CAPTURE_FPS:.2f} s "
                                         f"of vertices ({npy.name}); expected them to agree within "
                                         f"{self.MAX_LENGTH_MISMATCH} s")
                    if gap > self.WARN_LENGTH_MISMATCH:
                        drift.append(f"{name} ({gap:.2f} s)")
                    found[name] = (split, subj, k, npy, wav)
        if skipped:
            warnings.warn(f"{self.NAME}: skipping {len(skipped)} known-missing sequences: {sorted(skipped)}", stacklevel=3)
        if drift:
            warnings.warn(f"{self.NAME} at {self.root}: audio and vertex lengths differ by more than "
                          f"{self.WARN_LENGTH_MISMATCH} s in {len(drift)} clips: {drift[:10]}"
                          + (" ..." if len(drift) > 10 else "") + "; the audio is stretched to the vertex frames",
                          stacklevel=3)
        if absent:
            msg = f"{self.NAME} at {self.root}: {len(absent)} sequences missing: {sorted(absent)[:20]}" + \
                  (" ..." if len(absent) > 20 else "")
            if strict:
                raise FileNotFoundError(msg + " (pass strict=False to skip them with a warning)")
            warnings.warn(msg + "; skipped", stacklevel=3)
        return found

    def _clip_name(self, subject: str, sentence: int) -> str:
        """The file stem of a clip (VOCASET: <subject>_sentenceNN)."""
        return f"{subject}_sentence{sentence:02d}"

    @property
    def fps(self) -> float:
        """Frame rate of the clips the loader returns (VOCASET: 30)."""
        return self.CAPTURE_FPS / self.FRAME_STEP

    def _check_vertex_file(self, npy: Path, V3: int, template: Template) -> int:
        """Header, dtype, shape and first frame of a vertex file (memory-mapped) -> its number of frames at
        CAPTURE_FPS."""
        try:
            arr = np.load(npy, mmap_mode="r")
        except Exception as e:  # noqa: BLE001
            raise ValueError(f"{npy}: unreadable vertex file ({e}); expected a (T, {V3}) float array") from e
        if not np.issubdtype(arr.dtype, np.floating) and not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"{npy}: vertex array has dtype {arr.dtype}, expected floats (metres)")
        if arr.ndim != 2 or arr.shape[1] != V3 or arr.shape[0] < 2:
            raise ValueError(f"{npy}: vertex array has shape {arr.shape}, expected (T>=2, {V3}) "
                             f"= (frames at {self.CAPTURE_FPS} fps, {V3 // 3} vertices x 3)")
        first = np.asarray(arr[0], dtype=np.float64)
        if not np.isfinite(first).all():
            raise ValueError(f"{npy}: the first frame has NaN or infinite coordinates")
        span = np.ptp(first.reshape(-1, 3), axis=0).max()
        if span > 10 * max(np.ptp(template.vertices, axis=0).max(), 0.1):
            raise ValueError(f"{npy}: the face spans {span:.0f} units, the subject's template "
                             f"{np.ptp(template.vertices, axis=0).max():.2f}: {self.NAME} is in metres; these look like "
                             "millimetres")
        return int(arr.shape[0])

    # ------------------------------------------------------------------ identity and clips
    @property
    def key(self) -> str:
        """The dataset's identity for run names: its clips, their lengths and its templates; not its path."""
        import hashlib
        h = hashlib.sha1((self.root / "templates.pkl").read_bytes())
        for name, (_, _, _, npy, wav) in sorted(self._index.items()):
            h.update(f"{name}:{npy.stat().st_size}:{wav.stat().st_size}".encode())
        return f"{self.NAME.lower()}-" + h.hexdigest()[:10]

    def subjects(self, split: str) -> list[str]:
        return [s for sp, subs in self.subjects_by_split.items() for s in subs if split in ("all", sp)]

    FID_COMPONENTS = 16               # principal components of the FID features on FLAME meshes

    def extractor(self):
        """The FID motion-feature extractor (`metrics.MotionFeatureExtractor`: lower-face displacements, principal
        components, 8-frame windows), the same definition as SynthVOCA's. A folder exported by the kit
        (`export_vocaset_layout`) brings its own (`mtk_fid_extractor.npz`, the one its SynthVOCA was scored with);
        otherwise it is fitted on this dataset's training split on first use (`fit_extractor`, 16 components)
        and kept in runs/fid-extractors/<dataset key>.npz, so every run on the same data scores FID with the
        same features."""
        from .metrics import MotionFeatureExtractor
        from .paths import runs_dir
        if (self.root / "mtk_fid_extractor.npz").exists():
            return MotionFeatureExtractor.load(self.root / "mtk_fid_extractor.npz")
        path = runs_dir() / "fid-extractors" / f"{self.key}.npz"
        if path.exists():
            return MotionFeatureExtractor.load(path)
        ext = self.fit_extractor(self.FID_COMPONENTS)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        ext.save(tmp)
        tmp.replace(path)
        return ext

    def fit_extractor(self, n_components: int = FID_COMPONENTS):
        """Fit the FID extractor on the training split's ground truth. Needs the template's `lower_face` region
        (from FLAME_masks.pkl). Only lower-face vertices are held while fitting (about 0.5 GB for VOCASET's
        training split rather than 2.8 GB of whole meshes); the result is the extractor a fit on whole meshes
        gives."""
        from .metrics import MotionFeatureExtractor
        if "lower_face" not in self.template.masks:
            raise ValueError(f"{self.NAME} at {self.root}: the template has no lower_face region, which FID's features "
                             f"use; add FLAME's region masks as {self.root / 'FLAME_masks.pkl'} (from the FLAME website)")
        idx = self.template.mask("lower_face")
        seqs = self.sequences("train")
        fit = MotionFeatureExtractor.fit([s.vertices()[:, idx] for s in seqs], [s.template.vertices[idx] for s in seqs],
                                         np.arange(len(idx)), n_components=n_components)
        return MotionFeatureExtractor(idx, self.template.V, fit.mean, fit.components, fit.scale, fit.window, fit.hop,
                                      fit.explained_variance_ratio, fit.n_train_frames, fit.n_train_seqs)

    def sequences(self, split: str = "train", part: str = "protocol") -> list[Sequence]:
        """Clips of a split; part "protocol" uses the standard sentence ranges (the only one VOCASET has)."""
        if part != "protocol":
            raise ValueError(f"{self.NAME} has only the 'protocol' part, got {part!r}")
        out = []
        for name, (sp, subj, k, npy, wav) in self._index.items():
            if split not in ("all", sp):
                continue
            spk = self.train_subjects.index(subj) if subj in self.train_subjects else -1

            def vertices(npy=npy):
                arr = np.load(npy, mmap_mode="r")[::self.FRAME_STEP]       # 60 -> 30 fps, still memory-mapped
                v = np.array(arr, dtype=np.float32).reshape(len(arr), -1, 3)   # a copy of these frames only
                if not np.isfinite(v).all():
                    raise ValueError(f"{npy}: {int((~np.isfinite(v)).sum())} vertex coordinates are NaN or infinite")
                return v

            out.append(Sequence(name, subj, k, sp, spk, self.templates[subj],
                                lambda wav=wav: load_audio(wav), vertices, read_per_batch=True))
        return out


class BIWI(VOCASET):
    """FaceFormer-processed BIWI (`mtk.biwi`: the layout, the split, the sources); `protocol` "A" (the training
    speakers' sentences 37-40) or "B" (the unseen speakers')."""

    NAME = "BIWI"
    CAPTURE_FPS = 25
    FRAME_STEP = 1
    REGION_FILES = "regions/lve.txt and regions/fdd.txt (CodeTalker's BIWI regions)"

    def __init__(self, root: str | Path, protocol: str = "A", strict: bool = True):
        from .biwi import PROTOCOLS, SENTENCES, TRAIN_SUBJECTS, UNSEEN_SUBJECTS
        if protocol not in PROTOCOLS:
            raise ValueError(f"BIWI protocol {protocol!r}: expected 'A' (BIWI-Test-A: the training speakers' "
                             f"sentences 37-40) or 'B' (BIWI-Test-B: the unseen speakers {UNSEEN_SUBJECTS})")
        self.protocol = protocol
        self._stems: dict[tuple[str, int], str] | None = None
        subjects = {"train": TRAIN_SUBJECTS, "val": TRAIN_SUBJECTS, "test": PROTOCOLS[protocol]}
        super().__init__(root, subjects=subjects, sentences=dict(SENTENCES), known_missing=frozenset(), strict=strict)

    def __repr__(self):
        return super().__repr__().replace("BIWI(", f"BIWI-Test-{self.protocol}(", 1)

    def _clip_name(self, subject: str, sentence: int) -> str:
        """The stem of <subject>_<letters><two digits>.wav in wav/ (F2_e01, F2_01); a missing clip gets the
        plain name, which the scan reports as missing; two files for one clip are an error."""
        if self._stems is None:
            self._stems = {}
            pattern = re.compile(r"^(?P<subject>[FM]\d+)_[A-Za-z]*(?P<sentence>\d{2})$")
            for wav in sorted((self.root / "wav").glob("*.wav")):
                m = pattern.match(wav.stem)
                if not m:
                    continue
                key = (m["subject"], int(m["sentence"]))
                if key in self._stems:
                    raise ValueError(f"{self.root / 'wav'}: two files for {key[0]} sentence {key[1]}: "
                                     f"{self._stems[key]}.wav and {wav.name}; expected one")
                self._stems[key] = wav.stem
        return self._stems.get((subject, sentence), f"{subject}_{sentence:02d}")

    def extractor(self):
        """FID's motion features need a lower-face region, which BIWI's region files do not define: None (the
        metrics then leave FID out, saying so) unless the template has one."""
        return super().extractor() if "lower_face" in self.template.masks else None

    def _vertex_count(self, arrays: dict[str, np.ndarray]) -> int:
        sizes = [v.size for v in arrays.values()]
        return max(set(sizes), key=sizes.count) // 3

    def _base_template(self, raw: dict[str, np.ndarray]) -> Template:
        """The first training speaker's neutral face, with faces from rigid_scans/<subject>.obj and the masks
        `lips` / `upper_face` from regions/lve.txt / fdd.txt when present."""
        from .biwi import read_indices, read_obj_faces
        first = self.train_subjects[0]
        verts = raw[first]
        faces = np.zeros((0, 3), np.int32)
        obj = self.root / "rigid_scans" / f"{first}.obj"
        if obj.exists():
            faces = read_obj_faces(obj, len(verts))
        masks = {}
        for name, file in (("lips", "lve.txt"), ("upper_face", "fdd.txt")):
            path = self.root / "regions" / file
            if path.exists():
                masks[name] = read_indices(path, len(verts))
        return Template("biwi", verts, faces, masks, {})



def export_vocaset_layout(root: str | Path, out: str | Path) -> Path:
    """Write a SynthVOCA dataset in FaceFormer's processed VOCASET layout (read back by `VOCASET`).

    out/vertices_npy/<subject>_sentenceNN.npy   (T60, V*3) float32, metres, 60 fps
    out/wav/<subject>_sentenceNN.wav            16 kHz PCM16 mono
    out/templates.pkl                           {subject: (V, 3)}
    out/mtk_template.npz                        faces and region masks (FLAME_sample.ply's role)
    out/mtk_fid_extractor.npz                   the FID extractor the SynthVOCA was scored with
    out/mtk_splits.json                         its speakers per split and sentence ranges (the protocol's:
                                                training speakers all their sentences, the others 21-40 of 40)
    """
    import soundfile as sf

    ds = SynthVOCA(root)
    out = Path(out)
    (out / "vertices_npy").mkdir(parents=True, exist_ok=True)
    (out / "wav").mkdir(exist_ok=True)
    templates = {}
    for seq in ds.sequences("all"):
        v60 = ds.vertices_60fps(seq.name)                                # (T60, V, 3)
        np.save(out / "vertices_npy" / f"{seq.name}.npy", v60.reshape(len(v60), -1).astype(np.float32))
        sf.write(out / "wav" / f"{seq.name}.wav", seq.audio(), 16000, subtype="PCM_16")
        templates[seq.subject] = seq.template.vertices
    with open(out / "templates.pkl", "wb") as f:
        pickle.dump(templates, f)
    ds.template.save(out / "mtk_template.npz")
    shutil.copyfile(ds.root / "fid_extractor.npz", out / "mtk_fid_extractor.npz")
    n_train = max(s.sentence for s in ds.sequences("train"))
    n = max(s.sentence for s in ds.sequences("all"))
    splits = {"subjects": {sp: ds.subjects(sp) for sp in ("train", "val", "test")},
              "sentences": {"train": [1, n_train], "val": [n // 2 + 1, n], "test": [n // 2 + 1, n]}}
    (out / "mtk_splits.json").write_text(json.dumps(splits, indent=1))
    return out


# --------------------------------------------------------------------------- torch
class FaceDataset(torch.utils.data.Dataset):
    """Sequences as dicts of tensors (see the module docstring), for a DataLoader with `collate`.

    cache: keep each item once read (SynthVOCA's clips are small). Never for clips marked `read_per_batch`
    (VOCASET: about 11 MB each, 3.6 GB for its training set), so memory stays flat whatever the dataset's size."""

    def __init__(self, sequences: list[Sequence], n_train_speakers: int, cache: bool = False):
        self.sequences = list(sequences)
        self.n_train = n_train_speakers
        cache = cache and not any(s.read_per_batch for s in self.sequences)
        self._cache: dict[int, dict] | None = {} if cache else None

    def __len__(self):
        return len(self.sequences)

    def __getitem__(self, i: int) -> dict:
        if self._cache is not None and i in self._cache:
            return self._cache[i]
        s = self.sequences[i]
        verts = s.vertices()                                              # (T, V, 3)
        T = len(verts)
        one_hot = np.zeros(self.n_train, np.float32)
        if s.speaker >= 0:
            one_hot[s.speaker] = 1.0
        item = dict(audio=torch.from_numpy(np.ascontiguousarray(s.audio(), dtype=np.float32)),
                    vertices=torch.from_numpy(verts.reshape(T, -1)),
                    template=torch.from_numpy(s.template.vertices.reshape(-1).copy()),
                    speaker=s.speaker, one_hot=torch.from_numpy(one_hot),
                    phonemes=torch.from_numpy(s.phoneme_labels(T)),
                    subject=s.subject, sentence=s.sentence, name=s.name)
        if s.style is not None:
            item["style"] = torch.from_numpy(np.asarray(s.style, np.float32))
        if self._cache is not None:
            self._cache[i] = item
        return item


def collate(batch: list[dict]) -> dict:
    """Pad a list of items into a batch.

    audio (B, N_max) with audio_mask (B, N_max) bool; vertices (B, T_max, V*3)
    with frame_mask (B, T_max) bool (True = real frame); phonemes (B, T_max),
    padded with -1; template (B, V*3); speaker (B,); one_hot (B, n_train).
    """
    B = len(batch)
    n_audio = [len(b["audio"]) for b in batch]
    n_frames = [len(b["vertices"]) for b in batch]
    Na, T, D = max(n_audio), max(n_frames), batch[0]["vertices"].shape[1]
    audio = torch.zeros(B, Na)
    audio_mask = torch.zeros(B, Na, dtype=torch.bool)
    verts = torch.zeros(B, T, D)
    frame_mask = torch.zeros(B, T, dtype=torch.bool)
    phon = torch.full((B, T), -1, dtype=torch.long)
    for i, b in enumerate(batch):
        audio[i, :n_audio[i]] = b["audio"]
        audio_mask[i, :n_audio[i]] = True
        verts[i, :n_frames[i]] = b["vertices"]
        frame_mask[i, :n_frames[i]] = True
        phon[i, :n_frames[i]] = b["phonemes"]
    extra = {"style": torch.stack([b["style"] for b in batch])} if all("style" in b for b in batch) else {}
    return dict(audio=audio, audio_mask=audio_mask, vertices=verts, frame_mask=frame_mask, phonemes=phon, **extra,
                template=torch.stack([b["template"] for b in batch]),
                speaker=torch.tensor([b["speaker"] for b in batch]),
                one_hot=torch.stack([b["one_hot"] for b in batch]),
                n_frames=torch.tensor(n_frames), subject=[b["subject"] for b in batch],
                sentence=[b["sentence"] for b in batch], name=[b["name"] for b in batch])


def length_batches(lengths: list[int], batch_size: int, generator: torch.Generator, megabatch: int = 50) -> list[list[int]]:
    """One epoch's batches, each of clips of similar length, so little of a batch is padding.

    The "sortish" grouping of fairseq and transformers' `group_by_length` (LengthGroupedSampler): a random
    permutation of the clips is cut into mega-batches of `megabatch * batch_size`, each sorted by length
    and cut into batches; the batches are then shuffled. Every clip is used once per epoch, and which
    clips meet in a batch is still random within a mega-batch. lengths: one number per clip (samples)."""
    perm = torch.randperm(len(lengths), generator=generator).tolist()
    size = megabatch * batch_size
    batches = []
    for k in range(0, len(perm), size):
        mega = sorted(perm[k:k + size], key=lambda i: -lengths[i])
        batches += [mega[j:j + batch_size] for j in range(0, len(mega), batch_size)]
    order = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in order]


def motion_scale(sequences: list[Sequence], every: int = 4) -> float:
    """RMS displacement from the template (metres) over every `every`-th sequence: the size of the motion."""
    ss, n = 0.0, 0
    for s in sequences[::every]:
        d = s.vertices() - s.template.vertices
        ss += float((d.astype(np.float64) ** 2).sum())
        n += d.size
    return float(np.sqrt(ss / max(n, 1)))


SYNTHVOCA_PRESETS = ("default", "vocaset", "many", "smoke")


def load_dataset(name_or_root: str | Path = "default", progress: bool = True):
    """The dataset most notebooks start from.

    A SynthVOCA preset by name, generated on first use:
        "default" (also "vocaset")  VOCASET's protocol: 8 / 2 / 2 speakers reading 40 sentences
        "many"                      96 training speakers reading 4 sentences each, 4 / 12 reading 40
                                    (`SynthConfig.many`)
        "smoke"                     a few short clips (the tests)
    or a path: a SynthVOCA folder (has meta.json), a BIWI folder (FaceFormer's layout, speakers F1-M6; BIWI-Test-A,
    `mtk.biwi`) or a VOCASET folder (the real one is loaded by its path).
    """
    from .synthvoca import SynthConfig, generate
    name = str(name_or_root)
    if name in SYNTHVOCA_PRESETS:
        cfg = {"smoke": SynthConfig.smoke, "many": SynthConfig.many}.get(name, SynthConfig.default)()
        return SynthVOCA(generate(cfg, progress=progress))
    root = Path(name_or_root)
    if not root.exists():
        raise FileNotFoundError(f"dataset {name!r}: not a SynthVOCA preset {SYNTHVOCA_PRESETS} and no such folder")
    if (root / "meta.json").exists():
        return SynthVOCA(root)
    if any((root / "wav").glob("F2_*.wav")):                           # BIWI's speaker names (mtk.biwi)
        return BIWI(root)
    return VOCASET(root)
