"""What a job under torchrun does when something goes wrong, with real torchrun jobs of two Gloo
processes: bad input is one `error:` line that torchrun's summary names as the root cause."""

import json
import subprocess

import pytest

from helpers import SYNTHETIC_CONFIG, child_env, torchrun


def launch(tmp_path, script, *args, timeout=120):
    """torchrun with 2 processes; torchrun's own error file is `torchrun-error.json`."""
    env = child_env(TORCHELASTIC_ERROR_FILE=str(tmp_path / "torchrun-error.json"))
    return subprocess.run(torchrun(script, *args), capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=timeout)  # fmt: skip


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
    assert [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")] == [line]  # rank 0 only
    assert "]: Traceback" not in proc.stderr  # no worker's traceback, only torchrun's own
    assert root_cause(proc.stderr) == line
    assert "exitcode  : 2" in proc.stderr
    error = json.loads((tmp_path / "torchrun-error.json").read_text())["message"]
    assert error["message"] == line and error["errorCode"] == 2
