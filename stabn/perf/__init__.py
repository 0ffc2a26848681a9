"""Speed and cost benchmarks (`stabn-bench loader | train | infer | cost`): the figures of docs/PERFORMANCE.md."""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional

import torch


@contextlib.contextmanager
def torch_threads(n: Optional[int]) -> Iterator[None]:
    """`torch.set_num_threads(n)` inside the block (None: leave it), restored after."""
    previous = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
