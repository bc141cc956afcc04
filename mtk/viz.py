"""Seeing faces: matplotlib renders (always work, PNG), k3d widgets (interactive, HTML snapshots), saving.

Every figure a notebook shows is also written under `paths.figures_dir()`, so a
widget is never the only way to see a result: `savefig` for matplotlib and
`save_k3d` for k3d (an HTML page that opens offline).

Views follow the template convention: y up, z towards the viewer.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .paths import figures_dir

VIEWS = {"front": (0, 90), "three_quarter": (12, 50), "side": (0, 0)}
SKIN = np.array([0.86, 0.74, 0.64])
REGION_COLORS = {"lips": (0.85, 0.35, 0.35), "upper_face": (0.35, 0.55, 0.85), "eyes": (0.2, 0.3, 0.6),
                 "lower_face": (0.90, 0.72, 0.45)}


# --------------------------------------------------------------------------- saving
def savefig(fig, name: str, dpi: int = 110) -> Path:
    """Write a matplotlib figure to figures/<name> (PNG unless the name says otherwise)."""
    path = figures_dir() / (name if Path(name).suffix else f"{name}.png")
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def save_html(html: str, name: str) -> Path:
    path = figures_dir() / (name if name.endswith(".html") else f"{name}.html")
    path.write_text(html)
    return path


# k3d's "full" snapshot (k3d 3.x) carries its viewer in three scripts before the scene: the fflate
# decompressor, the zlib-compressed k3d bundle, and require.js. They are the same in every snapshot.
_K3D_VIEWER = re.compile(r"<script id='fflatejs'>(.*?)</script>\s*<script>(.*?)</script>\s*"
                         r"<script id='requirejs'>(.*?)</script>", re.S)


def k3d_html(plot, autoplay: bool = False) -> str:
    """A k3d plot as one standalone HTML page that opens offline: k3d's "full" snapshot, the viewer inlined
    (about 1.2 MB; what `animate --out face.html` writes). Nothing is fetched from a CDN."""
    plot.snapshot_type = "full"
    return plot.get_snapshot(additional_js_code="K3DInstance.startAutoPlay();" if autoplay else "")


def split_viewer(html: str, viewer: str) -> tuple[str, str]:
    """A full snapshot -> (the page loading the viewer from the file `viewer` beside it, the viewer's script:
    the snapshot's fflate, compressed k3d bundle and require.js scripts joined, in their order)."""
    found = _K3D_VIEWER.findall(html)
    if len(found) != 1:
        raise RuntimeError("this k3d version's snapshot does not have the viewer scripts mtk.viz expects "
                           "(fflate, the compressed bundle, require.js); use k3d_html for a standalone page")
    return _K3D_VIEWER.sub(lambda m: f'<script src="{viewer}"></script>', html), "\n;\n".join(found[0])


def save_k3d(plot, name: str, autoplay: bool = False, standalone: bool = False) -> Path:
    """A k3d plot as figures/<name>.html that opens offline, in any browser, from the file system.

    By default the page loads k3d's viewer from `k3d-viewer-<version>.js` beside it (shared by every page,
    as plotly's pages share `plotly.min.js`; rewritten if it differs); standalone=True inlines it (1.2 MB)."""
    import k3d
    html = k3d_html(plot, autoplay)
    if standalone:
        return save_html(html, name)
    js_name = f"k3d-viewer-{k3d.__version__}.js"
    page, js = split_viewer(html, js_name)
    js_path = figures_dir() / js_name
    if not js_path.exists() or js_path.read_text() != js:
        js_path.write_text(js)
    return save_html(page, name)


# --------------------------------------------------------------------------- matplotlib
def face_colors(template, regions=("lips", "upper_face"), base=SKIN) -> np.ndarray:
    """(V, 3) RGB per vertex: skin, with the named regions tinted."""
    c = np.tile(base, (template.V, 1))
    for r in regions:
        if r in template.masks:
            c[template.masks[r]] = REGION_COLORS.get(r, (0.5, 0.5, 0.5))
    return c


def render_mesh(ax, vertices, faces, view: str = "front", vertex_colors=None, values=None, cmap="magma",
                vrange=None, zoom: float = 1.0, center=None, title: str | None = None):
    """Draw a mesh on a matplotlib 3D axis with Lambert shading (no OpenGL needed).

    vertices (V, 3); faces (F, 3); vertex_colors (V, 3) or values (V,) mapped
    through `cmap` over `vrange`. Returns the Poly3DCollection.
    """
    import matplotlib
    from mpl_toolkits.mplot3d.art3d import Poly3DCollection

    v = np.asarray(vertices, np.float64).reshape(-1, 3)
    tri = v[faces]                                                   # (F, 3, 3)
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    n /= np.linalg.norm(n, axis=1, keepdims=True) + 1e-12
    light = np.array([0.35, 0.45, 0.82])
    light /= np.linalg.norm(light)
    shade = 0.25 + 0.75 * np.clip(n @ light, 0, 1)                   # (F,)
    if values is not None:
        vals = np.asarray(values, float)[faces].mean(1)
        lo, hi = vrange if vrange is not None else (vals.min(), vals.max() + 1e-12)
        base = matplotlib.colormaps[cmap](np.clip((vals - lo) / (hi - lo), 0, 1))[:, :3]
    elif vertex_colors is not None:
        base = np.asarray(vertex_colors)[faces].mean(1)
    else:
        base = np.tile(SKIN, (len(faces), 1))
    fc = np.clip(base * shade[:, None], 0, 1)
    # matplotlib's z is up: plot (x, z, y)
    coll = Poly3DCollection(tri[:, :, [0, 2, 1]], facecolors=fc, edgecolors="none")
    ax.add_collection3d(coll)
    c = v.mean(0) if center is None else np.asarray(center)
    r = 0.5 * (v.max(0) - v.min(0)).max() / zoom
    ax.set_xlim(c[0] - r, c[0] + r)
    ax.set_ylim(c[2] - r, c[2] + r)
    ax.set_zlim(c[1] - r, c[1] + r)
    ax.set_box_aspect((1, 1, 1))
    el, az = VIEWS[view] if isinstance(view, str) else view
    ax.view_init(elev=el, azim=az)
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=9)
    return coll


def frames_figure(frames, faces, titles=None, view="front", zoom=1.0, center=None, size=2.6, **kw):
    """One row of rendered frames: frames is a list of (V, 3) arrays. Returns the Figure."""
    import matplotlib.pyplot as plt
    fig = plt.figure(figsize=(size * len(frames), size * 1.05))
    for i, f in enumerate(frames):
        ax = fig.add_subplot(1, len(frames), i + 1, projection="3d")
        render_mesh(ax, f, faces, view=view, zoom=zoom, center=center,
                    title=None if titles is None else titles[i], **kw)
    fig.subplots_adjust(0, 0, 1, 0.92, 0, 0)
    return fig


def mouth_opening(vertices, template) -> np.ndarray:
    """(T,) vertical distance in metres between the upper- and lower-lip midpoints (0 when the lips meet)."""
    v = np.asarray(vertices).reshape(len(vertices), -1, 3)
    return v[:, template.landmarks["upper_lip_mid"], 1] - v[:, template.landmarks["lower_lip_mid"], 1]


# --------------------------------------------------------------------------- k3d
def _rgb_uint32(c) -> np.ndarray:
    c = (np.clip(np.asarray(c), 0, 1) * 255).astype(np.uint32)
    return (c[..., 0] << 16) | (c[..., 1] << 8) | c[..., 2]


def k3d_face(template, vertices=None, fps: int = 30, colors=None, attribute=None, color_range=None,
             plot=None, translation=(0.0, 0.0, 0.0), name: str | None = None, height: int = 420):
    """A k3d plot of the template, or of an animation (T, V, 3) as a time series with a play button.

    colors: (V, 3) RGB in [0, 1] (e.g. `face_colors`); attribute: (V,) or
    (T, V) values shown through a colour map over a fixed `color_range`.
    Returns the plot (add more meshes by passing it back as `plot`).
    """
    import k3d
    plot = plot if plot is not None else k3d.plot(grid_visible=False, camera_auto_fit=False, height=height,
                                                  background_color=0xFFFFFF, axes_helper=0)
    kw = dict(indices=template.faces.astype(np.uint32), flat_shading=False, side="double", name=name,
              translation=list(translation))
    if vertices is None:
        verts = template.vertices.astype(np.float32)
    else:
        v = np.asarray(vertices, np.float32).reshape(len(vertices), -1, 3)
        verts = {f"{t / fps:.4f}": v[t] for t in range(len(v))}
    if attribute is not None:
        a = np.asarray(attribute, np.float32)
        att = a if a.ndim == 1 else {f"{t / fps:.4f}": a[t] for t in range(len(a))}
        rng = color_range if color_range is not None else [float(a.min()), float(a.max())]
        mesh = k3d.mesh(verts, attribute=att, color_map=k3d.colormaps.matplotlib_color_maps.Inferno,
                        color_range=list(rng), **kw)
        plot += mesh
        plot.colorbar_object_id = mesh.id                  # the colour bar shows this mesh's attribute range
    else:
        c = np.tile(SKIN, (template.V, 1)) if colors is None else colors
        plot += k3d.mesh(verts, colors=_rgb_uint32(c), **kw)
    # look at the face from the front (camera on +z), y up; auto-fit off, or k3d replaces this camera by its own
    plot.camera_auto_fit = False
    ctr = template.vertices.mean(0) + np.asarray(translation)
    plot.camera = [float(ctr[0]), float(ctr[1]), float(ctr[2] + 0.45), float(ctr[0]), float(ctr[1]),
                   float(ctr[2]), 0.0, 1.0, 0.0]
    return plot


def k3d_compare(template, animations: dict, gt=None, fps: int = 30, spacing: float = 0.2,
                error_range_mm: float = 5.0, height: int = 460):
    """Side-by-side k3d animations: the ground truth in skin colour, each prediction coloured by its
    per-vertex error (mm) to the ground truth on a fixed range [0, error_range_mm].

    animations: {name: (T, V, 3)}; gt: (T, V, 3) or None. Returns the plot; meshes are named.
    """
    import k3d
    plot = None
    col = 0
    if gt is not None:
        plot = k3d_face(template, gt, fps=fps, name="ground truth", height=height)
        col = 1
    for name, v in animations.items():
        v = np.asarray(v).reshape(len(v), -1, 3)
        if gt is not None:
            T = min(len(v), len(gt))
            err = np.linalg.norm(v[:T] - np.asarray(gt).reshape(len(gt), -1, 3)[:T], axis=2) * 1000
            plot = k3d_face(template, v[:T], fps=fps, attribute=err, color_range=[0.0, error_range_mm],
                            plot=plot, translation=(spacing * col, 0, 0), name=f"{name} (error, mm)",
                            height=height)
        else:
            plot = k3d_face(template, v, fps=fps, plot=plot, translation=(spacing * col, 0, 0), name=name,
                            height=height)
        col += 1
    # one plain-text caption (HTML, not k3d's LaTeX, which drops spaces); k3d's 3D labels do not render in
    # snapshots, so the caption names the heads in order
    names = (["ground truth"] if gt is not None else []) + [f"{n} (error, mm)" if gt is not None else n for n in animations]
    plot += k3d.text2d("left to right: " + " &nbsp;|&nbsp; ".join(names), position=[0.5, 0.03], reference_point="ct",
                       size=0.9, color=0x333333, is_html=True, label_box=False)
    ctr = template.vertices.mean(0) + np.array([spacing * (col - 1) / 2, 0, 0])
    plot.camera = [float(ctr[0]), float(ctr[1]), float(ctr[2] + 0.2 + 0.1 * col), float(ctr[0]),
                   float(ctr[1]), float(ctr[2]), 0.0, 1.0, 0.0]
    return plot


def player(plot, n_frames: int, fps: int = 30, audio=None, sample_rate: int = 16000):
    """ipywidgets controls for a k3d time-series plot: a play button and a frame slider (linked in the
    browser), plus an audio player (an `ipywidgets.Audio` holding a 16-bit WAV; a clip whose peak
    exceeds 1 is scaled down for playback). Returns a VBox; `set_frame` does what the slider does.

    The audio is a widget of its own rather than a display captured in an `ipywidgets.Output`: headless
    runners (nbclient, papermill) can hang on Output widgets (jupyter/nbclient#312)."""
    import io

    import ipywidgets as w
    import soundfile as sf
    play = w.Play(min=0, max=n_frames - 1, step=1, interval=int(1000 / fps), description="play")
    slider = w.IntSlider(min=0, max=n_frames - 1, description="frame", continuous_update=True)
    w.jslink((play, "value"), (slider, "value"))
    slider.observe(lambda ch: set_frame(plot, ch["new"], fps), names="value")
    rows = [w.HBox([play, slider]), plot]
    if audio is not None:
        a = np.asarray(audio, dtype=np.float32)
        peak = float(np.abs(a).max()) if a.size else 0.0
        buf = io.BytesIO()
        sf.write(buf, a / peak if peak > 1 else a, sample_rate, format="WAV", subtype="PCM_16")
        rows.append(w.Audio(value=buf.getvalue(), format="wav", autoplay=False, loop=False))
    return w.VBox(rows)


def set_frame(plot, frame: int, fps: int = 30) -> None:
    """Show frame `frame` of a k3d time-series plot (what the player's slider calls)."""
    plot.time = frame / fps


def lower_face_motion(vertices, template, region: str = "lower_face") -> np.ndarray:
    """(T,) mean displacement magnitude (m) of a region from the neutral template: how much the face moves."""
    v = np.asarray(vertices).reshape(len(vertices), -1, 3)
    idx = template.mask(region)
    return np.linalg.norm(v[:, idx] - template.vertices[idx], axis=2).mean(1)


def render_frames(vertices, faces, size: int = 480, yaw_deg: float = 20.0, zoom: float = 1.0,
                  background=(1.0, 1.0, 1.0)):
    """Yield RGB uint8 frames (size, size, 3) of an animation (T, V, 3): a fast 2D painter's-algorithm
    render (orthographic, Lambert shading; faces seen from behind, e.g. inside the open mouth, dark red).
    Uses a matplotlib Agg canvas, so it needs no display and no OpenGL."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.collections import PolyCollection
    from matplotlib.figure import Figure

    V = np.asarray(vertices, np.float64).reshape(len(vertices), -1, 3)
    a = np.radians(yaw_deg)
    R = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    ref = V[0] @ R.T
    c = ref.mean(0)
    half = 0.5 * (ref.max(0) - ref.min(0))[:2].max() * 1.08 / zoom
    fig = Figure(figsize=(size / 100, size / 100), dpi=100)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes([0, 0, 1, 1])
    ax.set_xlim(c[0] - half, c[0] + half)
    ax.set_ylim(c[1] - half, c[1] + half)
    ax.set_aspect("equal")
    ax.axis("off")
    fig.patch.set_facecolor(background)
    coll = PolyCollection([], edgecolors="none", antialiased=False)
    ax.add_collection(coll)
    light = np.array([0.3, 0.4, 0.86])
    light /= np.linalg.norm(light)
    inside = np.array([0.35, 0.08, 0.08])
    for v in V:
        p = v @ R.T                                                  # (V, 3) camera frame, looking along -z
        tri = p[faces]                                               # (F, 3, 3)
        n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        n /= np.linalg.norm(n, axis=1, keepdims=True) + 1e-12
        front = n[:, 2] > 0
        shade = 0.25 + 0.75 * np.clip(n @ light, 0, 1)
        col = np.where(front[:, None], SKIN * shade[:, None], inside * (0.6 + 0.4 * np.abs(n[:, 2:3])))
        order = np.argsort(tri[:, :, 2].mean(1))                     # far to near
        coll.set_verts(tri[order][:, :, :2])
        coll.set_facecolors(np.clip(col[order], 0, 1))
        canvas.draw()
        yield np.asarray(canvas.buffer_rgba())[:, :, :3].copy()
