"""MemoryTalker's two reference variants for the comparison: the ablation row and the ceiling.

* **No memory** (`use_memory=False`): the same audio encoder, text head and decoder, with the
  decoder reading only the text feature (no motion memory, no stage 2). It is the paper's
  "w/o memory network" row of the stage ablation (FVE 0.638, LVE 0.460 reported).
* **Oracle style**: stage 1 is MemoryTalker's own (shared checkpoint); in stage 2 the slot
  weights come not from the audio but from the speaker's **true** style vector, which only
  SynthVOCA knows (`Speaker.style_vector`: the latent style factors, blink rate and
  per-viseme deviations). w_s = sigmoid(f_s) * psi(f_s) as in Eq. 15, with
  f_s = MLP(style). It bounds what audio-guided stylization could reach with this memory.
"""
from __future__ import annotations

from dataclasses import replace

import torch.nn as nn

from .stylize import slot_weights
from .model import MemoryTalker
from .recipes import Recipe, budget, memorytalker, train_config


class OracleStyle(nn.Module):
    """f_s = MLP(true style vector) (B, n); `weights` and `embed` as the audio style encoder's."""

    def __init__(self, style_dim: int, n_slots: int, hidden: int = 64, form: str = "released"):
        super().__init__()
        self.form = form
        self.net = nn.Sequential(nn.Linear(style_dim, hidden), nn.ReLU(), nn.Linear(hidden, n_slots))
        self.to_scale = nn.Linear(n_slots, 1, bias=False)
        if form == "residual":
            nn.init.zeros_(self.to_scale.weight)
        self.style_mlp = nn.Sequential(nn.Linear(n_slots, n_slots), nn.ReLU(), nn.Linear(n_slots, n_slots))

    def weights(self, f_s):
        return slot_weights(f_s, self.to_scale, self.form)

    def embed(self, f_s):
        return self.style_mlp(f_s)


class OracleStyleTalker(MemoryTalker):
    """MemoryTalker whose stage-2 slot weights come from the true style vector in the batch."""

    @classmethod
    def from_dataset(cls, cfg, dataset):
        style_dim = len(dataset.style(dataset.train_subjects[0]))
        m = cls(cfg, dataset.template.mask("lips"), template=dataset.template)
        m.style_encoder = OracleStyle(style_dim, cfg.n_slots, form=cfg.style.weights)
        return m

    def batch_style(self, batch: dict):
        if "style" not in batch:
            raise ValueError("the oracle-style model needs the true style vectors (batch['style']), "
                             "which only SynthVOCA provides")
        f_s = self.style_encoder.net(batch["style"])
        return f_s, self.style_encoder.weights(f_s)


def no_memory(preset: str, dataset) -> Recipe:
    """The "w/o memory" ablation: one stage with the whole budget."""
    r = memorytalker(preset, dataset, use_memory=False)
    return replace(r, name=f"nomemory-{preset}", stage1=train_config(preset, 1, budget(preset)["epochs"]),
                   stage2=None)


def oracle_style(preset: str, dataset) -> Recipe:
    """MemoryTalker's stage 1, then a stage 2 driven by the true style (same stage-2 schedule)."""
    r = memorytalker(preset, dataset)
    return replace(r, name=f"oracle-{preset}", model_class=OracleStyleTalker, shares_stage1=r)
