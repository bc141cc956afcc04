"""Evaluation metrics for speech-driven 3D facial animation.

The MemoryTalker (ICCV 2025) Table 1 columns, plus the field's classic
upper-face and millimetre metrics, as pure functions over vertex arrays.
The paper ships no evaluation script: every definition below states which
public repository's convention it follows (see
`research/baselines.md` section 3 and `research/memorytalker.md` section 3).

Vocabulary: T frames, V vertices, B batch; L the lip index set, U the
upper-face index set, S the subject template.  Vertices are in metres.

| name            | per frame t                         | pooled over      | unit |
|-----------------|-------------------------------------|------------------|------|
| `fve`           | mean_v  |P_t(v) - G_t(v)|^2         | all test frames  | m^2  |
| `lve`           | mean_L  |P_t(v) - G_t(v)|^2         | all test frames  | m^2  |
| `lip_max`       | max_L   |P_t(v) - G_t(v)|^2         | all test frames  | m^2  |
| `ldtw`          | DTW over lip trajectories / |path|  | mean of seqs     | m^2  |
| `fdd`           | std_t-based, see `fdd`              | mean of seqs     | m^2  |
| `abs_fdd`       | |fdd_k|                             | mean of seqs     | m^2  |
| `fid`           | Frechet distance of motion features | whole set        | 1    |
| `lip_max_l2_mm` | max_L   |P_t(v) - G_t(v)| * 1000    | all test frames  | mm   |
| `mve_mm`        | mean_v  |P_t(v) - G_t(v)| * 1000    | all test frames  | mm   |

Inputs: a sequence is a numpy array or torch tensor of shape (T, V, 3) or
(T, V*3); torch is converted to numpy at the boundary and all arithmetic
runs in float64 (float32 inputs are read in place rather than copied).
Index masks are integer arrays into the V vertices; duplicates are kept
(FLAME `lips` has 254 entries, 250 unique; duplicates change means, not
maxima).  Invalid input raises ValueError naming the argument.

`evaluate` runs everything over a test set and returns an `EvalResult`;
`PAPER_UNITS` holds the scales of MemoryTalker's Table 1.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import html
import math
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import scipy.linalg

__all__ = [
    "PAPER_UNITS",
    "NAMES",
    "axis_label",
    "UNITS",
    "EvalResult",
    "MotionFeatureExtractor",
    "evaluate",
    "fdd",
    "fid",
    "frechet_distance",
    "fve",
    "ldtw",
    "lip_max",
    "lip_max_l2_mm",
    "lve",
    "mve_mm",
]

# constants

# Scale of each metric in MemoryTalker Table 1 (VOCASET): the paper prints
# value / scale, e.g. LVE 0.293 means 0.293e-5 m^2.  FDD is not in the
# MemoryTalker table; 1e-7 is the field's VOCASET convention (BIWI uses 1e-5).
PAPER_UNITS: dict[str, float] = {
    "fve": 1e-6,  # FVE (x1e-6), m^2
    "lve": 1e-5,  # LVE (x1e-5), m^2
    "fid": 1e-1,  # FID (x1e-1), dimensionless
    "ldtw": 1e-5,  # LDTW (x1e-5), m^2
    "lip_max": 1e-4,  # Lip-max (x1e-4), m^2
    "fdd": 1e-7,  # FDD (x1e-7), m^2, CodeTalker/ScanTalk on VOCASET
    "abs_fdd": 1e-7,  # ABS-FDD (x1e-7), m^2, ScanTalk
}

# Unit of the raw value of every metric `evaluate` can report, in the order
# tables list them (MemoryTalker Table 1 order first)
UNITS: dict[str, str] = {
    "fve": "m^2",
    "lve": "m^2",
    "fid": "1",
    "ldtw": "m^2",
    "lip_max": "m^2",
    "fdd": "m^2",
    "abs_fdd": "m^2",
    "lip_max_l2_mm": "mm",
    "mve_mm": "mm",
}

# Names as Table 1 prints them
NAMES: dict[str, str] = {"fve": "FVE", "lve": "LVE", "fid": "FID", "ldtw": "LDTW", "lip_max": "Lip-max",
                         "fdd": "FDD", "abs_fdd": "ABS-FDD", "lip_max_l2_mm": "Lip-max L2", "mve_mm": "MVE"}


def axis_label(key: str) -> str:
    """A figure's label for a metric in Table 1's scale, with its unit (matplotlib mathtext):
    "FVE ($\\times10^{-6}$ m$^2$)", "FID ($\\times10^{-1}$)", "MVE (mm)"."""
    unit = {"m^2": " m$^2$", "mm": " mm", "1": ""}[UNITS[key]]
    if key not in PAPER_UNITS:
        return f"{NAMES[key]} ({unit.strip()})" if unit else NAMES[key]
    return f"{NAMES[key]} ($\\times10^{{{round(math.log10(PAPER_UNITS[key]))}}}${unit})"


_M_TO_MM = 1e3


# input validation helpers
#
# Internally a sequence is a flat (T, V*3) array of float32 or float64 (the
# input's own buffer when possible: a float32 (T, V, 3) array is not
# copied); every arithmetic operation is carried out in float64.


def _to_numpy(x: Any) -> np.ndarray:
    """numpy view of `x`; torch tensors are detached and moved to the CPU."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch, without importing it
        x = x.detach().cpu()
        if x.is_floating_point() and str(x.dtype) not in ("torch.float32", "torch.float64"):
            x = x.double()  # float16/bfloat16: numpy lacks bfloat16
        return x.numpy()
    return np.asarray(x)


def _check_real(a: np.ndarray, name: str) -> None:
    if a.dtype == bool or not np.issubdtype(a.dtype, np.number) or np.iscomplexobj(a):
        raise ValueError(f"{name}: expected real vertex coordinates, got dtype {a.dtype}")


def _as_flat(x: Any, name: str) -> np.ndarray:
    """Validated sequence as a flat (T, V*3) float32/float64 array."""
    a = _to_numpy(x)
    _check_real(a, name)
    shape = tuple(a.shape)
    if a.ndim == 3 and a.shape[2] == 3:
        a = a.reshape(a.shape[0], a.shape[1] * 3)  # (T, V, 3) -> (T, V*3)
    elif not (a.ndim == 2 and a.shape[1] % 3 == 0):
        raise ValueError(f"{name}: expected shape (T, V, 3) or (T, V*3), got {shape}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(
            f"{name}: empty sequence of shape {shape}; "
            "expected T >= 1 frames and V >= 1 vertices"
        )
    if a.dtype not in (np.float32, np.float64):
        a = a.astype(np.float64)
    if not np.isfinite(a.sum()):  # one pass; NaN/inf always propagate
        bad = ~np.isfinite(a)
        if bad.any():  # (the sum can also overflow on finite values)
            t = int(np.argmax(bad.any(axis=1)))
            raise ValueError(
                f"{name}: contains {int(bad.sum())} NaN/inf values (first at frame {t}); "
                "expected finite coordinates"
            )
    return a


def _as_template(x: Any, n_vertices: int, name: str) -> np.ndarray:
    """Validated float64 template, (V, 3), from (V, 3) or (V*3,)."""
    a = _to_numpy(x)
    _check_real(a, name)
    if a.shape not in ((n_vertices, 3), (n_vertices * 3,)):
        raise ValueError(
            f"{name}: expected a template of shape ({n_vertices}, 3) or ({n_vertices * 3},), "
            f"got {tuple(a.shape)}"
        )
    s = a.astype(np.float64).reshape(n_vertices, 3)
    if not np.isfinite(s).all():
        n_bad = int((~np.isfinite(s)).sum())
        raise ValueError(f"{name}: contains {n_bad} NaN/inf values; expected finite coordinates")
    return s


def _as_index(mask: Any, n_vertices: int, name: str) -> np.ndarray:
    """Validated vertex indices (duplicates kept), (n,)."""
    m = _to_numpy(mask)
    if m.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array of vertex indices, got shape {tuple(m.shape)}")
    if m.size == 0:
        raise ValueError(f"{name}: empty vertex mask; expected at least one index in [0, {n_vertices})")
    if m.dtype == bool:
        raise ValueError(f"{name}: got a boolean mask; expected integer indices (np.flatnonzero(mask))")
    if not np.issubdtype(m.dtype, np.integer):
        raise ValueError(f"{name}: expected integer vertex indices, got dtype {m.dtype}")
    lo, hi = int(m.min()), int(m.max())
    if lo < 0 or hi >= n_vertices:
        raise ValueError(
            f"{name}: indices must lie in [0, {n_vertices}) for V = {n_vertices}, "
            f"got min {lo}, max {hi}"
        )
    return m.astype(np.intp)


def _n_vertices(flat: np.ndarray) -> int:
    return flat.shape[1] // 3


def _as_pair(pred: Any, gt: Any, same_length: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Validated (pred, gt), each (T, V*3), with equal V (and T)."""
    p = _as_flat(pred, "pred")
    g = _as_flat(gt, "gt")
    if p.shape[1] != g.shape[1]:
        raise ValueError(
            f"pred has V = {_n_vertices(p)} vertices but gt has V = {_n_vertices(g)}; "
            "expected the same mesh"
        )
    if same_length and p.shape[0] != g.shape[0]:
        raise ValueError(
            f"pred has T = {p.shape[0]} frames but gt has T = {g.shape[0]}; expected equal lengths "
            "(truncate to the shorter, or use evaluate(..., max_len_diff=...))"
        )
    return p, g


def _as_sequence_list(seqs: Any, name: str) -> list:
    """A list of sequences; a 4-D (B, T, V, 3) array is split along B."""
    if isinstance(seqs, (list, tuple)):
        return list(seqs)
    if hasattr(seqs, "ndim") and hasattr(seqs, "shape"):
        if seqs.ndim == 4:
            return list(seqs)
        raise ValueError(
            f"{name}: expected a list of sequences, got a single array of shape "
            f"{tuple(seqs.shape)}; wrap one sequence in a list"
        )
    return list(seqs)


def _template_list(templates: Any, n: int, name: str) -> list:
    """`n` templates from a list, a stacked array, or one template."""
    if isinstance(templates, (list, tuple)):
        if len(templates) != n:
            raise ValueError(f"{name}: got {len(templates)} templates for {n} sequences; expected one each")
        return list(templates)
    a = _to_numpy(templates)
    if a.ndim == 1 or (a.ndim == 2 and a.shape[1] == 3):  # one template
        return [a] * n
    if len(a) != n:
        raise ValueError(f"{name}: got {len(a)} stacked templates for {n} sequences; expected one each")
    return list(a)


# per-sequence kernels on validated arrays


def _gather(flat: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Vertices `idx` of a flat sequence, (T, V*3) -> (T, |idx|, 3) float64."""
    cols = (3 * idx[:, None] + np.arange(3)).ravel()  # (3|idx|,)
    out = np.take(flat, cols, axis=1)  # (T, 3|idx|); much faster than fancy indexing
    return out.astype(np.float64, copy=False).reshape(len(flat), -1, 3)


def _sq_norm(d: np.ndarray) -> np.ndarray:
    """Squared L2 norm over the last axis, (..., 3) -> (...)."""
    return np.einsum("...c,...c->...", d, d)


def _sq_err(p: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Squared L2 error per frame and vertex, (T, V*3) x2 -> (T, V)."""
    d = np.subtract(p, g, dtype=np.float64)  # (T, V*3)
    np.multiply(d, d, out=d)
    out = np.add(d[:, 0::3], d[:, 1::3])  # x^2 + y^2, (T, V)
    out += d[:, 2::3]  # + z^2
    return out


_FRAME_COLUMNS = ("fve", "lve", "lip_max", "lip_max_l2_mm", "mve_mm")


def _frame_errors(p: np.ndarray, g: np.ndarray, lips: np.ndarray, chunk: int = 8) -> dict:
    """Per-frame values of the frame-pooled metrics, each (T,).

    Computed `chunk` frames at a time so that the (chunk, V*3) temporaries
    stay in cache (about 1.7x faster than whole sequences at V = 5,023).
    """
    out = {col: np.empty(len(p)) for col in _FRAME_COLUMNS}
    for s in range(0, len(p), chunk):
        t = slice(s, s + chunk)
        sq = _sq_err(p[t], g[t])  # (chunk, V)
        sq_lip = np.take(sq, lips, axis=1)  # (chunk, |L|)
        out["fve"][t] = sq.mean(axis=1)
        out["lve"][t] = sq_lip.mean(axis=1)
        out["lip_max"][t] = sq_lip.max(axis=1)
        out["mve_mm"][t] = np.sqrt(sq, out=sq).mean(axis=1) * _M_TO_MM  # sq overwritten
    out["lip_max_l2_mm"] = np.sqrt(out["lip_max"]) * _M_TO_MM  # max commutes with sqrt
    return out


def _lip_cost(p_lip: np.ndarray, g_lip: np.ndarray) -> np.ndarray:
    """DTW frame cost c(i, j) = mean_L |p_i(v) - g_j(v)|^2, (Tp, Tg).

    Vectorised as |a|^2 + |b|^2 - 2 a.b (one BLAS product), clamped at 0,
    after removing the mean ground-truth lip frame from both, which keeps
    the norms at displacement scale and the round-off ~1e-12 relative.
    """
    n_lip = p_lip.shape[1]
    offset = g_lip.mean(axis=0)  # (L, 3)
    a = (p_lip - offset).reshape(len(p_lip), -1)  # (Tp, 3L)
    b = (g_lip - offset).reshape(len(g_lip), -1)  # (Tg, 3L)
    c = np.einsum("ik,ik->i", a, a)[:, None] + np.einsum("jk,jk->j", b, b)[None, :]
    c -= 2.0 * (a @ b.T)  # (Tp, Tg)
    np.maximum(c, 0.0, out=c)
    return c / n_lip


def _dtw(cost: np.ndarray) -> tuple[float, int]:
    """Accumulated cost and step count of the optimal DTW path.

    D(i, j) = c(i, j) + min(D(i-1, j-1), D(i-1, j), D(i, j-1)), D(0, 0) =
    c(0, 0).  Ties prefer the diagonal, then (i-1, j), then (i, j-1).  The
    recursion runs along anti-diagonals i + j = k, whose cells depend only
    on the two previous anti-diagonals.  In a padded (n+1, m+1) array,
    flattened, cell (i, k-i) sits at k + i*m, so each anti-diagonal and its
    three predecessors are strided slices (step m): no Python inner loop.
    """
    n, m = cost.shape  # (Tp, Tg)
    w = m + 1  # row stride of the padded arrays
    acc = np.full((n + 1, m + 1), np.inf)  # D, padded with a row/col of inf
    acc[0, 0] = 0.0
    steps = np.zeros((n + 1, m + 1), dtype=np.int64)  # path length to (i, j)
    c = np.zeros((n + 1, m + 1))
    c[1:, 1:] = cost
    acc_f, steps_f, c_f = acc.ravel(), steps.ravel(), c.ravel()
    for k in range(2, n + m + 1):  # k = i + j in padded coordinates
        i0, i1 = max(1, k - m), min(n, k - 1)
        s, e = k + i0 * m, k + i1 * m + 1
        cur = slice(s, e, m)
        diag = slice(s - w - 1, e - w - 1, m)
        up = slice(s - w, e - w, m)
        left = slice(s - 1, e - 1, m)
        best, n_best = acc_f[diag], steps_f[diag]
        for prev in (up, left):
            better = acc_f[prev] < best  # strict: earlier candidates win ties
            best = np.where(better, acc_f[prev], best)
            n_best = np.where(better, steps_f[prev], n_best)
        acc_f[cur] = c_f[cur] + best
        steps_f[cur] = n_best + 1
    return float(acc[n, m]), int(steps[n, m])


def _ldtw(p_lip: np.ndarray, g_lip: np.ndarray) -> float:
    """Lip DTW on lip trajectories (Tp, L, 3), (Tg, L, 3); see `ldtw`."""
    total, n_steps = _dtw(_lip_cost(p_lip, g_lip))
    return total / n_steps


def _fdd(p_up: np.ndarray, g_up: np.ndarray, s_up: np.ndarray) -> float:
    """Signed FDD from upper-face vertices (T, U, 3) x2 and template (U, 3)."""
    m_p = _sq_norm(p_up - s_up)  # (T, U) squared displacement
    m_g = _sq_norm(g_up - s_up)  # (T, U)
    return float(m_g.std(axis=0).mean() - m_p.std(axis=0).mean())


# per-sequence metrics


def fve(pred: Any, gt: Any) -> float:
    """Face vertex error: mean squared L2 vertex error, in m^2.

    FVE = 1/(T V) sum_t sum_v |P_t(v) - G_t(v)|^2

    over all V vertices given; the paper leaves open whether it used all
    5,023 FLAME vertices or the 1,787 of FLAME `face`, so pass
    `pred[:, face], gt[:, face]` for the latter.  The squared-metre form is
    inferred from MemoryTalker's x1e-6 scale; the mean-over-vertices family
    is Imitator `utils/losses.py` (`full_reconstruction_mm`), squared as in
    CodeTalker `main/cal_metric.py`.

    pred, gt: (T, V, 3) or (T, V*3), metres, equal T.
    """
    p, g = _as_pair(pred, gt)
    return float(_sq_err(p, g).mean())


def lve(pred: Any, gt: Any, lips: Any) -> float:
    """Lip vertex error: mean squared L2 error over lip vertices, in m^2.

    LVE = 1/(T |L|) sum_t sum_{v in L} |P_t(v) - G_t(v)|^2

    Duplicated indices in `lips` count as often as they appear.  This is
    MemoryTalker's "LVE" (x1e-5; a mean over lips, inferred from its
    scale), the squared analogue of the "L2 lip" of Imitator
    `utils/losses.py`.  The official MemoryTalker repo's validation print,
    MSE over lip coordinates, equals this / 3.  The classic max form of
    FaceFormer/CodeTalker is `lip_max`.

    pred, gt: (T, V, 3) or (T, V*3), metres; lips: int (|L|,) in [0, V).
    """
    p, g = _as_pair(pred, gt)
    idx = _as_index(lips, _n_vertices(p), "lips")
    return float(_sq_norm(_gather(p, idx) - _gather(g, idx)).mean())


def lip_max(pred: Any, gt: Any, lips: Any) -> float:
    """Lip-max: per-frame worst squared lip error, averaged, in m^2.

    Lip-max = 1/T sum_t max_{v in L} |P_t(v) - G_t(v)|^2

    The classic "LVE" of FaceFormer/CodeTalker/SelfTalk in the form of
    CodeTalker `main/cal_metric.py` (squared, no square root; papers label
    it "mm" but it is m^2).  MemoryTalker reports it as Lip-max (x1e-4).

    pred, gt: (T, V, 3) or (T, V*3), metres; lips: int (|L|,) in [0, V).
    """
    p, g = _as_pair(pred, gt)
    idx = _as_index(lips, _n_vertices(p), "lips")
    return float(_sq_norm(_gather(p, idx) - _gather(g, idx)).max(axis=1).mean())


def lip_max_l2_mm(pred: Any, gt: Any, lips: Any) -> float:
    """Lip-max in plain L2: per-frame worst lip distance, averaged, in mm.

    Lip-max-L2 = 1000/T sum_t max_{v in L} |P_t(v) - G_t(v)|

    FaceFormer's definition (FaceFormer issue #14: "the maximal L2 error of
    all lip vertices ... average over all frames"), computed as Imitator
    `utils/losses.py` `lip_max_l2` does (x1000 for mm).  Not centred
    (MeshTalk centres the lips first; this does not).

    pred, gt: (T, V, 3) or (T, V*3), metres; lips: int (|L|,) in [0, V).
    """
    p, g = _as_pair(pred, gt)
    idx = _as_index(lips, _n_vertices(p), "lips")
    worst = _sq_norm(_gather(p, idx) - _gather(g, idx)).max(axis=1)  # (T,)
    return float(np.sqrt(worst).mean() * _M_TO_MM)


def mve_mm(pred: Any, gt: Any) -> float:
    """Mean vertex error in plain L2, in mm.

    MVE = 1000/(T V) sum_t sum_v |P_t(v) - G_t(v)|

    ScanTalk `compute_metrics.py` MVE; Imitator `utils/losses.py`
    `full_reconstruction_mm`.

    pred, gt: (T, V, 3) or (T, V*3), metres, equal T.
    """
    p, g = _as_pair(pred, gt)
    return float(np.sqrt(_sq_err(p, g)).mean() * _M_TO_MM)


def ldtw(pred: Any, gt: Any, lips: Any) -> float:
    """Lip dynamic time warping distance, in m^2.

    Frame cost, for pred frame i and gt frame j,
        c(i, j) = 1/|L| sum_{v in L} |P_i(v) - G_j(v)|^2
    accumulated with the standard steps (i-1, j-1), (i-1, j), (i, j-1):
        D(i, j) = c(i, j) + min(D(i-1, j-1), D(i-1, j), D(i, j-1))
    and LDTW = D(Tp-1, Tg-1) / K, where K is the number of aligned (i, j)
    pairs on the optimal path, max(Tp, Tg) <= K <= Tp + Tg - 1.  Ties
    between predecessors prefer the diagonal, then (i-1, j), then (i, j-1).

    Follows the Imitator-style evaluation (`dtw(...)` returning
    `D[-1, -1] / len(path)` on lip vertices), with the squared per-vertex
    mean cost that MemoryTalker's x1e-5 scale implies (memorytalker.md 3.2).
    With identical timing the diagonal path gives exactly `lve`, and
    warping can only lower the accumulated cost.  Duplicated lip indices
    are kept.  Pred and gt may have different lengths.  The cost matrix
    uses the |a|^2 + |b|^2 - 2ab expansion: a sequence against itself
    gives 0 up to ~1e-20 m^2 of round-off.

    pred: (Tp, V, 3) or (Tp, V*3); gt: (Tg, V, 3) or (Tg, V*3); metres.
    lips: int (|L|,) in [0, V).
    """
    p, g = _as_pair(pred, gt, same_length=False)
    idx = _as_index(lips, _n_vertices(p), "lips")
    return _ldtw(_gather(p, idx), _gather(g, idx))


def fdd(pred: Any, gt: Any, upper: Any, template: Any) -> float:
    """Upper-face dynamics deviation of one sequence, signed, in m^2.

    m_t(v)  = |X_t(v) - S(v)|^2          squared displacement, X in {P, G}
    s_X(v)  = std_t m_t(v)               population std (ddof = 0)
    FDD     = mean_{v in U} s_G(v) - mean_{v in U} s_P(v)

    CodeTalker `main/cal_metric.py` (also ScanTalk `compute_metrics.py`).
    Positive means the prediction moves the upper face less than the ground
    truth.  Averaging over sequences (signed) and ScanTalk's ABS-FDD (mean
    of |FDD_k|) happen in `evaluate`.

    pred, gt: (T, V, 3) or (T, V*3), metres, equal T; upper: int (|U|,) in
    [0, V); template: (V, 3) or (V*3,), the subject's neutral face S.
    """
    p, g = _as_pair(pred, gt)
    idx = _as_index(upper, _n_vertices(p), "upper")
    s = _as_template(template, _n_vertices(p), "template")
    return _fdd(_gather(p, idx), _gather(g, idx), s[idx])


# distribution metric


def _frechet_gaussians(
    mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray, eps: float = 1e-6
) -> float:
    """|mu1 - mu2|^2 + Tr(s1 + s2 - 2 (s1 s2)^(1/2)), clamped at 0."""
    diff = mu1 - mu2  # (d,)
    prod = s1 @ s2  # (d, d)
    covmean = scipy.linalg.sqrtm(prod)
    bad = not np.isfinite(covmean).all()
    if not bad:
        resid = np.linalg.norm(covmean @ covmean - prod) / max(np.linalg.norm(prod), 1e-300)
        bad = resid > 1e-6
    if bad:  # near-singular product: regularise both covariances
        offset = eps * np.eye(len(s1))
        covmean = scipy.linalg.sqrtm((s1 + offset) @ (s2 + offset))
    if np.iscomplexobj(covmean):
        imag = np.abs(np.diagonal(covmean).imag).max()
        if imag > 1e-3 * max(1.0, np.abs(np.diagonal(covmean).real).max()):
            raise ValueError(f"frechet distance: matrix square root has a large imaginary part ({imag:.3g})")
        covmean = covmean.real
    fd = diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean)
    return float(max(fd, 0.0))


def frechet_distance(feats_a: Any, feats_b: Any) -> float:
    """Frechet distance between Gaussians fitted to two feature sets.

    FD = |mu_a - mu_b|^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))

    mu, S: mean and covariance (ddof = 1) over rows.  The square root is
    `scipy.linalg.sqrtm` (real part kept); if it is not finite or not
    accurate, eps = 1e-6 is added to both diagonals, as the well-known
    pytorch-fid recipe does.  Tiny negative round-off is clamped to 0.
    Symmetric in its arguments.  Units: squared feature units.

    feats_a: (n_a, d); feats_b: (n_b, d); n_a, n_b >= 2.
    """
    a = np.asarray(_to_numpy(feats_a), dtype=np.float64)
    b = np.asarray(_to_numpy(feats_b), dtype=np.float64)
    for name, f in (("feats_a", a), ("feats_b", b)):
        if f.ndim != 2 or f.shape[0] < 2:
            raise ValueError(f"{name}: expected shape (n, d) with n >= 2, got {tuple(f.shape)}")
        if not np.isfinite(f).all():
            raise ValueError(f"{name}: contains NaN/inf values; expected finite features")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feats_a has d = {a.shape[1]} but feats_b has d = {b.shape[1]}; expected equal")
    s_a = np.atleast_2d(np.cov(a, rowvar=False))  # (d, d)
    s_b = np.atleast_2d(np.cov(b, rowvar=False))  # (d, d)
    return _frechet_gaussians(a.mean(axis=0), s_a, b.mean(axis=0), s_b)


class MotionFeatureExtractor:
    """The fixed motion feature extractor behind the kit's FID.

    The MemoryTalker paper does not say which features its FID uses; the
    kit defines them as follows and saves the fitted extractor with a
    dataset so that FIDs stay comparable:

    1. Displacement.  Per frame, d_t = vec(X_t(I) - S(I)) in R^(3|I|), the
       displacement from the sequence's template S over the vertex subset I
       (`vertex_idx`, the lower-face mask), flattened vertex-major (x, y, z).
    2. PCA.  The k leading principal directions (default 16) of the
       training split's ground-truth frames: SVD of the centred frame matrix
       (N frames x 3|I|), exact `numpy.linalg.svd`, or scikit-learn's
       `randomized_svd(random_state=0)` when min(N, 3|I|) > 1000 and
       k < 0.8 min(N, 3|I|).  Each direction's sign is fixed so that its
       largest-magnitude entry is positive, so fitting is deterministic.
       z_t = W (d_t - mean), W: (k, 3|I|).
    3. Scale.  z_t / sigma with one global sigma: the RMS norm of the
       training frames' coefficient vectors (sqrt of the summed coefficient
       variances, ddof = 0).  One scale for all coefficients keeps the
       geometry of motion space: per-coefficient standardisation would blow
       up the weakest components, whose small absolute errors then dominate.
    4. Windows.  Frames 0..W-1, h..h+W-1, ... (W = `window`, default 8;
       h = `hop`, default 2), flattened frame-major into W*k-dim features.
       A sequence of T >= W frames gives (T - W)//h + 1 windows; a shorter
       one gives none, with a warning naming it.

    Construct with `MotionFeatureExtractor.fit(...)` or `.load(path)`.
    """

    _FORMAT = "mtk.MotionFeatureExtractor"
    _VERSION = 2

    def __init__(
        self,
        vertex_idx: np.ndarray,
        n_vertices: int,
        mean: np.ndarray,
        components: np.ndarray,
        scale: np.ndarray,
        window: int,
        hop: int,
        explained_variance_ratio: np.ndarray,
        n_train_frames: int,
        n_train_seqs: int,
    ):
        self.vertex_idx = np.asarray(vertex_idx, dtype=np.intp)  # (|I|,)
        self.n_vertices = int(n_vertices)  # V of the mesh
        self.mean = np.asarray(mean, dtype=np.float64)  # (3|I|,)
        self.components = np.asarray(components, dtype=np.float64)  # (k, 3|I|)
        self.scale = np.asarray(scale, dtype=np.float64)  # (k,)
        self.window = int(window)
        self.hop = int(hop)
        self.explained_variance_ratio = np.asarray(explained_variance_ratio, dtype=np.float64)  # (k,)
        self.n_train_frames = int(n_train_frames)
        self.n_train_seqs = int(n_train_seqs)

    @property
    def n_components(self) -> int:
        return len(self.components)

    @property
    def dim(self) -> int:
        """Feature dimension W*k."""
        return self.window * self.n_components

    @classmethod
    def fit(
        cls,
        seqs: Sequence[Any],
        templates: Any,
        vertex_idx: Any,
        n_components: int = 16,
        window: int = 8,
        hop: int = 2,
    ) -> "MotionFeatureExtractor":
        """Fit the PCA and the standardisation on training ground truth.

        seqs: list of (T, V, 3) or (T, V*3) ground-truth training sequences.
        templates: list of (V, 3)/(V*3,) templates, one per sequence, or a
        single template for all.  vertex_idx: int (|I|,) in [0, V), the
        lower-face mask.  The (N, 3|I|) frame matrix is held in memory.
        """
        seqs = _as_sequence_list(seqs, "seqs")
        if not seqs:
            raise ValueError("seqs: empty list; expected at least one training sequence")
        if int(window) < 1 or int(hop) < 1:
            raise ValueError(f"window and hop must be >= 1, got window={window}, hop={hop}")
        tmpls = _template_list(templates, len(seqs), "templates")
        flats = [_as_flat(x, f"seqs[{i}]") for i, x in enumerate(seqs)]
        n_vertices = _n_vertices(flats[0])
        idx = _as_index(vertex_idx, n_vertices, "vertex_idx")
        disp = []
        for i, x in enumerate(flats):
            if _n_vertices(x) != n_vertices:
                raise ValueError(
                    f"seqs[{i}]: has V = {_n_vertices(x)} vertices, expected V = {n_vertices} like seqs[0]"
                )
            s = _as_template(tmpls[i], n_vertices, f"templates[{i}]")
            disp.append((_gather(x, idx) - s[idx]).reshape(len(x), -1))  # (T, 3|I|)
        frames = np.concatenate(disp)  # (N, 3|I|)
        del disp, flats
        n, d = frames.shape
        k = int(n_components)
        if not 1 <= k <= min(n, d):
            raise ValueError(f"n_components: expected 1 <= k <= min(frames, 3|I|) = {min(n, d)}, got {k}")
        mean = frames.mean(axis=0)  # (3|I|,)
        frames -= mean  # centred, in place
        if min(n, d) > 1000 and k < 0.8 * min(n, d):
            from sklearn.utils.extmath import randomized_svd

            comps = randomized_svd(frames, k, random_state=0)[2]  # (k, 3|I|)
        else:
            comps = np.linalg.svd(frames, full_matrices=False)[2][:k]  # (k, 3|I|)
        flip = np.sign(comps[np.arange(k), np.abs(comps).argmax(axis=1)])
        comps = comps * flip[:, None]
        coef_std = (frames @ comps.T).std(axis=0)  # (k,) coefficient std
        total_var = np.einsum("nd,nd->", frames, frames) / n
        if total_var <= 0 or coef_std.min() <= 1e-4 * coef_std.max():
            raise ValueError(
                f"training frames span fewer than n_components={k} directions (coefficient stds "
                f"{np.array2string(coef_std, precision=3)}); use fewer components or more varied data"
            )
        scale = np.full(k, np.sqrt((coef_std**2).sum()))  # (k,) one global scale
        return cls(
            vertex_idx=idx,
            n_vertices=n_vertices,
            mean=mean,
            components=comps,
            scale=scale,
            window=window,
            hop=hop,
            explained_variance_ratio=coef_std**2 / total_var,
            n_train_frames=n,
            n_train_seqs=len(seqs),
        )

    def _coefficients(self, flat: np.ndarray, template: np.ndarray, label: str) -> np.ndarray:
        """Scaled PCA coefficients of a validated sequence, (T, k)."""
        if _n_vertices(flat) != self.n_vertices:
            raise ValueError(
                f"{label}: has V = {_n_vertices(flat)} vertices, the extractor expects V = {self.n_vertices}"
            )
        s = _as_template(template, self.n_vertices, f"template of {label}")
        idx = self.vertex_idx
        disp = (_gather(flat, idx) - s[idx]).reshape(len(flat), -1)  # (T, 3|I|)
        return ((disp - self.mean) @ self.components.T) / self.scale  # (T, k)

    def _windows(self, flat: np.ndarray, template: Any, label: str) -> np.ndarray:
        z = self._coefficients(flat, template, label)  # (T, k)
        if len(z) < self.window:
            warnings.warn(
                f"{label}: {len(z)} frames is shorter than the FID window of {self.window} frames; "
                "it gives no feature",
                stacklevel=3,
            )
            return np.zeros((0, self.dim))
        win = np.lib.stride_tricks.sliding_window_view(z, self.window, axis=0)  # (T-W+1, k, W)
        win = win[:: self.hop].transpose(0, 2, 1)  # (n_windows, W, k)
        return win.reshape(len(win), self.dim)  # (n_windows, W*k)

    def transform(self, seq: Any, template: Any) -> np.ndarray:
        """Window features of one sequence, (n_windows, W*k).

        seq: (T, V, 3) or (T, V*3); template: (V, 3) or (V*3,).
        """
        return self._windows(_as_flat(seq, "seq"), template, "seq")

    def features(
        self, seqs: Sequence[Any], templates: Any, names: Sequence[str] | None = None
    ) -> np.ndarray:
        """Stacked window features of a set of sequences, (n_windows, W*k).

        templates: one per sequence, or a single template for all.  Raises
        ValueError if the whole set yields fewer than 2 windows.
        """
        seqs = _as_sequence_list(seqs, "seqs")
        tmpls = _template_list(templates, len(seqs), "templates")
        feats = []
        for i, (x, s) in enumerate(zip(seqs, tmpls)):
            label = f"sequence {i}" + (f" ({names[i]!r})" if names else "")
            feats.append(self._windows(_as_flat(x, label), s, label))
        out = np.concatenate(feats) if feats else np.zeros((0, self.dim))
        if len(out) < 2:
            raise ValueError(
                f"the set of {len(seqs)} sequences gives {len(out)} FID windows of {self.window} frames; "
                "expected at least 2"
            )
        return out

    def save(self, path: str | Path) -> Path:
        """Write the extractor to `path` as a single .npz (no pickles)."""
        path = Path(path)
        with open(path, "wb") as f:  # a file handle, so numpy appends no suffix
            np.savez(
                f,
                format=np.array(self._FORMAT),
                version=np.array(self._VERSION),
                vertex_idx=self.vertex_idx.astype(np.int64),
                n_vertices=np.array(self.n_vertices),
                mean=self.mean,
                components=self.components,
                scale=self.scale,
                window=np.array(self.window),
                hop=np.array(self.hop),
                explained_variance_ratio=self.explained_variance_ratio,
                n_train_frames=np.array(self.n_train_frames),
                n_train_seqs=np.array(self.n_train_seqs),
            )
        return path

    @classmethod
    def load(cls, path: str | Path) -> "MotionFeatureExtractor":
        """Read an extractor written by `save`."""
        with np.load(path, allow_pickle=False) as f:
            if "format" not in f.files or str(f["format"]) != cls._FORMAT:
                raise ValueError(f"{path}: not a saved {cls._FORMAT} (keys {sorted(f.files)})")
            if int(f["version"]) != cls._VERSION:
                raise ValueError(f"{path}: format version {int(f['version'])}, expected {cls._VERSION}")
            return cls(
                vertex_idx=f["vertex_idx"],
                n_vertices=int(f["n_vertices"]),
                mean=f["mean"],
                components=f["components"],
                scale=f["scale"],
                window=int(f["window"]),
                hop=int(f["hop"]),
                explained_variance_ratio=f["explained_variance_ratio"],
                n_train_frames=int(f["n_train_frames"]),
                n_train_seqs=int(f["n_train_seqs"]),
            )

    def describe(self) -> str:
        """One paragraph saying exactly what the features are."""
        d = self.components.shape[1]
        return (
            f"MotionFeatureExtractor: displacement from the template over {len(self.vertex_idx)} of "
            f"{self.n_vertices} vertices ({d} values per frame); PCA to k={self.n_components} "
            f"({100 * self.explained_variance_ratio.sum():.1f}% of training variance), divided by one "
            f"global scale (RMS coefficient norm on training frames); windows of {self.window} frames every {self.hop} frames "
            f"-> {self.dim}-dim features. Fitted on {self.n_train_frames} frames of "
            f"{self.n_train_seqs} training sequences."
        )

    def __repr__(self) -> str:
        return (
            f"MotionFeatureExtractor(|I|={len(self.vertex_idx)}, V={self.n_vertices}, "
            f"k={self.n_components}, window={self.window}, hop={self.hop})"
        )


def fid(
    pred_set: Sequence[Any], gt_set: Sequence[Any], extractor: MotionFeatureExtractor, templates: Any
) -> float:
    """Frechet distance between generated and ground-truth motion features.

    FID = |mu_G - mu_P|^2 + Tr(S_G + S_P - 2 (S_G S_P)^(1/2))

    mu, S: mean and covariance of `extractor` window features pooled over
    all sequences of each set (see `MotionFeatureExtractor` for the exact
    features, `frechet_distance` for the numerics).  Dimensionless (the
    features are standardised); MemoryTalker reports it x1e-1.  The
    Frechet form is the one of FID for images (Heusel et al. 2017) applied
    to motion, as in DualTalk's FD; the features are the kit's own.

    pred_set, gt_set: lists of (T, V, 3)/(T, V*3) sequences; templates: one
    (V, 3)/(V*3,) per sequence (shared by both sets, so both sets must
    have the same length), or a single template for all.
    """
    pred_set = _as_sequence_list(pred_set, "pred_set")
    gt_set = _as_sequence_list(gt_set, "gt_set")
    with _one_blas_thread():  # see `evaluate`
        f_p = extractor.features(pred_set, _template_list(templates, len(pred_set), "templates"))
        f_g = extractor.features(gt_set, _template_list(templates, len(gt_set), "templates"))
        return frechet_distance(f_g, f_p)


# test-set evaluation


def _mask_info(idx: np.ndarray) -> dict[str, Any]:
    digest = hashlib.sha1(np.ascontiguousarray(idx, dtype="<i8").tobytes()).hexdigest()
    return {"n": int(len(idx)), "n_unique": int(len(np.unique(idx))), "sha1": digest[:12]}


@dataclasses.dataclass(repr=False)
class EvalResult:
    """Metrics of one test set, as returned by `evaluate`.

    metrics: pooled values in raw units (`UNITS`: m^2, mm, or 1 for FID).
    per_sequence: one dict per sequence (name, lengths and every
    per-sequence metric).  notes: what was omitted, truncated or assumed.
    info: counts, mask sizes and sha1 of the int64 index bytes, extractor.
    """

    metrics: dict[str, float]
    per_sequence: list[dict[str, Any]]
    notes: list[str] = dataclasses.field(default_factory=list)
    info: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __getitem__(self, key: str) -> float:
        return self.metrics[key]

    def _counts(self) -> str:
        return f"{self.info.get('n_sequences', '?')} sequences, {self.info.get('n_frames', '?')} frames"

    def paper_units(self) -> dict[str, float]:
        """Values divided by their MemoryTalker Table 1 scale (`PAPER_UNITS`)."""
        return {k: v / PAPER_UNITS[k] for k, v in self.metrics.items() if k in PAPER_UNITS}

    def table(self) -> list[tuple[str, float, str, float, float]]:
        """Rows (metric, raw value, unit, paper-units value, scale)."""
        rows = []
        for k in UNITS:
            if k in self.metrics:
                scale = PAPER_UNITS.get(k, 1.0)
                rows.append((k, self.metrics[k], UNITS[k], self.metrics[k] / scale, scale))
        return rows

    def to_markdown(self) -> str:
        """The summary table, counts and notes as Markdown."""
        lines = ["| metric | value | unit | paper | scale |", "|---|---|---|---|---|"]
        for k, v, unit, paper, scale in self.table():
            lines.append(f"| {k} | {v:.4e} | {unit} | {paper:.4f} | {scale:g} |")
        lines.append("")
        lines.append(self._counts() + ".")
        lines += [f"- {note}" for note in self.notes]
        return "\n".join(lines)

    def to_csv(self, path: str | Path, per_sequence: bool = False) -> Path:
        """Write the summary table, or the per-sequence rows, as CSV."""
        path = Path(path)
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            if per_sequence:
                keys = list(self.per_sequence[0]) if self.per_sequence else []
                w.writerow(keys)
                w.writerows([row.get(k, "") for k in keys] for row in self.per_sequence)
            else:
                w.writerow(["metric", "value", "unit", "paper_value", "scale"])
                w.writerows([k, repr(v), u, repr(p), repr(s)] for k, v, u, p, s in self.table())
        return path

    def _repr_html_(self) -> str:
        head = "".join(f"<th>{h}</th>" for h in ("metric", "value", "unit", "paper", "scale"))
        body = "".join(
            f"<tr><td>{k}</td><td>{v:.4e}</td><td>{html.escape(u)}</td><td>{p:.4f}</td><td>{s:g}</td></tr>"
            for k, v, u, p, s in self.table()
        )
        notes = "".join(f"<li>{html.escape(n)}</li>" for n in self.notes)
        notes = f"<ul>{notes}</ul>" if notes else ""
        return f"<table><tr>{head}</tr>{body}</table><p>{self._counts()}</p>{notes}"

    def __repr__(self) -> str:
        vals = ", ".join(f"{k}={v:.4g}" for k, v in self.paper_units().items())
        return f"EvalResult({self.info.get('n_sequences', '?')} seqs, paper units: {vals})"


def evaluate(
    preds: Sequence[Any],
    gts: Sequence[Any],
    masks: dict[str, Any],
    templates: Any = None,
    extractor: MotionFeatureExtractor | None = None,
    names: Sequence[str] | None = None,
    max_len_diff: int = 2,
) -> EvalResult:
    """All metrics over a test set, pooled the way the field pools.

    preds, gts: lists of (T_k, V, 3)/(T_k, V*3) sequences in metres, paired
    by position.  masks: dict with "lips" (required) and "upper_face" (for
    FDD) index arrays.  templates: one (V, 3)/(V*3,) per sequence, or one
    for all; needed by FDD and FID.  extractor: needed by FID.

    Pooling (CodeTalker `main/cal_metric.py` convention):
      fve, lve, lip_max, lip_max_l2_mm, mve_mm  frames of all sequences
                                                 concatenated, then averaged
                                                 (long sequences weigh more)
      ldtw, fdd (signed)                         mean over sequences
      abs_fdd                                    mean over sequences of |fdd_k|
      fid                                        one value for the whole set

    A prediction and its ground truth whose lengths differ by at most
    `max_len_diff` frames are both truncated to the shorter; a larger
    difference raises ValueError.  FDD/FID are omitted, with a note, when
    their inputs are missing.

    BLAS runs on one thread here (via threadpoolctl, a scikit-learn
    dependency): the matrix products are small, and multi-threaded
    OpenBLAS ran about 3x slower whenever another process held a core.
    """
    with _one_blas_thread():
        return _evaluate(preds, gts, masks, templates, extractor, names, max_len_diff)


def _one_blas_thread():
    """Context limiting BLAS to one thread, if threadpoolctl is installed."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def _evaluate(preds, gts, masks, templates, extractor, names, max_len_diff) -> EvalResult:
    """Body of `evaluate`."""
    preds = _as_sequence_list(preds, "preds")
    gts = _as_sequence_list(gts, "gts")
    if len(preds) != len(gts):
        raise ValueError(
            f"got {len(preds)} predictions but {len(gts)} ground-truth sequences; expected pairs"
        )
    if not gts:
        raise ValueError("gts: empty test set; expected at least one sequence")
    n_seq = len(gts)
    if names is not None:
        names = [str(n) for n in names]
        if len(names) != n_seq:
            raise ValueError(f"names: got {len(names)} names for {n_seq} sequences")
    if not isinstance(masks, dict) or "lips" not in masks:
        got = sorted(masks) if isinstance(masks, dict) else type(masks).__name__
        raise ValueError(f"masks: expected a dict with at least the key 'lips', got {got}")
    suffix = [f" ({names[k]!r})" if names else "" for k in range(n_seq)]  # for messages
    labels = [f"#{k}{suffix[k]}" for k in range(n_seq)]

    notes: list[str] = []
    no_templates = templates is None
    want_fdd = not no_templates and "upper_face" in masks
    if not want_fdd:
        why = ["templates"] * no_templates + ["masks['upper_face']"] * ("upper_face" not in masks)
        notes.append(f"fdd/abs_fdd omitted: no {' and '.join(why)} given")
    want_fid = not no_templates and extractor is not None
    if not want_fid:
        why = ["templates"] * no_templates + ["extractor"] * (extractor is None)
        notes.append(f"fid omitted: no {' and '.join(why)} given")
    tmpls = _template_list(templates, n_seq, "templates") if templates is not None else None

    lips = upper = None
    n_vertices = None
    frame_cols: dict[str, list[np.ndarray]] = {col: [] for col in _FRAME_COLUMNS}
    rows: list[dict[str, Any]] = []
    kept_p, kept_g, n_truncated = [], [], 0
    for k in range(n_seq):
        p = _as_flat(preds[k], f"preds[{k}]{suffix[k]}")  # (T_p, V*3)
        g = _as_flat(gts[k], f"gts[{k}]{suffix[k]}")  # (T_g, V*3)
        if n_vertices is None:
            n_vertices = _n_vertices(g)
            lips = _as_index(masks["lips"], n_vertices, "masks['lips']")
            if want_fdd:
                upper = _as_index(masks["upper_face"], n_vertices, "masks['upper_face']")
        for side, x in (("preds", p), ("gts", g)):
            if _n_vertices(x) != n_vertices:
                raise ValueError(
                    f"{side}[{k}] {labels[k]}: has V = {_n_vertices(x)} vertices, "
                    f"expected V = {n_vertices} like gts[0]"
                )
        len_p, len_g = len(p), len(g)
        if abs(len_p - len_g) > max_len_diff:
            raise ValueError(
                f"sequence {labels[k]}: prediction has {len_p} frames but ground truth has {len_g} "
                f"(difference {abs(len_p - len_g)} > max_len_diff={max_len_diff})"
            )
        n_t = min(len_p, len_g)
        n_truncated += len_p != len_g
        p, g = p[:n_t], g[:n_t]  # (T, V*3)

        per_frame = _frame_errors(p, g, lips)  # (T,) each
        row: dict[str, Any] = {
            "name": names[k] if names else str(k),
            "n_frames": n_t,
            "len_pred": len_p,
            "len_gt": len_g,
        }
        for col, vals in per_frame.items():
            frame_cols[col].append(vals)
            row[col] = float(vals.mean())
        row["ldtw"] = _ldtw(_gather(p, lips), _gather(g, lips))
        if want_fdd:
            s = _as_template(tmpls[k], n_vertices, f"templates[{k}]")
            row["fdd"] = _fdd(_gather(p, upper), _gather(g, upper), s[upper])
        rows.append(row)
        if want_fid:
            kept_p.append(p)
            kept_g.append(g)

    metrics = {col: float(np.concatenate(vals).mean()) for col, vals in frame_cols.items()}  # frame-pooled
    metrics["ldtw"] = float(np.mean([r["ldtw"] for r in rows]))
    if want_fdd:
        per_seq_fdd = np.array([r["fdd"] for r in rows])
        metrics["fdd"] = float(per_seq_fdd.mean())
        metrics["abs_fdd"] = float(np.abs(per_seq_fdd).mean())
    if want_fid:
        f_p = extractor.features(kept_p, tmpls, names)
        f_g = extractor.features(kept_g, tmpls, names)
        metrics["fid"] = frechet_distance(f_g, f_p)
    metrics = {key: metrics[key] for key in UNITS if key in metrics}  # table order

    if n_truncated:
        notes.append(
            f"{n_truncated} of {n_seq} sequences truncated to the shorter of prediction and ground truth "
            f"(<= {max_len_diff} frames; see len_pred/len_gt)"
        )
    info: dict[str, Any] = {
        "n_sequences": n_seq,
        "n_frames": int(sum(r["n_frames"] for r in rows)),
        "n_vertices": n_vertices,
        "masks": {"lips": _mask_info(lips)} | ({"upper_face": _mask_info(upper)} if want_fdd else {}),
    }
    if want_fid:
        info["extractor"] = extractor.describe()
    return EvalResult(metrics=metrics, per_sequence=rows, notes=notes, info=info)
