"""The comparison harness and MemoryTalker's two reference variants (no memory, oracle style)."""
import numpy as np
import pytest
import torch

from mtk import compare, recipes, variants
from mtk.data import FaceDataset, collate


def test_oracle_style_reads_the_true_style(smoke_ds):
    r = variants.oracle_style("smoke", smoke_ds)
    torch.manual_seed(0)
    m = recipes.build(r, smoke_ds).eval()
    ds = FaceDataset(smoke_ds.sequences("test"), 3)
    b = collate([ds[0], ds[1]])
    assert "style" in b and b["style"].shape[0] == 2
    f1, w1 = m.batch_style(b)
    b2 = dict(b, style=b["style"] + 1.0)
    f2, w2 = m.batch_style(b2)
    assert not torch.allclose(w1, w2)                     # the slot weights follow the true style
    with pytest.raises(ValueError, match="true style"):
        m.batch_style({k: v for k, v in b.items() if k != "style"})


def test_oracle_shares_memorytalkers_stage1_and_no_memory_is_one_stage(smoke_ds):
    mt = recipes.memorytalker("smoke", smoke_ds)
    orc = variants.oracle_style("smoke", smoke_ds)
    assert orc.shares_stage1.key(smoke_ds) == mt.key(smoke_ds)
    model_mt, out_mt = recipes.load_or_train(mt, smoke_ds, progress=False, stages=(1,))
    model_or, out_or = recipes.load_or_train(orc, smoke_ds, progress=False)
    shared = [k for k in out_mt["stage1_state"] if not k.startswith("style_encoder.")]
    assert all(torch.equal(out_mt["stage1_state"][k], model_or.state_dict()[k]) for k in shared)
    nm = variants.no_memory("smoke", smoke_ds)
    assert nm.stage2 is None and nm.model.use_memory is False
    assert nm.stage1.epochs == recipes.budget("smoke")["epochs"]


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
