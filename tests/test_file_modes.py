"""Files are created with the process umask, atomic writes included: under the usual umask 022
a team can read a colleague's checkpoints, results and label files (0644)."""

import contextlib
import os
import stat
import subprocess
import sys

import pytest

from helpers import REPO, SYNTHETIC_CONFIG, child_env, tiny_run
from stabn.data.synthetic import make_synthetic_dataset
from stabn.fileio import atomic_write_text


@contextlib.contextmanager
def umask(mask):
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o077])
def test_atomic_writes_follow_the_umask(tmp_path, mask):
    target = tmp_path / "results.json"
    with umask(mask):
        atomic_write_text(target, "{}\n")
        atomic_write_text(target, "{}\n")  # replacing a file too
    assert mode(target) == 0o666 & ~mask
    assert os.listdir(tmp_path) == ["results.json"]


@pytest.mark.slow
def test_a_run_folder_is_readable_by_the_team_under_umask_022(tmp_path):
    """train_dp.py and eval.py as a user with umask 022 runs them: every file of the run folder
    (checkpoints, config, history, TensorBoard events, eval reports) is 0644, every folder 0755."""
    data, logdir = tmp_path / "data", tmp_path / "run"
    make_synthetic_dataset(data, num_train=4, num_val=2, frames=8, size=32, workers=1)
    commands = [
        [sys.executable, str(REPO / "train_dp.py"), "--config", str(SYNTHETIC_CONFIG),
         *tiny_run(data, logdir, "train.batch_size=2", "eval.batch_size=2")],
        [sys.executable, str(REPO / "eval.py"), "--logdir", str(logdir), "eval.save_scores=true"],
    ]  # fmt: skip
    for cmd in commands:
        proc = subprocess.run(cmd, env=child_env(), capture_output=True, text=True, cwd=tmp_path, timeout=300,
                              preexec_fn=lambda: os.umask(0o022))  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
    files = [p for p in logdir.rglob("*") if p.is_file()]
    assert {"checkpoint-final.pt", "config.yaml", "history.json", "results.json", "scores.npz"} <= {
        p.name for p in files
    }
    expected = {p: 0o755 if p.is_dir() else 0o644 for p in logdir.rglob("*")}
    wrong = {str(p.relative_to(logdir)): oct(mode(p)) for p, want in expected.items() if mode(p) != want}
    assert not wrong, wrong
