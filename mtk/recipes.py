"""Recipes: a dataset, a model configuration and a training schedule, trained once and then loaded.

Notebooks call `load_or_train(recipe, dataset)`: if `runs/<recipe>-<hash>/` holds
finished checkpoints for exactly this configuration and dataset, they are
loaded; otherwise the model is trained (resuming an interrupted run). So later
notebooks never retrain what an earlier one trained.

Presets (for MemoryTalker):
    smoke    CI: a tiny model on the smoke dataset; both stages in well under 2 minutes
    default  SynthVOCA on a laptop CPU: both stages in under 10 minutes
    paper    VOCASET with HuBERT-base and the released hyperparameters (100 + 100 epochs, batch 1), for a GPU
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from .audio import AudioConfig, config_dict, pretrain_on_phonemes
from .data import FaceDataset, Sequence, collate, motion_scale
from .model import MemoryTalker, ModelConfig
from .paths import runs_dir
from .train import TrainConfig, config_hash, fit, resolve_device, to_device


@dataclass
class Recipe:
    """Everything that defines a trained model: its class and config, and one TrainConfig per stage."""

    name: str
    model: ModelConfig                   # any config dataclass with to_dict()
    stage1: TrainConfig
    stage2: TrainConfig | None = field(default=None)
    model_class: type = MemoryTalker     # with from_dataset(cfg, dataset), forward, stage_parameters, predict_batch
    shares_stage1: "Recipe | None" = None   # take stage 1 from this recipe's run instead of training it again
    trainer: object = None               # a method's own load_or_train(recipe, dataset, progress) if it needs one

    def key(self, dataset) -> str:
        return config_hash(self.model.to_dict(), self.stage1.identity_dict(), self.stage2 and self.stage2.identity_dict(),
                           dataset_key(dataset), self.model_class.__name__,
                           self.shares_stage1 and self.shares_stage1.key(dataset))

    def run_dir(self, dataset) -> Path:
        return runs_dir() / f"{self.name}-{self.key(dataset)}"


def identity(recipe: Recipe, dataset) -> dict:
    """What a trained model follows from, the same on every machine and checkout: the recipe's name, class,
    configs and schedules, and the dataset's key. Two things are named, not hashed by content: the shared
    encoder's pretraining (by its folder's name, which hashes the pretraining config, the dataset's key and
    the epochs) and the motion scale (a statistic of the dataset, so it follows from the dataset's key)."""
    from pathlib import PurePath
    model = recipe.model.to_dict()
    model.pop("motion_scale", None)
    audio = model.get("audio")
    if isinstance(audio, dict) and str(audio.get("pretrained") or "").find("audio-pretrain-") >= 0:
        audio["pretrained"] = PurePath(audio["pretrained"]).name
    return json.loads(json.dumps({
        "name": recipe.name, "class": recipe.model_class.__name__, "model": model,
        "stage1": recipe.stage1.identity_dict(), "stage2": recipe.stage2 and recipe.stage2.identity_dict(),
        "dataset": dataset_key(dataset)}, default=str))


def dataset_key(dataset) -> str:
    """A dataset's identity, independent of where it lives (SynthVOCA: its generator key; VOCASET: its files)."""
    return dataset.key


def check_dataset(dataset, preset: str) -> None:
    """Before any pretraining or training: the dataset has what a preset needs, or a clear error.

    Every method and metric needs the `lips` and `upper_face` regions; the small encoder's phoneme
    pretraining ("smoke", "default") needs phoneme labels, which only SynthVOCA has."""
    template = dataset.template
    missing = [r for r in ("lips", "upper_face") if r not in template.masks]
    if missing:
        root = getattr(dataset, "root", None)
        files = getattr(dataset, "REGION_FILES", "FLAME_masks.pkl (from the FLAME website)")
        where = f" Add the region files to {root}: {files}" if root else ""
        raise ValueError(f"the dataset's template ({template.V} vertices) has no {' or '.join(missing)} region, "
                         f"needed for the lip loss and the metrics.{where}")
    if preset in PRETRAIN_EPOCHS and not getattr(dataset, "has_phonemes", False):
        raise ValueError(
            f"preset {preset!r} pretrains the kit's small speech encoder on phoneme labels, and {dataset!r} has "
            "none (VOCASET has no phoneme alignment). Use preset 'paper' (a pretrained HuBERT: a hub name or a "
            "local folder: pretrained=<folder or hub name>), or pass pretrained=<folder> to this preset.")


def pretrained_encoder(pretrained: str, base: AudioConfig) -> AudioConfig:
    """`base`, a preset's encoder settings (time masking, dropout, LayerDrop, a frozen CNN), with its weights
    from `pretrained`: a folder written by transformers' `save_pretrained` (e.g. a downloaded
    facebook/hubert-base-ls960) or a hub name. A folder's kind (HuBERT or wav2vec2) is read from its
    config.json. A path that does not exist, or a folder that is not a transformers encoder, stops here,
    before any data or training."""
    p = Path(pretrained).expanduser()
    looks_like_path = p.is_absolute() or str(pretrained).startswith((".", "~")) or p.exists() or len(p.parts) > 2
    if not p.exists():
        if looks_like_path:
            raise FileNotFoundError(f"pretrained encoder {pretrained!r}: no such folder; expected a folder written by "
                                    "transformers' save_pretrained (config.json and model weights) or a hub name")
        kind = "wav2vec2" if "wav2vec2" in str(pretrained).lower() else "hubert"
        return replace(base, pretrained=str(pretrained), kind=kind, freeze_feature_encoder=True)
    cfg_file = p / "config.json"
    if not cfg_file.is_file():
        raise ValueError(f"pretrained encoder {str(p)!r}: no config.json; expected a folder written by transformers' "
                         "save_pretrained (config.json and model weights)")
    kind = json.loads(cfg_file.read_text()).get("model_type")
    if kind not in ("hubert", "wav2vec2"):
        raise ValueError(f"pretrained encoder {str(cfg_file)!r}: model_type {kind!r}; expected 'hubert' or 'wav2vec2'")
    return replace(base, pretrained=str(p), kind=kind, freeze_feature_encoder=True)


PRETRAIN_EPOCHS = {"smoke": 2, "default": 12}

# The training budget of a preset, the same for every method in the comparison: passes over the
# training set (summed over a method's stages), learning rate, batch size. The paper preset is
# the released MemoryTalker schedule (100 + 100 epochs, batch 1, Adam 1e-4 / 5e-5).
BUDGET = {
    "smoke": {"epochs": 4, "lr": 1e-3, "batch_size": 4},
    "default": {"epochs": 10, "lr": 1e-3, "batch_size": 4},
    "paper": {"epochs": 200, "lr": 1e-4, "batch_size": 1},
}


def budget(preset: str) -> dict:
    if preset not in BUDGET:
        raise ValueError(f"unknown preset {preset!r}; expected one of {sorted(BUDGET)}")
    return dict(BUDGET[preset])


def train_config(preset: str, stage: int, epochs: int, **kw) -> TrainConfig:
    """A TrainConfig for one stage of a method under a preset's budget (lr, batch size, device)."""
    b = budget(preset)
    if preset == "paper":
        return TrainConfig.paper(stage, epochs=epochs, **kw)
    return TrainConfig(stage=stage, epochs=epochs, lr=kw.pop("lr", b["lr"]), batch_size=b["batch_size"],
                       triplets=kw.pop("triplets", "in_batch"), **kw)


def _set_encoder(name: str, model_kw: dict, pretrained: str, base) -> None:
    """model_kw["audio"] = the preset's encoder settings (`base()`) with weights from `pretrained`; refuses
    both `pretrained` and `audio` at once."""
    if "audio" in model_kw:
        raise ValueError(f"{name}: pass either pretrained= or audio=, not both")
    model_kw["audio"] = pretrained_encoder(pretrained, base())


def method_recipe(name: str, preset: str, dataset, presets: dict, model_class, progress: bool = True,
                  stages: list[TrainConfig] | None = None, trainer=None, pretrained: str | None = None,
                  **model_kw) -> Recipe:
    """A baseline's recipe the way every method builds it: the preset's config from `presets`
    ({"smoke": Cfg.smoke, ...}, called with V*3 and model_kw), the shared pretrained audio encoder
    (except "paper"), the data's motion scale if the config has one, and one stage with the preset's
    whole budget unless `stages` says otherwise. pretrained: the speech encoder's weights from this folder
    or hub name instead (`pretrained_encoder`; the preset's encoder settings are kept)."""
    from dataclasses import fields
    if preset not in presets:
        raise ValueError(f"unknown preset {preset!r} for {name}; expected one of {sorted(presets)}")
    if pretrained is not None:
        _set_encoder(name, model_kw, pretrained, lambda: presets[preset](dataset.template.V * 3).audio
                     if preset == "paper" else AudioConfig.default())
    check_dataset(dataset, preset if "audio" not in model_kw else "paper")
    if preset != "paper" and "audio" not in model_kw:
        model_kw["audio"] = pretrained_audio(preset, dataset, progress)
    cfg_cls = presets[preset].__self__
    if "motion_scale" in {f.name for f in fields(cfg_cls)} and "motion_scale" not in model_kw:
        model_kw["motion_scale"] = round(motion_scale(dataset.sequences("train")), 6)
    cfg = presets[preset](dataset.template.V * 3, **model_kw)
    stages = stages or [train_config(preset, 1, budget(preset)["epochs"])]
    return Recipe(f"{name}-{preset}", cfg, stages[0], stages[1] if len(stages) > 1 else None, model_class,
                  trainer=trainer)


def pretrained_audio(preset: str, dataset, progress: bool = True, train: bool = True) -> AudioConfig:
    """The audio encoder every method of a preset starts from.

    "paper": HuBERT-base from the hub (or a local copy). "smoke"/"default": the
    kit's small HuBERT, pretrained once on the dataset's training audio to recognise
    phonemes (`audio.pretrain_on_phonemes`), stored under runs/ and shared by all methods.
    train=False: the config only (its folder may not exist yet); `dataset` then needs only its key.
    """
    if preset == "paper":
        return AudioConfig.paper()
    base = AudioConfig.smoke() if preset == "smoke" else AudioConfig.default()
    epochs = PRETRAIN_EPOCHS[preset]
    out = runs_dir() / f"audio-pretrain-{preset}-{config_hash(config_dict(base), dataset_key(dataset), epochs)}"
    if train:
        pretrain_on_phonemes(dataset, base, out, epochs=epochs, progress=progress)
    return replace(base, pretrained=str(out), freeze_feature_encoder=True)


def memorytalker(preset: str, dataset, progress: bool = True, epochs: int | None = None, pretrain: bool = True,
                 pretrained: str | None = None, **model_kw) -> Recipe:
    """MemoryTalker's recipe for a preset ("smoke", "default", "paper"); model_kw override ModelConfig fields.

    epochs: a different total budget (split evenly between the stages), e.g. for ablation sweeps.
    Building the recipe for "smoke"/"default" runs the shared audio pretraining once if needed;
    pretrain=False leaves that for later (the recipe's `identity` does not need it).
    pretrained: the speech encoder's weights from a local folder (transformers' `save_pretrained` layout, e.g.
    a downloaded facebook/hubert-base-ls960) or a hub name, with the preset's encoder settings
    (`pretrained_encoder`); "paper" without it uses the hub's facebook/hubert-base-ls960.
    """
    if preset not in ("smoke", "default", "paper"):
        raise ValueError(f"unknown preset {preset!r}; expected 'smoke', 'default' or 'paper'")
    if pretrained is not None:
        _set_encoder("memorytalker", model_kw, pretrained,
                     lambda: AudioConfig.paper() if preset == "paper" else AudioConfig.default())
    check_dataset(dataset, preset if "audio" not in model_kw else "paper")
    V3 = dataset.template.V * 3
    if preset in ("smoke", "default") and "audio" not in model_kw:
        model_kw["audio"] = pretrained_audio(preset, dataset, progress, train=pretrain)
    if "motion_scale" not in model_kw:
        model_kw["motion_scale"] = round(motion_scale(dataset.sequences("train")), 6)
    if getattr(dataset, "fps", 30) != 30:                 # BIWI: animate at 25 fps, PPE over one second
        model_kw.setdefault("fps", int(round(dataset.fps)))
        model_kw.setdefault("period", int(round(dataset.fps)))
    if preset in ("smoke", "default"):
        # the preset's budget, split evenly between the stages; stage 2 at half the learning rate (as released)
        e = epochs or budget(preset)["epochs"]
        cfg = (ModelConfig.smoke if preset == "smoke" else ModelConfig.default)(V3, **model_kw)
        return Recipe(f"memorytalker-{preset}" + (f"-{e}ep" if epochs else ""), cfg, train_config(preset, 1, e // 2),
                      train_config(preset, 2, e - e // 2, lr=budget(preset)["lr"] / 2))
    if preset == "paper":
        return Recipe("memorytalker-paper", ModelConfig.paper(V3, **model_kw),
                      TrainConfig.paper(1), TrainConfig.paper(2))
    raise ValueError(f"unknown preset {preset!r}; expected 'smoke', 'default' or 'paper'")


def build(recipe: Recipe, dataset):
    torch.manual_seed(recipe.stage1.seed)
    return recipe.model_class.from_dataset(recipe.model, dataset)


def with_training(recipe: Recipe, **changes) -> Recipe:
    """The same recipe with `changes` to every stage's TrainConfig (its shared stage 1's too). Only for fields
    outside a run's key (`TrainConfig.identity_dict`: device, val_every), so the run folder stays the same."""
    return replace(recipe, stage1=replace(recipe.stage1, **changes),
                   stage2=recipe.stage2 and replace(recipe.stage2, **changes),
                   shares_stage1=recipe.shares_stage1 and with_training(recipe.shares_stage1, **changes))


def on_device(recipe: Recipe, device: str) -> Recipe:
    """The same recipe (the same run folder: the device is not part of its key) training on `device`."""
    return with_training(recipe, device=device)


def validating(recipe: Recipe, val_every: int) -> Recipe:
    """The same recipe (the same run folder: `TrainConfig.val_every` is not part of its key, and the weights do
    not depend on it) validating after every val_every-th epoch and the last (0: the last only)."""
    return with_training(recipe, val_every=val_every)


def requested_device(device: str | None = None, recipe: Recipe | None = None) -> tuple[str, str]:
    """(where the setting comes from, the device asked for): `device`, else MTK_DEVICE, else the recipe's."""
    if device:
        return "device", device
    if os.environ.get("MTK_DEVICE"):
        return "MTK_DEVICE", os.environ["MTK_DEVICE"]
    return "the recipe's device", recipe.stage1.device if recipe is not None else "auto"


def training_device(device: str | None = None, recipe: Recipe | None = None) -> str:
    """The device a training runs on: `device` if given, else the environment's MTK_DEVICE (what
    `mtk reproduce --device` sets for the notebooks), else the recipe's ("auto": a CUDA GPU if torch sees
    one, else the CPU). Checked here (`train.resolve_device`), with the setting's source in the error."""
    source, name = requested_device(device, recipe)
    try:
        return resolve_device(name)
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from None


def finished(recipe: Recipe, dataset) -> bool:
    """Whether every stage of the recipe's run has its last epoch saved (nothing left to train)."""
    from .checkpoint import read_training_record
    run = recipe.run_dir(dataset)
    for name, cfg in (("stage1", recipe.stage1), ("stage2", recipe.stage2)):
        if cfg is None or (name == "stage1" and recipe.shares_stage1 is not None):
            continue
        record = read_training_record(run / name)
        if record is None or record.get("epoch", 0) < cfg.epochs:
            return False
    return True


def load_or_train(recipe: Recipe, dataset, progress: bool = True, stages=(1, 2),
                  device: str | None = None) -> tuple[MemoryTalker, dict]:
    """-> (model after the last requested stage, {"stage1": model copy's state, "history1": ..., ...}).

    device: where it trains (`training_device`: this argument, else MTK_DEVICE, else the recipe's "auto").
    The model comes back on the CPU whatever it trained on, so evaluation and figures run alike everywhere.

    Stage 1 and stage 2 are separate checkpoints (`stage1.*`, `stage2.*`: `mtk.checkpoint`); the
    returned dict also holds the stage-1 weights so both models can be compared. A finished model with
    `save_pretrained` is also written to `<run>/model/` (load it with `from_pretrained`, no dataset needed).
    """
    try:
        recipe = on_device(recipe, training_device(device, recipe))
    except ValueError:
        # a run finished elsewhere (e.g. trained on a GPU) loads on a machine without that device: only
        # training needs it. A device name that means nothing is still an error.
        name = requested_device(device, recipe)[1]
        if (recipe.trainer is not None or not re.fullmatch(r"cuda(:\d+)?|mps", name)
                or not finished(recipe, dataset)):
            raise
        import warnings
        warnings.warn(f"{recipe.run_dir(dataset).name}: asked for a device this machine lacks; the run is finished, "
                      "so it is loaded on the CPU", stacklevel=2)
        recipe = on_device(recipe, "cpu")
    if recipe.trainer is not None:                       # e.g. UniTalker trains on two datasets
        model, out = recipe.trainer(recipe, dataset, progress)
        out["stage1_state"] = {k: v.cpu() for k, v in out["stage1_state"].items()}
        return model.cpu(), out
    from . import distributed
    run = recipe.run_dir(dataset)
    run.mkdir(parents=True, exist_ok=True)
    if distributed.is_main():                                          # under DDP the first process writes
        (run / "recipe.json").write_text(json.dumps(
            {"name": recipe.name, "class": recipe.model_class.__name__, "model": recipe.model.to_dict(),
             "stage1": recipe.stage1.__dict__,
             "stage2": recipe.stage2 and recipe.stage2.__dict__, "dataset": dataset_key(dataset)}, indent=1))
    model = build(recipe, dataset)
    train, val = dataset.sequences("train"), dataset.sequences("val") or None
    n_train = len(dataset.train_subjects)
    out: dict = {"run_dir": run}
    if recipe.shares_stage1 is not None:
        src, src_out = load_or_train(recipe.shares_stage1, dataset, progress, (1,), recipe.stage1.device)
        model.load_state_dict({k: v for k, v in src_out["stage1_state"].items()
                               if not k.startswith("style_encoder.")}, strict=False)
        h1 = src_out["history1"]
    else:
        h1 = fit(model, train, recipe.stage1, run / "stage1", n_train, val, progress=progress)
    out["history1"] = h1
    out["stage1_state"] = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    if 2 in stages and recipe.stage2 is not None and getattr(recipe.model, "use_memory", True):
        h2 = fit(model, train, recipe.stage2, run / "stage2", n_train, val, progress=progress)
        out["history2"] = h2
    model.eval().cpu()
    if (hasattr(model, "save_pretrained") and tuple(stages) == (1, 2) and distributed.is_main()
            and not (run / "model" / "config.json").exists()):
        model.save_pretrained(run / "model")
    distributed.barrier()
    return model, out


def stage1_model(recipe: Recipe, dataset, trained: dict) -> MemoryTalker:
    """A second model object holding the stage-1 weights (for side-by-side comparisons).
    A model loaded from a folder (`trained["model_folder"]`, e.g. the shipped one) is rebuilt from it."""
    m = MemoryTalker.from_pretrained(trained["model_folder"]) if "model_folder" in trained else build(recipe, dataset)
    m.load_state_dict(trained["stage1_state"])
    return m.eval()


@torch.no_grad()
def predict(model, sequences: list[Sequence], stage: int = 2, batch_size: int = 8, n_train: int = 8,
            return_features: bool = False, condition=None):
    """Vertices (T, V, 3) for each sequence from its audio and template; optionally the recalled features.

    The number of frames is the ground truth's (as the field evaluates), so predictions and ground
    truth align frame by frame; `model.animate` instead derives it from the audio length.
    condition: the training-speaker index one-hot methods are conditioned on (ignored by the others).
    """
    model.eval()
    dev = next(model.parameters()).device
    preds, feats, addrs = [], [], []
    ds = FaceDataset(sequences, n_train)
    for i in range(0, len(sequences), batch_size):
        batch = to_device(collate([ds[j] for j in range(i, min(len(sequences), i + batch_size))]), dev)
        res = model.predict_batch(batch, stage=stage, condition=condition, return_features=return_features)
        pred = res[0] if return_features else res
        for b, T in enumerate(batch["n_frames"].tolist()):
            preds.append(pred[b, :T].reshape(T, -1, 3).cpu().numpy())
            if return_features:
                feats.append(None if res[1] is None else res[1][b, :T].cpu().numpy())
                addrs.append(res[2][b, :T].cpu().numpy())
    return (preds, feats, addrs) if return_features else preds


def evaluate(model, dataset, split: str = "test", stage: int = 2, preds=None, condition=None):
    """`metrics.evaluate` of a model on a split's protocol sentences (predictions computed if not given)."""
    from .metrics import evaluate as _evaluate
    seqs = dataset.sequences(split)
    if preds is None:
        preds = predict(model, seqs, stage, n_train=len(dataset.train_subjects), condition=condition)
    gts = [s.vertices() for s in seqs]
    masks = {"lips": dataset.template.mask("lips"), "upper_face": dataset.template.mask("upper_face")}
    extractor = dataset.extractor() if hasattr(dataset, "extractor") else None
    return _evaluate(preds, gts, masks, templates=[s.template.vertices for s in seqs], extractor=extractor,
                     names=[s.name for s in seqs])
