"""The trained default MemoryTalker that ships with the kit, so a first `animate` needs no training.

    mtk/pretrained/memorytalker-default/
        config.json, model.safetensors, template.npz     `MemoryTalker.save_pretrained` (float32, ~16 MB)
        stage1_style_encoder.safetensors                  the style encoder as stage 1 left it (its init)
        recipe.json                                       `recipes.identity` of the recipe that trained it,
                                                          its loss histories and its training seconds

`make reproduce` trains the default MemoryTalker like every other model; `ship` then copies that run here.
`load_or_train(preset)` is what `animate` and notebook 07 call:

    1. this machine's finished run of the preset's recipe (runs/), if there is one;
    2. else the shipped model, if its recorded identity is the code's recipe today (same configs, schedules,
       SynthVOCA key and encoder-pretraining recipe): loaded in a second, nothing trained;
    3. else trained here (pretraining and both stages), saying why and about how long it will take.

The identity names the dataset and the encoder pretraining by key rather than by content, so it is the same
on every machine; a change to the generator's code, a config or a schedule changes it, and the stale shipped
model is then not used. tests/test_shipped.py checks the shipped identity against the code's.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

from . import checkpoint, recipes
from .model import MemoryTalker
from .synthvoca.template import Template

SHIPPED_DIR = Path(__file__).parent / "pretrained"


def folder(preset: str) -> Path:
    return SHIPPED_DIR / f"memorytalker-{preset}"


def _synth_config(preset: str):
    from .synthvoca import SynthConfig
    return SynthConfig.smoke() if preset == "smoke" else SynthConfig.default()


def code_identity(preset: str, template: Template) -> dict:
    """`recipes.identity` of the code's recipe for `preset` on its SynthVOCA, computed without generating the
    data or pretraining the encoder (only the dataset's key and the template's size enter it)."""
    stub = SimpleNamespace(key=_synth_config(preset).key(), template=template, has_phonemes=True)
    recipe = recipes.memorytalker(preset, stub, progress=False, pretrain=False, motion_scale=0.0)
    return recipes.identity(recipe, stub)


def ship(preset: str, run_dir: Path, trained: dict, recipe: recipes.Recipe, dataset, out: Path | None = None) -> Path:
    """Copy a finished run (`recipes.load_or_train` of `recipes.memorytalker(preset, dataset)`) to `out`
    (default: the package's shipped folder for the preset), with its identity and histories."""
    out = Path(out) if out is not None else folder(preset)
    src = Path(run_dir) / "model"
    if not (src / "config.json").exists():
        raise FileNotFoundError(f"{src}: no finished model (train both stages with recipes.load_or_train first)")
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(src, out)
    style = {k[len("style_encoder."):]: v for k, v in trained["stage1_state"].items() if k.startswith("style_encoder.")}
    checkpoint.save_tensors(out / "stage1_style_encoder.safetensors", style)
    h1, h2 = trained.get("history1") or {}, trained.get("history2") or {}
    checkpoint.write_json(out / "recipe.json", {
        "preset": preset, "identity": recipes.identity(recipe, dataset), "history1": h1, "history2": h2,
        "train_seconds": sum(h1.get("seconds", [])) + sum(h2.get("seconds", [])),
        "note": "written by mtk.shipped.ship from a `make reproduce` run"})
    return out


def check(preset: str) -> tuple[Path | None, str]:
    """-> (the shipped folder, "") if it can stand in for the preset's recipe, else (None, why not)."""
    f = folder(preset)
    if not (f / "recipe.json").exists():
        return None, f"no trained {preset} MemoryTalker ships with this copy of the kit ({f})"
    shipped = json.loads((f / "recipe.json").read_text())
    now = code_identity(preset, Template.load(f / "template.npz"))
    if shipped["identity"] != now:
        changed = sorted(k for k in now if now[k] != shipped["identity"].get(k))
        return None, (f"the shipped {preset} MemoryTalker ({f}) was trained with a different recipe than the code's "
                      f"today (differs in: {', '.join(changed)})")
    return f, ""


def load(preset: str) -> tuple[MemoryTalker, dict]:
    """The shipped model (eval mode) and a `trained` dict like `recipes.load_or_train`'s:
    {"model_folder", "stage1_state", "history1", "history2"}."""
    f = folder(preset)
    model = MemoryTalker.from_pretrained(f)
    rec = json.loads((f / "recipe.json").read_text())
    stage1 = dict(model.state_dict())
    for k, v in checkpoint.load_tensors(f / "stage1_style_encoder.safetensors").items():
        stage1["style_encoder." + k] = v
    return model, {"model_folder": f, "stage1_state": {k: v.detach().clone() for k, v in stage1.items()},
                   "history1": rec["history1"], "history2": rec["history2"]}


def _finished_here(preset: str):
    """The recipe and dataset of this machine's finished run of the preset, or (None, None)."""
    stub = SimpleNamespace(key=_synth_config(preset).key())
    cfg = recipes.pretrained_audio(preset, stub, train=False)
    if not (Path(cfg.pretrained) / "pretrain.json").exists():
        return None, None
    from .data import load_dataset
    ds = load_dataset(preset, progress=False)
    recipe = recipes.memorytalker(preset, ds, progress=False)
    return (recipe, ds) if (recipe.run_dir(ds) / "model" / "config.json").exists() else (None, None)


def load_or_train(preset: str, progress: bool = True, device: str | None = None) -> tuple[MemoryTalker, dict]:
    """The preset's trained MemoryTalker: this machine's run, else the shipped one, else trained now on
    `device` (see the module docstring). -> (model in eval mode on the CPU, trained dict as
    `recipes.load_or_train`'s)."""
    recipe, ds = _finished_here(preset)
    if recipe is not None:
        model, trained = recipes.load_or_train(recipe, ds, progress=progress, device=device)
        return model.eval(), trained
    f, why = check(preset)
    if f is not None:
        return load(preset)
    estimate = {"smoke": "about a minute", "default": "about 6 minutes on 2 CPU cores"}.get(preset, "a while")
    print(f"{why}: training the {preset} MemoryTalker here first ({estimate}: SynthVOCA, the speech encoder's "
          "phoneme pretraining, then both stages; later calls load it).", flush=True)
    from .data import load_dataset
    ds = load_dataset(preset, progress=progress)
    model, trained = recipes.load_or_train(recipes.memorytalker(preset, ds, progress=progress), ds, progress=progress,
                                           device=device)
    return model.eval(), trained

