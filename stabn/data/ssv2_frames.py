"""Prepare Something-Something V2: .webm videos -> JPEG frame folders + TSM-style label files.

    stabn-prepare-ssv2 --video-dir V --anno-dir A --out-dir O [--workers N]
        [--quality Q] [--limit K] [--short-side N]

Writes, under O:
    frames/<id>/000001.jpg ...   every decoded frame at the native rate, at the native size or
                                 resized so that the short side is N (--short-side)
    train_videofolder.txt        `id num_frames class_idx` per line
    val_videofolder.txt          `id num_frames class_idx` per line
    test_videofolder.txt         `id num_frames` per line (the test split has no labels; only
                                 when the annotations include something-something-v2-test.json)
    category.txt                 class names, one per line, ordered by class index
    failed.txt                   `id reason` per video that could not be decoded (only if any)

Rerunning is cheap and safe: finished videos are skipped, half-written ones are redone
(`stabn.data.ssv2_extract`). A write the operating system refuses (a full disk, a quota, no
permission) stops the run with one line naming the file, exit code 75: the unfinished folders
are removed, the finished ones kept, and the same command goes on from there once the cause
is fixed. Two runs must not share one out dir at the same time.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from stabn.data.ssv2_annotations import SPLIT_FILES, Annotations, read_annotations
from stabn.data.ssv2_extract import DONE_DIR, import_pyav, process_videos, remove_partials
from stabn.errors import DataError, PathLike, ReportedError
from stabn.fileio import atomic_write_text, writing

SETTINGS_FILE = "settings.json"  # in DONE_DIR: how the frames there were extracted
# How many failed ids the printed summary lists before pointing at failed.txt.
MAX_FAILED_SHOWN = 20


def _id_sort_key(vid: str) -> Tuple[int, int, str]:
    return (0, int(vid), "") if vid.isdigit() else (1, 0, vid)


@dataclass
class PrepareSummary:
    """What a run did. `failed` maps video id -> one-line reason."""

    out_dir: Path
    done: int = 0
    skipped: int = 0
    failed: Dict[str, str] = field(default_factory=dict)
    frames_written: int = 0
    seconds: float = 0.0
    label_files: Dict[str, Path] = field(default_factory=dict)
    missing_splits: List[str] = field(default_factory=list)  # optional splits without annotations

    @property
    def ok(self) -> bool:
        return not self.failed

    def format(self) -> str:
        """Human-readable multi-line summary, as the command prints it."""
        lines = [
            f"videos done: {self.done}, skipped (already finished): {self.skipped}, failed: {len(self.failed)}",
            f"frames written: {self.frames_written}, time: {self.seconds:.1f} s",
        ]
        if self.failed:
            ids = sorted(self.failed, key=_id_sort_key)
            shown = ", ".join(ids[:MAX_FAILED_SHOWN])
            more = f" (+{len(ids) - MAX_FAILED_SHOWN} more)" if len(ids) > MAX_FAILED_SHOWN else ""
            lines.append(f"failed ids: {shown}{more}; reasons in {self.out_dir / 'failed.txt'}")
        for split in self.missing_splits:
            lines.append(f"{split} split skipped: no {SPLIT_FILES[split]} in the annotations")
        lines.append(f"label files in {self.out_dir}")
        return "\n".join(lines)


def _available_cpus() -> int:
    # Containers and batch schedulers often pin a job to fewer cores than the machine has.
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:
        return os.cpu_count() or 1


def _check_options(workers: int, quality: int, limit: Optional[int], short_side: Optional[int]) -> None:
    if workers < 1:
        raise DataError(f"--workers must be at least 1, got {workers}")
    if not 1 <= quality <= 100:
        raise DataError(f"--quality must be in 1..100, got {quality}")
    if limit is not None and limit < 0:
        raise DataError(f"--limit must be >= 0, got {limit}")
    if short_side is not None and short_side < 1:
        raise DataError(f"--short-side must be at least 1, got {short_side}")


def _check_settings(out_dir: Path, short_side: Optional[int]) -> None:
    """Frames of one out dir come from one frame size: a rerun must ask for the same."""
    path = out_dir / DONE_DIR / SETTINGS_FILE
    if not path.is_file():
        return
    try:
        before = json.loads(path.read_text()).get("short_side")
    except (OSError, ValueError, AttributeError):
        return
    if before != short_side:

        def said(value: Optional[int]) -> str:
            return "at the native size" if value is None else f"with --short-side {value}"

        raise DataError(f"{out_dir}: its frames were extracted {said(before)}, this run asks for them "
                        f"{said(short_side)}; use the same setting or another --out-dir")  # fmt: skip


def _prepare_out_dir(out_dir: Path, short_side: Optional[int]) -> None:
    """Make the frames and marker folders, record the frame size, clear unfinished folders."""
    frames_root = out_dir / "frames"
    with writing(out_dir / DONE_DIR):
        frames_root.mkdir(parents=True, exist_ok=True)
        (out_dir / DONE_DIR).mkdir(exist_ok=True)
    atomic_write_text(out_dir / DONE_DIR / SETTINGS_FILE, json.dumps({"short_side": short_side}) + "\n")
    remove_partials(frames_root)


def _extract_all(
    annotations: Annotations,
    video_dir: Path,
    out_dir: Path,
    summary: PrepareSummary,
    *,
    workers: int,
    quality: int,
    short_side: Optional[int],
    progress: bool,
) -> Dict[str, int]:
    """Decode every video the splits list, counting into `summary`; return the frame count of
    each video that has its frames."""
    # A video listed in two splits must be decoded once, not twice at the same time.
    unique_ids = list(dict.fromkeys(vid for entries in annotations.splits.values() for vid, _ in entries))
    jobs = [(vid, str(video_dir), str(out_dir), quality, short_side) for vid in unique_ids]
    counts: Dict[str, int] = {}
    try:
        for r in process_videos(jobs, workers, progress):
            if r.status == "failed":
                summary.failed[r.video_id] = r.error
                continue
            counts[r.video_id] = r.num_frames
            if r.status == "done":
                summary.done += 1
                summary.frames_written += r.num_frames
            else:
                summary.skipped += 1
    except ReportedError:
        # A refused write: the pool has stopped its workers, whose unfinished folders go too.
        with contextlib.suppress(OSError):
            remove_partials(out_dir / "frames")
        raise
    return counts


def _write_label_files(
    out_dir: Path, annotations: Annotations, counts: Dict[str, int], summary: PrepareSummary
) -> None:
    """Each split's label file (the videos that have their frames), category.txt and
    failed.txt (removed after a run without failures)."""
    for split, entries in annotations.splits.items():
        lines = []
        for vid, label in entries:
            if vid in counts:
                lines.append(f"{vid} {counts[vid]}" + ("" if label is None else f" {label}"))
        path = out_dir / f"{split}_videofolder.txt"
        atomic_write_text(path, "".join(line + "\n" for line in lines))
        summary.label_files[split] = path
    atomic_write_text(out_dir / "category.txt", "".join(name + "\n" for name in annotations.classes))

    failed_path = out_dir / "failed.txt"
    if summary.failed:
        ids = sorted(summary.failed, key=_id_sort_key)
        atomic_write_text(failed_path, "".join(f"{vid} {summary.failed[vid]}\n" for vid in ids))
    else:
        # A clean rerun must not leave the previous run's failures behind.
        failed_path.unlink(missing_ok=True)


def prepare_ssv2(
    video_dir: PathLike,
    anno_dir: PathLike,
    out_dir: PathLike,
    workers: Optional[int] = None,
    quality: int = 95,
    limit: Optional[int] = None,
    progress: bool = True,
    short_side: Optional[int] = None,
) -> PrepareSummary:
    """Extract SSv2 frames and write the label files; see the module docstring.

    Raises DataError for bad input (missing/malformed annotations, missing video dir), and
    WriteRefused for a write the operating system refuses. Videos that fail to decode do not
    raise: they are in `summary.failed` and failed.txt.
    """
    start = time.monotonic()
    video_dir, anno_dir, out_dir = Path(video_dir), Path(anno_dir), Path(out_dir)
    if workers is None:
        workers = _available_cpus()
    _check_options(workers, quality, limit, short_side)
    if not anno_dir.is_dir():
        raise DataError(f"annotation directory not found: {anno_dir}")
    if not video_dir.is_dir():
        raise DataError(f"video directory not found: {video_dir}")

    # Validate every input before touching the output, so a typo costs nothing.
    annotations = read_annotations(anno_dir, limit)
    import_pyav()  # fail with the install hint now, not once per video in the workers
    _check_settings(out_dir, short_side)

    _prepare_out_dir(out_dir, short_side)
    summary = PrepareSummary(out_dir=out_dir, missing_splits=annotations.missing)
    counts = _extract_all(
        annotations, video_dir, out_dir, summary,
        workers=workers, quality=quality, short_side=short_side, progress=progress,
    )  # fmt: skip
    _write_label_files(out_dir, annotations, counts, summary)
    summary.seconds = time.monotonic() - start
    return summary
