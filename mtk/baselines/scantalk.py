"""ScanTalk (Nocentini et al., ECCV 2024): topology-agnostic speech-driven animation with DiffusionNet.

Follows the released code, `miccunifi/ScanTalk` `src/model/scantalk.py` and
`src/scantalk_train.py` (`baselines.md` 2.6). Nothing in the network depends on
the number of vertices or their order: the mesh enters only through operators
precomputed per template (DiffusionNet's `geometry.compute_operators`), so one
trained model animates meshes of any topology, including raw scans:

    a        = E_aud(audio)                        (B, T, H)   at 30 fps (`audio.AudioEncoder`)
    z        = BiLSTM_3(Linear(H -> 32)(a))        (B, T, 32)  16 per direction
    g        = DiffusionNet_enc(xyz of the template)   (V, 32)  geometry feature per vertex
    d_t      = DiffusionNet_dec([g ; z_t])         (V, 3)   per frame, per vertex, last layer zero-init
    vertices = template + d_t * motion_scale       (B, T, V*3)

DiffusionNet (Sharp et al., 2022; `nmwsharp/diffusion-net` `layers.py`), written
here from its description: Linear(C_in -> W), N blocks, Linear(W -> C_out). A block
on features x (V, C):

    x_diff = Phi exp(-lambda t) Phi^T M x          learned-time heat diffusion in the truncated
                                                  spectral basis (k eigenpairs of the Laplacian)
    grad   = (gradient of x_diff in each vertex's tangent plane) as a complex number per channel
    feat   = tanh(Re(conj(grad) * (A grad)))        A complex-linear, so invariant to the tangent frame
    x      = x + MLP([x ; x_diff ; feat])           MLP widths [3W, W, W, W], ReLU

Operators (`mesh_operators`, computed once per template and cached by a hash of
its vertices and faces): the cotangent Laplacian L, the lumped mass M, k
eigenpairs of L phi = lambda M phi (scipy eigsh, shift-invert), and a least-squares
per-vertex gradient. Since x_diff lies in the span of Phi, its gradient is
(grad Phi) times its spectral coefficients: the gradients of the k eigenvectors
are precomputed, so a block needs only dense matrix products.

Training (released script): MSE on vertices, Adam 1e-4, 200 epochs, batch 1. The
released `scantalk_mse_masked_velocity` checkpoint adds lip and velocity terms; the
kit uses MSE + velocity (`lambda_vel`), like every method here.

Deviations (all to fit a 2-core CPU, or for numerical range):
* Operators are computed on the template centred at its area-weighted centroid and
  scaled to unit surface area, which keeps the learned diffusion times in a range
  where Adam moves them and gives two meshings of one head the same spectrum. The
  geometry encoder reads these xyz times `xyz_scale` = 10 (the head spans about
  +-3; released: raw metres, about +-0.1): on the smoke set, 12 epochs reached a
  validation MSE of 6.4, 5.6, 3.7, 3.5, 3.2 (1e-6 m^2) for scales 1, 3, 10, 30, 100.
* `train_frames`: in training the decoder runs on `train_frames` frames per clip,
  drawn as random pairs of consecutive frames (so the velocity term is exact on
  them); the audio encoder and BiLSTM always run on the whole clip. The loss is then
  an unbiased estimate of the per-clip mean over all frames. None (paper) decodes
  every frame, as released. `val_stride` does the same deterministically for the
  per-epoch validation loss; `predict_batch` and evaluation always decode all frames.
* The decoder's first Linear on [g ; z_t] is computed as W_g g + W_z z_t (the same
  map), so the (T, V, 64) concatenation is never materialised.
* The output is scaled by `motion_scale` (as MemoryTalker in the kit) so that Adam's
  steps are on the motion's scale.
* Joint training on VOCASET + BIWI + Multiface is replaced by SynthVOCA alone; the
  topology transfer is shown on a second procedural template (`animate_template`).

Sizes (parameters besides the audio encoder):
    smoke    width 16, 2 + 2 blocks, 32 eigenpairs, 1-layer BiLSTM, 8 decoded frames per clip
    default  the released network: width 32, 4 + 4 blocks, 128 eigenpairs, 3-layer BiLSTM,
             84,035 parameters (+ the kit's HuBERT: 418,227); one frame pair per clip per step:
             about 1.1 s per batch of 4 on one CPU thread (V = 5,035), 90 s per epoch of the
             default split plus about 15 s of validation
    paper    HuBERT-base + 105,539, every frame decoded (batch 1, Adam 1e-4, 200 epochs)
Operators take about 1.5 s per 5,000-vertex template (128 eigenpairs), once: they are
cached in memory and under data/mesh-operators/.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as sla
import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint

from ..configs import Config
from ..audio import AudioConfig, make_audio_encoder, frames_for
from ..losses import vertex_losses
from ..paths import data_dir
from ..recipes import Recipe, method_recipe


@dataclass
class ScanTalkConfig(Config):
    """ScanTalk's architecture. Presets: `smoke` (CI), `default` (SynthVOCA on a CPU), `paper` (released)."""

    vertex_dim: int = 15069              # V * 3 of the training template (bookkeeping: the network ignores V)
    width: int = 32                      # `latent_channels`: audio latent = geometry feature = DiffusionNet width
    lstm_layers: int = 3
    encoder_blocks: int = 4
    decoder_blocks: int = 4
    k_eig: int = 128
    gradient_features: bool = True
    xyz_scale: float = 10.0              # the geometry encoder reads the unit-area mesh's xyz times this
    lambda_vel: float = 1.0
    train_frames: int | None = None      # decoder frames per clip in training (pairs); None = every frame
    val_stride: int = 1                  # validation loss on frame pairs every `val_stride` frames
    frame_chunk: int = 16                # frames per decoder call (inference; checkpointed chunks in training)
    motion_scale: float = 1.0            # metres per unit of decoder output
    audio: AudioConfig = field(default_factory=AudioConfig.default)

    @classmethod
    def smoke(cls, vertex_dim: int, **kw) -> "ScanTalkConfig":
        kw.setdefault("audio", AudioConfig.smoke())
        return cls(**{**dict(vertex_dim=vertex_dim, width=16, lstm_layers=1, encoder_blocks=2, decoder_blocks=2,
                             k_eig=32, train_frames=8, val_stride=4), **kw})

    @classmethod
    def default(cls, vertex_dim: int, **kw) -> "ScanTalkConfig":
        """The released architecture (width 32, 4 + 4 blocks, 128 eigenpairs, 3-layer BiLSTM), its
        decoder trained on one random pair of consecutive frames per clip per step to fit a CPU."""
        return cls(**{**dict(vertex_dim=vertex_dim, train_frames=2, val_stride=16), **kw})

    @classmethod
    def paper(cls, vertex_dim: int = 15069, **kw) -> "ScanTalkConfig":
        """Released: HuBERT-base, width 32, 4 + 4 blocks, 128 eigenpairs, every frame decoded."""
        kw.setdefault("audio", AudioConfig.paper())
        return cls(vertex_dim=vertex_dim, **kw)




# --------------------------------------------------------------------------- per-template operators
@dataclass
class MeshOperators:
    """What DiffusionNet needs from one mesh (V vertices, k eigenpairs), as torch tensors.

    xyz       (V, 3)   vertices centred (area-weighted) and scaled to unit surface area
    evals     (k,)     Laplacian eigenvalues, ascending
    analysis  (k, V)   Phi^T M: per-vertex values -> spectral coefficients
    synthesis (3V, k)  [Phi ; grad_x Phi ; grad_y Phi]: coefficients -> values and tangent gradients
    """

    key: str
    xyz: torch.Tensor
    evals: torch.Tensor
    analysis: torch.Tensor
    synthesis: torch.Tensor
    copies: dict = field(default_factory=dict, repr=False)     # device -> a copy there (made once)

    @property
    def V(self) -> int:
        return self.xyz.shape[0]

    def to(self, device) -> "MeshOperators":
        device = torch.device(device)
        if self.xyz.device == device:
            return self
        if device not in self.copies:
            self.copies[device] = MeshOperators(self.key, *(t.to(device) for t in (
                self.xyz, self.evals, self.analysis, self.synthesis)))
        return self.copies[device]


def cotangent_laplacian(verts: np.ndarray, faces: np.ndarray) -> tuple[sp.csr_matrix, np.ndarray]:
    """The cotangent Laplacian L (V, V), positive semi-definite, and the lumped (barycentric) mass (V,).

    For each triangle, the angle at one corner contributes cot/2 to the weight of the opposite edge;
    L = diag(sum of weights) - weights. Degenerate triangles (zero area) are skipped.
    """
    V = len(verts)
    p = verts[faces]                                                        # (F, 3 corners, 3)
    area = 0.5 * np.linalg.norm(np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]), axis=1)
    ok = area > 1e-12 * max(area.max(), 1e-30)
    faces, p, area = faces[ok], p[ok], area[ok]
    rows, cols, vals = [], [], []
    for c in range(3):                                                      # corner c, opposite edge (i, j)
        i, j = (c + 1) % 3, (c + 2) % 3
        u, v = p[:, i] - p[:, c], p[:, j] - p[:, c]
        cot = (u * v).sum(1) / (2 * area)                                   # |u x v| = 2 area
        rows += [faces[:, i], faces[:, j]]
        cols += [faces[:, j], faces[:, i]]
        vals += [0.5 * cot, 0.5 * cot]
    W = sp.coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(V, V)).tocsr()
    L = sp.diags(np.asarray(W.sum(1)).ravel()) - W
    mass = np.bincount(faces.ravel(), np.repeat(area / 3, 3), minlength=V)
    return L.tocsr(), mass


def tangent_gradient(verts: np.ndarray, faces: np.ndarray) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Least-squares gradient in each vertex's tangent plane: two (V, V) matrices (x and y components).

    Each vertex gets the area-weighted normal n and a tangent basis (b1, b2) built from geometry
    alone (b1: the global axis least aligned with n, projected), so nothing depends on vertex order.
    The gradient g at vertex i fits e_ij . g = f_j - f_i over its edges e_ij (projected to the plane).
    The block's gradient features are invariant to the choice of frame, so any such basis works.
    """
    V = len(verts)
    p = verts[faces]
    fn = np.cross(p[:, 1] - p[:, 0], p[:, 2] - p[:, 0])                     # (F, 3), |fn| = 2 area
    n = np.zeros((V, 3))
    for c in range(3):
        np.add.at(n, faces[:, c], fn)
    n /= np.linalg.norm(n, axis=1, keepdims=True) + 1e-30
    ref = np.eye(3)[np.argmin(np.abs(n), axis=1)]                            # least aligned global axis
    b1 = ref - (ref * n).sum(1, keepdims=True) * n
    b1 /= np.linalg.norm(b1, axis=1, keepdims=True)
    b2 = np.cross(n, b1)
    e = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    e = np.unique(np.sort(e, axis=1), axis=0)
    src, dst = np.concatenate([e[:, 0], e[:, 1]]), np.concatenate([e[:, 1], e[:, 0]])
    d = verts[dst] - verts[src]
    u = np.stack([(d * b1[src]).sum(1), (d * b2[src]).sum(1)], 1)          # (E, 2) edges in the tangent plane
    N = np.zeros((V, 2, 2))
    np.add.at(N, src, u[:, :, None] * u[:, None, :])
    N += 1e-8 * np.trace(N, axis1=1, axis2=2)[:, None, None] * np.eye(2) + 1e-30 * np.eye(2)
    w = np.einsum("eij,ej->ei", np.linalg.inv(N)[src], u)                  # (E, 2): weight of f_j - f_i
    out = []
    for c in range(2):
        rows = np.concatenate([src, np.arange(V)])
        cols = np.concatenate([dst, np.arange(V)])
        vals = np.concatenate([w[:, c], -np.bincount(src, w[:, c], minlength=V)])
        out.append(sp.coo_matrix((vals, (rows, cols)), shape=(V, V)).tocsr())
    return out[0], out[1]


def one_blas_thread():
    """A context limiting numpy's BLAS to one thread (if threadpoolctl is installed)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def compute_operators(vertices: np.ndarray, faces: np.ndarray, k_eig: int) -> dict[str, np.ndarray]:
    """Normalise the mesh, then the Laplacian eigenpairs and eigenvector gradients (numpy arrays)."""
    verts = np.asarray(vertices, np.float64).reshape(-1, 3)
    faces = np.asarray(faces, np.int64)
    V = len(verts)
    if faces.size == 0:
        raise ValueError("ScanTalk needs the template's faces (triangles) to build its operators; this "
                         "template has none")
    if k_eig >= V - 1:
        raise ValueError(f"k_eig = {k_eig} eigenpairs need a mesh of more than {k_eig + 1} vertices, got {V}")
    L, mass = cotangent_laplacian(verts, faces)
    centre = (mass[:, None] * verts).sum(0) / mass.sum()
    scale = np.sqrt(mass.sum())                                             # sqrt(surface area)
    verts = (verts - centre) / scale
    L, mass = cotangent_laplacian(verts, faces)                             # L is scale-free; mass sums to 1
    mass = mass + 1e-8 * mass.mean()                                        # isolated vertices stay solvable
    M = sp.diags(mass)
    # shift-invert just below 0: L + 0.01 M is positive definite, the eigenvalues nearest 0 come first
    v0 = np.ones(V) / np.sqrt(V)                                            # fixed start vector: deterministic
    with one_blas_thread():                                                 # ARPACK thrashes on shared cores
        evals, evecs = sla.eigsh(L.tocsc(), k=k_eig, M=M.tocsc(), sigma=-0.01, which="LM", v0=v0)
    order = np.argsort(evals)
    evals, evecs = np.clip(evals[order], 0.0, None), evecs[:, order]
    gx, gy = tangent_gradient(verts, faces)
    return {"xyz": verts.astype(np.float32), "evals": evals.astype(np.float32),
            "analysis": (evecs * mass[:, None]).T.astype(np.float32),
            "synthesis": np.concatenate([evecs, gx @ evecs, gy @ evecs]).astype(np.float32)}


OPERATORS_VERSION = 1                   # bump when `compute_operators` changes: invalidates the disk cache
_OPERATORS: "OrderedDict[str, MeshOperators]" = OrderedDict()
_CACHE_SIZE = 64


def template_key(vertices: np.ndarray, faces: np.ndarray, k_eig: int) -> str:
    h = hashlib.sha1()
    h.update(np.ascontiguousarray(vertices, np.float32).tobytes())
    h.update(np.ascontiguousarray(faces, np.int64).tobytes())
    h.update(f"{k_eig}-{OPERATORS_VERSION}".encode())
    return h.hexdigest()[:16]


def mesh_operators(vertices, faces, k_eig: int = 128, cache_dir=None) -> MeshOperators:
    """The operators of a mesh, computed once and cached by a hash of vertices, faces and k.

    vertices (V, 3) or (V*3,) metres, numpy or torch; faces (F, 3). Cached in memory (the last 64
    meshes) and on disk under `cache_dir` (default data/mesh-operators/; pass False to skip the disk).
    """
    v = np.asarray(vertices.detach().cpu() if torch.is_tensor(vertices) else vertices, np.float32).reshape(-1, 3)
    f = np.asarray(faces, np.int64)
    key = template_key(v, f, k_eig)
    if key in _OPERATORS:
        _OPERATORS.move_to_end(key)
        return _OPERATORS[key]
    names = ("xyz", "evals", "analysis", "synthesis")
    path = None if cache_dir is False else Path(cache_dir or data_dir() / "mesh-operators") / f"{key}.npz"
    if path is not None and path.exists():
        with np.load(path) as z:
            ops = {k: z[k] for k in names}
    else:
        ops = compute_operators(v, f, k_eig)
        if path is not None:                                                # atomic: write, then rename
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(suffix=".npz", dir=path.parent)
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, **ops)
            os.replace(tmp, path)
    _OPERATORS[key] = MeshOperators(key, *(torch.from_numpy(ops[k]) for k in names))
    while len(_OPERATORS) > _CACHE_SIZE:
        _OPERATORS.popitem(last=False)
    return _OPERATORS[key]


# --------------------------------------------------------------------------- DiffusionNet
class DiffusionBlock(nn.Module):
    """One DiffusionNet block on features x (V, N, C): N fields (frames) on one mesh, C channels."""

    def __init__(self, width: int, gradient_features: bool = True):
        super().__init__()
        self.diffusion_time = nn.Parameter(torch.zeros(width))              # t per channel, released init 0
        self.gradient_features = gradient_features
        if gradient_features:
            self.A_re = nn.Linear(width, width, bias=False)
            self.A_im = nn.Linear(width, width, bias=False)
        n_in = (3 if gradient_features else 2) * width
        self.mlp = nn.Sequential(nn.Linear(n_in, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                                 nn.Linear(width, width))

    def forward(self, x: torch.Tensor, ops: MeshOperators) -> torch.Tensor:
        V, N, C = x.shape
        if bool((self.diffusion_time < 1e-8).any()):   # keep t > 0 as released, in place only when an optimiser
            with torch.no_grad():                       # step pushed it below (a block used several times in one
                self.diffusion_time.clamp_(min=1e-8)    # step must not change in between)
        spec = (ops.analysis @ x.reshape(V, N * C)).view(-1, N, C)          # (k, N, C)
        spec = spec * torch.exp(-ops.evals[:, None, None] * self.diffusion_time)
        n_rows = 3 * V if self.gradient_features else V
        out = (ops.synthesis[:n_rows] @ spec.reshape(-1, N * C)).view(-1, N, C)
        x_diff = out[:V]                                                    # (V, N, C)
        feats = [x, x_diff]
        if self.gradient_features:
            gx, gy = out[V:2 * V], out[2 * V:]                              # tangent gradient, complex gx + i gy
            re = self.A_re(gx) - self.A_im(gy)
            im = self.A_re(gy) + self.A_im(gx)
            feats.append(torch.tanh(gx * re + gy * im))
        return x + self.mlp(torch.cat(feats, -1))


class DiffusionNet(nn.Module):
    """Linear(C_in -> W), `n_blocks` DiffusionBlocks, Linear(W -> C_out); outputs at vertices."""

    def __init__(self, c_in: int, c_out: int, width: int, n_blocks: int, gradient_features: bool = True):
        super().__init__()
        self.first = nn.Linear(c_in, width)
        self.blocks = nn.ModuleList(DiffusionBlock(width, gradient_features) for _ in range(n_blocks))
        self.last = nn.Linear(width, c_out)

    def forward(self, x: torch.Tensor, ops: MeshOperators, first_done: bool = False) -> torch.Tensor:
        """x (V, N, C_in) -> (V, N, C_out); first_done: x is already the first layer's output (V, N, W)."""
        h = x if first_done else self.first(x)
        for block in self.blocks:
            h = block(h, ops)
        return self.last(h)


# --------------------------------------------------------------------------- the model
class ScanTalk(nn.Module):
    """The full model. `forward(batch, stage)` returns the losses; `predict_batch` animates a batch."""

    n_stages = 1

    def __init__(self, cfg: ScanTalkConfig, template=None):
        super().__init__()
        self.cfg = cfg
        W = cfg.width
        self.audio_encoder = make_audio_encoder(cfg.audio)
        self.audio_embedding = nn.Linear(self.audio_encoder.hidden_size, W)
        self.lstm = nn.LSTM(W, W // 2, num_layers=cfg.lstm_layers, batch_first=True, bidirectional=True)
        self.encoder = DiffusionNet(3, W, W, cfg.encoder_blocks, cfg.gradient_features)
        self.decoder = DiffusionNet(2 * W, 3, W, cfg.decoder_blocks, cfg.gradient_features)
        nn.init.zeros_(self.decoder.last.weight)
        nn.init.zeros_(self.decoder.last.bias)
        self.template = template                      # a mtk.synthvoca.template.Template: its faces give the topology

    @classmethod
    def from_dataset(cls, cfg: ScanTalkConfig, dataset) -> "ScanTalk":
        return cls(cfg, dataset.template)

    def set_template(self, template) -> "ScanTalk":
        """Animate meshes of this template's topology from now on (its faces; vertices come per clip)."""
        self.template = template
        return self

    # ------------------------------------------------------------------ pieces
    def operators(self, vertices, template=None) -> MeshOperators:
        """Cached operators for neutral vertices (V, 3) or (V*3,) on the faces of `template` (a `Template`
        of the same topology; default: the one set by `from_dataset` / `set_template`)."""
        template = self.template if template is None else template
        n = (vertices.numel() if torch.is_tensor(vertices) else np.size(vertices)) // 3
        if template is None or template.V != n:
            have = "none" if template is None else f"{template.name!r} with {template.V} vertices"
            raise ValueError(f"a clip's template has {n} vertices but the model's topology is {have}; call "
                             "model.set_template(template) with a Template of this mesh, or animate_template()")
        return mesh_operators(vertices, template.faces, self.cfg.k_eig).to(self.decoder.last.weight.device)

    def audio_latent(self, audio, audio_lengths, n_frames) -> torch.Tensor:
        """audio (B, N) -> z (B, T, W): the per-frame audio latent (BiLSTM over the real frames only)."""
        h = self.audio_embedding(self.audio_encoder(audio, audio_lengths, n_frames))     # (B, T, W)
        packed = nn.utils.rnn.pack_padded_sequence(h, n_frames.cpu(), batch_first=True, enforce_sorted=False)
        z, _ = self.lstm(packed)
        return nn.utils.rnn.pad_packed_sequence(z, batch_first=True, total_length=h.shape[1])[0]

    def geometry(self, ops: MeshOperators) -> torch.Tensor:
        """g (V, W): the geometry encoder on the normalised neutral xyz (times `xyz_scale`)."""
        return self.encoder(ops.xyz[:, None] * self.cfg.xyz_scale, ops)[:, 0]

    def clip_geometry(self, templates: torch.Tensor, template=None) -> list:
        """[(operators, g)] per clip of templates (B, V*3); clips sharing a template share one encoder pass."""
        seen: dict = {}
        out = []
        for b in range(templates.shape[0]):
            ops = self.operators(templates[b], template)
            if ops.key not in seen:
                seen[ops.key] = (ops, self.geometry(ops))
            out.append(seen[ops.key])
        return out

    def decode(self, g: torch.Tensor, z: torch.Tensor, ops: MeshOperators) -> torch.Tensor:
        """g (V, W) geometry, z (N, W) audio latents of N frames -> displacements (N, V*3) in metres.

        The published first layer Linear([g ; z]) = W_g g + (W_z z + b), broadcast to (V, N, W).
        """
        W = self.cfg.width
        lin = self.decoder.first
        h0 = F.linear(g, lin.weight[:, :W])[:, None] + F.linear(z, lin.weight[:, W:], lin.bias)[None]
        d = self.decoder(h0, ops, first_done=True)                          # (V, N, 3)
        return d.transpose(0, 1).reshape(z.shape[0], -1) * self.cfg.motion_scale

    def decode_chunked(self, g, z, ops, checkpoint: bool = False) -> torch.Tensor:
        """`decode` over frames in chunks of `frame_chunk` (optionally gradient-checkpointed)."""
        n = self.cfg.frame_chunk
        if z.shape[0] <= n:
            return self.decode(g, z, ops)
        parts = []
        for s in range(0, z.shape[0], n):
            if checkpoint:
                parts.append(torch.utils.checkpoint.checkpoint(self.decode, g, z[s:s + n], ops, use_reentrant=False))
            else:
                parts.append(self.decode(g, z[s:s + n], ops))
        return torch.cat(parts)

    # ------------------------------------------------------------------ training
    def frame_pairs(self, n_frames: torch.Tensor, n_pairs: int | None, stride: int | None = None):
        """Start frames t of the (t, t+1) pairs to decode per clip: random (`n_pairs` each, training)
        or every `stride` frames (validation). -> list of (P_b,) long tensors."""
        out = []
        for n in n_frames.tolist():
            if n < 2:
                out.append(torch.zeros(1, dtype=torch.long))
            elif stride is not None:
                out.append(torch.arange(0, n - 1, stride))
            else:
                out.append(torch.randperm(n - 1)[:n_pairs].sort().values)
        return out

    def pair_losses(self, batch: dict, z: torch.Tensor, starts: list) -> dict:
        """Decode the frames (t, t+1) for each start t of each clip; MSE over them, velocity within pairs."""
        verts, template = batch["vertices"], batch["template"]
        preds, gts, masks = [], [], []
        for b, (st, (ops, g)) in enumerate(zip(starts, self.clip_geometry(template))):
            idx = torch.stack([st, (st + 1).clamp(max=int(batch["n_frames"][b]) - 1)], 1).reshape(-1).to(z.device)
            d = self.decode_chunked(g, z[b, idx], ops)                      # (2P, V*3)
            preds.append((template[b] + d).view(-1, 2, d.shape[-1]))
            gts.append(verts[b, idx].view(-1, 2, d.shape[-1]))
            m = torch.ones(len(st), 2, dtype=torch.bool, device=z.device)
            m[:, 1] = st.to(z.device) + 1 < int(batch["n_frames"][b])
            masks.append(m)
        mse, vel = vertex_losses(torch.cat(preds), torch.cat(gts), torch.cat(masks))
        return {"mse": mse, "vel": vel}

    def forward(self, batch: dict, stage: int = 1) -> dict:
        """batch from `data.collate`. Loss = MSE + lambda_vel * velocity, on `train_frames` frames per clip."""
        z = self.audio_latent(batch["audio"], batch["audio_mask"].sum(1), batch["n_frames"])
        if self.cfg.train_frames is None:                                   # released: every frame
            pred = self.predict_vertices(z, batch["template"], batch["n_frames"], grad=True)
            mse, vel = vertex_losses(pred, batch["vertices"], batch["frame_mask"])
            out = {"mse": mse, "vel": vel}
        else:
            starts = self.frame_pairs(batch["n_frames"], max(1, self.cfg.train_frames // 2))
            out = self.pair_losses(batch, z, starts)
        out["loss"] = out["mse"] + self.cfg.lambda_vel * out["vel"]
        return out

    def stage_parameters(self, stage: int = 1):
        """One stage: everything except the frozen CNN feature encoder."""
        return [p for p in self.parameters() if p.requires_grad]

    @torch.no_grad()
    def validation_loss(self, batch: dict, stage: int = 1) -> dict:
        """MSE and velocity of the inference path, on frame pairs every `val_stride` frames."""
        z = self.audio_latent(batch["audio"], batch["audio_mask"].sum(1), batch["n_frames"])
        if self.cfg.val_stride <= 1:
            pred = self.predict_vertices(z, batch["template"], batch["n_frames"])
            mse, vel = vertex_losses(pred, batch["vertices"], batch["frame_mask"])
            return {"mse": mse, "vel": vel}
        return self.pair_losses(batch, z, self.frame_pairs(batch["n_frames"], None, self.cfg.val_stride))

    # ------------------------------------------------------------------ inference
    def predict_vertices(self, z, templates, n_frames, template=None, grad: bool = False) -> torch.Tensor:
        """z (B, T, W), templates (B, V*3) -> vertices (B, T, V*3); frames past n_frames[b] stay at the template.
        template: the `Template` giving the faces (default: the model's)."""
        B, T, _ = z.shape
        out = templates[:, None].repeat(1, T, 1)
        rows = []
        for b, (ops, g) in enumerate(self.clip_geometry(templates, template)):
            n = int(n_frames[b])
            d = self.decode_chunked(g, z[b, :n], ops, checkpoint=grad)
            rows.append(torch.cat([d, d.new_zeros(T - n, d.shape[1])]))
        return out + torch.stack(rows)

    @torch.no_grad()
    def predict_batch(self, batch: dict, stage=None, condition=None, return_features: bool = False):
        """A collated batch -> vertices (B, T, V*3) on each clip's own template. `condition` is ignored:
        ScanTalk has no speaker identity (the identity is the mesh)."""
        if return_features:
            raise NotImplementedError("ScanTalk has no recalled features to return")
        z = self.audio_latent(batch["audio"], batch["audio_mask"].sum(1), batch["n_frames"])
        return self.predict_vertices(z, batch["template"], batch["n_frames"])

    @torch.no_grad()
    def animate_template(self, audio, template, n_frames: int | None = None) -> np.ndarray:
        """Animate any mesh from speech: audio (N,) 16 kHz mono, template a `Template` (any topology)
        -> vertices (T, V, 3) metres at 30 fps. T defaults to the audio's length (`audio.frames_for`)."""
        was = self.training
        self.eval()
        dev = self.decoder.last.weight.device
        x = torch.as_tensor(np.asarray(audio, np.float32)).reshape(1, -1).to(dev)
        T = frames_for(x.shape[1]) if n_frames is None else int(n_frames)
        nf = torch.tensor([T], device=dev)
        z = self.audio_latent(x, torch.tensor([x.shape[1]], device=dev), nf)
        tmpl = torch.as_tensor(template.vertices, dtype=torch.float32, device=dev).reshape(1, -1)
        out = self.predict_vertices(z, tmpl, nf, template=template)[0]
        self.train(was)
        return out.view(T, -1, 3).cpu().numpy()


def recipe(preset: str, dataset, progress: bool = True, **model_kw) -> Recipe:
    """ScanTalk's recipe for a preset ("smoke", "default", "paper"): one stage with the preset's whole
    budget (epochs, lr, batch size): `recipes.budget`. Paper: HuBERT-base."""
    presets = {"smoke": ScanTalkConfig.smoke, "default": ScanTalkConfig.default, "paper": ScanTalkConfig.paper}
    return method_recipe("scantalk", preset, dataset, presets, ScanTalk, progress, **model_kw)
