"""`stabn-check`: the inputs of a training or evaluation job checked in seconds, before
torchrun starts its processes, so that bad input stops a job with one line and exit code 2
rather than after start-up on every node, or as a failure a scheduler would retry.

    stabn-check --config C [--logdir D] [--resume R] [key=value ...]   # train_dp.py / train_ddp.py
    stabn-check --eval --logdir D [--checkpoint C] [key=value ...]     # eval.py

It takes the arguments of the command it goes before, and checks what that command would read
and write: the config, the label files, that every frame folder exists, that the first frames
of a few videos spread over each list decode and are large enough for the crop, the checkpoint
to resume or evaluate, the 2D ImageNet file (fetched into torchvision's cache where it is
missing, as training would), and that the run folder is writable. Exit code 0 with one line
saying what was checked, or the `error:` line of the first problem: exit code 2 for bad input,
75 where the operating system refuses the run folder (full, read-only, no permission).
"""

from __future__ import annotations

import sys
from typing import Optional, Sequence

from stabn.commands.common import eval_parser, parse_train_args, run_cli, setup_logging
from stabn.engine.preflight import check_evaluation, check_training

PROG = "stabn-check"


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)

    def run() -> None:
        setup_logging()
        if "--eval" in args:
            args.remove("--eval")
            parsed = eval_parser(f"{PROG} --eval").parse_intermixed_args(args)
            summary = check_evaluation(parsed.logdir, parsed.checkpoint, parsed.overrides)
        else:
            summary = check_training(parse_train_args(args, PROG))
        print(f"check passed: {summary}")

    run_cli(run)


if __name__ == "__main__":
    main()
