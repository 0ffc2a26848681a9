"""The videos `data.skip_corrupt` skipped: each said as it goes, then at each epoch's end the
count of every rank together and, by rank 0, their list in ``<logdir>/skipped.txt``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable, List

import torch.distributed as dist

from stabn.engine.distributed import DistContext
from stabn.fileio import atomic_write_text, writing

log = logging.getLogger(__name__)

SKIPPED_FILE = "skipped.txt"


class SkippedVideos:
    """Skipped videos of one run: `add` them as batches come, `end_epoch` after each epoch (on
    every rank: the lists are gathered)."""

    def __init__(self, ctx: DistContext, logdir: Path) -> None:
        self.ctx = ctx
        self.path = Path(logdir) / SKIPPED_FILE
        self.count = 0  # this rank's, over the run
        self._epoch: List[str] = []

    def add(self, reasons: Iterable[str]) -> None:
        for reason in reasons:
            self.count += 1
            self._epoch.append(reason)
            log.warning("skipped a video (%d so far): %s", self.count, reason)

    def _gathered(self) -> List[str]:
        if not self.ctx.distributed:
            return list(self._epoch)
        lists: List[List[str]] = [[] for _ in range(self.ctx.world_size)]
        dist.all_gather_object(lists, self._epoch)
        return [reason for reasons in lists for reason in reasons]

    def end_epoch(self, epoch: int) -> int:
        """Sum the ranks' skipped videos of `epoch` (1-based), add them to the list (rank 0)
        and say how many; returns the number. Raises WriteRefused where the list cannot be written."""
        reasons = self._gathered()
        self._epoch = []
        if not reasons or not self.ctx.is_main:
            return len(reasons)
        before = self.path.read_text(encoding="utf-8") if self.path.is_file() else ""
        with writing(self.path):
            atomic_write_text(self.path, before + "".join(f"epoch {epoch}\t{r}\n" for r in reasons))
        plural = "video" if len(reasons) == 1 else "videos"
        log.warning("epoch %d: %d %s skipped (data.skip_corrupt), listed in %s", epoch, len(reasons), plural, self.path)
        return len(reasons)
