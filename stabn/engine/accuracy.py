"""Classification metrics that add up exactly across processes."""

from __future__ import annotations

from typing import Dict, Sequence

import torch
from torch import Tensor

from stabn.config.schema import VIEW_AVERAGES

# How the scores of a video's views are combined (`average_views`).


def average_views(scores: Tensor, num_views: int, mode: str = "softmax") -> Tensor:
    """[B*V, K] per-view scores -> [B, K] per-video scores: the mean of the softmax
    probabilities (default) or of the raw logits."""
    scores = scores.float().view(-1, num_views, scores.shape[-1])
    if mode == "softmax":
        scores = scores.softmax(dim=-1)
    elif mode != "logits":
        raise ValueError(f"unknown view averaging {mode!r}; use one of {VIEW_AVERAGES}")
    return scores.mean(dim=1)


def ranked_classes(scores: Tensor, k: int) -> Tensor:
    """The `k` highest-scoring classes of each row, best first (k capped at the number of
    classes). Ties rank the lower class index first: `torch.topk` on CPU does not promise an
    order, and a stable sort makes the ranking deterministic."""
    return torch.sort(-scores.float(), dim=1, stable=True).indices[:, : min(k, scores.shape[1])]


def _count_hits(ranked: Tensor, labels: Tensor, ks: Sequence[int]) -> Dict[int, int]:
    hits = ranked == labels.view(-1, 1)
    return {k: int(hits[:, :k].any(dim=1).sum()) for k in ks}


def topk_correct(scores: Tensor, labels: Tensor, ks: Sequence[int] = (1, 5)) -> Dict[int, int]:
    """How many rows have their label among the k highest scores (see `ranked_classes`), for each k."""
    return _count_hits(ranked_classes(scores, max(ks)), labels, ks)


class ClassificationMeter:
    """Accumulates a confusion matrix; Top-k counts alongside, all summable over ranks."""

    def __init__(self, num_classes: int, ks: Sequence[int] = (1, 5)) -> None:
        self.num_classes = num_classes
        self.ks = tuple(ks)
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
        self.correct = torch.zeros(len(self.ks), dtype=torch.int64)
        self.count = 0

    def update(self, scores: Tensor, labels: Tensor) -> None:
        scores, labels = scores.detach().cpu(), labels.detach().cpu().long()
        ranked = ranked_classes(scores, max(self.ks))
        hits = _count_hits(ranked, labels, self.ks)
        self.correct += torch.tensor([hits[k] for k in self.ks])
        pred = ranked[:, 0]
        flat = labels * self.num_classes + pred
        self.confusion += torch.bincount(flat, minlength=self.num_classes**2).view_as(self.confusion)
        self.count += labels.numel()

    def all_reduce(self) -> None:
        """Sum the counts of every process (no-op outside torch.distributed)."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return
        packed = torch.cat([self.confusion.flatten(), self.correct, torch.tensor([self.count])])
        if dist.get_backend() == "nccl":
            packed = packed.cuda()
        dist.all_reduce(packed)
        packed = packed.cpu()
        n = self.num_classes**2
        self.confusion = packed[:n].view(self.num_classes, self.num_classes).clone()
        self.correct = packed[n : n + len(self.ks)].clone()
        self.count = int(packed[-1])

    def topk(self) -> Dict[int, float]:
        """Top-k accuracy for each k; 0 when nothing was counted."""
        return {k: (int(c) / self.count if self.count else 0.0) for k, c in zip(self.ks, self.correct)}

    def per_class_accuracy(self) -> Tensor:
        """Top-1 accuracy of each class (NaN for classes with no samples)."""
        support = self.confusion.sum(dim=1).double()
        return self.confusion.diagonal().double() / support
