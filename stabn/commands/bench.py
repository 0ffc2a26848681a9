"""``stabn-bench <benchmark> [options]``: one subcommand per benchmark."""

from __future__ import annotations

import argparse
import functools
import sys
from typing import Optional, Sequence

from stabn.commands import bench_cost, bench_explain, bench_explain_seeds, bench_export, bench_loader, bench_speed
from stabn.commands.common import CommandParser, run_command


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(prog="stabn-bench", description=__doc__)
    subparsers = parser.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    loader_parser = subparsers.add_parser(
        "loader", help="data path throughput against decoding alone", description=bench_loader.__doc__
    )
    bench_loader.add_arguments(loader_parser)
    loader_parser.set_defaults(run=bench_loader.main)
    for mode, summary in (
        ("train", "training-step throughput, peak memory and MFU of a model"),
        ("infer", "inference throughput, peak memory and MFU of a model"),
    ):
        mode_parser = subparsers.add_parser(mode, help=summary, description=bench_speed.__doc__)
        bench_speed.add_arguments(mode_parser)
        mode_parser.set_defaults(run=functools.partial(bench_speed.main, mode=mode))
    explain_parser = subparsers.add_parser(
        "explain",
        help="where and when explainers locate the target, on the synthetic data",
        description=bench_explain.__doc__,
    )
    bench_explain.add_arguments(explain_parser)
    explain_parser.set_defaults(run=bench_explain.main)
    seeds_parser = subparsers.add_parser(
        "explain-seeds",
        help="the explanation benchmark of several training seeds: mean and range",
        description=bench_explain_seeds.__doc__,
    )
    bench_explain_seeds.add_arguments(seeds_parser)
    seeds_parser.set_defaults(run=bench_explain_seeds.main)
    cost_parser = subparsers.add_parser(
        "cost", help="parameters, forward FLOPs and activation memory of a model, on the meta device",
        description=bench_cost.__doc__,
    )  # fmt: skip
    bench_cost.add_arguments(cost_parser)
    cost_parser.set_defaults(run=bench_cost.main)
    onnx_parser = subparsers.add_parser(
        "onnx", help="eager PyTorch against onnxruntime on the CPU, clips/s", description=bench_export.__doc__
    )
    bench_export.add_arguments(onnx_parser)
    onnx_parser.set_defaults(run=bench_export.main)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the benchmark `argv` names; return its exit code (`run_command`)."""
    args = build_parser().parse_args(argv)
    return run_command(lambda: args.run(args))


if __name__ == "__main__":
    sys.exit(main())
