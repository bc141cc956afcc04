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
    assert compare.ordering_statement(rows).startswith("The paper's ordering")
