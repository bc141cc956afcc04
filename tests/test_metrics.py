"""Tests for mtk.metrics: hand-computed toys, invariances, pooling, errors."""

import csv

import numpy as np
import pytest
import torch

from mtk import metrics as M


# helpers


def toy_pair():
    """2 frames x 3 vertices; squared errors per (t, v) are [[1, 4, 0], [0, 0, 9]]."""
    gt = np.zeros((2, 3, 3))  # (T, V, 3)
    pred = np.zeros((2, 3, 3))
    pred[0, 0] = [1, 0, 0]  # |e| = 1, e^2 = 1
    pred[0, 1] = [0, 2, 0]  # |e| = 2, e^2 = 4
    pred[1, 2] = [0, 0, 3]  # |e| = 3, e^2 = 9
    return pred, gt


def smooth_seqs(seed, n_seqs, n_frames=60, n_vertices=40, shift=0.0, n_basis=6):
    """Smooth mm-scale sequences (T, V, 3) from a fixed spatial basis."""
    basis = np.random.default_rng(123).normal(size=(n_basis, n_vertices, 3)) * 1e-3
    rng = np.random.default_rng(seed)
    seqs = []
    for _ in range(n_seqs):
        t = np.arange(n_frames)[:, None] / 30.0
        freq = rng.uniform(0.5, 4.0, size=(1, n_basis))
        phase = rng.uniform(0, 2 * np.pi, size=(1, n_basis))
        x = np.einsum("tb,bvc->tvc", np.sin(2 * np.pi * freq * t + phase), basis)
        x[..., 0] += shift
        seqs.append(x)
    return seqs


def reference_dtw(cost):
    """Plain double loop, same steps and tie order as documented."""
    n, m = cost.shape
    acc = np.full((n + 1, m + 1), np.inf)
    acc[0, 0] = 0.0
    steps = np.zeros((n + 1, m + 1), dtype=int)
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            options = [(i - 1, j - 1), (i - 1, j), (i, j - 1)]
            best = min(options, key=lambda ij: acc[ij])  # min keeps the first of ties
            acc[i, j] = cost[i - 1, j - 1] + acc[best]
            steps[i, j] = steps[best] + 1
    return acc[n, m] / steps[n, m]


@pytest.fixture(scope="module")
def extractor():
    train = smooth_seqs(0, 20)
    return M.MotionFeatureExtractor.fit(
        train, np.zeros((40, 3)), np.arange(40), n_components=4, window=4, hop=2
    )


# hand-computed values


def test_fve_hand_computed():
    pred, gt = toy_pair()
    # (1 + 4 + 0 + 0 + 0 + 9) / 6
    assert M.fve(pred, gt) == pytest.approx(14 / 6)


def test_lve_and_lip_max_hand_computed():
    pred, gt = toy_pair()
    lips = np.array([1, 2])
    # lve: (4 + 0 + 0 + 9) / 4
    assert M.lve(pred, gt, lips) == pytest.approx(13 / 4)
    # lip_max: (max(4, 0) + max(0, 9)) / 2
    assert M.lip_max(pred, gt, lips) == pytest.approx(6.5)
    # lip_max_l2_mm: (max(2, 0) + max(0, 3)) / 2 m = 2.5 m = 2500 mm
    assert M.lip_max_l2_mm(pred, gt, lips) == pytest.approx(2500.0)
    # mve_mm: (1 + 2 + 0 + 0 + 0 + 3) / 6 m = 1 m = 1000 mm
    assert M.mve_mm(pred, gt) == pytest.approx(1000.0)


def test_duplicate_lip_indices_are_kept():
    pred, gt = toy_pair()
    # vertex 1 counted twice: (4 + 4 + 0 + 0 + 0 + 9) / 6, not (4 + 0 + 0 + 9) / 4
    assert M.lve(pred, gt, np.array([1, 1, 2])) == pytest.approx(17 / 6)
    # a max does not change
    assert M.lip_max(pred, gt, np.array([1, 1, 2])) == pytest.approx(6.5)


def test_ldtw_hand_computed():
    # one lip vertex moving along x; pred [0, 2], gt [0, 1, 2]
    pred = np.array([0.0, 2.0])[:, None, None] * np.array([1.0, 0, 0])  # (2, 1, 3)
    gt = np.array([0.0, 1.0, 2.0])[:, None, None] * np.array([1.0, 0, 0])  # (3, 1, 3)
    # cost [[0, 1, 4], [4, 1, 0]]; best path (0,0),(1,1),(1,2) = 0 + 1 + 0 over 3 steps
    assert M.ldtw(pred, gt, np.array([0])) == pytest.approx(1 / 3)


def test_ldtw_ties_prefer_the_diagonal():
    pred = np.array([0.0, 1.0])[:, None, None] * np.array([1.0, 0, 0])  # (2, 1, 3)
    gt = np.array([1.0, 0.0])[:, None, None] * np.array([1.0, 0, 0])
    # cost [[1, 0], [0, 1]]: every path costs 2; the diagonal (2 steps) wins the tie: 2 / 2
    assert M.ldtw(pred, gt, np.array([0])) == pytest.approx(1.0)


def test_fdd_hand_computed():
    # one upper vertex along x; gt positions 1, 2 and pred 1, 1
    gt = np.array([[[1.0, 0, 0]], [[2.0, 0, 0]]])  # (2, 1, 3)
    pred = np.array([[[1.0, 0, 0]], [[1.0, 0, 0]]])
    upper = np.array([0])
    # template 0: m_G = [1, 4], std 1.5; m_P = [1, 1], std 0 -> 1.5 - 0
    assert M.fdd(pred, gt, upper, np.zeros((1, 3))) == pytest.approx(1.5)
    # template (1, 0, 0): m_G = [0, 1], std 0.5; m_P = [0, 0] -> 0.5; the template matters
    assert M.fdd(pred, gt, upper, np.array([1.0, 0, 0])) == pytest.approx(0.5)
    # signed: swapping roles flips the sign
    assert M.fdd(gt, pred, upper, np.zeros(3)) == pytest.approx(-1.5)


def test_frechet_distance_1d_hand_computed():
    a = np.array([[0.0], [2.0]])  # mean 1, var (ddof 1) 2
    b = np.array([[3.0], [5.0]])  # mean 4, var 2
    c = np.array([[0.0], [4.0]])  # mean 2, var 8
    # (1 - 4)^2 + (sqrt 2 - sqrt 2)^2
    assert M.frechet_distance(a, b) == pytest.approx(9.0)
    # (1 - 2)^2 + (sqrt 2 - sqrt 8)^2 = 1 + 2
    assert M.frechet_distance(a, c) == pytest.approx(3.0)


# invariances


def test_identical_inputs_give_zero():
    gt = smooth_seqs(1, 1)[0]
    lips, upper = np.arange(10), np.arange(20, 40)
    assert M.fve(gt, gt) == 0.0
    assert M.lve(gt, gt, lips) == 0.0
    assert M.lip_max(gt, gt, lips) == 0.0
    assert M.lip_max_l2_mm(gt, gt, lips) == 0.0
    assert M.mve_mm(gt, gt) == 0.0
    assert M.fdd(gt, gt, upper, np.zeros((40, 3))) == 0.0
    assert M.ldtw(gt, gt, lips) == pytest.approx(0.0, abs=1e-18)


def test_flat_and_3d_layouts_agree():
    pred, gt = smooth_seqs(2, 2)
    lips = np.arange(5, 15)
    flat = lambda x: x.reshape(len(x), -1)  # (T, V*3)
    for fn in (M.lve, M.lip_max, M.ldtw, M.lip_max_l2_mm):
        assert fn(flat(pred), flat(gt), lips) == pytest.approx(fn(pred, gt, lips), rel=1e-12)
    assert M.fve(flat(pred), gt) == pytest.approx(M.fve(pred, gt), rel=1e-12)
    assert M.fdd(flat(pred), flat(gt), lips, np.zeros(120)) == pytest.approx(
        M.fdd(pred, gt, lips, np.zeros((40, 3))), rel=1e-12
    )


def test_numpy_and_torch_agree():
    pred, gt = smooth_seqs(3, 2)
    lips = np.arange(5, 15)
    tp = torch.tensor(pred, dtype=torch.float64, requires_grad=True)
    tg = torch.tensor(gt, dtype=torch.float64)
    assert M.lve(tp, tg, torch.tensor(lips)) == pytest.approx(M.lve(pred, gt, lips), rel=1e-12)
    assert M.ldtw(tp, tg, lips) == pytest.approx(M.ldtw(pred, gt, lips), rel=1e-9)
    # float32 tensors: arithmetic is float64 on the float32 values
    p32, g32 = pred.astype(np.float32), gt.astype(np.float32)
    assert M.fve(torch.from_numpy(p32), torch.from_numpy(g32)) == pytest.approx(M.fve(p32, g32), rel=1e-12)


def test_ldtw_matches_a_plain_loop_reference():
    rng = np.random.default_rng(4)
    for n, m in [(1, 1), (1, 6), (6, 1), (7, 4), (4, 9), (15, 15)]:
        pred, gt = rng.normal(size=(n, 5, 3)), rng.normal(size=(m, 5, 3))
        lips = np.array([0, 2, 2, 4])
        pl, gl = pred[:, lips].reshape(n, -1), gt[:, lips].reshape(m, -1)
        cost = ((pl[:, None] - gl[None]) ** 2).sum(-1) / len(lips)  # (n, m)
        assert M.ldtw(pred, gt, lips) == pytest.approx(reference_dtw(cost), rel=1e-9)


def test_ldtw_forgives_a_time_shift_that_lve_punishes():
    t = np.arange(90)[:, None] / 30.0
    lips = np.arange(4)
    motion = lambda t: np.sin(2 * np.pi * 1.5 * t) * 5e-3  # 5 mm, 1.5 Hz
    gt = np.zeros((90, 4, 3))
    gt[..., 1] = motion(t)
    pred = np.zeros((90, 4, 3))
    pred[..., 1] = motion(t - 3 / 30)  # 3 frames late
    assert M.ldtw(pred, gt, lips) < 0.2 * M.lve(pred, gt, lips)


def test_ldtw_equals_lve_when_the_diagonal_is_optimal():
    # motion along y, constant 1 mm error along z: c(i, j) = |g_i - g_j|^2 + 1e-6 >= c(i, i)
    gt = np.zeros((40, 3, 3))
    gt[..., 1] = np.sin(np.arange(40) / 5.0)[:, None] * 4e-3
    pred = gt.copy()
    pred[..., 2] += 1e-3
    lips = np.arange(3)
    assert M.ldtw(pred, gt, lips) == pytest.approx(M.lve(pred, gt, lips), rel=1e-9)


def test_ldtw_never_exceeds_lve_for_equal_lengths():
    rng = np.random.default_rng(5)
    pred, gt = rng.normal(size=(2, 30, 6, 3)) * 1e-3
    assert M.ldtw(pred, gt, np.arange(6)) <= M.lve(pred, gt, np.arange(6)) * (1 + 1e-12)


# FID and the feature extractor


def test_fid_near_zero_for_one_distribution_and_grows_with_a_mean_shift(extractor):
    tmpl = np.zeros((40, 3))
    ref = smooth_seqs(10, 60)
    assert M.fid(ref, ref, extractor, tmpl) == pytest.approx(0.0, abs=1e-9)
    # two samples of the same process: small next to a shifted sample
    shifts = (0.0, 1e-3, 2e-3, 4e-3, 8e-3)  # metres
    values = [M.fid(smooth_seqs(11, 60, shift=s), ref, extractor, tmpl) for s in shifts]
    assert values[0] < 0.1 and values[0] < 0.1 * values[-1]
    assert all(a < b for a, b in zip(values, values[1:])), values
    # the same sample shifted: grows strictly from exactly 0
    shifted = [M.fid([x + [s, 0, 0] for x in ref], ref, extractor, tmpl) for s in (0.25e-3, 0.5e-3, 1e-3)]
    assert 0 < shifted[0] < shifted[1] < shifted[2], shifted


def test_extractor_round_trips_through_save_and_load(extractor, tmp_path):
    path = extractor.save(tmp_path / "fid_extractor.npz")
    assert path.exists() and path.suffix == ".npz"
    loaded = M.MotionFeatureExtractor.load(path)
    seqs = smooth_seqs(12, 3)
    tmpl = np.zeros(120)  # (V*3,) form
    np.testing.assert_array_equal(loaded.features(seqs, tmpl), extractor.features(seqs, tmpl))
    assert loaded.describe() == extractor.describe()
    assert "k=4" in loaded.describe() and "windows of 4 frames" in loaded.describe()


def test_extractor_fit_is_deterministic_and_shapes_are_documented():
    train = smooth_seqs(0, 20)
    a = M.MotionFeatureExtractor.fit(train, np.zeros((40, 3)), np.arange(40), n_components=4, window=4, hop=2)
    b = M.MotionFeatureExtractor.fit(train, np.zeros((40, 3)), np.arange(40), n_components=4, window=4, hop=2)
    np.testing.assert_array_equal(a.components, b.components)
    # T = 60 frames, window 4, hop 2: (60 - 4) // 2 + 1 = 29 windows of 4 * 4 values
    assert a.transform(train[0], np.zeros((40, 3))).shape == (29, 16)


def test_extractor_warns_on_short_sequences_and_rejects_tiny_sets(extractor):
    seqs = smooth_seqs(13, 2)
    short = seqs[0][:3]  # 3 frames < window 4
    with pytest.warns(UserWarning, match="sequence 1.*3 frames is shorter than the FID window of 4"):
        feats = extractor.features([seqs[1], short], np.zeros((40, 3)))
    assert len(feats) == 29
    with pytest.raises(ValueError, match="gives 1 FID windows.*at least 2"):
        extractor.features([seqs[0][:4]], np.zeros((40, 3)))


def test_load_rejects_other_npz_files(tmp_path):
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="not a saved mtk.MotionFeatureExtractor"):
        M.MotionFeatureExtractor.load(tmp_path / "other.npz")


# evaluate: pooling, truncation, reporting


def constant_offset_set():
    """Seq A: 1 frame, every vertex off by 1 along x; seq B: 3 frames off by 2."""
    gts = [np.zeros((1, 4, 3)), np.zeros((3, 4, 3))]
    preds = [g.copy() for g in gts]
    preds[0][..., 0] += 1.0  # e^2 = 1
    preds[1][..., 0] += 2.0  # e^2 = 4
    return preds, gts


def test_evaluate_pools_frames_for_errors_and_averages_sequences_for_ldtw():
    preds, gts = constant_offset_set()
    res = M.evaluate(preds, gts, {"lips": np.array([0, 1])})
    # frames pooled: (1 * 1 + 3 * 4) / 4 frames, not the sequence mean (1 + 4) / 2
    assert res.metrics["fve"] == pytest.approx(13 / 4)
    assert res.metrics["lve"] == pytest.approx(13 / 4)
    assert res.metrics["lip_max"] == pytest.approx(13 / 4)
    # L2 forms: (1 * 1 + 3 * 2) / 4 m in mm
    assert res.metrics["mve_mm"] == pytest.approx(7 / 4 * 1000)
    # ldtw: constant cost per sequence, diagonal path -> 1 and 4; mean over sequences
    assert res.metrics["ldtw"] == pytest.approx(5 / 2)
    assert [row["fve"] for row in res.per_sequence] == pytest.approx([1.0, 4.0])
    assert [row["n_frames"] for row in res.per_sequence] == [1, 3]


def test_evaluate_averages_signed_and_absolute_fdd_over_sequences():
    upper = np.array([0])
    gt_a = np.array([[[1.0, 0, 0]], [[2.0, 0, 0]]])  # m = [1, 4], std 1.5
    still = np.array([[[1.0, 0, 0]], [[1.0, 0, 0]]])  # std 0
    # seq A: fdd = 1.5 - 0 = +1.5; seq B (roles swapped, 4 frames): fdd = 0 - 1.5 = -1.5
    gt_b, pred_b = np.concatenate([still, still]), np.concatenate([gt_a, gt_a])
    masks = {"lips": upper, "upper_face": upper}
    res = M.evaluate([still, pred_b], [gt_a, gt_b], masks, templates=np.zeros(3))
    assert res.metrics["fdd"] == pytest.approx(0.0)  # (1.5 - 1.5) / 2: signed values cancel
    assert res.metrics["abs_fdd"] == pytest.approx(1.5)  # (|1.5| + |-1.5|) / 2
    assert [row["fdd"] for row in res.per_sequence] == pytest.approx([1.5, -1.5])


def test_evaluate_truncates_small_length_mismatches():
    preds, gts = constant_offset_set()
    preds[1] = np.concatenate([preds[1], preds[1][:2]])  # 5 frames vs 3
    res = M.evaluate(preds, gts, {"lips": np.array([0])})
    assert res.metrics["fve"] == pytest.approx(13 / 4)
    row = res.per_sequence[1]
    assert (row["len_pred"], row["len_gt"], row["n_frames"]) == (5, 3, 3)
    assert any("1 of 2 sequences truncated" in note for note in res.notes)


def test_evaluate_rejects_a_three_frame_mismatch_naming_both_lengths():
    preds, gts = constant_offset_set()
    preds[1] = np.zeros((6, 4, 3))
    with pytest.raises(ValueError, match=r"'sent_02'.*6 frames.*ground truth has 3"):
        M.evaluate(preds, gts, {"lips": np.array([0])}, names=["sent_01", "sent_02"])


def test_evaluate_notes_missing_fdd_and_fid_inputs():
    preds, gts = constant_offset_set()
    res = M.evaluate(preds, gts, {"lips": np.array([0]), "upper_face": np.array([1])})
    assert "fdd" not in res.metrics and "fid" not in res.metrics
    assert any("fdd/abs_fdd omitted: no templates" in note for note in res.notes)
    assert any("fid omitted: no templates and extractor" in note for note in res.notes)


def test_evaluate_full_run_and_reports(extractor, tmp_path):
    gts = smooth_seqs(20, 6)
    preds = [g + 2e-4 for g in smooth_seqs(21, 6)]
    masks = {"lips": np.arange(10), "upper_face": np.arange(25, 40)}
    res = M.evaluate(preds, gts, masks, templates=np.zeros((40, 3)), extractor=extractor)
    assert list(res.metrics) == list(M.UNITS)  # every column, in table order
    paper = res.paper_units()
    for key, scale in M.PAPER_UNITS.items():
        assert paper[key] == pytest.approx(res.metrics[key] / scale)
    rows = res.table()
    assert rows[1][0] == "lve" and rows[1][2] == "m^2" and rows[1][4] == 1e-5
    assert "| lve |" in res.to_markdown()
    assert "<table>" in res._repr_html_()
    with open(res.to_csv(tmp_path / "summary.csv")) as f:
        summary = list(csv.DictReader(f))
    assert float(summary[0]["value"]) == res.metrics["fve"]
    with open(res.to_csv(tmp_path / "per_seq.csv", per_sequence=True)) as f:
        assert len(list(csv.DictReader(f))) == 6
    assert res.info["masks"]["lips"]["n"] == 10
    # identical sets: everything 0
    same = M.evaluate(gts, gts, masks, templates=np.zeros((40, 3)), extractor=extractor)
    for key, value in same.metrics.items():
        assert value == pytest.approx(0.0, abs=1e-12), key


# validation


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros((2, 3, 2)), r"pred: expected shape \(T, V, 3\) or \(T, V\*3\), got \(2, 3, 2\)"),
        (np.zeros((2, 7)), r"pred: expected shape .* got \(2, 7\)"),
        (np.zeros(9), r"pred: expected shape .* got \(9,\)"),
        (np.zeros((0, 3, 3)), r"pred: empty sequence of shape \(0, 3, 3\)"),
        (np.zeros((2, 4, 3)), r"pred has V = 4 vertices but gt has V = 3"),
        (np.zeros((3, 3, 3)), r"pred has T = 3 frames but gt has T = 2"),
    ],
)
def test_bad_shapes_raise(bad, match):
    with pytest.raises(ValueError, match=match):
        M.fve(bad, np.zeros((2, 3, 3)))


def test_nan_and_inf_raise():
    pred, gt = toy_pair()
    pred[1, 2, 0] = np.nan
    with pytest.raises(ValueError, match=r"pred: contains 1 NaN/inf values \(first at frame 1\)"):
        M.lve(pred, gt, np.array([0]))
    gt[0, 0, 0] = np.inf
    with pytest.raises(ValueError, match=r"gts\[0\] \('s1'\): contains 1 NaN/inf"):
        M.evaluate([np.zeros_like(gt)], [gt], {"lips": np.array([0])}, names=["s1"])


@pytest.mark.parametrize(
    "mask, match",
    [
        (np.array([0, 3]), r"lips: indices must lie in \[0, 3\) for V = 3, got min 0, max 3"),
        (np.array([-1, 1]), r"lips: indices must lie in \[0, 3\).*min -1"),
        (np.array([], dtype=int), r"lips: empty vertex mask"),
        (np.array([0.0, 1.0]), r"lips: expected integer vertex indices, got dtype float64"),
        (np.array([True, False, True]), r"lips: got a boolean mask"),
    ],
)
def test_bad_masks_raise(mask, match):
    pred, gt = toy_pair()
    with pytest.raises(ValueError, match=match):
        M.lip_max(pred, gt, mask)


def test_evaluate_validates_its_arguments():
    preds, gts = constant_offset_set()
    with pytest.raises(ValueError, match=r"masks: expected a dict with at least the key 'lips'"):
        M.evaluate(preds, gts, {"upper_face": np.array([0])})
    with pytest.raises(ValueError, match=r"masks\['upper_face'\]: indices must lie in \[0, 4\)"):
        M.evaluate(preds, gts, {"lips": [0], "upper_face": [9]}, templates=np.zeros((4, 3)))
    with pytest.raises(ValueError, match=r"templates\[0\]: expected a template of shape \(4, 3\) or \(12,\)"):
        M.evaluate(preds, gts, {"lips": [0], "upper_face": [1]}, templates=np.zeros((5, 3)))
    with pytest.raises(ValueError, match=r"got 1 predictions but 2 ground-truth"):
        M.evaluate(preds[:1], gts, {"lips": np.array([0])})
    with pytest.raises(ValueError, match=r"single array of shape \(3, 4, 3\)"):
        M.evaluate(preds[1], gts[1], {"lips": np.array([0])})


def test_bench_lists_its_sub_commands_on_a_typo(capsys):
    from mtk import bench

    with pytest.raises(SystemExit):
        bench.main(["metric"])
    err = capsys.readouterr().err
    assert "unknown sub-command 'metric'" in err and "metrics" in err and "inference" in err
