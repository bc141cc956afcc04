"""The viewers and the own-recording demo, as a user calls them."""
import io

import numpy as np
import pytest
import soundfile as sf

from mtk import demo, viz
from mtk.configs import Config
from mtk.model import ModelConfig
from mtk.template import Template


@pytest.fixture(scope="module")
def head():
    return Template.procedural("smoke")


def test_k3d_face_and_compare_build_the_expected_objects(head):
    import k3d
    T = 5
    gt = np.repeat(head.vertices[None], T, 0)
    pred = gt + 0.001
    plot = viz.k3d_face(head, gt)
    assert type(plot).__name__ == "Plot" and len(plot.objects) == 1
    assert isinstance(plot.objects[0].vertices, dict) and len(plot.objects[0].vertices) == T   # a time series
    cmp = viz.k3d_compare(head, {"a": pred, "b": pred * 1.0}, gt=gt)
    meshes = [o for o in cmp.objects if isinstance(o, k3d.objects.Mesh)]
    assert len(meshes) == 3                                           # ground truth + two predictions
    att = meshes[1].attribute
    first = next(iter(att.values())) if isinstance(att, dict) else att
    np.testing.assert_allclose(first, np.sqrt(3) * 1.0, rtol=1e-4)   # |(1, 1, 1) mm| error everywhere
    assert list(meshes[1].color_range) == [0.0, 5.0]                  # fixed colour range
    html = cmp.get_snapshot()
    assert len(html) > 10000 and "K3D" in html


def test_player_and_set_frame(head):
    gt = np.repeat(head.vertices[None], 4, 0)
    plot = viz.k3d_face(head, gt)
    tone = 2.0 * np.sin(np.linspace(0, 200 * np.pi, 1600))              # peak 2: scaled for playback
    ui = viz.player(plot, 4, audio=tone)
    assert plot in ui.children
    wav, rate = sf.read(io.BytesIO(ui.children[-1].value))
    assert rate == 16000 and len(wav) == 1600
    np.testing.assert_allclose(wav, tone / 2.0, atol=1e-3)
    silent = viz.player(plot, 4, audio=np.zeros(1600))                 # an all-zero clip is fine too
    assert np.all(sf.read(io.BytesIO(silent.children[-1].value))[0] == 0)
    viz.set_frame(plot, 3)
    assert plot.time == pytest.approx(0.1)


def test_render_frames_draws_a_face(head):
    frames = list(viz.render_frames(head.vertices[None], head.faces, size=96))
    assert frames[0].shape == (96, 96, 3) and frames[0].dtype == np.uint8
    assert (frames[0] < 250).mean() > 0.15                             # not a blank image


def test_demo_writes_a_playable_mp4_with_sound(smoke_ds, tmp_path):
    from mtk import recipes
    model, _ = recipes.load_or_train(recipes.memorytalker("smoke", smoke_ds, progress=False), smoke_ds,
                                     progress=False)
    seq = smoke_ds.sequences("test")[0]
    a = seq.audio()
    wav = tmp_path / "in.wav"
    sf.write(wav, np.stack([a, a], 1), 44100)                          # stereo, another sample rate
    # (resampling 16 kHz audio written as 44.1 kHz plays it faster: a different, shorter clip)
    res = demo.animate_file(wav, [tmp_path / "o.mp4", tmp_path / "o.npy", tmp_path / "o.html"], model=model,
                            template=smoke_ds.template, progress=False, size=160)
    T = res["frames"]
    assert T == round(len(a) / 44100 * 30) or abs(T - len(a) / 44100 * 30) <= 1
    info = demo.probe(tmp_path / "o.mp4")
    assert info["has_video"] and info["has_audio"] and abs(info["frames"] - T) <= 1
    assert np.load(tmp_path / "o.npy").shape == (T, smoke_ds.template.V, 3)
    assert (tmp_path / "o.html").stat().st_size > 10000
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(ValueError, match="empty.wav"):
        demo.animate_file(tmp_path / "empty.wav", tmp_path / "x.npy", model=model, template=smoke_ds.template)
    sf.write(tmp_path / "quiet.wav", np.zeros(16000), 16000)
    with pytest.raises(ValueError, match="quiet.wav: audio is silent"):
        demo.animate_file(tmp_path / "quiet.wav", tmp_path / "x.npy", model=model, template=smoke_ds.template)
    with pytest.raises(ValueError, match="unsupported output"):
        demo.animate_file(wav, tmp_path / "x.gif", model=model, template=smoke_ds.template)


def test_configs_round_trip():
    cfg = ModelConfig.smoke(300, n_slots=12)
    back = ModelConfig.from_dict(cfg.to_dict())
    assert back == cfg and isinstance(back.audio.conv_dim, tuple)
    with pytest.raises(ValueError, match="unknown fields"):
        ModelConfig.from_dict({**cfg.to_dict(), "nope": 1})
    assert issubclass(ModelConfig, Config)
