"""Combine the explanation benchmark of models trained alike but for their seed: give each
run's explain.json (stabn-bench explain, the same data and settings); every explainer's figures
become the mean over seeds with the lowest and highest seed's. Writes seeds.json and seeds.md
under --out and prints the tables.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from stabn.interpret.seeds import combine_seeds, write_seed_reports


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``explain-seeds`` subcommand's options."""
    parser.add_argument("runs", nargs="+", metavar="EXPLAIN_JSON", help="each seed's explain.json")
    parser.add_argument("--out", required=True, help="folder for seeds.json and seeds.md")


def main(args: argparse.Namespace) -> int:
    """Combine the runs; write and print the tables."""
    text = write_seed_reports(args.out, combine_seeds(args.runs))
    print(text, end="")
    print(f"wrote {Path(args.out) / 'seeds.json'} and {Path(args.out) / 'seeds.md'}")
    return 0
