"""The task's exact bounds (`mtk.bounds`): checked against a brute-force computation in vertex space."""
import numpy as np
import pytest

from mtk import bounds, metrics


def test_clip_bounds_equal_brute_force_scores_of_the_mean_prediction(smoke_ds):
    """The Gram-matrix shortcut (errors in basis-weight space) gives exactly what `metrics.fve` / `lve` give
    for the mean prediction built vertex by vertex, for every bound."""
    s = smoke_ds.sequences("test")[0]
    lips = smoke_ds.template.mask("lips")
    for b in bounds.BOUNDS:
        pred = bounds.prediction(smoke_ds, s.name, b, n_draws=6, seed=3)                  # (T, V, 3)
        assert pred.shape == s.vertices().shape
        cb = bounds.clip_bounds(smoke_ds, s.name, n_draws=6, seed=3, bounds=(b,), correct=False)
        assert cb.sq_fve[b] / cb.frames == pytest.approx(metrics.fve(pred, s.vertices()), rel=1e-6)
        assert cb.sq_lve[b] / cb.frames == pytest.approx(metrics.lve(pred, s.vertices(), lips), rel=1e-6)


def test_monte_carlo_correction_removes_the_few_draws_bias(smoke_ds):
    """The plain error of an N-draw mean is biased up by s^2 / N; corrected, 4 draws agree with 200."""
    s = smoke_ds.sequences("test")[0]
    many = bounds.clip_bounds(smoke_ds, s.name, n_draws=200, seed=1, bounds=("floor",))
    few = [bounds.clip_bounds(smoke_ds, s.name, n_draws=4, seed=k, bounds=("floor",), correct=c).sq_fve["floor"]
           for c in (True, False) for k in range(40)]
    corrected, plain = np.mean(few[:40]), np.mean(few[40:])
    ref = many.sq_fve["floor"]
    assert abs(corrected - ref) < 0.1 * ref
    assert plain > 1.15 * ref                       # about 1 + 1/4 times the floor: the bias is real


def test_bounds_are_ordered_and_in_paper_units(smoke_ds):
    """Knowing the true style beats any guess for every speaker (the floor is the noise alone). Knowing only
    the audible factors beats knowing nothing on average over speakers, not for each one: a speaker whose
    silent factors pull against what their voice says is predicted worse from the voice than from the prior
    (on the version-2 smoke data, S05: audible 1.15 against style-blind 0.79 with 64 draws)."""
    rows = bounds.bounds(smoke_ds, "test", n_draws=16)
    speakers = {r["speaker"] for r in rows}
    assert speakers == {s.subject for s in smoke_ds.sequences("test")} | {"all"}
    for spk in speakers:
        fve = {r["bound"]: r["fve"] for r in rows if r["speaker"] == spk}
        assert 0 < fve["floor"] < min(fve["audible"], fve["style_blind"]), (spk, fve)
    overall = {r["bound"]: r for r in rows if r["speaker"] == "all"}
    assert overall["floor"]["fve"] < overall["audible"]["fve"] < overall["style_blind"]["fve"]
    assert 0.01 < overall["style_blind"]["fve"] < 100       # x1e-6 m^2: a plausible size, not raw metres


def test_bounds_refuse_data_without_a_known_law():
    with pytest.raises(TypeError, match="SynthVOCA"):
        bounds.bounds(object())
    with pytest.raises(ValueError, match="n_draws"):
        bounds.clip_bounds(None, "x", n_draws=1)


def test_version_2_bounds_draw_motion_with_the_same_lip_contact(tmp_path):
    """On version-2 data the bounds draw motion as the generator does (lip contact included): every draw keeps
    the lips uncrossed, and the bounds stay ordered."""
    from mtk.data import SynthVOCA
    from mtk.synthvoca import SynthConfig, generate
    from mtk.synthvoca.articulation import contact_geometry
    ds = SynthVOCA(generate(SynthConfig.smoke(version=2), root=tmp_path / "v2", progress=False))
    s = ds.sequences("test")[0]
    W = bounds.draws(ds, s.name, "style_blind", 8, np.random.default_rng(0))           # (N, T, K)
    D, g0 = contact_geometry(ds.template, ds.basis, ds.templates[s.subject].vertices)
    assert (g0 + W @ D).min() > -1e-6
    rows = bounds.bounds(ds, "test", n_draws=32)                    # (8 draws: Monte Carlo noise can swap them)
    fve = {r["bound"]: r["fve"] for r in rows if r["speaker"] == "all"}
    assert 0 < fve["floor"] < fve["audible"] <= fve["style_blind"] * 1.05
