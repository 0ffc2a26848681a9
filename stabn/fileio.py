"""Crash-safe writes: a reader sees the old file or folder or the new one, never half of one; and
writes the operating system refuses, reported as one line naming the file and the cause."""

from __future__ import annotations

import contextlib
import io
import os
import secrets
import shutil
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator, Tuple

from stabn.errors import PathLike, ReportedError, os_cause, write_error


@contextlib.contextmanager
def writing(path: PathLike) -> Iterator[None]:
    """Writes to `path` inside the block that the operating system refuses (no space, no
    permission, a read-only file system, a quota, a file-size limit) end as one error naming
    `path` and the cause in words, instead of a traceback: exit code 75, or 2 where the path
    itself cannot be written as given (`errors.write_error`)."""
    try:
        yield
    except ReportedError:
        raise
    except Exception as e:
        cause = os_cause(e)
        if cause is None:
            raise
        raise write_error(path, cause) from None


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
    umask (0644 under the usual 022). A write the operating system refuses removes the
    temporary file, keeps the previous one and ends as one error (`writing`)."""
    path = Path(path)
    with writing(path):
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


def write_image(path: PathLike, image: Any, atomic: bool = True, **params: Any) -> None:
    """`image.save(file, **params)` (a Pillow image; give `format`) into `path`: atomically, or
    straight into the file (frames inside a folder that is renamed once complete). Encoded in
    memory first: Pillow writes some formats (JPEG) to the descriptor of a real file itself, and
    a write cut short by a full disk goes unnoticed there, leaving a truncated file."""
    buffer = io.BytesIO()
    image.save(buffer, **params)
    if atomic:
        atomic_write(path, lambda f: f.write(buffer.getbuffer()))
    else:
        with writing(path), open(path, "wb") as f:
            f.write(buffer.getbuffer())


def remove_path(path: PathLike) -> None:
    """Remove the folder tree, file or symbolic link at `path`; nothing where there is none."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextlib.contextmanager
def atomic_folder(path: PathLike, *, suffix: str) -> Iterator[Path]:
    """A new, empty folder `.<name><suffix>` beside `path` to fill inside the block, renamed to
    `path` (replacing what is there) once the block ends: a reader, or a run after a crash, never
    finds a half-written `path`. An error inside the block removes the unfinished folder; a
    write the operating system refuses ends as one error naming the path (`writing`)."""
    path = Path(path)
    unfinished = path.parent / f".{path.name}{suffix}"
    with writing(unfinished):
        remove_path(unfinished)
        unfinished.mkdir(parents=True)
    try:
        yield unfinished
        with writing(path):
            remove_path(path)
            os.replace(unfinished, path)
    except BaseException:
        shutil.rmtree(unfinished, ignore_errors=True)
        raise
