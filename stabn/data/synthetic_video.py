"""One synthetic "something-something"-style video, rendered from a seed and its index alone.

The eight classes differ only in the direction or temporal order of what one target object
(a saturated disc with a ring and a cross) does, so telling them apart takes spatio-temporal
reasoning; textured backgrounds and moving distractors keep "is anything moving?" from giving
the answer.

`render_video` gives the frames, the event window and the target's boxes. Box coordinates are
continuous pixel coordinates of the frame (pixel (i, j) covers [j, j+1) x [i, i+1)), so a box
is directly comparable with attention maps upsampled to the frame. The event holds the 0-based
frames at which the target differs from the frame before; it never starts at frame 0, so a
clip always shows the state before and after. A box is None exactly where the target's
opacity is 0 (appearing: before the event; disappearing: from the event's last frame on).
A video depends on ``numpy.random.default_rng([seed, index])`` alone.
"""

from __future__ import annotations

import colorsys
from typing import List, Optional, Tuple

import numpy as np

CLASS_NAMES: Tuple[str, ...] = (
    "Moving something from left to right",
    "Moving something from right to left",
    "Moving something from top to bottom",
    "Moving something from bottom to top",
    "Something appearing",
    "Something disappearing",
    "Something approaching the camera",
    "Something moving away from the camera",
)
LEFT_TO_RIGHT, RIGHT_TO_LEFT, TOP_TO_BOTTOM, BOTTOM_TO_TOP = 0, 1, 2, 3
APPEARING, DISAPPEARING, APPROACHING, RECEDING = 4, 5, 6, 7

Box = Optional[List[float]]


# --------------------------------------------------------------------------- drawing


def _coverage(signed_dist: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage from a signed distance (positive inside), so that sub-pixel
    motion still changes the image and the nets see smooth rather than jumping edges."""
    return np.clip(signed_dist + 0.5, 0.0, 1.0)


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=np.float32) * 255.0


def _dull_colour(rng: np.random.Generator) -> np.ndarray:
    # Backgrounds are kept low in saturation so the saturated target stays the most
    # conspicuous thing without being the only coloured thing.
    grey = rng.uniform(45.0, 210.0)
    tint = rng.normal(size=3) * rng.uniform(0.0, 35.0)
    return np.clip(grey + tint, 0.0, 255.0).astype(np.float32)


def _upsample_matrix(n: int, size: int) -> np.ndarray:
    """[size, n] linear-interpolation weights from n control points to size pixels."""
    pos = (np.arange(size) + 0.5) / size * (n - 1)
    lo = np.minimum(np.floor(pos).astype(int), n - 2)
    frac = pos - lo
    w = np.zeros((size, n), dtype=np.float32)
    w[np.arange(size), lo] = 1.0 - frac
    w[np.arange(size), lo + 1] = frac
    return w


def _smooth_noise(rng: np.random.Generator, size: int, channels: int) -> np.ndarray:
    """Smooth random field in [0, 1], [size, size, channels]."""
    n = int(rng.integers(3, 7))
    grid = rng.uniform(size=(n, n, channels)).astype(np.float32)
    w = _upsample_matrix(n, size)
    return (w @ grid.transpose(2, 0, 1) @ w.T).transpose(1, 2, 0)


def _background(rng: np.random.Generator, size: int, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    """A different textured background per video: smooth noise, stripes or a gradient."""
    a, b = _dull_colour(rng), _dull_colour(rng)
    kind = int(rng.integers(3))
    theta = rng.uniform(0.0, 2 * np.pi)
    along = (xx * np.cos(theta) + yy * np.sin(theta)) / size  # [S, S], roughly in [-1.4, 1.4]
    if kind == 0:
        mix = _smooth_noise(rng, size, 1)[..., 0]
    elif kind == 1:
        freq = rng.uniform(2.0, 6.0)
        sharp = rng.uniform(1.0, 4.0)
        wave = np.sin(2 * np.pi * freq * along + rng.uniform(0.0, 2 * np.pi))
        mix = np.clip(0.5 + 0.5 * sharp * wave, 0.0, 1.0)
    else:
        mix = (along - along.min()) / max(float(along.max() - along.min()), 1e-6)
    bg = a * (1.0 - mix[..., None]) + b * mix[..., None]
    # A faint colour texture on top of every kind, so no background is perfectly flat.
    bg += (_smooth_noise(rng, size, 3) - 0.5) * rng.uniform(0.0, 40.0)
    return bg.astype(np.float32)


def _draw_distractor(video: np.ndarray, rng: np.random.Generator, xx: np.ndarray, yy: np.ndarray) -> None:
    """One rectangle, triangle or elongated ellipse moving linearly through the whole clip."""
    frames, size = video.shape[0], video.shape[1]
    shape = int(rng.integers(3))
    half = rng.uniform(0.08, 0.15) * size
    aspect = rng.uniform(1.0, 2.5) if shape == 0 else rng.uniform(1.6, 2.5)
    colour = _hsv(rng.uniform(), rng.uniform(0.3, 1.0), rng.uniform(0.3, 1.0))
    mid = rng.uniform(0.15 * size, 0.85 * size, size=2)
    heading = rng.uniform(0.0, 2 * np.pi)
    travel = rng.uniform(0.3, 0.9) * size
    angle0, spin = rng.uniform(0.0, 2 * np.pi), rng.uniform(-0.2, 0.2)

    # float32 throughout: float64 would double the cost of every [T, S, S] array.
    s = np.arange(frames) / (frames - 1) - 0.5
    cx = (mid[0] + np.cos(heading) * travel * s).astype(np.float32)[:, None, None]
    cy = (mid[1] + np.sin(heading) * travel * s).astype(np.float32)[:, None, None]
    ang = angle0 + spin * np.arange(frames)
    cos = np.cos(ang).astype(np.float32)[:, None, None]
    sin = np.sin(ang).astype(np.float32)[:, None, None]
    half, aspect = np.float32(half), np.float32(aspect)
    dx, dy = xx[None] - cx, yy[None] - cy
    u = dx * cos + dy * sin
    v = dy * cos - dx * sin
    if shape == 0:  # rectangle
        sd = np.minimum(half * aspect / 1.5 - np.abs(u), half / 1.5 - np.abs(v))
    elif shape == 1:  # equilateral triangle: inside all three edge half-planes
        inradius = half * 0.6
        edges = [
            inradius - (u * np.float32(np.cos(k * 2 * np.pi / 3)) + v * np.float32(np.sin(k * 2 * np.pi / 3)))
            for k in range(3)
        ]
        sd = np.minimum(np.minimum(edges[0], edges[1]), edges[2])
    else:  # ellipse, elongated so it never looks like the round target
        hx, hy = half * aspect / 1.5, half / 1.5
        sd = (1.0 - np.sqrt((u / hx) ** 2 + (v / hy) ** 2)) * hy
    a = _coverage(sd)[..., None]
    video *= 1.0 - a
    video += a * colour


def _draw_target(
    video: np.ndarray,
    cx: np.ndarray,
    cy: np.ndarray,
    radius: np.ndarray,
    alpha: np.ndarray,
    disc_colour: np.ndarray,
    mark_colour: np.ndarray,
    xx: np.ndarray,
    yy: np.ndarray,
) -> None:
    """Saturated disc with a contrasting ring and cross, drawn on top of everything."""
    cx, cy, r = (np.asarray(v, np.float32)[:, None, None] for v in (cx, cy, radius))
    dx, dy = xx[None] - cx, yy[None] - cy
    dist = np.sqrt(dx * dx + dy * dy)
    ring_w = np.maximum(np.float32(1.2), np.float32(0.2) * r)
    bar_w = np.maximum(np.float32(1.2), np.float32(0.18) * r)
    disc = _coverage(r - dist)
    ring = _coverage(dist - (r - ring_w))
    cross = np.maximum(_coverage(bar_w / 2 - np.abs(dx)), _coverage(bar_w / 2 - np.abs(dy)))
    mark = np.maximum(ring, cross * _coverage(r - ring_w - dist))[..., None]
    colour = disc_colour * (1.0 - mark) + mark_colour * mark
    a = (np.asarray(alpha, np.float32)[:, None, None] * disc)[..., None]
    video *= 1.0 - a
    video += a * colour


# --------------------------------------------------------------------------- the video


def _target_track(
    rng: np.random.Generator, label: int, frames: int, size: int
) -> Tuple[Tuple[int, int], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Event window and per-frame centre, radius and opacity of the target for a class."""
    # The event never starts on frame 0, so every clip shows the state before it as well as
    # the state after it (the last event frame already has the final state).
    length = int(np.clip(round(rng.uniform(0.4, 0.75) * frames), 2, frames - 1))
    start = int(rng.integers(1, frames - length + 1))
    t = np.arange(frames, dtype=np.float64)
    # Progress is 0 before the event and 1 from its last frame on; every frame inside the
    # event differs from the one before it, which is what "event" means in ground truth.
    p = np.clip((t - start + 1) / length, 0.0, 1.0)
    ones = np.ones(frames)

    if label in (APPROACHING, RECEDING):
        r_small = rng.uniform(0.11, 0.13) * size
        r_big = r_small * rng.uniform(1.7, 2.1)
        margin = r_big + 1.0
        cx = ones * rng.uniform(margin, size - margin)
        cy = ones * rng.uniform(margin, size - margin)
        r0, r1 = (r_small, r_big) if label == APPROACHING else (r_big, r_small)
        return (start, start + length), cx, cy, r0 + (r1 - r0) * p, ones

    r = rng.uniform(0.11, 0.15) * size
    margin = r + 1.0
    radius = ones * r
    if label in (APPEARING, DISAPPEARING):
        cx = ones * rng.uniform(margin, size - margin)
        cy = ones * rng.uniform(margin, size - margin)
        alpha = p if label == APPEARING else 1.0 - p
        return (start, start + length), cx, cy, radius, alpha

    # Moving: travel at least 45% of the frame so the direction is unmistakable.
    dist = rng.uniform(0.45 * size, size - 2 * margin)
    a0 = rng.uniform(margin, size - margin - dist)
    across = ones * rng.uniform(margin, size - margin)
    forward = a0 + dist * p
    backward = a0 + dist - dist * p
    if label == LEFT_TO_RIGHT:
        cx, cy = forward, across
    elif label == RIGHT_TO_LEFT:
        cx, cy = backward, across
    elif label == TOP_TO_BOTTOM:
        cx, cy = across, forward
    else:
        cx, cy = across, backward
    return (start, start + length), cx, cy, radius, ones


def render_video(
    seed: int, index: int, label: int, frames: int, size: int, distractors: bool = True
) -> Tuple[np.ndarray, Tuple[int, int], List[Box]]:
    """Render one video: uint8 frames [T, S, S, 3] (RGB), event window and target boxes.
    `distractors=False` leaves out the moving distractors (a cleaner video, for diagnosis)."""
    rng = np.random.default_rng([seed, index])
    centres = np.arange(size, dtype=np.float32) + 0.5
    xx, yy = np.meshgrid(centres, centres)  # [S, S], x along columns

    bg = _background(rng, size, xx, yy)
    video = np.repeat(bg[None], frames, axis=0)
    for _ in range(int(rng.integers(1, 4)) if distractors else 0):
        _draw_distractor(video, rng, xx, yy)

    disc_colour = _hsv(rng.uniform(), rng.uniform(0.75, 1.0), rng.uniform(0.8, 1.0))
    mark_colour = np.full(3, 235.0 if rng.uniform() < 0.5 else 20.0, dtype=np.float32)
    event, cx, cy, radius, alpha = _target_track(rng, label, frames, size)
    _draw_target(video, cx, cy, radius, alpha, disc_colour, mark_colour, xx, yy)

    # Mild sensor noise so consecutive static frames are not identical.
    video += rng.standard_normal(size=video.shape, dtype=np.float32) * np.float32(2.0)
    frames_u8 = np.clip(np.rint(video), 0, 255).astype(np.uint8)

    boxes: List[Box] = []
    for x, y, r, a in zip(cx, cy, radius, alpha):
        if a <= 0.0:
            boxes.append(None)
        else:
            box = np.clip([x - r, y - r, x + r, y + r], 0.0, size)
            boxes.append([round(float(v), 2) for v in box])
    return frames_u8, event, boxes
