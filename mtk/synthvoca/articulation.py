"""How SynthVOCA turns phonemes into face motion: visemes, an articulation basis, coarticulation.

Pipeline (all deterministic given the speaker's style and a seed):

    phoneme intervals --(PHONEME_VISEME)--> viseme segments
        --(VISEME_TARGETS, speaker style)--> per-segment articulator targets
        --(dominance-function coarticulation)--> articulator curves (T, 6)
        --(+ rest pose, asymmetry, brows, blinks, noise)--> basis weights (T, K)
        --(basis fields on the template)--> vertex offsets (T, V, 3)

The articulation basis is a set of K displacement fields on the procedural
template (`basis_fields`), each the motion for one unit of activation:

    jaw         rotation of the lower face about the jaw hinge axis, per radian
    round_l/r   lip rounding and protrusion (corners in, lips forward), left/right half
    spread_l/r  lip spreading (corners out and back)
    close_l/r   bilabial closure (lips pressed together)
    tuck_l/r    labiodental tuck (lower lip up and behind the upper teeth)
    raise_l/r   upper-lip raise
    brow        both brows and the forehead up (stressed syllables)
    blink       both upper eyelids down

Lip fields are split into left and right halves by a smooth partition of unity,
so a speaker's left-right asymmetry is just different weights on the halves.

Coarticulation follows the dominance model of Cohen & Massaro (1993): every
segment i pulls articulator a towards its target T_ia with a dominance
D_ia(t) = alpha_ia * exp(-(|t - c_i| / tau_i)^gamma), and the curve is
sum_i D_ia T_ia / sum_i D_ia. Bilabial closure and labiodental tuck are highly
dominant (lips must meet), alveolars barely constrain the lips (they take their
neighbours' lip shape), so rounding spreads across consonants as in real speech.
A speaker's stiffness narrows tau (less coarticulation), and the anticipatory
lead moves every segment centre earlier (the face moves before the sound).
"""
from __future__ import annotations

import numpy as np

from .template import EYE_X, EYE_Y, HINGE, MOUTH_HALF_WIDTH, MOUTH_Y, Template, _smoothstep

# --------------------------------------------------------------------------- visemes
# One viseme per mouth shape, close to the 15 visemes of MPEG-4 / Oculus OVR,
# with schwa split from the open vowels.
VISEMES = ("sil", "PP", "FF", "TH", "DD", "kk", "CH", "SS", "nn", "RR", "aa", "E", "I", "O", "U", "@")

# espeak-ng English phoneme mnemonics (stress marks ' and , stripped) -> viseme(s).
# Diphthongs and affricate-like vowels list two visemes: the segment is split in
# half, the first half takes the first shape and the second half the second.
PHONEME_VISEME: dict[str, tuple[str, ...]] = {
    # pauses
    "_": ("sil",), "_:": ("sil",), "_!": ("sil",), "_^_": ("sil",), "||": ("sil",), "|": ("sil",),
    # bilabials, labiodentals, dentals
    "p": ("PP",), "b": ("PP",), "m": ("PP",),
    "f": ("FF",), "v": ("FF",),
    "T": ("TH",), "D": ("TH",),
    # alveolars and velars
    "t": ("DD",), "d": ("DD",), "t#": ("DD",), "d#": ("DD",), "t2": ("DD",), "d2": ("DD",), "?": ("DD",),
    "n": ("nn",), "n-": ("nn",), "l": ("nn",), "l/": ("nn",), "l/2": ("nn",), "L": ("nn",), "l#": ("nn",),
    "k": ("kk",), "g": ("kk",), "N": ("kk",), "x": ("kk",), "h": ("kk",),
    "s": ("SS",), "z": ("SS",),
    # post-alveolars (protruded lips)
    "S": ("CH",), "Z": ("CH",), "tS": ("CH",), "dZ": ("CH",),
    # approximants
    "r": ("RR",), "r-": ("RR",), "*": ("RR",), "R": ("RR",),
    "w": ("U",), "W": ("U",), "j": ("I",), ";": ("I",),   # ";" is the linking y-glide ("the apple")
    # vowels: open
    "a": ("aa",), "a#": ("aa",), "A:": ("aa",), "A@": ("aa", "RR"), "aa": ("aa",), "A": ("aa",), "V": ("aa",),
    # mid front
    "E": ("E",), "e": ("E",), "E2": ("E",), "E@": ("E", "@"), "e@": ("E", "@"), "3": ("@",), "3:": ("RR",),
    # close front
    "I": ("I",), "I2": ("I",), "I#": ("I",), "i": ("I",), "i:": ("I",), "i@": ("I", "@"), "i@3": ("I", "RR"),
    # back rounded
    "0": ("O",), "O": ("O",), "O:": ("O",), "O@": ("O", "RR"), "O2": ("O",), "o@": ("O", "RR"),
    "u": ("U",), "u:": ("U",), "U": ("U",), "U@": ("U", "@"), "u@": ("U", "@"),
    # central
    "@": ("@",), "@2": ("@",), "@5": ("@",), "@L": ("@", "nn"), "@r": ("@", "RR"),
    # diphthongs
    "aI": ("aa", "I"), "aI@": ("aa", "I"), "aI3": ("aa", "RR"), "aU": ("aa", "U"), "aU@": ("aa", "U"),
    "eI": ("E", "I"), "oU": ("O", "U"), "OI": ("O", "I"), "eU": ("E", "U"), "aI@3": ("aa", "RR"),
}
PHONEMES = tuple(sorted(PHONEME_VISEME))          # the phoneme label vocabulary (index = label id)
PAUSES = frozenset({"_", "_:", "_!", "_^_", "||", "|"})

# espeak-ng's English mnemonics (Kirshenbaum-like) -> IPA, for labels a reader can read. espeak-ng keeps
# variants that share one IPA symbol apart (e.g. "@", "@2", "@5" are all [ə] in different contexts), so
# `ipa` appends the mnemonic where the IPA alone would be ambiguous. Pauses and boundaries are named.
IPA: dict[str, str] = {
    "*": "ɾ", "0": "ɒ", "3": "ɚ", "3:": "ɜː", ";": "ʲ", "?": "ʔ", "@": "ə", "@2": "ə", "@5": "ə", "@L": "əl",
    "@r": "ɚ", "A": "ɑ", "A:": "ɑː", "A@": "ɑɹ", "D": "ð", "E": "ɛ", "E2": "ɛ", "E@": "ɛɹ", "I": "ɪ", "I#": "ɨ",
    "I2": "ɪ", "L": "ɫ", "N": "ŋ", "O": "ɔ", "O2": "ɔ", "O:": "ɔː", "O@": "ɔɹ", "OI": "ɔɪ", "R": "ɹ", "S": "ʃ",
    "T": "θ", "U": "ʊ", "U@": "ʊɹ", "V": "ʌ", "W": "ʍ", "Z": "ʒ", "_": "pause", "_!": "pause", "_:": "pause",
    "_^_": "pause", "a": "æ", "a#": "ɐ", "aI": "aɪ", "aI3": "aɪɚ", "aI@": "aɪə", "aI@3": "aɪɚ", "aU": "aʊ",
    "aU@": "aʊɚ", "aa": "æ", "b": "b", "d": "d", "d#": "d", "d2": "d", "dZ": "dʒ", "e": "e", "e@": "eə",
    "eI": "eɪ", "eU": "eʊ", "f": "f", "g": "ɡ", "h": "h", "i": "i", "i:": "iː", "i@": "iə", "i@3": "ɪɚ",
    "j": "j", "k": "k", "l": "l", "l#": "ɫ", "l/": "l", "l/2": "l", "m": "m", "n": "n", "n-": "n̩", "o@": "oɚ",
    "oU": "oʊ", "p": "p", "r": "ɹ", "r-": "ɚ", "s": "s", "t": "t", "t#": "ɾ", "t2": "t", "tS": "tʃ", "u": "u",
    "u:": "uː", "u@": "ʊɚ", "v": "v", "w": "w", "x": "x", "z": "z", "|": "boundary", "||": "boundary",
}


def ipa(phoneme: str) -> str:
    """A label for an espeak-ng phoneme: its IPA, with the mnemonic in brackets where several share one
    IPA symbol ("ə [@2]"); stress marks are dropped."""
    p = strip_stress(phoneme)[0]
    sym = IPA.get(p, p)
    shared = sum(1 for v in IPA.values() if v == sym) > 1
    return f"{sym} [{p}]" if shared else sym


def strip_stress(ph: str) -> tuple[str, int]:
    """espeak-ng 1.52 marks stress in the name: "'eI" primary, ",aU" secondary. -> (name, 2|1|0)."""
    stress = 2 if "'" in ph else 1 if "," in ph else 0
    return ph.replace("'", "").replace(",", ""), stress


ARTICULATORS = ("jaw", "round", "spread", "close", "tuck", "raise")
#                       jaw(rad) round spread close tuck raise
VISEME_TARGETS = {
    "sil": np.array([0.015, 0.00, 0.00, 0.00, 0.0, 0.00]),
    "PP":  np.array([0.020, 0.05, 0.00, 1.00, 0.0, 0.00]),
    "FF":  np.array([0.040, 0.00, 0.10, 0.00, 1.0, 0.30]),
    "TH":  np.array([0.070, 0.00, 0.25, 0.00, 0.0, 0.10]),
    "DD":  np.array([0.060, 0.00, 0.15, 0.00, 0.0, 0.00]),
    "kk":  np.array([0.080, 0.00, 0.05, 0.00, 0.0, 0.00]),
    "CH":  np.array([0.050, 0.75, 0.00, 0.00, 0.0, 0.30]),
    "SS":  np.array([0.035, 0.00, 0.45, 0.00, 0.0, 0.10]),
    "nn":  np.array([0.055, 0.00, 0.10, 0.00, 0.0, 0.00]),
    "RR":  np.array([0.060, 0.55, 0.00, 0.00, 0.0, 0.10]),
    "aa":  np.array([0.170, 0.00, 0.15, 0.00, 0.0, 0.20]),
    "E":   np.array([0.120, 0.00, 0.55, 0.00, 0.0, 0.15]),
    "I":   np.array([0.060, 0.00, 0.85, 0.00, 0.0, 0.10]),
    "O":   np.array([0.130, 0.80, 0.00, 0.00, 0.0, 0.05]),
    "U":   np.array([0.050, 1.00, 0.00, 0.00, 0.0, 0.00]),
    "@":   np.array([0.080, 0.00, 0.10, 0.00, 0.0, 0.05]),
}
# Dominance alpha per viseme and articulator: how strongly a segment holds each one.
_HI, _MID, _LO = 1.0, 0.5, 0.12
VISEME_DOMINANCE = {
    "sil": np.array([_MID, _LO, _LO, _LO, _LO, _LO]),
    "PP":  np.array([_HI, _LO, _LO, 3.0, _LO, _LO]),
    "FF":  np.array([_HI, _LO, _LO, _LO, 3.0, _MID]),
    "TH":  np.array([_MID, _LO, _LO, _LO, _LO, _LO]),
    "DD":  np.array([_MID, _LO, _LO, _LO, _LO, _LO]),
    "kk":  np.array([_MID, _LO, _LO, _LO, _LO, _LO]),
    "CH":  np.array([_MID, _HI, _MID, _LO, _LO, _MID]),
    "SS":  np.array([_MID, _LO, _MID, _LO, _LO, _LO]),
    "nn":  np.array([_MID, _LO, _LO, _LO, _LO, _LO]),
    "RR":  np.array([_MID, _HI, _LO, _LO, _LO, _LO]),
    "aa":  np.array([_HI, _MID, _MID, _MID, _MID, _MID]),
    "E":   np.array([_HI, _MID, _HI, _MID, _MID, _MID]),
    "I":   np.array([_HI, _MID, _HI, _MID, _MID, _MID]),
    "O":   np.array([_HI, _HI, _MID, _MID, _MID, _MID]),
    "U":   np.array([_HI, _HI, _MID, _MID, _MID, _MID]),
    "@":   np.array([_MID, _LO, _LO, _MID, _MID, _LO]),
}
# Version 2: how much of a speaker's vocal effort reaches the jaw, per viseme. Louder speech lowers the jaw
# more on vowels, most on open ones (Schulman 1989), while the jaw is held high and stable for sibilants
# (Mooshammer, Hoole & Geumann 2007) and for the other consonants made with the tongue tip against the teeth
# or ridge. The ordering is the sources'; the numbers are the kit's (1 = version 1's single gain).
EFFORT_JAW = {"sil": 0.0, "PP": 0.5, "FF": 0.5, "TH": 0.5, "DD": 0.5, "kk": 0.75, "CH": 0.25, "SS": 0.25,
              "nn": 0.5, "RR": 0.75, "aa": 1.5, "E": 1.0, "I": 1.0, "O": 1.5, "U": 1.0, "@": 1.0}
# Version 2: the same sources find the jaw for sibilants the least variable across vowel contexts (it holds its
# high position against coarticulation), so sibilants hold the jaw as strongly as vowels do.
SIBILANT_JAW_DOMINANCE = _HI

# --------------------------------------------------------------------------- basis
BASIS = ("jaw", "round_l", "round_r", "spread_l", "spread_r", "close_l", "close_r",
         "tuck_l", "tuck_r", "raise_l", "raise_r", "brow", "blink")
LIP_FIELDS = ("round", "spread", "close", "tuck", "raise")


def basis_fields(template: Template) -> np.ndarray:
    """Displacement fields (K, V, 3) in metres for unit activations of `BASIS`.

    Defined on the procedural template's rest geometry (any resolution); the
    weights are smooth functions of position in face coordinates, so they hold
    for every speaker of one topology. Needs the masks `mouth_slit_upper`/`lower`.
    """
    P = template.vertices.astype(np.float64)                    # (V, 3)
    x, y, z = P[:, 0], P[:, 1], P[:, 2]
    V = len(P)
    up_slit, lo_slit = template.mask("mouth_slit_upper"), template.mask("mouth_slit_lower")
    front = _smoothstep(-0.02, 0.04, z)                          # front of the head
    hw = MOUTH_HALF_WIDTH
    # which side of the mouth a vertex belongs to: +1 upper lip, -1 lower lip
    side = np.where(y >= MOUTH_Y, 1.0, -1.0)
    side[up_slit], side[lo_slit] = 1.0, -1.0
    # how open the slit may get along the mouth: 1 in the middle, 0 at the corners
    across = np.clip(1 - (np.abs(x) / hw) ** 2, 0, 1)
    # the lip zone: the lips and the skin around them, fading over ~1.5 cm
    r_lip = np.sqrt((x / (hw * 1.25)) ** 2 + ((y - MOUTH_Y) / 0.022) ** 2)
    lipzone = np.exp(-0.5 * (r_lip / 0.95) ** 4) * front
    left = 0.5 * (1 + np.tanh(x / 0.006))                         # partition of unity, left half

    # jaw: the lower lip and everything below the mouth rotate about the hinge axis
    ramp_near = _smoothstep(MOUTH_Y + 0.0005, MOUTH_Y - 0.010, y)   # sharp under the lips
    ramp_far = _smoothstep(MOUTH_Y + 0.012, MOUTH_Y - 0.030, y)     # gentle in the cheeks
    near = np.clip(across * 1.6, 0, 1) * (np.abs(x) < hw)
    w_jaw = near * ramp_near + (1 - near) * ramp_far
    w_jaw[lo_slit] = np.clip(across[lo_slit] * 1.6, 0, 1)
    w_jaw[up_slit] = 0.0
    w_jaw *= _smoothstep(-0.055, 0.0, z - HINGE[2]) * (1 - _smoothstep(0.062, 0.085, np.abs(x)) * 0.7)
    r = P - np.array([0.0, HINGE[1], HINGE[2]])
    jaw = np.stack([np.zeros(V), -r[:, 2], r[:, 1]], 1) * w_jaw[:, None]   # omega x r, omega = +x

    lipd = lipzone * (0.35 + 0.65 * across)
    sx = np.sign(x) * np.clip(np.abs(x) / hw, 0, 1.2)
    fields = {
        # forward 8 mm, corners 6 mm inwards, lips apart 1 mm (an "o")
        "round": np.stack([-0.006 * sx * lipzone, 0.001 * side * lipd, 0.008 * lipd], 1),
        # corners out 6 mm, back 2 mm and up 1 mm
        "spread": np.stack([0.007 * sx * lipzone, 0.001 * np.abs(sx) * lipzone, -0.002 * np.abs(sx) * lipzone], 1),
        # each lip 3.5 mm towards the other, pressed back 1 mm
        "close": np.stack([np.zeros(V), -0.0035 * side * lipd * _lipnear(y), -0.001 * lipd * _lipnear(y)], 1),
        # lower lip up 4 mm and back 5 mm
        "tuck": np.stack([np.zeros(V), 0.004 * (side < 0) * lipd * _lipnear(y),
                          -0.005 * (side < 0) * lipd * _lipnear(y)], 1),
        # upper lip up 3 mm, forward 1 mm
        "raise": np.stack([np.zeros(V), 0.003 * (side > 0) * lipd, 0.001 * (side > 0) * lipd], 1),
    }
    out = {"jaw": jaw}
    for k, f in fields.items():
        out[f"{k}_l"] = f * left[:, None]
        out[f"{k}_r"] = f * (1 - left)[:, None]
    # brows: 5 mm up at the brows, fading onto the forehead and the upper lids
    ex = np.abs(x)
    w_brow = np.exp(-0.5 * (((ex - EYE_X) / 0.024) ** 2 + ((y - (EYE_Y + 0.018)) / 0.016) ** 2)) * front
    out["brow"] = np.stack([np.zeros(V), 0.005 * w_brow, 0.0005 * w_brow], 1)
    # blink: the upper lid closes 9 mm down over the eye, the lower lid rises 1.5 mm
    r_eye = ((ex - EYE_X) / 0.013) ** 2 + ((y - EYE_Y) / 0.010) ** 2
    in_eye = np.exp(-0.5 * r_eye ** 2) * front
    upper_lid = _smoothstep(EYE_Y - 0.004, EYE_Y + 0.004, y)
    out["blink"] = np.stack([np.zeros(V), (-0.009 * upper_lid + 0.0015 * (1 - upper_lid)) * in_eye,
                             0.001 * in_eye], 1)
    return np.stack([out[k] for k in BASIS]).astype(np.float32)


def _lipnear(y):
    """Weight of motions that act on the lip edges only (closure, tuck): 1 within 1 cm of the mouth line."""
    return np.exp(-0.5 * ((y - MOUTH_Y) / 0.009) ** 2)


# --------------------------------------------------------------------------- coarticulation
def viseme_segments(phonemes):
    """Phoneme intervals [(start_s, end_s, name_with_stress), ...] -> viseme segments.

    Returns a list of (start_s, end_s, viseme, stress, phoneme_index). Unknown
    phonemes raise a KeyError naming them, so a new espeak-ng version cannot
    silently lose a sound.
    """
    segs = []
    for i, (t0, t1, ph) in enumerate(phonemes):
        name, stress = strip_stress(ph)
        if name not in PHONEME_VISEME:
            raise KeyError(f"phoneme {ph!r} (stripped {name!r}) has no viseme in mtk.synthvoca.articulation.PHONEME_VISEME")
        vis = PHONEME_VISEME[name]
        edges = np.linspace(t0, t1, len(vis) + 1)
        for k, v in enumerate(vis):
            segs.append((float(edges[k]), float(edges[k + 1]), v, stress, i))
    return segs


def coarticulate(segments, times, targets, dominance, stiffness=1.0, lead=0.0, gamma=1.5):
    """Articulator curves (T, A) from segments with per-segment targets (N, A) and dominances (N, A).

    times (T,) seconds. tau_i = (0.045 s + 0.35 d_i) / stiffness on the
    anticipatory side and 0.8 times that on the carry-over side; centres move
    `lead` seconds earlier. The division is regularised by a weak rest pull.
    """
    starts = np.array([s[0] for s in segments])
    ends = np.array([s[1] for s in segments])
    c = 0.5 * (starts + ends) - lead                               # (N,)
    tau = (0.045 + 0.35 * (ends - starts)) / stiffness            # (N,)
    dt = times[:, None] - c[None, :]                               # (T, N)
    tau_side = np.where(dt < 0, tau[None, :], 0.8 * tau[None, :])
    d = np.exp(-((np.abs(dt) / tau_side) ** gamma))               # (T, N)
    D = d[:, :, None] * dominance[None]                            # (T, N, A)
    num = (D * targets[None]).sum(1)
    den = D.sum(1) + 1e-4
    return num / den                                               # (T, A)


# --------------------------------------------------------------------------- lip contact (version 2)
# Version 2's lips are solids that meet and stop, and bilabials close them whatever the jaw does. Facts of
# real articulation, decided before any model trained on version 2 (sources in docs/synthvoca-v2.md):
#   * the lips cannot pass through each other: where they meet they press, so the lip gap is never negative;
#   * a bilabial stop is a constriction goal: the lips close completely, and when the jaw is held open (bite
#     blocks) or perturbed, the lips compensate and still close (task dynamics);
#   * at rest the lips are sealed while the teeth are a few millimetres apart (the freeway space), and the
#     jaw cannot rise past the teeth meeting (jaw weight >= 0: the template's pose has the teeth together).
CLOSERS = ("close_l", "close_r", "tuck_l", "tuck_r")      # the basis fields that bring the lips together
REST_SEAL_S = 0.12                                       # pauses this long seal the lips (time to close and open)


def lip_pairs(template: Template) -> tuple[np.ndarray, np.ndarray]:
    """The mouth slit's upper and lower vertices paired left to right: (P,) and (P,) vertex indices.
    On the procedural head each pair shares its x (the slit is closed in the neutral face)."""
    up, lo = template.mask("mouth_slit_upper"), template.mask("mouth_slit_lower")
    if len(up) != len(lo) or not len(up):
        raise ValueError(f"template {template.name!r}: mouth slit has {len(up)} upper and {len(lo)} lower vertices; "
                         "expected equal, non-zero counts")
    return up[np.argsort(template.vertices[up, 0])], lo[np.argsort(template.vertices[lo, 0])]


def contact_geometry(template: Template, basis: np.ndarray, neutral: np.ndarray | None = None):
    """What lip contact needs: D (K, P), the vertical lip gap each basis field opens per unit weight at each
    slit pair, and g0 (P,), the gap of the neutral face (`neutral`: a speaker's vertices; default the template's).
    The gap at frame t is g(t) = g0 + W(t) @ D (metres): motion is linear in the weights."""
    iu, il = lip_pairs(template)
    v = template.vertices if neutral is None else neutral
    return (basis[:, iu, 1] - basis[:, il, 1]).astype(np.float64), (v[iu, 1] - v[il, 1]).astype(np.float64)


def closure_demand(segments, times: np.ndarray, ramp: float = 0.03) -> np.ndarray:
    """(T,) in [0, 1]: where the lips must be closed. 1 over each bilabial segment (a stop's closure is its
    silence: the lips are closed while the sound says so, so the demand is not moved by the speaker's lead),
    over pauses of at least `REST_SEAL_S` and over the pauses that begin or end a clip (the lips sealed at
    rest); it rises over the `ramp` seconds before a segment and falls over the `ramp` seconds after it."""
    h = np.zeros(len(times))
    last = len(segments) - 1
    for i, (t0, t1, v, _, _) in enumerate(segments):
        if v == "PP" or (v == "sil" and (t1 - t0 >= REST_SEAL_S or i in (0, last))):
            h = np.maximum(h, _smoothstep(t0 - ramp, t0, times) * (1 - _smoothstep(t1, t1 + ramp, times)))
    return h


def lip_contact(W: np.ndarray, D: np.ndarray, g0: np.ndarray, demand: np.ndarray | None = None) -> np.ndarray:
    """Basis weights (T, K) whose lips close where `demand` asks and otherwise meet and stop.

    1. Closure goal: where demand h(t) > 0 each side's closure moves towards c(t), the symmetric closure that
       shuts the two middle slit pairs: close = (1 - h) close + h c.
    2. Contact: the closing fields (`CLOSERS`) are scaled per frame by
       s(t) = min(1, min_p g_open(t, p) / -g_close(t, p)), with g_open = g0 + W_open D_open >= 0 the gap the
       other fields leave and g_close = W_close D_close <= 0 what closure would take, so g(t, p) >= 0 at every
       pair and equals 0 at the pair that limits.
    Needs every non-closing field to open the gap (D >= 0 where its weights are >= 0); raises ValueError if
    the open gap is negative somewhere.
    """
    closers = np.array([b in CLOSERS for b in BASIS])
    out = W.astype(np.float64).copy()
    g_open = g0[None] + out[:, ~closers] @ D[~closers]                 # (T, P)
    if (g_open < -1e-9).any():
        t, p = np.argwhere(g_open < -1e-9)[0]
        raise ValueError(f"lip contact: the lips already overlap by {-g_open[t, p] * 1000:.3f} mm at frame {t}, "
                         f"pair {p} without closure (a weight that closes the lips outside {CLOSERS})")
    if demand is not None:
        cl, cr = BASIS.index("close_l"), BASIS.index("close_r")
        mid = [D.shape[1] // 2 - 1, D.shape[1] // 2]
        per_unit = D[cl, mid] + D[cr, mid]                             # (2,) gap per unit of closure, < 0
        others = [k for k in range(len(BASIS)) if k not in (cl, cr)]
        g_rest = g0[mid][None] + out[:, others] @ D[others][:, mid]     # (T, 2): the gap without close
        need = (np.maximum(g_rest, 0.0) / -per_unit).max(1)            # (T,) closure that shuts both middle pairs
        # where the lips must close they close on both sides alike (contact is not a matter of style)
        for k in (cl, cr):
            out[:, k] = (1 - demand) * out[:, k] + demand * need
    g_close = out[:, closers] @ D[closers]                             # (T, P), <= 0
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(g_close < 0, np.maximum(g_open, 0.0) / -g_close, np.inf)
    s = np.minimum(1.0, ratio.min(1))                                  # (T,)
    out[:, closers] *= s[:, None]
    return out.astype(W.dtype)
