"""`train.fit`'s data order is pinned: a change to how batches are drawn changes every trained model."""
import pytest
import torch

from mtk import compare
from mtk.train import TrainConfig, epoch_loader, fit, val_epochs


class Items(torch.utils.data.Dataset):
    def __len__(self):
        return 10

    def __getitem__(self, i):
        return i


def batches(seed: int, epoch: int) -> list[list[int]]:
    loader = epoch_loader(Items(), TrainConfig(stage=1, batch_size=4, seed=seed), epoch, torch.Generator(), None,
                          [], False)
    loader.collate_fn = list
    return list(loader)


def test_one_process_draws_the_pinned_order():
    """The order of BatchSampler(RandomSampler(generator)) seeded by (seed, epoch). Found 2026-12-06: the
    multi-GPU change replaced DataLoader(shuffle=True, generator), which looks the same but draws another
    order, and no test saw it; a fresh-clone `make reproduce` then no longer gave the committed Table 1
    (README, Known issues). Changing this order is a change of every run's results: rerun and re-ship."""
    assert batches(0, 0) == [[4, 1, 7, 5], [3, 9, 0, 8], [6, 2]]
    assert batches(0, 1) == [[5, 6, 1, 2], [0, 8, 9, 3], [7, 4]]
    assert batches(1, 0) == [[7, 6, 9, 0], [5, 2, 1, 4], [3, 8]]
    assert batches(0, 0) == batches(0, 0)                     # seeded by (seed, epoch), not by what ran before


def test_fit_frees_its_dataset_without_a_garbage_collection(smoke_ds, tmp_path, monkeypatch):
    """Found 2026-12-06 (README, Known issues): Jupyter's progress bar (`tqdm.notebook`) is a reference cycle, and
    handed the loader it kept every training's cached FaceDataset (about 1 GB at the default preset) alive until a
    full garbage collection, which a notebook kernel holding many long-lived objects rarely runs: notebook 05's
    kernel grew to 24 GB. With the collector off, nothing of a finished `fit` may stay alive."""
    import gc
    import weakref

    import tqdm.auto
    import tqdm.notebook

    from mtk import recipes, train
    alive = []

    class Tracked(train.FaceDataset):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            alive.append(weakref.ref(self))

    monkeypatch.setattr(train, "FaceDataset", Tracked)
    monkeypatch.setattr(tqdm.auto, "tqdm", tqdm.notebook.tqdm)          # what a Jupyter kernel's tqdm.auto gives
    r = recipes.memorytalker("smoke", smoke_ds, progress=False)
    model = recipes.build(r, smoke_ds)
    cfg = TrainConfig(stage=1, epochs=2, batch_size=4, seed=0)
    gc.collect()
    gc.disable()
    try:
        train.fit(model, smoke_ds.sequences("train")[:8], cfg, tmp_path / "stage1", len(smoke_ds.train_subjects),
                  val=smoke_ds.sequences("val")[:2], progress=True)
        assert len(alive) == 2                                          # the training set and the validation set
        assert [w() for w in alive] == [None, None], "a finished fit still holds its datasets"
    finally:
        gc.enable()


@pytest.mark.parametrize("method", list(compare.METHODS))
def test_how_often_training_validates_does_not_change_the_weights(smoke_ds, tmp_path, method):
    """`TrainConfig.val_every` is not part of a run's key (notebook 04 validates only after each training's last
    epoch, notebooks 02-03 after every epoch, and they share runs), so validating must leave the training
    untouched: every method, every stage, bit for bit, with and without a validation between two epochs."""
    from dataclasses import replace

    from mtk import recipes
    from mtk.audio import AudioConfig
    from mtk.baselines import unitalker
    recipe = compare.METHODS[method][1]("smoke", smoke_ds, progress=False, audio=AudioConfig.smoke())
    train, val, n = smoke_ds.sequences("train")[:16], smoke_ds.sequences("val")[:2], len(smoke_ds.train_subjects)
    stages = [s for s in (recipe.stage1, recipe.stage2) if s is not None]

    def trained(val_every: int):
        torch.manual_seed(0)
        model = recipes.build(recipe, smoke_ds)
        histories = []
        for cfg in stages:
            cfg = replace(cfg, epochs=2, max_batches=2, val_every=val_every)
            ckpt = tmp_path / f"every{val_every}" / f"stage{cfg.stage}"
            if recipe.trainer is not None:                      # UniTalker's own loop (here on one dataset)
                histories.append(unitalker.fit(model, [(train, n)], cfg, ckpt, val, n, progress=False))
            else:
                histories.append(fit(model, train, cfg, ckpt, n, val, progress=False))
        return model.state_dict(), histories

    every, h_every = trained(1)
    last, h_last = trained(0)
    assert [val_epochs(h) for h in h_every] == [[1, 2]] * len(stages)
    assert [val_epochs(h) for h in h_last] == [[2]] * len(stages)
    assert [h["val"][-1] for h in h_every] == [h["val"][-1] for h in h_last]
    assert every.keys() == last.keys()
    differ = [k for k in every if not torch.equal(every[k], last[k])]
    assert not differ, f"{method}: validating after epoch 1 changed {differ[:5]}"



def test_training_loops_make_one_iterator_per_loader_and_epoch(smoke_ds, tmp_path, monkeypatch):
    """Found 2026-12-06: `tqdm.auto`'s bar, handed a loader, makes an iterator of it when it is built, and every
    DataLoader iterator draws a seed (from the loader's generator, else torch's global one). So until eeea661
    `fit` drew one extra number from the global generator per epoch (shifting the dropout masks) and the phoneme
    pretraining one from its shuffling generator (another clip order): the same code gave other models once the
    bar was given a count instead. `fit` must also train on exactly the batches `epoch_loader` draws."""
    from mtk import audio, recipes
    made = []
    real_iter = torch.utils.data.DataLoader.__iter__

    def counting(loader):
        made.append(loader)
        return real_iter(loader)

    r = recipes.memorytalker("smoke", smoke_ds, progress=False)
    model = recipes.build(r, smoke_ds)
    monkeypatch.setattr(torch.utils.data.DataLoader, "__iter__", counting)
    train, val = smoke_ds.sequences("train")[:10], smoke_ds.sequences("val")[:2]
    seen = []
    forward = model.forward

    def recording(batch, stage=1):
        seen.append(list(batch["name"]))
        return forward(batch, stage=stage)

    model.forward = recording
    fit(model, train, TrainConfig(stage=1, epochs=2, batch_size=4, seed=0), tmp_path / "s1",
        len(smoke_ds.train_subjects), val=val, progress=True)
    assert len(made) == 4                                   # per epoch: the training loader, the validation loader
    assert seen == [[train[i].name for i in b] for e in (0, 1) for b in batches(0, e)]
    made.clear()
    audio.pretrain_on_phonemes(smoke_ds, audio.AudioConfig.smoke(), tmp_path / "enc", epochs=1, progress=True)
    assert len(made) == 1                                   # one shuffled loader per epoch (validation batches by hand)
