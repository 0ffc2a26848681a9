"""The synthetic SSv2-layout dataset: layout, determinism, ground truth and the CLI."""

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import run_console_script
from stabn.data import synthetic_video
from stabn.data.synthetic import CLASS_NAMES, make_synthetic_dataset
from stabn.errors import DataError

ARGS = dict(num_train=16, num_val=8, frames=8, size=48, seed=3)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "data"
    make_synthetic_dataset(out, workers=1, **ARGS)
    return out


def _labels(root: Path, split: str):
    rows = [line.split(" ") for line in (root / f"{split}.txt").read_text().splitlines()]
    return [(vid, int(n), int(c)) for vid, n, c in rows]


def _truth(root: Path) -> dict:
    return json.loads((root / "ground_truth.json").read_text())


def _frame(root: Path, vid: str, t: int) -> np.ndarray:
    return np.asarray(Image.open(root / "frames" / vid / f"{t + 1:06d}.jpg"), dtype=np.float32)


def _tree(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _by_label(truth: dict, label: int):
    return [(vid, g) for vid, g in truth.items() if g["label"] == label]


def test_layout_and_labels_consistent(dataset):
    train, val = _labels(dataset, "train"), _labels(dataset, "val")
    assert len(train) == ARGS["num_train"] and len(val) == ARGS["num_val"]
    ids = [v for v, _, _ in train + val]
    assert len(set(ids)) == len(ids)
    assert (dataset / "classes.txt").read_text().splitlines() == list(CLASS_NAMES)
    for rows in (train, val):  # round-robin: every class present, balanced
        counts = np.bincount([c for _, _, c in rows], minlength=len(CLASS_NAMES))
        assert counts.min() == counts.max() == len(rows) // len(CLASS_NAMES)
    truth = _truth(dataset)
    assert sorted(truth) == sorted(ids)
    for split, rows in (("train", train), ("val", val)):
        for vid, n, c in rows:
            jpgs = sorted(p.name for p in (dataset / "frames" / vid).iterdir())
            assert jpgs == [f"{i:06d}.jpg" for i in range(1, n + 1)]
            assert n == ARGS["frames"]
            img = Image.open(dataset / "frames" / vid / jpgs[0])
            assert img.format == "JPEG" and img.mode == "RGB"
            assert img.size == (ARGS["size"], ARGS["size"])
            g = truth[vid]
            assert (g["split"], g["label"], g["class_name"]) == (split, c, CLASS_NAMES[c])
            first, last = g["event"]
            assert 1 <= first < last <= n and last - first >= 2
            assert len(g["boxes"]) == n
            for box in g["boxes"]:
                if box is not None:
                    x0, y0, x1, y1 = box
                    assert 0 <= x0 < x1 <= ARGS["size"] and 0 <= y0 < y1 <= ARGS["size"]
    # Nothing half-written is left behind.
    assert not [p for p in dataset.rglob(".*")]


def test_deterministic_and_independent_of_workers(dataset, tmp_path):
    again = tmp_path / "again"
    make_synthetic_dataset(again, workers=2, **ARGS)
    assert _tree(again) == _tree(dataset)
    other = tmp_path / "other"
    make_synthetic_dataset(other, workers=1, **{**ARGS, "seed": ARGS["seed"] + 1})
    a, b = _tree(dataset), _tree(other)
    assert a["ground_truth.json"] != b["ground_truth.json"]
    assert a["frames/000001/000001.jpg"] != b["frames/000001/000001.jpg"]


def test_boxes_null_exactly_when_invisible(dataset):
    for _vid, g in _truth(dataset).items():
        first, last = g["event"]
        hidden = [t for t, box in enumerate(g["boxes"]) if box is None]
        if g["label"] == synthetic_video.APPEARING:
            assert hidden == list(range(first))
        elif g["label"] == synthetic_video.DISAPPEARING:
            # Fully faded on the event's last frame, gone after it.
            assert hidden == list(range(last - 1, ARGS["frames"]))
        else:
            assert hidden == []


def _centres(g: dict) -> np.ndarray:
    return np.array([[(b[0] + b[2]) / 2, (b[1] + b[3]) / 2, b[2] - b[0]] for b in g["boxes"]])


@pytest.mark.parametrize(
    "label, coord, sign",
    [
        (synthetic_video.LEFT_TO_RIGHT, 0, 1),
        (synthetic_video.RIGHT_TO_LEFT, 0, -1),
        (synthetic_video.TOP_TO_BOTTOM, 1, 1),
        (synthetic_video.BOTTOM_TO_TOP, 1, -1),
        (synthetic_video.APPROACHING, 2, 1),
        (synthetic_video.RECEDING, 2, -1),
    ],
)
def test_classes_differ_in_direction(dataset, label, coord, sign):
    videos = _by_label(_truth(dataset), label)
    assert videos
    for _vid, g in videos:
        first, last = g["event"]
        track = _centres(g)
        moving = track[:, coord]
        # Changes frame to frame exactly inside the event, in the class's direction ...
        steps = np.diff(moving[first - 1 : last])
        assert np.all(sign * steps > 0)
        # ... and covers a good part of the frame (or doubles in size) ...
        assert sign * (moving[-1] - moving[0]) > (0.4 * ARGS["size"] if coord < 2 else 0.6 * moving.min())
        # ... while everything else stays put.
        assert np.ptp(moving[:first]) < 0.02 and np.ptp(moving[last - 1 :]) < 0.02
        for other in {0, 1, 2} - {coord}:
            assert np.ptp(track[:, other]) < 0.02


def _region(img: np.ndarray, box) -> np.ndarray:
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    return img[y0:y1, x0:x1]


def test_target_visible_inside_its_box(dataset):
    truth = _truth(dataset)
    # Same region with and without the target: appearing (before vs after the event) and
    # moving videos (first frame, where the target sits, vs last, when it has moved away).
    for vid, g in truth.items():
        boxes = g["boxes"]
        if g["label"] == synthetic_video.APPEARING:
            box, on, off = boxes[-1], len(boxes) - 1, 0
        elif g["label"] in (synthetic_video.LEFT_TO_RIGHT, synthetic_video.TOP_TO_BOTTOM):
            box, on, off = boxes[0], 0, len(boxes) - 1
        else:
            continue
        with_target = _region(_frame(dataset, vid, on), box)
        without = _region(_frame(dataset, vid, off), box)
        mean_shift = np.abs(with_target.mean((0, 1)) - without.mean((0, 1))).max()
        pixel_diff = np.abs(with_target - without).mean()
        assert mean_shift > 10 and pixel_diff > 15, (vid, mean_shift, pixel_diff)


def test_render_matches_ground_truth_box():
    # The target is the most saturated thing in its box and is drawn where the box says.
    video, event, boxes = synthetic_video.render_video(0, 5, synthetic_video.LEFT_TO_RIGHT, 8, 64)
    assert video.shape == (8, 64, 64, 3) and video.dtype == np.uint8
    for t, box in enumerate(boxes):
        x0, y0, x1, y1 = box
        cy = int((y0 + y1) / 2)
        inner = video[t, cy - 2 : cy + 3, int(x0) + 3 : int(x1) - 3]  # row through the centre
        assert inner.size and np.ptp(inner.astype(int), axis=-1).max() > 100


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(size=31),
        dict(frames=3),
        dict(num_train=-1),
        dict(num_val=-5),
        dict(num_train=0, num_val=0),
        dict(workers=0),
        dict(seed=-1),
        dict(size=48.0),
    ],
)
def test_bad_arguments_raise_data_error(tmp_path, kwargs):
    with pytest.raises(DataError):
        make_synthetic_dataset(tmp_path / "x", **{**ARGS, **kwargs})
    assert not (tmp_path / "x").exists()


def _cli(*args: str) -> subprocess.CompletedProcess:
    return run_console_script("stabn-synthetic", args, timeout=120)


@pytest.mark.slow
def test_cli_writes_dataset(tmp_path):
    out = tmp_path / "cli"
    proc = _cli(
        "--out",
        str(out),
        "--num-train",
        "8",
        "--num-val",
        "8",
        "--frames",
        "4",
        "--size",
        "32",
        "--seed",
        "1",
        "--workers",
        "2",
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and str(out) in lines[0] and "16" in lines[0]
    assert len(_labels(out, "train")) == 8 and len(_labels(out, "val")) == 8
    assert len(list((out / "frames").glob("*/*.jpg"))) == 16 * 4
    assert len(_truth(out)) == 16


# One value the function rejects (DataError) and one argparse rejects; each costs a
# subprocess start, so keep the list short.
@pytest.mark.slow
@pytest.mark.parametrize("bad", [["--size", "16"], ["--frames", "x"]])
def test_cli_bad_argument_one_line_exit_2(tmp_path, bad):
    proc = _cli("--out", str(tmp_path / "bad"), *bad)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "bad").exists()


def test_videos_without_distractors_change_only_where_the_target_is():
    """`distractors=False` (for diagnosis): outside the target's boxes only the sensor noise
    changes between frames; with the distractors (the default) something else moves."""
    from stabn.data.synthetic_video import render_video

    def outside_change(distractors):
        video, _, boxes = render_video(seed=0, index=3, label=0, frames=8, size=64, distractors=distractors)
        outside = np.ones((64, 64), dtype=bool)
        for box in boxes:
            if box is not None:
                x0, y0, x1, y1 = (int(v) for v in box)
                outside[max(0, y0 - 2) : y1 + 3, max(0, x0 - 2) : x1 + 3] = False
        diff = np.abs(video[-1].astype(int) - video[0].astype(int)).max(axis=-1)
        return diff[outside].max()

    assert outside_change(False) < 25  # noise of std 2
    assert outside_change(True) > 60
