"""`stabn-bench cost`: the options of the model-cost count (`stabn.perf.model_cost`)."""

from __future__ import annotations

import argparse
import json

from stabn.commands.bench_speed import attention_options
from stabn.errors import ConfigError
from stabn.models import MODEL_NAMES
from stabn.perf.model_cost import model_cost


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="abn_resnet50", help="a registered model name")
    parser.add_argument("--frame-length", type=int, default=32)
    parser.add_argument("--frame-size", type=int, default=224)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--num-classes", type=int, default=174)
    parser.add_argument("--attention", default="", metavar="KEY=VALUE,...", help="ST-ABN attention options")


def main(args: argparse.Namespace) -> int:
    if args.model not in MODEL_NAMES:
        raise ConfigError(f"unknown model {args.model!r}; choose one of: {', '.join(MODEL_NAMES)}")
    for key in ("frame_length", "frame_size", "width", "num_classes"):
        if getattr(args, key) < 1:
            raise ConfigError(f"--{key.replace('_', '-')} must be >= 1, got {getattr(args, key)}")
    try:
        figures = model_cost(args.model, args.frame_length, args.frame_size, args.width, args.num_classes,
                             attention_options(args))  # fmt: skip
    except (TypeError, ValueError) as e:
        raise ConfigError(f"--attention {args.attention!r}: {e}") from None
    print(json.dumps(figures))
    return 0
