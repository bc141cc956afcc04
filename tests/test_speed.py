"""The training speed-ups are exact: cached CNN features and gradients equal the plain computation's, bit for
bit; length-grouped batches use every clip once and pad less than random ones."""
import numpy as np
import pytest
import torch

from mtk.audio import AudioConfig, AudioEncoder
from mtk.data import length_batches
from mtk.train import SpeakerPairBatches

torch.set_num_threads(1)


def _clips(seed=0):
    g = torch.Generator().manual_seed(seed)
    lens = [16000, 24000, 11000]
    audio = torch.zeros(3, max(lens))
    for i, n in enumerate(lens):
        audio[i, :n] = torch.randn(n, generator=g) * 0.1
    return audio, torch.tensor(lens), torch.tensor([30, 45, 21])


def _encoder(**kw):
    torch.manual_seed(0)
    return AudioEncoder(AudioConfig(**{**dict(hidden_size=32, num_hidden_layers=1, intermediate_size=64,
                                              conv_dim=(32,) * 7), **kw}))


def _grads(enc, audio, lens, frames, repeats=2):
    """Train-mode forward + backward `repeats` times (dropout seeded alike); -> (outputs, grads) of the last."""
    enc.train()
    for _ in range(repeats):
        enc.zero_grad(set_to_none=True)
        torch.manual_seed(1)
        out = enc(audio, lens, frames)
        (out ** 2).sum().backward()
    return out.detach(), {n: p.grad.clone() for n, p in enc.named_parameters() if p.grad is not None}


def test_speedups_are_exact_and_skip_the_cnn_backward():
    audio, lens, frames = _clips()
    on, off = _encoder(), _encoder().set_speedups(False)
    seen = {}
    for name, enc in (("on", on), ("off", off)):
        enc.model.feature_extractor.register_forward_hook(
            lambda m, a, o, name=name: seen.setdefault(name, []).append(o.requires_grad))
    out_on, g_on = _grads(on, audio, lens, frames)
    out_off, g_off = _grads(off, audio, lens, frames)
    assert torch.equal(out_on, out_off)
    assert g_on.keys() == g_off.keys() and g_on
    assert all(torch.equal(g_on[k], g_off[k]) for k in g_on)
    assert not any(n.startswith("model.feature_extractor.") for n in g_on)       # the CNN is frozen
    # off: transformers marks the waveform as needing a gradient, so the CNN's output carries one (and
    # backward runs through its convolutions); on: the CNN ran once per clip, then came from the cache
    assert seen["off"] == [True] * 6
    assert seen["on"] == [False] * 3 and len(on._cache) == 3


def test_cache_follows_the_weights_and_the_clip():
    audio, lens, frames = _clips()
    enc = _encoder().eval()
    a = enc.clip_features(audio[0, :lens[0]], 30)
    assert enc.clip_features(audio[0, :lens[0]], 30) is a                         # a hit
    assert enc.clip_features(audio[0, :lens[0]], 31).shape == (31, 32)           # frames are part of the key
    changed = audio[0, :lens[0]].clone()
    changed[100] += 0.5
    assert not torch.equal(enc.clip_features(changed, 30), a)                    # so are the samples
    state = {k: v * 1.5 if k.endswith("conv.weight") else v for k, v in enc.state_dict().items()}
    enc.load_state_dict(state)                                                   # new CNN weights: recomputed
    b = enc.clip_features(audio[0, :lens[0]], 30)
    assert not torch.equal(a, b)
    assert torch.equal(b, _plain(enc, audio[0, :lens[0]], 30))


def _plain(enc, wave, n_frames):
    enc.set_speedups(False)
    try:
        return enc.clip_features(wave, n_frames)
    finally:
        enc.set_speedups(True)


def test_no_cache_while_the_cnn_trains():
    audio, lens, frames = _clips()
    enc = _encoder(freeze_feature_encoder=False).train()
    out = enc(audio, lens, frames)
    assert out.requires_grad and not enc._cache
    out.sum().backward()
    assert enc.model.feature_extractor.conv_layers[0].conv.weight.grad is not None


def test_length_batches_use_every_clip_once_and_pad_less():
    rng = np.random.default_rng(0)
    lengths = rng.integers(20000, 80000, size=203).tolist()

    def padding(batches):
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)

    batches = length_batches(lengths, 4, torch.Generator().manual_seed(0))
    assert sorted(i for b in batches for i in b) == list(range(203))
    assert all(1 <= len(b) <= 4 for b in batches)
    assert batches == length_batches(lengths, 4, torch.Generator().manual_seed(0))       # seeded
    assert batches != length_batches(lengths, 4, torch.Generator().manual_seed(1))
    perm = torch.randperm(203, generator=torch.Generator().manual_seed(0)).tolist()
    random_batches = [perm[k:k + 4] for k in range(0, 203, 4)]
    assert padding(batches) < 0.2 * padding(random_batches)


def test_speaker_pairs_grouped_by_length_keep_pairs():
    rng = np.random.default_rng(1)
    speakers = [s for s in range(6) for _ in range(10)]
    lengths = rng.integers(20000, 80000, size=60).tolist()
    plain = SpeakerPairBatches(speakers, 4, seed=0)._batches()
    grouped = SpeakerPairBatches(speakers, 4, seed=0, lengths=lengths)._batches()
    for batches in (plain, grouped):
        assert sorted(i for b in batches for i in b) == list(range(60))
        for b in batches:
            assert all(speakers[b[k]] == speakers[b[k + 1]] for k in range(0, len(b), 2))
    # a speaker's clips share its speech rate: grouped by length, a batch must still hold two speakers
    # (else the in-batch triplet loss has no negative)
    slow = [lengths[i] + 100000 * (speakers[i] < 2) for i in range(60)]
    for batches in (grouped, SpeakerPairBatches(speakers, 4, seed=0, lengths=slow)._batches()):
        assert all(len({speakers[i] for i in b}) == 2 for b in batches)

    def padding(batches):
        return sum(max(lengths[i] for i in b) * len(b) - sum(lengths[i] for i in b) for b in batches)
    assert padding(grouped) < padding(plain)


@pytest.mark.parametrize("method", ["memorytalker", "faceformer"])
def test_bench_train_runs_both_arms(method, capsys, tmp_path):
    from mtk.bench import main
    assert main(["train", "--preset", "smoke", "--methods", method, "--per-speaker", "2", "--epochs", "1",
                 "--json", str(tmp_path / "rows.json")]) == 0
    import json
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert [r["stage"] for r in rows] == ([1, 2] if method == "memorytalker" else [1])
    assert all(r["on_steps_per_s"] > 0 and r["off_steps_per_s"] > 0 for r in rows)
    assert "speed-up" in capsys.readouterr().out


def test_bench_train_rejects_unknown_methods():
    from mtk.bench import main
    with pytest.raises(SystemExit):
        main(["train", "--methods", "facefromer"])


def test_bench_profile_names_the_stages(capsys):
    from mtk.bench import main
    with pytest.raises(SystemExit):
        main(["profile", "faceformer", "2", "--preset", "smoke"])
    assert "faceformer has no training stage 2; its stages: [1]" in capsys.readouterr().err
    assert main(["profile", "faceformer", "1", "--preset", "smoke", "--per-speaker", "2", "--ops", "3"]) == 0
    assert "backward" in capsys.readouterr().out


def test_style_encoder_mel_cache_is_exact():
    from mtk.stylize import StyleConfig, StyleEncoder
    audio, lens, _ = _clips()
    torch.manual_seed(0)
    on = StyleEncoder(8, StyleConfig.smoke())
    off = StyleEncoder(8, StyleConfig.smoke()).set_speedups(False)
    off.load_state_dict(on.state_dict())
    for _ in range(2):                                           # the second pass reads the cache
        grads = []
        for enc in (on, off):
            enc.zero_grad(set_to_none=True)
            f = enc.style(audio, lens)
            f.pow(2).sum().backward()
            grads.append((f.detach(), [p.grad.clone() for p in enc.parameters() if p.grad is not None]))
        assert torch.equal(grads[0][0], grads[1][0])
        assert all(torch.equal(a, b) for a, b in zip(grads[0][1], grads[1][1]))
    assert len(on._mel_cache) == 3 and not off._mel_cache
    # each clip is encoded on its own samples: padding the batch further changes nothing
    wider = torch.cat([audio, torch.zeros(3, 5000)], 1)
    assert torch.equal(off.style(wider, lens), off.style(audio, lens))


def test_reproduce_records_timings(tmp_path, monkeypatch):
    import csv

    from mtk.__main__ import record_timing
    monkeypatch.setenv("MTK_FIGURES", str(tmp_path))
    (tmp_path / "timings.csv").write_text("notebook,seconds,cores\n03_stage2_animating,300,2\n")   # no device column
    record_timing("02_stage1_memorizing", 61.4)
    record_timing("data", 12.0)
    path = record_timing("02_stage1_memorizing", 58.6, "cuda")         # a rerun replaces its own row only
    rows = list(csv.DictReader(open(path)))
    assert [r["notebook"] for r in rows] == ["data", "02_stage1_memorizing", "03_stage2_animating"]
    assert rows[1]["seconds"] == "59" and int(rows[1]["cores"]) >= 1
    assert [r["device"] for r in rows] == ["cpu", "cuda", "cpu"]        # older rows ran on the CPU
