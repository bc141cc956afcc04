"""Export to 3D tools (`mtk.export`, `mtk animate --out face.glb / face.obj`): read back by loaders from PyPI
(pygltflib, trimesh), checked by the Khronos glTF validator (`make validator`), and exact to the tolerance."""
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from mtk import export

VALIDATOR = Path(__file__).resolve().parents[1] / ".cache" / "gltf-validator" / "node_modules" / "gltf-validator"


def khronos_validate(path: Path) -> dict:
    """The Khronos glTF validator's report on `path` (node + the npm package `make validator` installs)."""
    if not (shutil.which("node") and VALIDATOR.exists()):
        what = "node" if not shutil.which("node") else f"{VALIDATOR} (run `make validator`)"
        if os.environ.get("MTK_REQUIRE_GLTF_VALIDATOR") == "1":
            pytest.fail(f"the glTF validator is missing: {what} (MTK_REQUIRE_GLTF_VALIDATOR=1)")
        pytest.skip(f"the glTF validator is missing: {what}")
    script = ("const v = require(process.argv[1]); const fs = require('fs');"
              "v.validateBytes(new Uint8Array(fs.readFileSync(process.argv[2])))"
              ".then(r => console.log(JSON.stringify(r.issues)));")
    out = subprocess.run(["node", "-e", script, str(VALIDATOR), str(path)], capture_output=True, text=True,
                         timeout=120, check=True)
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def clip(smoke_ds):
    """A real animation: a test clip's ground-truth vertices on its speaker's face, and the template's faces."""
    s = smoke_ds.sequences("test")[0]
    return s.template.vertices, smoke_ds.template.faces, s.vertices()      # (V, 3), (F, 3), (T, V, 3)


def test_glb_round_trips_within_the_tolerance_and_passes_the_khronos_validator(clip, tmp_path):
    import pygltflib
    import trimesh
    base, faces, verts = clip
    out = export.write_gltf(tmp_path / "face.glb", base, faces, verts, fps=30, tol=1e-5)
    b, f, v, fps = export.read_gltf(tmp_path / "face.glb")                  # from the file alone
    assert fps == 30 and v.shape == verts.shape and (f == faces).all()
    np.testing.assert_allclose(b, base, atol=1e-7)
    err = np.abs(v - verts).max()
    assert err <= 1e-5 + 1e-6 and err == pytest.approx(out["max_error_m"], abs=1e-6)
    assert 2 <= out["targets"] < len(verts)                                   # a basis, not one target per frame
    g = pygltflib.GLTF2().load(str(tmp_path / "face.glb"))
    (channel,) = g.animations[0].channels
    assert channel.target.path == "weights" and g.animations[0].samplers[0].interpolation == "LINEAR"
    assert len(g.meshes[0].primitives[0].targets) == out["targets"] == len(g.meshes[0].weights)
    mesh = trimesh.load(tmp_path / "face.glb", force="mesh")                  # another loader: the base mesh
    assert mesh.vertices.shape == base.shape and len(mesh.faces) == len(faces)
    report = khronos_validate(tmp_path / "face.glb")
    assert report["numErrors"] == 0, report["messages"][:5]
    assert report["numWarnings"] == 0, report["messages"][:5]


def test_weights_stay_in_zero_one_and_interpolate_to_the_frames_midpoint(clip, tmp_path):
    """Each component is split into a + and a - target with weights in [0, 1] (tools clamp shape keys there);
    under LINEAR interpolation their difference interpolates the component itself, so half-way between two
    frames the face is half-way between them (a sign flip between frames included)."""
    import pygltflib
    base, faces, verts = clip
    export.write_gltf(tmp_path / "f.gltf", base, faces, verts, tol=1e-6)
    g = pygltflib.GLTF2().load(str(tmp_path / "f.gltf"))
    g.convert_buffers(pygltflib.BufferFormat.BINARYBLOB)
    acc = g.accessors[g.animations[0].samplers[0].output]
    view = g.bufferViews[acc.bufferView]
    w = np.frombuffer(g.binary_blob(), np.float32, acc.count, view.byteOffset or 0).reshape(len(verts), -1)
    assert w.min() >= 0 and w.max() <= 1 + 1e-6
    k = w.shape[1] // 2
    assert ((w[:-1, :k] > 0) & (w[1:, k:] > 0)).any()                        # some component changes sign
    b, _, v, _ = export.read_gltf(tmp_path / "f.gltf")
    np.testing.assert_allclose(v, verts, atol=1.1e-6)                        # frames are exact (1 µm)...
    mid = 0.5 * (w[:-1] + w[1:])                                             # ...and so is the midpoint
    half = b[None] + np.einsum("tk,kvc->tvc", mid, _targets(tmp_path / "f.gltf"))   # (T-1, V, 3)
    np.testing.assert_allclose(half, 0.5 * (verts[:-1] + verts[1:]), atol=1.1e-6)


def _targets(path) -> np.ndarray:
    import pygltflib
    g = pygltflib.GLTF2().load(str(path))
    g.convert_buffers(pygltflib.BufferFormat.BINARYBLOB)
    blob = g.binary_blob()
    out = []
    for t in g.meshes[0].primitives[0].targets:
        acc = g.accessors[t["POSITION"]]
        out.append(np.frombuffer(blob, np.float32, acc.count * 3, g.bufferViews[acc.bufferView].byteOffset or 0)
                   .reshape(-1, 3))
    return np.stack(out).astype(np.float64)


def test_bad_input_is_named_before_anything_is_written(clip, tmp_path):
    base, faces, verts = clip
    with pytest.raises(ValueError, match=r"x.glb: vertices \(4, 7, 3\) do not animate a template of \(\d+, 3\)"):
        export.write_gltf(tmp_path / "x.glb", base, faces, verts[:4, :7])
    with pytest.raises(ValueError, match="x.glb: faces .* are not triangles of a"):
        export.write_gltf(tmp_path / "x.glb", base, faces + len(base), verts)
    bad = verts.copy()
    bad[2, 5, 1] = np.nan
    with pytest.raises(ValueError, match="x.glb: .*NaN"):
        export.write_gltf(tmp_path / "x.glb", base, faces, bad)
    assert not list(tmp_path.iterdir())


def test_mtk_animate_writes_glb_and_an_obj_sequence(smoke_ds, moving_model, tmp_path):
    """What a user runs: `mtk animate speech.wav --checkpoint MODEL --out face.glb obj/face.obj face.npy`; the
    glb and the OBJ frames hold the same animation as the .npy, and it moves."""
    import trimesh

    from mtk.__main__ import main
    moving_model.save_pretrained(tmp_path / "model")                         # not the template repeated
    sf.write(tmp_path / "in.wav", smoke_ds.sequences("test")[1].audio(), 16000)
    main(["animate", str(tmp_path / "in.wav"), "--checkpoint", str(tmp_path / "model"), "--out",
          str(tmp_path / "face.glb"), str(tmp_path / "obj" / "face.obj"), str(tmp_path / "face.npy")])
    v = np.load(tmp_path / "face.npy")                                      # (T, V, 3)
    assert np.abs(v - smoke_ds.template.vertices).max() > 1e-3
    _, f, g, fps = export.read_gltf(tmp_path / "face.glb")
    assert fps == 30 and np.abs(g - v).max() <= 1.1e-5 and (f == smoke_ds.template.faces).all()
    objs = sorted((tmp_path / "obj").glob("face_*.obj"))
    assert [p.name for p in objs[:2]] == ["face_00000.obj", "face_00001.obj"] and len(objs) == len(v)
    last = trimesh.load(objs[-1], process=False)
    np.testing.assert_allclose(last.vertices, v[-1], atol=1e-6)
    assert len(last.faces) == len(smoke_ds.template.faces)
