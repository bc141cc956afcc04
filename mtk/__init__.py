"""mtk: a Jupyter-first kit for MemoryTalker (ICCV 2025) and speech-driven 3D facial animation.

Modules (one idea each):
    template     the face mesh with region masks and landmarks (procedural head, FLAME)
    speech       espeak-ng speech with phoneme timings
    articulation phonemes -> visemes -> coarticulated motion on an articulation basis
    synthvoca    the embedded default dataset (speakers with hidden, partly audible style)
    data         SynthVOCA and VOCASET behind one interface; torch Dataset and collate
    metrics      FVE, LVE, Lip-max, LDTW, FID, FDD, evaluate
    viz          matplotlib renders, k3d widgets, saving figures
"""
__version__ = "0.1.0"
