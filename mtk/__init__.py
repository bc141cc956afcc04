"""mtk: a Jupyter-first kit for MemoryTalker (ICCV 2025) and speech-driven 3D facial animation.

Modules (one idea each):
    template     the face mesh with region masks and landmarks (procedural head, FLAME)
    speech       espeak-ng speech with phoneme timings
    articulation phonemes -> visemes -> coarticulated motion on an articulation basis
    synthvoca    the embedded default dataset's generator (speakers with hidden, partly audible style)
    data         SynthVOCA and VOCASET behind one interface; torch Dataset and collate
    audio        speech encoders (HuBERT/wav2vec2 via transformers) at the mesh frame rate
    memory       MemoryTalker's key-value motion memory (stage 1)
    stylize      audio-guided stylization of the memory (stage 2)
    losses       the vertex losses every method trains with
    model        MemoryTalker itself; `animate`
    checks       what `animate` accepts, checked before any work
    checkpoint   safetensors + JSON checkpoints and pretrained folders (nothing unpickled)
    train        one training loop for every method
    recipes      model + schedule + data, trained once and loaded after
    metrics      FVE, LVE, Lip-max, LDTW, FID, FDD, evaluate
    viz          matplotlib renders, k3d widgets, saving figures
    baselines/   the six baselines of Table 1; compare, variants: the comparison; demo: your recording

Imports flow one way (tests/test_install.py checks there are no circles).
"""
__version__ = "0.1.0"
