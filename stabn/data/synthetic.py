"""Synthetic "something-something"-style videos written in the SSv2 frame layout, or as video
files with a label list.

The point is to exercise the real data path (label files, frame folders or video files,
decoding) and to give a task that needs spatio-temporal reasoning; `stabn.data.synthetic_video`
renders each video, its event window and the target's boxes.

Layout written under ``out_dir`` by format "frames" (the default; ``data.source: frames``)::

    frames/<video_id>/000001.jpg ...   RGB JPEG, size x size, numbered from 000001
    train.txt, val.txt                 "video_id num_frames class_id" per line (ssv2 format)
    classes.txt                        class i on line i
    ground_truth.json                  {video_id: {"split", "label", "class_name",
                                                    "event": [first, last_exclusive],
                                                    "boxes": [[x0, y0, x1, y1] | null, ...]}}

and by format "mp4" or "webm" (``data.source: videos``, ``data.label_format: generic``,
``data.root: <out_dir>/videos``), the same videos, split, classes and ground truth::

    videos/<video_id>.mp4              H.264 (MPEG-4 Part 2 where FFmpeg lacks libx264), yuv420p
    videos/<video_id>.webm             VP9, yuv420p
    train.txt, val.txt                 "<video_id>.mp4 class_id" per line (generic format)

Each video file decodes to exactly the frames rendered, at ``fps`` frames a second. The frames
are JPEGs, lossy; ``lossless=True`` stores the rendered RGB frames bit for bit instead
(mp4: libx264rgb at crf 0, or FFV1 in ``.mkv`` where FFmpeg lacks libx264rgb; webm: VP9's
lossless mode on the RGB planes). See `ENCODINGS`.

"event" and "boxes" are `render_video`'s (a box is null where the target is invisible). Every
video is rendered from ``numpy.random.default_rng([seed, index])`` alone, so the output is
byte-identical for the same arguments whatever the number of workers (for video files: with
the same FFmpeg).

Command: ``stabn-synthetic --out D [--format frames|mp4|webm --fps R --lossless --num-train N
--num-val M --frames F --size S --seed K --workers W]``.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from stabn.data.sampling import FRAME_TEMPLATE
from stabn.data.synthetic_video import CLASS_NAMES, Box, render_video
from stabn.data.video import MP4_CODECS, has_encoder, write_video
from stabn.errors import DataError, PathLike
from stabn.fileio import atomic_folder, atomic_write_text, write_image, writing

MIN_SIZE = 32
MIN_FRAMES = 4
JPEG_QUALITY = 90
INDEX_FILES = ("train.txt", "val.txt", "classes.txt", "ground_truth.json")
FORMATS = ("frames", "mp4", "webm")
DEFAULT_FPS = 12.0  # SSv2's
MAX_FPS = 1000.0


class VideoEncoding(NamedTuple):
    """How the video files are written: FFmpeg's encoder, the pixel format it is given, its
    options, the container (FFmpeg's name) and the files' suffix."""

    codec: str
    pix_fmt: str
    options: Dict[str, str]
    container: str = "mp4"
    suffix: str = ".mp4"
    even_sides: bool = False  # libx264 refuses odd sides in yuv420p; mpeg4 too, for one rule


# Lossy quality, as mean absolute differences (of 255) from the rendered 40 px frames: yuv420p's
# half-size colour planes alone cost about 3.5 (the saturated target's edges); crf 15 (x264, and
# VP9 in its constant-quality mode, b 0) comes to 4.2, below what the frames format's JPEGs lose
# (4.5 at quality 90), so the target, its ring and cross stay sharp (crf 18: 4.6). MPEG-4 Part
# 2 has no crf: its quantiser capped at 2, near its best, comes to 4.7.
_MP4_QUALITY = {"libx264": {"crf": "15"}, "mpeg4": {"qmax": "2"}}
_WEBM = {"container": "webm", "suffix": ".webm"}
# (format, lossless) -> the encodings in order of preference: the first FFmpeg has is used.
ENCODINGS: Dict[Tuple[str, bool], Tuple[VideoEncoding, ...]] = {
    ("mp4", False): tuple(VideoEncoding(c, "yuv420p", _MP4_QUALITY[c], even_sides=True) for c in MP4_CODECS),
    ("mp4", True): (
        VideoEncoding("libx264rgb", "rgb24", {"crf": "0"}),
        VideoEncoding("ffv1", "bgr0", {}, container="matroska", suffix=".mkv"),
    ),
    ("webm", False): (VideoEncoding("libvpx-vp9", "yuv420p", {"crf": "15", "b": "0"}, **_WEBM),),
    # The RGB planes as they are (gbrp) decode bit-exact; yuv444p would round each pixel
    # through YUV (off by up to 2).
    ("webm", True): (VideoEncoding("libvpx-vp9", "gbrp", {"lossless": "1"}, **_WEBM),),
}


class _Job(NamedTuple):
    """What a worker needs to render and write one video."""

    root: str  # the frames or videos folder
    seed: int
    index: int
    video_id: str
    label: int
    frames: int
    size: int
    distractors: bool
    encoding: Optional[VideoEncoding]  # None: JPEG frames
    fps: float


# A written video's event window and target boxes.
_Written = Tuple[Tuple[int, int], List[Box]]


class _Planned(NamedTuple):
    video_id: str
    split: str
    label: int


def _write_frames(folder: Path, video: np.ndarray) -> None:
    """The frames as JPEGs; the folder appears under its final name only when complete."""
    with atomic_folder(folder, suffix=".tmp") as unfinished:
        for t, frame in enumerate(video):
            path = unfinished / (FRAME_TEMPLATE % (t + 1))
            write_image(path, Image.fromarray(frame), atomic=False, format="JPEG", quality=JPEG_QUALITY)


def _write_video(job: _Job) -> _Written:
    """Render and save one video, atomically: a frame folder or a video file. A write the
    operating system refuses leaves nothing unfinished and is one line naming the file
    (`fileio.writing`)."""
    video, event, boxes = render_video(job.seed, job.index, job.label, job.frames, job.size, job.distractors)
    encoding = job.encoding
    if encoding is None:
        _write_frames(Path(job.root) / job.video_id, video)
    else:
        path = Path(job.root) / (job.video_id + encoding.suffix)
        write_video(path, video, job.fps, codec=encoding.codec, pix_fmt=encoding.pix_fmt,
                    container=encoding.container, options=encoding.options)  # fmt: skip
    return event, boxes


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise DataError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise DataError(f"{name} must be at least {minimum}, got {value}")
    return int(value)


def _check_fps(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise DataError(f"fps must be a number, got {value!r}")
    if not (math.isfinite(value) and 0 < value <= MAX_FPS):
        raise DataError(f"fps must be above 0 and at most {MAX_FPS:g}, got {value}")
    return float(value)


def choose_encoding(format: str, lossless: bool = False) -> VideoEncoding:
    """The first encoding of `ENCODINGS` for `format` the bundled FFmpeg can write; DataError
    naming the encoders where it has none."""
    candidates = ENCODINGS[(format, lossless)]
    found = next((e for e in candidates if has_encoder(e.codec)), None)
    if found is None:
        names = " or ".join(e.codec for e in candidates)
        kind = "lossless " if lossless else ""
        raise DataError(f"format {format} ({kind}video) needs the encoder {names}, which this PyAV's FFmpeg lacks")
    return found


def _check_format(format: Any, size: int, fps: Any, lossless: bool) -> Tuple[Optional[VideoEncoding], float]:
    """The encoding (None for frames) and the frame rate of a valid format; DataError else."""
    if format not in FORMATS:
        raise DataError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")
    if format == "frames":
        if fps is not None or lossless:
            raise DataError("fps and lossless apply to the video formats (mp4, webm), not to frames (JPEG files)")
        return None, DEFAULT_FPS
    encoding = choose_encoding(format, bool(lossless))
    if encoding.even_sides and size % 2:
        raise DataError(f"size must be even for format {format} ({encoding.codec} in yuv420p), got {size}")
    return encoding, _check_fps(DEFAULT_FPS if fps is None else fps)


def _plan(num_train: int, num_val: int) -> List[_Planned]:
    """Each video's id, split and label: labels round-robin within each split (balanced), ids
    the 1-based global video index as six digits, train first, so they are unique across splits."""
    planned = []
    for i in range(num_train + num_val):
        split = "train" if i < num_train else "val"
        label = (i if split == "train" else i - num_train) % len(CLASS_NAMES)
        planned.append(_Planned(f"{i + 1:06d}", split, label))
    return planned


def _clear_index(out: Path, folder: str) -> Path:
    """Make `out`/`folder` (frames or videos) and remove any old index; return the folder."""
    root = out / folder
    with writing(root):
        root.mkdir(parents=True, exist_ok=True)
    # An old index could name frames this run is about to replace (with another frame
    # count); remove it first so an interrupted run leaves no index at all.
    for name in INDEX_FILES:
        with writing(out / name):
            (out / name).unlink(missing_ok=True)
    return root


def _write_videos(jobs: Sequence[_Job], workers: int) -> List[_Written]:
    processes = min(workers, len(jobs))
    if processes <= 1:
        return [_write_video(job) for job in jobs]
    chunk = max(1, min(32, len(jobs) // (processes * 8)))
    with multiprocessing.get_context().Pool(processes) as pool:
        return pool.map(_write_video, jobs, chunksize=chunk)


def _label_line(video: _Planned, frames: int, encoding: Optional[VideoEncoding]) -> str:
    """A frame folder's ssv2 line, or a video file's generic one (its path under the root)."""
    if encoding is None:
        return f"{video.video_id} {frames} {video.label}\n"
    return f"{video.video_id}{encoding.suffix} {video.label}\n"


def _write_index(
    out: Path, planned: Sequence[_Planned], written: Sequence[_Written], frames: int, encoding: Optional[VideoEncoding]
) -> None:
    """The label files, class names and ground truth, once every video is in place: the index
    files go last so they never name missing frames or files."""
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
    lines = {s: [_label_line(v, frames, encoding) for v in planned if v.split == s] for s in ("train", "val")}
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
    *,
    format: str = "frames",
    fps: Optional[float] = None,
    lossless: bool = False,
) -> Dict[str, Any]:
    """Write the synthetic dataset under `out_dir` and return a summary of what was written.
    `format`: one of FORMATS; `fps` (default 12) and `lossless` apply to the video formats.
    `distractors=False` writes videos without the moving distractors (for diagnosis: the
    benchmark is on the videos with them). Bad arguments, or a format the bundled FFmpeg cannot
    encode, raise DataError before anything is written.
    """
    num_train = _check_int("num_train", num_train, 0)
    num_val = _check_int("num_val", num_val, 0)
    frames = _check_int("frames", frames, MIN_FRAMES)
    size = _check_int("size", size, MIN_SIZE)
    seed = _check_int("seed", seed, 0)
    workers = (os.cpu_count() or 1) if workers is None else _check_int("workers", workers, 1)
    if num_train + num_val == 0:
        raise DataError("num_train + num_val must be at least 1")
    encoding, fps = _check_format(format, size, fps, lossless)

    out = Path(out_dir)
    root = _clear_index(out, "frames" if encoding is None else "videos")
    planned = _plan(num_train, num_val)
    jobs = [
        _Job(str(root), seed, i, v.video_id, v.label, frames, size, distractors, encoding, fps)
        for i, v in enumerate(planned)
    ]
    _write_index(out, planned, _write_videos(jobs, workers), frames, encoding)
    return {
        "out_dir": str(out),
        "format": format,
        ("frames_root" if encoding is None else "videos_root"): str(root),
        "codec": None if encoding is None else encoding.codec,
        "fps": None if encoding is None else fps,
        "num_train": num_train,
        "num_val": num_val,
        "frames": frames,
        "size": size,
        "seed": seed,
        "class_names": list(CLASS_NAMES),
    }
