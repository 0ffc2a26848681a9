"""Writes the operating system refuses, made for real: a full disk (a small tmpfs where the tests
run as root and may mount one, a file-size limit everywhere), a run folder without write
permission (file modes, with root's overriding capabilities dropped), a read-only file system.
Each ends the command with one `error:` line naming the file and the cause, exit code 75; the
files written before stay byte for byte, no temporary file is left, and the same command goes
on once the cause is gone. Every job runs under a subprocess timeout, so that a hang fails the
test instead of stalling the suite."""

import errno
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import (
    REPO,
    SYNTHETIC_CONFIG,
    as_a_user,
    child_env,
    file_modes_apply,
    file_size_limit,
    limit_file_size,
    mount_tmpfs,
    tiny_run,
    torchrun,
    try_tmpfs,
)
from stabn.checkpoint import read_checkpoint, save_checkpoint
from stabn.config import load_config, save_config
from stabn.data.synthetic import make_synthetic_dataset
from stabn.engine.distributed import DistContext
from stabn.engine.eval_job import eval_job
from stabn.engine.events import EventsWriter
from stabn.engine.loop import Trainer
from stabn.errors import REFUSED_EXIT_CODE, OutputPathError, WriteRefused, write_error
from stabn.fileio import atomic_write_text
from stabn.interpret.visualize import save_gif, save_png
from stabn.models import build_model

HINT = "the files written before are intact: fix that, then go on with --resume latest"
# A checkpoint of the tiny model takes about 1.9 MB; the other files of a run a few kB.
BELOW_A_CHECKPOINT = 1 << 20


# -- in process: each kind of file, under a real file-size limit --------------------------------


def tiny_model():
    return build_model("abn_resnet18", num_classes=8, frame_length=8, frame_size=32, width=4)


def write_checkpoint(path):
    model = tiny_model()
    save_checkpoint(path, model, model.spec.to_dict(), epoch=1)


def write_events(path):
    events = EventsWriter(path.parent)
    for step in range(200):  # records of a few dozen bytes each, past the limit
        events.add_scalar("loss/all", 1.0, step)


def write_config(path):
    save_config(load_config(SYNTHETIC_CONFIG), path.parent)


PICTURE = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))

# name -> (what it writes over an earlier file of that name, the file it names)
WRITERS = {
    "checkpoint": (write_checkpoint, "checkpoint-latest.pt"),
    "config.yaml": (write_config, "config.yaml"),
    "history.json": (lambda path: atomic_write_text(path, json.dumps([{"epoch": 1}] * 400)), "history.json"),
    "TensorBoard events": (write_events, None),
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


def test_events_are_readable_by_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    first, second = EventsWriter(tmp_path), EventsWriter(tmp_path)  # a second run in the same second
    first.add_scalar("loss/all", 0.5, 3)
    second.add_scalar("loss/all", 0.25, 4)
    first.close()
    second.close()
    assert first.path != second.path and first.path.name.startswith("events.out.tfevents.")
    events = EventAccumulator(str(tmp_path))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("loss/all")] == [(3, 0.5), (4, 0.25)]


def test_synthetic_data_on_a_full_disk(tmp_path, capsys):
    from stabn.commands.make_synthetic import main

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


# -- the run folder: a module's data and one epoch trained in process --------------------------


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_synthetic_dataset(root, num_train=4, num_val=2, frames=8, size=32, seed=3, workers=1)
    return root


def overrides(data, logdir, *extra, epochs=2):
    return tiny_run(data, logdir, "train.batch_size=2", "eval.batch_size=2", "train.save_every=1", *extra,
                    epochs=epochs)  # fmt: skip


@pytest.fixture(scope="module")
def one_epoch(data, tmp_path_factory):
    """A run folder after one epoch of `overrides` (checkpoints -best, -0001, -latest, -final,
    config, history, events), to copy."""
    logdir = tmp_path_factory.mktemp("one_epoch") / "run"
    torch.set_num_threads(1)
    Trainer(load_config(SYNTHETIC_CONFIG, overrides(data, logdir, epochs=1)), DistContext()).fit()
    return logdir


def files(logdir):
    return {p.name: p.read_bytes() for p in logdir.iterdir()}


def train(data, logdir, *extra, preexec_fn=None):
    cmd = [sys.executable, str(REPO / "train_dp.py"), "--config", str(SYNTHETIC_CONFIG),
           *overrides(data, logdir, "train.resume=latest", *extra)]  # fmt: skip
    return subprocess.run(cmd, env=child_env(), capture_output=True, text=True, cwd=logdir.parent, timeout=180,
                          preexec_fn=preexec_fn)  # fmt: skip


def error_lines(stderr):
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def assert_refused(proc, pattern, logdir, before):
    """Exit code 75, one error line matching `pattern`, no traceback, every earlier file as it
    was, no temporary file."""
    assert proc.returncode == 75, proc.stderr[-3000:]
    assert len(error_lines(proc.stderr)) == 1 and re.fullmatch(pattern, error_lines(proc.stderr)[0]), proc.stderr
    assert "Traceback" not in proc.stderr
    after = files(logdir)
    assert {name: after.get(name) == content for name, content in before.items()} == dict.fromkeys(before, True)
    assert [name for name in after if name.startswith(".")] == []


def assert_goes_on(data, logdir):
    """The same run, resumed (in process, which takes less time), goes on from epoch 1's
    checkpoint-latest.pt and finishes epoch 2."""
    trainer = Trainer(load_config(SYNTHETIC_CONFIG, overrides(data, logdir, "train.resume=latest")), DistContext())
    assert trainer.start_epoch == 1
    trainer.fit()
    assert [h["epoch"] for h in json.loads((logdir / "history.json").read_text())] == [1, 2]
    assert read_checkpoint(logdir / "checkpoint-final.pt")["epoch"] == 2


@pytest.mark.slow
def test_a_full_disk_stops_training_and_the_run_goes_on_after(data, one_epoch, tmp_path):
    """A small tmpfs where the tests may mount one (root), else a file-size limit for the process."""
    disk, _ = try_tmpfs(tmp_path / "disk", "64m")
    try:
        logdir = shutil.copytree(one_epoch, (disk.path if disk else tmp_path) / "run")
        before = files(logdir)
        if disk:  # room for the small files of another epoch, not for a checkpoint
            disk.remount(f"size={disk.used() + (256 << 10)}")
        proc = train(data, logdir, preexec_fn=None if disk else limit_file_size(BELOW_A_CHECKPOINT))
        cause = "no space left on device" if disk else "file too large"
        pattern = rf"error: cannot write {re.escape(str(logdir))}/checkpoint-(best|0002)\.pt: {cause}; {HINT}"
        assert_refused(proc, pattern, logdir, before)
        if disk:
            disk.remount("size=64m")
        assert_goes_on(data, logdir)
    finally:
        if disk:
            disk.unmount()


@pytest.fixture(scope="module")
def user(tmp_path_factory):
    """The preexec_fn of a child that file modes bind (see `as_a_user`); a skip where there is none."""
    why_not = file_modes_apply(str(tmp_path_factory.mktemp("modes")))
    if why_not:
        pytest.skip(why_not)
    return as_a_user()


@pytest.mark.slow
def test_a_run_folder_without_write_permission(data, one_epoch, tmp_path, user):
    logdir = shutil.copytree(one_epoch, tmp_path / "run")
    before = files(logdir)
    logdir.chmod(0o555)
    try:
        proc = train(data, logdir, preexec_fn=user)
    finally:
        logdir.chmod(0o755)
    # The first file a resumed run writes is its TensorBoard events file.
    pattern = rf"error: cannot write {re.escape(str(logdir))}/events\.out\.tfevents\.[^:]+: permission denied; {HINT}"
    assert_refused(proc, pattern, logdir, before)
    assert_goes_on(data, logdir)


@pytest.mark.slow
def test_a_read_only_file_system(data, one_epoch, tmp_path):
    disk = mount_tmpfs(tmp_path / "disk", "64m")
    try:
        logdir = shutil.copytree(one_epoch, disk.path / "run")
        before = files(logdir)
        disk.remount("ro")
        proc = train(data, logdir)
        pattern = (
            rf"error: cannot write {re.escape(str(logdir))}/events\.out\.tfevents\.[^:]+: read-only file system; {HINT}"  # noqa: E501
        )
        assert_refused(proc, pattern, logdir, before)
        disk.remount("rw")
        assert_goes_on(data, logdir)
    finally:
        disk.unmount()


@pytest.mark.slow
def test_eval_that_can_read_the_run_but_not_write_its_results(data, one_epoch, tmp_path, user):
    logdir = shutil.copytree(one_epoch, tmp_path / "run")
    before = files(logdir)

    logdir.chmod(0o555)
    try:
        cmd = [sys.executable, str(REPO / "eval.py"), "--logdir", str(logdir), "eval.save_attention=true"]
        proc = subprocess.run(cmd, env=child_env(), capture_output=True, text=True, cwd=tmp_path, timeout=180,
                              preexec_fn=user)  # fmt: skip
    finally:
        logdir.chmod(0o755)
    # Attention pictures are written during evaluation, before the reports.
    pattern = rf"error: cannot write {re.escape(str(logdir))}/eval/attention/\d+\.png: permission denied"
    assert_refused(proc, pattern, logdir, before)
    eval_job(str(logdir), None, ["eval.save_attention=true"])  # the same, in process, once it can write
    assert json.loads((logdir / "eval" / "results.json").read_text())["num_videos"] == 2
    assert len(list((logdir / "eval" / "attention").glob("*.png"))) == 2


# -- under torchrun: rank 0 writes, every rank stops -----------------------------------------


@pytest.mark.slow
@pytest.mark.distributed
def test_a_checkpoint_refused_on_rank_0_stops_every_rank(data, tmp_path):
    logdir = tmp_path / "run"
    env = child_env(TORCHELASTIC_ERROR_FILE=str(tmp_path / "torchrun-error.json"))
    # torchrun looks at its workers every 2 s, not 0.1: a rank that stops by itself has stopped
    # by then, instead of being stopped by torchrun once another failed.
    cmd = torchrun("train_ddp.py", "--config", str(SYNTHETIC_CONFIG),
                   *overrides(data, logdir, "train.batch_size=1", "train.collective_timeout=60", epochs=1),
                   launcher_args=("--monitor-interval=2",))  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tmp_path, timeout=180,
                          preexec_fn=limit_file_size(BELOW_A_CHECKPOINT))  # fmt: skip
    line = f"error: cannot write {logdir / 'checkpoint-best.pt'}: file too large; {HINT}"
    assert proc.returncode == 1, proc.stderr[-3000:]  # torchrun's own, whatever its workers'
    assert error_lines(proc.stderr) == [line]  # rank 0's only
    assert "]: Traceback" not in proc.stderr  # no worker's traceback
    summary = proc.stderr[proc.stderr.index("Root Cause (first observed failure):") :]
    root = next(text.split(":", 1)[1].strip() for text in summary.splitlines() if text.strip().startswith("traceback"))
    assert root == line
    assert proc.stderr.count("exitcode  : 75") == 2  # both ranks stopped, with the machine's code
    error = json.loads((tmp_path / "torchrun-error.json").read_text())["message"]
    assert error["message"] == line and error["errorCode"] == 75
    assert [p.name for p in logdir.iterdir() if p.name.startswith(".")] == []
