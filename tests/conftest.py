import pytest


@pytest.fixture(scope="session")
def smoke_ds():
    """The smoke SynthVOCA dataset (generated once, cached under data/)."""
    from mtk.data import load_dataset
    return load_dataset("smoke", progress=False)


@pytest.fixture(scope="session")
def trained(smoke_ds):
    """The smoke recipe trained for one batch per epoch (both stages): (recipe, model, out)."""
    from mtk import recipes
    r = recipes.memorytalker("smoke", smoke_ds, progress=False)
    r.stage1.max_batches = r.stage2.max_batches = 1
    model, out = recipes.load_or_train(r, smoke_ds, progress=False)
    return r, model, out
