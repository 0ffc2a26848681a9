"""``python -m stabn.bench <benchmark> [options]``: one subcommand per benchmark."""

from __future__ import annotations

import argparse
import functools
import sys
from typing import Optional, Sequence

from stabn.commands import bench_explain as explain
from stabn.errors import ReportedError, report_error
from stabn.perf import data_speed as loader
from stabn.perf import model_cost as cost
from stabn.perf import model_speed as train


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m stabn.bench", description=__doc__)
    subparsers = parser.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    loader_parser = subparsers.add_parser(
        "loader", help="data path throughput against decoding alone", description=loader.__doc__
    )
    loader.add_arguments(loader_parser)
    loader_parser.set_defaults(run=loader.main)
    for mode, summary in (
        ("train", "training-step throughput, peak memory and MFU of a model"),
        ("infer", "inference throughput, peak memory and MFU of a model"),
    ):
        mode_parser = subparsers.add_parser(mode, help=summary, description=train.__doc__)
        train.add_arguments(mode_parser)
        mode_parser.set_defaults(run=functools.partial(train.main, mode=mode))
    explain_parser = subparsers.add_parser(
        "explain",
        help="where and when explainers locate the target, on the synthetic data",
        description=explain.__doc__,
    )
    explain.add_arguments(explain_parser)
    explain_parser.set_defaults(run=explain.main)
    cost_parser = subparsers.add_parser(
        "cost", help="parameters, forward FLOPs and activation memory of a model, on the meta device",
        description=cost.__doc__,
    )  # fmt: skip
    cost.add_arguments(cost_parser)
    cost_parser.set_defaults(run=cost.main)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except ReportedError as e:
        return report_error(e)


if __name__ == "__main__":
    sys.exit(main())
