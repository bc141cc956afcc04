"""SelfTalk (lip-reading consistency) and Imitator (viseme decoder + style adaptation) on the smoke dataset."""
import torch

torch.set_num_threads(1)

import pytest  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from mtk.synthvoca.articulation import PHONEMES  # noqa: E402
from mtk.audio import AudioConfig  # noqa: E402
from mtk.data import FaceDataset, collate  # noqa: E402
from mtk.train import TrainConfig, fit  # noqa: E402
from mtk.baselines.imitator import (AdaptConfig, Imitator, ImitatorConfig, adapt, adapt_to_speakers,  # noqa: E402
                                    StyleObjective, adaptation_loss, bilabial_ids, cache_reference,
                                    mbp_weights)
from mtk.baselines.selftalk import SelfTalk, SelfTalkConfig, ctc_targets  # noqa: E402

SCALE = 0.003                                   # ~ the smoke dataset's motion size (metres)


def tiny_audio():
    return AudioConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                       conv_dim=(16,) * 7, num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2)


@pytest.fixture(scope="module")
def batch(smoke_ds):
    data = FaceDataset(smoke_ds.sequences("train"), len(smoke_ds.train_subjects))
    return collate([data[i] for i in (0, 1, 7, 13)])


def selftalk(ds, **kw):
    torch.manual_seed(0)
    cfg = SelfTalkConfig.smoke(ds.template.V * 3, audio=tiny_audio(), dim=16, ff_dim=32, lip_ff_dim=32,
                               motion_scale=SCALE, **kw)
    return SelfTalk.from_dataset(cfg, ds)


def imitator(ds, **kw):
    torch.manual_seed(0)
    cfg = ImitatorConfig.smoke(ds.template.V * 3, audio=tiny_audio(), dim=16, ff_dim=32, motion_scale=SCALE, **kw)
    return Imitator.from_dataset(cfg, ds)


def fit_one(model, ds, tmp_path):
    cfg = TrainConfig(stage=1, epochs=1, max_batches=2, batch_size=4, lr=1e-3)
    return fit(model, ds.sequences("train"), cfg, tmp_path / "ckpt", len(ds.train_subjects),
               ds.sequences("val"), progress=False)


# --------------------------------------------------------------------------- SelfTalk
def test_selftalk_forward_backward_and_shapes(smoke_ds, batch):
    m = selftalk(smoke_ds)
    out = m(batch)
    for k in ("loss", "mse", "vel", "feat", "text"):
        assert out[k].dim() == 0 and torch.isfinite(out[k]), k
    c = m.cfg
    expect = c.lambda_mse * out["mse"] + c.lambda_vel * out["vel"] + c.lambda_feat * out["feat"] \
        + c.lambda_text * out["text"]
    assert torch.allclose(out["loss"], expect)
    out["loss"].backward()
    assert all(p.grad is None for p in m.asr.parameters())                 # the recogniser is frozen
    trained = {id(p) for p in m.stage_parameters(1)}
    assert not any(id(p) in trained for p in m.asr.parameters())
    assert {id(p) for p in m.interpreter.parameters()} <= trained
    m.eval()
    pred = m.predict_batch(batch)
    assert pred.shape == batch["vertices"].shape
    # zero-initialised output layer: the untrained animator predicts the template
    assert torch.equal(pred, batch["template"][:, None].expand_as(pred))
    with pytest.raises(NotImplementedError):
        m.predict_batch(batch, return_features=True)


def test_selftalk_consistency_losses_couple_animator_and_interpreter(smoke_ds, batch):
    m = selftalk(smoke_ds, dropout=0.0)
    torch.nn.init.normal_(m.out.weight, std=0.3)                           # a non-trivial animator
    m.train()
    for term in ("text", "feat"):
        m.zero_grad(set_to_none=True)
        m(batch)[term].backward()
        grads = {n: p.grad for n, p in m.named_parameters() if p.requires_grad}
        # the interpreter learns from the term ...
        for name in ("lm_head.weight", "lip_map.weight", "interpreter.encoder.layers.0.linear1.weight"):
            if term == "feat" and name == "lm_head.weight":
                continue
            assert grads[name] is not None and grads[name].abs().sum() > 0, (term, name)
        # ... and so does the animator, only through the predicted lips
        for name in ("audio_map.weight", "decoder.layers.0.linear1.weight"):
            assert grads[name] is not None and grads[name].abs().sum() > 0, (term, name)
        g_out = grads["out.weight"].view(-1, 3, m.cfg.dim)                 # (V, 3, d)
        on_lips = torch.zeros(len(g_out), dtype=torch.bool)
        on_lips[m.lip_idx] = True
        assert g_out[on_lips].abs().sum() > 0
        assert torch.equal(g_out[~on_lips], torch.zeros_like(g_out[~on_lips]))


def test_ctc_targets_by_hand():
    ph = torch.tensor([[5, 5, 7, 7, 7, -1, 7, 2, -1, -1],
                       [1, 1, 3, 1, -1, -1, -1, -1, -1, -1],
                       [-1] * 10])
    targets, lengths = ctc_targets(ph, torch.tensor([8, 4, 10]))
    assert targets.tolist() == [5, 7, 2, 1, 3, 1]
    assert lengths.tolist() == [3, 3, 0]


def test_selftalk_text_losses_by_hand(smoke_ds):
    m = selftalk(smoke_ds)
    P = m.cfg.n_phonemes
    ph = torch.tensor([[4, 4, 9, 9, 9, 2, -1, -1], [6, 6, 6, 6, 6, 6, 6, 6]])
    n = torch.tensor([6, 8])
    good = torch.full((2, 8, P + 1), -20.0)
    good.scatter_(2, ph.clamp(min=0)[..., None], 20.0)                     # every frame says its own label
    assert float(m.text_loss(good, ph, n)) < 1e-3                         # CTC: a correct reading costs nothing
    wrong = ph.clone()
    wrong[0, :2] = 11                                                      # a reading of a different first phoneme
    bad = torch.full((2, 8, P + 1), -20.0).scatter_(2, wrong.clamp(min=0)[..., None], 20.0)
    assert float(m.text_loss(bad, ph, n)) > 1.0
    m.cfg.text_loss = "ce"                                                 # frame cross-entropy, -1 ignored
    logits = torch.randn(2, 8, P + 1)
    keep = ph >= 0
    by_hand = F.cross_entropy(logits[..., :P][keep], ph[keep])
    assert torch.allclose(m.text_loss(logits, ph, n), by_hand)


def test_selftalk_fit(smoke_ds, tmp_path):
    m = selftalk(smoke_ds)
    asr = {k: v.clone() for k, v in m.asr.state_dict().items()}
    enc = {k: v.clone() for k, v in m.audio_encoder.state_dict().items()}
    hist = fit_one(m, smoke_ds, tmp_path)
    assert len(hist["train"]) == 1 and torch.isfinite(torch.tensor(hist["train"][0]["loss"]))
    assert {"mse", "vel"} <= set(hist["val"][0])
    assert all(torch.equal(v, m.asr.state_dict()[k]) for k, v in asr.items())          # recogniser untouched
    assert any(not torch.equal(v, m.audio_encoder.state_dict()[k]) for k, v in enc.items())   # encoder trained


# --------------------------------------------------------------------------- Imitator
def test_imitator_forward_backward_and_shapes(smoke_ds, batch):
    m = imitator(smoke_ds)
    out = m(batch)
    for k in ("loss", "mse", "vel", "mbp"):
        assert out[k].dim() == 0 and torch.isfinite(out[k]), k
    assert torch.allclose(out["loss"], out["mse"] + out["mbp"] + 10 * out["vel"])
    out["loss"].backward()
    assert m.final.weight.grad.abs().sum() > 0                             # zero-initialised: only it learns first
    assert torch.equal(m.audio_map.weight.grad, torch.zeros_like(m.audio_map.weight))
    torch.nn.init.normal_(m.final.weight, std=0.3)
    m.zero_grad()
    m(batch)["loss"].backward()
    for p in (m.style.weight, m.mlp[0].weight, m.decoder.layers[0].linear1.weight, m.audio_map.weight):
        assert p.grad.abs().sum() > 0
    m.eval()
    pred = m.predict_batch(batch)
    assert pred.shape == batch["vertices"].shape and not torch.equal(pred, m.predict_batch(batch, condition=2))
    m.train()
    assert torch.equal(m.predict_batch(batch), pred) and m.training       # inference runs in eval mode
    with pytest.raises(NotImplementedError):
        m.predict_batch(batch, return_features=True)


def test_imitator_viseme_decoder_is_causal_and_autoregressive(smoke_ds, batch):
    m = imitator(smoke_ds, n_layers=2).eval()
    with torch.no_grad():
        a = m.audio_features(batch)
        y = m.viseme_features(a)
        a2 = a.clone()
        t0 = 20
        a2[:, t0:] += torch.randn_like(a2[:, t0:])                          # change the future audio only
        y2 = m.viseme_features(a2)
        assert torch.equal(y[:, :t0], y2[:, :t0])                          # the past is untouched
        assert not torch.allclose(y[:, t0:], y2[:, t0:])
        # the recursion is exact: decoding in parallel from its own outputs reproduces them
        assert torch.allclose(m.viseme_features(a, teacher=y), y, atol=1e-5)


def test_imitator_viseme_features_ignore_style(smoke_ds, batch):
    m = imitator(smoke_ds).eval()
    torch.nn.init.normal_(m.final.weight, std=0.3)
    with torch.no_grad():
        y = m.viseme_features(m.audio_features(batch))
        codes0 = m.style_codes(batch, condition=0)
        codes1 = m.style_codes(batch, condition=1)
    assert not torch.allclose(codes0, codes1)
    # the viseme decoder has no style input at all: only the motion decoder reads the code
    assert not any("style" in n for n, _ in m.decoder.named_parameters())
    assert not torch.allclose(m.motion_offsets(y, codes0), m.motion_offsets(y, codes1))
    p0 = m.predict_batch(batch, condition=0)
    assert torch.allclose(p0, batch["template"][:, None] + m.motion_offsets(y, codes0), atol=1e-7)


def test_mbp_weights_by_hand():
    names = ["_", "p", "a", "a", "a", "a", "m", "I", "b", "_"]
    ph = torch.tensor([[PHONEMES.index(x) for x in names] + [-1, -1]])
    w = mbp_weights(ph)[0]
    expect = [0.61, 1.0, 0.61, 0.14, 0.14, 0.61, 1.0, 0.61, 1.0, 0.61, 0.14, 0.0]
    assert torch.allclose(w, torch.tensor(expect))
    assert sorted(PHONEMES[i] for i in bilabial_ids()) == ["b", "m", "p"]


def test_mbp_loss_by_hand(smoke_ds):
    m = imitator(smoke_ds)
    ph = torch.tensor([[PHONEMES.index("m"), PHONEMES.index("a"), PHONEMES.index("a"), PHONEMES.index("a"), -1]])
    mask = torch.tensor([[True, True, True, True, False]])
    gt = torch.zeros(1, 5, 6)
    pred = torch.ones(1, 5, 6) * torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])[None, :, None]   # squared error t^2
    by_hand = 5.0 * (1.0 * 1 + 0.61 * 4 + 0.14 * 9 + 0 * 16) / 4
    assert torch.allclose(m.mbp_loss(pred, gt, ph, mask), torch.tensor(by_hand))


def test_imitator_fit(smoke_ds, tmp_path):
    m = imitator(smoke_ds)
    hist = fit_one(m, smoke_ds, tmp_path)
    assert len(hist["train"]) == 1 and torch.isfinite(torch.tensor(hist["train"][0]["loss"]))
    assert float(m.final.weight.detach().abs().sum()) > 0                           # the zero-initialised layer moved


def test_adaptation_touches_only_the_style_code(smoke_ds):
    m = imitator(smoke_ds).train()                                         # adapt itself must switch dropout off
    torch.nn.init.normal_(m.final.weight, std=0.3)                         # an output that depends on the code
    refs = [s for s in smoke_ds.sequences("test", part="reference")]
    subject = refs[0].subject
    refs = [s for s in refs if s.subject == subject]
    before = {k: v.clone() for k, v in m.state_dict().items()}
    hist: list[float] = []
    code = adapt(m, refs, steps=15, lr=3e-2, history=hist)
    after = m.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)           # bit-identical model
    assert all(p.requires_grad for p in m.stage_parameters(1)) and m.training
    assert torch.equal(code, adapt(m, refs, steps=15, lr=3e-2))           # deterministic: no dropout
    m.eval()
    init = m.style.weight[:, m.default_speaker()]
    assert code.shape == init.shape and not torch.equal(code, init)
    with torch.no_grad():
        batches = cache_reference(m, refs, 2)
        assert float(adaptation_loss(m, batches, code)) < 0.9 * float(adaptation_loss(m, batches, init))
        assert hist[-1] < hist[0]
        # the fast objective is the adaptation loss itself, for any code
        objective = StyleObjective(m, batches)
        for c in (init, code, torch.randn_like(code)):
            assert torch.allclose(objective(c), adaptation_loss(m, batches, c), rtol=1e-5)
    # the second stage (final layer too) returns its own copy and leaves the model alone as well
    code2, (W, b) = adapt(m, refs, steps=3, lr=3e-2, final_layer=True)
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())
    assert W.shape == m.final.weight.shape and not torch.equal(W, m.final.weight)


def test_predict_uses_adapted_codes(smoke_ds):
    m = imitator(smoke_ds).eval()
    torch.nn.init.normal_(m.final.weight, std=0.3)
    data = FaceDataset(smoke_ds.sequences("test"), len(smoke_ds.train_subjects))
    b = collate([data[i] for i in range(len(data))])
    subjects = sorted(set(b["subject"]))
    default = m.predict_batch(b)
    assert torch.equal(default, m.predict_batch(b, condition=m.default_speaker()))
    report = adapt_to_speakers(m, smoke_ds, "test", AdaptConfig.smoke(steps=2), progress=False)
    assert sorted(report) == subjects and set(m.adapted_style) == set(subjects)
    adapted = m.predict_batch(b)
    forced = m.predict_batch(b, condition=m.default_speaker())             # a forced condition overrides it
    assert torch.equal(forced, default)
    for i in range(len(b["subject"])):
        T = int(b["n_frames"][i])
        assert not torch.allclose(adapted[i, :T], default[i, :T])
