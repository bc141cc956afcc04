"""The BIWI loader (`mtk.biwi`) on a fixture written in FaceFormer's processed BIWI layout: 14 speakers, 40
sentences, 25 fps; both test protocols, the regions and faces, and the errors a user meets first."""
import pickle

import numpy as np
import pytest
import soundfile as sf

from mtk.biwi import SENTENCES, TRAIN_SUBJECTS, UNSEEN_SUBJECTS
from mtk.data import BIWI, FaceDataset, collate, load_dataset

V = 30                       # a stand-in for BIWI's 23,370 vertices


def write_biwi(root, stem=lambda subject, k: f"{subject}_e{k:02d}", sentences=range(1, 41)):
    """Every speaker's sentences as FaceFormer's processing leaves them: 25 fps vertices, 44.1 kHz wavs (BIWI's
    rate), templates.pkl, CodeTalker's region files and one rigid scan with faces."""
    rng = np.random.default_rng(0)
    for sub in ("vertices_npy", "wav", "regions", "rigid_scans"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    templates = {s: (rng.normal(size=(V, 3)) * 0.05).astype(np.float32) for s in TRAIN_SUBJECTS + UNSEEN_SUBJECTS}
    with open(root / "templates.pkl", "wb") as f:
        pickle.dump(templates, f)
    for s, tmpl in templates.items():
        for k in sentences:
            T = 20 + k % 7                                                    # frames at 25 fps
            np.save(root / "vertices_npy" / f"{stem(s, k)}.npy", tmpl.reshape(-1) + rng.normal(size=(T, V * 3)) * 1e-3)
            sf.write(root / "wav" / f"{stem(s, k)}.wav", rng.normal(size=int(44100 * T / 25)) * 0.1, 44100)
    (root / "regions" / "lve.txt").write_text(", ".join(map(str, range(0, 8))))
    (root / "regions" / "fdd.txt").write_text("\n".join(map(str, range(20, 30))))
    (root / "rigid_scans" / "F2.obj").write_text("".join(f"v {x} {y} {z}\n" for x, y, z in templates["F2"])
                                                 + "f 1 2 3\nf 4/4/4 5/5/5 6/6/6 7/7/7\n")
    return templates


@pytest.fixture(scope="module")
def biwi_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("biwi")
    write_biwi(root)
    return root


def test_both_protocols_load_the_standard_split_at_25_fps(biwi_root):
    a, b = BIWI(biwi_root), BIWI(biwi_root, protocol="B")
    assert [len(a.sequences(s)) for s in ("train", "val", "test")] == [192, 24, 24]      # 6 x 32, 6 x 4, 6 x 4
    assert len(b.sequences("test")) == 32 and {s.subject for s in b.sequences("test")} == set(UNSEEN_SUBJECTS)
    assert {s.sentence for s in a.sequences("test")} == set(SENTENCES["test"]) == {37, 38, 39, 40}
    assert {s.sentence for s in a.sequences("val")} == {33, 34, 35, 36}
    assert a.fps == 25 and repr(a).startswith("BIWI-Test-A(") and repr(b).startswith("BIWI-Test-B(")
    seen, unseen = a.sequences("test")[0], b.sequences("test")[0]
    assert seen.speaker == TRAIN_SUBJECTS.index(seen.subject) and unseen.speaker == -1   # Test-A: seen speakers
    raw = np.load(biwi_root / "vertices_npy" / f"{seen.name}.npy")
    v = seen.vertices()
    assert v.shape == (len(raw), V, 3)                                      # every frame: 25 fps, not [::2]
    np.testing.assert_allclose(v.reshape(len(v), -1), raw, rtol=1e-6)
    assert abs(len(seen.audio()) - len(raw) / 25 * 16000) <= 2             # 44.1 kHz -> 16 kHz
    assert list(a.template.mask("lips")) == list(range(8)) and list(a.template.mask("upper_face")) == list(range(20, 30))
    assert a.template.faces.tolist() == [[0, 1, 2], [3, 4, 5], [3, 5, 6]]   # the quad fanned into two triangles
    batch = collate([FaceDataset(a.sequences("train"), 6)[i] for i in range(2)])
    assert batch["vertices"].shape[2] == V * 3 and batch["one_hot"].shape == (2, 6)
    assert a.key.startswith("biwi-") and a.key == BIWI(biwi_root).key
    assert isinstance(load_dataset(biwi_root, progress=False), BIWI)      # a BIWI folder is recognised by path


def test_plain_sentence_names_load_too_and_a_missing_clip_is_named(tmp_path):
    write_biwi(tmp_path, stem=lambda s, k: f"{s}_{k:02d}")                  # F2_01.wav rather than F2_e01.wav
    assert len(BIWI(tmp_path).sequences("train")) == 192
    (tmp_path / "wav" / "M4_07.wav").unlink()
    with pytest.raises(FileNotFoundError, match=r"BIWI at .*: 1 sequences missing: \['M4_07'\]"):
        BIWI(tmp_path)
    with pytest.warns(UserWarning, match="M4_07"):
        assert len(BIWI(tmp_path, strict=False).sequences("train")) == 191


def test_bad_input_names_the_file_and_what_was_expected(biwi_root, tmp_path):
    with pytest.raises(ValueError, match="BIWI protocol 'C': expected 'A' .* or 'B'"):
        BIWI(biwi_root, protocol="C")
    with pytest.raises(FileNotFoundError, match="BIWI at .* is incomplete; missing: .*templates.pkl"):
        BIWI(tmp_path)
    write_biwi(tmp_path, sentences=range(1, 3))
    sf.write(tmp_path / "wav" / "F2_01.wav", np.zeros(100), 16000)          # a second file for F2 sentence 1
    with pytest.raises(ValueError, match="two files for F2 sentence 1: F2_01.wav and F2_e01.wav; expected one"):
        BIWI(tmp_path, strict=False)
    (tmp_path / "wav" / "F2_01.wav").unlink()
    (tmp_path / "regions" / "lve.txt").write_text("1, 2, 99")
    with pytest.raises(ValueError, match=r"lve.txt: 3 indices up to 99; expected indices of a 30-vertex mesh"):
        BIWI(tmp_path, strict=False)
    (tmp_path / "regions" / "lve.txt").write_text("lips: 1 2")
    with pytest.raises(ValueError, match="lve.txt: expected vertex indices .* found 'lips:'"):
        BIWI(tmp_path, strict=False)
    (tmp_path / "regions" / "lve.txt").write_text("1 2")
    np.save(tmp_path / "vertices_npy" / "F3_e01.npy", np.zeros((20, V * 3 + 3)))
    with pytest.raises(ValueError, match=r"F3_e01.npy: vertex array has shape \(20, 93\), expected \(T>=2, 90\) = "
                                         r"\(frames at 25 fps"):
        BIWI(tmp_path, strict=False)


def test_mtk_train_on_a_biwi_folder_trains_at_25_fps_and_scores_it(biwi_root, hubert_folder, tmp_path, monkeypatch,
                                                                    capsys):
    """What a BIWI user runs (README, "BIWI"): `mtk train --preset paper --data <folder> --pretrained <HuBERT>`;
    the model's periodic positional encoding spans one second of BIWI (25 frames), it predicts one frame per
    25 fps mesh frame, `mtk animate --checkpoint` animates at 25 fps, and the metrics score it (FID left out:
    BIWI's regions define no lower face)."""
    import re
    import warnings
    from pathlib import Path

    from mtk import recipes
    from mtk.__main__ import main
    from mtk.model import MemoryTalker
    monkeypatch.setenv("MTK_HOME", str(tmp_path / "home"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        main(["train", "--preset", "paper", "--data", str(biwi_root), "--pretrained", str(hubert_folder),
              "--device", "cpu", "--epochs", "1", "--max-batches", "1"])
    run = Path(re.search(r"--checkpoint (\S+)", capsys.readouterr().out).group(1))
    model = MemoryTalker.from_pretrained(run / "model")
    assert model.cfg.period == model.cfg.fps == 25
    ds = BIWI(biwi_root)
    seq = ds.sequences("test")[0]
    pred = recipes.predict(model, [seq], stage=2, n_train=6)[0]
    assert pred.shape == seq.vertices().shape                               # (T25, V, 3)
    from mtk.audio import frames_for
    from mtk.export import read_gltf
    import soundfile as sf
    sf.write(tmp_path / "speech.wav", seq.audio(), 16000)
    main(["animate", str(tmp_path / "speech.wav"), "--checkpoint", str(run), "--out", str(tmp_path / "face.npy"),
          str(tmp_path / "face.glb")])
    T = frames_for(len(seq.audio()), fps=25)                                # 25 fps from speech alone
    assert np.load(tmp_path / "face.npy").shape == (T, V, 3) and abs(T - len(seq.vertices())) <= 1
    assert read_gltf(tmp_path / "face.glb")[3] == 25
    res = recipes.evaluate(model, ds, "test")
    assert np.isfinite([res["fve"], res["lve"], res["fdd"]]).all() and res.info["n_sequences"] == 24
    assert "fid" not in res.metrics and any("fid omitted" in n for n in res.notes)
