"""Command-line plumbing shared by every command: argument parsing, logging, and the one path
from an error to its `error: ...` line and exit code."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Callable, List, NoReturn, Optional, Sequence

from stabn.config import Config, load_config
from stabn.errors import ConfigError, ReportedError, StabnError, report_error
from stabn.torch_compat import shut_down_loader_iterator


def stop_loader_workers(error: BaseException) -> int:
    """Shut down the worker processes of the DataLoader iterators that the frames of `error`'s
    traceback (and of its causes and contexts) hold; return how many iterators were stopped.

    Needed because the traceback and the iterator end up in a reference cycle: when the garbage
    collector frees it, the index queues' finalizers may have closed them before the iterator's
    own shutdown sends its workers their stop signal, and the workers, which ignore SIGTERM
    (`stabn.data.dataloader.ignore_stop_signals`), then keep the exit waiting for ever.

    The shutdown is torch's private one (`stabn.torch_compat.shut_down_loader_iterator`)."""
    stopped, seen = 0, set()
    pending: List[Optional[BaseException]] = [error]
    while pending:
        e = pending.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        pending += [e.__cause__, e.__context__]
        tb = e.__traceback__
        while tb is not None:
            for value in list(tb.tb_frame.f_locals.values()):
                try:
                    if shut_down_loader_iterator(value):
                        stopped += 1
                except Exception:  # best effort: the error itself is what must come out
                    continue
            tb = tb.tb_next
    return stopped


def run_command(body: Callable[[], Optional[int]], *, interrupted: Optional[str] = None) -> int:
    """Run a command's `body` and return its exit code: the body's own (None is 0), that of the
    `ReportedError` it raised after printing the error's one line (2 for bad input, 75 for a
    refused write, 1 for a job that could not go on), or 130 for Ctrl-C, after printing
    `interrupted` (how to go on) where given. Anything else, a bug or SystemExit, goes through."""
    try:
        code = body()
    except ReportedError as e:
        stop_loader_workers(e)
        return report_error(e)
    except KeyboardInterrupt as e:
        stop_loader_workers(e)
        if interrupted:
            print(interrupted, file=sys.stderr)
        return 130
    except BaseException as e:  # a bug, or SystemExit: let it through, without hanging on workers
        stop_loader_workers(e)
        raise
    return code or 0


def run_cli(body: Callable[[], Optional[int]]) -> NoReturn:
    """Run a command's `body` (`run_command`) and exit with its exit code."""
    sys.exit(run_command(body))


class CommandParser(argparse.ArgumentParser):
    """argparse whose usage errors (an unknown flag, a value that is no number) end as bad input
    does: one `error: ...` line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        sys.exit(report_error(StabnError(message)))


def setup_logging() -> None:
    """Progress to stdout, warnings and errors to stderr: on bad input, stderr holds just the
    one `error:` line. Under torchrun, ranks other than 0 log warnings only."""
    rank = int(os.environ.get("RANK", "0"))
    progress = logging.StreamHandler(sys.stdout)
    progress.addFilter(lambda record: record.levelno < logging.WARNING)
    problems = logging.StreamHandler(sys.stderr)
    problems.setLevel(logging.WARNING)
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format=f"%(asctime)s [rank {rank}] %(message)s" if "RANK" in os.environ else "%(asctime)s %(message)s",
        datefmt="%H:%M:%S",
        handlers=[progress, problems],
    )


def config_parser(description: str, prog: Optional[str] = None) -> argparse.ArgumentParser:
    parser = CommandParser(prog=prog, description=description)
    parser.add_argument("--config", help="YAML config file (see configs/)")
    parser.add_argument("--logdir", help="run folder; same as logdir=...")
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. train.epochs=2 model.width=16"
    )
    return parser


def parse_train_args(argv: Optional[Sequence[str]] = None, prog: Optional[str] = None) -> Config:
    """A training command's config: `--config`, its overrides and the `--logdir` / `--resume` flags."""
    parser = config_parser("Train a model from a YAML config with dotted overrides.", prog)
    parser.add_argument("--resume", help="checkpoint path, or 'latest'; same as train.resume=...")
    # Overrides may stand before, between and after the flags.
    args = parser.parse_intermixed_args(argv)
    if not args.config:
        raise ConfigError(
            f"no --config given; usage: {parser.prog} --config configs/<name>.yaml [key=value ...] "
            "[--logdir DIR] [--resume latest]"
        )
    overrides: List[str] = list(args.overrides)
    if args.logdir:
        overrides.append(f"logdir={args.logdir}")
    if args.resume:
        overrides.append(f"train.resume={args.resume}")
    return load_config(args.config, overrides)


def eval_parser(prog: Optional[str] = None) -> argparse.ArgumentParser:
    """`eval.py`'s arguments."""
    parser = CommandParser(
        prog=prog,
        description="Evaluate a checkpoint: Top-1/Top-5 of both branches, multi-view inference, attention images.",
    )
    parser.add_argument(
        "--logdir", required=True, help="run folder (its config.yaml is read; results go to <logdir>/<eval.output>)"
    )
    parser.add_argument("--checkpoint", help="checkpoint file; default <logdir>/checkpoint-<eval.checkpoint>.pt")
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. eval.num_clips=2 eval.num_crops=3"
    )
    return parser
