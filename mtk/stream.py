"""Streaming animation: speech in as it arrives, mesh frames out, with a bounded look-ahead.

A trained MemoryTalker reads a whole clip at once (its speech encoder and decoder attend across time), so
`Streamer` runs it on a sliding window: after each chunk of audio it animates the last `context` seconds heard
and emits the frames that are at least `lookahead` seconds old, which the window already covers with that much
future speech. The state carried from chunk to chunk is the audio of the window (a bounded buffer), how many
frames were emitted, and the speaking style: stage 2's slot weights w_s (n,) averaged over every window so far
(weighted by the audio each added), so the style settles as more of the speaker is heard.

    latency from a sound to the frame that shows it  =  lookahead  (algorithmic)
                                                      + up to one chunk of waiting
                                                      + the compute of one chunk (a window forward pass)

Frame t (30 fps) shows the speech at t / 30 s, as in `model.animate`. `python -m mtk.bench stream` measures the
compute per chunk on this machine and the FVE cost against whole-clip animation on the test speakers;
`mtk animate speech.wav --stream` reads a file as if it were live.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from .audio import frames_for

SR = 16000


@dataclass
class StreamConfig:
    chunk: float = 1 / 30          # seconds of audio per push (one frame)
    lookahead: float = 0.1         # seconds of future speech a frame waits for
    context: float = 2.0           # seconds of past speech the window holds (the model's receptive field here)

    def __post_init__(self):
        if not (0 < self.chunk <= 1 and 0 <= self.lookahead <= 1 and self.lookahead + self.chunk < self.context <= 20):
            raise ValueError(f"StreamConfig(chunk={self.chunk}, lookahead={self.lookahead}, context={self.context}): "
                             "expected 0 < chunk <= 1 s, 0 <= lookahead <= 1 s, lookahead + chunk < context <= 20 s")


class Streamer:
    """`push(samples)` -> the frames (k, V, 3) now ready; `flush()` -> the rest at the end of speech.
    `compute` holds the seconds each push spent in the model."""

    def __init__(self, model, template=None, config: StreamConfig | None = None, stage: int = 2):
        from .checks import check_stage, check_template
        self.model, self.cfg = model.eval(), config or StreamConfig()
        self.fps = getattr(model.cfg, "fps", 30)
        self.stage = check_stage(stage, 2 if model.cfg.use_memory else 1)
        tmpl = template if template is not None else model.template
        self.template = check_template(tmpl, model.cfg.vertex_dim)                     # (V*3,) float32
        self.dev = next(model.parameters()).device
        self.audio = np.zeros(0, np.float32)       # the window's samples, from sample `self.offset` on
        self.start = 0                             # first frame of the window
        self.offset = 0                            # its first sample: round(start * samples per frame)
        self.heard = 0                             # samples heard in all
        self.emitted = 0                           # frames given out
        self.style_sum, self.style_weight = None, 0.0
        self.compute: list[float] = []

    def _spf(self) -> float:
        return SR / self.fps                       # samples per frame

    def push(self, samples: np.ndarray) -> np.ndarray:
        """Add 16 kHz mono samples (any number); return the frames whose look-ahead has arrived."""
        x = np.asarray(samples, np.float32).reshape(-1)
        if not np.isfinite(x).all():
            raise ValueError(f"Streamer.push: {int((~np.isfinite(x)).sum())} samples are NaN or infinite")
        self.audio = np.concatenate([self.audio, x])
        self.heard += len(x)
        ready = int(np.floor((self.heard / SR - self.cfg.lookahead) * self.fps)) + 1   # frames t with t/fps <= now - lookahead
        return self._emit(min(ready, self._frames_heard()))

    def flush(self) -> np.ndarray:
        """The end of speech: every frame the audio heard covers (as `model.animate` would give)."""
        return self._emit(self._frames_heard())

    def _frames_heard(self) -> int:
        return frames_for(self.heard, fps=self.fps)

    def _emit(self, upto: int) -> np.ndarray:
        if upto <= self.emitted:
            return np.zeros((0, self.template.size // 3, 3), np.float32)
        t0 = time.perf_counter()
        n_frames = self._frames_heard() - self.start                            # what the window's audio covers
        upto_local = upto - self.start
        a = torch.from_numpy(self.audio)[None].to(self.dev)
        n = torch.tensor([len(self.audio)], device=self.dev)
        w_s = None
        if self.stage == 2 and self.model.cfg.use_memory:
            with torch.no_grad():
                _, w = self.model.style_weights(a, n)                              # (1, n) from this window
            self.style_sum = w * len(self.audio) if self.style_sum is None else self.style_sum + w * len(self.audio)
            self.style_weight += len(self.audio)
            w_s = self.style_sum / self.style_weight                               # the running style
        pred = self.model.predict(a, n, torch.tensor([n_frames], device=self.dev),
                                  torch.from_numpy(self.template)[None].to(self.dev), stage=self.stage, w_s=w_s)
        frames = pred[0, self.emitted - self.start: upto_local].cpu().numpy()       # (k, V*3)
        self.emitted = self.start + upto_local
        self._trim()
        self.compute.append(time.perf_counter() - t0)
        return frames.reshape(len(frames), -1, 3)

    def _trim(self) -> None:
        """Keep `context` seconds of audio, cut at a frame boundary."""
        keep = int(self.cfg.context * self.fps)
        first = max(self.start, self.emitted - keep + int(np.ceil(self.cfg.lookahead * self.fps)))
        offset = int(round(first * self._spf()))
        if first > self.start and offset - self.offset < len(self.audio):
            self.audio = self.audio[offset - self.offset:]
            self.start, self.offset = first, offset


def stream_file(model, audio: np.ndarray, config: StreamConfig | None = None, template=None,
                stage: int = 2) -> tuple[np.ndarray, list[float]]:
    """Push a 16 kHz clip through a `Streamer` chunk by chunk, as if it were live: -> frames (T, V, 3), the
    compute seconds of every chunk. T equals `model.animate`'s frame count for the clip."""
    s = Streamer(model, template, config, stage)
    step = max(1, int(round(s.cfg.chunk * SR)))
    out = [s.push(audio[i:i + step]) for i in range(0, len(audio), step)]
    out.append(s.flush())
    return np.concatenate(out), s.compute
