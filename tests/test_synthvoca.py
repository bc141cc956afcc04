import json

import numpy as np
import pytest

from mtk.data import VOCASET, SynthVOCA, collate, export_vocaset_layout, FaceDataset
from mtk.synthvoca import SynthConfig, generate, make_speakers, style_audibility


def test_same_seed_same_data(tmp_path, smoke_ds):
    again = SynthVOCA(generate(SynthConfig.smoke(), root=tmp_path / "again", progress=False))
    a, b = smoke_ds.sequences("all", "all"), again.sequences("all", "all")
    assert [s.name for s in a] == [s.name for s in b]
    for x, y in zip(a[::5], b[::5]):
        np.testing.assert_array_equal(x.audio(), y.audio())
        np.testing.assert_array_equal(x.vertices(), y.vertices())
        assert x.phoneme_intervals == y.phoneme_intervals
    other = make_speakers(SynthConfig.smoke(seed=1))
    assert [s.z for s in other] != [s.z for s in again.speakers]


def test_splits_mirror_vocaset(smoke_ds):
    cfg = SynthConfig.default()
    assert (cfg.n_train, cfg.n_val, cfg.n_test, cfg.sentences_per_speaker) == (8, 2, 2, 40)
    train, test = smoke_ds.sequences("train"), smoke_ds.sequences("test")
    n = smoke_ds.config["sentences_per_speaker"]
    assert {s.subject for s in train}.isdisjoint({s.subject for s in test})      # test speakers unseen
    assert all(s.sentence > n // 2 for s in test)                                    # like VOCASET 21-40
    assert all(s.sentence <= n // 2 for s in smoke_ds.sequences("test", "reference"))
    assert all(s.speaker == -1 for s in test) and {s.speaker for s in train} == {0, 1, 2}
    # partial overlap: the shared sentences are read by every speaker
    texts = {}
    for s in smoke_ds.sequences("all", "all"):
        texts.setdefault(s.text, set()).add(s.subject)
    shared = [t for t, subs in texts.items() if len(subs) == len(smoke_ds.speakers)]
    assert len(shared) == smoke_ds.config["shared_sentences"]


def test_motion_is_lip_sized_and_synced(smoke_ds):
    t = smoke_ds.template
    s = smoke_ds.sequences("train")[0]
    v = s.vertices()                                                          # (T, V, 3)
    assert v.dtype == np.float32 and abs(len(v) - len(s.audio()) / 16000 * 30) < 1.0
    disp = np.linalg.norm(v - s.template.vertices, axis=2)                    # metres
    lips = disp[:, t.mask("lips")]
    assert 0.005 < lips.max() < 0.04                                          # millimetres to a few cm
    assert disp[:, t.mask("upper_face")].max() > 0.001                         # brows and blinks move
    assert disp[:, t.mask("lips")].mean() > 3 * disp[:, t.mask("upper_face")].mean()
    # the mouth is more open during open vowels than during bilabials
    from mtk.articulation import PHONEMES
    lab = np.array(PHONEMES)[s.phoneme_labels(len(v))]
    gap = v[:, t.landmarks["upper_lip_mid"], 1] - v[:, t.landmarks["lower_lip_mid"], 1]
    for seq in smoke_ds.sequences("train"):
        vv = seq.vertices()
        lab = np.array(PHONEMES)[seq.phoneme_labels(len(vv))]
        gap = vv[:, t.landmarks["upper_lip_mid"], 1] - vv[:, t.landmarks["lower_lip_mid"], 1]
        if np.isin(lab, ["p", "b", "m"]).any() and np.isin(lab, ["a", "A:", "aI", "aU", "V"]).any():
            assert gap[np.isin(lab, ["p", "b", "m"])].min() < gap[np.isin(lab, ["a", "A:", "aI", "aU", "V"])].max()
            break
    else:
        pytest.fail("no smoke clip has both a bilabial and an open vowel")


def test_true_style_is_saved(smoke_ds):
    meta = json.loads((smoke_ds.root / "meta.json").read_text())
    spk = meta["speakers"][0]
    assert set(spk["z"]) >= {"effort", "rate", "round", "stiffness", "asym"}
    vec = smoke_ds.style(spk["name"])
    assert vec.ndim == 1 and vec[0] == pytest.approx(spk["z"]["effort"])


def test_coupling_knob_controls_audibility():
    """At coupling 0 the audible factors cannot be predicted from audio (R^2 <= chance); at 1 they can."""
    none, full = style_audibility(0.0), style_audibility(1.0)
    assert max(none.values()) < 0.1
    assert full["effort"] > 0.6 and full["rate"] > 0.5
    assert np.mean(list(full.values())) > np.mean(list(none.values())) + 0.5


def test_bad_config():
    with pytest.raises(ValueError, match="coupling = 1.5"):
        SynthConfig(coupling=1.5)


def test_export_to_vocaset_layout_reads_back_identically(smoke_ds, tmp_path):
    out = export_vocaset_layout(smoke_ds.root, tmp_path / "voca")
    subjects = {sp: smoke_ds.subjects(sp) for sp in ("train", "val", "test")}
    n = smoke_ds.config["sentences_per_speaker"]
    sentences = {"train": range(1, n + 1), "val": range(n // 2 + 1, n + 1), "test": range(n // 2 + 1, n + 1)}
    voca = VOCASET(out, subjects=subjects, sentences=sentences)
    for split in ("train", "test"):
        a = {s.name: s for s in smoke_ds.sequences(split)}
        b = {s.name: s for s in voca.sequences(split)}
        assert a.keys() == b.keys()
        for name in list(a)[:3]:
            np.testing.assert_allclose(a[name].vertices(), b[name].vertices(), atol=1e-7)
            np.testing.assert_allclose(a[name].audio(), b[name].audio(), atol=1e-4)
            np.testing.assert_allclose(a[name].template.vertices, b[name].template.vertices)
    batch = collate([FaceDataset(voca.sequences("train"), len(voca.train_subjects))[i] for i in range(2)])
    assert batch["vertices"].shape[2] == smoke_ds.template.V * 3
