"""The optimizer and the learning-rate schedule of a training run."""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import torch
from torch import Tensor

SCHEDULES = ("multistep", "cosine")


def make_sgd(
    params: Iterable[Tensor],
    device: torch.device,
    lr: float,
    momentum: float,
    weight_decay: float,
    nesterov: bool = False,
) -> torch.optim.SGD:
    """SGD with the whole update in one fused kernel on a GPU, multi-tensor ops on the CPU."""
    fused = device.type == "cuda"
    return torch.optim.SGD(
        params,
        lr=lr,
        momentum=momentum,
        weight_decay=weight_decay,
        nesterov=nesterov,
        foreach=None if fused else True,
        fused=fused or None,
    )


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    *,
    schedule: str,
    epochs: int,
    milestones: Sequence[int],
    gamma: float,
    warmup_epochs: int = 0,
) -> torch.optim.lr_scheduler.LRScheduler:
    """The original's MultiStepLR (stepped per epoch), optionally behind a linear warm-up or
    replaced by a cosine decay (`schedule` is one of `SCHEDULES`)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if schedule == "multistep" and warmup_epochs == 0:
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, list(milestones), gamma)

    def factor(epoch: int) -> float:
        if epoch < warmup_epochs:
            return (epoch + 1) / (warmup_epochs + 1)
        if schedule == "cosine":
            progress = (epoch - warmup_epochs) / max(1, epochs - warmup_epochs)
            return 0.5 * (1 + math.cos(math.pi * progress))
        return gamma ** sum(epoch >= m for m in milestones)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
