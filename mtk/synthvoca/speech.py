"""Speech with phoneme timings: espeak-ng through ctypes, from the PyPI package `espeakng-loader`.

espeak-ng is a formant synthesizer. Its C API reports, while it synthesizes, an
event for every phoneme with the sample position where the phoneme starts
(`espeakEVENT_PHONEME`, switched on by `espeakINITIALIZE_PHONEME_EVENTS`). The
wheel `espeakng-loader` bundles `libespeak-ng` 1.52 and all voice data, so no
system install is needed. Facts used here (`offline.md` section 1):

* output is always 22,050 Hz mono int16; we resample to 16 kHz with
  `scipy.signal.resample_poly(x, 320, 441)`;
* phoneme names are Kirshenbaum-like mnemonics ("D", "@2", "'aU"); 1.52 adds
  stress marks ("'" primary, "," secondary) that `articulation.strip_stress` removes;
* each phoneme lasts until the next event starts; "_", "_:" and "_!" are pauses.

`synthesize(..., formant_scale=a)` also applies a resampling warp: the waveform is
played a times as fast, which scales every formant (and the pitch) by a and every
duration by 1/a. Lips that protrude lengthen the vocal tract and lower the
formants; SynthVOCA uses this with a < 1 for speakers who round and protrude
more, and compensates the pitch through espeak-ng's pitch parameter so that
pitch stays independent of style (`pitch_for`).
"""
from __future__ import annotations

import ctypes
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

ESPEAK_RATE = 22050
_AUDIO_OUTPUT_SYNCHRONOUS, _INIT_PHONEME_EVENTS = 0x02, 0x0001
_EV_LIST_TERMINATED, _EV_WORD, _EV_PHONEME = 0, 1, 7
_P_RATE, _P_VOLUME, _P_PITCH, _P_RANGE = 1, 2, 3, 4

# Voices: en-us with one of espeak-ng's variants (they differ in formants, pitch and breathiness).
VOICES = tuple(f"en-us+{v}" for v in ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5"))

# Median F0 relative to pitch 50, measured over four variants (m1, m3, f1, f3) on
# one sentence; used to invert the pitch parameter. log-interpolated.
_PITCH_PARAM = np.array([20, 35, 50, 65, 80])
_PITCH_FACTOR = np.array([0.783, 0.880, 1.0, 1.155, 1.340])


class _ID(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("unique_identifier", ctypes.c_uint), ("text_position", ctypes.c_int),
                ("length", ctypes.c_int), ("audio_position", ctypes.c_int), ("sample", ctypes.c_int),
                ("user_data", ctypes.c_void_p), ("id", _ID)]


_SYNTH_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))
_SRAND = ctypes.CFUNCTYPE(None, ctypes.c_long)


def _elf_symbols(path: str, names: set[str]) -> dict[str, int]:
    """{name: st_value} from a 64-bit little-endian ELF file's symbol tables (.symtab and .dynsym), for `names`.

    Used to reach espeak-ng's internal `espeak_srand`, which the library does not export (below). Returns
    what it finds; an empty dict for anything that is not such an ELF file (e.g. a macOS or Windows build)."""
    import struct
    data = Path(path).read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return {}
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    found = {}
    for _, sh_type, _, _, off, size, link, _, _, entsize in sections:
        if sh_type not in (2, 11) or not entsize:                    # SHT_SYMTAB, SHT_DYNSYM
            continue
        str_off = sections[link][4]
        for k in range(size // entsize):
            st_name, _, _, _, st_value, _ = struct.unpack_from("<IBBHQQ", data, off + k * entsize)
            end = data.index(b"\0", str_off + st_name)
            name = data[str_off + st_name:end].decode("ascii", "replace")
            if name in names and st_value:
                found[name] = st_value
    return found


def _seeder(lib, library_path: str):
    """espeak-ng's noise generator (the breath noise of voices f2, f3, f5) is seeded with time(NULL) at
    initialisation, so those voices came out different from one second to the next. `espeak_srand` is internal:
    its address is the library's load address (from the exported espeak_Initialize) plus its symbol value.
    -> a function seed(int), or None where the symbol cannot be found."""
    sym = _elf_symbols(library_path, {"espeak_srand", "espeak_Initialize"})
    if len(sym) != 2:
        return None
    base = ctypes.cast(lib.espeak_Initialize, ctypes.c_void_p).value - sym["espeak_Initialize"]
    return _SRAND(base + sym["espeak_srand"])


class ESpeak:
    """A ctypes binding to libespeak-ng with phoneme events; use it as a context manager.

    espeak-ng keeps internal state between calls (the same sentence comes out a
    few samples different depending on what was said before, even after
    `espeak_Terminate`), so for reproducible data every `synthesize` call loads
    a fresh copy of the library and unloads it afterwards (about 10 ms). Its noise
    generator, seeded with the clock at initialisation, is re-seeded from the request
    itself before every synthesis (`_seeder`).
    """

    def __init__(self, library_path: str | None = None, data_path: str | None = None):
        if library_path is None or data_path is None:
            try:
                import espeakng_loader
            except ImportError as e:
                raise ImportError("mtk.synthvoca.speech needs the PyPI package 'espeakng-loader' (it bundles libespeak-ng "
                                  "and its voice data): pip install espeakng-loader") from e
            library_path = library_path or espeakng_loader.get_library_path()
            data_path = data_path or espeakng_loader.get_data_path()
        self.data_path = data_path
        self.lib = ctypes.cdll.LoadLibrary(library_path)
        rate = self.lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path.encode(), _INIT_PHONEME_EVENTS)
        if rate != ESPEAK_RATE:
            raise RuntimeError(f"espeak-ng initialisation returned {rate}, expected its sample rate {ESPEAK_RATE} "
                               f"(library {library_path}, data {data_path})")
        self._seed = _seeder(self.lib, library_path)
        if self._seed is None:
            import warnings
            warnings.warn(f"{library_path}: espeak-ng's noise generator cannot be seeded on this build; the breathy "
                          "voices (en-us+f2, f3, f5) will differ from run to run", RuntimeWarning, stacklevel=2)
        self._cb = _SYNTH_CB(self._callback)            # keep a reference: ctypes callbacks must outlive the call
        self.lib.espeak_SetSynthCallback(self._cb)
        self._chunks: list[np.ndarray] = []
        self._events: list[tuple[int, str]] = []

    def close(self):
        """Terminate espeak-ng and unload the library, so the next load starts from a clean state."""
        import _ctypes
        if self.lib is None:
            return
        self.lib.espeak_Terminate()
        handle, self.lib = self.lib._handle, None
        (getattr(_ctypes, "dlclose", None) or getattr(_ctypes, "FreeLibrary"))(handle)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _callback(self, wav, n, events):
        if n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        i = 0
        while events[i].type != _EV_LIST_TERMINATED:
            e = events[i]
            if e.type == _EV_PHONEME:
                self._events.append((e.sample, e.id.string.decode("utf-8", "replace")))
            i += 1
        return 0

    def synth(self, text: str, voice: str = "en-us+m3", rate: int = 175, pitch: int = 50, pitch_range: int = 50):
        """-> (int16 samples at 22,050 Hz, [(start_sample, phoneme), ...])."""
        variant = voice.split("+", 1)[1] if "+" in voice else None
        # espeak-ng falls back silently on an unknown variant: check the voice data ourselves
        bad_variant = variant is not None and not (Path(self.data_path) / "voices" / "!v" / variant).exists()
        if bad_variant or self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise ValueError(f"espeak-ng has no voice {voice!r}; try one of {VOICES}")
        for key, value, lo, hi in ((_P_RATE, rate, 80, 450), (_P_PITCH, pitch, 0, 99), (_P_RANGE, pitch_range, 0, 99)):
            if not lo <= value <= hi:
                raise ValueError(f"espeak-ng parameter {key} = {value} outside [{lo}, {hi}]")
            self.lib.espeak_SetParameter(key, int(value), 0)
        self._chunks, self._events = [], []
        b = text.encode("utf-8")
        if self._seed is not None:                      # the same request always gets the same breath noise
            import zlib
            self._seed(zlib.crc32(f"{voice}|{rate}|{pitch}|{pitch_range}|{text}".encode()))
        self.lib.espeak_Synth(b, len(b) + 1, 0, 0, 0, 0, None, None)
        self.lib.espeak_Synchronize()
        audio = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        return audio, list(self._events)


@dataclass
class Utterance:
    """Synthesized speech.

    audio     (N,) float32 in [-1, 1] at `sample_rate`
    phonemes  [(start_s, end_s, name), ...] covering [0, N / sample_rate] without gaps; names keep stress marks
    """

    text: str
    audio: np.ndarray
    sample_rate: int
    phonemes: list[tuple[float, float, str]] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return len(self.audio) / self.sample_rate


def pitch_for(factor: float) -> int:
    """espeak-ng pitch parameter (0-99) whose median F0 is `factor` times that of pitch 50."""
    lf = np.log(np.clip(factor, _PITCH_FACTOR[0] * 0.8, _PITCH_FACTOR[-1] * 1.2))
    p = np.interp(lf, np.log(_PITCH_FACTOR), _PITCH_PARAM, left=None, right=None)
    # extrapolate linearly beyond the table
    slope_lo = (_PITCH_PARAM[1] - _PITCH_PARAM[0]) / np.log(_PITCH_FACTOR[1] / _PITCH_FACTOR[0])
    slope_hi = (_PITCH_PARAM[-1] - _PITCH_PARAM[-2]) / np.log(_PITCH_FACTOR[-1] / _PITCH_FACTOR[-2])
    if lf < np.log(_PITCH_FACTOR[0]):
        p = _PITCH_PARAM[0] + slope_lo * (lf - np.log(_PITCH_FACTOR[0]))
    elif lf > np.log(_PITCH_FACTOR[-1]):
        p = _PITCH_PARAM[-1] + slope_hi * (lf - np.log(_PITCH_FACTOR[-1]))
    return int(np.clip(round(float(p)), 0, 99))


def synthesize(text: str, voice: str = "en-us+m3", rate: int = 175, pitch: int = 50, pitch_range: int = 50,
               sample_rate: int = 16000, formant_scale: float = 1.0) -> Utterance:
    """Speak `text`; return 16 kHz float32 audio and phoneme intervals in seconds.

    formant_scale a: resampling warp (formants and pitch times a, durations / a);
    phoneme times are scaled with it. With a = 1 this is a plain 22,050 -> 16,000
    resampling (`resample_poly(x, 320, 441)`).
    """
    if not text.strip():
        raise ValueError("synthesize: empty text")
    if not 0.5 < formant_scale < 2.0:
        raise ValueError(f"synthesize: formant_scale {formant_scale} outside (0.5, 2)")
    with ESpeak() as engine:
        raw, events = engine.synth(text, voice, rate, pitch, pitch_range)
    if raw.size == 0 or not events:
        raise RuntimeError(f"espeak-ng produced no audio or no phonemes for {text!r} with voice {voice!r}")
    x = raw.astype(np.float32) / 32768.0
    # playing x `a` times faster at 16 kHz == resampling it from 22,050 to 16,000 / a
    ratio = Fraction(sample_rate / (formant_scale * ESPEAK_RATE)).limit_denominator(2000)
    if formant_scale == 1.0:
        ratio = Fraction(sample_rate, ESPEAK_RATE)
    y = resample_poly(x, ratio.numerator, ratio.denominator).astype(np.float32)
    time_scale = len(y) / sample_rate / (len(x) / ESPEAK_RATE)          # exactly 1/a up to rounding
    duration = len(y) / sample_rate
    starts = [min(s / ESPEAK_RATE * time_scale, duration) for s, _ in events]
    names = [n for _, n in events]
    phonemes: list[tuple[float, float, str]] = []
    if starts[0] > 0:
        phonemes.append((0.0, starts[0], "_"))
    for i, (t0, name) in enumerate(zip(starts, names)):
        t1 = starts[i + 1] if i + 1 < len(starts) else duration
        if t1 > t0:                                                   # drop zero-length events
            phonemes.append((t0, t1, name))
    if phonemes[-1][1] < duration:
        phonemes.append((phonemes[-1][1], duration, "_"))
    return Utterance(text, y, sample_rate, phonemes)


def viseme_coverage(sentences, voice: str = "en-us+m3") -> dict[str, int]:
    """How many sentences contain each viseme, as espeak-ng pronounces them (not by spelling)."""
    from .articulation import VISEMES, viseme_segments
    counts = dict.fromkeys(VISEMES, 0)
    for s in sentences:
        u = synthesize(s, voice)
        for v in {seg[2] for seg in viseme_segments(u.phonemes)}:
            counts[v] += 1
    return counts
