"""Eager PyTorch against onnxruntime on the CPU: clips a second of one model, the ONNX file
written by `stabn.export` (and checked by it), both timed in one interleaved run on the same
clips and the same number of threads."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Dict, List

import torch

from stabn.exporter import export
from stabn.models import build_model


def _calibrated(name: str, frame_length: int, frame_size: int, num_classes: int) -> torch.nn.Module:
    """A model whose BatchNorms hold the statistics of random clips, so that its activations
    have a trained model's scale (a fresh build's grow until the maps saturate)."""
    torch.manual_seed(0)
    model = build_model(name, num_classes=num_classes, frame_length=frame_length, frame_size=frame_size)
    for bn in model.modules():
        if isinstance(bn, torch.nn.modules.batchnorm._BatchNorm):
            bn.reset_running_stats()
            bn.momentum = None
    model.train()
    with torch.no_grad():
        model(torch.randn(2, 3, frame_length, frame_size, frame_size))
    return model.eval()


def export_speed(
    name: str, *, frame_length: int, frame_size: int, num_classes: int, batch_size: int, repeats: int, threads: int
) -> Dict:
    import onnxruntime

    model = _calibrated(name, frame_length, frame_size, num_classes)
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        report = export(model, Path(folder) / "model.onnx")
        export_s = time.perf_counter() - started
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        session = onnxruntime.InferenceSession(str(report.path), options, providers=["CPUExecutionProvider"])
    clips = torch.randn(batch_size, 3, frame_length, frame_size, frame_size)
    feed = {"clip": clips.numpy()}

    def eager() -> None:
        with torch.no_grad():
            model(clips)

    runs = {"eager": eager, "onnxruntime": lambda: session.run(None, feed)}
    times: Dict[str, List[float]] = {k: [] for k in runs}
    for run in runs.values():  # warm-up
        run()
    for _ in range(repeats):  # interleaved, so that a change of load hits both
        for key, run in runs.items():
            started = time.perf_counter()
            run()
            times[key].append(time.perf_counter() - started)
    best = {k: min(v) for k, v in times.items()}
    return {
        "model": name,
        "clip": f"{frame_length}x{frame_size}",
        "batch_size": batch_size,
        "threads": threads,
        "eager_clips_per_s": batch_size / best["eager"],
        "onnxruntime_clips_per_s": batch_size / best["onnxruntime"],
        "onnxruntime_over_eager": best["eager"] / best["onnxruntime"],
        "export_s": export_s,
        "export_max_difference": report.differences,
    }
