"""MemoryTalker at the level a user acts: shapes, the memory's equations, both stages, training, inference."""
import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from mtk import recipes
from mtk.audio import AudioConfig
from mtk.data import FaceDataset, collate
from mtk.memory import MotionMemory
from mtk.model import MemoryTalker, ModelConfig
from mtk.stylize import LogMel, stylize_memory, triplet_loss
from mtk.train import TrainConfig, TripletDataset, collate_triplets, fit


@pytest.fixture(scope="module")
def tiny(smoke_ds):
    """The smoke recipe's untrained model: pretrained smoke encoder, the data's motion scale."""
    torch.manual_seed(0)
    cfg = recipes.memorytalker("smoke", smoke_ds, progress=False).model
    return MemoryTalker(cfg, smoke_ds.template.mask("lips"))


@pytest.fixture(scope="module")
def batch(smoke_ds):
    ds = FaceDataset(smoke_ds.sequences("train"), len(smoke_ds.train_subjects))
    return collate([ds[i] for i in (0, 7, 13)])


def test_memory_addresses_and_reads():
    torch.manual_seed(0)
    mem = MotionMemory(n_slots=5, dim=4, kappa=16.0)
    logits = torch.randn(2, 3, 5)
    K = mem.key_address(logits)
    f_m = torch.randn(2, 3, 4)
    V = mem.value_address(f_m)
    for A in (K, V):
        assert A.shape == (2, 3, 5) and torch.allclose(A.sum(-1), torch.ones(2, 3))
    # Eq. 1 by hand for one frame: softmax over slots of 16 * cosine similarity
    f, M = f_m[1, 2], mem.M.detach()
    cos = torch.stack([torch.dot(f, M[i]) / (f.norm() * M[i].norm()) for i in range(5)])
    assert torch.allclose(V[1, 2], torch.softmax(16 * cos, 0), atol=1e-6)
    # Eq. 2/6: a read is the address-weighted sum of slots
    assert torch.allclose(mem.read(K)[0, 1], (K[0, 1, :, None] * M).sum(0), atol=1e-6)
    # Eq. 7 with B = 1 equals the released code's kl_div(V.log(), K, 'batchmean') (a sum over frames)
    mask = torch.ones(1, 3, dtype=torch.bool)
    ref = torch.nn.functional.kl_div(V[:1].log(), torch.softmax(16 * logits[:1], -1), reduction="batchmean")
    assert torch.allclose(MotionMemory.align_loss(logits[:1], V[:1], 16.0, mask), ref, atol=1e-5)


def test_slot_usage_counts_the_slots_read():
    from mtk.memory import slot_usage
    n = 8
    even = slot_usage(torch.full((50, n), 1.0 / n))                     # every slot read equally, every frame mixing all
    assert even["perplexity"] == pytest.approx(n) and even["frame_perplexity"] == pytest.approx(n) and even["used"] == n
    hard = torch.zeros(40, n)
    hard[:, 3] = 1.0                                                    # one slot takes all reading
    one = slot_usage(hard)
    assert one["perplexity"] == pytest.approx(1.0) and one["frame_perplexity"] == pytest.approx(1.0) and one["used"] == 1
    half = torch.zeros(40, n)
    half[:20, 0] = half[20:, 1] = 1.0                                   # two slots, half the frames each, hard lookups
    two = slot_usage(half)
    assert two["perplexity"] == pytest.approx(2.0) and two["frame_perplexity"] == pytest.approx(1.0) and two["used"] == 2
    with pytest.raises(ValueError, match=r"\(frames, n\)"):
        slot_usage(torch.ones(2, 3, 4))


def test_pretraining_report_reads_the_last_epoch(tmp_path):
    import json
    from mtk.audio import pretraining_report
    with pytest.raises(FileNotFoundError, match="pretrain.json"):
        pretraining_report(tmp_path)
    (tmp_path / "pretrain.json").write_text(json.dumps({"history": [], "seconds": 1.0}))
    with pytest.raises(ValueError, match="val_frame_accuracy"):
        pretraining_report(tmp_path)
    (tmp_path / "pretrain.json").write_text(json.dumps({"history": [{"val_frame_accuracy": 0.5}, {"val_frame_accuracy": 0.7}],
                                                        "seconds": 3.0, "n_phonemes": 40}))
    rep = pretraining_report(tmp_path)
    assert rep == {"epochs": 2, "seconds": 3.0, "val_frame_accuracy": 0.7, "n_phonemes": 40}


def test_stylized_memory_keeps_one_style_per_sample():
    M = torch.randn(4, 3)
    w = torch.tensor([[1.0, 2.0, 0.5, 0.0], [0.0, 1.0, 1.0, 3.0]])
    Ms = stylize_memory(M, w)
    assert Ms.shape == (2, 4, 3)
    assert torch.allclose(Ms[0], M * w[0, :, None]) and torch.allclose(Ms[1], M * w[1, :, None])
    assert triplet_loss(torch.zeros(1, 2), torch.zeros(1, 2), torch.tensor([[10.0, 0.0]]), margin=1.0) == 0


def test_logmel_puts_a_tone_in_the_right_band():
    t = torch.arange(16000) / 16000
    mel = LogMel()(torch.sin(2 * np.pi * 1000 * t)[None])          # (1, 80, 101)
    assert mel.shape == (1, 80, 101)
    peak = int(mel[0, :, 50].argmax())
    hz = 700 * (10 ** (np.linspace(0, 2595 * np.log10(1 + 8000 / 700), 82)[peak + 1] / 2595) - 1)
    assert 850 < hz < 1150


def test_forward_shapes_and_losses(tiny, batch):
    B, T, D = batch["vertices"].shape
    for stage in (1, 2):
        out = tiny(batch, stage=stage)
        assert out["pred"].shape == (B, T, D) and out["logits"].shape == (B, T, tiny.cfg.n_slots)
        assert torch.isfinite(out["loss"])
    assert {"mse", "vel", "mem", "align"} <= set(tiny(batch, stage=1))
    assert {"mse", "vel", "lip"} <= set(tiny(batch, stage=2))


def test_zero_initialised_output_starts_at_the_template(smoke_ds, batch):
    m = MemoryTalker(ModelConfig.smoke(smoke_ds.template.V * 3), smoke_ds.template.mask("lips")).eval()
    pred = m.predict(batch["audio"], batch["audio_mask"].sum(1), batch["n_frames"], batch["template"], stage=1)
    assert torch.allclose(pred, batch["template"][:, None].expand_as(pred))


def test_one_step_lowers_the_loss(tiny, batch):
    m = copy.deepcopy(tiny)
    m.train()
    torch.manual_seed(1)
    opt = torch.optim.Adam(m.stage_parameters(1), lr=1e-3)
    m.eval()                                     # no dropout: compare the same function before and after
    before = float(m(batch, 1)["mse"].detach())
    out = m(batch, 1)
    opt.zero_grad()
    out["loss"].backward()
    opt.step()
    assert float(m(batch, 1)["mse"].detach()) < before


def test_stage2_leaves_stage1_parameters_unchanged(smoke_ds, tmp_path):
    torch.manual_seed(0)
    m = MemoryTalker(ModelConfig.smoke(smoke_ds.template.V * 3), smoke_ds.template.mask("lips"))
    # a non-zero output layer: the vertex losses then reach the style encoder whatever the batches' triplets
    # (with the zero-initialised layer only the triplet loss would, and a batch's triplets may all be satisfied)
    torch.nn.init.normal_(m.out.weight, std=0.02)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    fit(m, smoke_ds.sequences("train"), TrainConfig.smoke(2, epochs=1, max_batches=2), tmp_path / "s2",
        len(smoke_ds.train_subjects), progress=False)
    after = m.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("style_encoder.") for k in changed)


def test_same_seed_same_weights_and_resume(smoke_ds, tmp_path):
    train = smoke_ds.sequences("train")
    cfg = TrainConfig.smoke(1, epochs=2, max_batches=2)

    def run(path, epochs_first=None):
        torch.manual_seed(0)
        m = MemoryTalker(ModelConfig.smoke(smoke_ds.template.V * 3), smoke_ds.template.mask("lips"))
        if epochs_first:          # an interrupted run: stopped after 1 epoch, then a fresh model resumes
            def interrupt(epoch, history):
                if epoch == epochs_first:
                    raise KeyboardInterrupt
            with pytest.raises(KeyboardInterrupt):
                fit(m, train, cfg, path, 3, progress=False, callback=interrupt)
            torch.manual_seed(123)
            m = MemoryTalker(ModelConfig.smoke(smoke_ds.template.V * 3), smoke_ds.template.mask("lips"))
        fit(m, train, cfg, path, 3, progress=False)
        return m.state_dict()

    a, b = run(tmp_path / "a"), run(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = run(tmp_path / "c", epochs_first=1)
    assert all(torch.allclose(a[k], c[k]) for k in a)


def test_checkpoint_roundtrip_is_bit_identical(smoke_ds, trained, batch):
    """Decision: a model trained and then used, and the same run loaded from its checkpoint, are bit-identical:
    the same weights, the same requires_grad flags and the same predictions (torch.equal, no tolerance).
    (They once differed by 1e-8 because a resumed `fit` left only the last stage's parameters trainable.)"""
    r, model, out = trained
    again, out2 = recipes.load_or_train(r, smoke_ds, progress=False)               # loads, does not retrain
    assert out2["history1"] == out["history1"] and out2["history2"] == out["history2"]   # the same epoch times
    a, b = model.state_dict(), again.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert [p.requires_grad for p in model.parameters()] == [p.requires_grad for p in again.parameters()]
    args = (batch["audio"], batch["audio_mask"].sum(1), batch["n_frames"], batch["template"])
    for stage in (1, 2):
        assert torch.equal(model.predict(*args, stage=stage), again.predict(*args, stage=stage))
    run = out["run_dir"]
    for stage in ("stage1", "stage2"):
        for suffix in (".safetensors", ".optim.safetensors", ".json"):
            assert (run / f"{stage}{suffix}").exists()
    assert not list(run.rglob("*.pt")) and not list(run.rglob("*.pkl"))              # nothing to unpickle
    assert (run / "model" / "model.safetensors").exists() and (run / "model" / "template.npz").exists()


def test_save_pretrained_loads_in_a_fresh_process_without_the_dataset(smoke_ds, trained, tmp_path):
    """from_pretrained needs neither the dataset nor the pretrained-encoder folder, and predicts the same,
    bit for bit (at the same number of threads)."""
    import os
    import subprocess
    import sys
    _, model, _ = trained
    folder = model.save_pretrained(tmp_path / "shared")
    seq = smoke_ds.sequences("test")[0]
    np.save(tmp_path / "audio.npy", seq.audio())
    expected = model.animate(seq.audio(), 16000)                          # the model's own template
    # the same number of threads: CPU kernels split their sums by thread, so bit-identity holds per thread count
    code = f"""
import numpy as np, torch, transformers, mtk.data
torch.set_num_threads({torch.get_num_threads()})
def forbidden(*a, **k): raise AssertionError("from_pretrained must not read the dataset or the encoder folder")
transformers.HubertModel.from_pretrained = forbidden
mtk.data.load_dataset = forbidden
from mtk.model import MemoryTalker
m = MemoryTalker.from_pretrained({str(folder)!r})
np.save({str(tmp_path / "out.npy")!r}, m.animate(np.load({str(tmp_path / "audio.npy")!r}), 16000))
"""
    env = {**os.environ, "MTK_HOME": str(tmp_path / "empty-home")}
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert not (tmp_path / "empty-home").exists()                            # nothing generated or trained
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), expected)
    loaded = MemoryTalker.from_pretrained(folder)
    assert loaded.template.V == smoke_ds.template.V and np.array_equal(loaded.template.faces, smoke_ds.template.faces)
    assert set(loaded.template.masks) == set(smoke_ds.template.masks)
    with pytest.raises(FileNotFoundError, match="config.json"):
        MemoryTalker.from_pretrained(tmp_path)


def test_run_names_do_not_depend_on_where_the_checkout_lives(smoke_ds, tmp_path):
    """A run's folder name hashes the pretrained-encoder folder's content, not its path."""
    import shutil
    from dataclasses import replace
    r = recipes.memorytalker("smoke", smoke_ds, progress=False)
    src = Path(r.model.audio.pretrained)
    moved = tmp_path / "somewhere" / "else"
    shutil.copytree(src, moved)
    r_moved = replace(r, model=replace(r.model, audio=replace(r.model.audio, pretrained=str(moved))))
    assert r_moved.run_dir(smoke_ds).name == r.run_dir(smoke_ds).name
    weights = next(moved.glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1                                                            # other weights: another run
    weights.write_bytes(bytes(data))
    assert r_moved.run_dir(smoke_ds).name != r.run_dir(smoke_ds).name


def test_interrupted_checkpoint_write_is_not_resumed(smoke_ds, tmp_path):
    """Three files per checkpoint, tied by a write id: a mismatch (a crash mid-write) restarts the stage."""
    from mtk import checkpoint
    train = smoke_ds.sequences("train")
    cfg = TrainConfig.smoke(1, epochs=1, max_batches=1)
    m = MemoryTalker(ModelConfig.smoke(smoke_ds.template.V * 3), smoke_ds.template.mask("lips"))
    fit(m, train, cfg, tmp_path / "s1", 3, progress=False)
    rec = checkpoint.read_training_record(tmp_path / "s1")
    assert rec["epoch"] == 1 and checkpoint.tensors_metadata(tmp_path / "s1.safetensors")["write_id"] == rec["write_id"]
    (tmp_path / "s1.json").write_text((tmp_path / "s1.json").read_text().replace(rec["write_id"], "0" * 32))
    key = rec["key"]
    with pytest.warns(UserWarning, match="interrupted while saving"):
        assert checkpoint.load_training_state(tmp_path / "s1", key, m, None) is None


def test_non_finite_loss_stops_training_naming_the_clips(smoke_ds, tmp_path):
    from dataclasses import replace
    train = smoke_ds.sequences("train")
    bad = train[4]
    poisoned = replace(bad, _vertices=lambda: np.full_like(bad.vertices(), np.nan))
    seqs = train[:4] + [poisoned] + train[5:]
    m = MemoryTalker(ModelConfig.smoke(smoke_ds.template.V * 3), smoke_ds.template.mask("lips"))
    with pytest.raises(FloatingPointError, match=bad.name):
        fit(m, seqs, TrainConfig.smoke(1, epochs=1), tmp_path / "nan", 3, progress=False)


def test_triplets_are_same_and_different_speakers(smoke_ds):
    base = FaceDataset(smoke_ds.sequences("train"), 3)
    td = TripletDataset(base, seed=0)
    b = collate_triplets([td[i] for i in range(4)])
    assert b["positive"]["audio"].shape[0] == 4 and b["negative"]["audio_mask"].dtype == torch.bool
    by_audio = {len(s.audio()): s.subject for s in base.sequences}
    for i in range(4):
        spk = base.sequences[i].subject
        n_pos = int(b["positive"]["audio_mask"][i].sum())
        n_neg = int(b["negative"]["audio_mask"][i].sum())
        assert by_audio[n_pos] == spk and by_audio[n_neg] != spk


def test_tiny_random_init_encoders_run_end_to_end(smoke_ds):
    seq = smoke_ds.sequences("test")[0]
    for kind in ("hubert", "wav2vec2"):
        cfg = ModelConfig.smoke(smoke_ds.template.V * 3)
        cfg.audio = AudioConfig(kind=kind, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                intermediate_size=32, conv_dim=(16,) * 7)
        m = MemoryTalker(cfg, smoke_ds.template.mask("lips"))
        v = m.animate(seq.audio(), 16000, seq.template)
        assert v.shape == (len(seq.vertices()), smoke_ds.template.V, 3) and np.isfinite(v).all()


def test_pretrained_without_network_names_the_small_default(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from mtk.audio import load_hf_model
    with pytest.raises(OSError, match=r"AudioConfig.default\(\)"):
        load_hf_model(AudioConfig(pretrained="facebook/hubert-base-ls960-not-cached"))


@pytest.fixture(scope="module")
def moving(tiny, smoke_ds):
    """The smoke model with a random (non-zero) output layer, so its animation is not the template: a test
    on it fails if frames are lost, shifted or left unanimated."""
    m = copy.deepcopy(tiny).eval()
    m.template = smoke_ds.template
    torch.manual_seed(1)
    torch.nn.init.normal_(m.out.weight, std=0.3)
    return m


def test_animate_handles_rates_stereo_and_long_clips(moving, smoke_ds):
    seq = smoke_ds.sequences("test")[0]
    a = seq.audio()
    T = len(seq.vertices())
    v16 = moving.animate(a, 16000)
    t = smoke_ds.template.vertices
    assert v16.shape == (T, smoke_ds.template.V, 3)
    assert np.sqrt(((v16 - t) ** 2).mean()) > 1e-3                       # it moves: not the template
    from scipy.signal import resample_poly
    stereo = np.stack([resample_poly(a, 441, 160)] * 2, 1)               # the same clip at 44.1 kHz, stereo
    v44 = moving.animate(stereo, 44100.0, seq.template.vertices)         # an integer-valued float rate is fine
    assert len(v44) == T
    d16, d44 = (v16 - t).ravel(), (v44 - t).ravel()
    assert np.corrcoef(d16, d44)[0, 1] > 0.95                            # the same motion after resampling


def test_long_clips_are_windowed_and_cross_faded(moving, smoke_ds):
    """A clip longer than the window: frames covered by one window equal that window's own prediction of its
    audio exactly; the whole clip follows the single-pass animation (none of it is left unanimated)."""
    from mtk.audio import frames_for
    from mtk.model import window_plan
    long = np.concatenate([s.audio() for s in smoke_ds.sequences("all", "all")[:16]])   # ~35 s
    m = copy.deepcopy(moving)
    m.cfg.max_window_frames = 10 ** 6
    single = m.animate(long, 16000)
    m.cfg.max_window_frames = W = 90
    win = m.animate(long, 16000)
    T = frames_for(len(long))
    assert single.shape == win.shape == (T, smoke_ds.template.V, 3)
    plan = window_plan(T, W)
    assert plan[0][0] == 0 and plan[-1][1] == T and len(plan) > 10
    spf = 16000 / 30
    tmpl = torch.from_numpy(smoke_ds.template.vertices.reshape(1, -1))
    cover = np.zeros(T, int)
    for s, e, _ in plan:
        cover[s:e] += 1
    for s, e, _ in plan[::3] + [plan[-1]]:
        a = torch.from_numpy(long[int(s * spf): int(min(len(long), round(e * spf)))])[None]
        own = m.predict(a, torch.tensor([a.shape[1]]), torch.tensor([e - s]), tmpl, stage=2)[0].numpy()
        alone = cover[s:e] == 1
        assert alone.any()
        np.testing.assert_allclose(win[s:e][alone].reshape(alone.sum(), -1), own[alone], atol=1e-6)
    t = smoke_ds.template.vertices
    tail = slice(W, T)                                                     # everything after the first window
    assert np.corrcoef((single - t)[tail].ravel(), (win - t)[tail].ravel())[0, 1] > 0.5


def test_animate_rejects_bad_input_before_any_work(moving, smoke_ds):
    t = smoke_ds.template
    rng = np.random.default_rng(0)
    speech = rng.normal(size=16000).astype(np.float32) * 0.1
    cases = [
        (dict(audio=np.zeros(0)), "empty"),
        (dict(audio=np.zeros(16000)), "silent"),
        (dict(audio=np.full(16000, 0.5)), r"constant at \+0.500 \(a DC offset"),
        (dict(audio=np.full(16000, 0.5) + rng.normal(size=16000) * 1e-6), "DC offset"),
        (dict(audio=np.full(16000, np.nan)), "non-finite"),
        (dict(audio=speech[:800]), "ms long"),
        (dict(audio=np.stack([speech, speech])), r"shape \(2, 16000\).*channels-first"),
        (dict(sample_rate=True), "whole number of Hz"),
        (dict(sample_rate=16000.5), "whole number of Hz"),
        (dict(sample_rate=16), r"did you give kHz\? 16 kHz is 16000"),
        (dict(sample_rate=0), "at least 4000 Hz"),
        (dict(template=np.zeros((10, 3))), r"shape \(10, 3\)"),
        (dict(template=t.vertices.T), r"its transpose"),
        (dict(template=np.where(np.arange(t.V)[:, None] == 3, np.nan, t.vertices)), "non-finite"),
        (dict(template=t.vertices * 1000), "millimetres"),
        (dict(stage=3), "stage 3: expected 1 or 2"),
        (dict(stage=0), "stage 0"),
    ]
    for kw, message in cases:
        args = {"audio": speech, "sample_rate": 16000, "template": t, **kw}
        with pytest.raises(ValueError, match=message):
            moving.animate(args["audio"], args["sample_rate"], args["template"], stage=kw.get("stage"))
    with pytest.warns(UserWarning, match="very quiet"):
        moving.animate(speech * 3e-3, 16000)
    nm = copy.deepcopy(moving)
    nm.cfg = type(nm.cfg)(**{**nm.cfg.__dict__, "use_memory": False})
    with pytest.raises(ValueError, match="one stage"):
        nm.animate(speech, 16000, stage=2)


def test_sample_rate_in_khz_never_allocates(moving):
    """`True` and 16 (kHz) used to make hours of animation; they are rejected before resampling."""
    import tracemalloc
    tracemalloc.start()
    for bad in (True, 16):
        with pytest.raises(ValueError):
            moving.animate(np.ones(59000, np.float32) * np.sin(np.arange(59000)), bad)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 50e6


def test_audio_features_do_not_depend_on_the_batch(smoke_ds, tiny):
    """A clip's encoder features are the same alone and inside a padded batch (GroupNorm over time)."""
    ds = FaceDataset(smoke_ds.sequences("train"), 3)
    items = [ds[i] for i in (0, 5)]
    enc = tiny.audio_encoder.eval()
    both = collate(items)
    alone = collate(items[:1])
    with torch.no_grad():
        h2 = enc(both["audio"], both["audio_mask"].sum(1), both["n_frames"])
        h1 = enc(alone["audio"], alone["audio_mask"].sum(1), alone["n_frames"])
    T = int(alone["n_frames"][0])
    assert torch.allclose(h1[0, :T], h2[0, :T], atol=1e-4)


def test_prediction_does_not_depend_on_the_batch(smoke_ds, tiny):
    """A clip animated alone (no padding mask) equals the same clip inside a padded batch, in both stages."""
    ds = FaceDataset(smoke_ds.sequences("train"), 3)
    items = sorted([ds[i] for i in (0, 5)], key=lambda it: -len(it["audio"]))
    m = copy.deepcopy(tiny).eval()
    torch.manual_seed(1)
    torch.nn.init.normal_(m.out.weight, std=1.0)               # a non-zero output layer, so decoding matters
    both, alone = collate(items), collate(items[1:])           # the shorter clip is padded in `both`
    assert not bool(both["frame_mask"].all())
    T = int(alone["n_frames"][0])
    for stage in (1, 2):
        p2 = m.predict_batch(both, stage=stage)
        p1 = m.predict_batch(alone, stage=stage)
        assert torch.allclose(p1[0, :T], p2[1, :T], atol=1e-5), stage


def test_style_encoder_conv_bank_reflect_pads_each_kernel():
    """The conv bank pads once for all kernels; each conv must see exactly its own reflect padding."""
    import torch.nn.functional as F
    from mtk.stylize import SpeakerEncoder, StyleConfig, _conv_bank, _same_pad

    enc = SpeakerEncoder(StyleConfig.default())
    for frames in (50, 3):                                     # 3 frames: too short to reflect, replicate instead
        x = torch.randn(2, 80, frames)
        pads = [_same_pad(conv.kernel_size[0]) for conv in enc.bank]
        ref = torch.cat([F.relu(conv(F.pad(x, p, mode="reflect" if frames > max(p) else "replicate")))
                         for conv, p in zip(enc.bank, pads)] + [x], dim=1)
        out = _conv_bank(x, enc.bank)
        assert out.shape == (2, 64 * 8 + 80, frames)
        assert torch.allclose(out, ref, atol=1e-6)


def test_residual_style_starts_exactly_at_stage_1_and_stays_bounded(smoke_ds, batch):
    """StyleConfig(weights="residual"): w_s = 1 at the first stage-2 step, so stage 2 predicts exactly what
    stage 1 did; the released Eq. 15 does not (control). Every residual weight stays in (0, 2)."""
    from dataclasses import replace
    from mtk.stylize import StyleConfig, slot_weights
    cfg = ModelConfig.smoke(smoke_ds.template.V * 3)
    args = (batch["audio"], batch["audio_mask"].sum(1), batch["n_frames"], batch["template"])
    preds = {}
    for form in ("released", "residual"):
        torch.manual_seed(0)
        m = MemoryTalker(replace(cfg, style=replace(cfg.style, weights=form, mel_norm="dataset")),
                         smoke_ds.template.mask("lips"))
        torch.nn.init.normal_(m.out.weight, std=0.02)          # so the prediction depends on the memory read
        m.prepare_stage(2, smoke_ds.sequences("train"))
        m.eval()
        preds[form] = (m.predict(*args, stage=1), m.predict(*args, stage=2))
    assert torch.equal(*preds["residual"])
    assert not torch.allclose(*preds["released"], atol=1e-4)
    psi = torch.nn.Linear(16, 1, bias=False)
    torch.nn.init.normal_(psi.weight, std=10.0)
    f = 1e4 * torch.randn(64, 16)
    with torch.no_grad():
        w = slot_weights(f, psi, "residual")
        assert float(w.min()) >= 0 and float(w.max()) <= 2
        assert float(slot_weights(f, psi, "released").abs().max()) > 100      # Eq. 15 is unbounded
    with pytest.raises(ValueError, match="weights.*'released' or 'residual'.*'sigmoid'"):
        StyleConfig(weights="sigmoid")


def test_dataset_mel_norm_standardises_the_training_clips(smoke_ds):
    """StyleConfig(mel_norm="dataset"): after stage 2's preparation the training clips' log-mels have zero
    mean and unit std in every bin; the statistics are buffers, so they travel with the weights."""
    from dataclasses import replace
    from mtk.stylize import StyleEncoder, StyleConfig
    enc = StyleEncoder(8, replace(StyleConfig.smoke(), mel_norm="dataset"))
    train = smoke_ds.sequences("train")
    raw = torch.cat([enc.clip_mel(torch.as_tensor(s.audio()))[0] for s in train], 1)
    assert float(raw.std(1).min()) > 3                                  # dB log-mels: far from standardised
    enc.fit_mel_stats([torch.as_tensor(s.audio()) for s in train])
    mels = torch.cat([enc.clip_mel(torch.as_tensor(s.audio()))[0] for s in train], 1)   # (n_mels, frames)
    assert torch.allclose(mels.mean(1), torch.zeros(mels.shape[0]), atol=1e-3)
    assert torch.allclose(mels.std(1), torch.ones(mels.shape[0]), atol=1e-3)
    assert {"mel_mean", "mel_std"} <= set(enc.state_dict())


def test_mel_filters_are_torchaudios_htk_triangles():
    """The style encoder's mel filters (transformers' `mel_filter_bank`) equal torchaudio's `melscale_fbanks`
    defaults, which the released code uses, written out here: HTK mel points, unnormalised triangles."""
    import math

    from mtk.stylize import mel_filterbank
    n_freqs, n_mels, sr = 201, 80, 16000
    mel = lambda f: 2595.0 * math.log10(1.0 + f / 700.0)                        # noqa: E731
    pts = [700.0 * (10 ** (m / 2595.0) - 1.0) for m in np.linspace(0.0, mel(sr / 2), n_mels + 2)]
    freqs = np.linspace(0, sr // 2, n_freqs)
    want = np.zeros((n_freqs, n_mels))
    for j in range(n_mels):
        lo, mid, hi = pts[j:j + 3]
        want[:, j] = np.clip(np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)), 0, None)
    got = mel_filterbank(n_freqs, n_mels, sr)
    assert got.dtype == torch.float32 and got.shape == (n_freqs, n_mels)
    np.testing.assert_allclose(got.numpy(), want, atol=1e-5)
