"""Crash-safe file writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import BinaryIO, Callable, Tuple, Union

PathLike = Union[str, os.PathLike]


def _create_beside(path: Path) -> Tuple[int, Path]:
    """A new, empty temporary file next to `path`, open for writing. Created with mode 0666
    so that the kernel applies the process umask, as for any other file (tempfile.mkstemp
    would make it 0600 whatever the umask, and the rename would keep that)."""
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), tmp
        except FileExistsError:
            continue


def atomic_write(path: PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Call `write` on a temporary file beside `path`, flush it to disk, then rename it over
    `path`. A kill at any moment leaves the previous file intact. The file's mode follows the
    umask (0644 under the usual 022)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_beside(path)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    # The rename itself must reach the disk too, or a power cut can undo it.
    try:
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def atomic_write_text(path: PathLike, text: str) -> None:
    """Write `text` (UTF-8) to `path` atomically."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))
