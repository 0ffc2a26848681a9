"""The model-randomisation sanity check of saliency maps (Adebayo et al. 2018, "Sanity Checks for
Saliency Maps"): an explainer is re-run on copies of the model whose weights are re-initialised
stage by stage from the top, and its map on each copy is compared with the map on the trained
model by Spearman's rank correlation over the clip's voxels. A map that stays the same once
the weights it depends on are gone does not explain the model.

The stages, per model kind (`SANITY_STAGES`), in the order they are randomised, each
cumulatively on top of the ones before it (cascading):

- ST-ABN: ``fc``, ``layer4`` (the perception branch), ``attention`` (every module of the
  attention branch and the fusion of its maps), ``layer3``, ``layer2``, ``layer1``, ``stem``;
- 3D ResNet: ``fc``, ``layer4``, ``layer3``, ``layer2``, ``layer1``, ``stem``.

A module is randomised by its own ``reset_parameters`` (PyTorch's default initialisation;
BatchNorm's also resets its running statistics), from a fixed seed per stage. The trained
model is never modified: the cascade runs on a deep copy.
"""

from __future__ import annotations

import copy
from typing import Callable, List, Optional, Tuple

import torch
from torch import Tensor, nn

from stabn.checkpoint import unwrap_model
from stabn.interpret.saliency import Explanation, seeded
from stabn.interpret.scoring import average_ranks
from stabn.models import is_stabn

Stage = Tuple[str, Tuple[str, ...]]  # (stage name, the model's submodules it randomises)

_STEM: Stage = ("stem", ("conv1", "bn1"))
_LOWER: Tuple[Stage, ...] = (("layer2", ("layer2",)), ("layer1", ("layer1",)), _STEM)
# Every module of the attention branch any of its variants builds; those a model lacks are skipped.
_ATTENTION_BRANCH = (
    "layer_att_common", "conv_att_common", "conv_att_out", "fc_att_out", "conv_spatial_att", "conv_temp_att1",
    "conv_temp_att2", "conv_temp_att3", "temp_att_frame", "temp_att_class", "conv_att_mechanism",
)  # fmt: skip
SANITY_STAGES = {
    "stabn": (("fc", ("fc",)), ("layer4", ("layer4",)), ("attention", _ATTENTION_BRANCH), ("layer3", ("layer3",)))
    + _LOWER,
    "resnet": (("fc", ("fc",)), ("layer4", ("layer4",)), ("layer3", ("layer3",))) + _LOWER,
}

# (model, clip, target) -> the explainer's (volume, profile)
Explain = Callable[[nn.Module, Tensor, int], Explanation]


def spearman(a: Tensor, b: Tensor) -> Optional[float]:
    """Spearman's rank correlation of two volumes over their voxels: Pearson's correlation of
    their average ranks (ties share the mean rank); None where either is constant."""
    ra, rb = average_ranks(a.detach().cpu()), average_ranks(b.detach().cpu())
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = float(((ra * ra).sum() * (rb * rb).sum()).sqrt())
    return float((ra * rb).sum()) / denominator if denominator > 0 else None


def model_stages(model: nn.Module) -> List[Stage]:
    """`SANITY_STAGES` of the model's kind, each with only the submodules the model has."""
    net = unwrap_model(model)
    stages = SANITY_STAGES["stabn" if is_stabn(model) else "resnet"]
    present = [(name, tuple(m for m in modules if hasattr(net, m))) for name, modules in stages]
    return [(name, modules) for name, modules in present if modules]


def randomise(module: nn.Module) -> None:
    """Re-initialise every parameter (and BatchNorm statistic) of `module`, in place."""
    for m in module.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()


def cascading_correlations(
    explain: Explain, model: nn.Module, clip: Tensor, target: int, original: Tensor, *, seed: int
) -> List[Tuple[str, Optional[float]]]:
    """(stage, `spearman` of `original`, the map on the trained model, with `explain`'s map of
    the same clip and class on a copy of `model` randomised up to that stage) for each of
    `model_stages`, the stage randomised from ``seed + its position``."""
    randomised = copy.deepcopy(model).eval()
    net = unwrap_model(randomised)
    device = next(randomised.parameters()).device
    correlations = []
    for position, (name, modules) in enumerate(model_stages(model)):
        with seeded(seed + position, device), torch.no_grad():
            for module in modules:
                randomise(net.get_submodule(module))
        volume, _ = explain(randomised, clip, target)
        correlations.append((name, spearman(original, volume.detach().float())))
    return correlations
