"""MemoryTalker's reference variant for the comparison: the paper's "w/o memory" ablation row.

* **No memory** (`use_memory=False`): the same audio encoder, text head and decoder, with the
  decoder reading only the text feature (no motion memory, no stage 2). It is the paper's
  "w/o memory network" row of the stage ablation (FVE 0.638, LVE 0.460 reported).

The comparison's ceiling (what the trained memory could express knowing the speaker) is `mtk.ceiling`;
it replaced an "oracle style" variant that mapped the true style vector through an MLP trained on 8
speakers, which was arbitrary for an unseen speaker.
"""
from __future__ import annotations

from dataclasses import replace

from .recipes import Recipe, budget, memorytalker, train_config


def no_memory(preset: str, dataset, epochs: int | None = None, **model_kw) -> Recipe:
    """The "w/o memory" ablation: one stage with the whole budget (the preset's, or `epochs`, as
    `memorytalker(epochs=...)` splits over its two stages)."""
    r = memorytalker(preset, dataset, use_memory=False, **model_kw)
    e = epochs or budget(preset)["epochs"]
    return replace(r, name=f"nomemory-{preset}" + (f"-{e}ep" if epochs else ""), stage1=train_config(preset, 1, e),
                   stage2=None)
