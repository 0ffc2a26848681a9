"""Label files: one video a line, read into `VideoRecord`s.

Two formats:

* ``"ssv2"`` (TSM-style SSv1/SSv2 files, the original's format): ``video_id num_frames class_id``.
  The frame folder is ``<frames_root>/<video_id>``.
* ``"generic"``: ``relative_video_dir class_id``; the frame count is the number of JPEGs in
  ``<frames_root>/<relative_video_dir>``, counted when the file is read. For video files
  (``videos=True``) the path is a video file under the root and its frame count comes from the
  container when a clip is read (0 in the record).

Kinetics' CSV and SSv2's JSON, which name video files, are read by `stabn.data.video_lists`.

Test splits have no labels: with ``labelled=False`` the class column may be left out and the
record's label is -1.
"""

from __future__ import annotations

import logging
import os
from typing import Dict, Iterable, List, NamedTuple, Optional, Set, Tuple

from stabn.config.schema import SOURCE_LABEL_FORMATS
from stabn.errors import DataError, PathLike

log = logging.getLogger(__name__)


class VideoRecord(NamedTuple):
    """One video: its id (the folder name relative to the frames root), frame count, class
    (-1 when unlabelled), frame folder, and the line of its label file (0 when it comes from
    none), for errors found when its frames are read."""

    video_id: str
    num_frames: int
    label: int
    path: str
    line: int = 0


def count_frames(folder: PathLike) -> int:
    """Number of ``*.jpg`` / ``*.jpeg`` files in `folder`; DataError if it is not a folder."""
    try:
        with os.scandir(folder) as entries:
            return sum(1 for e in entries if e.name.lower().endswith((".jpg", ".jpeg")))
    except FileNotFoundError:
        raise DataError(f"frame folder {os.fspath(folder)} does not exist") from None
    except NotADirectoryError:
        raise DataError(f"frame folder {os.fspath(folder)} is not a folder") from None


def first_missing_folder(records: Iterable[VideoRecord]) -> Optional[VideoRecord]:
    """The first record whose frame folder does not exist, or None. Each parent folder is
    listed once instead of every video's folder looked up: one directory read rather than
    220,000 lookups for SSv2, which on a network file system is seconds instead of minutes."""
    listings: Dict[str, Set[str]] = {}
    for record in records:
        parent, name = os.path.split(os.path.normpath(record.path))
        if parent not in listings:
            try:
                with os.scandir(parent or os.curdir) as entries:
                    listings[parent] = {e.name for e in entries if e.is_dir()}
            except OSError:  # no such parent, or not a folder: none of its videos are there
                listings[parent] = set()
        if name not in listings[parent]:
            return record
    return None


def _int(value: str, what: str, where: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise DataError(f"{where}: {what} {value!r} is not an integer") from None


def read_label_file(
    path: PathLike,
    frames_root: Optional[PathLike] = None,
    num_classes: Optional[int] = None,
    fmt: str = "ssv2",
    check_frames: bool = False,
    labelled: bool = True,
    videos: bool = False,
) -> List[VideoRecord]:
    """Read a label file into records, in file order; blank lines are skipped.

    Args:
        path: the label file.
        frames_root: folder holding one frame folder per video; a record's ``path`` is
            ``frames_root/video_id`` (``video_id`` itself when None).
        num_classes: when given, class ids must lie in ``[0, num_classes)``.
        fmt: ``"ssv2"`` or ``"generic"`` (see the module docstring).
        check_frames: check that every frame folder exists (always done for ``"generic"``,
            which counts the frames).
        labelled: when False the class column may be missing (label -1).
        videos: ``"generic"`` lines name video files: nothing is counted, ``num_frames`` is 0.

    Raises:
        DataError: naming the file and line of a malformed line, a non-integer, a frame
            count below 1, a class id out of range, or a missing frame folder.
    """
    formats = SOURCE_LABEL_FORMATS["frames"]
    if fmt not in formats or (videos and fmt != "generic"):
        raise ValueError(f"fmt must be one of {formats} (generic for video files), got {fmt!r}")
    path = os.fspath(path)
    records = []
    for lineno, line in enumerate(_read_lines(path), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        video_id, label_field, frames_field = _split_line(line, fmt, labelled, where)
        label = -1 if label_field is None else _class_id(label_field, num_classes, where)
        folder = os.path.join(os.fspath(frames_root), video_id) if frames_root is not None else video_id
        num_frames = 0 if videos else _frame_count(frames_field, folder, where)
        records.append(VideoRecord(video_id, num_frames, label, folder, lineno))
    missing = first_missing_folder(records) if check_frames and fmt == "ssv2" else None
    if missing is not None:
        raise DataError(f"{path}:{missing.line}: frame folder {missing.path} does not exist")
    return records


def _read_lines(path: str) -> List[str]:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().splitlines()
    except OSError as e:
        raise DataError(f"cannot read label file {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise DataError(f"label file {path} is not UTF-8 text") from None


def _split_line(line: str, fmt: str, labelled: bool, where: str) -> Tuple[str, Optional[str], Optional[str]]:
    """A line's video id, class id field and frame count field; the class id is None where an
    unlabelled line leaves it out, the frame count None for ``"generic"``, which has none."""
    expected = "video_id num_frames class_id" if fmt == "ssv2" else "relative_video_dir class_id"
    if fmt == "ssv2":
        fields = line.split()
        if len(fields) != 3 and (labelled or len(fields) != 2):
            raise DataError(f"{where}: expected '{expected}', got {line.strip()!r}")
        return fields[0], (fields[2] if len(fields) == 3 else None), fields[1]
    # Folder names may contain spaces, so the class id is the last field.
    fields = line.strip().rsplit(maxsplit=1)
    if len(fields) == 2 and (labelled or fields[1].lstrip("-").isdigit()):
        return fields[0], fields[1], None
    if not labelled:
        return line.strip(), None, None
    raise DataError(f"{where}: expected '{expected}', got {line.strip()!r}")


def _class_id(field: str, num_classes: Optional[int], where: str) -> int:
    label = _int(field, "class id", where)
    if label < 0 or (num_classes is not None and label >= num_classes):
        bound = f"[0, {num_classes})" if num_classes is not None else ">= 0"
        raise DataError(f"{where}: class id {label} is outside {bound}")
    return label


def _frame_count(field: Optional[str], folder: str, where: str) -> int:
    """The frame count a line gives in `field`, or with none (``"generic"``) the JPEGs in
    `folder`; at least 1."""
    if field is not None:
        num_frames = _int(field, "num_frames", where)
        if num_frames < 1:
            raise DataError(f"{where}: num_frames {num_frames} is below 1")
        return num_frames
    try:
        num_frames = count_frames(folder)
    except DataError as e:
        raise DataError(f"{where}: {e}") from None
    if num_frames < 1:
        raise DataError(f"{where}: no JPEG frames in {folder}")
    return num_frames


def read_class_names(path: PathLike, num_classes: Optional[int] = None) -> List[str]:
    """Class names, one a line (line i names class i; blank lines are skipped); with
    `num_classes`, the file must name exactly that many."""
    try:
        with open(path, encoding="utf-8") as f:
            names = [line.strip() for line in f if line.strip()]
    except OSError as e:
        raise DataError(f"cannot read class names {os.fspath(path)}: {e.strerror or e}") from None
    if num_classes is not None and len(names) != num_classes:
        raise DataError(f"{os.fspath(path)}: {len(names)} class names for {num_classes} classes (model.num_classes)")
    return names


def optional_class_names(path: Optional[PathLike], num_classes: int) -> Optional[List[str]]:
    """`read_class_names` for a model's class names, which are optional: a file that is not
    there or does not fit leaves the classes numbered, with a warning that says why."""
    if not path:
        return None
    try:
        return read_class_names(path, num_classes)
    except DataError as e:
        log.warning("classes are numbered, not named: %s", e)
        return None
