"""Style editing: move a speaking style between two speakers, exaggerate it or flatten it.

MemoryTalker's stage 2 speaks in a style w_s (n,), one weight per memory slot, and reads nothing else about
the speaker (Eq. 14: M~ = diag(w_s) M). So a style can be edited as a vector:

    w(mix, scale) = w_mean + scale * ((1 - mix) * w_A + mix * w_B - w_mean)

    mix     0: speaker A's style, 1: speaker B's, in between a blend (outside [0, 1]: extrapolated)
    scale   1: as is, 0: the mean style (flattened), 2: twice its deviation from the mean (exaggerated)

w_A and w_B are what the style encoder gives on a speaker's clips, averaged (`speaker_style`); w_mean the
average over the training speakers (`mean_style`). The animation is then `model.animate(audio, sr,
style=w)`: the same speech, the same content path, only the memory's slot weights changed. `StyleEditor`
holds one clip and two styles and gives the vertices and the mouth opening for any (mix, scale): what the
sliders of notebook 07 call (`StyleEditor.widget`).
"""
from __future__ import annotations

import io

import numpy as np


def clip_style(model, audio, sample_rate: int = 16000) -> np.ndarray:
    """w_s (n,) the model's style encoder reads from one recording (any rate; resampled to 16 kHz mono)."""
    import torch

    from .checks import check_audio
    from .data import to_mono_16k
    x = to_mono_16k(check_audio(audio, sample_rate), int(sample_rate), source="clip_style(audio)")
    dev = next(model.parameters()).device
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            _, w = model.style_weights(torch.from_numpy(x)[None].to(dev), torch.tensor([len(x)], device=dev))
    finally:
        model.train(was)
    return w[0].cpu().numpy().astype(np.float64)


def speaker_style(model, sequences) -> np.ndarray:
    """The mean w_s (n,) over clips (`data.Sequence`s, e.g. one speaker's reference sentences)."""
    if not len(sequences):
        raise ValueError("speaker_style: no clips given")
    return np.mean([clip_style(model, s.audio()) for s in sequences], axis=0)


def mean_style(model, dataset) -> np.ndarray:
    """The mean of the training speakers' styles (each speaker weighted alike)."""
    by = {}
    for s in dataset.sequences("train"):
        by.setdefault(s.subject, []).append(s)
    return np.mean([speaker_style(model, seqs) for seqs in by.values()], axis=0)


def edit(w_a: np.ndarray, w_b: np.ndarray | None = None, mix: float = 0.0, scale: float = 1.0,
         mean: np.ndarray | None = None) -> np.ndarray:
    """w_mean + scale * ((1 - mix) w_A + mix w_B - w_mean) (the module docstring); w_B defaults to w_A and
    w_mean to the average of w_A and w_B. All (n,)."""
    w_a = np.asarray(w_a, dtype=np.float64)
    w_b = w_a if w_b is None else np.asarray(w_b, dtype=np.float64)
    mean = None if mean is None else np.asarray(mean, dtype=np.float64)
    if w_a.shape != w_b.shape or w_a.ndim != 1 or (mean is not None and mean.shape != w_a.shape):
        got = "" if mean is None else f" and mean {mean.shape}"
        raise ValueError(f"edit: styles of shapes {w_a.shape}, {w_b.shape}{got}; expected the same (n,) for all")
    mean = (w_a + w_b) / 2 if mean is None else mean
    if not np.isfinite([mix, scale]).all():
        raise ValueError(f"edit: mix = {mix}, scale = {scale}; expected finite numbers")
    return mean + scale * ((1 - mix) * w_a + mix * w_b - mean)


class StyleEditor:
    """One clip animated in an edited style: `update(mix, scale)` -> {"w", "vertices" (T, V, 3),
    "mouth" (T,) metres}; the first call per setting runs the model, repeated settings are remembered."""

    def __init__(self, model, audio, w_a, w_b, mean, sample_rate: int = 16000, template=None):
        self.model, self.audio, self.sample_rate = model, audio, sample_rate
        self.template = template if template is not None else model.template
        self.w_a, self.w_b, self.mean = (np.asarray(x, dtype=np.float64) for x in (w_a, w_b, mean))
        self._cache: dict[tuple[float, float], dict] = {}

    def update(self, mix: float = 0.0, scale: float = 1.0) -> dict:
        from .viz import mouth_opening
        key = (round(float(mix), 6), round(float(scale), 6))
        if key not in self._cache:
            w = edit(self.w_a, self.w_b, mix, scale, self.mean)
            v = self.model.animate(self.audio, self.sample_rate, self.template, style=w)   # (T, V, 3)
            self._cache[key] = {"w": w, "vertices": v, "mouth": mouth_opening(v, self.template)}
        return self._cache[key]

    def widget(self, names: tuple[str, str] = ("A", "B"), fps: int = 30, height: int = 380):
        """Sliders (blend A -> B, exaggeration), a k3d view of the edited animation, and its mouth opening over
        time beside speaker A's and B's (a PNG in an `ipywidgets.Image`, no `Output` widget: headless runners
        hang on those, jupyter/nbclient#312). Returns (box, plot); the sliders call `update`."""
        import ipywidgets as w
        import matplotlib.pyplot as plt

        from .viz import k3d_face
        base = self.update(0.0, 1.0)
        plot = k3d_face(self.template, base["vertices"], fps=fps, height=height)
        mesh = next(o for o in plot.objects if hasattr(o, "vertices"))
        mix = w.FloatSlider(value=0.0, min=-0.5, max=1.5, step=0.1, description=f"{names[0]} → {names[1]}",
                            continuous_update=False)
        scale = w.FloatSlider(value=1.0, min=0.0, max=3.0, step=0.25, description="exaggerate",
                              continuous_update=False)
        image = w.Image(format="png")
        ref = {n: self.update(m, 1.0)["mouth"] for n, m in zip(names, (0.0, 1.0))}

        def draw(*_):
            out = self.update(mix.value, scale.value)
            T = len(out["vertices"])
            mesh.vertices = {f"{t / fps:.4f}": out["vertices"][t].astype(np.float32) for t in range(T)}   # as k3d_face
            fig, ax = plt.subplots(figsize=(7, 2.2))
            t = np.arange(T) / fps
            for (n, m), c in zip(ref.items(), ("C0", "C1")):
                ax.plot(t, 1000 * m, c, lw=1, alpha=0.6, label=f"speaker {n}")
            ax.plot(t, 1000 * out["mouth"], "k", lw=1.6, label=f"edited (mix {mix.value:.1f}, scale {scale.value:.2f})")
            ax.set_xlabel("time (s)"); ax.set_ylabel("mouth opening (mm)"); ax.legend(fontsize=7, loc="upper right")
            fig.tight_layout()
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=90)
            plt.close(fig)
            image.value = buf.getvalue()

        mix.observe(draw, names="value")
        scale.observe(draw, names="value")
        draw()
        return w.VBox([w.HBox([mix, scale]), image]), plot
