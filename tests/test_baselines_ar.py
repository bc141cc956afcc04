"""The autoregressive baselines, FaceFormer and CodeTalker: masks, causality, the two decoding paths, the VQ
codebook's straight-through gradient, stage separation, training and inference through the kit's protocol."""
import math

import pytest
import torch

from mtk.audio import AudioConfig
from mtk.baselines import codetalker as ct
from mtk.baselines import faceformer as ff
from mtk.data import FaceDataset, collate
from mtk.recipes import budget
from mtk.train import TrainConfig, fit

torch.set_num_threads(1)


IDX = (0, 5, 9, 13)


@pytest.fixture(scope="module")
def batch(smoke_ds):
    ds = FaceDataset(smoke_ds.sequences("train"), len(smoke_ds.train_subjects))
    b = collate([ds[i] for i in IDX])
    assert len(set(b["n_frames"].tolist())) > 1          # clips of different lengths: padding is exercised
    return b


def randomise(linear: torch.nn.Linear, std: float = 0.2):
    """Zero-initialised heads make every output the template; give them weights so feedback matters."""
    with torch.no_grad():
        linear.weight.normal_(0, std)


@pytest.fixture(scope="module")
def faceformer(smoke_ds):
    torch.manual_seed(0)
    m = ff.FaceFormer.from_dataset(ff.FaceFormerConfig.smoke(smoke_ds.template.V * 3, motion_scale=1e-3), smoke_ds)
    randomise(m.out)
    return m.eval()


@pytest.fixture(scope="module")
def codetalker(smoke_ds):
    torch.manual_seed(0)
    m = ct.CodeTalker.from_dataset(ct.CodeTalkerConfig.smoke(smoke_ds.template.V * 3, motion_scale=1e-3), smoke_ds)
    randomise(m.feat_map, 0.5)
    return m.eval()


def inputs(model, batch):
    """Audio features h (B, T, d), style (B, 1, d), ground-truth displacement (B, T, V*3) in model units."""
    with torch.no_grad():
        h = model.audio_features(batch)
        spk = batch["speaker"]
        style = model.style_embedding(spk) if isinstance(model, ff.FaceFormer) else model.style(spk)[:, None]
    disp = (batch["vertices"] - batch["template"][:, None]) / model.cfg.motion_scale
    return h, style, disp


def perturbed_after(x, t):
    y = x.clone()
    y[:, t + 1:] += torch.randn_like(y[:, t + 1:])
    return y


# --------------------------------------------------------------------------- FaceFormer's biases
def test_biased_mask_by_hand():
    slopes = torch.tensor(ff.alibi_slopes(4))
    assert slopes.tolist() == [1 / 4, 1 / 16, 1 / 64, 1 / 256]
    assert ff.alibi_slopes(6) == [1 / 4, 1 / 16, 1 / 64, 1 / 256, 1 / 2, 1 / 8]       # ALiBi's non-power-of-2 rule
    inf = math.inf
    lags = [[0, inf, inf, inf, inf],                   # floor((i - j) / 2) for j <= i, period 2
            [0, 0, inf, inf, inf],
            [1, 0, 0, inf, inf],
            [1, 1, 0, 0, inf],
            [2, 1, 1, 0, 0]]
    mask = ff.biased_mask(slopes, 5, period=2)
    assert mask.shape == (4, 5, 5)
    for h, s in enumerate([1 / 4, 1 / 16, 1 / 64, 1 / 256]):
        want = torch.tensor([[-inf if v == inf else -s * v for v in row] for row in lags])
        assert torch.equal(mask[h], want)
    long = ff.biased_mask(slopes, 700, period=30)                                   # no 600-frame cap
    assert long[0, 699, 0] == -0.25 * (699 // 30) and long[0, 0, 1] == -inf
    assert torch.equal(ff.bias_row(slopes, 699, 30), long[:, 699, :])


# --------------------------------------------------------------------------- FaceFormer
def test_faceformer_trains_and_predicts(smoke_ds, batch, tmp_path):
    torch.manual_seed(0)
    m = ff.FaceFormer.from_dataset(ff.FaceFormerConfig.smoke(smoke_ds.template.V * 3), smoke_ds)
    B, T, D = batch["vertices"].shape
    out = m(batch)
    assert out["pred"].shape == (B, T, D) and {"loss", "mse", "vel"} <= set(out)
    assert torch.equal(out["loss"], out["mse"])                                      # the published loss: MSE only
    out["loss"].backward()
    assert m.out.weight.grad.abs().sum() > 0 and m.audio_map.weight.grad.abs().sum() == 0   # zero-init head
    pred = m.predict_batch(batch)
    assert pred.shape == (B, T, D)
    assert torch.allclose(pred, batch["template"][:, None].expand(B, T, D))          # zero-initialised output
    params = {n for n, p in m.named_parameters() if any(p is q for q in m.stage_parameters(1))}
    assert not any(n.startswith("audio_encoder.model.feature_extractor.") for n in params)
    before = m.out.weight.detach().clone()
    cfg = TrainConfig(stage=1, epochs=1, max_batches=2, batch_size=4, lr=1e-3)
    h = fit(m, smoke_ds.sequences("train"), cfg, tmp_path / "ff", len(smoke_ds.train_subjects),
            smoke_ds.sequences("val")[:2], progress=False)
    assert len(h["train"]) == 1 and math.isfinite(h["val"][0]["mse"])
    assert not torch.equal(m.out.weight, before)


def test_faceformer_is_causal_in_both_paths(faceformer, batch):
    h, style, disp = inputs(faceformer, batch)
    t = 20
    with torch.no_grad():
        tf = faceformer.teacher_forced(h, style, disp)
        tf2 = faceformer.teacher_forced(perturbed_after(h, t), style, disp)
        tf3 = faceformer.teacher_forced(h, style, perturbed_after(disp, t - 1))  # inputs of frames > t change
        ar = faceformer.generate(h, style)
        ar2 = faceformer.generate(perturbed_after(h, t), style)
    for a, b in ((tf, tf2), (tf, tf3), (ar, ar2)):
        assert torch.allclose(a[:, :t + 1], b[:, :t + 1], atol=1e-5)
        assert not torch.allclose(a[:, t + 1:], b[:, t + 1:], atol=1e-3)


def test_faceformer_teacher_forcing_equals_autoregression_fed_the_ground_truth(faceformer, batch):
    h, style, disp = inputs(faceformer, batch)
    with torch.no_grad():
        tf = faceformer.teacher_forced(h, style, disp)
        ar = faceformer.generate(h, style, teacher=disp)
        free = faceformer.generate(h, style)
    assert torch.allclose(tf, ar, atol=1e-4 * tf.abs().max())
    assert torch.allclose(free[:, 0], tf[:, 0], atol=1e-5)                          # frame 0 sees no feedback
    assert not torch.allclose(free[:, 1:], tf[:, 1:], atol=1e-3)                    # later frames do


def test_faceformer_padding_and_conditions(faceformer, batch):
    h, style, disp = inputs(faceformer, batch)
    i = int(batch["n_frames"].argmin())
    n = int(batch["n_frames"][i])
    with torch.no_grad():
        full = faceformer.generate(h, style)
        alone = faceformer.generate(h[i:i + 1, :n], style[i:i + 1])
        tf = faceformer.teacher_forced(h, style, disp)
        tf_alone = faceformer.teacher_forced(h[i:i + 1, :n], style[i:i + 1], disp[i:i + 1, :n])
    assert torch.allclose(full[i, :n], alone[0], atol=1e-4) and torch.allclose(tf[i, :n], tf_alone[0], atol=1e-4)
    unseen = {**batch, "speaker": torch.full_like(batch["speaker"], -1)}
    p2 = faceformer.predict_batch(batch, condition=2)
    assert torch.allclose(faceformer.predict_batch(unseen), p2)                     # unseen speaker -> index 2
    own = int(batch["speaker"][0])
    assert torch.allclose(faceformer.predict_batch(batch, condition=own)[0], faceformer.predict_batch(batch)[0])
    p0, p1 = faceformer.predict_batch(batch, condition=0), faceformer.predict_batch(batch, condition=1)
    assert not torch.allclose(p0, p1)                                               # the style conditions the output


# --------------------------------------------------------------------------- CodeTalker: stage 1
def test_vq_straight_through_gradients(codetalker, batch):
    vq = codetalker.vq
    mask = batch["frame_mask"]
    disp = (batch["vertices"] - batch["template"][:, None]) / codetalker.cfg.motion_scale
    vq.zero_grad()
    z = vq.encode(disp, mask)
    z.retain_grad()
    z_q, codes = vq.quantize(z)
    recon = vq.decode(vq.straight_through(z, z_q), mask)
    assert torch.allclose(vq.straight_through(z, z_q), z_q, atol=1e-6)              # forward value: the codes
    loss = (recon.abs().mean(-1) * mask).sum()
    loss.backward()
    assert vq.codebook.weight.grad is None                                           # reconstruction: no codebook grad
    assert vq.enc_in.weight.grad.abs().sum() > 0                                     # ... but the encoder gets one
    z_leaf = z_q.detach().requires_grad_(True)                                       # decoder gradient at z_q
    (vq.decode(z_leaf, mask).abs().mean(-1) * mask).sum().backward()
    assert torch.allclose(z.grad, z_leaf.grad, rtol=1e-4, atol=1e-5)                 # copied through unchanged

    vq.zero_grad()
    z = vq.encode(disp, mask)
    z.retain_grad()
    z_q, codes = vq.quantize(z)
    vq.quant_loss(z, z_q, mask).backward()
    n_real, D = mask.sum(), z.shape[-1]
    commit = 2 * codetalker.cfg.beta * (z - z_q).detach() / D / n_real * mask[..., None]
    assert torch.allclose(z.grad, commit, atol=1e-7)                                 # encoder: commitment only
    g = vq.codebook.weight.grad
    used = torch.zeros(codetalker.cfg.n_codes, dtype=torch.bool)
    used[codes[mask].unique()] = True
    assert (g[used].abs().sum(1) > 0).all() and (g[~used] == 0).all()               # only selected entries move


def test_vqvae_reconstruction_does_not_depend_on_the_batch(smoke_ds, codetalker, batch):
    i = int(batch["n_frames"].argmin())
    n = int(batch["n_frames"][i])
    one = collate([FaceDataset(smoke_ds.sequences("train"), len(smoke_ds.train_subjects))[IDX[i]]])
    full = codetalker.predict_batch(batch, stage=1)
    alone = codetalker.predict_batch(one, stage=1)
    assert torch.allclose(full[i, :n], alone[0], atol=1e-6)


# --------------------------------------------------------------------------- CodeTalker: stage 2
def test_codetalker_is_causal_and_its_paths_agree(codetalker, batch):
    h, style, disp = inputs(codetalker, batch)
    t = 20
    with torch.no_grad():
        tf = codetalker.teacher_forced(h, style, disp)
        tf2 = codetalker.teacher_forced(perturbed_after(h, t), style, disp)
        ar = codetalker.generate(h, style)
        ar2 = codetalker.generate(perturbed_after(h, t), style)
        fed = codetalker.generate(h, style, teacher=disp)
    for a, b in ((tf, tf2), (ar, ar2)):                                              # predicted features f
        assert torch.allclose(a[:, :t + 1], b[:, :t + 1], atol=1e-5)
        assert not torch.allclose(a[:, t + 1:], b[:, t + 1:], atol=1e-3)
    assert torch.allclose(tf, fed, atol=1e-4 * tf.abs().max())
    assert not torch.allclose(ar[:, 1:], tf[:, 1:], atol=1e-3)                      # own codes are fed back
    i = int(batch["n_frames"].argmin())
    n = int(batch["n_frames"][i])
    with torch.no_grad():
        alone = codetalker.generate(h[i:i + 1, :n], style[i:i + 1])
    assert torch.allclose(ar[i, :n], alone[0], atol=1e-4)


def test_codetalker_stages(smoke_ds, batch, tmp_path):
    torch.manual_seed(0)
    m = ct.CodeTalker.from_dataset(ct.CodeTalkerConfig.smoke(smoke_ds.template.V * 3), smoke_ds)
    B, T, D = batch["vertices"].shape
    o1, o2 = m(batch, stage=1), m(batch, stage=2)
    assert {"loss", "mse", "vel", "l1", "quant", "perplexity"} <= set(o1)
    assert {"loss", "mse", "vel", "motion", "feature"} <= set(o2)
    assert torch.allclose(o1["loss"], o1["l1"] + o1["quant"])
    assert torch.allclose(o2["loss"], o2["motion"] + o2["feature"])
    assert o1["pred"].shape == o2["pred"].shape == (B, T, D)
    ids = lambda ps: {id(p) for p in ps}                                             # noqa: E731
    assert ids(m.stage_parameters(1)) == ids(m.vq.parameters())
    assert not ids(m.stage_parameters(2)) & ids(m.vq.parameters())
    train, val, n = smoke_ds.sequences("train"), smoke_ds.sequences("val")[:2], len(smoke_ds.train_subjects)
    h1 = fit(m, train, TrainConfig(stage=1, epochs=1, max_batches=2, batch_size=4, lr=1e-3), tmp_path / "s1", n,
             val, progress=False)
    vq_state = {k: v.clone() for k, v in m.vq.state_dict().items()}
    head = m.feat_map.weight.detach().clone()
    h2 = fit(m, train, TrainConfig(stage=2, epochs=1, max_batches=2, batch_size=4, lr=1e-3), tmp_path / "s2", n,
             val, progress=False)
    assert math.isfinite(h1["val"][0]["mse"]) and math.isfinite(h2["val"][0]["mse"])
    assert all(torch.equal(v, m.vq.state_dict()[k]) for k, v in vq_state.items())  # stage 2: VQ-VAE unchanged
    assert not torch.equal(m.feat_map.weight, head)                                  # ... the predictor trained
    pred, f, codes = m.predict_batch(batch, return_features=True)
    c = m.cfg
    assert pred.shape == (B, T, D) and f.shape == (B, T, c.tokens_per_frame * c.code_dim)
    assert codes.shape == (B, T, c.tokens_per_frame) and int(codes.max()) < c.n_codes
    assert m.predict_batch(batch, stage=1).shape == (B, T, D)


def test_recipes_split_the_budget(smoke_ds):
    r = ct.recipe("smoke", smoke_ds, audio=AudioConfig.smoke())
    total = budget("smoke")["epochs"]
    assert r.stage1.epochs + r.stage2.epochs == total and r.stage1.epochs == round(0.4 * total)
    assert r.stage2.triplets == "none" and r.model_class is ct.CodeTalker and r.name == "codetalker-smoke"
    r = ff.recipe("smoke", smoke_ds, audio=AudioConfig.smoke())
    assert r.stage1.epochs == total and r.stage2 is None and r.model_class is ff.FaceFormer
    assert r.model.motion_scale > 0 and r.model.vertex_dim == smoke_ds.template.V * 3
    paper = ct.CodeTalkerConfig.paper()
    assert (paper.vq_dim, paper.vq_layers, paper.vq_heads, paper.vq_ff_dim) == (1024, 6, 8, 1536)
    assert (paper.n_codes, paper.code_dim, paper.tokens_per_frame) == (256, 64, 16)
    assert (paper.dim, paper.n_layers, paper.n_heads, paper.ff_dim) == (1024, 6, 4, 2048)
    assert paper.audio.kind == "wav2vec2" and ff.FaceFormerConfig.paper().audio.pretrained.endswith("base-960h")
