"""Training under torchrun with DDP (`mtk.distributed`), on the CPU with the gloo backend: two processes at
batch size B train like one process at 2B (same data order, gradients averaged), checkpoints are written once,
and the README's multi-GPU command runs as written with the fixture's paths and 2 CPU processes."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mtk.data import export_vocaset_layout

SCRIPT = r'''
import json, sys, warnings
from dataclasses import replace
warnings.simplefilter("ignore")
from mtk import distributed, recipes
from mtk.data import VOCASET
root, hubert, batch, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
distributed.init_from_env("cpu")
ds = VOCASET(root)
r = recipes.memorytalker("paper", ds, pretrained=hubert)
audio = replace(r.model.audio, mask_time_prob=0.0, layerdrop=0.0, dropout=0.0)       # no randomness: comparable
r = replace(r, model=replace(r.model, dropout=0.0, audio=audio),
            stage1=replace(r.stage1, epochs=2, max_batches=3, batch_size=batch), stage2=replace(r.stage2, epochs=1, max_batches=1,
            batch_size=batch))
import torch
init = torch.cat([p.detach().flatten() for p in recipes.build(r, ds).parameters()])   # the same start everywhere
model, res = recipes.load_or_train(r, ds, progress=False, device="cpu")
flat = torch.cat([p.detach().flatten() for p in model.parameters()])
sums = [float(flat.sum()), float(flat.abs().sum())]
rank, world = distributed.world()
every = [None] * world
if world > 1:
    torch.distributed.all_gather_object(every, sums)                   # each process's weights, summarised
else:
    every = [sums]
if distributed.is_main():
    json.dump({"loss": [h["loss"] for h in res["history1"]["train"]], "run": str(res["run_dir"]), "weights": every,
               "step": (flat - init).tolist()}, open(out, "w"))
distributed.shutdown()
'''


@pytest.fixture(scope="module")
def voca_root(smoke_ds, tmp_path_factory):
    return export_vocaset_layout(smoke_ds.root, tmp_path_factory.mktemp("ddp") / "vocaset")


def _torchrun() -> list[str]:
    exe = Path(sys.executable).with_name("torchrun")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "torch.distributed.run"]


def _env(home: Path) -> dict:
    return {**os.environ, "MTK_HOME": str(home), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def test_two_processes_train_like_one_with_the_doubled_batch(voca_root, hubert_folder, tmp_path):
    script = tmp_path / "fit.py"
    script.write_text(SCRIPT)
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    subprocess.run([sys.executable, str(script), str(voca_root), str(hubert_folder), "2", str(one)],
                   env=_env(tmp_path / "h1"), check=True, timeout=600)
    subprocess.run(_torchrun() + ["--standalone", "--nproc_per_node=2", str(script), str(voca_root),
                                  str(hubert_folder), "1", str(two)], env=_env(tmp_path / "h2"), check=True, timeout=600)
    half = tmp_path / "half.json"
    subprocess.run([sys.executable, str(script), str(voca_root), str(hubert_folder), "1", str(half)],
                   env=_env(tmp_path / "h3"), check=True, timeout=600)
    a, b, c = (json.loads(p.read_text()) for p in (one, two, half))
    assert len(a["loss"]) == len(b["loss"]) == 2
    # the first epoch's first step is the same computation split in two; later steps follow from averaged
    # gradients of half-batches, equal up to how the halves' frames weigh in the loss
    for x, y in zip(a["loss"], b["loss"]):
        assert y == pytest.approx(x, rel=0.05), (a["loss"], b["loss"], c["loss"])
    assert b["loss"][1] < b["loss"][0]                                        # and it trains
    assert b["weights"][0] == b["weights"][1]        # every process holds the same model: gradients were synchronised
    print("losses: one process at batch 2", a["loss"], "two at batch 1", b["loss"], "one at batch 1", c["loss"])
    written = sorted(p.name for p in Path(b["run"]).iterdir())
    assert "stage1.safetensors" in written and not any(".tmp" in n for n in written)


def test_the_readme_multi_gpu_command_runs_on_two_cpu_processes(voca_root, hubert_folder, tmp_path):
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    cmd = re.search(r"^torchrun --nproc_per_node=\d+ -m mtk train .*$", readme, re.M).group(0)
    for a, b in {"/data/vocaset": str(voca_root), "./hubert-base-ls960": str(hubert_folder),
                 "--device cuda": "--device cpu"}.items():
        assert a in cmd, a
        cmd = cmd.replace(a, b)
    cmd = re.sub(r"--nproc_per_node=\d+", "--standalone --nproc_per_node=2", cmd)
    args = cmd.split()[1:] + ["--epochs", "1", "--max-batches", "2"]
    out = subprocess.run(_torchrun() + args, env=_env(tmp_path / "home"), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("training memorytalker-paper") == 1 and "2 processes (DDP, cpu)" in out.stdout
    run = Path(re.search(r"--checkpoint (\S+)", out.stdout).group(1))
    assert (run / "model" / "config.json").exists() and (run / "stage2.json").exists()
