"""The comparison of MemoryTalker's Table 1: every method trained on the same data with the same budget,
evaluated by the same code on speakers none of them saw in training.

    results = compare.run("default", dataset)       # trains or loads every method
    compare.table(results)                          # rows in the paper's units, beside the paper's numbers

How each method meets an unseen speaker (the paper's point is how style is handled):

    MemoryTalker    style from the audio alone (stage 2)           no identity needed
    FaceFormer      one-hot training-speaker ID                    averaged over all 8 conditions, and condition 2
    CodeTalker      one-hot training-speaker ID                    averaged over all 8 conditions, and condition 2
    SelfTalk        none                                           -
    Imitator        style code adapted on the speaker's reference sentences (3D meshes of that speaker)
    ScanTalk        none (the identity is the mesh)                -
    UniTalker       per-identity embedding; a shared pivot identity for unseen speakers
    no memory       MemoryTalker without the memory (the ablation row)

MemoryTalker and its no-memory ablation are trained with `seeds` seeds (initialisation and data order) and
reported as mean ± sample std; MemoryTalker's stage-1 model gets its own row. Reference rows frame the
table (SynthVOCA only): the task's exact bounds (`mtk.bounds`: the best possible prediction knowing the
true style, only its audible part, or nothing of it) and the ceiling (`mtk.ceiling`: the frozen stage-1
model with its memory's style fitted on each test speaker's reference sentences).

The one-hot methods' fixed condition is training speaker 2, as Imitator's tests and the
FaceFormer/CodeTalker demos use `FaceTalk_170725_00137_TA` (index 2).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np

from . import recipes
from .metrics import PAPER_UNITS

# MemoryTalker Table 1 (VOCA-Test), as reported by the paper's poster; scales FVE x1e-6, LVE x1e-5,
# FID x1e-1, LDTW x1e-5, Lip-max x1e-4 (`memorytalker.md` 4.1). Quoted, not measured here.
PAPER_TABLE1 = {
    "FaceFormer": {"fve": 0.639, "lve": 0.413, "fid": 3.583, "ldtw": 0.507, "lip_max": 0.452},
    "CodeTalker": {"fve": 0.721, "lve": 0.498, "fid": 3.713, "ldtw": 0.554, "lip_max": 0.484},
    "SelfTalk": {"fve": 0.593, "lve": 0.382, "fid": 3.279, "ldtw": 0.475, "lip_max": 0.416},
    "Imitator": {"fve": 0.686, "lve": 0.456, "fid": 3.918, "ldtw": 0.554, "lip_max": 0.472},
    "ScanTalk": {"fve": 0.609, "lve": 0.375, "fid": 3.623, "ldtw": 0.457, "lip_max": 0.420},
    "UniTalker": {"fve": 0.570, "lve": 0.382, "fid": 3.256, "ldtw": 0.507, "lip_max": 0.407},
    "MemoryTalker": {"fve": 0.506, "lve": 0.293, "fid": 3.045, "ldtw": 0.418, "lip_max": 0.331},
}
TABLE_METRICS = ("fve", "lve", "fid", "ldtw", "lip_max")
FIXED_CONDITION = 2

METHODS = {
    # name: (how style is handled, how to build the recipe)
    "MemoryTalker": ("audio-guided stylization", lambda p, d, **kw: recipes.memorytalker(p, d, **kw)),
    "FaceFormer": ("one-hot ID", lambda p, d, **kw: _baseline("faceformer", p, d, **kw)),
    "CodeTalker": ("one-hot ID", lambda p, d, **kw: _baseline("codetalker", p, d, **kw)),
    "SelfTalk": ("none", lambda p, d, **kw: _baseline("selftalk", p, d, **kw)),
    "Imitator": ("reference meshes (test-time adaptation)", lambda p, d, **kw: _baseline("imitator", p, d, **kw)),
    "ScanTalk": ("none (topology-agnostic)", lambda p, d, **kw: _baseline("scantalk", p, d, **kw)),
    "UniTalker": ("identity embedding, pivot for unseen", lambda p, d, **kw: _baseline("unitalker", p, d, **kw)),
    "MemoryTalker w/o memory": ("none (ablation)", lambda p, d, **kw: _variant("no_memory", p, d, **kw)),
}
ONE_HOT = {"FaceFormer", "CodeTalker"}
SEEDED = {"MemoryTalker", "MemoryTalker w/o memory"}      # trained with `run(seeds=...)` seeds
STAGE1_ROW = "MemoryTalker, stage 1 only"
CEILING_ROWS = {
    # mtk.ceiling kind: (row name, what it is given)
    "slots": ("ceiling: slot weights fitted", "w_s fitted on the speaker's reference meshes"),
    "gain": ("ceiling: memory gain fitted", "one gain fitted on the speaker's reference meshes"),
    "memory": ("ceiling: speaker memory fitted", "M + Delta fitted on the speaker's reference meshes"),
}


def _baseline(name, preset, dataset, **kw):
    from .baselines import recipe
    return recipe(name, preset, dataset, **kw)


def _variant(name, preset, dataset, **kw):
    from . import variants
    return getattr(variants, name)(preset, dataset, **kw)


@dataclass
class MethodResult:
    name: str
    style: str
    params: int                       # parameters used at inference
    train_seconds: float              # summed over the method's stages (shared audio pretraining excluded)
    result: object                    # metrics.EvalResult on the test speakers' protocol sentences
    per_condition: list = field(default_factory=list)     # one-hot methods: an EvalResult per training speaker
    fixed: object | None = None       # one-hot methods: the fixed condition's EvalResult
    extra_seconds: float = 0.0        # e.g. Imitator's test-time adaptation
    model: object = field(default=None, repr=False)
    per_seed: list = field(default_factory=list)          # seeded rows: an EvalResult per seed (seed 0 first)

    def averaged(self) -> dict:
        """Metrics (raw SI): the mean over conditions (one-hot methods) or over seeds, else the method's own."""
        many = self.per_condition or self.per_seed
        if not many:
            return dict(self.result.metrics)
        return {k: float(np.mean([r.metrics[k] for r in many])) for k in self.result.metrics}

    def seed_std(self) -> dict:
        """Sample std (ddof 1) over seeds of each metric (raw SI); empty with fewer than 2 seeds."""
        if len(self.per_seed) < 2:
            return {}
        return {k: float(np.std([r.metrics[k] for r in self.per_seed], ddof=1)) for k in self.result.metrics}


def inference_params(model) -> int:
    """Parameters used at inference (SelfTalk's frozen recogniser and lip reader train only)."""
    skip = ("asr.", "interpreter.", "lip_map.", "lm_head.")
    return sum(p.numel() for n, p in model.named_parameters()
               if not (type(model).__name__ == "SelfTalk" and n.startswith(skip)))


def seeded(recipe, seed: int):
    """The recipe trained with another seed (initialisation and data order, both stages); seed 0 is the recipe."""
    if seed == 0:
        return recipe
    return replace(recipe, name=f"{recipe.name}-seed{seed}", stage1=replace(recipe.stage1, seed=seed),
                   stage2=recipe.stage2 and replace(recipe.stage2, seed=seed))


def run(preset: str, dataset, methods=None, progress: bool = True, seeds: int = 1,
        ceiling: bool = False, audio=None, val_every: int = 0) -> list[MethodResult]:
    """Train (or load) and evaluate every method; returns one MethodResult each, in METHODS order.

    seeds: how many seeds the `SEEDED` methods are trained with (the others: one). MemoryTalker also gives
    its stage-1 row (`STAGE1_ROW`). ceiling: add the `CEILING_ROWS` (`mtk.ceiling`, fitted on each seed's
    stage-1 model; SynthVOCA or any dataset with reference sentences). audio: one speech encoder for every
    method (an `AudioConfig`, e.g. `AudioConfig.whisper_tiny_en()`) instead of the preset's; the methods'
    other settings and budgets are unchanged, so the table compares encoders at the same budget.
    val_every: how often each training computes its validation loss (`TrainConfig.val_every`); by default after
    its last epoch only. The table needs the trained weights, not the loss curves, and the weights are the
    same either way (`train.validation`); at the default preset per-epoch validation cost about 190 s of
    notebook 04 (docs/performance.md). A run trained here and loaded by a notebook that draws its curve (02,
    03) shows the validation points it has."""
    if seeds < 1:
        raise ValueError(f"seeds = {seeds}: expected at least 1")
    unknown = [m for m in (methods or ()) if m not in METHODS]
    if unknown:
        raise KeyError(f"unknown method(s) {unknown}; available: {list(METHODS)}")
    kw = {} if audio is None else {"audio": audio}
    out = []
    for name in methods or METHODS:
        style, make = METHODS[name]
        t0 = time.time()
        recipe = recipes.validating(make(preset, dataset, **kw), val_every)
        if name in SEEDED:
            out += _run_seeded(name, style, recipe, preset, dataset, seeds, ceiling, progress)
            if progress:
                print(f"{name}: {seeds} seed(s) done in {time.time() - t0:.0f} s", flush=True)
            continue
        model, trained = recipes.load_or_train(recipe, dataset, progress=progress)
        secs = _train_seconds(trained)
        stage = getattr(model, "n_stages", 1) if getattr(getattr(model, "cfg", None), "use_memory", True) else 1
        extra = 0.0
        if name == "Imitator":
            from .baselines import imitator
            t1 = time.time()
            cfg = getattr(imitator.AdaptConfig, preset if preset in ("smoke", "paper") else "default")()
            imitator.adapt_to_speakers(model, dataset, "test", cfg, progress=False)
            extra = time.time() - t1
        if name in ONE_HOT:
            per = [recipes.evaluate(model, dataset, "test", stage=stage, condition=k)
                   for k in range(len(dataset.train_subjects))]
            fixed = per[FIXED_CONDITION]
            res = per[FIXED_CONDITION]
        else:
            per, fixed = [], None
            res = recipes.evaluate(model, dataset, "test", stage=stage)
        out.append(MethodResult(name, style, inference_params(model), secs, res, per, fixed, extra, model))
        if progress:
            print(f"{name}: done in {time.time() - t0:.0f} s", flush=True)
    return out


def _train_seconds(trained: dict) -> float:
    return sum(sum(trained.get(h, {}).get("seconds", [])) for h in ("history1", "history2"))


def _run_seeded(name, style, recipe, preset, dataset, seeds, with_ceiling, progress) -> list[MethodResult]:
    """A SEEDED method's rows: its own (and for a two-stage model the stage-1 row and the ceiling rows)."""
    from . import ceiling
    two_stage = recipe.stage2 is not None
    res = {"main": [], "stage1": [], **{k: [] for k in CEILING_ROWS}}
    secs = {k: [] for k in res}
    model = None
    for s in range(seeds):
        r = seeded(recipe, s)
        m, trained = recipes.load_or_train(r, dataset, progress=progress)
        model = model or m
        res["main"].append(recipes.evaluate(m, dataset, "test", stage=2 if two_stage else 1))
        secs["main"].append(_train_seconds(trained))
        if two_stage:
            st1 = recipes.stage1_model(r, dataset, trained)
            res["stage1"].append(recipes.evaluate(st1, dataset, "test", stage=1))
            secs["stage1"].append(sum(trained["history1"].get("seconds", [])))
            if with_ceiling:
                cfg = getattr(ceiling.CeilingConfig, preset if preset in ("smoke", "paper") else "default")()
                for kind in CEILING_ROWS:
                    t0 = time.time()
                    res[kind].append(ceiling.evaluate(st1, dataset, "test", kinds=(kind,), cfg=cfg)[kind])
                    secs[kind].append(secs["stage1"][-1] + time.time() - t0)
    params = inference_params(model)
    rows = [(name, style, "main")]
    if two_stage:
        rows.append((STAGE1_ROW, "none (the memory as stage 1 left it)", "stage1"))
        if with_ceiling:
            rows += [(n, st, k) for k, (n, st) in CEILING_ROWS.items()]
    return [MethodResult(n, st, params, float(np.mean(secs[k])), res[k][0], per_seed=res[k],
                         model=model if k == "main" else None) for n, st, k in rows]


def table(results: list[MethodResult]) -> list[dict]:
    """Rows of the comparison in the paper's units, one-hot methods twice (averaged and fixed condition)."""
    rows = []
    for r in results:
        variants = [("", r.averaged())]
        if r.per_condition:
            variants = [(" (mean of 8 conditions)" if len(r.per_condition) == 8
                         else f" (mean of {len(r.per_condition)} conditions)", r.averaged()),
                        (f" (condition {FIXED_CONDITION})", dict(r.fixed.metrics))]
        for suffix, m in variants:
            row = {"method": r.name + suffix, "style": r.style, "params_M": r.params / 1e6,
                   "train_s": r.train_seconds + r.extra_seconds}
            row.update({k: m[k] / PAPER_UNITS[k] for k in TABLE_METRICS})
            row["abs_fdd"] = m["abs_fdd"] / PAPER_UNITS["abs_fdd"] if "abs_fdd" in m else float("nan")
            std = r.seed_std() if not suffix else {}
            row["seeds"] = len(r.per_seed) or 1
            row.update({f"{k}_std": std[k] / PAPER_UNITS[k] if k in std else float("nan") for k in TABLE_METRICS})
            rows.append(row)
    return rows


BOUND_ROWS = {
    # bound (mtk.bounds): (row name, what the prediction knows)
    "floor": ("bound: floor (true style)", "phonemes + the speaker's true style"),
    "audible": ("bound: audible style only", "phonemes + the audible style factors"),
    "style_blind": ("bound: style-blind", "phonemes only"),
}


def bound_rows(dataset, split: str = "test", n_draws: int = 128) -> list[dict]:
    """Table rows of the task's exact bounds (`mtk.bounds`, SynthVOCA only): FVE and LVE of the best possible
    prediction given what it knows; the other metrics are not bounded this way and are NaN."""
    from . import bounds
    out = []
    for r in bounds.bounds(dataset, split, n_draws=n_draws):
        if r["speaker"] != "all":
            continue
        name, knows = BOUND_ROWS[r["bound"]]
        row = {"method": name, "style": knows, "params_M": float("nan"), "train_s": float("nan")}
        row.update({k: float("nan") for k in TABLE_METRICS})
        row.update(fve=r["fve"], lve=r["lve"], abs_fdd=float("nan"), seeds=0)     # 0: computed, not trained
        row.update({f"{k}_std": float("nan") for k in TABLE_METRICS})
        out.append(row)
    return out


def condition_spread(result: MethodResult) -> dict:
    """For a one-hot method: mean and std over training-speaker conditions of each metric (paper units)."""
    out = {}
    for k in TABLE_METRICS:
        v = np.array([r.metrics[k] for r in result.per_condition]) / PAPER_UNITS[k]
        out[k] = (float(v.mean()), float(v.std()))
    return out


def ordering(rows: list[dict]) -> dict:
    """Does the paper's ordering hold here? From the table's rows (one-hot methods: their mean over conditions):

    wins      the metrics on which MemoryTalker is best (lowest), in TABLE_METRICS order
    rho       Spearman rank correlation of the methods with the paper's Table 1, mean over the five metrics
    best_fve  the method with the lowest FVE
    holds     MemoryTalker best on every metric
    """
    from scipy.stats import spearmanr
    ours = {}
    for r in rows:
        base = r["method"].split(" (")[0]
        if base in PAPER_TABLE1 and (base not in ONE_HOT or "mean of" in r["method"]):
            ours[base] = r
    names = [n for n in PAPER_TABLE1 if n in ours]
    wins = [k for k in TABLE_METRICS if min(names, key=lambda n: ours[n][k]) == "MemoryTalker"]
    rho = float(np.mean([spearmanr([PAPER_TABLE1[n][k] for n in names], [ours[n][k] for n in names])[0]
                         for k in TABLE_METRICS]))
    return {"wins": wins, "rho": rho, "best_fve": min(names, key=lambda n: ours[n]["fve"]),
            "holds": len(wins) == len(TABLE_METRICS), "methods": names}


def ordering_statement(rows: list[dict]) -> str:
    """`ordering` as one sentence."""
    o = ordering(rows)
    return (f"The paper's ordering {'holds' if o['holds'] else 'does not hold'} on SynthVOCA: MemoryTalker is best "
            f"on {len(o['wins'])} of {len(TABLE_METRICS)} metrics ({', '.join(o['wins']) or 'none'}), the best FVE "
            f"is {o['best_fve']}'s, and the rank correlation of the {len(o['methods'])} methods with the paper's "
            f"table is {o['rho']:+.2f} (Spearman, mean over the five metrics).")


def _fmt(v, spec: str) -> str:
    """A number for a table; a NaN (not measured for this row) as a dash."""
    return "–" if isinstance(v, float) and np.isnan(v) else format(v, spec)


def verdict(diff: float, spread: float) -> str:
    """A difference (lower is better: diff < 0 means the claim's side is better) read against a spread
    (two standard deviations): "held", "not held" (the other side is better beyond it) or "not resolved"."""
    if not np.isfinite(spread):
        return "not resolved"
    return "held" if diff < -spread else "not held" if diff > spread else "not resolved"


def paired_difference(a: MethodResult, b: MethodResult, metric: str = "fve") -> dict:
    """a minus b per seed (same seeds: e.g. stage 2 and stage 1 of the same runs), in paper units:
    {"mean", "std" (sample, nan for one seed), "per_seed", "verdict" of "a is lower than b"}."""
    d = np.array([x.metrics[metric] - y.metrics[metric] for x, y in zip(a.per_seed, b.per_seed)]) / PAPER_UNITS[metric]
    std = float(d.std(ddof=1)) if len(d) > 1 else float("nan")
    return {"mean": float(d.mean()), "std": std, "per_seed": d.tolist(), "verdict": verdict(float(d.mean()), 2 * std)}


def claims(results: list[MethodResult], rows: list[dict]) -> list[str]:
    """The paper's claims read on this table, each held / not held / not resolved with its numbers.

    Spreads: the seeded rows' sample std over seeds; a one-seed baseline is read against MemoryTalker's own
    seed spread (its own is not measured), so "beyond 2 std" assumes a similar spread."""
    by = {r.name: r for r in results}
    row = {r["method"]: r for r in rows}
    out = []
    mt = by.get("MemoryTalker")
    if mt is not None and STAGE1_ROW in by and len(mt.per_seed) > 1:
        p = paired_difference(mt, by[STAGE1_ROW])
        out.append(f"Stage 2 improves on stage 1 (FVE): {p['verdict']}: stage 2 minus stage 1 = {p['mean']:+.3f} ± "
                   f"{p['std']:.3f} over {len(p['per_seed'])} seeds (per seed: "
                   + ", ".join(f"{v:+.3f}" for v in p["per_seed"]) + "; x1e-6, paired by seed).")
    nm = by.get("MemoryTalker w/o memory")
    if STAGE1_ROW in by and nm is not None and len(nm.per_seed) > 1:
        a, b = row[STAGE1_ROW], row["MemoryTalker w/o memory"]
        spread = 2 * max(a["fve_std"], b["fve_std"])
        out.append(f"The memory helps (stage 1 vs without memory, FVE): {verdict(a['fve'] - b['fve'], spread)}: "
                   f"{a['fve']:.3f} ± {a['fve_std']:.3f} vs {b['fve']:.3f} ± {b['fve_std']:.3f} (x1e-6).")
    if mt is not None:
        o = ordering(rows)
        base = [n for n in o["methods"] if n != "MemoryTalker"]
        if base:
            r = row["MemoryTalker"]
            for k in TABLE_METRICS:
                best = min(base, key=lambda n: _mean_row(row, n)[k])
                b = _mean_row(row, best)
                std = r.get(f"{k}_std", float("nan"))
                out.append(f"MemoryTalker beats every baseline on {k.upper() if k != 'lip_max' else 'Lip-max'}: "
                           f"{verdict(r[k] - b[k], 2 * std)}: {r[k]:.3f} ± {std:.3f} vs the best baseline, "
                           f"{best}, {b[k]:.3f} (x{PAPER_UNITS[k]:g}; MemoryTalker's seed std as the yardstick).")
    return out


def _mean_row(row: dict, name: str) -> dict:
    """A method's row as `ordering` reads it (one-hot methods: the mean over conditions)."""
    return next(v for k, v in row.items() if k.split(" (")[0] == name and (name not in ONE_HOT or "mean of" in k))


def to_markdown(rows: list[dict], with_paper: bool = True) -> str:
    """The table in Markdown; a seeded row shows mean ± sample std over its seeds, a NaN a dash."""
    cols = ["fve", "lve", "fid", "ldtw", "lip_max", "abs_fdd"]

    def cell(r, c):
        std = r.get(f"{c}_std", float("nan"))
        return _fmt(r[c], ".3f") + ("" if np.isnan(std) else f" ± {std:.3f}")

    head = ["method", "style at test time", "params (M)", "train (s)"] + \
           [f"{c.upper() if c != 'lip_max' else 'Lip-max'} (x{PAPER_UNITS[c]:g})" for c in cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append("| " + " | ".join([r["method"], r["style"], _fmt(r["params_M"], ".2f"), _fmt(r["train_s"], ".0f")]
                                      + [cell(r, c) for c in cols]) + " |")
    if with_paper:
        lines += ["", "Reported by the paper (VOCASET, VOCA-Test; not measured here):", "",
                  "| method | FVE (x1e-6) | LVE (x1e-5) | FID (x1e-1) | LDTW (x1e-5) | Lip-max (x1e-4) |",
                  "|---|---|---|---|---|---|"]
        for n, m in PAPER_TABLE1.items():
            lines.append(f"| {n} | " + " | ".join(f"{m[k]:.3f}" for k in TABLE_METRICS) + " |")
    return "\n".join(lines)


def to_csv(rows: list[dict], path) -> None:
    import csv
    keys = list(rows[0])
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})


def encoder_rows(base: list[dict], other: list[dict], metrics=("fve", "lve")) -> list[dict]:
    """Two tables of the same methods on two speech encoders (`run(audio=...)`), method by method: each metric
    on both, other minus base, and the verdict of "the other encoder is lower" against two standard deviations
    (the larger of the two rows' seed std; a one-seed row borrows the larger of MemoryTalker's, as `claims`
    does). Rows present in only one table are skipped."""
    def std(rows, name, k):
        r = next(r for r in rows if r["method"] == name)
        s = r.get(f"{k}_std", float("nan"))
        if np.isfinite(s):
            return s
        mt = next((r for r in rows if r["method"] == "MemoryTalker"), {})
        return mt.get(f"{k}_std", float("nan"))
    names = [r["method"] for r in other]
    out = []
    for b in base:
        if b["method"] not in names:
            continue
        o = next(r for r in other if r["method"] == b["method"])
        row = {"method": b["method"], "seeds": min(b.get("seeds", 1), o.get("seeds", 1))}
        for k in metrics:
            spread = 2 * max(std(base, b["method"], k), std(other, b["method"], k))
            d = o[k] - b[k]
            row.update({f"{k}_base": b[k], f"{k}_other": o[k], f"{k}_diff": d, f"{k}_spread": spread,
                        f"{k}_verdict": verdict(d, spread)})
        out.append(row)
    return out
