"""The viewers and the own-recording demo, as a user calls them."""
import io

import numpy as np
import pytest
import soundfile as sf
import torch

from mtk import demo, viz
from mtk.configs import Config
from mtk.model import ModelConfig
from mtk.synthvoca.template import Template


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


@pytest.fixture(scope="module")
def moving(smoke_ds):
    """A smoke-size MemoryTalker carrying its template, with a random (non-zero) output layer, so that what
    the demo writes is a real animation and not the template repeated."""
    import torch

    from mtk.model import MemoryTalker
    torch.manual_seed(0)
    m = MemoryTalker(ModelConfig.smoke(smoke_ds.template.V * 3, motion_scale=0.003), smoke_ds.template.mask("lips"),
                     template=smoke_ds.template)
    torch.nn.init.normal_(m.out.weight, std=0.3)
    return m.eval()


def test_demo_writes_a_playable_mp4_with_one_frame_per_animation_frame(smoke_ds, moving, tmp_path):
    from mtk.audio import frames_for
    seq = smoke_ds.sequences("test")[0]
    a = seq.audio()
    a = a[: (len(a) // 16000 - 1) * 16000 + 16267]                      # 61 frames at 60 fps: 30.5 at 30 fps
    assert frames_for(len(a)) / 30 > len(a) / 16000                      # the last frame outlasts the sound
    wav = tmp_path / "in.wav"
    sf.write(wav, np.stack([a, a], 1), 16000)                            # stereo
    outs = [tmp_path / "o.mp4", tmp_path / "sub" / "o.npy", tmp_path / "o.html"]
    res = demo.animate_file(wav, outs, model=moving, progress=False, size=160)
    T = res["frames"]
    assert T == frames_for(len(a))
    info = demo.probe(tmp_path / "o.mp4")
    assert info["has_video"] and info["has_audio"] and info["frames"] == T       # exactly, not +-1
    v = np.load(tmp_path / "sub" / "o.npy")
    assert v.shape == (T, smoke_ds.template.V, 3)
    np.testing.assert_allclose(v, moving.animate(demo.load_audio(wav), 16000), atol=1e-7)   # every frame
    assert np.abs(v - smoke_ds.template.vertices).max() > 1e-3          # and it moves
    assert (tmp_path / "o.html").stat().st_size > 10000


def test_44k_stereo_is_resampled_to_the_same_frames(smoke_ds, moving, tmp_path):
    from scipy.signal import resample_poly
    a = smoke_ds.sequences("test")[1].audio()
    sf.write(tmp_path / "in44.wav", np.stack([resample_poly(a, 441, 160)] * 2, 1), 44100)
    res = demo.animate_file(tmp_path / "in44.wav", tmp_path / "o.npy", model=moving, progress=False)
    assert abs(res["frames"] - len(a) / 16000 * 30) <= 1


def test_demo_rejects_bad_input_before_training_or_rendering(smoke_ds, moving, tmp_path, monkeypatch):
    def no_training(*a, **k):
        raise AssertionError("a bad input must be rejected before any dataset generation or training")
    monkeypatch.setattr(demo, "trained_model", no_training)
    speech = smoke_ds.sequences("test")[0].audio()
    sf.write(tmp_path / "ok.wav", speech, 16000)
    (tmp_path / "empty.wav").write_bytes(b"")
    sf.write(tmp_path / "quiet.wav", np.zeros(16000), 16000)
    sf.write(tmp_path / "dc.wav", np.full(16000, 0.25), 16000)
    sf.write(tmp_path / "nan.wav", np.full(16000, np.nan), 16000, subtype="FLOAT")
    (tmp_path / "a_file").write_text("not a folder")
    (tmp_path / "a_dir.npy").mkdir()
    cases = [
        ("empty.wav", "x.npy", {}, "empty.wav: cannot read audio"),
        ("quiet.wav", "x.npy", {}, "quiet.wav: audio is silent"),
        ("dc.wav", "x.npy", {}, r"dc.wav: audio is constant at \+0.250"),
        ("nan.wav", "x.npy", {}, "nan.wav: 16000 audio samples are NaN"),
        ("ok.wav", "x.gif", {}, "unsupported output"),
        ("ok.wav", "a_file/face.mp4", {}, "a_file/face.mp4: cannot write here"),
        ("ok.wav", "a_dir.npy", {}, "a_dir.npy: is a folder"),
        ("ok.wav", "x.npy", {"stage": 3}, "ok.wav: stage 3: expected 1 or 2"),
    ]
    for audio, out, kw, message in cases:
        with pytest.raises(ValueError, match=message):
            demo.animate_file(tmp_path / audio, tmp_path / out, progress=False, **kw)
    with pytest.raises(FileNotFoundError, match="nope.wav"):
        demo.animate_file(tmp_path / "nope.wav", tmp_path / "x.npy")


@pytest.mark.parametrize("smoke,expected", [("1", "smoke"), ("0", "default")])
def test_cli_animate_follows_mtk_smoke(smoke, expected, smoke_ds, tmp_path, monkeypatch):
    """`python -m mtk animate` with no --preset takes the smoke model when MTK_SMOKE=1, as the rest of the kit
    (the preset asked of `shipped.load_or_train`, which then loads the shipped model or trains)."""
    import mtk.shipped
    from mtk.__main__ import main
    seen = []

    class Stop(Exception):
        pass

    def fake_load_or_train(preset, progress=True, device=None):
        seen.append((preset, device))
        raise Stop
    monkeypatch.setattr(mtk.shipped, "load_or_train", fake_load_or_train)
    monkeypatch.setenv("MTK_SMOKE", smoke)
    sf.write(tmp_path / "ok.wav", smoke_ds.sequences("test")[0].audio(), 16000)
    with pytest.raises(Stop):
        main(["animate", str(tmp_path / "ok.wav"), "--out", str(tmp_path / "x.npy")])
    assert seen == [(expected, "cuda" if torch.cuda.is_available() else "cpu")]       # --device auto
    with pytest.raises(SystemExit, match="mtk animate: .*unsupported output"):
        main(["animate", str(tmp_path / "ok.wav"), "--out", str(tmp_path / "x.gif")])


def test_a_device_this_machine_lacks_is_refused_before_any_work(smoke_ds, tmp_path, monkeypatch):
    """`--device` names where the model runs; a device torch cannot use stops `animate` and `reproduce` with
    the device, what this machine has and what was expected, before any data, training or notebook."""
    import mtk.shipped
    from mtk.__main__ import main

    def no_work(*a, **k):
        raise AssertionError("a bad device must be refused before any work")
    monkeypatch.setattr(mtk.shipped, "load_or_train", no_work)
    monkeypatch.setattr("mtk.__main__.cmd_data", no_work)
    sf.write(tmp_path / "ok.wav", smoke_ds.sequences("test")[0].audio(), 16000)
    animate = ["animate", str(tmp_path / "ok.wav"), "--out", str(tmp_path / "x.npy"), "--device"]
    with pytest.raises(SystemExit, match="mtk animate: device 'tpu': expected 'auto', 'cpu', 'cuda'"):
        main(animate + ["tpu"])
    with pytest.raises(SystemExit, match="mtk reproduce --device: device 'gpu': expected 'auto', 'cpu'"):
        main(["reproduce", "--device", "gpu"])
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="device 'cuda': torch sees no CUDA GPU on this machine"):
            main(animate + ["cuda"])
        with pytest.raises(SystemExit, match="mtk reproduce --device: device 'cuda:1': torch sees no CUDA GPU"):
            main(["reproduce", "--device", "cuda:1"])
    else:
        n = torch.cuda.device_count()
        with pytest.raises(SystemExit, match=f"device 'cuda:{n}': this machine has {n} CUDA GPU"):
            main(animate + [f"cuda:{n}"])


def test_configs_round_trip():
    cfg = ModelConfig.smoke(300, n_slots=12)
    back = ModelConfig.from_dict(cfg.to_dict())
    assert back == cfg and isinstance(back.audio.conv_dim, tuple)
    with pytest.raises(ValueError, match="unknown fields"):
        ModelConfig.from_dict({**cfg.to_dict(), "nope": 1})
    assert issubclass(ModelConfig, Config)


def test_k3d_pages_need_no_network(head, tmp_path, monkeypatch):
    """Every k3d page the kit writes carries or sits beside k3d's viewer; no CDN (the browser test opens them)."""
    import k3d
    monkeypatch.setenv("MTK_FIGURES", str(tmp_path))
    page = viz.save_k3d(viz.k3d_face(head), "face.html")
    html = page.read_text()
    js = tmp_path / f"k3d-viewer-{k3d.__version__}.js"
    assert f'<script src="{js.name}"></script>' in html and js.stat().st_size > 500_000
    full = viz.k3d_html(viz.k3d_face(head))
    for text in (html, full):
        assert "unpkg.com" not in text and "cdnjs" not in text and "require.min.js" not in text
    with pytest.raises(RuntimeError, match="viewer scripts"):
        viz.split_viewer("<html><body>no viewer</body></html>", js.name)
