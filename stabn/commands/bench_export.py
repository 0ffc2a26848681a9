"""`stabn-bench onnx`: clips/s of eager PyTorch against onnxruntime on the CPU for each model
(`stabn.perf.export_speed`), one JSON line per model."""

from __future__ import annotations

import argparse
import json

import torch

from stabn.errors import ConfigError
from stabn.models import MODEL_NAMES
from stabn.perf import torch_threads


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", default="resnet50,abn_resnet50", help="comma-separated model names")
    parser.add_argument("--frame-length", type=int, default=16)
    parser.add_argument("--frame-size", type=int, default=224)
    parser.add_argument("--num-classes", type=int, default=174)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each, interleaved; the best counts")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="for both runtimes")


def main(args: argparse.Namespace) -> int:
    from stabn.perf.export_speed import export_speed

    names = [n for n in args.models.split(",") if n]
    unknown = [n for n in names if n not in MODEL_NAMES]
    if unknown or not names:
        raise ConfigError(f"--models {args.models!r}: unknown {unknown}; choose from: {', '.join(MODEL_NAMES)}")
    for key in ("frame_length", "frame_size", "num_classes", "batch_size", "repeats", "threads"):
        if getattr(args, key) < 1:
            raise ConfigError(f"--{key.replace('_', '-')} must be >= 1, got {getattr(args, key)}")
    with torch_threads(args.threads):
        for name in names:
            figures = export_speed(
                name,
                frame_length=args.frame_length,
                frame_size=args.frame_size,
                num_classes=args.num_classes,
                batch_size=args.batch_size,
                repeats=args.repeats,
                threads=args.threads,
            )
            print(json.dumps(figures), flush=True)
    return 0
