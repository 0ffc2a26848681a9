import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# CI clones the repo with shared/ beside it; STABN_FIXTURES points elsewhere when needed.
FIXTURES = Path(os.environ.get("STABN_FIXTURES", REPO.parent / "shared" / "fixtures"))


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        pytest.fail(f"reference fixtures not found at {FIXTURES} (set STABN_FIXTURES)")
    return FIXTURES


def child_env() -> dict:
    """Environment for a launched job: none of torch.distributed's variables inherited."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RANK", "WORLD_SIZE", "MASTER_", "LOCAL_RANK", "TORCHELASTIC"))}
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def torchrun(script: str, *args: str, nproc: int = 2, launcher_args: tuple = ()) -> list:
    """The command line of `torchrun --standalone` running one of the repo's scripts."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            *launcher_args, str(REPO / script), *args]


class CodePayload:
    """Unpickling this creates `marker`: the proof that a file's code ran."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))
