"""The comparison harness: rows, seeds, reference rows (bounds, ceiling), claims, ordering."""
import numpy as np
import pytest

from mtk import compare, recipes, variants


def test_no_memory_is_one_stage_with_the_whole_budget(smoke_ds):
    nm = variants.no_memory("smoke", smoke_ds)
    assert nm.stage2 is None and nm.model.use_memory is False
    assert nm.stage1.epochs == recipes.budget("smoke")["epochs"]
    short = variants.no_memory("smoke", smoke_ds, epochs=2, phoneme_supervision=0.1, n_phonemes=5)
    assert short.stage1.epochs == 2 and short.stage2 is None and short.name != nm.name
    assert short.model.phoneme_supervision == 0.1 and short.key(smoke_ds) != nm.key(smoke_ds)


def test_comparison_rows_and_statement(smoke_ds):
    results = compare.run("smoke", smoke_ds, methods=["MemoryTalker", "FaceFormer", "SelfTalk"], progress=False)
    rows = compare.table(results)
    names = [r["method"] for r in rows]
    assert names[0] == "MemoryTalker" and any("condition 2" in n for n in names)
    assert sum(n.startswith("FaceFormer") for n in names) == 2            # averaged and fixed condition
    ff = next(r for r in results if r.name == "FaceFormer")
    assert len(ff.per_condition) == len(smoke_ds.train_subjects)
    fve = [c.metrics["fve"] for c in ff.per_condition]
    assert np.std(fve) > 0                                                # the ID changes the face
    for r in rows:
        assert all(np.isfinite(r[k]) for k in compare.TABLE_METRICS) and r["params_M"] > 0
    md = compare.to_markdown(rows)
    assert "Reported by the paper" in md and "0.506" in md                # the quoted MemoryTalker FVE
    o = compare.ordering(rows)
    assert set(o["methods"]) == {"MemoryTalker", "FaceFormer", "SelfTalk"}


def _rows(values: dict[str, dict]) -> list[dict]:
    """Table rows as compare.table writes them, one-hot methods twice (the fixed condition must be ignored)."""
    rows = []
    for name, m in values.items():
        if name in compare.ONE_HOT:
            rows.append({"method": f"{name} (mean of 8 conditions)", **m})
            rows.append({"method": f"{name} (condition 2)", **{k: 0.0 for k in m}})   # would win everything
        else:
            rows.append({"method": name, **m})
    return rows


def test_ordering_on_constructed_tables_with_known_answers():
    paper = compare.PAPER_TABLE1
    same = compare.ordering(_rows(paper))                              # the paper's own numbers
    assert same["holds"] and same["wins"] == list(compare.TABLE_METRICS) and same["rho"] == pytest.approx(1.0)
    assert same["best_fve"] == "MemoryTalker" and len(same["methods"]) == 7
    flipped = compare.ordering(_rows({n: {k: -v for k, v in m.items()} for n, m in paper.items()}))
    assert flipped["wins"] == [] and flipped["rho"] == pytest.approx(-1.0) and not flipped["holds"]
    assert flipped["best_fve"] == "CodeTalker"                         # the paper's worst FVE (0.721)
    # MemoryTalker best on FVE and LVE only; on the other three it is the worst
    mixed = {n: dict(m) for n, m in paper.items()}
    for k in ("fid", "ldtw", "lip_max"):
        mixed["MemoryTalker"][k] = 10.0
    o = compare.ordering(_rows(mixed))
    assert o["wins"] == ["fve", "lve"] and not o["holds"]
    from scipy.stats import spearmanr
    names = list(paper)
    expected = np.mean([spearmanr([paper[n][k] for n in names], [mixed[n][k] for n in names])[0]
                        for k in compare.TABLE_METRICS])
    assert o["rho"] == pytest.approx(expected) and 0 < o["rho"] < 1
    text = compare.ordering_statement(_rows(mixed))
    assert "does not hold" in text and "best on 2 of 5 metrics (fve, lve)" in text and f"{o['rho']:+.2f}" in text


def test_seeded_rows_reference_rows_and_claims(smoke_ds):
    """MemoryTalker and its no-memory row with 2 seeds: mean ± std rows, the stage-1 row, the ceiling rows
    (each seed's stage-1 model, fitted), the bounds rows, and the claims read against the seed spread."""
    results = compare.run("smoke", smoke_ds, methods=["MemoryTalker", "MemoryTalker w/o memory"], progress=False,
                          seeds=2, ceiling=True)
    names = [r.name for r in results]
    assert names == ["MemoryTalker", compare.STAGE1_ROW] + [n for n, _ in compare.CEILING_ROWS.values()] + \
        ["MemoryTalker w/o memory"]
    assert all(len(r.per_seed) == 2 for r in results)
    mt = results[0]
    assert mt.per_seed[0].metrics["fve"] != mt.per_seed[1].metrics["fve"]           # the seeds differ
    rows = compare.table(results)
    for r in rows:
        assert r["seeds"] == 2 and all(np.isfinite(r[f"{k}_std"]) and r[f"{k}_std"] > 0 for k in compare.TABLE_METRICS)
        assert r["fve"] == pytest.approx(np.mean([x.metrics["fve"] for x in results[names.index(r["method"])].per_seed])
                                         / compare.PAPER_UNITS["fve"])
    brows = compare.bound_rows(smoke_ds, n_draws=8)
    assert [r["method"] for r in brows] == [n for n, _ in compare.BOUND_ROWS.values()]
    md = compare.to_markdown(rows + brows, with_paper=False)
    assert " ± " in md and "| – |" in md                                  # spreads shown; unbounded metrics a dash
    text = "\n".join(compare.claims(results, rows))
    assert "Stage 2 improves on stage 1" in text and "The memory helps" in text
    assert all(any(v in line for v in ("held", "not resolved")) for line in text.splitlines())


def test_verdicts_on_constructed_differences():
    assert compare.verdict(-0.5, 0.2) == "held"
    assert compare.verdict(0.5, 0.2) == "not held"
    assert compare.verdict(0.1, 0.2) == "not resolved"
    assert compare.verdict(-0.5, float("nan")) == "not resolved"           # no spread: nothing is resolved


def test_one_encoder_for_every_method(smoke_ds):
    """`compare.run(audio=...)`: every method's recipe gets the same encoder (here a distinctive copy of the kit's
    smoke encoder, so nothing is downloaded or trained); an unknown method name stops before any training."""
    from dataclasses import replace
    from mtk.audio import AudioConfig
    enc = replace(AudioConfig.smoke(), hidden_size=48, dropout=0.0)
    for name, (_, make) in compare.METHODS.items():
        r = make("smoke", smoke_ds, audio=enc)
        assert r.model.audio == enc, name
        assert make("smoke", smoke_ds).model.audio != enc, name
    with pytest.raises(KeyError, match="MemoryTalkr"):
        compare.run("smoke", smoke_ds, methods=["MemoryTalkr"], audio=enc, progress=False)


def test_encoder_rows_read_differences_against_the_seed_spread():
    base = [{"method": "MemoryTalker", "fve": 1.0, "fve_std": 0.05, "seeds": 3},
            {"method": "SelfTalk", "fve": 1.2, "fve_std": float("nan"), "seeds": 1},
            {"method": "only here", "fve": 9.0, "fve_std": float("nan"), "seeds": 1}]
    other = [{"method": "MemoryTalker", "fve": 0.8, "fve_std": 0.02, "seeds": 3},
             {"method": "SelfTalk", "fve": 1.25, "fve_std": float("nan"), "seeds": 1}]
    rows = compare.encoder_rows(base, other, metrics=("fve",))
    assert [r["method"] for r in rows] == ["MemoryTalker", "SelfTalk"]
    mt, st = rows
    assert mt["fve_diff"] == pytest.approx(-0.2) and mt["fve_spread"] == pytest.approx(0.1)
    assert mt["fve_verdict"] == "held"
    assert st["fve_spread"] == pytest.approx(0.1)                 # MemoryTalker's larger std as the yardstick
    assert st["fve_verdict"] == "not resolved"                    # +0.05 within 0.1
    other[1]["fve"] = 1.4
    assert compare.encoder_rows(base, other, metrics=("fve",))[1]["fve_verdict"] == "not held"
