"""The evaluation command, `eval.py` (one process, or every rank under torchrun)."""

from __future__ import annotations

from typing import Optional, Sequence

from stabn.commands.common import eval_parser, run_cli, setup_logging


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Entry point of `eval.py` (one process, or every rank under torchrun)."""
    args = eval_parser().parse_intermixed_args(argv)

    def run() -> None:
        setup_logging()
        from stabn.engine.eval_job import eval_job

        eval_job(args.logdir, args.checkpoint, args.overrides)

    run_cli(run)
