import pytest


@pytest.fixture(scope="session")
def smoke_ds():
    """The smoke SynthVOCA dataset (generated once, cached under data/)."""
    from mtk.data import load_dataset
    return load_dataset("smoke", progress=False)
