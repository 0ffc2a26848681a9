"""What a job under torchrun does when something goes wrong, with real torchrun jobs of two Gloo
processes: bad input is one `error:` line that torchrun's summary names as the root cause;
splits with fewer videos than processes train and evaluate without hanging; a process that
stops answering ends the job in bounded time, with the step named. Every job runs under a
subprocess timeout, so that a hang fails the test instead of stalling the suite."""

import json
import shutil
import subprocess

import pytest

from helpers import SYNTHETIC_CONFIG, child_env, tiny_run, torchrun
from stabn.data.synthetic import make_synthetic_dataset


def launch(tmp_path, script, *args, timeout=120):
    """torchrun with 2 processes; torchrun's own error file is `torchrun-error.json`."""
    env = child_env(TORCHELASTIC_ERROR_FILE=str(tmp_path / "torchrun-error.json"))
    return subprocess.run(torchrun(script, *args), capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=timeout)  # fmt: skip


def error_lines(stderr):
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def root_cause(stderr):
    """The `traceback :` line of the root cause in torchrun's failure summary."""
    summary = stderr[stderr.index("Root Cause (first observed failure):") :]
    return next(line.split(":", 1)[1].strip() for line in summary.splitlines() if line.strip().startswith("traceback"))


@pytest.mark.slow
@pytest.mark.distributed
def test_a_bad_key_is_one_line_and_the_root_cause(tmp_path):
    proc = launch(tmp_path, "train_ddp.py", "--config", str(SYNTHETIC_CONFIG), "train.epoch=1")
    line = "error: command line: unknown config key 'train.epoch'; did you mean 'train.epochs'?"
    # torchrun exits 1 whatever its workers' codes; it keeps the root cause's in its error file.
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert error_lines(proc.stderr) == [line]  # rank 0's only
    assert "]: Traceback" not in proc.stderr  # no worker's traceback, only torchrun's own
    assert root_cause(proc.stderr) == line
    assert "exitcode  : 2" in proc.stderr
    error = json.loads((tmp_path / "torchrun-error.json").read_text())["message"]
    assert error["message"] == line and error["errorCode"] == 2


# -- splits with fewer videos than processes --------------------------------------------------

VAL_SIZES = (0, 1, 3)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """3 training videos, fewer than 2 processes x batch 2, and validation lists of 0, 1 and 3
    videos (val0.txt, val1.txt, val3.txt)."""
    root = tmp_path_factory.mktemp("few")
    make_synthetic_dataset(root, num_train=3, num_val=3, frames=8, size=32, seed=5, workers=1)
    lines = (root / "val.txt").read_text().splitlines(keepends=True)
    for n in VAL_SIZES:
        (root / f"val{n}.txt").write_text("".join(lines[:n]))
    return root


def train_args(data, logdir, val, *extra):
    overrides = tiny_run(data, logdir, f"data.val_labels={data}/{val}", "train.batch_size=2", "eval.batch_size=2")
    return ["--config", str(SYNTHETIC_CONFIG), *overrides, *extra]


@pytest.fixture(scope="module")
def runs(data, tmp_path_factory):
    """n -> (logdir, CompletedProcess) of a torchrun training with n validation videos."""
    out = {}
    for n in VAL_SIZES:
        folder = tmp_path_factory.mktemp(f"val{n}")
        out[n] = folder / "run", launch(folder, "train_ddp.py", *train_args(data, folder / "run", f"val{n}.txt"))
    return out


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("n", VAL_SIZES)
def test_fewer_videos_than_processes_train_without_hanging(runs, n):
    logdir, proc = runs[n]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "batch 2 per process x 2 processes = 4; 1 steps an epoch" in proc.stdout
    assert "3 training videos are fewer than one step takes: each epoch is one step of 2 a process, some repeated" in (
        proc.stderr
    )
    history = json.loads((logdir / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1]
    if n:
        assert history[0]["val"]["num_videos"] == n  # each video counted once
        assert (logdir / "checkpoint-best.pt").is_file()
    else:
        assert "val" not in history[0] and not (logdir / "checkpoint-best.pt").exists()
        assert "val0.txt lists no videos: no validation, and no checkpoint-best.pt" in proc.stderr
    assert (logdir / "checkpoint-final.pt").is_file()


@pytest.mark.slow
@pytest.mark.distributed
def test_eval_of_one_video_on_two_processes(runs, data, tmp_path):
    """eval.py with its explanation metrics, on a list of one video: one process has none."""
    logdir = runs[1][0]
    proc = launch(tmp_path, "eval.py", "--logdir", str(logdir), "eval.explain_metrics=true", "eval.explain_steps=2",
                  "eval.save_scores=true")  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((logdir / "eval" / "results.json").read_text())
    assert results["num_videos"] == 1 and results["explanation"]["videos"] == 1


# -- processes that stop answering ------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.distributed
def test_a_process_that_stops_answering_ends_the_job_naming_the_step(data, tmp_path):
    """tests/stall_rank.py keeps rank 1 from validation: rank 0 gives up after
    train.collective_timeout with one line, instead of waiting for ever."""
    proc = launch(tmp_path, "tests/stall_rank.py",
                  *train_args(data, tmp_path / "run", "val3.txt", "train.collective_timeout=2"))  # fmt: skip
    line = (
        "error: rank 0 waited 2 s for the other processes at validation after epoch 1 (train.collective_timeout): "
        "they took another path or stopped answering"
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert error_lines(proc.stderr) == [line]
    assert root_cause(proc.stderr) == line
    assert "]: Traceback" not in proc.stderr


@pytest.mark.slow
@pytest.mark.distributed
def test_bad_input_that_one_process_meets_is_the_root_cause(data, tmp_path):
    """A corrupt JPEG in the validation share of rank 1 only: rank 0 says it lost the others,
    and torchrun's summary names rank 1's line as the root cause."""
    broken = tmp_path / "data"
    shutil.copytree(data, broken)
    video = (broken / "val3.txt").read_text().splitlines()[1].split()[0]  # rank 1's: every second one
    jpeg = broken / "frames" / video / "000001.jpg"
    jpeg.write_bytes(jpeg.read_bytes()[:100])
    proc = launch(tmp_path, "train_ddp.py", *train_args(broken, tmp_path / "run", "val3.txt", "eval.batch_size=1"))
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert error_lines(proc.stderr) == [
        "error: rank 0 lost the other processes at validation after epoch 1: one of them stopped; "
        "torchrun's summary names the first failure"
    ]
    assert root_cause(proc.stderr).startswith(f"error: corrupt JPEG {jpeg}: ")
