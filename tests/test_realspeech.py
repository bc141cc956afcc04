"""Mouth checks on speech the kit did not synthesise (mtk.realspeech): the measures on constructed animations
with known answers, the shipped Festival clips, and a model animating one of them."""
import json
import shutil

import numpy as np
import pytest

from mtk import realspeech, shipped

FPS = 30


def _animation(template, gap_m: np.ndarray) -> np.ndarray:
    """(T, V, 3): the template with its lower-lip midpoint lowered by gap_m[t] (so the lip gap is the neutral
    gap plus gap_m[t])."""
    v = np.repeat(np.asarray(template.vertices)[None], len(gap_m), 0).copy()
    v[:, template.landmarks["lower_lip_mid"], 1] -= gap_m
    return v


def test_checks_on_an_animation_with_known_answers(smoke_ds):
    tpl = smoke_ds.sequences("train")[0].template
    neutral = (tpl.vertices[tpl.landmarks["upper_lip_mid"], 1] - tpl.vertices[tpl.landmarks["lower_lip_mid"], 1]) * 1e3
    # 1 s: pause 0-0.2 s, vowel 0.2-0.5, /m/ 0.5-0.6 (frames 15-17), vowel 0.6-0.9, pause 0.9-1.0
    phones = [(0.0, 0.2, "pau"), (0.2, 0.5, "aa"), (0.5, 0.6, "m"), (0.6, 0.9, "aa"), (0.9, 1.0, "pau")]
    t = np.arange(FPS) / FPS
    gap = np.where((t >= 0.2) & (t < 0.5) | (t >= 0.6) & (t < 0.9), 0.012, 0.002)     # 12 mm vowels, 2 mm rest
    gap[(t >= 0.5) & (t < 0.6)] = 0.003                                                 # the /m/: closing ...
    gap[16] = 0.0                                                                       # ... shut at one frame only
    sr = 16000
    amp = np.repeat(gap, sr // FPS + 1)[:sr]                                            # loudness follows the gap
    audio = amp * np.sin(2 * np.pi * 200 * np.arange(sr) / sr)
    c = realspeech.mouth_checks(_animation(tpl, gap), tpl, audio, sr, phones)
    assert c["pause_gap_mm"] == pytest.approx(neutral + 2.0, abs=1e-4)
    assert c["bilabial_gap_mm"] == pytest.approx(neutral, abs=1e-4) and c["bilabials"] == 1
    assert c["energy_corr"] > 0.99
    assert c["neutral_gap_mm"] == pytest.approx(neutral)
    assert c["pause_frames"] == int(((t < 0.2) | (t >= 0.9)).sum())
    # a mouth that stays open on the /m/ and opens in the pauses is seen as such
    bad = realspeech.mouth_checks(_animation(tpl, 0.012 - gap), tpl, audio, sr, phones)
    assert bad["bilabial_gap_mm"] == pytest.approx(neutral + 9.0, abs=1e-4) and bad["energy_corr"] < -0.99
    # espeak-ng's stress marks and pause symbols are read too; nothing to measure gives NaN, not an error
    es = realspeech.mouth_checks(_animation(tpl, gap), tpl, audio, sr, [(0.0, 0.5, "_:"), (0.5, 1.0, "'a")])
    assert es["pause_frames"] == 15 and es["bilabials"] == 0 and np.isnan(es["bilabial_gap_mm"])


def test_the_shipped_clips(tmp_path):
    clips = realspeech.clips()
    assert len(clips) == 4 and len({c.voice for c in clips}) == 2
    for c in clips:
        ends = [p[1] for p in c.phones]
        assert c.phones[0][0] == 0 and all(a[1] == b[0] for a, b in zip(c.phones, c.phones[1:]))     # contiguous
        assert abs(ends[-1] - len(c.audio) / c.sample_rate) < 0.05, c.name
        names = {p[2] for p in c.phones}
        assert names & realspeech.BILABIALS and names & realspeech.PAUSES, c.name
        assert np.sqrt(np.mean(c.audio ** 2)) > 0.01, c.name                         # speech, not silence
    with pytest.raises(FileNotFoundError, match="clips.json"):
        realspeech.clips(tmp_path)
    shutil.copytree(realspeech.VOICES_DIR, tmp_path / "v")
    meta = json.loads((tmp_path / "v" / "clips.json").read_text())
    meta["clips"][0]["phones"][1] = [0.5, 0.1, "b"]
    (tmp_path / "v" / "clips.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="festival_slt_1.*ending before they start"):
        realspeech.clips(tmp_path / "v")


def test_a_model_animates_a_festival_clip_and_is_checked(smoke_ds):
    """The shipped default MemoryTalker on a Festival clip (the notebook's check, on one clip): one frame per
    1/30 s, the lip gap and the energy measured on every frame, finite checks."""
    if not (shipped.folder("default") / "recipe.json").exists():
        pytest.skip("no trained default MemoryTalker ships with this checkout")
    model, _ = shipped.load("default")
    clip = realspeech.clips()[0]
    c = realspeech.clip_checks(model, clip)
    T = len(c["vertices"])
    assert abs(T - len(clip.audio) / clip.sample_rate * FPS) <= 1
    assert c["gap_mm"].shape == c["rms"].shape == (T,)
    assert all(np.isfinite(c[k]) for k in realspeech.CHECKS) and c["bilabials"] >= 5
    gt = realspeech.sequence_checks(smoke_ds.sequences("test")[0])          # SynthVOCA ground truth, same checks
    assert all(np.isfinite(gt[k]) for k in ("energy_corr", "pause_gap_mm"))
