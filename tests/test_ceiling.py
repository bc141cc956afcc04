"""The ceiling (`mtk.ceiling`): test-time fitting of the memory's style on a speaker's reference sentences."""
import numpy as np
import pytest
import torch

from mtk import ceiling, recipes
from mtk.data import FaceDataset, collate
from mtk.losses import vertex_losses
from mtk.model import MemoryTalker, ModelConfig


@pytest.fixture(scope="module")
def moving_model(smoke_ds):
    """An untrained smoke model with a random (non-zero) output layer, so predictions depend on the memory."""
    torch.manual_seed(0)
    m = MemoryTalker(ModelConfig.smoke(smoke_ds.template.V * 3), smoke_ds.template.mask("lips")).eval()
    torch.nn.init.normal_(m.out.weight, std=0.02)
    torch.nn.init.normal_(m.out.bias, std=0.01)
    return m


def test_quadratic_loss_equals_the_vertex_losses(smoke_ds, moving_model):
    m = moving_model
    fd = FaceDataset(smoke_ds.sequences("train"), len(smoke_ds.train_subjects))
    b = collate([fd[i] for i in (0, 3, 5)])                       # clips of different lengths: padding
    K, f_txt, mask = ceiling._audio_side(m, b)
    with torch.no_grad():
        pred = m.decode(f_txt, m.memory.read(K), mask, b["template"])
        ref = vertex_losses(pred, b["vertices"], mask)
        fast = ceiling.QuadraticLoss(m, b, mask)(m.decoder_output(f_txt, m.memory.read(K), mask))
    for a, r in zip(fast, ref):
        assert float(a) == pytest.approx(float(r), rel=1e-5)


def test_zero_steps_is_the_stage_1_model_and_fitting_lowers_the_reference_loss(smoke_ds, moving_model):
    m = moving_model
    before = {k: v.clone() for k, v in m.state_dict().items()}
    flags = [q.requires_grad for q in m.parameters()]
    seqs = smoke_ds.sequences("test")
    st1 = recipes.predict(m, seqs, stage=1, n_train=len(smoke_ds.train_subjects))
    for kind in ceiling.KINDS:
        same = ceiling.predictions(m, smoke_ds, "test", kind, ceiling.CeilingConfig(steps=0))
        assert all(np.allclose(a, b, atol=1e-6) for a, b in zip(same, st1)), kind
    spk = seqs[0].subject
    ref = [s for s in smoke_ds.sequences("test", part="reference") if s.subject == spk]
    fd = FaceDataset(ref, len(smoke_ds.train_subjects))
    b = collate([fd[i] for i in range(len(fd))])
    K, f_txt, mask = ceiling._audio_side(m, b)

    def ref_loss(M):
        with torch.no_grad():
            return float(sum(vertex_losses(m.decode(f_txt, m.memory.read(K, M), mask, b["template"]),
                                           b["vertices"], mask)))
    M = m.memory.M.detach()
    for kind in ceiling.KINDS:
        p = ceiling.fit_speaker(m, ref, kind, ceiling.CeilingConfig(steps=20), len(smoke_ds.train_subjects))
        assert ref_loss(ceiling._stylized(M, kind, p)) < 0.99 * ref_loss(M), kind
    after = m.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)             # the model is left unchanged
    assert [q.requires_grad for q in m.parameters()] == flags                   # and so are its grad flags


def test_ceiling_refuses_what_it_cannot_fit(smoke_ds, moving_model):
    with pytest.raises(ValueError, match="reference sentences"):
        ceiling.fit_speaker(moving_model, [], "slots", ceiling.CeilingConfig(), 3)
    with pytest.raises(ValueError, match="expected one of"):
        ceiling.fit_speaker(moving_model, smoke_ds.sequences("test")[:1], "diagonal", ceiling.CeilingConfig(), 3)
