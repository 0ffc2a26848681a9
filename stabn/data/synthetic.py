"""Synthetic "something-something"-style videos written in the SSv2 frame layout.

The point is to exercise the real data path (label files, frame folders, JPEG decoding)
and to give a task that needs spatio-temporal reasoning: the eight classes differ only
in the direction or temporal order of what one target object does, while textured
backgrounds and moving distractors keep "is anything moving?" from giving the answer.

Layout written under ``out_dir``::

    frames/<video_id>/000001.jpg ...   RGB JPEG, size x size, numbered from 000001
    train.txt, val.txt                 "video_id num_frames class_id" per line
    classes.txt                        class i on line i
    ground_truth.json                  {video_id: {"split", "label", "class_name",
                                                    "event": [first, last_exclusive],
                                                    "boxes": [[x0, y0, x1, y1] | null, ...]}}

Box coordinates are continuous pixel coordinates of the written frame (pixel (i, j)
covers [j, j+1) x [i, i+1)), so a box is directly comparable with attention maps
upsampled to the frame. "event" holds the 0-based frames at which the target differs
from the frame before; it never starts at frame 0, so a clip always shows the state
before and after. A box is null exactly where the target's opacity is 0 (appearing:
before the event; disappearing: from the event's last frame on). Every video is rendered
from ``numpy.random.default_rng([seed, index])`` alone, so the output is byte-identical for
the same arguments whatever the number of workers.

Usage: ``python -m stabn.data.synthetic --out D [--num-train N --num-val M --frames F
--size S --seed K --workers W]``.
"""

from __future__ import annotations

import argparse
import colorsys
import json
import multiprocessing
import os
import shutil
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from stabn.data.sampling import FRAME_TEMPLATE
from stabn.errors import DataError, PathLike, ReportedError, report_error
from stabn.fileio import atomic_write_text, write_image, writing

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

MIN_SIZE = 32
MIN_FRAMES = 4
JPEG_QUALITY = 90
INDEX_FILES = ("train.txt", "val.txt", "classes.txt", "ground_truth.json")

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


# --------------------------------------------------------------------------- one video


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


def _write_video(job: Tuple[str, int, int, str, int, int, int, bool]) -> Tuple[Tuple[int, int], List[Box]]:
    """Render and save one video; the folder appears under its final name only when complete.
    A write the operating system refuses removes the unfinished folder and is one line naming
    the file (`fileio.writing`)."""
    frames_root, seed, index, video_id, label, frames, size, distractors = job
    video, event, boxes = render_video(seed, index, label, frames, size, distractors)
    final = os.path.join(frames_root, video_id)
    tmp = os.path.join(frames_root, f".{video_id}.tmp")
    try:
        with writing(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
            os.makedirs(tmp)
        for t in range(frames):
            path = os.path.join(tmp, FRAME_TEMPLATE % (t + 1))
            write_image(path, Image.fromarray(video[t]), atomic=False, format="JPEG", quality=JPEG_QUALITY)
        with writing(final):
            if os.path.isdir(final):
                shutil.rmtree(final)
            os.replace(tmp, final)
    except ReportedError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return event, boxes


# --------------------------------------------------------------------------- dataset


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise DataError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise DataError(f"{name} must be at least {minimum}, got {value}")
    return int(value)


def make_synthetic_dataset(
    out_dir: PathLike,
    num_train: int = 800,
    num_val: int = 200,
    frames: int = 16,
    size: int = 64,
    seed: int = 0,
    workers: Optional[int] = None,
    distractors: bool = True,
) -> Dict[str, Any]:
    """Write the synthetic dataset under `out_dir` and return a summary of what was written.
    `distractors=False` writes videos without the moving distractors (for diagnosis: the
    benchmark is on the videos with them).

    Labels are assigned round-robin within each split (balanced); video ids are the 1-based
    global video index as six digits, train first, so they are unique across splits.
    """
    num_train = _check_int("num_train", num_train, 0)
    num_val = _check_int("num_val", num_val, 0)
    frames = _check_int("frames", frames, MIN_FRAMES)
    size = _check_int("size", size, MIN_SIZE)
    seed = _check_int("seed", seed, 0)
    workers = (os.cpu_count() or 1) if workers is None else _check_int("workers", workers, 1)
    total = num_train + num_val
    if total == 0:
        raise DataError("num_train + num_val must be at least 1")

    out = Path(out_dir)
    frames_root = out / "frames"
    with writing(frames_root):
        frames_root.mkdir(parents=True, exist_ok=True)
    # An old index could name frames this run is about to replace (with another frame
    # count); remove it first so an interrupted run leaves no index at all.
    for name in INDEX_FILES:
        with writing(out / name):
            (out / name).unlink(missing_ok=True)

    num_classes = len(CLASS_NAMES)
    splits, labels, ids = [], [], []
    for i in range(total):
        split = "train" if i < num_train else "val"
        splits.append(split)
        labels.append((i if split == "train" else i - num_train) % num_classes)
        ids.append(f"{i + 1:06d}")
    jobs = [(str(frames_root), seed, i, ids[i], labels[i], frames, size, distractors) for i in range(total)]

    processes = min(workers, total)
    if processes > 1:
        chunk = max(1, min(32, total // (processes * 8)))
        with multiprocessing.get_context().Pool(processes) as pool:
            results = pool.map(_write_video, jobs, chunksize=chunk)
    else:
        results = [_write_video(job) for job in jobs]

    truth = []
    for i, (event, boxes) in enumerate(results):
        record = {
            "split": splits[i],
            "label": labels[i],
            "class_name": CLASS_NAMES[labels[i]],
            "event": list(event),
            "boxes": boxes,
        }
        truth.append(f"{json.dumps(ids[i])}: {json.dumps(record, separators=(',', ':'))}")
    lines = {s: [f"{ids[i]} {frames} {labels[i]}\n" for i in range(total) if splits[i] == s] for s in ("train", "val")}

    # Frames are all in place; the index files go last so they never name missing frames.
    atomic_write_text(out / "classes.txt", "".join(f"{c}\n" for c in CLASS_NAMES))
    atomic_write_text(out / "ground_truth.json", "{\n" + ",\n".join(truth) + "\n}\n")
    atomic_write_text(out / "val.txt", "".join(lines["val"]))
    atomic_write_text(out / "train.txt", "".join(lines["train"]))

    return {
        "out_dir": str(out),
        "frames_root": str(frames_root),
        "num_train": num_train,
        "num_val": num_val,
        "frames": frames,
        "size": size,
        "seed": seed,
        "class_names": list(CLASS_NAMES),
    }


# --------------------------------------------------------------------------- CLI


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument as one `error: ...` line, like DataError."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"error: {message}\n")
        sys.exit(2)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = _Parser(
        prog="python -m stabn.data.synthetic",
        description="Write a synthetic something-something-style dataset in the SSv2 frame layout.",
    )
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--num-train", type=int, default=800)
    parser.add_argument("--num-val", type=int, default=200)
    parser.add_argument("--frames", type=int, default=16, help="frames per video")
    parser.add_argument("--size", type=int, default=64, help="frame side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None, help="default: os.cpu_count()")
    parser.add_argument("--no-distractors", action="store_true", help="leave out the moving distractors")
    args = parser.parse_args(argv)
    try:
        summary = make_synthetic_dataset(
            args.out, args.num_train, args.num_val, args.frames, args.size, args.seed, args.workers,
            distractors=not args.no_distractors,
        )  # fmt: skip
    except ReportedError as e:
        return report_error(e)
    n = summary["num_train"] + summary["num_val"]
    print(
        f"wrote {n} videos ({summary['num_train']} train, {summary['num_val']} val, "
        f"{summary['frames']} frames of {summary['size']}x{summary['size']} px) "
        f"to {os.path.abspath(summary['out_dir'])}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
