import os

import pytest
from PIL import Image

from stabn.data import VideoRecord, count_frames, read_label_file
from stabn.data.annotations import first_missing_folder
from stabn.errors import DataError


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def make_folder(root, name, frames):
    folder = root / name
    folder.mkdir(parents=True)
    for i in range(frames):
        Image.new("RGB", (8, 8)).save(folder / ("%06d.jpg" % (i + 1)))
    return folder


def test_ssv2_lines_and_blank_lines(tmp_path):
    f = write(tmp_path / "train.txt", "101 12 5\n\n  \n202 5 17\n")
    records = read_label_file(f, frames_root=tmp_path / "frames")
    assert records == [
        VideoRecord("101", 12, 5, os.path.join(str(tmp_path / "frames"), "101"), 1),
        VideoRecord("202", 5, 17, os.path.join(str(tmp_path / "frames"), "202"), 4),
    ]
    assert read_label_file(f)[0].path == "101"


def test_fixture_label_file(fixtures_dir):
    root = fixtures_dir / "preprocess"
    records = read_label_file(root / "labels.txt", root / "frames", num_classes=174, check_frames=True)
    assert [(r.video_id, r.num_frames, r.label) for r in records] == [("101", 12, 5), ("202", 5, 17)]


@pytest.mark.parametrize(
    "text, line, message",
    [
        ("101 12 5\n202 5\n", 2, "expected 'video_id num_frames class_id'"),
        ("101 12 5 7\n", 1, "expected"),
        ("101 twelve 5\n", 1, "num_frames 'twelve' is not an integer"),
        ("\n101 12 x\n", 2, "class id 'x' is not an integer"),
        ("101 0 5\n", 1, "num_frames 0 is below 1"),
        ("101 12 174\n", 1, "class id 174 is outside [0, 174)"),
        ("101 12 -1\n", 1, "class id -1 is outside"),
    ],
)
def test_errors_name_file_and_line(tmp_path, text, line, message):
    f = write(tmp_path / "bad.txt", text)
    with pytest.raises(DataError) as e:
        read_label_file(f, num_classes=174)
    assert f"{f}:{line}: " in str(e.value)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_check_frames_names_missing_folder(tmp_path):
    make_folder(tmp_path / "frames", "101", 2)
    f = write(tmp_path / "l.txt", "101 2 0\n202 2 1\n")
    assert len(read_label_file(f, tmp_path / "frames")) == 2  # not checked by default
    with pytest.raises(DataError, match=r"l\.txt:2: frame folder .*202 does not exist"):
        read_label_file(f, tmp_path / "frames", check_frames=True)


def test_first_missing_folder_lists_each_parent_once(tmp_path, monkeypatch):
    frames = tmp_path / "frames"
    for name in ("101", "sub/303"):
        make_folder(frames, name, 1)
    (frames / "404").write_text("a file, not a folder")
    records = [VideoRecord(v, 1, 0, os.path.join(str(frames), v), i + 1) for i, v in enumerate(["101", "sub/303"])]
    listed = []
    scandir = os.scandir
    monkeypatch.setattr(os, "scandir", lambda path: listed.append(path) or scandir(path))
    assert first_missing_folder(records * 1000) is None
    assert sorted(listed) == [str(frames), str(frames / "sub")]
    for missing in ("202", "404", "sub/505", "gone/606"):
        extra = VideoRecord(missing, 1, 0, os.path.join(str(frames), missing), 9)
        assert first_missing_folder(records + [extra] + records) == extra


def test_unlabelled_test_split(tmp_path):
    f = write(tmp_path / "test.txt", "101 12\n202 5 3\n")
    assert [r.label for r in read_label_file(f, labelled=False)] == [-1, 3]
    with pytest.raises(DataError, match=":1: expected"):
        read_label_file(f)


def test_generic_format_counts_frames(tmp_path):
    root = tmp_path / "frames"
    make_folder(root, "a/clip one", 3)
    make_folder(root, "b", 5)
    (root / "b" / "notes.txt").write_text("not a frame")
    f = write(tmp_path / "l.txt", "a/clip one 2\nb 0\n")
    records = read_label_file(f, root, num_classes=3, fmt="generic")
    assert [(r.video_id, r.num_frames, r.label) for r in records] == [("a/clip one", 3, 2), ("b", 5, 0)]
    assert count_frames(root / "b") == 5

    unlabelled = read_label_file(write(tmp_path / "u.txt", "a/clip one\n"), root, fmt="generic", labelled=False)
    assert unlabelled[0].label == -1 and unlabelled[0].num_frames == 3


def test_generic_format_errors(tmp_path):
    root = tmp_path / "frames"
    (root / "empty").mkdir(parents=True)
    with pytest.raises(DataError, match=r"l\.txt:1: frame folder .*missing does not exist"):
        read_label_file(write(tmp_path / "l.txt", "missing 1\n"), root, fmt="generic")
    with pytest.raises(DataError, match=r"e\.txt:1: no JPEG frames in .*empty"):
        read_label_file(write(tmp_path / "e.txt", "empty 1\n"), root, fmt="generic")
    with pytest.raises(DataError, match=r"n\.txt:1: expected 'relative_video_dir class_id'"):
        read_label_file(write(tmp_path / "n.txt", "empty\n"), root, fmt="generic")


def test_unreadable_label_file(tmp_path):
    with pytest.raises(DataError, match="cannot read label file"):
        read_label_file(tmp_path / "nope.txt")
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(DataError, match="not UTF-8"):
        read_label_file(tmp_path / "bin.txt")
    with pytest.raises(ValueError):
        read_label_file(tmp_path / "bin.txt", fmt="csv")
