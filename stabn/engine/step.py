"""One training step, the trainer's and the training benchmark's alike."""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from stabn.engine.losses import classification_losses
from stabn.engine.precision import autocast


def training_step(
    net: nn.Module,
    clips: Tensor,
    labels: Tensor,
    *,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler,
    device: torch.device,
    amp_dtype: Optional[torch.dtype],
    spatial_sparsity: float = 0.0,
    temporal_sparsity: float = 0.0,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Forward `clips` (on `device`, in the model's layout) under autocast to `amp_dtype`, then
    backward and an optimizer step through `scaler`; returns the detached (total, perception,
    attention) losses of `classification_losses`."""
    with autocast(device, amp_dtype):
        loss, loss_per, loss_att = classification_losses(net(clips), labels, spatial_sparsity, temporal_sparsity)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return loss.detach(), loss_per.detach(), loss_att.detach()
