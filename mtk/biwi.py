"""BIWI (Fanelli et al. 2010, "3D Audiovisual Corpus of Affective Communication") in FaceFormer's processed layout.

BIWI is the field's second dataset: 14 speakers (F1-F8, M1-M6) reading 40 English sentences, dense face scans
registered to one 23,370-vertex topology, tracked at 25 fps. Like VOCASET it needs a registration to download;
FaceFormer's processing leaves this layout, which `data.BIWI` reads (a subclass of `data.VOCASET`, the same checks
on opening, memory-mapped vertex files, the same `Sequence` interface; this module holds the split and the file
readers):

    root/wav/<subject>_<sentence>.wav         e.g. F2_e01.wav or F2_01.wav: the sentence is the last two digits
    root/vertices_npy/<same stem>.npy         (T25, 23370 * 3) float, 25 fps (no subsampling, unlike VOCASET)
    root/templates.pkl                        {subject: (23370, 3)} neutral faces
    root/regions/lve.txt, regions/fdd.txt     optional: lip and upper-face vertex indices (CodeTalker's files:
                                              LVE's lips, FDD's upper face), as masks `lips` and `upper_face`
    root/rigid_scans/<subject>.obj            optional: the first training subject's scan gives the faces

The split (FaceFormer, CodeTalker; `baselines.md` section 1): six training speakers F2 F3 F4 M3 M4 M5 read
sentences 1-32 for training and 33-36 for validation. Two test protocols:

    "A"  BIWI-Test-A: the same six speakers' sentences 37-40 (24 clips; seen speakers, whose one-hot
         condition is their own)
    "B"  BIWI-Test-B: the eight other speakers F1 F5 F6 F7 F8 M1 M2 M6, sentences 37-40 (32 clips; unseen)

Clips come at 25 fps (`BIWI.fps`); the kit's models interpolate speech features to the number of mesh frames
they are given, so they train on 25 fps targets unchanged.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np


TRAIN_SUBJECTS = ["F2", "F3", "F4", "M3", "M4", "M5"]
UNSEEN_SUBJECTS = ["F1", "F5", "F6", "F7", "F8", "M1", "M2", "M6"]
SENTENCES = {"train": range(1, 33), "val": range(33, 37), "test": range(37, 41)}
PROTOCOLS = {"A": TRAIN_SUBJECTS, "B": UNSEEN_SUBJECTS}


def read_indices(path: Path, V: int) -> np.ndarray:
    """Vertex indices from a text file (integers separated by commas, spaces or newlines), each in [0, V)."""
    text = Path(path).read_text()
    bad = re.search(r"[^\d\s,]+", text)
    if bad:
        raise ValueError(f"{path}: expected vertex indices (integers separated by commas, spaces or newlines); "
                         f"found {bad.group()!r}")
    idx = np.array([int(t) for t in re.findall(r"\d+", text)], dtype=np.int64)
    if not len(idx) or idx.max() >= V:
        raise ValueError(f"{path}: {len(idx)} indices up to {idx.max(initial=-1)}; expected indices of a {V}-vertex mesh")
    return idx


def read_obj_faces(path: Path, V: int) -> np.ndarray:
    """Triangles (F, 3) of a Wavefront OBJ ('f a b c', 1-based, 'a/t/n' forms allowed); polygons are fanned."""
    tris = []
    for line in Path(path).read_text().splitlines():
        if line.startswith("f "):
            idx = [int(tok.split("/")[0]) - 1 for tok in line.split()[1:]]
            tris += [(idx[0], idx[k], idx[k + 1]) for k in range(1, len(idx) - 1)]
    faces = np.array(tris, dtype=np.int32).reshape(-1, 3)
    if not len(faces) or faces.min() < 0 or faces.max() >= V:
        raise ValueError(f"{path}: {len(faces)} triangles with indices {faces.min(initial=0)}..{faces.max(initial=0)}; "
                         f"expected faces of the {V}-vertex BIWI mesh")
    return faces
