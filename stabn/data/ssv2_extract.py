"""One Something-Something V2 video decoded into its frames folder, once, and a pool of
processes doing that for a list of videos.

A video is decoded into frames/.<id>.partial and renamed to frames/<id> only once complete;
then a marker .done/<id> holding the frame count is written. A frames folder counts as
finished only if its marker exists and agrees with the number of JPEGs on disk, so a crash
at any point (mid-decode, mid-rename, mid-delete) is repaired by the next run.
"""

from __future__ import annotations

import multiprocessing
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence, Tuple

from stabn.data.sampling import FRAME_TEMPLATE
from stabn.data.video import import_av, resize_short_side
from stabn.errors import ReportedError
from stabn.fileio import atomic_folder, atomic_write_text, remove_path, write_image, writing

DONE_DIR = ".done"
PARTIAL_SUFFIX = ".partial"
PREP_HINT = "PyAV is needed to decode videos: pip install -e .[prep]"

# What a worker needs for one video: (video id, video dir, out dir, JPEG quality, short side).
Job = Tuple[str, str, str, int, Optional[int]]


@dataclass(frozen=True)
class VideoResult:
    video_id: str
    status: str  # "done" | "skipped" | "failed"
    num_frames: int = 0
    error: str = ""


class _Unreadable(Exception):
    """A video that gives no frames: the video fails, the run goes on."""


def import_pyav():
    """The `av` module, or a StabnError with the install hint."""
    return import_av(PREP_HINT)


def _count_jpgs(folder: Path) -> int:
    return sum(1 for e in os.scandir(folder) if e.name.endswith(".jpg") and e.is_file())


def _read_marker(marker: Path) -> Optional[int]:
    try:
        return int(marker.read_text().strip())
    except (OSError, ValueError):
        return None


def _finished_count(frames_root: Path, done_root: Path, vid: str) -> Optional[int]:
    """Frame count of a finished video, or None if it must be (re)done."""
    n = _read_marker(done_root / vid)
    folder = frames_root / vid
    if n is None or n <= 0 or not folder.is_dir():
        return None
    # The marker alone could be stale if someone deleted frames by hand.
    return n if _count_jpgs(folder) == n else None


def _one_line(e: BaseException) -> str:
    msg = " ".join(str(e).split()) or "no message"
    return f"{type(e).__name__}: {msg}"


def _decode_video(src: Path, dst: Path, quality: int, short_side: Optional[int] = None) -> int:
    """Write every frame of `src` as dst/000001.jpg ..., resized to `short_side` when given
    (bilinear, antialiased when shrinking); return the count."""
    av = import_pyav()
    n = 0
    with av.open(str(src)) as container:
        if not container.streams.video:
            raise ValueError("no video stream")
        stream = container.streams.video[0]
        for frame in container.decode(stream):
            n += 1
            image = frame.to_image()
            if short_side is not None:
                image = resize_short_side(image, short_side)
            write_image(dst / (FRAME_TEMPLATE % n), image, atomic=False, format="JPEG", quality=quality)
    return n


def _extract(src: Path, final: Path, quality: int, short_side: Optional[int]) -> int:
    """Decode `src` into the frames folder `final`, which appears only once complete; return the
    frame count. A video that cannot be read raises _Unreadable; a refused write ReportedError."""
    try:
        with atomic_folder(final, suffix=PARTIAL_SUFFIX) as folder:
            n = _decode_video(src, folder, quality, short_side)
            if n == 0:
                raise _Unreadable(f"no frames decoded from {src.name}")
    except (ReportedError, _Unreadable):  # a frame the operating system did not take, or no frame
        raise
    except Exception as e:  # PyAV raises many types for corrupt data; all mean "skip it".
        raise _Unreadable(f"cannot decode {src.name}: {_one_line(e)}") from None
    return n


def process_video(job: Job) -> VideoResult:
    """Skip, or decode one video into its frames folder. A video that cannot be read is a
    result; a write the operating system refuses raises, and stops the run."""
    vid, video_dir, out_dir, quality, short_side = job
    frames_root = Path(out_dir) / "frames"
    done_root = Path(out_dir) / DONE_DIR
    try:
        n = _finished_count(frames_root, done_root, vid)
        if n is not None:
            return VideoResult(vid, "skipped", n)
        marker, final = done_root / vid, frames_root / vid
        # Marker first: if we die below, the folder is left without one and gets redone.
        with writing(final):
            marker.unlink(missing_ok=True)
            remove_path(final)
        src = Path(video_dir) / f"{vid}.webm"
        if not src.is_file():
            return VideoResult(vid, "failed", error=f"video file not found: {src}")
        n = _extract(src, final, quality, short_side)
        atomic_write_text(marker, f"{n}\n")
        return VideoResult(vid, "done", n)
    except ReportedError:
        raise
    except _Unreadable as e:
        return VideoResult(vid, "failed", error=str(e))
    except Exception as e:  # anything else about this one video: report it and let the rest continue
        return VideoResult(vid, "failed", error=_one_line(e))


def remove_partials(frames_root: Path) -> None:
    """Remove the unfinished frames folders under `frames_root`."""
    for entry in os.scandir(frames_root):
        if entry.name.startswith(".") and entry.name.endswith(PARTIAL_SUFFIX):
            remove_path(entry.path)


def process_videos(jobs: Sequence[Job], workers: int, progress: bool) -> Iterable[VideoResult]:
    """`process_video` for every job, on `workers` processes, in the order they finish."""
    from tqdm.auto import tqdm

    bar = dict(total=len(jobs), unit="video", disable=not progress, dynamic_ncols=True)
    if workers <= 1 or len(jobs) <= 1:
        # In-process: no start-up cost, and tracebacks from bugs stay readable.
        for r in tqdm(map(process_video, jobs), **bar):
            yield r
        return
    # Small chunks keep the bar moving; larger ones cut IPC for 200k short jobs.
    chunksize = max(1, min(64, len(jobs) // (workers * 16)))
    with multiprocessing.Pool(workers) as pool:
        for r in tqdm(pool.imap_unordered(process_video, jobs, chunksize=chunksize), **bar):
            yield r
