"""The training loss of both model families."""

from __future__ import annotations

from typing import Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from ..models import STABNOutput


def classification_losses(out: Union[STABNOutput, Tensor], labels: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """(total, perception, attention) cross-entropies, in fp32 from the logits; for a plain
    ResNet the attention term is zero. ST-ABN trains on their sum, as the original."""
    if isinstance(out, STABNOutput):
        loss_per = F.cross_entropy(out.logits.float(), labels)
        loss_att = F.cross_entropy(out.att_logits.float(), labels)
    else:
        loss_per = F.cross_entropy(out.float(), labels)
        loss_att = torch.zeros((), device=labels.device)
    return loss_per + loss_att, loss_per, loss_att
