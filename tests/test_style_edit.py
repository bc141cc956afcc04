"""Style editing (`mtk.style_edit`): the edit formula, `animate(style=...)`, and the sliders of notebook 07
moved from Python as a user moves them."""
import numpy as np
import pytest

from mtk import style_edit


@pytest.fixture(scope="module")
def model(moving_model):
    return moving_model


def test_edit_blends_and_scales_the_deviation_from_the_mean():
    a, b, mean = np.array([1.0, 0.0, 2.0]), np.array([0.0, 1.0, 2.0]), np.array([0.5, 0.5, 1.0])
    np.testing.assert_allclose(style_edit.edit(a, b, 0.0, 1.0, mean), a)
    np.testing.assert_allclose(style_edit.edit(a, b, 1.0, 1.0, mean), b)
    np.testing.assert_allclose(style_edit.edit(a, b, 0.5, 1.0, mean), [0.5, 0.5, 2.0])
    np.testing.assert_allclose(style_edit.edit(a, b, 0.0, 0.0, mean), mean)                   # flattened
    np.testing.assert_allclose(style_edit.edit(a, b, 0.0, 2.0, mean), [1.5, -0.5, 3.0])      # exaggerated
    with pytest.raises(ValueError, match=r"styles of shapes \(3,\), \(2,\)"):
        style_edit.edit(a, b[:2])
    with pytest.raises(ValueError, match="mix = nan"):
        style_edit.edit(a, b, float("nan"))


def test_animate_in_a_given_style(model, smoke_ds):
    """style= replaces the style encoder's w_s and nothing else: the encoder's own w_s reproduces the plain
    animation, another speaker's style changes it."""
    clip_a, clip_b = smoke_ds.sequences("test")[0], smoke_ds.sequences("train")[0]
    w_a, w_b = style_edit.clip_style(model, clip_a.audio()), style_edit.clip_style(model, clip_b.audio())
    assert w_a.shape == (model.cfg.n_slots,) and not np.allclose(w_a, w_b)
    plain = model.animate(clip_a.audio(), 16000)
    np.testing.assert_allclose(model.animate(clip_a.audio(), 16000, style=w_a), plain, atol=1e-6)
    other = model.animate(clip_a.audio(), 16000, style=w_b)
    assert other.shape == plain.shape and np.abs(other - plain).max() > 1e-5
    with pytest.raises(ValueError, match=r"animate\(style=...\): got shape \(3,\) at stage 2; expected"):
        model.animate(clip_a.audio(), 16000, style=np.ones(3))
    with pytest.raises(ValueError, match="at stage 1"):
        model.animate(clip_a.audio(), 16000, stage=1, style=w_a)


def test_the_sliders_move_the_face_and_the_mouth_curve(model, smoke_ds):
    """Notebook 07's widget, driven from Python: moving the blend slider to speaker B shows B's style on the
    same speech (the k3d mesh's frames and the curve image change); flattening gives the mean style."""
    a = [s for s in smoke_ds.sequences("train") if s.subject == smoke_ds.train_subjects[0]]
    b = [s for s in smoke_ds.sequences("train") if s.subject == smoke_ds.train_subjects[1]]
    w_a, w_b = style_edit.speaker_style(model, a), style_edit.speaker_style(model, b)
    mean = style_edit.mean_style(model, smoke_ds)
    clip = smoke_ds.sequences("test")[0]
    ed = style_edit.StyleEditor(model, clip.audio(), w_a, w_b, mean)
    box, plot = ed.widget(names=("S01", "S02"))
    mix, scale = box.children[0].children
    mesh = next(o for o in plot.objects if hasattr(o, "vertices"))
    first_png = box.children[1].value
    frame = lambda: np.asarray(mesh.vertices[sorted(mesh.vertices)[5]])          # noqa: E731
    np.testing.assert_allclose(frame(), ed.update(0.0, 1.0)["vertices"][5], atol=1e-6)
    mix.value = 1.0
    np.testing.assert_allclose(frame(), ed.update(1.0, 1.0)["vertices"][5], atol=1e-6)
    np.testing.assert_allclose(ed.update(1.0, 1.0)["w"], w_b)
    assert np.abs(ed.update(1.0, 1.0)["vertices"] - ed.update(0.0, 1.0)["vertices"]).max() > 1e-5
    assert box.children[1].value != first_png and box.children[1].value[:4] == b"\x89PNG"
    scale.value = 0.0
    np.testing.assert_allclose(ed.update(1.0, 0.0)["w"], mean)
    np.testing.assert_allclose(frame(), model.animate(clip.audio(), 16000, style=mean)[5], atol=1e-6)
    assert ed.update(0.0, 1.0)["mouth"].shape == (len(ed.update(0.0, 1.0)["vertices"]),)
