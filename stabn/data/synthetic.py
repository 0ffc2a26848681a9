"""Synthetic "something-something"-style videos written in the SSv2 frame layout.

The point is to exercise the real data path (label files, frame folders, JPEG decoding) and
to give a task that needs spatio-temporal reasoning; `stabn.data.synthetic_video` renders
each video, its event window and the target's boxes.

Layout written under ``out_dir``::

    frames/<video_id>/000001.jpg ...   RGB JPEG, size x size, numbered from 000001
    train.txt, val.txt                 "video_id num_frames class_id" per line
    classes.txt                        class i on line i
    ground_truth.json                  {video_id: {"split", "label", "class_name",
                                                    "event": [first, last_exclusive],
                                                    "boxes": [[x0, y0, x1, y1] | null, ...]}}

"event" and "boxes" are `render_video`'s (a box is null where the target is invisible). Every
video is rendered from ``numpy.random.default_rng([seed, index])`` alone, so the output is
byte-identical for the same arguments whatever the number of workers.

Command: ``stabn-synthetic --out D [--num-train N --num-val M --frames F --size S --seed K
--workers W]``.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from stabn.data.sampling import FRAME_TEMPLATE
from stabn.data.synthetic_video import CLASS_NAMES, Box, render_video
from stabn.errors import DataError, PathLike
from stabn.fileio import atomic_folder, atomic_write_text, write_image, writing

MIN_SIZE = 32
MIN_FRAMES = 4
JPEG_QUALITY = 90
INDEX_FILES = ("train.txt", "val.txt", "classes.txt", "ground_truth.json")

# What a worker needs to render and write one video:
# (frames root, seed, index, video id, label, frames, size, distractors).
_Job = Tuple[str, int, int, str, int, int, int, bool]
# A written video's event window and target boxes.
_Written = Tuple[Tuple[int, int], List[Box]]


class _Planned(NamedTuple):
    video_id: str
    split: str
    label: int


def _write_video(job: _Job) -> _Written:
    """Render and save one video; the folder appears under its final name only when complete.
    A write the operating system refuses removes the unfinished folder and is one line naming
    the file (`fileio.writing`)."""
    frames_root, seed, index, video_id, label, frames, size, distractors = job
    video, event, boxes = render_video(seed, index, label, frames, size, distractors)
    with atomic_folder(Path(frames_root) / video_id, suffix=".tmp") as folder:
        for t in range(frames):
            image = Image.fromarray(video[t])
            write_image(folder / (FRAME_TEMPLATE % (t + 1)), image, atomic=False, format="JPEG", quality=JPEG_QUALITY)
    return event, boxes


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise DataError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise DataError(f"{name} must be at least {minimum}, got {value}")
    return int(value)


def _plan(num_train: int, num_val: int) -> List[_Planned]:
    """Each video's id, split and label: labels round-robin within each split (balanced), ids
    the 1-based global video index as six digits, train first, so they are unique across splits."""
    planned = []
    for i in range(num_train + num_val):
        split = "train" if i < num_train else "val"
        label = (i if split == "train" else i - num_train) % len(CLASS_NAMES)
        planned.append(_Planned(f"{i + 1:06d}", split, label))
    return planned


def _clear_index(out: Path) -> Path:
    """Make `out`/frames and remove any old index; return the frames folder."""
    frames_root = out / "frames"
    with writing(frames_root):
        frames_root.mkdir(parents=True, exist_ok=True)
    # An old index could name frames this run is about to replace (with another frame
    # count); remove it first so an interrupted run leaves no index at all.
    for name in INDEX_FILES:
        with writing(out / name):
            (out / name).unlink(missing_ok=True)
    return frames_root


def _write_videos(jobs: Sequence[_Job], workers: int) -> List[_Written]:
    processes = min(workers, len(jobs))
    if processes <= 1:
        return [_write_video(job) for job in jobs]
    chunk = max(1, min(32, len(jobs) // (processes * 8)))
    with multiprocessing.get_context().Pool(processes) as pool:
        return pool.map(_write_video, jobs, chunksize=chunk)


def _write_index(out: Path, planned: Sequence[_Planned], written: Sequence[_Written], frames: int) -> None:
    """The label files, class names and ground truth, once every frame is in place: the index
    files go last so they never name missing frames."""
    truth = []
    for video, (event, boxes) in zip(planned, written):
        record = {
            "split": video.split,
            "label": video.label,
            "class_name": CLASS_NAMES[video.label],
            "event": list(event),
            "boxes": boxes,
        }
        truth.append(f"{json.dumps(video.video_id)}: {json.dumps(record, separators=(',', ':'))}")
    lines = {s: [f"{v.video_id} {frames} {v.label}\n" for v in planned if v.split == s] for s in ("train", "val")}
    atomic_write_text(out / "classes.txt", "".join(f"{c}\n" for c in CLASS_NAMES))
    atomic_write_text(out / "ground_truth.json", "{\n" + ",\n".join(truth) + "\n}\n")
    atomic_write_text(out / "val.txt", "".join(lines["val"]))
    atomic_write_text(out / "train.txt", "".join(lines["train"]))


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
    benchmark is on the videos with them). Bad arguments raise DataError before anything is
    written.
    """
    num_train = _check_int("num_train", num_train, 0)
    num_val = _check_int("num_val", num_val, 0)
    frames = _check_int("frames", frames, MIN_FRAMES)
    size = _check_int("size", size, MIN_SIZE)
    seed = _check_int("seed", seed, 0)
    workers = (os.cpu_count() or 1) if workers is None else _check_int("workers", workers, 1)
    if num_train + num_val == 0:
        raise DataError("num_train + num_val must be at least 1")

    out = Path(out_dir)
    frames_root = _clear_index(out)
    planned = _plan(num_train, num_val)
    jobs = [(str(frames_root), seed, i, v.video_id, v.label, frames, size, distractors) for i, v in enumerate(planned)]
    _write_index(out, planned, _write_videos(jobs, workers), frames)
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
