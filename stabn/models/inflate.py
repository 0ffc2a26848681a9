"""2D -> 3D inflation of ImageNet ResNet weights (after I3D).

Every Conv3d / BatchNorm3d whose parameter names exist in a torchvision ResNet state dict
takes those values; a 2D kernel is repeated k_t times along time and divided by k_t, so a
clip of identical frames gives the 2D network's activations.

The ImageNet weights are torchvision's `IMAGENET1K_V1` files, the original's `model_urls`
re-saved by torchvision in the newer serialization format; they are fetched the way
torchvision fetches them, into its cache (`$TORCH_HOME/hub/checkpoints`), once.
"""

from __future__ import annotations

import os
import re
import urllib.error
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Tuple, Union

import torch
from torch import Tensor, nn

from stabn.checkpoint import read_state_dict
from stabn.errors import CheckpointError

# `pretrained_2d` value that means torchvision's ImageNet weights of the backbone's depth.
IMAGENET = "imagenet"
# The layers every model here shares, by name, with a torchvision ResNet: what a 2D file fills.
_BACKBONE = re.compile(r"(conv1|bn1|layer[1-4])\.")


@dataclass
class InflationReport:
    """Which 3D tensors were taken from the 2D file and which kept their initialisation."""

    taken: List[str] = field(default_factory=list)
    left: List[str] = field(default_factory=list)  # no 2D counterpart (attention branch, fc, ...)
    mismatched: List[Tuple[str, tuple, tuple]] = field(default_factory=list)  # name, 3D, 2D shape
    backbone: int = 0  # tensors of the backbone (`conv1`, `bn1`, `layer1-4`), which the file should fill
    # The first backbone tensor that the file lacks or whose shape does not fit, in words.
    misfit: Optional[str] = None

    def summary(self) -> str:
        text = f"inflated {len(self.taken)} tensors from 2D weights; {len(self.left)} kept their initialisation"
        if self.mismatched:
            names = ", ".join(name for name, _, _ in self.mismatched[:3])
            text += f"; {len(self.mismatched)} skipped for shape mismatch ({names}, ...)"
        return text


def imagenet_weights_file(depth: int) -> Path:
    """Where torchvision keeps (or will keep) its IMAGENET1K_V1 ResNet-`depth` file."""
    from torchvision.models import get_model_weights

    url = get_model_weights(f"resnet{depth}").IMAGENET1K_V1.url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def imagenet_state_dict(depth: int) -> Dict[str, Tensor]:
    """torchvision's IMAGENET1K_V1 weights of the 2D ResNet-`depth`, through its weights API:
    read from its cache, downloaded there first where the file is missing."""
    from torchvision.models import get_model_weights

    weights = get_model_weights(f"resnet{depth}").IMAGENET1K_V1
    path = imagenet_weights_file(depth)
    try:
        return weights.get_state_dict(progress=False, weights_only=True)
    except (urllib.error.URLError, OSError) as e:
        if path.is_file():
            raise CheckpointError(f"{path}: cannot read torchvision's ImageNet weights ({e})") from None
        reason = getattr(e, "reason", None) or e
        raise CheckpointError(
            f"ImageNet weights {path.name} are not in torchvision's cache {path.parent} and could not be "
            f"downloaded ({reason}): put the file from {weights.url} there, or give model.pretrained_2d "
            f"a local file"
        ) from None
    except Exception as e:  # a file in the cache that is not a checkpoint
        raise CheckpointError(f"{path}: not a readable ImageNet weights file ({type(e).__name__}: {e})") from None


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
        in_backbone = name in inflatable and _BACKBONE.match(name) and not name.endswith("num_batches_tracked")
        report.backbone += bool(in_backbone)
        if name not in inflatable or name not in state_2d or name.endswith("num_batches_tracked"):
            if in_backbone and report.misfit is None:
                report.misfit = f"key {name!r} is missing from the file"
            report.left.append(name)
            continue
        try:
            new_state[name] = inflate_tensor(tensor, state_2d[name]).to(tensor.dtype)
        except ValueError:
            report.mismatched.append((name, tuple(tensor.shape), tuple(state_2d[name].shape)))
            if in_backbone and report.misfit is None:
                report.misfit = (
                    f"key {name!r} has shape {list(state_2d[name].shape)} in the file, which does not fit "
                    f"{list(tensor.shape)} in the model"
                )
            continue
        report.taken.append(name)
    with torch.no_grad():
        model.load_state_dict(new_state, strict=False)
    return report
