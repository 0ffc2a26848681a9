"""Errors that mean "the input is wrong", as opposed to a bug.

Command-line entry points print them as one line and exit with code 2; everything else
is left to raise with its traceback.
"""


class StabnError(Exception):
    """Bad input from the user: a file, a line, a key or a value, named in the message."""


class ConfigError(StabnError):
    """An unknown key, a bad value or a malformed YAML file."""


class DataError(StabnError):
    """A malformed label file, a missing frame folder, an undecodable frame."""


class CheckpointError(StabnError):
    """A file that is not a checkpoint, is unsafe to load, or does not fit the model."""
