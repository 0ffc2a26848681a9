"""The optimizer and the learning-rate schedule of a training run."""

from __future__ import annotations

import functools
import math
from typing import Any, Collection, Dict, Iterable, List, Sequence

import torch
from torch import nn

from stabn.config.schema import SCHEDULES

# A param group's lr as a multiple of the run's base lr, kept in the group (and so in the
# optimizer's state dict) for `restart_schedule`; absent from a group at the base lr.
LR_MULTIPLIER = "lr_multiplier"


def param_groups(
    model: nn.Module, *, lr: float, fast_modules: Collection[str] = (), lr_multiplier: float = 1.0
) -> List[Dict[str, Any]]:
    """`model`'s parameters that train (frozen ones left out), as SGD param groups: one at the
    optimizer's lr, and, where `fast_modules` names modules, their parameters in a second group
    at `lr * lr_multiplier`. The schedules scale each group from its own lr. Without frozen
    parameters or `fast_modules`, the one group holds `model.parameters()` as they come, as the
    original's optimizer did."""
    base: List[nn.Parameter] = []
    fast: List[nn.Parameter] = []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (fast if name.rpartition(".")[0] in fast_modules else base).append(param)
    groups: List[Dict[str, Any]] = [{"params": base}]
    if fast_modules:
        groups.append({"params": fast, "lr": lr * lr_multiplier, LR_MULTIPLIER: lr_multiplier})
    return groups


def make_sgd(
    params: Iterable[Any], device: torch.device, lr: float, momentum: float, weight_decay: float, nesterov: bool = False
) -> torch.optim.SGD:
    """SGD over `params` (tensors or param groups) with the whole update in one fused kernel on
    a GPU, multi-tensor ops on the CPU."""
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


def lr_factor(
    epoch: int, *, schedule: str, epochs: int, milestones: Sequence[int], gamma: float, warmup_epochs: int = 0
) -> float:
    """The schedule's learning rate in epoch `epoch` (0-based), as a fraction of the base lr."""
    if epoch < warmup_epochs:
        return (epoch + 1) / (warmup_epochs + 1)
    if schedule == "cosine":
        progress = (epoch - warmup_epochs) / max(1, epochs - warmup_epochs)
        return 0.5 * (1 + math.cos(math.pi * progress))
    return gamma ** sum(epoch >= m for m in milestones)


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    *,
    schedule: str,
    epochs: int,
    milestones: Sequence[int],
    gamma: float,
    warmup_epochs: int = 0,
    last_epoch: int = -1,
) -> torch.optim.lr_scheduler.LRScheduler:
    """The original's MultiStepLR (stepped per epoch), optionally behind a linear warm-up or
    replaced by a cosine decay (`schedule` is one of `SCHEDULES`); `last_epoch` as torch's
    schedulers take it."""
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if schedule == "multistep" and warmup_epochs == 0:
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, list(milestones), gamma, last_epoch=last_epoch)
    factor = functools.partial(
        lr_factor, schedule=schedule, epochs=epochs, milestones=milestones, gamma=gamma, warmup_epochs=warmup_epochs
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor, last_epoch=last_epoch)


def restart_schedule(
    optimizer: torch.optim.Optimizer,
    lr: float,
    epoch: int,
    *,
    schedule: str,
    epochs: int,
    milestones: Sequence[int],
    gamma: float,
    warmup_epochs: int = 0,
) -> torch.optim.lr_scheduler.LRScheduler:
    """A schedule of base lr `lr` with these settings, standing at the start of `epoch` (0-based)
    as if it had run from the first: how a resumed run takes a new lr or schedule from there on.
    A group with an `LR_MULTIPLIER` keeps its multiple of `lr`."""
    settings = dict(schedule=schedule, epochs=epochs, milestones=milestones, gamma=gamma, warmup_epochs=warmup_epochs)
    for group in optimizer.param_groups:
        base = lr * group.get(LR_MULTIPLIER, 1.0)
        group["initial_lr"] = base
        # The scheduler's first step goes from `epoch - 1` to `epoch`; MultiStepLR's multiplies
        # the lr it finds by gamma at a milestone, so it must find the lr of `epoch - 1`.
        group["lr"] = base * lr_factor(epoch - 1, **settings) if epoch > 0 else base
    return build_scheduler(optimizer, last_epoch=epoch - 1, **settings)
