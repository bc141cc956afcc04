"""ScanTalk (any topology, from per-template operators) and UniTalker (several datasets, one head each)."""
import numpy as np
import pytest
import torch

from mtk.baselines import scantalk, unitalker
from mtk.baselines.scantalk import ScanTalk, ScanTalkConfig, mesh_operators
from mtk.baselines.unitalker import PCAHead, UniTalker, UniTalkerConfig, fit_pca
from mtk.data import FaceDataset, collate
from mtk.synthvoca.template import Template
from mtk.train import TrainConfig, fit

torch.set_num_threads(1)

TINY_FIT = dict(stage=1, epochs=1, max_batches=2, batch_size=4, lr=1e-3)


def make_batch(ds, split="train", idx=(0, 5, 9, 13)):
    fd = FaceDataset(ds.sequences(split), len(ds.train_subjects))
    return collate([fd[i] for i in idx if i < len(fd)])


def batch_on(template: Template, batch: dict, seed: int = 0) -> dict:
    """The batch's audio on another mesh: templates (B, V*3) and a made-up small motion (B, T, V*3)."""
    g = torch.Generator().manual_seed(seed)
    B, T = batch["vertices"].shape[:2]
    tmpl = torch.from_numpy(template.vertices.reshape(-1)).repeat(B, 1)
    motion = 1e-3 * torch.randn(B, T, 1, 3, generator=g) * torch.from_numpy(template.vertices[:, 1:2] > 0)
    verts = tmpl[:, None] + motion.expand(B, T, template.V, 3).reshape(B, T, -1)
    return {**batch, "template": tmpl, "vertices": verts * batch["frame_mask"][..., None]}


def tiny_scantalk(ds, **kw):
    torch.manual_seed(0)
    return ScanTalk.from_dataset(ScanTalkConfig.smoke(ds.template.V * 3, motion_scale=0.002, **kw), ds)


def wake_up(model: ScanTalk):
    """Non-zero output layer and diffusion times, so the outputs depend on everything."""
    torch.manual_seed(1)
    torch.nn.init.normal_(model.decoder.last.weight, std=0.1)
    for block in [*model.encoder.blocks, *model.decoder.blocks]:
        block.diffusion_time.data.uniform_(0.002, 0.02)


# --------------------------------------------------------------------------- ScanTalk
def test_scantalk_runs_on_two_topologies_with_the_same_weights(smoke_ds):
    model = tiny_scantalk(smoke_ds)
    coarse = Template.procedural("coarse")
    assert coarse.V != smoke_ds.template.V
    batch = make_batch(smoke_ds)
    for template, b in ((smoke_ds.template, batch), (coarse, batch_on(coarse, batch))):
        model.set_template(template)
        model.zero_grad()
        out = model(b)
        out["loss"].backward()
        assert torch.isfinite(out["loss"]) and out["mse"] > 0
        assert model.decoder.last.weight.grad.abs().sum() > 0            # the zero-init layer gets a gradient
        assert model.encoder.first.weight.grad is not None                # and so does the geometry encoder
        pred = model.predict_batch(b)
        assert pred.shape == (len(b["name"]), int(b["n_frames"].max()), template.V * 3)
        # zero-initialised output: every frame is the clip's own template
        assert torch.allclose(pred, b["template"][:, None].expand_as(pred))
    wake_up(model)
    seq = smoke_ds.sequences("test")[0]
    for template in (smoke_ds.template, coarse):
        v = model.animate_template(seq.audio(), template)
        assert v.shape == (len(seq.vertices()), template.V, 3)
        assert np.abs(v - template.vertices).max() > 1e-6                  # it moves


def test_scantalk_output_permutes_with_the_vertex_order(smoke_ds):
    model = tiny_scantalk(smoke_ds).eval()
    wake_up(model)
    seq = smoke_ds.sequences("test")[0]
    t = seq.template
    perm = np.random.default_rng(0).permutation(t.V)
    shuffled = Template("shuffled", t.vertices[perm], np.argsort(perm)[t.faces])
    out = model.animate_template(seq.audio(), t)
    out_p = model.animate_template(seq.audio(), shuffled)
    motion = np.abs(out - t.vertices).max()
    assert motion > 1e-5
    assert np.abs(out[:, perm] - out_p).max() < 1e-3 * motion


def test_scantalk_operators_are_computed_once_and_cached(smoke_ds, tmp_path, monkeypatch):
    calls = []
    real = scantalk.compute_operators
    monkeypatch.setattr(scantalk, "compute_operators", lambda *a: calls.append(1) or real(*a))
    t = smoke_ds.template
    v = t.vertices + np.float32(1e-4) * np.random.default_rng(3).standard_normal(t.vertices.shape).astype(np.float32)
    a = mesh_operators(v, t.faces, 16, cache_dir=tmp_path)
    b = mesh_operators(torch.from_numpy(v).reshape(-1), t.faces, 16, cache_dir=tmp_path)
    assert a is b and len(calls) == 1
    scantalk._OPERATORS.pop(a.key)                                         # a new process: read from disk
    c = mesh_operators(v, t.faces, 16, cache_dir=tmp_path)
    assert len(calls) == 1 and torch.equal(c.synthesis, a.synthesis)
    # the eigenvectors are M-orthonormal, the first one constant with eigenvalue 0
    Phi = a.synthesis[:t.V]
    assert torch.allclose(a.analysis @ Phi, torch.eye(16), atol=1e-4)
    assert abs(float(a.evals[0])) < 1e-4 and float(a.evals[1]) > 1
    assert Phi[:, 0].std() < 1e-4 * Phi[:, 0].abs().mean()
    # a model asks for the same operators again: still one computation
    model = tiny_scantalk(smoke_ds, k_eig=16)
    monkeypatch.setattr(scantalk, "data_dir", lambda: tmp_path)
    model.operators(torch.from_numpy(v).reshape(-1))
    model.operators(torch.from_numpy(v).reshape(-1))
    assert len(calls) == 1


def test_scantalk_every_frame_loss_is_the_inference_path(smoke_ds):
    model = tiny_scantalk(smoke_ds, train_frames=None, val_stride=1, frame_chunk=16).eval()
    wake_up(model)
    batch = make_batch(smoke_ds, idx=(0, 5))
    out, val = model(batch), model.validation_loss(batch)
    assert torch.allclose(out["mse"], val["mse"], rtol=1e-5) and torch.allclose(out["vel"], val["vel"], rtol=1e-5)
    # sampled pairs estimate the same loss
    model.cfg.train_frames = 10 ** 6
    pairs = model(batch)
    assert torch.allclose(pairs["mse"], out["mse"], rtol=0.1)


def test_scantalk_trains(smoke_ds, tmp_path):
    model = tiny_scantalk(smoke_ds)
    hist = fit(model, smoke_ds.sequences("train"), TrainConfig(**TINY_FIT), tmp_path / "s",
               len(smoke_ds.train_subjects))
    assert np.isfinite(hist["train"][0]["loss"])
    assert model.decoder.last.weight.abs().sum() > 0                       # left its zero init
    assert model.audio_embedding.weight.requires_grad


# --------------------------------------------------------------------------- UniTalker
@pytest.fixture(scope="module")
def uni(smoke_ds):
    torch.manual_seed(0)
    model = UniTalker.from_dataset(UniTalkerConfig.smoke(smoke_ds.template.V * 3), smoke_ds)
    with pytest.warns(UserWarning, match="one dataset only"):              # a step outside unitalker.fit
        model(make_batch(smoke_ds))
    return model


def second_batch(model, idx=(0, 1, 2, 3)):
    ds = model.datasets[1]
    return make_batch(ds, idx=idx)


def randomize_heads(model, seed=0):
    torch.manual_seed(seed)
    for head in model.heads.values():
        torch.nn.init.normal_(head.proj.weight, std=0.05)


def test_unitalker_one_head_per_dataset(uni, smoke_ds):
    second = uni.datasets[1]
    assert second.template.V != smoke_ds.template.V and len(uni.heads) == 2
    assert uni.id_embedding.num_embeddings == len(smoke_ds.train_subjects) + len(second.train_subjects) + 1
    for batch in (make_batch(smoke_ds), second_batch(uni)):
        uni.train()
        out = uni(batch)
        out["loss"].backward()
        assert torch.isfinite(out["loss"]) and {"mse", "vel", "pca"} <= set(out)
        pred = uni.predict_batch(batch)
        assert pred.shape == batch["vertices"].shape
        head = uni.head_for(batch)                                         # zero-init head: template + PCA mean
        assert torch.allclose(pred, batch["template"][:, None] + head.mean, atol=1e-7)
    uni.zero_grad()


def test_pca_head_reconstructs_within_its_explained_variance(smoke_ds):
    seqs = smoke_ds.sequences("train")
    X = torch.from_numpy(np.concatenate([(s.vertices() - s.template.vertices).reshape(-1, s.template.V * 3)
                                         for s in seqs]))
    total = ((X - X.mean(0)) ** 2).sum()
    for P in (3, 13):
        pca = fit_pca(seqs, P, max_frames=10 ** 6)
        head = PCAHead(8, pca, n_ids=1, id_offset=0)
        residual = ((head.decode(head.encode(X)) - X) ** 2).sum()
        assert float(residual / total) == pytest.approx(1 - pca["explained"], abs=1e-3)
        assert torch.allclose(head.basis @ head.basis.T, torch.eye(P), atol=1e-4)
    assert pca["explained"] > 0.999                                        # SynthVOCA motion: 13 basis fields
    assert fit_pca(seqs, 3, 10 ** 6)["explained"] < 0.99


def test_unitalker_inits_the_same_with_or_without_its_cached_pca(smoke_ds, monkeypatch, tmp_path):
    """Found 2026-12-06: `fit_pca` re-seeded torch's global generator, so a model built while its PCA was fitted
    (a fresh machine) drew other initial weights than one built from the PCA cached in data/unitalker-pca/ (any
    later build): the same recipe trained two UniTalkers depending on what was on disk."""
    import mtk.baselines.unitalker as uni_mod
    monkeypatch.setattr(uni_mod, "data_dir", lambda: tmp_path)             # an empty PCA cache
    states = []
    for _ in range(2):                                                     # fitted and cached, then loaded
        torch.manual_seed(0)
        m = UniTalker.from_dataset(UniTalkerConfig.smoke(smoke_ds.template.V * 3), smoke_ds)
        states.append(m.state_dict())
    assert list((tmp_path / "unitalker-pca").iterdir())
    assert [k for k in states[0] if not torch.equal(states[0][k], states[1][k])] == []


def test_unitalker_pivot_for_unseen_speakers_and_training_ids_on_request(uni, smoke_ds):
    test = make_batch(smoke_ds, "test", idx=(0, 1))
    train = make_batch(smoke_ds, idx=(0, 7))
    head = uni.head_for(test)
    assert (test["speaker"] == -1).all()
    assert (uni.identities(test, head) == uni.pivot).all()
    assert (uni.identities(test, head, condition=2) == head.id_offset + 2).all()
    assert torch.equal(uni.identities(train, head), train["speaker"] + head.id_offset)
    other = uni.heads[list(uni.heads)[1]]
    assert (uni.identities(second_batch(uni), other, condition=0) == len(smoke_ds.train_subjects)).all()
    # through the network: default = pivot for unseen speakers, a training id changes the motion
    randomize_heads(uni)
    uni.eval()
    p_none, p_pivot = uni.predict_batch(test), uni.predict_batch(test, condition="pivot")
    p_k = uni.predict_batch(test, condition=1)
    assert torch.equal(p_none, p_pivot) and not torch.allclose(p_none, p_k)
    # training: each clip's identity becomes the pivot with probability pivot_prob
    seen = []
    hook = uni.id_embedding.register_forward_hook(lambda m, i, o: seen.append(i[0].clone()))
    uni.train()
    for prob in (0.0, 1.0):
        uni.cfg.pivot_prob = prob
        uni(train)
    hook.remove()
    uni.cfg.pivot_prob = 0.1
    assert torch.equal(seen[0], train["speaker"]) and (seen[1] == uni.pivot).all()
    for h in uni.heads.values():
        torch.nn.init.zeros_(h.proj.weight)


def test_unitalker_step_on_one_dataset_updates_the_trunk_and_only_its_head(smoke_ds):
    torch.manual_seed(0)
    model = UniTalker.from_dataset(UniTalkerConfig.smoke(smoke_ds.template.V * 3, pivot_prob=0.0), smoke_ds)
    randomize_heads(model)
    model.trained_jointly = True
    opt = torch.optim.Adam(model.stage_parameters(1), lr=1e-3)
    keys = list(model.heads)
    for batch, own in ((make_batch(smoke_ds), keys[0]), (second_batch(model), keys[1])):
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        opt.zero_grad(set_to_none=True)
        model(batch)["loss"].backward()
        opt.step()
        moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
        assert {"tcn.0.conv.weight", "tcn.2.conv.weight", "audio_map.weight", f"heads.{own}.proj.weight"} <= moved
        assert not any(n.startswith("heads.") and not n.startswith(f"heads.{own}.") for n in moved)
        assert not any(n.startswith("audio_encoder.model.feature_extractor") for n in moved)


def test_unitalker_trains_on_both_datasets(smoke_ds, tmp_path):
    torch.manual_seed(0)
    model = UniTalker.from_dataset(UniTalkerConfig.smoke(smoke_ds.template.V * 3), smoke_ds)
    enc = {n: p.detach().clone() for n, p in model.audio_encoder.named_parameters()}
    data = [(ds.sequences("train"), len(ds.train_subjects)) for ds in model.datasets]
    hist = unitalker.fit(model, data, TrainConfig(**TINY_FIT), tmp_path / "u", smoke_ds.sequences("val"),
                         progress=False)
    terms = hist["train"][0]
    assert np.isfinite(terms["loss"]) and all(f"mse/{k}" in terms for k in model.heads)
    assert np.isfinite(hist["val"][0]["mse"])
    # epoch 0 is the encoder warm-up (`fix_encoder_first`): the audio encoder did not move
    assert all(torch.equal(p, enc[n]) for n, p in model.audio_encoder.named_parameters())
    assert all(h.proj.weight.abs().sum() > 0 for h in model.heads.values())
