"""The training command: `train_dp.py` (one process, DataParallel over the GPUs) and
`train_ddp.py` (a rank under torchrun)."""

from __future__ import annotations

from typing import Optional, Sequence

from stabn.commands.common import parse_train_args, run_cli, setup_logging


def main(launcher: str, argv: Optional[Sequence[str]] = None) -> None:
    """Entry point of `train_dp.py` (launcher `dp`) and `train_ddp.py` (launcher `ddp`)."""

    def run() -> None:
        setup_logging()
        from stabn.engine.loop import train

        train(parse_train_args(argv), launcher)

    run_cli(run)
