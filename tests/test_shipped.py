"""The trained default MemoryTalker shipped in mtk/pretrained/: its recipe is the code's, it loads without
training, and a stale one is refused with the reason."""
import json
from dataclasses import replace

import pytest
import torch

from mtk import recipes, shipped
from mtk.data import FaceDataset, collate
from mtk.synthvoca.template import Template

torch.set_num_threads(1)


def test_the_shipped_default_model_is_the_codes_default_recipe():
    """Whenever a default model ships, it must be the code's default recipe (else animate would silently use
    a model the code no longer trains); docs/performance.md, "A shipped model"."""
    folder = shipped.folder("default")
    if not (folder / "recipe.json").exists():
        pytest.skip(f"{folder}: no trained default MemoryTalker ships with this checkout yet")
    rec = json.loads((folder / "recipe.json").read_text())
    now = shipped.code_identity("default", Template.load(folder / "template.npz"))
    assert rec["identity"] == now, ("the shipped default MemoryTalker was trained with another recipe than the code's "
                                    "default; retrain it (make reproduce) and ship it (mtk.shipped.ship)")
    assert sum(f.stat().st_size for f in folder.iterdir()) < 20e6


def test_the_device_is_not_part_of_a_runs_identity(trained, smoke_ds, monkeypatch):
    """A run trained on a GPU is the same recipe on a CPU: same folder, same shipped identity, and its finished
    checkpoints load (not retrain) whatever device is asked for; the model comes back on the CPU."""
    r, model, out = trained
    gpu = recipes.on_device(r, "cuda")
    assert gpu.stage1.device == gpu.stage2.device == "cuda" and r.stage1.device != "cuda"
    assert gpu.run_dir(smoke_ds) == r.run_dir(smoke_ds)
    assert recipes.identity(gpu, smoke_ds) == recipes.identity(r, smoke_ds)

    def no_training(*a, **k):
        raise AssertionError("a finished run must load, not train, on another device setting")
    monkeypatch.setattr("mtk.train.FaceDataset", no_training)         # built only when an epoch is to run
    again, _ = recipes.load_or_train(recipes.on_device(r, "cpu"), smoke_ds, progress=False, device="auto")
    assert {p.device.type for p in again.parameters()} == {"cpu"}
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), model.state_dict().values()))
    if not torch.cuda.is_available():                                    # a GPU-trained run on a CPU machine
        with pytest.warns(UserWarning, match="the run is finished, so it is loaded on the CPU"):
            on_cpu, _ = recipes.load_or_train(gpu, smoke_ds, progress=False)
        assert all(torch.equal(a, b) for a, b in zip(on_cpu.state_dict().values(), model.state_dict().values()))
        with pytest.raises(ValueError, match="cuda"):                      # training would need the GPU
            recipes.load_or_train(replace(gpu, stage2=replace(gpu.stage2, epochs=gpu.stage2.epochs + 1)),
                                  smoke_ds, progress=False)
    monkeypatch.setenv("MTK_DEVICE", "quantum")
    with pytest.raises(ValueError, match="MTK_DEVICE: device 'quantum': expected 'auto', 'cpu'"):
        recipes.load_or_train(r, smoke_ds, progress=False)


@pytest.fixture
def shipped_dir(tmp_path, monkeypatch, trained, smoke_ds):
    """The smoke run of `trained` (conftest: one batch per epoch) shipped into a temporary package folder."""
    r, _, out = trained
    monkeypatch.setattr(shipped, "SHIPPED_DIR", tmp_path / "pretrained")
    shipped.ship("smoke", out["run_dir"], out, r, smoke_ds)
    return tmp_path / "pretrained" / "memorytalker-smoke"


def _match_code(folder):
    """Make the shipped smoke model's recorded identity the code's (the run above shortened its schedule)."""
    rec = json.loads((folder / "recipe.json").read_text())
    rec["identity"] = shipped.code_identity("smoke", Template.load(folder / "template.npz"))
    (folder / "recipe.json").write_text(json.dumps(rec))


def test_shipped_model_loads_as_trained(trained, shipped_dir, smoke_ds):
    r, model, out = trained
    _match_code(shipped_dir)
    loaded, from_shipped = shipped.load("smoke")
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    for k, v in out["stage1_state"].items():
        assert torch.equal(v, from_shipped["stage1_state"][k]), k
    st1 = recipes.stage1_model(r, smoke_ds, from_shipped)
    batch = collate([FaceDataset(smoke_ds.sequences("test")[:2], 3)[i] for i in range(2)])
    ref = recipes.stage1_model(r, smoke_ds, out).predict_batch(batch, stage=1)
    assert torch.equal(st1.predict_batch(batch, stage=1), ref)
    assert from_shipped["history2"] == json.loads(json.dumps(out["history2"]))


def test_load_or_train_uses_the_shipped_model_without_training(shipped_dir, tmp_path, monkeypatch):
    _match_code(shipped_dir)
    monkeypatch.setenv("MTK_HOME", str(tmp_path / "new-home"))          # a machine that never trained anything

    def no_training(*a, **k):
        raise AssertionError("the shipped model matches: nothing may be trained or generated")
    monkeypatch.setattr(recipes, "load_or_train", no_training)
    monkeypatch.setattr("mtk.data.load_dataset", no_training)
    model, trained = shipped.load_or_train("smoke", progress=False)
    assert not model.training and trained["model_folder"] == shipped_dir
    assert not (tmp_path / "new-home" / "data").exists()


def test_a_stale_shipped_model_is_refused_with_the_reason(shipped_dir, tmp_path, monkeypatch, capsys):
    # the run above trained one batch per epoch: not the code's smoke recipe
    folder, why = shipped.check("smoke")
    assert folder is None and "stage1" in why and "stage2" in why
    monkeypatch.setenv("MTK_HOME", str(tmp_path / "new-home"))

    class Trains(Exception):
        pass

    def trains(*a, **k):
        raise Trains
    monkeypatch.setattr("mtk.data.load_dataset", trains)
    with pytest.raises(Trains):
        shipped.load_or_train("smoke", progress=False)
    out = capsys.readouterr().out
    assert "different recipe" in out and "training the smoke MemoryTalker here first" in out
