"""The training loss of both model families."""

from __future__ import annotations

from typing import Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from stabn.models import STABNOutput


def classification_losses(
    out: Union[STABNOutput, Tensor], labels: Tensor, spatial_sparsity: float = 0.0, temporal_sparsity: float = 0.0
) -> Tuple[Tensor, Tensor, Tensor]:
    """(total, perception, attention) cross-entropies, in fp32 from the logits; for a plain
    ResNet the attention term is zero. ST-ABN trains on their sum, as the original, plus
    `spatial_sparsity` times the mean of its spatial attention and `temporal_sparsity` times the
    mean of its temporal attention."""
    if isinstance(out, STABNOutput):
        loss_per = F.cross_entropy(out.logits.float(), labels)
        loss_att = F.cross_entropy(out.att_logits.float(), labels)
        total = loss_per + loss_att
        if spatial_sparsity:
            total = total + spatial_sparsity * out.spatial_attention.float().mean()
        if temporal_sparsity:
            total = total + temporal_sparsity * out.temporal_attention.float().mean()
    else:
        loss_per = F.cross_entropy(out.float(), labels)
        loss_att = torch.zeros((), device=labels.device)
        total = loss_per
    return total, loss_per, loss_att
