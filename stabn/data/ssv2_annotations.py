"""Something-Something V2's annotation files: the class names of the labels file and the videos
of each split, every entry checked before anything is written."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from stabn.errors import DataError

LABELS_FILE = "something-something-v2-labels.json"
SPLIT_FILES = {
    "train": "something-something-v2-train.json",
    "val": "something-something-v2-validation.json",
    "test": "something-something-v2-test.json",
}
LABELED_SPLITS = ("train", "val")
OPTIONAL_SPLITS = ("test",)  # many copies of SSv2 come without the test annotations

# (video id, class index), the index None in the test split, which has no labels.
Entry = Tuple[str, Optional[int]]


@dataclass(frozen=True)
class Annotations:
    """What the annotation folder holds: class names by index and each split's videos in file
    order; `missing` lists the optional splits without an annotation file."""

    classes: List[str]
    splits: Dict[str, List[Entry]]
    missing: List[str]


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


def load_split(path: Path, class_of: Optional[Dict[str, int]]) -> List[Entry]:
    """`[(video_id, class_idx)]` in file order; class_idx is None when `class_of` is None (test)."""
    raw = _load_json(path)
    if not isinstance(raw, list):
        raise DataError(f"{path}: expected a JSON list of videos")
    out: List[Entry] = []
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


def read_annotations(anno_dir: Path, limit: Optional[int] = None) -> Annotations:
    """The labels file and every split's file under `anno_dir`, the first `limit` videos of each
    split where given. Raises DataError for a missing or malformed file."""
    classes = load_labels(anno_dir / LABELS_FILE)
    class_of = {name: i for i, name in enumerate(classes)}
    splits: Dict[str, List[Entry]] = {}
    missing: List[str] = []
    for split, fname in SPLIT_FILES.items():
        if split in OPTIONAL_SPLITS and not (anno_dir / fname).exists():
            missing.append(split)
            continue
        entries = load_split(anno_dir / fname, class_of if split in LABELED_SPLITS else None)
        splits[split] = entries if limit is None else entries[:limit]
    return Annotations(classes, splits, missing)
