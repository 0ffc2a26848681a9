"""The training loss of both model families."""

from __future__ import annotations

from typing import Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from ..models import STABNOutput


def classification_losses(
    out: Union[STABNOutput, Tensor], labels: Tensor, attention_sparsity: float = 0.0
) -> Tuple[Tensor, Tensor, Tensor]:
    """(total, perception, attention) cross-entropies, in fp32 from the logits; for a plain
    ResNet the attention term is zero. ST-ABN trains on their sum, as the original, plus
    `attention_sparsity` times the mean of its spatial and of its temporal attention."""
    if isinstance(out, STABNOutput):
        loss_per = F.cross_entropy(out.logits.float(), labels)
        loss_att = F.cross_entropy(out.att_logits.float(), labels)
        total = loss_per + loss_att
        if attention_sparsity:
            area = out.spatial_attention.float().mean() + out.temporal_attention.float().mean()
            total = total + attention_sparsity * area
    else:
        loss_per = F.cross_entropy(out.float(), labels)
        loss_att = torch.zeros((), device=labels.device)
        total = loss_per
    return total, loss_per, loss_att
