"""Face templates: the neutral mesh every model animates, with region masks and landmarks.

Two sources share one interface, `Template`:

* `Template.procedural()`: a head built deterministically in code (about 5,000
  vertices, close to FLAME's 5,023). It has a forehead, brows, eye sockets with
  eyeballs, a nose, cheeks, a jaw and chin, a neck opening, and separate upper
  and lower lips: along the mouth line the vertices are duplicated, so the mouth
  is a slit that opens when the lower lip moves away from the upper one.
* `Template.from_flame(...)`: a VOCASET/FLAME template (5,023 vertices) from
  `templates.pkl`, with faces from `FLAME_sample.ply` and masks from FLAME's
  `FLAME_masks.pkl` ("lips", "forehead", "eye_region", ...) when the user has them.

Coordinates follow FLAME: metres, y up, z towards the viewer (the face looks
along +z), x to the subject's left. Masks are integer index arrays (V,) into the
vertices and may contain duplicates (FLAME's "lips" does: 254 entries, 250 unique),
which the metrics keep, as the field does.

Region masks used by the kit (`baselines.md` section 4):
    lips        lip vertex error (LVE, Lip-max, LDTW), FLAME "lips"
    upper_face  upper-face dynamics (FDD), FLAME "forehead" + "eye_region"
    lower_face  below the nose: the FID motion features, the "Stab" magnitude
    eyes        both eye regions (blinks)
    face        the front of the head
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# The landmarks every template names (procedural ones have all of them).
LANDMARKS = ("mouth_corner_left", "mouth_corner_right", "upper_lip_mid", "lower_lip_mid", "chin",
             "jaw_hinge_left", "jaw_hinge_right", "nose_tip", "brow_left", "brow_right")
REGIONS = ("lips", "upper_face", "lower_face", "eyes", "face")


@dataclass
class Template:
    """A neutral face mesh with named regions.

    vertices  (V, 3) float32, metres
    faces     (F, 3) int32, counter-clockwise seen from outside
    masks     region name -> (n,) int64 vertex indices
    landmarks name -> vertex index
    """

    name: str
    vertices: np.ndarray
    faces: np.ndarray
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    landmarks: dict[str, int] = field(default_factory=dict)

    def __post_init__(self):
        self.vertices = np.asarray(self.vertices, dtype=np.float32)
        self.faces = np.asarray(self.faces, dtype=np.int32)
        if self.vertices.ndim != 2 or self.vertices.shape[1] != 3:
            raise ValueError(f"template {self.name!r}: vertices have shape {self.vertices.shape}, expected (V, 3)")
        if self.faces.size and (self.faces.ndim != 2 or self.faces.shape[1] != 3):
            raise ValueError(f"template {self.name!r}: faces have shape {self.faces.shape}, expected (F, 3)")
        if self.faces.size and (self.faces.min() < 0 or self.faces.max() >= self.V):
            raise ValueError(f"template {self.name!r}: face indices span [{self.faces.min()}, {self.faces.max()}], "
                             f"expected [0, {self.V})")
        self.masks = {k: np.asarray(v, dtype=np.int64).reshape(-1) for k, v in self.masks.items()}
        for k, idx in self.masks.items():
            if idx.size and (idx.min() < 0 or idx.max() >= self.V):
                raise ValueError(f"template {self.name!r}: mask {k!r} indexes [{idx.min()}, {idx.max()}], "
                                 f"expected indices in [0, {self.V})")

    @property
    def V(self) -> int:
        return len(self.vertices)

    def mask(self, region: str) -> np.ndarray:
        """Vertex indices of a region, with a clear error naming the ones that exist."""
        if region not in self.masks:
            raise KeyError(f"template {self.name!r} has no region {region!r}; it has {sorted(self.masks)}")
        return self.masks[region]

    def landmark(self, name: str) -> np.ndarray:
        """Position (3,) of a named landmark."""
        if name not in self.landmarks:
            raise KeyError(f"template {self.name!r} has no landmark {name!r}; it has {sorted(self.landmarks)}")
        return self.vertices[self.landmarks[name]]

    def with_vertices(self, vertices: np.ndarray, name: str | None = None) -> "Template":
        """Same topology, masks and landmarks on other neutral vertices (another speaker's template)."""
        return Template(name or self.name, vertices, self.faces, dict(self.masks), dict(self.landmarks))

    # ------------------------------------------------------------------ io
    def save(self, path: str | Path) -> None:
        path = Path(path)
        arrays = {"vertices": self.vertices, "faces": self.faces, "name": np.array(self.name)}
        arrays |= {f"mask/{k}": v for k, v in self.masks.items()}
        arrays |= {f"landmark/{k}": np.array(v) for k, v in self.landmarks.items()}
        np.savez_compressed(path, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> "Template":
        path = Path(path)
        try:
            z = np.load(path, allow_pickle=False)
        except Exception as e:  # noqa: BLE001 - rethrown with the file name
            raise ValueError(f"{path}: cannot read template npz ({e})") from e
        masks = {k[5:]: z[k] for k in z.files if k.startswith("mask/")}
        marks = {k[9:]: int(z[k]) for k in z.files if k.startswith("landmark/")}
        return cls(str(z["name"]), z["vertices"], z["faces"], masks, marks)

    # ------------------------------------------------------------- sources
    @classmethod
    def procedural(cls, resolution: str | tuple[int, int] = "default", identity=None) -> "Template":
        """The kit's procedural head; see `build_head`.

        resolution: "default" (about 5,000 vertices), "coarse" (about 1,800: a
        second topology for ScanTalk/UniTalker), "smoke" (about 700, for CI), or
        (columns, rows) of the parameter grid.
        identity: optional shape coefficients, see `IDENTITY_SHAPES`.
        """
        return build_head(resolution, identity)

    @classmethod
    def from_flame(cls, vertices, ply_path: str | Path | None = None, masks_path: str | Path | None = None,
                   name: str = "flame") -> "Template":
        """A FLAME template (VOCASET `templates.pkl` entry), optionally with faces and masks.

        vertices: (5023, 3) or (15069,) metres. ply_path: FLAME_sample.ply (faces).
        masks_path: FLAME_masks.pkl; its "lips" become `lips` (kept raw, with
        duplicates), "forehead" and "eye_region" become `upper_face` (the 827-vertex
        union DiffSpeaker uses), "eye_region" becomes `eyes`, "face" becomes `face`,
        and `lower_face` is the face vertices below the nose region.
        """
        verts = np.asarray(vertices, dtype=np.float32).reshape(-1, 3)
        faces = read_ply(ply_path)[1] if ply_path is not None else np.zeros((0, 3), np.int32)
        masks: dict[str, np.ndarray] = {}
        if masks_path is not None:
            raw = read_flame_masks(masks_path)
            masks["lips"] = raw["lips"]
            masks["upper_face"] = np.union1d(raw["forehead"], raw["eye_region"])
            masks["eyes"] = np.unique(raw["eye_region"])
            masks["face"] = np.unique(raw["face"])
            nose_bottom = verts[raw["nose"], 1].min()
            masks["lower_face"] = masks["face"][verts[masks["face"], 1] < nose_bottom]
            for k in ("forehead", "eye_region", "nose", "neck"):
                if k in raw:
                    masks[f"flame_{k}"] = raw[k]
        return cls(name, verts, faces, masks, {})


# ---------------------------------------------------------------------------
# File readers for the real (FLAME / VOCASET) path
# ---------------------------------------------------------------------------

def read_flame_masks(path: str | Path) -> dict[str, np.ndarray]:
    """FLAME_masks.pkl: a dict of region -> int index arrays (pickled with latin1)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: FLAME masks file not found (expected FLAME_masks.pkl from the FLAME website)")
    with open(path, "rb") as f:
        try:
            raw = pickle.load(f, encoding="latin1")
        except Exception as e:  # noqa: BLE001
            raise ValueError(f"{path}: cannot unpickle FLAME masks ({e})") from e
    need = ("lips", "forehead", "eye_region", "face", "nose")
    missing = [k for k in need if k not in raw]
    if missing:
        raise ValueError(f"{path}: FLAME masks lack regions {missing}; found {sorted(raw)}")
    return {k: np.asarray(v, dtype=np.int64).reshape(-1) for k, v in raw.items()}


def read_ply(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (V, 3) and triangles (F, 3) of a PLY file (FLAME_sample.ply), any of PLY's three encodings
    (`plyfile`). Raises ValueError naming the file for anything but a triangle mesh with valid indices."""
    from plyfile import PlyData
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: PLY file not found")
    try:
        ply = PlyData.read(str(path))
    except Exception as e:                                           # plyfile raises several types
        raise ValueError(f"{path}: not a PLY file plyfile can read ({type(e).__name__}: {e})") from None
    names = [el.name for el in ply.elements]
    if "vertex" not in names or "face" not in names:
        raise ValueError(f"{path}: PLY lacks a vertex or face element (has {names})")
    v = ply["vertex"]
    verts = np.stack([v["x"], v["y"], v["z"]], 1).astype(np.float32)                 # (V, 3)
    face = ply["face"]
    lists = face[face.properties[0].name]                            # vertex_indices (or vertex_index), per face
    if len(lists) and any(len(f) != 3 for f in lists):
        raise ValueError(f"{path}: only triangle faces are supported (found faces of {sorted({len(f) for f in lists})} "
                         "vertices)")
    faces = np.stack(lists).astype(np.int32) if len(lists) else np.zeros((0, 3), np.int32)   # (F, 3)
    if faces.size and (faces.min() < 0 or faces.max() >= len(verts)):
        raise ValueError(f"{path}: face indices span [{faces.min()}, {faces.max()}], expected [0, {len(verts) - 1}]")
    return verts, faces


def write_ply(path: str | Path, vertices: np.ndarray, faces: np.ndarray) -> None:
    """Binary little-endian PLY (`plyfile`), readable by `read_ply`, MeshLab and trimesh."""
    from plyfile import PlyData, PlyElement
    v = np.asarray(vertices, np.float32).reshape(-1, 3)
    f = np.asarray(faces, np.int32).reshape(-1, 3)
    vert = np.zeros(len(v), [("x", "<f4"), ("y", "<f4"), ("z", "<f4")])
    vert["x"], vert["y"], vert["z"] = v.T
    face = np.zeros(len(f), [("vertex_indices", "<i4", (3,))])
    face["vertex_indices"] = f
    PlyData([PlyElement.describe(vert, "vertex"),
             PlyElement.describe(face, "face", len_types={"vertex_indices": "u1"})], text=False,
            byte_order="<").write(str(path))


# ---------------------------------------------------------------------------
# The procedural head
# ---------------------------------------------------------------------------
# Face-space constants (metres). The mouth line is at y = MOUTH_Y on the front.
MOUTH_Y = -0.040
MOUTH_HALF_WIDTH = 0.024
EYE_X, EYE_Y = 0.033, 0.032
NOSE_Y = 0.0
CHIN_Y = -0.084
HINGE = np.array([0.060, -0.005, -0.030])   # jaw hinge (left side; mirror x for the right)

RESOLUTIONS = {"default": (88, 57), "coarse": (56, 34), "smoke": (36, 20)}

# Identity shapes: a speaker's neutral face is the base head deformed by these
# (coefficient 1 = one typical standard deviation of adult variation).
IDENTITY_SHAPES = ("head_width", "face_length", "nose_size", "lip_fullness", "jaw_width", "chin_projection")


def _smoothstep(e0, e1, x):
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def _bump(x, y, cx, cy, sx, sy):
    return np.exp(-0.5 * (((x - cx) / sx) ** 2 + ((y - cy) / sy) ** 2))


def _inverse_cdf(density, lo, hi, n, centred=False):
    """n points in [lo, hi] spaced so that their local density follows `density`."""
    grid = np.linspace(lo, hi, 4001)
    cdf = np.concatenate([[0], np.cumsum(0.5 * (density(grid[1:]) + density(grid[:-1])) * np.diff(grid))])
    q = (np.arange(n) + 0.5) / n if centred else np.linspace(0, 1, n)
    return np.interp(q * cdf[-1], cdf, grid)


def _grid_angles(C: int, R: int):
    """Column azimuths (C,) and row elevations (R,), densest on the mouth.

    Azimuth theta: 0 at the front (+z), about 3x the average density on the face.
    Elevation phi: rows from the neck to near the crown, densest around the lips
    (about 1.5 mm apart at the default resolution) and around the eyes.
    """
    theta = _inverse_cdf(lambda t: 1 + 2.2 * np.exp(-0.5 * (t / 0.45) ** 2), -np.pi, np.pi, C, centred=True)
    phi_m = np.arcsin((MOUTH_Y + 0.005 - 0.012) / 0.118)
    phi_e = np.arcsin((EYE_Y - 0.012) / 0.118)
    phi = _inverse_cdf(lambda p: 1 + 2.4 * np.exp(-0.5 * ((p - phi_m) / 0.13) ** 2)
                       + 0.9 * np.exp(-0.5 * ((p - phi_e) / 0.14) ** 2) - 0.45 * (p > 0.6),
                       -1.05, 1.42, R)
    return theta, phi


def build_head(resolution="default", identity=None) -> Template:
    """Build the procedural head (deterministic; no randomness at all).

    Construction: a parameter grid (theta, phi) is mapped onto an ellipsoid,
    tapered into a jaw and a neck, then displaced along the surface normal by
    smooth face features written in face coordinates (x, y): brow ridge, eye
    sockets with eyeballs, nose, cheekbones, lips, chin. A pole vertex closes the
    crown; the neck stays open (as FLAME's). The grid row closest to the mouth
    line is split between the mouth corners into an upper-lip and a lower-lip
    row (duplicated vertices at the same rest position), giving the mouth slit.
    """
    C, R = RESOLUTIONS[resolution] if isinstance(resolution, str) else resolution
    if C < 24 or R < 14:
        raise ValueError(f"procedural head resolution {C}x{R} too small; expected at least 24x14")
    ident = np.zeros(len(IDENTITY_SHAPES)) if identity is None else np.asarray(identity, float).reshape(-1)
    if ident.shape != (len(IDENTITY_SHAPES),):
        raise ValueError(f"identity has {ident.size} coefficients, expected {len(IDENTITY_SHAPES)} {IDENTITY_SHAPES}")
    k_width, k_length, k_nose, k_lips, k_jaw, k_chin = ident * np.array([0.05, 0.04, 0.15, 0.15, 0.06, 0.25])

    theta, phi = _grid_angles(C, R)
    # put one row exactly on the mouth line: move the row nearest to the elevation
    # whose front point lies at y = MOUTH_Y on the base ellipsoid
    center = np.array([0.0, 0.012, -0.012])
    ay, az, ax = 0.118, 0.100, 0.080
    phi_m = np.arcsin(np.clip((MOUTH_Y - center[1]) / ay, -1, 1))
    r_m = int(np.argmin(np.abs(phi - phi_m)))
    phi[r_m] = phi_m
    TH, PH = np.meshgrid(theta, phi)                           # (R, C)

    # ---- base ellipsoid
    dx, dy, dz = np.sin(TH) * np.cos(PH), np.sin(PH), np.cos(TH) * np.cos(PH)
    x, y, z = ax * dx, ay * dy, az * dz
    x = x * (1 + k_width)
    # ---- face length: stretch below the eyes
    y = np.where(y < EYE_Y, EYE_Y + (y - EYE_Y) * (1 + k_length), y)
    # ---- jaw taper: narrow the lower head towards the chin, keep the back round
    below = _smoothstep(-0.005, -0.095, y)                      # 0 above the nose, 1 at the chin
    front = _smoothstep(-0.4, 0.5, dz)                          # front half of the head
    x = x * (1 - (0.40 - k_jaw) * below ** 1.3 * front)
    z = z * (1 - 0.12 * below * (1 - front))
    # ---- flatten the face a little (faces are flatter than ellipsoids), and the cheeks
    z = np.where(dz > 0, z - 0.014 * dz ** 4 * (1 - below), z)
    x = x * (1 - 0.05 * _smoothstep(0.5, 0.9, dz) * (1 - below))
    # ---- neck: the lowest rows become a cylinder going down and back
    neck = _smoothstep(-0.080, -0.118, y)
    rad = np.hypot(x, z) + 1e-9
    neck_r = 0.050
    x = x * (1 - neck) + neck * x / rad * neck_r
    z = z * (1 - neck) + neck * ((z / rad) * neck_r * 1.08 - 0.022)
    y = np.where(neck > 0, y - 0.070 * neck ** 2, y)

    # ---- features along the normal (approximately radial in the xz-plane + y)
    fx, fy = x + center[0], y + center[1]                       # face (world) coordinates
    on_face = _smoothstep(0.35, 0.75, dz)                       # only the front
    ex = np.abs(fx)
    h = np.zeros_like(x)
    # brow ridge and forehead
    h += 0.008 * _bump(ex, fy, 0.028, 0.049, 0.024, 0.008)
    # eye sockets, eyeballs, upper-lid fold
    h -= 0.016 * _bump(ex, fy, EYE_X, EYE_Y, 0.017, 0.012)
    h += 0.012 * _bump(ex, fy, EYE_X, EYE_Y - 0.001, 0.0090, 0.0068)
    h += 0.003 * _bump(ex, fy, EYE_X, EYE_Y + 0.007, 0.010, 0.0025)
    # nose: bridge, tip, wings
    nose_len = 1 + k_nose
    bridge = _bump(fx, fy, 0.0, 0.014, 0.0070, 0.018) * _smoothstep(0.046, 0.030, fy)
    h += 0.013 * nose_len * bridge
    h += 0.019 * nose_len * _bump(fx, fy, 0.0, NOSE_Y - 0.004, 0.0105, 0.0095)
    h += 0.008 * _bump(ex, fy, 0.0125, NOSE_Y - 0.009, 0.0065, 0.0060)
    h -= 0.003 * _bump(fx, fy, 0.0, NOSE_Y - 0.016, 0.008, 0.003)        # under the nose
    # cheeks and folds
    h += 0.007 * _bump(ex, fy, 0.047, 0.004, 0.017, 0.017)               # cheekbones
    h -= 0.0025 * _bump(ex, fy, 0.031, -0.032, 0.005, 0.018)             # nasolabial fold
    # lips: upper and lower vermilion, thickest in the middle and thin at the corners
    q = np.clip(1 - (ex / MOUTH_HALF_WIDTH) ** 2, 0, 1)                 # 1 mid, 0 at the corners
    lip_w = _smoothstep(0.0, 0.25, q)
    fullness = 1 + k_lips
    bow = 0.0012 * _bump(ex, fy, 0.005, MOUTH_Y + 0.009, 0.004, 0.003)  # cupid's bow
    upper = np.exp(-0.5 * ((fy - (MOUTH_Y + 0.0048 * (0.3 + 0.7 * q))) / (0.0013 + 0.0030 * q)) ** 2)
    lower = np.exp(-0.5 * ((fy - (MOUTH_Y - 0.0060 * (0.3 + 0.7 * q))) / (0.0015 + 0.0036 * q)) ** 2)
    h += fullness * lip_w * (0.0072 * upper + 0.0078 * lower) + bow
    h += 0.011 * _bump(fx, fy, 0.0, MOUTH_Y, 0.028, 0.024)                # muzzle
    h -= 0.0030 * lip_w * np.exp(-0.5 * ((fy - MOUTH_Y) / 0.0014) ** 2)  # where the lips meet
    # chin
    h += (0.011 + k_chin * 0.010) * _bump(fx, fy, 0.0, CHIN_Y + 0.010, 0.017, 0.011)
    h -= 0.004 * _bump(fx, fy, 0.0, MOUTH_Y - 0.021, 0.013, 0.0045)      # mentolabial sulcus
    h = h * on_face

    # normal of the base surface ~ gradient of the ellipsoid, good enough for bumps
    nx, ny, nz = x / ax ** 2, y / ay ** 2 * 0.6, z / az ** 2
    nn = np.sqrt(nx ** 2 + ny ** 2 + nz ** 2) + 1e-12
    x, y, z = x + h * nx / nn, y + h * ny / nn, z + h * nz / nn
    P = np.stack([x, y, z], -1) + center                         # (R, C, 3)

    if np.any(ident != 0):
        # an identity only moves vertices: topology, masks and landmarks are the canonical head's
        canon = build_head((C, R))
        cols = canon.masks["mouth_slit_upper"] - r_m * C
        verts = np.concatenate([P.reshape(-1, 3), P[R - 1].mean(0, keepdims=True) + [[0.0, 0.0015, 0.0]],
                                P[r_m, cols]])
        return canon.with_vertices(verts, name="procedural+" + ",".join(f"{v:+.2f}" for v in ident))

    # ---- topology
    idx = np.arange(R * C).reshape(R, C)
    V = [P.reshape(-1, 3)]
    # crown pole
    pole = R * C
    V.append(P[R - 1].mean(0, keepdims=True) + np.array([[0.0, 0.0015, 0.0]]))
    # mouth slit: duplicate the mouth row between the corners (exclusive)
    front_cols = np.where(np.abs(P[r_m, :, 0]) < MOUTH_HALF_WIDTH)[0]
    front_cols = front_cols[np.cos(theta[front_cols]) > 0]
    slit_cols = front_cols[1:-1]                                 # corners stay joined
    dup = {int(c): R * C + 1 + i for i, c in enumerate(slit_cols)}
    V.append(P[r_m, slit_cols])
    verts = np.concatenate(V, 0)

    faces = []
    for r in range(R - 1):
        for c in range(C):
            c2 = (c + 1) % C
            a, b, cc, d = idx[r, c], idx[r, c2], idx[r + 1, c2], idx[r + 1, c]
            if r == r_m - 1:            # quads just below the mouth row use the lower-lip copies
                cc = dup.get(c2, cc)
                d = dup.get(c, d)
            faces += [(a, b, cc), (a, cc, d)]
    for c in range(C):
        faces.append((idx[R - 1, c], idx[R - 1, (c + 1) % C], pole))
    faces = np.array(faces, np.int32)

    # ---- masks, from parameter-space positions (identical for every identity)
    base = P - center
    bx, by, bz = base[..., 0].reshape(-1), base[..., 1].reshape(-1), np.cos(TH).reshape(-1)
    ext = lambda a: np.concatenate([a, a[:1] * 0 + a[idx[R - 1, 0]], a[idx[r_m, slit_cols]]])  # noqa: E731
    bx, by, bz = ext(bx), ext(by), ext(bz)
    fy_ = by + center[1]
    ax_ = np.abs(bx)
    is_front = bz > 0.2
    lips = is_front & (ax_ < MOUTH_HALF_WIDTH + 0.003) & (fy_ > MOUTH_Y - 0.0135) & (fy_ < MOUTH_Y + 0.0105)
    eyes = is_front & (((ax_ - EYE_X) / 0.020) ** 2 + ((fy_ - EYE_Y) / 0.014) ** 2 < 1)
    forehead = is_front & (fy_ > EYE_Y + 0.010) & (fy_ < 0.100) & (ax_ < 0.060)
    upper = eyes | forehead
    face = (bz > 0.25) & (fy_ > CHIN_Y - 0.025) & (fy_ < 0.100)
    lower = face & (fy_ < NOSE_Y - 0.014)
    masks = {"lips": np.where(lips)[0], "upper_face": np.where(upper)[0], "lower_face": np.where(lower)[0],
             "eyes": np.where(eyes)[0], "face": np.where(face)[0],
             "eye_left": np.where(eyes & (bx > 0))[0], "eye_right": np.where(eyes & (bx < 0))[0],
             "forehead": np.where(forehead)[0],
             # the two sides of the mouth slit: same rest positions, upper and lower lip
             "mouth_slit_upper": idx[r_m, slit_cols].astype(np.int64),
             "mouth_slit_lower": np.array([dup[int(c)] for c in slit_cols], np.int64)}

    # ---- landmarks
    mid_col = int(np.argmin(np.abs(theta)))
    def nearest(p, among=None):
        cand = np.arange(len(verts)) if among is None else among
        return int(cand[np.argmin(((verts[cand] - p) ** 2).sum(1))])
    landmarks = {
        "mouth_corner_left": int(idx[r_m, front_cols[np.argmax(P[r_m, front_cols, 0])]]),
        "mouth_corner_right": int(idx[r_m, front_cols[np.argmin(P[r_m, front_cols, 0])]]),
        "upper_lip_mid": int(idx[r_m, mid_col]),
        "lower_lip_mid": int(dup.get(mid_col, idx[r_m, mid_col])),
        "chin": nearest(center + np.array([0, CHIN_Y - center[1], 0.2]), masks["face"]),
        "nose_tip": int(idx[:, mid_col][np.argmax(P[:, mid_col, 2] * (np.abs(P[:, mid_col, 1] - NOSE_Y) < 0.03))]),
        "jaw_hinge_left": nearest(HINGE * [1, 1, 1] + [0.03, 0, 0]),
        "jaw_hinge_right": nearest(HINGE * [-1, 1, 1] + [-0.03, 0, 0]),
        "brow_left": nearest(np.array([EYE_X, EYE_Y + 0.018, 0.2])),
        "brow_right": nearest(np.array([-EYE_X, EYE_Y + 0.018, 0.2])),
    }
    # chin: the most forward point of the midline below the lips
    col = idx[:, mid_col]
    below_lips = P[:, mid_col, 1] < MOUTH_Y - 0.025
    landmarks["chin"] = int(col[np.argmax(np.where(below_lips & (P[:, mid_col, 1] > CHIN_Y - 0.02), P[:, mid_col, 2], -1))])
    for side, sx in (("left", 1), ("right", -1)):
        target = np.array([sx * EYE_X, EYE_Y + 0.017])
        landmarks[f"brow_{side}"] = int(np.argmin(np.where(bz > 0.2, (bx - target[0]) ** 2 + (fy_ - target[1]) ** 2, 1e9)))
    return Template("procedural", verts, faces, masks, landmarks)
