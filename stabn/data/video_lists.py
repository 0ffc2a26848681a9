"""Label lists that name video files, read into `VideoRecord`s whose ``path`` is the file and
whose ``num_frames`` is 0 (the container says, when a clip is read):

* ``"generic"``: ``relative/path.ext class_id`` lines under the data root (MMAction2's video
  list); `stabn.data.annotations.read_label_file` reads it.
* ``"kinetics"``: Kinetics' CSV, ``label,youtube_id,time_start,time_end,split`` (the test
  split's has no label column). The file of a row is ``<youtube_id>_<start>_<end>`` with the
  times zero-padded to 6 digits and any video suffix, under ``<root>/<label>/`` (the label
  with spaces or with underscores) or ``<root>/`` itself, as the usual download scripts lay
  them out. Class ids are the positions of the labels in the class names (`data.class_names`),
  or, without them, in the sorted labels of the training CSV.
* ``"ssv2_json"``: Something-Something V2's official split JSON, with the labels JSON
  (``something-something-v2-labels.json``) beside it; the file of a video is
  ``<root>/<id>.webm``, as the dataset ships them.

Every file is looked up when the list is read, each folder listed once (one directory read
rather than a lookup per video, which on a network file system is seconds instead of minutes).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from stabn.data.annotations import VideoRecord, read_label_file
from stabn.data.ssv2_annotations import LABELS_FILE, load_labels, load_split
from stabn.data.video import VIDEO_SUFFIXES
from stabn.errors import DataError, PathLike

KINETICS_COLUMNS = ("label", "youtube_id", "time_start", "time_end", "split")
SSV2_SUFFIX = ".webm"


def place(label_file: Optional[str], record: VideoRecord) -> str:
    """Where a record comes from, for errors: ``file:line``, or ``file (entry n)`` for JSON."""
    if not label_file or not record.line:
        return ""
    if label_file.lower().endswith(".json"):
        return f"{label_file} (entry {record.line})"
    return f"{label_file}:{record.line}"


class _Listing:
    """The video files of folders, each folder listed once: name without suffix -> name."""

    def __init__(self) -> None:
        self._folders: Dict[str, Dict[str, str]] = {}

    def files(self, folder: str) -> Dict[str, str]:
        if folder not in self._folders:
            try:
                with os.scandir(folder) as entries:
                    names = [e.name for e in entries if e.name.lower().endswith(VIDEO_SUFFIXES)]
            except OSError:  # no such folder, or not one: none of its videos are there
                names = []
            self._folders[folder] = {os.path.splitext(n)[0]: n for n in sorted(names)}
        return self._folders[folder]

    def exists(self, path: str) -> bool:
        folder, name = os.path.split(os.path.normpath(path))
        return name in self.files(folder or os.curdir).values()


def check_videos_exist(records: Sequence[VideoRecord], label_file: Optional[str]) -> None:
    """DataError naming the label file and line of the first record whose video is missing."""
    listing = _Listing()
    for record in records:
        if not listing.exists(record.path):
            raise DataError(f"{place(label_file, record)}: video file {record.path} does not exist")


def read_generic_videos(
    path: PathLike, root: PathLike, num_classes: Optional[int] = None, labelled: bool = True
) -> List[VideoRecord]:
    """A ``relative/path.ext class_id`` list of videos under `root`; every file must exist."""
    records = read_label_file(path, root, num_classes, "generic", labelled=labelled, videos=True)
    check_videos_exist(records, os.fspath(path))
    return records


def _csv_rows(path: str) -> Tuple[List[str], List[Tuple[int, Dict[str, str]]]]:
    try:
        with open(path, encoding="utf-8", newline="") as f:
            rows = list(csv.reader(f))
    except OSError as e:
        raise DataError(f"cannot read label file {path}: {e.strerror or e}") from None
    except (UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"label file {path} is not a readable CSV ({e})") from None
    if not rows:
        raise DataError(f"{path}: empty; expected a header {','.join(KINETICS_COLUMNS)}")
    header = [c.strip() for c in rows[0]]
    needed = [c for c in KINETICS_COLUMNS[1:4] if c not in header]
    if needed:
        raise DataError(f"{path}:1: the header has no column {needed[0]!r}; expected {','.join(KINETICS_COLUMNS)}")
    out = []
    for lineno, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise DataError(f"{path}:{lineno}: {len(row)} fields for the {len(header)} columns of the header")
        out.append((lineno, {name: cell.strip() for name, cell in zip(header, row)}))
    return header, out


def kinetics_labels(path: PathLike) -> List[str]:
    """The sorted labels of a Kinetics CSV: the class names when none are given."""
    header, rows = _csv_rows(os.fspath(path))
    if "label" not in header:
        raise DataError(f"{os.fspath(path)}:1: no 'label' column, so no class names: give data.class_names")
    return sorted({row["label"] for _, row in rows})


def _kinetics_name(row: Dict[str, str], where: str) -> str:
    try:
        start, end = int(float(row["time_start"])), int(float(row["time_end"]))
    except ValueError:
        times = f"{row['time_start']!r}, {row['time_end']!r}"
        raise DataError(f"{where}: time_start / time_end {times} are not numbers") from None
    return f"{row['youtube_id']}_{start:06d}_{end:06d}"


def read_kinetics_csv(
    path: PathLike, root: PathLike, class_names: Sequence[str], labelled: bool = True
) -> List[VideoRecord]:
    """The rows of a Kinetics CSV as records of their video files under `root`; class ids are
    the labels' positions in `class_names`."""
    path, root = os.fspath(path), os.fspath(root)
    header, rows = _csv_rows(path)
    if labelled and "label" not in header:
        raise DataError(f"{path}:1: no 'label' column in the header; expected {','.join(KINETICS_COLUMNS)}")
    class_of = {name: i for i, name in enumerate(class_names)}
    listing = _Listing()
    records = []
    for lineno, row in rows:
        where = f"{path}:{lineno}"
        name = _kinetics_name(row, where)
        label = -1
        folders = [root]
        if "label" in header and row["label"]:
            if row["label"] not in class_of:
                if labelled:
                    raise DataError(f"{where}: label {row['label']!r} is not one of the {len(class_of)} class names")
            else:
                label = class_of[row["label"]]
            folders = [os.path.join(root, row["label"]), os.path.join(root, row["label"].replace(" ", "_")), root]
        file = next((os.path.join(f, listing.files(f)[name]) for f in folders if name in listing.files(f)), None)
        if file is None:
            raise DataError(f"{where}: no video {name}.* in {' or '.join(dict.fromkeys(folders))}")
        records.append(VideoRecord(os.path.relpath(file, root), 0, label, file, lineno))
    return records


def read_ssv2_json(
    path: PathLike, root: PathLike, num_classes: Optional[int] = None, labelled: bool = True
) -> List[VideoRecord]:
    """An SSv2 split JSON as records of ``<root>/<id>.webm``; the labels JSON beside it gives
    the class ids (not read for an unlabelled split, such as the test split)."""
    path = Path(path)
    class_of = None
    if labelled:
        classes = load_labels(path.parent / LABELS_FILE)
        if num_classes is not None and len(classes) != num_classes:
            raise DataError(
                f"{path.parent / LABELS_FILE}: {len(classes)} classes for {num_classes} (model.num_classes)"
            )
        class_of = {name: i for i, name in enumerate(classes)}
    entries = load_split(path, class_of)
    records = [
        VideoRecord(
            f"{vid}{SSV2_SUFFIX}",
            0,
            -1 if label is None else label,
            os.path.join(os.fspath(root), f"{vid}{SSV2_SUFFIX}"),
            pos,
        )  # fmt: skip
        for pos, (vid, label) in enumerate(entries, start=1)
    ]
    check_videos_exist(records, os.fspath(path))
    return records
