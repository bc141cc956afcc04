import json
from pathlib import Path

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
    assert_lips_follow_phonemes(smoke_ds)


BILABIALS, OPEN_VOWELS = ["p", "b", "m"], ["a", "A:", "aI", "aU", "V"]


def lip_sync_lag(ds, shift: int = 0, max_lag: int = 8) -> tuple[int, float]:
    """The lag (frames) at which the lip gap best separates open vowels from bilabials, with the phoneme labels
    shifted by `shift` frames: -> (lag, separation in metres). Negative lag: the lips move before the sound."""
    from mtk.synthvoca.articulation import PHONEMES
    t = ds.template
    clips = []
    for seq in ds.sequences("all", "all"):
        v = seq.vertices()
        lab = np.roll(np.array(PHONEMES)[seq.phoneme_labels(len(v))], shift)
        clips.append((v[:, t.landmarks["upper_lip_mid"], 1] - v[:, t.landmarks["lower_lip_mid"], 1], lab))
    score = {}
    for lag in range(-max_lag, max_lag + 1):
        bil, opn = [], []
        for gap, lab in clips:
            g, la = np.roll(gap, -lag)[max_lag:-max_lag], lab[max_lag:-max_lag]   # gap at t + lag, label at t
            bil += list(g[np.isin(la, BILABIALS)])
            opn += list(g[np.isin(la, OPEN_VOWELS)])
        score[lag] = float(np.mean(opn) - np.mean(bil))
    best = max(score, key=score.get)
    return best, score[best]


def assert_lips_follow_phonemes(ds, shift: int = 0) -> None:
    """Open vowels open the mouth and bilabials close it, in sync with the sound: the best lag is 0 to 2 frames
    of anticipation (the generator's lead is 0-75 ms, mean 30 ms), and the gap differs by millimetres."""
    lag, separation = lip_sync_lag(ds, shift)
    assert -2 <= lag <= 0, f"the lips are {lag} frames off the phonemes"
    assert separation > 0.005, f"open vowels open the mouth only {separation * 1000:.1f} mm more than bilabials"


@pytest.mark.parametrize("shift", [-3, 3, 5])
def test_viseme_synchrony_check_fails_on_shifted_labels(smoke_ds, shift):
    """Negative control: the same check on phoneme labels shifted by a few frames must fail."""
    with pytest.raises(AssertionError, match="frames off the phonemes"):
        assert_lips_follow_phonemes(smoke_ds, shift)


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
    # what the models hear (normalised waveforms: no loudness) still carries effort through the spectral tilt
    normed = style_audibility(1.0, normalize=True)
    assert normed["effort"] > 0.6 and normed != full
    few = style_audibility(1.0, normalize=True, n_fit=8)                 # fitted on 8 speakers, scored on 28
    assert set(few) == set(full) and np.mean(list(few.values())) < np.mean(list(normed.values())) - 0.3
    with pytest.raises(ValueError, match="n_fit = 35: expected None or 2 to 34 of the 36 speakers"):
        style_audibility(1.0, n_fit=35)


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


GOLDEN = Path(__file__).parent / "golden"


def fingerprint(root) -> dict:
    """What a generated SynthVOCA holds, compactly: per clip its frame count and phoneme sequence (exact) and
    sums of its motion weights and audio (floats); the speakers' style vectors."""
    root = Path(root)
    meta = json.loads((root / "meta.json").read_text())
    clips = {}
    for s in meta["sequences"]:
        d = np.load(root / "seq" / f"{s['name']}.npz")
        W, a = d["weights"].astype(np.float64), d["audio"].astype(np.float64)
        clips[s["name"]] = {"frames_60fps": s["frames_60fps"], "text": s["text"],
                            "phonemes": " ".join(map(str, d["ph_name"])),
                            "floats": [W.sum(), np.abs(W).sum(), (W ** 2).sum(), a.std(), np.abs(a).mean(),
                                       float(d["ph_start"].sum()), float(d["ph_end"].sum())]}
    sp = np.load(root / "speakers.npz")
    return {"clips": clips, "style": sp["style"].astype(np.float64).ravel().tolist()}


@pytest.mark.parametrize("version", [1, 2])
def test_a_pinned_versions_data_never_change(version, smoke_ds, tmp_path):
    """A dataset's key names its content (config + generator version), not the generator's code, so a pinned
    version must keep generating what it generated when it was pinned (tests/golden/, recorded from the
    generator the kit's figures and shipped models were made with). A change that fails this belongs in a new
    version."""
    if smoke_ds.meta["config"]["version"] == version:
        root = smoke_ds.root
    else:
        root = generate(SynthConfig.smoke(version=version), root=tmp_path / f"v{version}", progress=False)
    assert json.loads((Path(root) / "meta.json").read_text())["config"]["version"] == version
    now, then = fingerprint(root), json.loads((GOLDEN / f"synthvoca-v{version}-smoke.json").read_text())
    assert now["clips"].keys() == then["clips"].keys()
    for name, c in then["clips"].items():
        n = now["clips"][name]
        assert (n["frames_60fps"], n["text"], n["phonemes"]) == (c["frames_60fps"], c["text"], c["phonemes"]), name
        np.testing.assert_allclose(n["floats"], c["floats"], rtol=1e-5, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(now["style"], then["style"], rtol=1e-6, atol=1e-9)


def test_every_version_is_pinned_and_the_default_is_the_newest():
    from mtk.synthvoca.generator import GENERATOR_VERSIONS
    assert sorted(GENERATOR_VERSIONS) == [1, 2]
    assert all((GOLDEN / f"synthvoca-v{v}-smoke.json").exists() for v in GENERATOR_VERSIONS)
    assert SynthConfig().version == SynthConfig.smoke().version == SynthConfig.many().version == 2
    # version 2 was pinned at its draft's revision 2: the keys that revision's data were written under stay valid
    assert SynthConfig.default().key() == "26c73976" and SynthConfig.smoke().key() == "fd585b68"


def test_unknown_generator_version_is_refused():
    with pytest.raises(ValueError, match=r"version = 7, expected one of \[1, 2\]"):
        SynthConfig(version=7)
    assert SynthConfig(version=1).key() != SynthConfig(version=1, seed=1).key()


def test_motion_report_matches_the_loaded_vertices(smoke_ds):
    """The report works from weights and basis fields; the same numbers from the vertices a user loads."""
    from mtk.synthvoca import motion_report
    from mtk.viz import mouth_opening
    rep = motion_report(smoke_ds.root, "train")
    seqs = smoke_ds.sequences("train")
    t = smoke_ds.template
    gap = np.concatenate([mouth_opening(s.vertices(), t) for s in seqs]) * 1000
    assert rep["frames"] == len(gap)
    np.testing.assert_allclose([rep["lip_gap"][k] for k in ("p0", "p50", "p99")],
                               [gap.min(), np.median(gap), np.percentile(gap, 99)], rtol=1e-4, atol=1e-4)
    assert rep["lip_gap"]["crossing"] == pytest.approx((gap < -1e-3).mean())      # crossed by more than 1 µm
    # principal components of the lower face's offsets, by SVD of the (frames, 3 V_lower) matrix itself
    lf = t.mask("lower_face")
    X = np.concatenate([(s.vertices() - s.template.vertices[None])[:, lf].reshape(len(s.vertices()), -1) for s in seqs])
    sv = np.linalg.svd(X - X.mean(0), compute_uv=False) ** 2
    n95 = int(np.searchsorted(np.cumsum(sv) / sv.sum(), 0.95) + 1)
    assert rep["n_pcs"] == n95
    np.testing.assert_allclose(rep["pc_shares"][:3], (sv / sv.sum())[:3], rtol=1e-3, atol=1e-6)
    e = rep["energy"]
    assert set(e) >= {"jaw", "round", "spread", "close", "cross"} and all(np.isfinite(list(e.values())))
    assert sum(v for k, v in e.items() if k != "cross") + e["cross"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="no clips of split 'nope'"):
        motion_report(smoke_ds.root, "nope")


def test_lip_contact_stops_the_lips_where_they_meet():
    """`lip_contact` only scales the closing fields down, and leaves no slit pair crossed; a closure demand
    closes the middle of the mouth; an overlap the closing fields did not make is refused."""
    from mtk.synthvoca import articulation as art
    from mtk.synthvoca.template import Template
    t = Template.procedural("smoke")
    D, g0 = art.contact_geometry(t, art.basis_fields(t))
    rng = np.random.default_rng(0)
    W = np.abs(rng.normal(0, 0.6, (200, len(art.BASIS))))
    W[:, 0] *= 0.05                                                         # jaw in radians
    closers = [art.BASIS.index(b) for b in art.CLOSERS]
    others = [k for k in range(len(art.BASIS)) if k not in closers]
    assert ((g0 + W @ D) < -1e-4).any()                                      # the raw weights cross the lips
    out = art.lip_contact(W, D, g0)
    g = g0 + out @ D
    assert g.min() > -1e-12 and np.allclose(out[:, others], W[:, others])
    ratio = out[:, closers] / W[:, closers]
    assert (ratio <= 1 + 1e-12).all() and np.allclose(ratio, ratio[:, :1])   # one factor per frame
    touching = (ratio[:, 0] < 1 - 1e-9)
    assert touching.any() and np.allclose(g[touching].min(1), 0, atol=1e-12)  # scaled frames touch somewhere
    sym = W.copy()                                                          # both halves of the lips alike
    for f in art.LIP_FIELDS:
        sym[:, art.BASIS.index(f"{f}_r")] = sym[:, art.BASIS.index(f"{f}_l")]
    shut = art.lip_contact(sym, D, g0, demand=np.ones(len(W)))
    mid = [D.shape[1] // 2 - 1, D.shape[1] // 2]
    gs = g0 + shut @ D
    assert gs.min() > -1e-12 and gs[:, mid].max() < 0.6e-3 and np.median(gs[:, mid]) < 0.2e-3   # shut, not crossed
    bad = W.copy()
    bad[0, 0] = -0.05                                                        # a jaw above the teeth meeting
    with pytest.raises(ValueError, match="lips already overlap by .* mm at frame 0"):
        art.lip_contact(bad, D, g0)


def test_version_2_lips_close_at_rest_and_on_bilabials_and_never_cross(tmp_path):
    """Over a whole generated version-2 dataset (every split, every clip, the 30 fps frames a user loads):
    no slit pair of the lips ever crosses, the lips are closed within 0.6 mm (at the middle of the mouth) during
    every bilabial (/p b m/) and the pauses that begin and end a clip."""
    from mtk.synthvoca.articulation import PAUSES, lip_pairs, strip_stress
    root = generate(SynthConfig.smoke(version=2), root=tmp_path / "v2", progress=False)
    ds = SynthVOCA(root)
    iu, il = lip_pairs(ds.template)
    mid = [len(iu) // 2 - 1, len(iu) // 2]
    worst, bilabial, edges = 0.0, [], []
    for split in ("train", "val", "test"):
        for s in ds.sequences(split):
            V = s.vertices()                                                 # (T, V, 3)
            g = V[:, iu, 1] - V[:, il, 1]                                    # (T, P) metres
            worst = min(worst, float(g.min()))
            t = np.arange(len(V)) / 30
            ph = s.phoneme_intervals
            for i, (a, b, name) in enumerate(ph):
                frames = (t >= a) & (t < b)
                if not frames.any():
                    continue
                if strip_stress(name)[0] in ("p", "b", "m"):
                    bilabial.append(float(g[frames][:, mid].max(1).min()))  # the most closed frame
                elif name in PAUSES and i in (0, len(ph) - 1):
                    edges.append(float(g[frames][:, mid].max()))
    assert worst > -1e-6, f"the lips cross by {-worst * 1000:.4f} mm"
    assert len(bilabial) > 20 and max(bilabial) < 0.6e-3, f"a bilabial leaves the lips {max(bilabial) * 1000:.2f} mm apart"
    assert edges and max(edges) < 0.6e-3


def test_many_protocol_has_many_speakers_few_sentences_and_vocasets_test_protocol(tmp_path):
    """`many`: at least 64 training speakers reading a few sentences, about the default's training size, at
    least 12 test speakers reading 40 (reference 1-20, evaluation 21-40); keys of earlier configs unchanged."""
    from mtk.synthvoca import assign_sentences
    from mtk.synthvoca.generator import speaker_number
    many, default = SynthConfig.many(), SynthConfig.default()
    spk = make_speakers(many)
    sent = assign_sentences(many, spk)
    n = {split: [len(sent[s.name]) for s in spk if s.split == split] for split in ("train", "val", "test")}
    assert len(n["train"]) >= 64 and len(n["test"]) >= 12 and set(n["test"]) == {40}
    assert 0.8 <= sum(n["train"]) / (default.n_train * default.sentences_per_speaker) <= 1.25
    assert len({speaker_number(s.name) for s in spk}) == len(spk)          # S101 is not S01 (clip seeds differ)
    assert SynthConfig.default(version=1).key() == "2996f705" and SynthConfig.smoke(version=1).key() == "20e91f92"   # a new field kept old keys
    from mtk.baselines.unitalker import second_dataset_config
    assert "train_sentences" not in default.fields() and "train_sentences" not in second_dataset_config("default")
    assert many.fields()["train_sentences"] == 4                            # ... and a recipe naming a dataset too
    with pytest.raises(ValueError, match="train_sentences = 50"):
        SynthConfig(train_sentences=50)
    # a small many-like dataset generates and loads with the same split protocol
    cfg = SynthConfig.smoke(name="few", n_train=8, train_sentences=2, shared_sentences=1)
    ds = SynthVOCA(generate(cfg, root=tmp_path / "few", progress=False))
    assert len(ds.sequences("train")) == 16 and len(ds.sequences("test")) == 2 * 3
    assert {s.sentence for s in ds.sequences("test")} == {4, 5, 6} and len(ds.sequences("test", "reference")) == 6


def test_load_dataset_names_the_presets():
    from mtk.data import load_dataset
    with pytest.raises(FileNotFoundError, match=r"dataset 'vocaset2': not a SynthVOCA preset \('default', 'vocaset', 'many'"):
        load_dataset("vocaset2")


def test_speaker_pool_gives_every_sweep_size_the_same_number_of_clips(tmp_path):
    """The nested pool: the first N training speakers' first total/N sentences are `total` clips for each N;
    a subset keeps the test speakers and files, names itself in its key, and refuses what it cannot give."""
    cfg = SynthConfig.speaker_pool(sizes=(2, 4), total=8, name="pool", resolution="smoke", max_words=7,
                                   sentences_per_speaker=6, n_val=1, n_test=2)
    assert cfg.train_sentences == (4, 4, 2, 2) and cfg.reads(0) == 4 and cfg.reads(None) == 6
    pool = SynthVOCA(generate(cfg, root=tmp_path / "pool", progress=False))
    assert SynthConfig(**pool.meta["config"]) == cfg                      # the tuple survives meta.json
    test = {s.name for s in pool.sequences("test")}
    for n in (2, 4):
        sub = pool.training_subset(n, 8 // n)
        tr = sub.sequences("train")
        assert len(tr) == 8 and len({s.subject for s in tr}) == n and sub.train_subjects == [s.subject for s in tr][::8 // n]
        assert {s.name for s in sub.sequences("test")} == test and sub.key == f"{pool.key}-train{n}x{8 // n}"
        assert len(sub.sequences("all", "all")) == 8 + len(pool.sequences("val", "all")) + len(pool.sequences("test", "all"))
    assert len(pool.sequences("train")) == 12                              # the pool itself is untouched
    with pytest.raises(ValueError, match="training speaker SynthVOCA_S03 reads 2 sentences, training_subset asked for 4"):
        pool.training_subset(4, 4)
    with pytest.raises(ValueError, match="the dataset has 4 training speakers"):
        pool.training_subset(5, 1)
    with pytest.raises(ValueError, match="train_sentences has 3 counts, expected one per training speaker"):
        SynthConfig(n_train=4, train_sentences=(2, 2, 2))


def test_version_2_effort_opens_open_vowels_most_and_sibilants_least():
    """Version 2: vocal effort reaches the jaw per viseme group (louder speech opens vowels more, most the open
    ones; the jaw stays high for sibilants). Between a quiet and a loud speaker who are otherwise the same, the
    jaw on /a/ grows by a larger factor than on /s/; in version 1 one gain scales both alike."""
    from dataclasses import replace
    from mtk.synthvoca import articulate
    from mtk.synthvoca import articulation as art
    from mtk.synthvoca.template import Template
    base = Template.procedural("smoke")
    contact = art.contact_geometry(base, art.basis_fields(base))
    spk = make_speakers(SynthConfig.smoke(version=2))[0]
    phonemes = [(0.0, 0.3, "_"), (0.3, 0.5, "s"), (0.5, 0.8, "'a"), (0.8, 1.0, "s"), (1.0, 1.3, "a"), (1.3, 1.6, "_")]

    def jaw(effort, version):
        z = {k: 0.0 for k in spk.z} | {"effort": effort}
        W = articulate(replace(spk, z=z, deviations=0 * spk.deviations), phonemes, 96, 60.0,
                       np.random.default_rng(0), noise=0.0, version=version, contact=contact)
        at = lambda t: W[int(t * 60), art.BASIS.index("jaw")]                      # noqa: E731
        return np.array([at(0.65), at(1.15)]), np.array([at(0.4), at(0.9)])         # open vowels, sibilants

    (a_q, s_q), (a_l, s_l) = jaw(-2.0, 2), jaw(2.0, 2)
    assert (a_l > a_q).all() and ((a_l / a_q) > 1.3 * (s_l / s_q)).all(), (a_l / a_q, s_l / s_q)
    (a_q, s_q), (a_l, s_l) = jaw(-2.0, 1), jaw(2.0, 1)
    np.testing.assert_allclose(a_l / a_q, s_l / s_q, rtol=0.1)       # version 1: coarticulation aside, one gain


def test_every_style_factor_is_labelled_timing_or_amplitude_and_a_drafts_key_names_its_revision(smoke_ds, monkeypatch):
    """Eq. 14 can express amplitude only, so the data say which factors are which; and a folder written by an
    older draft of a version was never taken for a newer draft's (the revision is in the key)."""
    from mtk.synthvoca import STYLE_FACTORS, STYLE_KINDS
    from mtk.synthvoca import generator
    assert set(STYLE_KINDS) == set(STYLE_FACTORS) and set(STYLE_KINDS.values()) <= {"amplitude", "timing", "timing and amplitude"}
    assert smoke_ds.meta["style_kinds"] == STYLE_KINDS
    v1, v2 = SynthConfig.smoke(version=1), SynthConfig.smoke(version=2)
    before = v2.key()
    monkeypatch.setitem(generator.KEY_REVISION, 2, generator.KEY_REVISION[2] + 1)
    assert v2.key() != before and v1.key() == SynthConfig.smoke(version=1).key() == "20e91f92"
