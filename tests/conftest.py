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


@pytest.fixture(scope="session")
def hubert_folder(tmp_path_factory):
    """A tiny randomly initialised HuBERT in transformers' folder layout, saved with settings that differ from
    the paper preset's (time masking 0.3 instead of 0.05, LayerDrop 0 instead of 0.1)."""
    from transformers import HubertConfig, HubertModel
    cfg = HubertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                       conv_dim=(32,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
                       mask_time_prob=0.3, layerdrop=0.0)
    out = tmp_path_factory.mktemp("enc") / "hubert-tiny"
    HubertModel(cfg).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def moving_model(smoke_ds):
    """A smoke MemoryTalker carrying its template, with a random (non-zero) output layer and style scale, so what
    it animates depends on the speech and the style: the zero-initialised output layer would make every
    animation the template, and the residual style form's zero-initialised psi every w_s exactly 1."""
    import torch

    from mtk.model import MemoryTalker, ModelConfig
    torch.manual_seed(0)
    m = MemoryTalker(ModelConfig.smoke(smoke_ds.template.V * 3, motion_scale=0.003), smoke_ds.template.mask("lips"),
                     template=smoke_ds.template)
    torch.nn.init.normal_(m.out.weight, std=0.3)
    torch.nn.init.normal_(m.style_encoder.to_scale.weight, std=1.0)
    return m.eval()
