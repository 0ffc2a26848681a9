"""Checkpoints named by an http(s) URL, downloaded once into torch's hub cache
(`$TORCH_HOME/hub/checkpoints`, `torch.hub.get_dir()`).

A download goes to a temporary file beside its place in the cache and is moved there only
once it is complete (as many bytes as the server announced) and, when a hash is expected,
verified, so the cache never holds a half-written or a wrong file. torch.hub's own downloader
is not used because it keeps a transfer that the server cut short.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import uuid
from pathlib import Path
from typing import Optional, Union
from urllib.error import HTTPError, URLError
from urllib.parse import unquote, urlparse
from urllib.request import Request, build_opener

import torch.hub

from stabn.errors import CheckpointError

URL_SCHEMES = ("http://", "https://")
# torch.hub's `name-<sha256 prefix>.ext` convention, as torchvision names its weights
# (resnet18-f37072fd.pth); at least 8 digits, so that `checkpoint-0012.pt` is no hash.
_NAME_HASH = re.compile(r"-([0-9a-f]{8,64})\.")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_TIMEOUT_S = 60  # a server that stops answering for this long fails the download


def is_url(path: Union[str, os.PathLike]) -> bool:
    return isinstance(path, str) and path.lower().startswith(URL_SCHEMES)


def cache_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def expected_sha256(url: str, sha256: Optional[str] = None) -> Optional[str]:
    """The hash a download must match: `sha256` (all 64 hex digits) where given, else the
    prefix the file name carries, else None."""
    if sha256 is not None:
        sha256 = sha256.lower()
        if not _SHA256.fullmatch(sha256):
            raise CheckpointError(f"sha256={sha256!r} is not a SHA-256 digest: give its 64 hexadecimal digits")
        return sha256
    found = _NAME_HASH.search(_file_name(url))
    return found.group(1) if found else None


def _file_name(url: str) -> str:
    return unquote(os.path.basename(urlparse(url).path))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(url: str, *, sha256: Optional[str] = None, progress: bool = True) -> Path:
    """The cached file of `url`, downloaded first if the cache lacks it (with a progress bar
    unless `progress=False`), and checked against `expected_sha256`."""
    name = _file_name(url)
    if not name or name in (".", ".."):
        raise CheckpointError(f"{url}: the URL names no file (its path should end in e.g. checkpoint.pt)")
    expected = expected_sha256(url, sha256)
    target = cache_dir() / name
    if target.is_file():
        if expected is not None and not file_sha256(target).startswith(expected):
            raise CheckpointError(
                f"{url}: the cached {target} does not match SHA-256 {expected}; delete it to download again"
            )
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        _download(url, target, expected, progress)
    except HTTPError as e:
        raise CheckpointError(f"{url}: download failed: HTTP {e.code} {e.reason}") from None
    except URLError as e:
        raise CheckpointError(f"{url}: download failed: {e.reason}") from None
    except (http.client.HTTPException, ConnectionError, TimeoutError) as e:
        raise CheckpointError(f"{url}: download failed: {type(e).__name__}: {e}") from None
    return target


def _download(url: str, target: Path, expected: Optional[str], progress: bool) -> None:
    # Imported here: in a notebook without ipywidgets, tqdm.auto warns when first imported.
    from tqdm.auto import tqdm

    partial = target.with_name(f"{target.name}.{uuid.uuid4().hex}.partial")
    try:
        # A new opener each time: urlopen's shared one keeps the proxy settings of its first use.
        opener = build_opener()
        with opener.open(Request(url, headers={"User-Agent": "stabn"}), timeout=_TIMEOUT_S) as response:
            announced = response.headers.get("Content-Length")
            total = int(announced) if announced and announced.isdigit() else None
            digest, received = hashlib.sha256(), 0
            with (
                open(partial, "wb") as f,
                tqdm(
                    total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=target.name, disable=not progress
                ) as bar,
            ):
                while block := response.read(1 << 20):
                    f.write(block)
                    digest.update(block)
                    received += len(block)
                    bar.update(len(block))
        if total is not None and received != total:
            raise CheckpointError(f"{url}: download cut short: {received} of {total} bytes; nothing was cached")
        if expected is not None and not digest.hexdigest().startswith(expected):
            raise CheckpointError(
                f"{url}: the download does not match SHA-256 {expected} (got {digest.hexdigest()}); nothing was cached"
            )
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
