"""Checkpoints you can share: tensors as safetensors, everything else as JSON; nothing is ever unpickled.

A training checkpoint (what `mtk.train.fit` resumes from) is three files beside each other, e.g. for
`runs/<run>/stage1`:

    stage1.safetensors          the model's state_dict
    stage1.optim.safetensors    the optimizer's tensors (Adam's moments and steps) and torch's RNG state
    stage1.json                 epoch, history, configs, the optimizer's non-tensor state, the numpy and
                                python RNG states, and a write id that the two tensor files carry too

Each file is written to a temporary name and renamed; the JSON is written last, so a checkpoint whose
three write ids disagree was interrupted mid-write and is ignored (training starts that stage again).
Only the last epoch's optimizer state is kept.

A pretrained model folder (`save_pretrained` / `load_pretrained`) needs neither the dataset nor the
training code's state:

    config.json                 {"class", "config" (the model's dataclass config), "audio_config" (the
                                transformers config of its speech encoder), "mtk_version"}
    model.safetensors           the weights
    template.npz                the neutral face with its region masks and landmarks (plain arrays)
"""
from __future__ import annotations

import json
import os
import random
import uuid
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file


# --------------------------------------------------------------------------- tensors
def _plain(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """CPU, contiguous tensors that share no storage (safetensors refuses shared tensors: tied weights
    are written twice and tied again by `load_state_dict`)."""
    out, seen = {}, set()
    for k, v in state.items():
        v = v.detach().to("cpu").contiguous()
        ptr = (v.untyped_storage().data_ptr(), v.storage_offset()) if v.numel() else None
        if ptr is not None and ptr in seen:
            v = v.clone()
        elif ptr is not None:
            seen.add(ptr)
        out[k] = v
    return out


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """safetensors file written atomically (temporary file, then rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    save_file(_plain(tensors), str(tmp), metadata=metadata)
    os.replace(tmp, path)


def load_tensors(path: str | Path, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    return load_file(str(path), device=str(device))


def tensors_metadata(path: str | Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as f:
        return f.metadata() or {}


def write_json(path: str | Path, obj) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


# --------------------------------------------------------------------------- training state
def _paths(stem: Path) -> tuple[Path, Path, Path]:
    return (stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".optim.safetensors"),
            stem.with_name(stem.name + ".json"))


def exists(stem: str | Path) -> bool:
    """True if a training checkpoint has been written at `stem` (its JSON record exists)."""
    return _paths(Path(stem))[2].exists()


def _split_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors, state = {}, {}
    for pid, entries in sd["state"].items():
        state[str(pid)] = {}
        for name, v in entries.items():
            if torch.is_tensor(v):
                tensors[f"state.{pid}.{name}"] = v
            else:
                state[str(pid)][name] = v
    return tensors, {"state": state, "param_groups": sd["param_groups"]}


def _join_optimizer(tensors: dict[str, torch.Tensor], record: dict) -> dict:
    state: dict[int, dict] = {int(pid): dict(v) for pid, v in record["state"].items()}
    for key, v in tensors.items():
        if key.startswith("state."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = v
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in record["param_groups"]]
    return {"state": state, "param_groups": groups}


def save_training_state(stem: str | Path, model: torch.nn.Module, opt: torch.optim.Optimizer, record: dict) -> None:
    """Write the model, the optimizer and the RNG states at `stem` (see the module docstring).
    `record` (JSON-ready: key, epoch, history, configs, ...) goes into the JSON file."""
    stem = Path(stem)
    w_path, o_path, j_path = _paths(stem)
    write_id = uuid.uuid4().hex
    meta = {"write_id": write_id, "format": "mtk-training-state-1"}
    save_tensors(w_path, model.state_dict(), meta)
    opt_tensors, opt_record = _split_optimizer(opt)
    save_tensors(o_path, {**opt_tensors, "rng.torch": torch.get_rng_state()}, meta)
    np_state = np.random.get_state()
    rng = {"numpy": [np_state[0], np_state[1].tolist(), *[float(x) if isinstance(x, float) else int(x)
                                                           for x in np_state[2:]]],
           "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]]}
    write_json(j_path, {**record, "write_id": write_id, "optimizer": opt_record, "rng": rng})


def read_training_record(stem: str | Path) -> dict | None:
    """The JSON record of a training checkpoint, or None if there is none."""
    j_path = _paths(Path(stem))[2]
    return json.loads(j_path.read_text()) if j_path.exists() else None


def load_training_state(stem: str | Path, key: str, model: torch.nn.Module, opt: torch.optim.Optimizer | None,
                        device="cpu") -> dict | None:
    """Restore model, optimizer and RNG states from `stem` if it holds a run whose config hashes to `key`.
    Returns the JSON record, or None when there is no complete checkpoint of that run."""
    import warnings
    stem = Path(stem)
    w_path, o_path, _ = _paths(stem)
    record = read_training_record(stem)
    if record is None or record.get("key") != key:
        return None
    ids = [tensors_metadata(p).get("write_id") if p.exists() else None for p in (w_path, o_path)]
    if ids != [record["write_id"]] * 2:
        warnings.warn(f"{stem}: checkpoint files from different writes (interrupted while saving); "
                      "training this stage again from the start", stacklevel=2)
        return None
    model.load_state_dict(load_tensors(w_path, device))
    o = load_tensors(o_path, "cpu")
    if opt is not None:
        opt.load_state_dict(_join_optimizer({k: v.to(device) for k, v in o.items() if k != "rng.torch"},
                                            record["optimizer"]))
    torch.set_rng_state(o["rng.torch"])
    n = record["rng"]["numpy"]
    np.random.set_state((n[0], np.asarray(n[1], dtype=np.uint32), *n[2:]))
    p = record["rng"]["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))
    return record


# --------------------------------------------------------------------------- pretrained folders
def save_pretrained(folder: str | Path, model: torch.nn.Module, config: dict, template=None,
                    audio_config: dict | None = None) -> Path:
    """Write `model` as a shareable folder: config.json, model.safetensors and template.npz."""
    from . import __version__
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_tensors(folder / "model.safetensors", model.state_dict(), {"format": "mtk-pretrained-1"})
    if template is not None:
        template.save(folder / "template.npz")
    write_json(folder / "config.json", {"class": type(model).__name__, "config": config,
                                        "audio_config": audio_config, "mtk_version": __version__})
    return folder


def read_pretrained(folder: str | Path, device="cpu") -> tuple[dict, dict[str, torch.Tensor], object]:
    """-> (config.json as a dict, the weights, the Template or None). Clear errors name the missing file."""
    from .synthvoca.template import Template
    folder = Path(folder)
    cfg_path, w_path = folder / "config.json", folder / "model.safetensors"
    for p in (cfg_path, w_path):
        if not p.exists():
            raise FileNotFoundError(f"{p}: not found; a pretrained mtk model folder holds config.json, "
                                    "model.safetensors and template.npz (written by save_pretrained)")
    config = json.loads(cfg_path.read_text())
    template = Template.load(folder / "template.npz") if (folder / "template.npz").exists() else None
    return config, load_tensors(w_path, device), template
