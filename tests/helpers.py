"""Helpers shared by the test modules: where the repository and its fixtures are, how to launch
the repository's commands in child processes, and the original's reference outputs."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import List, Sequence

import torch
from torch import nn

from stabn.models import build_model

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
SYNTHETIC_CONFIG = CONFIGS / "synthetic.yaml"
# The original's reference outputs and preprocessing, kept in the repository;
# STABN_FIXTURES points at another copy.
FIXTURES = Path(os.environ.get("STABN_FIXTURES", Path(__file__).resolve().parent / "fixtures"))


def child_env(**extra: str) -> dict:
    """Environment for a launched job: none of torch.distributed's variables inherited, the
    repository importable, one thread per process."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("RANK", "WORLD_SIZE", "MASTER_", "LOCAL_RANK", "TORCHELASTIC"))
    }
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in [env.get("PYTHONPATH")] if p])
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def torchrun(script: str, *args: str, nproc: int = 2, launcher_args: tuple = ()) -> List[str]:
    """The command line of `torchrun --standalone` running one of the repo's scripts."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        *launcher_args,
        str(REPO / script),
        *args,
    ]


def tiny_run(data, logdir, *extra: str, workers: int = 0, epochs: int = 1) -> List[str]:
    """Overrides of configs/synthetic.yaml for a CPU-sized run on the synthetic dataset `data`
    (width 4, 8 frames, 32 px crops), writing to `logdir`; `extra` overrides come last."""
    return [
        f"logdir={logdir}", "model.width=4", f"data.frames_root={data}/frames",
        f"data.train_labels={data}/train.txt", f"data.val_labels={data}/val.txt",
        f"data.class_names={data}/classes.txt", "data.frame_length=8", "data.frame_size=32",
        f"data.num_workers={workers}", f"train.epochs={epochs}", *extra,
    ]  # fmt: skip


def run_module(module: str, args: Sequence[str], timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """`python -m <module> <args>` from the repository root, its output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        cwd=REPO,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )


class CodePayload:
    """Unpickling this creates `marker`: the proof that a file's code ran."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


# -- the original's reference outputs (fixtures/reference_*.json) ---------------------------


def fill_rule(fixtures_dir: Path):
    spec = importlib.util.spec_from_file_location("fill_rule", fixtures_dir / "fill_rule.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_reference(fixtures_dir: Path, name: str) -> dict:
    return json.loads((fixtures_dir / name).read_text())


def reference_outputs(ref: dict):
    return [torch.tensor(o["values"]).view(o["shape"]) for o in ref["outputs"]]


def max_relative_error(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return ((ours - ref).abs().max() / ref.abs().max().clamp_min(1e-12)).item()


def run_reference_input(model, ref: dict, fixtures_dir: Path, channels_last: bool = False):
    x = fill_rule(fixtures_dir).make_input(ref["frame_length"], ref["frame_size"])
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last_3d)
    with torch.no_grad():
        out = model.eval()(x)
    return list(out) if isinstance(out, tuple) else [out]


def filled_reference_model(fixtures_dir: Path, name: str):
    """The reference fixture's model with its weights filled by the fixture's rule, and the fixture."""
    ref = load_reference(fixtures_dir, name)
    model = build_model(
        ref["model"], num_classes=ref["num_classes"], frame_length=ref["frame_length"], frame_size=ref["frame_size"]
    )
    model.load_state_dict(fill_rule(fixtures_dir).fill_params(model.state_dict()))
    return model, ref


def save_like_the_original(model, path):
    """As the original's trainer: DataParallel (keys get `module.`), SGD, MultiStepLR."""
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    wrapped = nn.DataParallel(model)
    optimizer = torch.optim.SGD(wrapped.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, [75, 125], 0.1)
    for p in wrapped.parameters():
        p.grad = torch.randn_like(p)
    optimizer.step()  # momentum buffers now exist
    scheduler.step()
    model.load_state_dict(weights)  # the reference outputs belong to the filled weights
    torch.save(
        {
            "epoch": 3,
            "iteration": 120,
            "best_score": 0.25,
            "model_state_dict": wrapped.state_dict(),
            "optimizer_state_dict": optimizer.state_dict(),
            "scheduler_state_dict": scheduler.state_dict(),
        },
        path,
    )
