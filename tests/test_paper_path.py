"""The `paper` path as a VOCASET user takes it, on fixtures the test writes: a VOCASET-layout folder with region
masks (SynthVOCA's smoke data exported), a tiny HuBERT saved with `save_pretrained` standing in for a downloaded
facebook/hubert-base-ls960, the paper recipe with that folder as `pretrained`, one batch of each stage, and every
Table 1 metric (FID included) on the test split."""
import warnings
from dataclasses import replace

import numpy as np
import pytest

from mtk import recipes
from mtk.data import VOCASET, FaceDataset, export_vocaset_layout


@pytest.fixture(scope="module")
def voca(smoke_ds, tmp_path_factory):
    out = export_vocaset_layout(smoke_ds.root, tmp_path_factory.mktemp("voca") / "vocaset")
    n = smoke_ds.config["sentences_per_speaker"]
    subjects = {sp: smoke_ds.subjects(sp) for sp in ("train", "val", "test")}
    sentences = {"train": range(1, n + 1), "val": range(n // 2 + 1, n + 1), "test": range(n // 2 + 1, n + 1)}
    return VOCASET(out, subjects=subjects, sentences=sentences)


def one_batch(recipe):
    return replace(recipe, stage1=replace(recipe.stage1, epochs=1, max_batches=1),
                   stage2=replace(recipe.stage2, epochs=1, max_batches=1))


def test_paper_recipe_takes_a_local_encoder_folder_and_its_preset_settings_win(voca, hubert_folder):
    r = recipes.memorytalker("paper", voca, pretrained=str(hubert_folder))
    assert r.model.audio.pretrained == str(hubert_folder) and r.model.audio.kind == "hubert"
    assert (r.model.audio.mask_time_prob, r.model.audio.layerdrop) == (0.05, 0.1)          # the paper's settings
    with pytest.warns(UserWarning, match=r"mask_time_prob = 0.3; training uses the preset's mask_time_prob = 0.05"):
        model = recipes.build(r, voca)
    hf = model.audio_encoder.model.config
    assert (hf.mask_time_prob, hf.layerdrop, hf.hidden_dropout) == (0.05, 0.1, 0.1)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        recipes.memorytalker("paper", voca, pretrained=str(hubert_folder.parent / "absent"))
    with pytest.raises(ValueError, match="no config.json"):
        recipes.memorytalker("paper", voca, pretrained=str(hubert_folder.parent))
    with pytest.raises(ValueError, match="either pretrained= or audio="):
        recipes.memorytalker("paper", voca, pretrained=str(hubert_folder), audio=r.model.audio)


def test_paper_path_trains_both_stages_and_scores_every_table1_metric(voca, hubert_folder):
    r = one_batch(recipes.memorytalker("paper", voca, pretrained=str(hubert_folder)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)             # the folder's settings differ (tested above)
        model, out = recipes.load_or_train(r, voca, progress=False)
    assert len(out["history1"]["train"]) == len(out["history2"]["train"]) == 1
    assert len(out["history1"]["val"]) == 1                      # validation ran, capped like training
    res = recipes.evaluate(model, voca, "test")
    assert {"fve", "lve", "fid", "ldtw", "lip_max"} <= set(res.metrics), res.notes
    assert all(np.isfinite(v) for v in res.metrics.values())
    assert voca.extractor().n_vertices == voca.template.V          # the exported data's own extractor


def test_vocaset_fid_extractor_equals_a_fit_on_whole_meshes(voca, tmp_path, monkeypatch):
    """A folder without the kit's extractor gets one fitted on its training split and kept under runs/; fitting
    on lower-face vertices alone (to keep memory small) gives what a fit on whole meshes gives. (SynthVOCA's motion
    spans about 10 directions, so 8 components here; real VOCASET uses 16.)"""
    import shutil
    from mtk.metrics import MotionFeatureExtractor
    bare = tmp_path / "bare"
    shutil.copytree(voca.root, bare)
    (bare / "mtk_fid_extractor.npz").unlink()
    monkeypatch.setenv("MTK_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(VOCASET, "FID_COMPONENTS", 8)
    other = VOCASET(bare, subjects=voca.subjects_by_split, sentences=voca.sentence_ranges)
    ext = other.extractor()
    from mtk.paths import runs_dir
    assert (runs_dir() / "fid-extractors" / f"{other.key}.npz").exists() and str(runs_dir()).startswith(str(tmp_path))
    seqs = other.sequences("train")
    full = MotionFeatureExtractor.fit([s.vertices() for s in seqs], [s.template.vertices for s in seqs],
                                      other.template.mask("lower_face"), n_components=8)
    np.testing.assert_array_equal(ext.vertex_idx, full.vertex_idx)
    np.testing.assert_allclose(ext.components, full.components, atol=1e-9)
    np.testing.assert_allclose(ext.scale, full.scale, rtol=1e-9)
    v, t = seqs[0].vertices(), seqs[0].template.vertices
    np.testing.assert_allclose(ext.transform(v, t), full.transform(v, t), atol=1e-9)


def test_vocaset_clips_are_never_cached_whole(voca):
    assert FaceDataset(voca.sequences("train"), len(voca.train_subjects), cache=True)._cache is None


def test_short_clips_train_with_time_masking(smoke_ds, hubert_folder):
    """A clip shorter than one SpecAugment mask span (10 frames) trains: masking is skipped for it."""
    import torch
    from mtk.audio import AudioEncoder
    enc = AudioEncoder(recipes.pretrained_encoder(str(hubert_folder), recipes.AudioConfig.paper())).train()
    wave = torch.randn(1, 16000 * 8 // 30)                       # 8 frames of audio
    h = enc(wave, torch.tensor([wave.shape[1]]), torch.tensor([8]))
    assert h.shape[:2] == (1, 8) and torch.isfinite(h).all()


def test_a_config_field_added_later_leaves_earlier_run_keys_alone():
    """`layerdrop` was added to AudioConfig after runs were keyed on it: at its default it is not in the dict a
    key hashes, an older dict without it loads, and the paper preset (LayerDrop 0.1, as released) does carry it."""
    from mtk.audio import AudioConfig
    assert "layerdrop" not in AudioConfig.default().to_dict()
    assert AudioConfig.paper().to_dict()["layerdrop"] == 0.1
    assert AudioConfig.from_dict(AudioConfig.default().to_dict()) == AudioConfig.default()


def test_readme_vocaset_commands_run_on_the_fixture(voca, hubert_folder, tmp_path, monkeypatch, capsys):
    """The README's VOCASET commands, as written, with the fixture's paths in place of the README's, the CPU for
    the GPU, and one batch of one epoch per stage (the README's own quick-check flags)."""
    import re
    import shlex
    from pathlib import Path
    import soundfile as sf
    from mtk.__main__ import main
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    block = re.search(r"### VOCASET\n.*?```sh\n(.*?)```", readme, re.S).group(1)
    train_cmd, animate_cmd = [line for line in block.splitlines() if line.startswith("mtk ")]
    monkeypatch.setenv("MTK_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    swap = {"/data/vocaset": str(voca.root), "./hubert-base-ls960": str(hubert_folder), "--device cuda": "--device cpu"}
    for a, b in swap.items():
        assert a in train_cmd, a
        train_cmd = train_cmd.replace(a, b)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        main(shlex.split(train_cmd)[1:] + ["--epochs", "1", "--max-batches", "1"])
    out = capsys.readouterr().out
    run = re.search(r"--checkpoint (\S+)", out).group(1)
    assert (Path(run) / "model" / "config.json").exists() and (Path(run) / "stage1.json").exists()
    clip = voca.sequences("test")[0]
    sf.write(tmp_path / "speech.wav", clip.audio(), 16000)
    animate_cmd = re.sub(r"runs/memorytalker-paper-<key>", run, animate_cmd)
    main(shlex.split(animate_cmd)[1:])
    v = np.load(tmp_path / "face.npy")
    assert v.shape[1:] == (voca.template.V, 3) and (tmp_path / "face.mp4").stat().st_size > 0
    with pytest.raises(SystemExit, match="no trained model"):
        main(["animate", "speech.wav", "--checkpoint", str(Path(run).parent), "--out", "x.npy"])   # runs/, not a run
