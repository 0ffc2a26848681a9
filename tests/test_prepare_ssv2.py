"""SSv2 preparation on a handful of tiny synthetic .webm videos (needs the `prep` extra)."""

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

av = pytest.importorskip("av", reason="PyAV (pip install -e .[prep]) is needed to make test videos")

from helpers import file_size_limit, run_console_script  # noqa: E402
from stabn.commands.prepare_ssv2 import main as prepare_main  # noqa: E402
from stabn.data.ssv2_annotations import LABELS_FILE, SPLIT_FILES  # noqa: E402
from stabn.data.ssv2_frames import prepare_ssv2  # noqa: E402
from stabn.data.video import short_side_size  # noqa: E402
from stabn.errors import DataError, StabnError  # noqa: E402

W, H = 64, 48

# Label indices deliberately differ from the JSON key order, to check category.txt ordering.
LABELS = {"Putting something on something": "1", "Pushing something from left to right": "0", "Holding something": "2"}
TRAIN = [("10", "Putting [something] on [something]", 8), ("11", "Holding [something]", 6)]
VAL = [("20", "Pushing [something] from left to right", 9)]
TEST = [("30", 7)]
N_FRAMES = {"10": 8, "11": 6, "20": 9, "30": 7}


def brightness(i: int) -> int:
    return 20 + 20 * i


def make_video(path: Path, n: int, codec: str = "libvpx") -> None:
    """A W x H video whose frame i is uniform grey of brightness(i), so order is checkable."""
    with av.open(str(path), "w") as c:
        s = c.add_stream(codec, rate=12)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(np.full((H, W, 3), brightness(i), np.uint8), format="rgb24")
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def entry(vid, template):
    return {
        "id": vid,
        "label": template.replace("[", "").replace("]", ""),
        "template": template,
        "placeholders": ["something"] * template.count("["),
    }


def write_annos(anno: Path, train=TRAIN, val=VAL, test=TEST) -> None:
    anno.mkdir(parents=True, exist_ok=True)
    (anno / LABELS_FILE).write_text(json.dumps(LABELS))
    (anno / SPLIT_FILES["train"]).write_text(json.dumps([entry(v, t) for v, t, _ in train]))
    (anno / SPLIT_FILES["val"]).write_text(json.dumps([entry(v, t) for v, t, _ in val]))
    (anno / SPLIT_FILES["test"]).write_text(json.dumps([{"id": v} for v, _ in test]))


@pytest.fixture
def dataset(tmp_path):
    """(video_dir, anno_dir, out_dir) with four good videos (VP8 and one VP9)."""
    videos, anno = tmp_path / "videos", tmp_path / "anno"
    videos.mkdir()
    for vid, n in N_FRAMES.items():
        make_video(videos / f"{vid}.webm", n, codec="libvpx-vp9" if vid == "20" else "libvpx")
    write_annos(anno)
    return videos, anno, tmp_path / "out"


def run(dataset, **kw):
    videos, anno, out = dataset
    kw.setdefault("workers", 1)
    return prepare_ssv2(videos, anno, out, progress=False, **kw)


def frame_files(out: Path, vid: str):
    return sorted(p.name for p in (out / "frames" / vid).iterdir())


def test_frames_and_label_files(dataset):
    out = dataset[2]
    s = run(dataset)
    assert (s.done, s.skipped, s.failed, s.frames_written) == (4, 0, {}, sum(N_FRAMES.values()))
    for vid, n in N_FRAMES.items():
        assert frame_files(out, vid) == [f"{i:06d}.jpg" for i in range(1, n + 1)]
        means = []
        for i in range(1, n + 1):
            with Image.open(out / "frames" / vid / f"{i:06d}.jpg") as im:
                assert im.format == "JPEG" and im.size == (W, H)
                means.append(float(np.asarray(im.convert("L")).mean()))
        assert np.allclose(means, [brightness(i) for i in range(n)], atol=4), means
        assert all(a < b for a, b in zip(means, means[1:]))
    assert (out / "train_videofolder.txt").read_text() == "10 8 1\n11 6 2\n"
    assert (out / "val_videofolder.txt").read_text() == "20 9 0\n"
    assert (out / "test_videofolder.txt").read_text() == "30 7\n"
    assert (out / "category.txt").read_text() == (
        "Pushing something from left to right\nPutting something on something\nHolding something\n"
    )
    assert not (out / "failed.txt").exists()
    assert sorted(os.listdir(out / "frames")) == sorted(N_FRAMES)  # no partial dirs left


def test_files_are_readable_by_the_team_under_umask_022(dataset):
    """Label files, class names and frames: 0644 under umask 022, as a shared cluster needs."""
    out = dataset[2]
    previous = os.umask(0o022)
    try:
        run(dataset, limit=1)
    finally:
        os.umask(previous)
    files = ["train_videofolder.txt", "val_videofolder.txt", "test_videofolder.txt", "category.txt",
             "frames/10/000001.jpg"]  # fmt: skip
    assert {name: oct(os.stat(out / name).st_mode & 0o777) for name in files} == dict.fromkeys(files, "0o644")


def qtable_sum(path: Path) -> int:
    with Image.open(path) as im:
        return sum(im.quantization[0])


def test_limit_and_quality(dataset, tmp_path):
    videos, anno, out = dataset
    s = run(dataset, limit=1, quality=10)
    assert s.done == 3  # the first video of each split
    assert (out / "train_videofolder.txt").read_text() == "10 8 1\n"
    assert (out / "val_videofolder.txt").read_text() == "20 9 0\n"
    assert not (out / "frames" / "11").exists()
    s = run((videos, anno, tmp_path / "q95"), limit=1)
    # Coarser quantisation tables are how JPEG quality shows in the file.
    first = Path("frames") / "10" / "000001.jpg"
    assert qtable_sum(out / first) > qtable_sum(tmp_path / "q95" / first)
    s = run(dataset, limit=0)
    assert s.done == s.skipped == 0 and (out / "val_videofolder.txt").read_text() == ""


def test_failed_videos_reported_and_others_continue(dataset, capsys):
    videos, anno, out = dataset
    (videos / "12.webm").write_bytes(np.random.default_rng(0).bytes(4096))  # corrupt
    (videos / "13.webm").write_bytes(b"")  # empty file
    # "21" has no video file at all
    write_annos(
        anno,
        train=TRAIN + [("12", "Holding [something]", 0), ("13", "Holding [something]", 0)],
        val=VAL + [("21", "Holding [something]", 0)],
    )
    rc = prepare_main(
        ["--video-dir", str(videos), "--anno-dir", str(anno), "--out-dir", str(out), "--workers", "1", "--no-progress"]
    )
    assert rc == 1
    printed = capsys.readouterr().out
    assert "failed: 3" in printed and "12, 13, 21" in printed
    failed = dict(line.split(" ", 1) for line in (out / "failed.txt").read_text().splitlines())
    assert sorted(failed) == ["12", "13", "21"]
    assert "not found" in failed["21"]
    assert (out / "train_videofolder.txt").read_text() == "10 8 1\n11 6 2\n"
    assert (out / "val_videofolder.txt").read_text() == "20 9 0\n"
    assert sorted(os.listdir(out / "frames")) == sorted(N_FRAMES)
    # Fix the bad videos: the rerun decodes only those and clears failed.txt.
    for vid in ("12", "13", "21"):
        make_video(videos / f"{vid}.webm", 6)
    s = run(dataset)
    assert (s.done, s.skipped, s.failed) == (3, 4, {})
    assert not (out / "failed.txt").exists()
    assert (out / "val_videofolder.txt").read_text() == "20 9 0\n21 6 2\n"


def test_a_full_disk_stops_the_run_and_the_same_command_finishes_it(dataset, capsys):
    """A file-size limit refuses every frame (the same refusal as a full disk): one line naming
    the frame, exit code 75, the finished videos and label files of an earlier run kept, no
    unfinished folder left; the same command then goes on from there."""
    videos, anno, out = dataset
    args = ["--video-dir", str(videos), "--anno-dir", str(anno), "--out-dir", str(out), "--workers", "1",
            "--no-progress"]  # fmt: skip
    assert prepare_main([*args, "--limit", "1"]) == 0  # videos 10, 20 and 30
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()
    with file_size_limit(300):  # a frame takes about 700 bytes
        rc = prepare_main(args)
    err = capsys.readouterr().err
    assert rc == 75, err
    assert err == f"error: cannot write {out / 'frames' / '.11.partial' / '000001.jpg'}: file too large\n"
    assert {p: p.read_bytes() for p in before} == before
    assert sorted(os.listdir(out / "frames")) == ["10", "20", "30"]
    assert prepare_main(args) == 0
    assert (out / "train_videofolder.txt").read_text() == "10 8 1\n11 6 2\n"
    assert frame_files(out, "11") == [f"{i:06d}.jpg" for i in range(1, 7)]


def test_rerun_skips_finished_videos(dataset):
    out = dataset[2]
    run(dataset)
    labels = (out / "train_videofolder.txt").read_text()
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "frames").rglob("*.jpg")}
    s = run(dataset)
    assert (s.done, s.skipped, s.frames_written, s.failed) == (0, 4, 0, {})
    assert {p: p.stat().st_mtime_ns for p in (out / "frames").rglob("*.jpg")} == mtimes
    assert (out / "train_videofolder.txt").read_text() == labels


def test_half_written_videos_are_redone(dataset):
    out = dataset[2]
    frames = out / "frames"
    run(dataset)
    # A crash mid-decode leaves a partial folder behind.
    (frames / ".10.partial").mkdir()
    (frames / ".10.partial" / "000001.jpg").write_bytes(b"junk")
    # A crash after rename but before the marker: folder present, marker missing, plus junk.
    (out / ".done" / "11").unlink()
    (frames / "11" / "000099.jpg").write_bytes(b"junk")
    # Frames lost after finishing: the marker no longer matches the folder.
    (frames / "20" / "000009.jpg").unlink()
    # A folder that was never finished at all, e.g. from an interrupted run of an old version.
    (frames / "30" / "000007.jpg").unlink()
    (out / ".done" / "30").unlink()
    s = run(dataset)
    assert (s.done, s.skipped, s.failed) == (3, 1, {})
    assert not (frames / ".10.partial").exists()
    for vid, n in N_FRAMES.items():
        assert frame_files(out, vid) == [f"{i:06d}.jpg" for i in range(1, n + 1)]
    assert (out / "train_videofolder.txt").read_text() == "10 8 1\n11 6 2\n"
    assert (out / "val_videofolder.txt").read_text() == "20 9 0\n"
    assert (out / "test_videofolder.txt").read_text() == "30 7\n"


def test_template_not_in_labels_names_file_and_id(dataset):
    videos, anno, out = dataset
    write_annos(anno, val=[("20", "Juggling [something]", 9)])
    with pytest.raises(DataError, match=r"something-something-v2-validation\.json.*video 20"):
        run(dataset)
    assert not out.exists()  # bad input is caught before anything is written


@pytest.mark.parametrize("breakage", ["missing_labels", "missing_val", "not_a_list", "no_video_dir"])
def test_bad_input_exits_2(dataset, capsys, breakage):
    videos, anno, out = dataset
    if breakage == "missing_labels":
        (anno / LABELS_FILE).unlink()
        expect = LABELS_FILE
    elif breakage == "missing_val":  # train and validation are required; test is not
        (anno / SPLIT_FILES["val"]).unlink()
        expect = SPLIT_FILES["val"]
    elif breakage == "not_a_list":
        (anno / SPLIT_FILES["train"]).write_text('{"id": "10"}')
        expect = SPLIT_FILES["train"]
    else:
        videos = videos.parent / "nowhere"
        expect = "video directory not found"
    rc = prepare_main(
        ["--video-dir", str(videos), "--anno-dir", str(anno), "--out-dir", str(out), "--workers", "1", "--no-progress"]
    )
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("error: ") and err.count("\n") == 1 and expect in err


def test_missing_pyav_gives_install_hint(dataset, monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)  # makes `import av` raise ImportError
    with pytest.raises(StabnError, match=r"pip install -e \.\[prep\]"):
        run(dataset)


def cli(*args):
    return run_console_script("stabn-prepare-ssv2", args, timeout=120)


@pytest.mark.slow
def test_cli_malformed_json_one_line_error(dataset):
    videos, anno, out = dataset
    (anno / SPLIT_FILES["val"]).write_text('[{"id": "20", ')
    p = cli("--video-dir", videos, "--anno-dir", anno, "--out-dir", out)
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: malformed JSON")
    assert SPLIT_FILES["val"] in lines[0]


@pytest.mark.slow
def test_cli_end_to_end_parallel(dataset):
    videos, anno, out = dataset
    p = cli("--video-dir", videos, "--anno-dir", anno, "--out-dir", out, "--workers", 2, "--quality", 90)
    assert p.returncode == 0, p.stderr
    assert "videos done: 4, skipped (already finished): 0, failed: 0" in p.stdout
    assert f"frames written: {sum(N_FRAMES.values())}" in p.stdout
    assert (out / "train_videofolder.txt").read_text() == "10 8 1\n11 6 2\n"
    assert (out / "val_videofolder.txt").read_text() == "20 9 0\n"
    assert (out / "test_videofolder.txt").read_text() == "30 7\n"
    assert len((out / "category.txt").read_text().splitlines()) == 3
    for vid, n in N_FRAMES.items():
        assert frame_files(out, vid) == [f"{i:06d}.jpg" for i in range(1, n + 1)]


def test_test_annotations_are_optional(dataset):
    videos, anno, out = dataset
    (anno / SPLIT_FILES["test"]).unlink()
    s = run(dataset)
    assert s.ok and s.done == 3 and s.missing_splits == ["test"]
    assert (out / "train_videofolder.txt").read_text() == "10 8 1\n11 6 2\n"
    assert not (out / "test_videofolder.txt").exists() and not (out / "frames" / "30").exists()
    assert "test split skipped: no something-something-v2-test.json in the annotations" in s.format()


def test_short_side_resizes_every_frame(dataset):
    out = dataset[2]
    assert short_side_size(427, 240, 256) == (455, 256) and short_side_size(48, 64, 32) == (32, 43)
    s = run(dataset, short_side=32)
    assert s.ok and s.done == 4
    for vid, n in N_FRAMES.items():
        for i in range(1, n + 1):
            with Image.open(out / "frames" / vid / f"{i:06d}.jpg") as im:
                assert im.size == (43, 32)  # 64 x 48 with its short side at 32
                assert abs(float(np.asarray(im.convert("L")).mean()) - brightness(i - 1)) <= 4


def test_another_short_side_on_the_same_out_dir_is_refused(dataset):
    out = dataset[2]
    run(dataset, short_side=32)
    before = sorted(p.name for p in (out / "frames" / "10").iterdir())
    with pytest.raises(
        DataError,
        match=r"its frames were extracted with --short-side 32, this run asks for "
        r"them at the native size; use the same setting or another --out-dir",
    ):
        run(dataset)
    assert sorted(p.name for p in (out / "frames" / "10").iterdir()) == before
    assert run(dataset, short_side=32).skipped == 4  # the same setting resumes
