"""The VOCASET loader on a small fixture written in the real FaceFormer-processed layout."""
import pickle
import warnings

import numpy as np
import pytest
import soundfile as sf
import torch

from mtk.data import (VOCASET, VOCASET_KNOWN_MISSING, VOCASET_SENTENCES, VOCASET_SUBJECTS, FaceDataset, collate,
                      load_audio)

V = 12                      # a tiny stand-in for FLAME's 5,023 vertices


def write_vocaset(root, skip=(), extra_missing=()):
    rng = np.random.default_rng(0)
    (root / "vertices_npy").mkdir(parents=True)
    (root / "wav").mkdir()
    templates = {s: rng.normal(size=(V, 3)).astype(np.float32) * 0.1
                 for subs in VOCASET_SUBJECTS.values() for s in subs}
    with open(root / "templates.pkl", "wb") as f:
        pickle.dump(templates, f)
    for split, subs in VOCASET_SUBJECTS.items():
        for s in subs:
            for k in VOCASET_SENTENCES[split]:
                name = f"{s}_sentence{k:02d}"
                if name in skip or name in extra_missing:
                    continue
                T60 = 12 + k % 5
                np.save(root / "vertices_npy" / f"{name}.npy",
                        (templates[s].reshape(-1) + rng.normal(size=(T60, V * 3)) * 1e-3).astype(np.float64))
                # VOCASET's wavs are not 16 kHz: write 22,050 Hz
                sf.write(root / "wav" / f"{name}.wav", rng.normal(size=int(22050 * T60 / 60)) * 0.1, 22050)
    return templates


def test_loads_the_standard_split_and_skips_known_missing(tmp_path):
    write_vocaset(tmp_path, skip=VOCASET_KNOWN_MISSING)
    with pytest.warns(UserWarning, match="skipping 7 known-missing") as rec:
        ds = VOCASET(tmp_path)
    assert "FaceTalk_170809_00138_TA_sentence32" in str(rec[0].message)
    assert [len(ds.sequences(s)) for s in ("train", "val", "test")] == [314, 40, 39]    # as in the field
    seq = ds.sequences("test")[0]
    v = seq.vertices()
    raw = np.load(tmp_path / "vertices_npy" / f"{seq.name}.npy")
    assert v.shape == (len(raw[::2]), V, 3) and v.dtype == np.float32          # 60 -> 30 fps
    np.testing.assert_allclose(v.reshape(len(v), -1), raw[::2], rtol=1e-6)
    a = seq.audio()
    assert a.dtype == np.float32 and abs(len(a) - len(raw) / 60 * 16000) <= 2  # resampled to 16 kHz
    assert seq.speaker == -1
    item = FaceDataset(ds.sequences("train"), 8)[0]
    assert item["one_hot"].sum() == 1 and (item["phonemes"] == -1).all()
    batch = collate([FaceDataset(ds.sequences("train"), 8)[i] for i in range(3)])
    T = int(batch["n_frames"].max())
    assert batch["vertices"].shape == (3, T, V * 3) and batch["frame_mask"].sum() == batch["n_frames"].sum()
    assert batch["audio"].shape[0] == 3 and batch["audio_mask"].dtype == torch.bool


def test_vertex_files_are_memory_mapped(tmp_path, monkeypatch):
    write_vocaset(tmp_path, skip=VOCASET_KNOWN_MISSING)
    calls = []
    real_load = np.load

    def spy(path, *a, **kw):
        calls.append(kw.get("mmap_mode"))
        return real_load(path, *a, **kw)
    monkeypatch.setattr(np, "load", spy)
    with pytest.warns(UserWarning):
        ds = VOCASET(tmp_path)
    ds.sequences("train")[0].vertices()
    assert calls and all(m == "r" for m in calls)


def test_incomplete_directory_lists_what_is_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing: .*vertices_npy.*wav.*templates.pkl"):
        VOCASET(tmp_path)
    write_vocaset(tmp_path, skip=VOCASET_KNOWN_MISSING, extra_missing={"FaceTalk_170725_00137_TA_sentence05"})
    with pytest.warns(UserWarning):
        with pytest.raises(FileNotFoundError, match="FaceTalk_170725_00137_TA_sentence05"):
            VOCASET(tmp_path)
    with pytest.warns(UserWarning) as rec:
        ds = VOCASET(tmp_path, strict=False)
    assert any("1 sequences missing" in str(w.message) and "00137_TA_sentence05" in str(w.message) for w in rec)
    assert len(ds.sequences("train")) == 313


def test_malformed_vertex_file_names_file_and_shape(tmp_path):
    write_vocaset(tmp_path, skip=VOCASET_KNOWN_MISSING)
    bad = tmp_path / "vertices_npy" / "FaceTalk_170728_03272_TA_sentence03.npy"
    np.save(bad, np.zeros((10, V * 3 - 1)))
    with pytest.raises(ValueError, match=rf"sentence03.npy: vertex array has shape \(10, {V * 3 - 1}\), "
                                          rf"expected \(T>=2, {V * 3}\)"):
        VOCASET(tmp_path)
    bad.write_bytes(b"not a numpy file")
    with pytest.raises(ValueError, match="sentence03.npy: unreadable vertex file"):
        VOCASET(tmp_path)


def test_audio_is_resampled_and_downmixed(tmp_path):
    sr = 44100
    t = np.arange(sr) / sr
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 440 * t) * 0.5], 1)
    sf.write(tmp_path / "s.wav", stereo, sr)
    x = load_audio(tmp_path / "s.wav")
    assert x.ndim == 1 and x.dtype == np.float32 and abs(len(x) - 16000) <= 1
    assert np.abs(x).max() == pytest.approx(0.75, abs=0.02)                   # the mean of the two channels
    (tmp_path / "junk.wav").write_bytes(b"RIFF....")
    with pytest.raises(ValueError, match="junk.wav: cannot read audio"):
        load_audio(tmp_path / "junk.wav")
    with pytest.raises(FileNotFoundError, match="nope.wav"):
        load_audio(tmp_path / "nope.wav")


# --------------------------------------------------------------------------- malformed VOCASET files
NAME = "FaceTalk_170725_00137_TA_sentence05"                      # a training clip of the fixture


def _open(root, **kw):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="VOCASET: skipping")
        return VOCASET(root, **kw)


@pytest.fixture
def voca(tmp_path):
    write_vocaset(tmp_path, skip=VOCASET_KNOWN_MISSING)
    return tmp_path


def test_bad_vertex_files_are_rejected_naming_the_file(voca):
    npy = voca / "vertices_npy" / f"{NAME}.npy"
    good = np.load(npy)
    bad_first = good.copy()
    bad_first[0, 4] = np.nan
    np.save(npy, bad_first)
    with pytest.raises(ValueError, match=f"{NAME}.npy: the first frame has NaN"):
        _open(voca)
    np.save(npy, good * 1000)                                          # millimetres
    with pytest.raises(ValueError, match=f"{NAME}.npy: .*look like millimetres"):
        _open(voca)
    np.save(npy, np.array([["a"] * (V * 3)] * 14))                     # a string-dtype array
    with pytest.raises(ValueError, match=f"{NAME}.npy: vertex array has dtype <U1, expected floats"):
        _open(voca)
    bad_later = good.copy()
    bad_later[2, 0] = np.inf                                           # found when the clip is read
    np.save(npy, bad_later)
    seq = next(s for s in _open(voca).sequences("train") if s.name == NAME)
    with pytest.raises(ValueError, match=f"{NAME}.npy: 1 vertex coordinates are NaN or infinite"):
        seq.vertices()


def test_bad_wavs_are_rejected_naming_the_file(voca):
    wav = voca / "wav" / f"{NAME}.wav"
    T60 = len(np.load(voca / "vertices_npy" / f"{NAME}.npy"))
    sf.write(wav, np.zeros(0), 22050)
    with pytest.raises(ValueError, match=f"{NAME}.wav: the audio file holds no samples"):
        _open(voca)
    sf.write(wav, np.zeros(int(22050 * (T60 / 60 + 0.8))), 22050)     # 0.8 s longer than the vertices
    with pytest.raises(ValueError, match=f"{NAME}.wav: .* expected them to agree within 0.5 s"):
        _open(voca)
    sf.write(wav, np.zeros(int(22050 * (T60 / 60 + 0.2))), 22050)     # 0.2 s: a warning naming the clip
    with pytest.warns(UserWarning, match=f"differ by more than 0.1 s in 1 clips: \\['{NAME} \\(0.20 s\\)'\\]"):
        _open(voca)
    sf.write(wav, np.full(int(22050 * T60 / 60), np.nan), 22050, subtype="FLOAT")
    seq = next(s for s in _open(voca).sequences("train") if s.name == NAME)
    with pytest.raises(ValueError, match=f"{NAME}.wav: .* audio samples are NaN or infinite"):
        seq.audio()


def test_bad_templates_pkl_is_rejected_naming_the_subject(voca):
    pkl = voca / "templates.pkl"
    templates = pickle.loads(pkl.read_bytes())
    for bad, message in (({}, r"holds dict \(empty\); expected a dict"), ([1, 2], "holds list")):
        pkl.write_bytes(pickle.dumps(bad))
        with pytest.raises(ValueError, match=message):
            _open(voca)
    first = VOCASET_SUBJECTS["train"][0]                               # the subject the base template is taken from
    for subject in (first, VOCASET_SUBJECTS["test"][1]):
        broken = dict(templates)
        broken[subject] = np.zeros((V + 1, 3))
        pkl.write_bytes(pickle.dumps(broken))
        with pytest.raises(ValueError, match=rf"\['{subject}'\] has shape \({V + 1}, 3\), expected \({V}, 3\)"):
            _open(voca)
    broken = dict(templates)
    broken[first] = templates[first] * 1000
    pkl.write_bytes(pickle.dumps(broken))
    with pytest.raises(ValueError, match=rf"\['{first}'\] spans .* millimetres"):
        _open(voca)


def test_vocaset_without_phonemes_or_masks_stops_before_any_training(voca, monkeypatch):
    """Real VOCASET has no phoneme labels: phoneme pretraining never runs on it (it once ran with loss NaN
    and was cached as 'pretrained'), and a template without region masks names the file to add."""
    from mtk import audio, recipes

    def no_work(*a, **k):
        raise AssertionError("nothing may be pretrained or trained on this dataset")
    monkeypatch.setattr(audio, "pretrain_on_phonemes", no_work)
    monkeypatch.setattr(recipes, "fit", no_work)
    ds = _open(voca)
    assert not ds.has_phonemes
    for preset in ("smoke", "default", "paper"):
        with pytest.raises(ValueError, match=r"no lips or upper_face region.*FLAME_masks.pkl"):
            recipes.memorytalker(preset, ds)
    lips = {"lips": np.arange(4), "upper_face": np.arange(8, 12)}
    ds.template.masks.update(lips)                                      # masks present: now the phonemes
    for preset in ("smoke", "default"):
        with pytest.raises(ValueError, match="has none \\(VOCASET has no phoneme alignment\\). Use preset 'paper'"):
            recipes.memorytalker(preset, ds)
    monkeypatch.undo()
    with pytest.raises(ValueError, match="has no phoneme labels"):
        audio.pretrain_on_phonemes(ds, audio.AudioConfig.smoke(), voca / "never")
    assert not (voca / "never").exists()


def test_run_identity_of_a_vocaset_does_not_depend_on_its_path(voca, tmp_path_factory):
    import shutil
    other = tmp_path_factory.mktemp("moved") / "vocaset"
    shutil.copytree(voca, other)
    assert _open(voca).key == _open(other).key
    np.save(other / "vertices_npy" / f"{NAME}.npy", np.load(other / "vertices_npy" / f"{NAME}.npy")[:-2])
    assert _open(voca).key != _open(other).key
