"""Errors that end a command with one line `error: ...` instead of a traceback, and their exit
codes: 2 for bad input, 75 for a write the operating system refused (no space, no permission,
a read-only file system, a quota), 1 for a job that could not go on otherwise (processes that
stopped answering). Anything else, a bug, is left to raise with its traceback (exit code 1 too).

Under torchrun every rank usually meets the same error: rank 0 prints the line, and every
rank writes it to torchelastic's error file, so that torchrun's summary shows it as the root
cause and torchrun's own error file carries the exit code (`errorCode`).
"""

from __future__ import annotations

import errno
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Optional, Union

# README, "Exit codes".
FAILED_EXIT_CODE = 1
BAD_INPUT_EXIT_CODE = 2
# sysexits.h's EX_TEMPFAIL, "try again later": the input was fine, and the same command goes on
# from what was written once the machine takes the write again (space freed, quota raised,
# permissions or the mount fixed). A scheduler requeues on it, and never on 2.
REFUSED_EXIT_CODE = 75


class ReportedError(Exception):
    """An error that ends a command with its one line and `exit_code`. `follows_another`: it
    is what this process met because another one failed first (its peers are gone)."""

    exit_code = FAILED_EXIT_CODE
    follows_another = False


class StabnError(ReportedError):
    """Bad input from the user: a file, a line, a key or a value, named in the message."""

    exit_code = BAD_INPUT_EXIT_CODE


class ConfigError(StabnError):
    """An unknown key, a bad value or a malformed YAML file."""


class DataError(StabnError):
    """A malformed label file, a missing frame folder, an undecodable frame."""


class CheckpointError(StabnError):
    """A file that is not a checkpoint, is unsafe to load, or does not fit the model."""


class DamagedCheckpoint(CheckpointError):
    """A file that cannot be read as a checkpoint at all: cut short, overwritten, not a PyTorch file."""


class WriteRefused(ReportedError):
    """The operating system refused a write: no space left, no permission, a read-only file
    system, a disk quota, a file-size limit."""

    exit_code = REFUSED_EXIT_CODE


class OutputPathError(StabnError):
    """An output path that cannot be written as given: a file where a folder must be, a name
    too long. Bad input: another run would meet it again."""


# The errno values of a write that say the path given is wrong, not that the machine refused.
_PATH_ERRNOS = frozenset({errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENAMETOOLONG, errno.ELOOP})

# A file or folder path as the package takes one: a string or a path object.
PathLike = Union[str, "os.PathLike[str]"]


def os_cause(error: BaseException) -> Optional[OSError]:
    """The OSError with an errno behind `error`: `error` itself, or one that it was raised from
    or while handling. torch.save meets a full disk as an OSError, then raises a RuntimeError
    of its own while closing the archive ("unexpected pos ..."), whose context that OSError is."""
    seen, pending = set(), [error]
    while pending:
        e = pending.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno is not None:
            return e
        pending += [e.__cause__, e.__context__]
    return None


def _in_words(error: OSError) -> str:
    """What went wrong, in the C library's words ("no space left on device"); a file where a
    folder must be is named."""
    if error.errno in (errno.ENOTDIR, errno.EEXIST) and error.filename is not None:
        name = Path(os.fsdecode(error.filename))
        blocker = next((p for p in (name, *name.parents) if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            return f"{blocker} is not a folder"
    words = os.strerror(error.errno)
    return words[:1].lower() + words[1:]


def write_error(path: PathLike, error: OSError, hint: str = "") -> ReportedError:
    """`cannot write PATH: CAUSE[; HINT]` for an OSError met while writing `path`: a WriteRefused
    (exit code 75), or an OutputPathError (2) where the path itself cannot be written."""
    cls = OutputPathError if error.errno in _PATH_ERRNOS else WriteRefused
    return cls(f"cannot write {path}: {_in_words(error)}" + (f"; {hint}" if hint else ""))


# How torch re-raises an error of a DataLoader worker (or of its pin-memory thread).
_WORKER_PREFIX = re.compile(r"^Caught \w+ in [^\n]*\.\nOriginal Traceback")


def error_message(error: BaseException) -> str:
    """The one line `report_error` prints for `error`.

    An error raised in a DataLoader worker reaches the main process as the same type with a
    multi-line message ("Caught DataError in DataLoader worker process 0." and the worker's
    traceback); that is reduced to the worker's own message. Any line breaks left become spaces."""
    message = str(error)
    if _WORKER_PREFIX.match(message):
        cls = type(error)
        name = (
            cls.__qualname__ if cls.__module__ in ("__main__", "builtins") else f"{cls.__module__}.{cls.__qualname__}"
        )
        # The traceback ends with "<module>.<Class>: <the original message>".
        _, sep, tail = message.rpartition(f"\n{name}: ")
        if sep:
            message = tail
        else:  # a type the traceback names otherwise: take its last line
            last = message.strip().splitlines()[-1]
            message = re.sub(r"^[\w.]+: ", "", last)
    return " ".join(message.split())


def write_torchelastic_error(line: str, follows_another: bool = False) -> None:
    """Write `line` to the error file torchrun gives each worker (TORCHELASTIC_ERROR_FILE), in
    torchelastic's format, so that torchrun's failure summary shows it as the root cause; no-op
    outside torchrun. Without a `py_callstack` entry the summary shows the message itself.

    torchrun names the failure with the earliest timestamp, in whole seconds, and the lowest
    rank at a tie: an error that `follows_another` process's failure is dated a second later,
    so that the failure it follows stays the root cause when both fall in the same second."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path:
        return
    stamp = int(time.time()) + (1 if follows_another else 0)
    data = {"message": {"message": line, "extraInfo": {"timestamp": str(stamp)}}}
    try:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(data, f)
    except OSError:  # the line on stderr is what matters; the summary then says less
        pass


def report_error(error: BaseException) -> int:
    """Report `error` as its one `error: ...` line; return its exit code (2 for bad input).

    Under torchrun only rank 0 prints the line (the others would repeat it), and every rank
    writes it to its torchelastic error file: a line that only another rank met still reaches
    torchrun's summary."""
    line = f"error: {error_message(error)}"
    write_torchelastic_error(line, getattr(error, "follows_another", False))
    if os.environ.get("RANK", "0") == "0":
        print(line, file=sys.stderr)
    return getattr(error, "exit_code", BAD_INPUT_EXIT_CODE)
