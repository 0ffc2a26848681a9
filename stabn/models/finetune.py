"""Fine-tuning: a run's model started from another run's checkpoint (`model.init_from`), the
layers whose shapes depend on the class count re-initialised, and the backbone frozen up to a
stage (`train.freeze`)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Dict, List, Sequence, Tuple

import torch
from torch import nn

from stabn.checkpoint import describe_mismatch, extract_state_dict, read_checkpoint
from stabn.config.schema import FREEZE_POINTS
from stabn.errors import CheckpointError, ConfigError, PathLike
from stabn.models.pretrained import infer_architecture
from stabn.models.registry import build_model
from stabn.models.spec import model_spec

_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
# The backbone's stages in the order of the forward pass; train.freeze names the last one frozen.
_STAGES = {"stem": ("conv1", "bn1"), "layer1": ("layer1",), "layer2": ("layer2",), "layer3": ("layer3",),
           "layer4": ("layer4",)}  # fmt: skip


def _owner(key: str) -> str:
    """The module a state-dict key belongs to: `conv_att_common.2` for `conv_att_common.2.bias`."""
    return key.rpartition(".")[0]


def class_layers(model: nn.Module) -> Tuple[str, ...]:
    """The modules of `model` (built by `build_model`) whose tensors' shapes depend on the class
    count, and the norms right after them in a `Sequential`, whose statistics describe those
    layers' outputs; in the model's order. Found by building the same architecture for another
    class count on the meta device, so every model and attention option has its own."""
    spec = model_spec(model)
    with torch.device("meta"):
        other = build_model(spec.name, num_classes=spec.num_classes + 1, frame_length=spec.frame_length,
                            frame_size=spec.frame_size, width=spec.width, attention=spec.attention)  # fmt: skip
    shapes = {key: tensor.shape for key, tensor in other.state_dict().items()}
    found = {_owner(key) for key, tensor in model.state_dict().items() if shapes.get(key) != tensor.shape}
    for prefix, module in model.named_modules():
        if isinstance(module, nn.Sequential):
            children = list(module.named_children())
            for (before, _), (name, child) in zip(children, children[1:]):
                if f"{prefix}.{before}".lstrip(".") in found and isinstance(child, _NORMS):
                    found.add(f"{prefix}.{name}".lstrip("."))
    return tuple(name for name, _ in model.named_modules() if name in found)


@dataclass
class InitReport:
    """What `init_from_checkpoint` did: the model's tensors loaded, and those left as
    initialised because the checkpoint has `source_classes` classes, not `num_classes`."""

    source: str
    kept: List[str]
    reset: List[str]
    reset_modules: Tuple[str, ...]
    num_classes: int
    source_classes: int

    def summary(self) -> str:
        total = len(self.kept) + len(self.reset)
        if not self.reset:
            return f"model.init_from {self.source}: loaded all {total} tensors ({self.num_classes} classes there too)"
        return (
            f"model.init_from {self.source}: kept {len(self.kept)} of {total} tensors; reset {len(self.reset)} "
            f"for {self.num_classes} classes (was {self.source_classes}): {_module_list(self.reset_modules)}"
        )


def _module_list(names: Sequence[str]) -> str:
    """Module names grouped by their top-level module: `fc, conv_att_common.{1,2}, conv_att_out`."""
    parts: Dict[str, List[str]] = defaultdict(list)
    for name in names:
        top, _, rest = name.partition(".")
        parts[top].append(rest)
    return ", ".join(
        top if rests == [""] else f"{top}.{rests[0]}" if len(rests) == 1 else f"{top}.{{{','.join(rests)}}}"
        for top, rests in parts.items()
    )


def _architecture(state_dict: Dict[str, torch.Tensor]) -> str:
    """What a checkpoint holds, in words, for an error; empty where the weights do not say."""
    try:
        arch = infer_architecture(state_dict)
    except CheckpointError:
        return ""
    return f" (it holds {arch['name']} of width {arch['width']} with {arch['num_classes']} classes)"


def init_from_checkpoint(model: nn.Module, path: PathLike) -> InitReport:
    """Load the weights of the checkpoint `path` (this project's or the original's) into
    `model`, built by `build_model`. Where the checkpoint has another class count, the
    `class_layers` keep their initial weights; every other tensor must fit: a checkpoint of
    another architecture (depth, width, family, attention option) is a ConfigError naming the
    file and the first tensor that does not fit."""
    try:
        source = extract_state_dict(read_checkpoint(path), path)
    except CheckpointError as e:
        raise ConfigError(f"model.init_from {e}") from None
    target = model.state_dict()
    num_classes = model_spec(model).num_classes
    fc = source.get("fc.weight")
    source_classes = fc.shape[0] if fc is not None else num_classes
    head = class_layers(model) if source_classes != num_classes else ()
    reset = [key for key in target if _owner(key) in head]
    kept = [key for key in target if _owner(key) not in head]
    candidate = {**source, **{key: target[key] for key in reset}}
    problem = describe_mismatch(model, candidate)
    if problem is not None:
        raise ConfigError(f"model.init_from {path}: does not fit {model_spec(model).name}: {problem}"
                          f"{_architecture(source)}")  # fmt: skip
    model.load_state_dict(candidate)
    return InitReport(
        source=str(path),
        kept=kept,
        reset=reset,
        reset_modules=head,
        num_classes=num_classes,
        source_classes=source_classes,
    )


class EvalBatchNorm3d(nn.BatchNorm3d):
    """A BatchNorm3d that stays in eval mode whatever `train()` asks: it normalises with its
    running statistics and never updates them. Its state dict is a BatchNorm3d's."""

    def train(self, mode: bool = True) -> EvalBatchNorm3d:
        return super().train(False)


def frozen_modules(point: str) -> Tuple[str, ...]:
    """The top-level modules `train.freeze` = `point` (one of FREEZE_POINTS) freezes."""
    if point not in FREEZE_POINTS:
        raise ValueError(f"freeze must be one of {', '.join(FREEZE_POINTS)}, got {point!r}")
    if point == "none":
        return ()
    stages = list(_STAGES)
    count = len(stages) if point == "backbone" else stages.index(point) + 1
    return tuple(name for stage in stages[:count] for name in _STAGES[stage])


def _eval_norm(norm: nn.Module) -> EvalBatchNorm3d:
    frozen = EvalBatchNorm3d(norm.num_features, norm.eps, norm.momentum, norm.affine, norm.track_running_stats,
                             device=norm.running_mean.device)  # fmt: skip
    frozen.load_state_dict(norm.state_dict())
    return frozen.requires_grad_(False).eval()


def _freeze_norms(parent: nn.Module, name: str) -> None:
    """The BatchNorms of `parent.name` (itself included) replaced by `EvalBatchNorm3d` copies."""
    module = getattr(parent, name)
    if isinstance(module, (nn.BatchNorm3d, nn.SyncBatchNorm)):
        setattr(parent, name, _eval_norm(module))
        return
    for child, _ in list(module.named_children()):
        _freeze_norms(module, child)


def freeze_backbone(model: nn.Module, point: str) -> Tuple[str, ...]:
    """Freeze `model`'s backbone up to and including the stage `point` names (`frozen_modules`):
    no gradients for its parameters, its BatchNorms in eval mode for good. Run it after any
    SyncBatchNorm conversion, which would make them train again; returns the modules frozen."""
    names = frozen_modules(point)
    for name in names:
        getattr(model, name).requires_grad_(False)
        _freeze_norms(model, name)
    return names
