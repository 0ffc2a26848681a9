"""Helpers around ../shared/fixtures/reference_*.json: the original's keys, shapes and outputs."""
import importlib.util
import json
from pathlib import Path

import torch


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
