"""The baselines of MemoryTalker's Table 1, one file per method, all behind one protocol.

Every method is an `nn.Module` that the kit's single training loop (`mtk.train.fit`),
recipes (`mtk.recipes`) and evaluation (`mtk.metrics.evaluate`) drive:

    n_stages: int                                      1 or 2 training stages
    cfg: a dataclass with to_dict() and presets smoke(vertex_dim) / default(vertex_dim) / paper(...)
    from_dataset(cfg, dataset) -> model               (classmethod; dataset gives template, masks, speakers)
    forward(batch, stage) -> {"loss", "mse", "vel", ...}   training losses on a collated batch
    stage_parameters(stage) -> [Parameter]             what each stage trains
    validation_loss(batch, stage) -> {"mse", "vel"}    optional: the inference path's losses
                                                       (default: `mtk.train.inference_losses`)
    predict_batch(batch, stage=None, condition=None) -> (B, T, V*3)
        condition: the training-speaker index a one-hot method is conditioned on (None: the
        method's own default); methods without speaker identity ignore it

and each module has `recipe(preset, dataset) -> mtk.recipes.Recipe`. All methods start
from the same pretrained audio encoder (`recipes.pretrained_audio`) and get the same
training budget per preset (see `recipes.BUDGET`).
"""
from __future__ import annotations

import importlib

# name -> module (each defines the model class and `recipe`)
METHODS = {
    "faceformer": "mtk.baselines.faceformer",
    "codetalker": "mtk.baselines.codetalker",
    "selftalk": "mtk.baselines.selftalk",
    "imitator": "mtk.baselines.imitator",
    "scantalk": "mtk.baselines.scantalk",
    "unitalker": "mtk.baselines.unitalker",
}


def recipe(name: str, preset: str, dataset, **kw):
    """The recipe of a baseline by name; kw go to its `recipe` (e.g. pretrained=<encoder folder>)."""
    if name not in METHODS:
        raise KeyError(f"unknown baseline {name!r}; available: {sorted(METHODS)}")
    return importlib.import_module(METHODS[name]).recipe(preset, dataset, **kw)
