"""Pre-emption, restarts, non-finite losses and unsafe resume files, with real processes."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from helpers import REPO, CodePayload, child_env, tiny_run, torchrun
from stabn.checkpoint import read_checkpoint
from stabn.config import load_config
from stabn.data.synthetic import make_synthetic_dataset
from stabn.engine.distributed import DistContext
from stabn.engine.loop import Trainer, TrainingError


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    make_synthetic_dataset(root, num_train=48, num_val=4, frames=8, size=32, seed=7, workers=1)
    return root


def overrides(data, logdir, epochs=3, workers=0):
    return tiny_run(
        data,
        logdir,
        "train.batch_size=2",
        "train.lr=0.01",
        "train.milestones=[2]",
        "eval.batch_size=4",
        workers=workers,
        epochs=epochs,
    )


def train_cmd(*args):
    return [sys.executable, str(REPO / "train_dp.py"), "--config", str(REPO / "configs/synthetic.yaml"), *args]


def run(cmd, cwd):
    return subprocess.run(cmd, env=child_env(), capture_output=True, text=True, cwd=cwd, timeout=300)


def start(cmd, log_path, cwd):
    """Start `cmd` with its output going to a file: a pipe nobody reads can fill and stall it."""
    log = open(log_path, "w")
    return subprocess.Popen(cmd, env=child_env(), stderr=subprocess.STDOUT, stdout=log, text=True, cwd=cwd)


def wait_for(log_path, text, timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if text in log_path.read_text():
            return
        time.sleep(0.05)
    raise AssertionError(f"{text!r} never appeared:\n{log_path.read_text()[-3000:]}")


def final_state(logdir):
    return torch.load(logdir / "checkpoint-final.pt", weights_only=True)


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 1])
def test_sigterm_mid_epoch_then_resume_is_bit_identical(data, tmp_path, workers):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    subprocess.run(
        train_cmd(*overrides(data, whole, workers=workers)),
        env=child_env(),
        check=True,
        capture_output=True,
        cwd=tmp_path,
        timeout=300,
    )

    # SIGTERM after step 30: the 6th of the second epoch's 24.
    stop_at_step = [sys.executable, str(REPO / "tests" / "stop_at_step.py"), "30"]
    stopped = run(stop_at_step + train_cmd(*overrides(data, cut, workers=workers))[2:], tmp_path)
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    assert "Traceback" not in stopped.stderr
    ckpt = read_checkpoint(cut / "checkpoint-latest.pt")
    assert ckpt["epoch"] == 1 and ckpt["iteration"] == 30
    assert ckpt["partial_epoch"]["step"] == 6

    resumed = run(train_cmd(*overrides(data, cut, workers=workers), "--resume", "latest"), tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from" in resumed.stdout and "at epoch 2, step 6" in resumed.stdout
    a, b = final_state(whole), final_state(cut)
    assert a["iteration"] == b["iteration"] == 3 * 24
    for key, value in a["model_state_dict"].items():
        assert torch.equal(value, b["model_state_dict"][key]), key
    assert [h["loss"] for h in a["history"]] == [h["loss"] for h in b["history"]]


@pytest.mark.slow
@pytest.mark.distributed
def test_worker_killed_under_torchrun_restarts_and_finishes(data, tmp_path):
    logdir = tmp_path / "run"
    cmd = torchrun(
        "train_ddp.py",
        "--config",
        str(REPO / "configs/synthetic.yaml"),
        *overrides(data, logdir, epochs=6),
        launcher_args=("--max-restarts=1",),
    )
    log = tmp_path / "torchrun.log"
    proc = start(cmd, log, tmp_path)
    wait_for(log, "epoch 1:")
    workers = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert len(workers) == 2
    os.kill(int(workers[1]), signal.SIGKILL)
    proc.wait(timeout=300)
    rest = log.read_text()
    assert proc.returncode == 0, rest[-3000:]
    assert "resumed from" in rest
    final = final_state(logdir)
    assert final["epoch"] == 6 and [h["epoch"] for h in final["history"]] == [1, 2, 3, 4, 5, 6]


@pytest.mark.slow
def test_non_finite_loss_stops_with_epoch_and_iteration(data, tmp_path):
    proc = subprocess.run(
        train_cmd(*overrides(data, tmp_path / "run", epochs=1), "train.lr=1e30"),
        env=child_env(),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error: loss is ") and "at epoch 1, iteration " in lines[-1]
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_non_finite_loss_keeps_the_last_good_checkpoint(data, tmp_path):
    logdir = tmp_path / "run"
    torch.set_num_threads(1)
    Trainer(load_config(REPO / "configs/synthetic.yaml", overrides(data, logdir, epochs=1)), DistContext()).fit()
    before = (logdir / "checkpoint-latest.pt").read_bytes()
    trainer = Trainer(
        load_config(REPO / "configs/synthetic.yaml", overrides(data, logdir, epochs=2) + ["train.resume=latest"]),
        DistContext(),
    )
    with torch.no_grad():
        trainer.model.fc.bias.fill_(float("nan"))
    with pytest.raises(TrainingError, match=r"at epoch 2, iteration 1 \(global 25\)"):
        trainer.fit()
    assert (logdir / "checkpoint-latest.pt").read_bytes() == before
    assert read_checkpoint(logdir / "checkpoint-latest.pt")["epoch"] == 1


@pytest.mark.slow
def test_resume_refuses_a_checkpoint_that_carries_code(data, tmp_path):
    logdir = tmp_path / "run"
    subprocess.run(
        train_cmd(*overrides(data, logdir, epochs=1)),
        env=child_env(),
        check=True,
        capture_output=True,
        cwd=tmp_path,
        timeout=300,
    )
    ckpt = torch.load(logdir / "checkpoint-latest.pt", weights_only=True)
    marker = tmp_path / "pwned"
    ckpt["history"] = CodePayload(marker)
    torch.save(ckpt, tmp_path / "evil.pt")
    proc = subprocess.run(
        train_cmd(*overrides(data, logdir, epochs=2), "--resume", str(tmp_path / "evil.pt")),
        env=child_env(),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: {tmp_path / 'evil.pt'}: refused to load")
    assert not marker.exists()
    assert json.loads((logdir / "history.json").read_text())[0]["epoch"] == 1
