"""Errors that mean "the input is wrong", as opposed to a bug, and the one line that reports them.

Command-line entry points print them as one line and exit with code 2; everything else
is left to raise with its traceback.
"""

from __future__ import annotations

import re
import sys


class StabnError(Exception):
    """Bad input from the user: a file, a line, a key or a value, named in the message."""


class ConfigError(StabnError):
    """An unknown key, a bad value or a malformed YAML file."""


class DataError(StabnError):
    """A malformed label file, a missing frame folder, an undecodable frame."""


class CheckpointError(StabnError):
    """A file that is not a checkpoint, is unsafe to load, or does not fit the model."""


BAD_INPUT_EXIT_CODE = 2

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


def report_error(error: BaseException) -> int:
    """Print `error` as the one `error: ...` line of bad input; return its exit code, 2."""
    print(f"error: {error_message(error)}", file=sys.stderr)
    return BAD_INPUT_EXIT_CODE
