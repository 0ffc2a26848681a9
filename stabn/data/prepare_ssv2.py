"""Prepare Something-Something V2: .webm videos -> JPEG frame folders + TSM-style label files.

    python -m stabn.data.prepare_ssv2 --video-dir V --anno-dir A --out-dir O [--workers N]
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

Rerunning is cheap and safe: finished videos are skipped, half-written ones are redone.
A write the operating system refuses (a full disk, a quota, no permission) stops the run with
one line naming the file, exit code 75: the unfinished folders are removed, the finished ones
kept, and the same command goes on from there once the cause is fixed.
A video is decoded into frames/.<id>.partial and renamed to frames/<id> only once complete;
then a marker .done/<id> holding the frame count is written. A frames folder counts as
finished only if its marker exists and agrees with the number of JPEGs on disk, so a crash
at any point (mid-decode, mid-rename, mid-delete) is repaired by the next run.
Two runs must not share one out dir at the same time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from stabn.data.sampling import FRAME_TEMPLATE
from stabn.data.video import import_av, resize_short_side, short_side_size  # noqa: F401  (re-exported)
from stabn.errors import DataError, PathLike, ReportedError, report_error
from stabn.fileio import atomic_write_text, write_image, writing

LABELS_FILE = "something-something-v2-labels.json"
SPLIT_FILES = {
    "train": "something-something-v2-train.json",
    "val": "something-something-v2-validation.json",
    "test": "something-something-v2-test.json",
}
LABELED_SPLITS = ("train", "val")
OPTIONAL_SPLITS = ("test",)  # many copies of SSv2 come without the test annotations
DONE_DIR = ".done"
SETTINGS_FILE = "settings.json"  # in DONE_DIR: how the frames there were extracted
PARTIAL_SUFFIX = ".partial"
# How many failed ids the printed summary lists before pointing at failed.txt.
MAX_FAILED_SHOWN = 20

PREP_HINT = "PyAV is needed to decode videos: pip install -e .[prep]"


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
        """Human-readable multi-line summary, as the CLI prints it."""
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


@dataclass(frozen=True)
class _Result:
    video_id: str
    status: str  # "done" | "skipped" | "failed"
    num_frames: int = 0
    error: str = ""


# ----------------------------------------------------------------------------- annotations


def _load_json(path: Path) -> object:
    if not path.is_file():
        raise DataError(f"annotation file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"malformed JSON in {path}: {e.msg} at line {e.lineno} column {e.colno}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read annotation file {path}: {e}") from None


def load_labels(path: Path) -> List[str]:
    """Class names ordered by index, from the `{"Template text": "idx"}` labels file."""
    raw = _load_json(path)
    if not isinstance(raw, dict) or not raw:
        raise DataError(f'{path}: expected a non-empty JSON object {{"template": "index"}}')
    by_idx: Dict[int, str] = {}
    for name, idx in raw.items():
        try:
            i = int(idx)
        except (TypeError, ValueError):
            raise DataError(f"{path}: class {name!r} has a non-integer index {idx!r}") from None
        if i in by_idx:
            raise DataError(f"{path}: index {i} is used by both {by_idx[i]!r} and {name!r}")
        by_idx[i] = name
    # The training code maps label i to output i, so gaps would silently shift classes.
    if sorted(by_idx) != list(range(len(by_idx))):
        raise DataError(f"{path}: class indices must be 0..{len(by_idx) - 1} without gaps")
    return [by_idx[i] for i in range(len(by_idx))]


def _check_id(path: Path, pos: int, entry: object) -> str:
    if not isinstance(entry, dict) or "id" not in entry:
        raise DataError(f'{path}: entry {pos} is not an object with an "id"')
    vid = str(entry["id"]).strip()
    # The id becomes a folder name and a token in space-separated label files.
    if not vid or vid.startswith(".") or any(c in vid for c in "/\\ \t\r\n\0"):
        raise DataError(f"{path}: entry {pos} has an unusable video id {entry['id']!r}")
    return vid


def load_split(path: Path, class_of: Optional[Dict[str, int]]) -> List[Tuple[str, Optional[int]]]:
    """`[(video_id, class_idx)]` in file order; class_idx is None when `class_of` is None (test)."""
    raw = _load_json(path)
    if not isinstance(raw, list):
        raise DataError(f"{path}: expected a JSON list of videos")
    out: List[Tuple[str, Optional[int]]] = []
    for pos, entry in enumerate(raw):
        vid = _check_id(path, pos, entry)
        if class_of is None:
            out.append((vid, None))
            continue
        template = entry.get("template")
        if not isinstance(template, str):
            raise DataError(f'{path}: video {vid} has no "template"')
        # SSv2 templates mark the object slots, "[something]"; the labels file doesn't.
        name = template.replace("[", "").replace("]", "")
        if name not in class_of:
            raise DataError(f"{path}: video {vid} has template {template!r}, which is not a class in {LABELS_FILE}")
        out.append((vid, class_of[name]))
    return out


# ----------------------------------------------------------------------------- decoding


def _import_av():
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


def _rmtree(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _one_line(e: BaseException) -> str:
    msg = " ".join(str(e).split()) or "no message"
    return f"{type(e).__name__}: {msg}"


def _decode_video(src: Path, dst: Path, quality: int, short_side: Optional[int] = None) -> int:
    """Write every frame of `src` as dst/000001.jpg ..., resized to `short_side` when given
    (bilinear, antialiased when shrinking); return the count."""
    av = _import_av()
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


def _process(job: Tuple[str, str, str, int, Optional[int]]) -> _Result:
    """Skip, or decode one video into its frames folder. A video that cannot be read is a
    result; a write the operating system refuses raises, and stops the run."""
    vid, video_dir, out_dir, quality, short_side = job
    frames_root = Path(out_dir) / "frames"
    done_root = Path(out_dir) / DONE_DIR
    try:
        n = _finished_count(frames_root, done_root, vid)
        if n is not None:
            return _Result(vid, "skipped", n)
        marker, final = done_root / vid, frames_root / vid
        partial = frames_root / f".{vid}{PARTIAL_SUFFIX}"
        # Marker first: if we die below, the folder is left without one and gets redone.
        with writing(final):
            marker.unlink(missing_ok=True)
            _rmtree(final)
            _rmtree(partial)
        src = Path(video_dir) / f"{vid}.webm"
        if not src.is_file():
            return _Result(vid, "failed", error=f"video file not found: {src}")
        with writing(partial):
            partial.mkdir(parents=True)
        try:
            n = _decode_video(src, partial, quality, short_side)
        except ReportedError:  # a frame the operating system did not take
            shutil.rmtree(partial, ignore_errors=True)
            raise
        except Exception as e:  # PyAV raises many types for corrupt data; all mean "skip it".
            _rmtree(partial)
            return _Result(vid, "failed", error=f"cannot decode {src.name}: {_one_line(e)}")
        if n == 0:
            _rmtree(partial)
            return _Result(vid, "failed", error=f"no frames decoded from {src.name}")
        with writing(final):
            os.rename(partial, final)
        atomic_write_text(marker, f"{n}\n")
        return _Result(vid, "done", n)
    except ReportedError:
        raise
    except Exception as e:  # anything else about this one video: report it and let the rest continue
        return _Result(vid, "failed", error=_one_line(e))


def _remove_stale_partials(frames_root: Path) -> None:
    for entry in os.scandir(frames_root):
        if entry.name.startswith(".") and entry.name.endswith(PARTIAL_SUFFIX):
            _rmtree(Path(entry.path))


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


def _run_jobs(
    jobs: Sequence[Tuple[str, str, str, int, Optional[int]]], workers: int, progress: bool
) -> Iterable[_Result]:
    from tqdm import tqdm

    bar = dict(total=len(jobs), unit="video", disable=not progress, dynamic_ncols=True)
    if workers <= 1 or len(jobs) <= 1:
        # In-process: no start-up cost, and tracebacks from bugs stay readable.
        for r in tqdm(map(_process, jobs), **bar):
            yield r
        return
    # Small chunks keep the bar moving; larger ones cut IPC for 200k short jobs.
    chunksize = max(1, min(64, len(jobs) // (workers * 16)))
    with multiprocessing.Pool(workers) as pool:
        for r in tqdm(pool.imap_unordered(_process, jobs, chunksize=chunksize), **bar):
            yield r


# ----------------------------------------------------------------------------- entry points


def _available_cpus() -> int:
    # Containers and batch schedulers often pin a job to fewer cores than the machine has.
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:
        return os.cpu_count() or 1


def _id_sort_key(vid: str) -> Tuple[int, int, str]:
    return (0, int(vid), "") if vid.isdigit() else (1, 0, vid)


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
    if workers < 1:
        raise DataError(f"--workers must be at least 1, got {workers}")
    if not 1 <= quality <= 100:
        raise DataError(f"--quality must be in 1..100, got {quality}")
    if limit is not None and limit < 0:
        raise DataError(f"--limit must be >= 0, got {limit}")
    if short_side is not None and short_side < 1:
        raise DataError(f"--short-side must be at least 1, got {short_side}")
    if not anno_dir.is_dir():
        raise DataError(f"annotation directory not found: {anno_dir}")
    if not video_dir.is_dir():
        raise DataError(f"video directory not found: {video_dir}")

    # Validate every input before touching the output, so a typo costs nothing.
    classes = load_labels(anno_dir / LABELS_FILE)
    class_of = {name: i for i, name in enumerate(classes)}
    splits: Dict[str, List[Tuple[str, Optional[int]]]] = {}
    missing: List[str] = []
    for split, fname in SPLIT_FILES.items():
        if split in OPTIONAL_SPLITS and not (anno_dir / fname).exists():
            missing.append(split)
            continue
        entries = load_split(anno_dir / fname, class_of if split in LABELED_SPLITS else None)
        splits[split] = entries if limit is None else entries[:limit]
    _import_av()  # fail with the install hint now, not once per video in the workers
    _check_settings(out_dir, short_side)

    frames_root = out_dir / "frames"
    with writing(out_dir / DONE_DIR):
        frames_root.mkdir(parents=True, exist_ok=True)
        (out_dir / DONE_DIR).mkdir(exist_ok=True)
    atomic_write_text(out_dir / DONE_DIR / SETTINGS_FILE, json.dumps({"short_side": short_side}) + "\n")
    _remove_stale_partials(frames_root)

    # A video listed in two splits must be decoded once, not twice at the same time.
    unique_ids = list(dict.fromkeys(vid for entries in splits.values() for vid, _ in entries))
    jobs = [(vid, str(video_dir), str(out_dir), quality, short_side) for vid in unique_ids]

    summary = PrepareSummary(out_dir=out_dir, missing_splits=missing)
    counts: Dict[str, int] = {}
    try:
        for r in _run_jobs(jobs, workers, progress):
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
            _remove_stale_partials(frames_root)
        raise

    for split, entries in splits.items():
        lines = []
        for vid, label in entries:
            if vid in counts:
                lines.append(f"{vid} {counts[vid]}" + ("" if label is None else f" {label}"))
        path = out_dir / f"{split}_videofolder.txt"
        atomic_write_text(path, "".join(line + "\n" for line in lines))
        summary.label_files[split] = path
    atomic_write_text(out_dir / "category.txt", "".join(name + "\n" for name in classes))

    failed_path = out_dir / "failed.txt"
    if summary.failed:
        ids = sorted(summary.failed, key=_id_sort_key)
        atomic_write_text(failed_path, "".join(f"{vid} {summary.failed[vid]}\n" for vid in ids))
    else:
        # A clean rerun must not leave the previous run's failures behind.
        failed_path.unlink(missing_ok=True)

    summary.seconds = time.monotonic() - start
    return summary


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m stabn.data.prepare_ssv2",
        description="Extract Something-Something V2 .webm videos to JPEG frames and write "
        "TSM-style label files (train/val/test_videofolder.txt, category.txt).",
    )
    p.add_argument("--video-dir", required=True, help="folder with <id>.webm files")
    p.add_argument(
        "--anno-dir", required=True, help="folder with something-something-v2-{labels,train,validation,test}.json"
    )
    p.add_argument("--out-dir", required=True, help="output folder (frames/ and label files)")
    p.add_argument("--workers", type=int, default=None, help="processes (default: the CPUs this process may use)")
    p.add_argument("--quality", type=int, default=95, help="JPEG quality 1-100 (default 95)")
    p.add_argument("--limit", type=int, default=None, help="only the first K videos of each split (for a trial run)")
    p.add_argument(
        "--short-side",
        type=int,
        default=None,
        metavar="N",
        help="resize frames so that their short side is N pixels (default: the native size, as the original)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI: exit 0 if every video succeeded, 1 if some failed, 2 on bad input, 75 on a refused write."""
    args = build_parser().parse_args(argv)
    try:
        summary = prepare_ssv2(
            args.video_dir,
            args.anno_dir,
            args.out_dir,
            workers=args.workers,
            quality=args.quality,
            limit=args.limit,
            progress=not args.no_progress,
            short_side=args.short_side,
        )
    except ReportedError as e:
        return report_error(e)
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return 130
    print(summary.format())
    return 0 if summary.ok else 1


if __name__ == "__main__":
    sys.exit(main())
