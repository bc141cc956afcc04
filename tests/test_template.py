import numpy as np
import pytest

from mtk.synthvoca.template import LANDMARKS, Template, read_ply, write_ply


@pytest.fixture(scope="module")
def head():
    return Template.procedural()


def test_procedural_head_size_and_topology(head):
    assert 4500 <= head.V <= 5500                                   # FLAME has 5,023
    assert head.faces.shape[1] == 3 and head.faces.max() < head.V
    # every vertex is used by a face, and faces are not degenerate
    assert len(np.unique(head.faces)) == head.V
    tri = head.vertices[head.faces]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    assert (area > 1e-10).all()
    # head-sized, in metres
    ext = head.vertices.max(0) - head.vertices.min(0)
    assert 0.12 < ext[0] < 0.20 and 0.20 < ext[1] < 0.35 and 0.15 < ext[2] < 0.25


def test_deterministic(head):
    again = Template.procedural()
    np.testing.assert_array_equal(head.vertices, again.vertices)
    np.testing.assert_array_equal(head.faces, again.faces)


def test_landmarks_are_where_they_belong(head):
    assert set(LANDMARKS) <= set(head.landmarks)
    p = {k: head.landmark(k) for k in LANDMARKS}
    assert p["nose_tip"][2] == pytest.approx(head.vertices[:, 2].max(), abs=0.005)   # the most forward point
    assert p["mouth_corner_left"][0] > 0.015 > -0.015 > p["mouth_corner_right"][0]
    assert p["chin"][1] < p["lower_lip_mid"][1] < p["nose_tip"][1] < p["brow_left"][1]
    assert p["brow_left"][0] > 0 > p["brow_right"][0]
    assert p["jaw_hinge_left"][0] > 0.05 and p["jaw_hinge_right"][0] < -0.05
    # the lips meet at rest, but are different vertices: the mouth can open
    assert head.landmarks["upper_lip_mid"] != head.landmarks["lower_lip_mid"]
    np.testing.assert_allclose(p["upper_lip_mid"], p["lower_lip_mid"], atol=1e-7)


def test_mouth_slit_is_open_in_the_topology(head):
    up, lo = head.mask("mouth_slit_upper"), head.mask("mouth_slit_lower")
    assert len(up) == len(lo) >= 8
    # no face uses both an upper and a lower slit vertex
    f = head.faces
    assert not (np.isin(f, up).any(1) & np.isin(f, lo).any(1)).any()


def test_region_masks(head):
    lips, upper, lower, eyes = (head.mask(k) for k in ("lips", "upper_face", "lower_face", "eyes"))
    assert 150 <= len(lips) <= 400 and len(upper) > 300 and len(lower) > len(lips)
    assert set(lips) <= set(lower) and not set(lips) & set(upper)
    assert set(eyes) <= set(upper)
    assert head.vertices[upper, 1].min() > head.vertices[lips, 1].max()
    assert set(head.mask("mouth_slit_lower")) <= set(lips)
    with pytest.raises(KeyError, match="no region 'ears'"):
        head.mask("ears")


def test_other_resolutions_and_identities_share_structure():
    coarse = Template.procedural("coarse")
    assert 1200 < coarse.V < 2500
    a = Template.procedural("smoke")
    b = Template.procedural("smoke", identity=[1, -1, 2, 0.5, -0.5, 1])
    assert a.V == b.V and (a.faces == b.faces).all()
    assert all((a.masks[k] == b.masks[k]).all() for k in a.masks)
    assert not np.allclose(a.vertices, b.vertices)
    with pytest.raises(ValueError, match="identity has 2 coefficients"):
        Template.procedural("smoke", identity=[1, 2])


def test_save_load_and_ply_roundtrip(head, tmp_path):
    head.save(tmp_path / "t.npz")
    back = Template.load(tmp_path / "t.npz")
    np.testing.assert_array_equal(back.vertices, head.vertices)
    assert back.landmarks == head.landmarks and set(back.masks) == set(head.masks)
    write_ply(tmp_path / "t.ply", head.vertices, head.faces)
    v, f = read_ply(tmp_path / "t.ply")
    np.testing.assert_allclose(v, head.vertices)
    np.testing.assert_array_equal(f, head.faces)
    with pytest.raises(ValueError, match="not a PLY file"):
        (tmp_path / "bad.ply").write_text("hello")
        read_ply(tmp_path / "bad.ply")
    head_txt = ("ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\nproperty float z\n"
                "element face 1\nproperty list uchar int vertex_index\nend_header\n0 0 0\n1 0 0\n0 1 0\n")
    (tmp_path / "ascii.ply").write_text(head_txt + "3 0 1 2\n")          # ASCII, FLAME's "vertex_index" spelling
    v, f = read_ply(tmp_path / "ascii.ply")
    np.testing.assert_array_equal(v, [[0, 0, 0], [1, 0, 0], [0, 1, 0]])
    np.testing.assert_array_equal(f, [[0, 1, 2]])
    (tmp_path / "outside.ply").write_text(head_txt + "3 0 1 7\n")
    with pytest.raises(ValueError, match=r"outside.ply: face indices span \[0, 7\], expected \[0, 2\]"):
        read_ply(tmp_path / "outside.ply")
    (tmp_path / "quad.ply").write_text(head_txt.replace("vertex 3", "vertex 4") + "1 1 0\n4 0 1 3 2\n")
    with pytest.raises(ValueError, match="quad.ply: only triangle faces"):
        read_ply(tmp_path / "quad.ply")


def test_flame_template_interface(tmp_path):
    """A FLAME-like template plugs in through the same interface (masks from a FLAME_masks.pkl)."""
    import pickle
    rng = np.random.default_rng(0)
    V = 60
    verts = rng.normal(size=(V, 3)).astype(np.float32) * 0.05
    masks = {"lips": np.array([1, 2, 2, 3]), "forehead": np.arange(40, 50), "eye_region": np.arange(45, 55),
             "face": np.arange(0, 55), "nose": np.arange(20, 25)}
    with open(tmp_path / "FLAME_masks.pkl", "wb") as f:
        pickle.dump(masks, f)
    faces = np.array([[0, 1, 2], [2, 3, 4]])
    write_ply(tmp_path / "FLAME_sample.ply", verts, faces)
    t = Template.from_flame(verts.reshape(-1), tmp_path / "FLAME_sample.ply", tmp_path / "FLAME_masks.pkl")
    assert t.V == V and len(t.faces) == 2
    np.testing.assert_array_equal(t.mask("lips"), [1, 2, 2, 3])           # raw, duplicates kept
    np.testing.assert_array_equal(t.mask("upper_face"), np.arange(40, 55))
    with pytest.raises(ValueError, match=r"mask 'bad' indexes \[0, 99\]"):
        Template("x", verts, faces, {"bad": [0, 99]})
