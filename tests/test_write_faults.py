"""Writes the operating system refuses, made for real with a file-size limit on this process
(a write past it fails as on a full disk): each ends as one error naming the file and the
cause, exit code 75; the earlier file stays byte for byte and no temporary file is left."""

import errno
import json
import os

import numpy as np
import pytest
from PIL import Image

from helpers import SYNTHETIC_CONFIG, file_size_limit
from stabn.checkpoint import save_checkpoint
from stabn.config import load_config, save_config
from stabn.errors import REFUSED_EXIT_CODE, OutputPathError, WriteRefused, write_error
from stabn.explain.visualize import save_gif, save_png
from stabn.fileio import atomic_write_text
from stabn.models import build_model

# -- in process: each kind of file, under a real file-size limit --------------------------------


def tiny_model():
    return build_model("abn_resnet18", num_classes=8, frame_length=8, frame_size=32, width=4)


def write_checkpoint(path):
    model = tiny_model()
    save_checkpoint(path, model, model.spec.to_dict(), epoch=1)


def write_config(path):
    save_config(load_config(SYNTHETIC_CONFIG), path.parent)


PICTURE = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))

# name -> (what it writes over an earlier file of that name, the file it names)
WRITERS = {
    "checkpoint": (write_checkpoint, "checkpoint-latest.pt"),
    "config.yaml": (write_config, "config.yaml"),
    "history.json": (lambda path: atomic_write_text(path, json.dumps([{"epoch": 1}] * 400)), "history.json"),
    "attention PNG": (lambda path: save_png(path, PICTURE), "000001.png"),
    "attention GIF": (lambda path: save_gif(path, [PICTURE] * 4), "000001.gif"),
}


@pytest.mark.parametrize("kind", list(WRITERS))
def test_a_refused_write_is_one_line_and_keeps_the_earlier_file(tmp_path, kind):
    write, name = WRITERS[kind]
    path = tmp_path / (name or "events")
    if name:
        path.write_bytes(b"the earlier file\n")
    with file_size_limit(1000), pytest.raises(WriteRefused) as caught:
        write(path)
    named = path if name else next(tmp_path.glob("events.out.tfevents.*"))
    assert str(caught.value) == f"cannot write {named}: file too large"
    assert caught.value.exit_code == REFUSED_EXIT_CODE == 75
    if name:
        assert path.read_bytes() == b"the earlier file\n"
    assert [p.name for p in tmp_path.iterdir()] == [named.name]  # no temporary file


def test_torch_save_on_a_full_disk_names_the_cause_not_the_archive_writer(tmp_path):
    """torch.save meets the refusal as an OSError and raises a RuntimeError of its own ("[enforce
    fail at inline_container.cc] unexpected pos"); the line says what the OSError said."""
    path = tmp_path / "checkpoint-latest.pt"
    with file_size_limit(100_000), pytest.raises(WriteRefused) as caught:
        write_checkpoint(path)
    chain, e = [], caught.value.__context__
    while e is not None:
        chain.append(e)
        e = e.__context__
    assert any(isinstance(e, RuntimeError) and "inline_container" in str(e) for e in chain)  # what it used to show
    assert str(caught.value) == f"cannot write {path}: file too large"


@pytest.mark.parametrize(
    "code, words",
    [
        (errno.ENOSPC, "no space left on device"),
        (errno.EDQUOT, "disk quota exceeded"),
        (errno.EACCES, "permission denied"),
        (errno.EROFS, "read-only file system"),
        (errno.EFBIG, "file too large"),
        (errno.EIO, "input/output error"),
    ],
)
def test_the_machine_refusing_is_exit_code_75_in_words(code, words):
    error = write_error("runs/a/history.json", OSError(code, os.strerror(code)))
    assert isinstance(error, WriteRefused) and error.exit_code == 75
    assert str(error) == f"cannot write runs/a/history.json: {words}"


def test_a_file_where_a_folder_must_be_is_bad_input(tmp_path):
    (tmp_path / "a_file").write_text("")
    path, blocker = tmp_path / "a_file" / "run" / "history.json", tmp_path / "a_file"
    with pytest.raises(OutputPathError) as caught:
        atomic_write_text(path, "[]")
    assert str(caught.value) == f"cannot write {path}: {blocker} is not a folder"
    assert caught.value.exit_code == 2


def test_synthetic_data_on_a_full_disk(tmp_path, capsys):
    from stabn.data.synthetic import main

    out = tmp_path / "data"
    with file_size_limit(300):  # a 32 px JPEG takes about 1 kB
        code = main(["--out", str(out), "--num-train", "2", "--num-val", "0", "--frames", "4", "--size", "32",
                     "--workers", "1"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 75, err
    assert err == f"error: cannot write {out / 'frames' / '.000001.tmp' / '000001.jpg'}: file too large\n"
    assert list((out / "frames").iterdir()) == []  # the unfinished folder is gone
    assert main(["--out", str(out), "--num-train", "2", "--num-val", "0", "--frames", "4", "--size", "32",
                 "--workers", "1"]) == 0  # fmt: skip
