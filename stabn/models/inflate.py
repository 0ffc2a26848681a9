"""2D -> 3D inflation of ImageNet ResNet weights (after I3D).

Every Conv3d / BatchNorm3d whose parameter names exist in a torchvision ResNet state dict
takes those values; a 2D kernel is repeated k_t times along time and divided by k_t, so a
clip of identical frames gives the 2D network's activations.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Tuple, Union

import torch
from torch import Tensor, nn

from ..checkpoint import read_state_dict


@dataclass
class InflationReport:
    """Which 3D tensors were taken from the 2D file and which kept their initialisation."""

    taken: List[str] = field(default_factory=list)
    left: List[str] = field(default_factory=list)  # no 2D counterpart (attention branch, fc, ...)
    mismatched: List[Tuple[str, tuple, tuple]] = field(default_factory=list)  # name, 3D, 2D shape

    def summary(self) -> str:
        text = f"inflated {len(self.taken)} tensors from 2D weights; {len(self.left)} kept their initialisation"
        if self.mismatched:
            names = ", ".join(name for name, _, _ in self.mismatched[:3])
            text += f"; {len(self.mismatched)} skipped for shape mismatch ({names}, ...)"
        return text


def inflate_tensor(weight_3d: Tensor, weight_2d: Tensor) -> Tensor:
    """A 2D conv kernel [O, I, kh, kw] spread over the 3D kernel's time length, or a 1D
    BatchNorm tensor as it is; raises ValueError when the shapes cannot correspond."""
    if weight_3d.dim() == 5 and weight_2d.dim() == 4:
        if weight_3d.shape[:2] + weight_3d.shape[3:] != weight_2d.shape:
            raise ValueError
        kt = weight_3d.shape[2]
        return weight_2d.unsqueeze(2).repeat(1, 1, kt, 1, 1) / kt
    if weight_3d.shape != weight_2d.shape:
        raise ValueError
    return weight_2d


def inflate_2d_weights(model: nn.Module, source: Union[str, os.PathLike, Mapping[str, Tensor]]) -> InflationReport:
    """Fill `model`'s convolutions and batch norms from a torchvision 2D ResNet state dict
    (a mapping, or the path of a file saved with `torch.save(resnet.state_dict(), path)`)."""
    if isinstance(source, Mapping):
        state_2d: Mapping[str, Tensor] = source
    else:
        state_2d = read_state_dict(source)
    report = InflationReport()
    new_state: Dict[str, Tensor] = {}
    inflatable = {
        f"{prefix}.{name}" if prefix else name
        for prefix, module in model.named_modules()
        if isinstance(module, (nn.Conv3d, nn.BatchNorm3d))
        for name, _ in module.state_dict().items()
    }
    for name, tensor in model.state_dict().items():
        if name not in inflatable or name not in state_2d or name.endswith("num_batches_tracked"):
            report.left.append(name)
            continue
        try:
            new_state[name] = inflate_tensor(tensor, state_2d[name]).to(tensor.dtype)
        except ValueError:
            report.mismatched.append((name, tuple(tensor.shape), tuple(state_2d[name].shape)))
            continue
        report.taken.append(name)
    with torch.no_grad():
        model.load_state_dict(new_state, strict=False)
    return report
