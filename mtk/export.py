"""Export an animation for 3D tools: glTF 2.0 (`.glb`, `.gltf`) with morph targets, or an OBJ sequence.

glTF 2.0 (Khronos; https://registry.khronos.org/glTF/specs/2.0/glTF-2.0.html) animates a mesh's vertices with
*morph targets*: a base mesh plus K displacement fields, mixed by K weights that an animation sets over time.
Storing one target per frame is exact but gives Blender hundreds of shape keys, so the export finds a small
basis that is exact to a stated tolerance:

    D = vertices - template                (T, 3V)  every frame's displacement
    D = U S Vt                             SVD; the first K rows of Vt are enough when
    max |D - U_K S_K Vt_K| <= tol          every coordinate of every frame is within tol (default 10 µm)

Tools clamp a morph weight to a slider range that often defaults to [0, 1] (Blender's shape keys), so each
component k is written as two targets, +m_k Vt_k and -m_k Vt_k, with weights max(w, 0) / m_k and
max(-w, 0) / m_k in [0, 1] (m_k = max |w_k|). Under the LINEAR interpolation the file asks for, the two
weights' difference is the linear interpolation of w itself, so nothing is lost between frames either.

The file holds the template as a mesh (positions, smooth normals, triangles), 2K morph targets, and one
animation of their weights at the frames' times (`fps`, 30 for VOCASET and SynthVOCA). The sound is not in
it (glTF 2.0 has no audio); `extras` names the basis size and the reconstruction error. Loaders from PyPI
(pygltflib, trimesh) read it in the tests; Blender's importer and three.js's GLTFLoader read such files.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def morph_basis(displacements: np.ndarray, tol: float = 1e-5) -> tuple[np.ndarray, np.ndarray, float]:
    """(T, V, 3) displacements -> weights (T, K), targets (K, V, 3) and the largest coordinate error (metres)
    of weights @ targets, with K the fewest principal components that keep that error within `tol`."""
    T, V, _ = displacements.shape
    D = displacements.reshape(T, 3 * V).astype(np.float64)
    U, S, Vt = np.linalg.svd(D, full_matrices=False)                   # (T, r), (r,), (r, 3V)
    W = U * S                                                           # (T, r)

    def error(k: int) -> float:
        return float(np.abs(D - W[:, :k] @ Vt[:k]).max()) if k else float(np.abs(D).max(initial=0.0))

    lo, hi = 0, len(S)                                                  # error(len(S)) is round-off only
    while lo < hi:                                                      # the error falls as k grows
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if error(mid) > tol else (lo, mid)
    k = max(lo, 1)
    return W[:, :k], Vt[:k].reshape(k, V, 3), error(k)


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals (V, 3) of a triangle mesh (faces counter-clockwise from outside)."""
    v = vertices.astype(np.float64)
    n = np.cross(v[faces[:, 1]] - v[faces[:, 0]], v[faces[:, 2]] - v[faces[:, 0]])   # (F, 3), |n| = 2 area
    out = np.zeros_like(v)
    for j in range(3):
        np.add.at(out, faces[:, j], n)
    length = np.linalg.norm(out, axis=1, keepdims=True)
    return np.where(length > 0, out / np.where(length > 0, length, 1), [0.0, 0.0, 1.0])


def write_gltf(path, template_vertices: np.ndarray, faces: np.ndarray, vertices: np.ndarray, fps: float = 30.0,
               tol: float = 1e-5, name: str = "face") -> dict:
    """Write the animation `vertices` (T, V, 3) of the mesh (`template_vertices` (V, 3), `faces` (F, 3)) as
    glTF 2.0: binary `.glb` or `.gltf` with the buffer embedded. Returns what was written: frames, morph
    targets, the basis' largest error (metres) and the path."""
    import pygltflib as g

    path = Path(path)
    base = np.asarray(template_vertices, dtype=np.float32)             # (V, 3)
    faces = np.asarray(faces)
    verts = np.asarray(vertices, dtype=np.float32)                     # (T, V, 3)
    if verts.ndim != 3 or verts.shape[1:] != base.shape or base.ndim != 2 or base.shape[1] != 3:
        raise ValueError(f"{path}: vertices {verts.shape} do not animate a template of {base.shape}: expected "
                         f"(T, {base.shape[0]}, 3)")
    if faces.ndim != 2 or faces.shape[1] != 3 or not len(faces) or faces.min() < 0 or faces.max() >= len(base):
        raise ValueError(f"{path}: faces {faces.shape} (indices {faces.min(initial=0)}..{faces.max(initial=0)}) "
                         f"are not triangles of a {len(base)}-vertex mesh")
    if not len(verts) or not np.isfinite(verts).all():
        raise ValueError(f"{path}: {len(verts)} frames, or frames with NaN/inf: nothing to export")
    if path.suffix not in (".glb", ".gltf"):
        raise ValueError(f"{path}: expected a .glb or .gltf path")

    W, targets, err = morph_basis(verts - base[None], tol)             # (T, K), (K, V, 3)
    m = np.abs(W).max(0)                                               # (K,) each component's reach
    m = np.where(m > 0, m, 1.0)
    weights = np.concatenate([np.maximum(W, 0), np.maximum(-W, 0)], 1) / np.concatenate([m, m])   # (T, 2K) in [0, 1]
    fields = np.concatenate([targets * m[:, None, None], -targets * m[:, None, None]]).astype(np.float32)
    times = (np.arange(len(verts)) / fps).astype(np.float32)

    blob, views, accessors = bytearray(), [], []

    def add(array: np.ndarray, kind: str, component: int, target: int | None = None, bounds: bool = False) -> int:
        """Append `array` to the buffer (4-byte aligned) with its view and accessor; return the accessor."""
        while len(blob) % 4:
            blob.append(0)
        data = np.ascontiguousarray(array).tobytes()
        views.append(g.BufferView(buffer=0, byteOffset=len(blob), byteLength=len(data), target=target))
        blob.extend(data)
        flat = array.reshape(len(array), -1)
        acc = g.Accessor(bufferView=len(views) - 1, componentType=component, count=len(array), type=kind)
        if bounds:
            acc.min, acc.max = flat.min(0).tolist(), flat.max(0).tolist()
        accessors.append(acc)
        return len(accessors) - 1

    position = add(base, g.VEC3, g.FLOAT, g.ARRAY_BUFFER, bounds=True)
    normal = add(vertex_normals(base, faces).astype(np.float32), g.VEC3, g.FLOAT, g.ARRAY_BUFFER)
    small = len(base) < 65536
    indices = add(faces.astype(np.uint16 if small else np.uint32).reshape(-1), g.SCALAR,
                  g.UNSIGNED_SHORT if small else g.UNSIGNED_INT, g.ELEMENT_ARRAY_BUFFER)
    morphs = [add(f, g.VEC3, g.FLOAT, g.ARRAY_BUFFER, bounds=True) for f in fields]
    t_in = add(times, g.SCALAR, g.FLOAT, bounds=True)
    w_out = add(weights.astype(np.float32).reshape(-1), g.SCALAR, g.FLOAT)

    k = len(targets)
    gltf = g.GLTF2(
        asset=g.Asset(generator="mtk (mtk.export)", version="2.0"),
        scene=0, scenes=[g.Scene(nodes=[0])], nodes=[g.Node(mesh=0, name=name)],
        meshes=[g.Mesh(name=name, weights=[0.0] * (2 * k), primitives=[g.Primitive(
            attributes=g.Attributes(POSITION=position, NORMAL=normal), indices=indices, mode=g.TRIANGLES,
            material=0, targets=[{"POSITION": a} for a in morphs])],
            extras={"targetNames": [f"pc{i:02d}+" for i in range(k)] + [f"pc{i:02d}-" for i in range(k)]})],
        materials=[g.Material(name="skin", doubleSided=True, pbrMetallicRoughness=g.PbrMetallicRoughness(
            baseColorFactor=[0.8, 0.65, 0.58, 1.0], metallicFactor=0.0, roughnessFactor=0.7))],
        animations=[g.Animation(name="speech", samplers=[g.AnimationSampler(input=t_in, output=w_out,
                                                                            interpolation=g.ANIM_LINEAR)],
                                channels=[g.AnimationChannel(sampler=0, target=g.AnimationChannelTarget(
                                    node=0, path="weights"))])],
        accessors=accessors, bufferViews=views, buffers=[g.Buffer(byteLength=len(blob))],
        extras={"fps": float(fps), "frames": len(verts), "morph_components": k,
                "max_error_m": err, "tolerance_m": float(tol), "audio": "not included (glTF 2.0 has no audio)"},
    )
    gltf.set_binary_blob(bytes(blob))
    if path.suffix == ".gltf":
        gltf.convert_buffers(g.BufferFormat.DATAURI)
    path.parent.mkdir(parents=True, exist_ok=True)
    gltf.save(str(path))
    return {"path": path, "frames": len(verts), "targets": 2 * k, "max_error_m": err}


def read_gltf(path) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Read back what `write_gltf` wrote, from the file alone: -> template (V, 3), faces (F, 3), the animation's
    vertices at its keyframes (T, V, 3) and its frame rate. Works for any glTF whose first mesh is animated by
    morph-target weights with one keyframe per frame."""
    import pygltflib as g

    gltf = g.GLTF2().load(str(path))
    if gltf.binary_blob() is None:                                     # .gltf with a data URI
        gltf.convert_buffers(g.BufferFormat.BINARYBLOB)
    blob = gltf.binary_blob()
    dtypes = {g.FLOAT: np.float32, g.UNSIGNED_SHORT: np.uint16, g.UNSIGNED_INT: np.uint32}
    width = {g.SCALAR: 1, g.VEC3: 3}

    def read(i: int) -> np.ndarray:
        acc = gltf.accessors[i]
        view = gltf.bufferViews[acc.bufferView]
        start = (view.byteOffset or 0) + (acc.byteOffset or 0)
        a = np.frombuffer(blob, dtype=dtypes[acc.componentType], count=acc.count * width[acc.type], offset=start)
        return a.reshape(acc.count, width[acc.type]) if width[acc.type] > 1 else a

    prim = gltf.meshes[0].primitives[0]
    base = read(prim.attributes.POSITION).astype(np.float64)
    faces = read(prim.indices).reshape(-1, 3).astype(np.int64)
    fields = np.stack([read(t["POSITION"]) for t in prim.targets]).astype(np.float64)   # (2K, V, 3)
    sampler = gltf.animations[0].samplers[0]
    times = read(sampler.input).astype(np.float64)
    weights = read(sampler.output).astype(np.float64).reshape(len(times), len(fields))
    verts = base[None] + np.einsum("tk,kvc->tvc", weights, fields)
    fps = float(round(1 / np.diff(times).mean(), 3)) if len(times) > 1 else float("nan")   # float32 times
    return base, faces, verts, fps


def write_obj_sequence(path, vertices: np.ndarray, faces: np.ndarray) -> list[Path]:
    """One Wavefront OBJ per frame, beside `path`: face.obj -> face_00000.obj, face_00001.obj, ... (the
    numbering that Blender's "Stop-motion-OBJ" and Houdini's file sequences read). Metres, 1-based faces."""
    path = Path(path)
    verts = np.asarray(vertices, dtype=np.float64)
    face_lines = "".join(f"f {a + 1} {b + 1} {c + 1}\n" for a, b, c in np.asarray(faces))
    path.parent.mkdir(parents=True, exist_ok=True)
    out = []
    for t, v in enumerate(verts):
        p = path.with_name(f"{path.stem}_{t:05d}.obj")
        p.write_text(f"# mtk frame {t}\n" + "".join(f"v {x:.6f} {y:.6f} {z:.6f}\n" for x, y, z in v) + face_lines)
        out.append(p)
    return out
