"""Which frames make a clip: start positions, frame indices, frame file names.

Indices are 0-based here; frame files are numbered from 1 (``%06d.jpg`` by default), as in
the SSv2 frame layout.
"""

from __future__ import annotations

import os
from typing import Dict, List, Sequence, Tuple

import numpy as np

from stabn.config.schema import PADDING_MODES

FRAME_TEMPLATE = "%06d.jpg"


def train_start(num_frames: int, frame_length: int, rng: np.random.Generator) -> int:
    """The original's training start: uniform over ``[0, num_frames - frame_length]``, or 0
    for a video shorter than the clip."""
    if num_frames < frame_length:
        return 0
    return int(rng.integers(0, num_frames - frame_length + 1))


def eval_starts(num_frames: int, frame_length: int, num_clips: int = 1) -> List[int]:
    """The original's evaluation starts for `num_clips` clips: ``tick = (n - T + 1) / k`` and
    start ``i`` at ``int(tick / 2 + tick * i)``; all 0 for a video shorter than the clip."""
    if num_clips < 1:
        raise ValueError(f"num_clips must be >= 1, got {num_clips}")
    if num_frames < frame_length:
        return [0] * num_clips
    tick = (num_frames - frame_length + 1) / float(num_clips)
    return [int(tick / 2.0 + tick * i) for i in range(num_clips)]


def clip_indices(start: int, num_frames: int, frame_length: int, padding: str = "first") -> List[int]:
    """The 0-based frame indices of the clip starting at `start`.

    Positions past the last frame are filled by `padding`: ``"first"`` repeats the clip's first
    frame (the original's behaviour, so the default), ``"last"`` repeats the video's last frame,
    ``"loop"`` wraps around to the clip's first frame and goes on from there.
    """
    if padding not in PADDING_MODES:
        raise ValueError(f"padding must be one of {PADDING_MODES}, got {padding!r}")
    if not 0 <= start < num_frames:
        raise ValueError(f"start {start} is outside a video of {num_frames} frames")
    available = num_frames - start
    indices = []
    for i in range(frame_length):
        if i < available:
            indices.append(start + i)
        elif padding == "first":
            indices.append(start)
        elif padding == "last":
            indices.append(num_frames - 1)
        else:
            indices.append(start + i % available)
    return indices


def frame_paths(video_dir: str, indices: Sequence[int], template: str = FRAME_TEMPLATE) -> List[str]:
    """File names of 0-based frame `indices` in `video_dir` (files are numbered from 1)."""
    return [os.path.join(video_dir, template % (i + 1)) for i in indices]


def frame_uses(clips: Sequence[Sequence[int]]) -> Dict[int, List[Tuple[int, int]]]:
    """Where each frame that `clips` use goes: frame index -> its (clip, position) pairs."""
    uses: Dict[int, List[Tuple[int, int]]] = {}
    for k, clip in enumerate(clips):
        for t, i in enumerate(clip):
            uses.setdefault(i, []).append((k, t))
    return uses


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator for one training sample.

    It depends on the sample and the epoch only, not on the worker or the rank that loads it,
    so the data seen does not change with ``num_workers``, the world size or a resume.
    """
    for name, value in (("seed", seed), ("epoch", epoch), ("index", index)):
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}")
    return np.random.default_rng([seed, epoch, index])
