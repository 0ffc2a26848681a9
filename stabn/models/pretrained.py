"""A ready model out of a checkpoint file or URL: its spec read from the file or inferred from
the weights, the model built and the weights loaded; and torch.hub's entries (`hubconf.py`)."""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Union

from torch import Tensor, nn

from stabn.checkpoint import extract_state_dict, load_weights, read_checkpoint, stored_spec
from stabn.download import fetch, is_url
from stabn.errors import CheckpointError, PathLike
from stabn.models.blocks import DEPTHS, BasicBlock, Bottleneck
from stabn.models.registry import build_model
from stabn.models.spec import DEFAULT_FRAME_LENGTH, DEFAULT_FRAME_SIZE, ModelSpec

# What `load_pretrained` lets a caller say; `model` is the spec's `name`.
_OVERRIDABLE = (
    "model",
    "num_classes",
    "frame_length",
    "frame_size",
    "width",
    "dropout",
    "channel_order",
    "class_names",
    "short_side",
    "attention",
)
# What a torch.hub entry without weights builds: the SSv2 recipe's classes and clip.
HUB_DEFAULTS = {"num_classes": 174, "frame_length": DEFAULT_FRAME_LENGTH, "frame_size": DEFAULT_FRAME_SIZE}


def _blocks_per_layer(state_dict: Mapping[str, Tensor], layer: str) -> int:
    indices = {int(k.split(".")[1]) for k in state_dict if k.startswith(layer + ".")}
    return max(indices) + 1 if indices else 0


def infer_architecture(state_dict: Mapping[str, Tensor], source: PathLike = "<checkpoint>") -> Dict[str, Any]:
    """Architecture from the weights alone: `name` (family and depth), width, num_classes and,
    for ST-ABN, frame_length. The 3D ResNet baseline's weights do not depend on frame_length."""
    if "fc.weight" not in state_dict or "conv1.weight" not in state_dict:
        raise CheckpointError(f"{source}: not a 3D ResNet / ST-ABN state dict (no conv1.weight or fc.weight)")
    block = Bottleneck if "layer1.0.conv3.weight" in state_dict else BasicBlock
    layers = tuple(_blocks_per_layer(state_dict, f"layer{i}") for i in range(1, 5))
    depth = next((d for d, (b, n) in DEPTHS.items() if b is block and n == layers), None)
    if depth is None:
        raise CheckpointError(f"{source}: no known depth has {block.__name__} blocks in layers {list(layers)}")
    stabn_model = "fc_att_out.weight" in state_dict
    num_classes = state_dict["fc.weight"].shape[0]
    arch = {
        "name": f"abn_resnet{depth}" if stabn_model else f"resnet{depth}",
        "num_classes": num_classes,
        "width": state_dict["conv1.weight"].shape[0],
    }
    if stabn_model:
        arch["frame_length"] = state_dict["fc_att_out.weight"].shape[1] // num_classes
        # The product fusion halves conv_att_mechanism's input and the frame temporal head has
        # modules of its own; the gate and the norm leave no trace in the weights.
        attention = {}
        if state_dict["conv_att_mechanism.0.weight"].shape[1] == state_dict["conv_att_mechanism.0.weight"].shape[0]:
            attention["fusion"] = "product"
        for source in ("frame", "class"):
            if f"temp_att_{source}.0.weight" in state_dict:
                attention["temporal"] = source
        if attention:
            arch["attention"] = attention
    return arch


def resolve_spec(ckpt: Mapping[str, Any], source: PathLike = "<checkpoint>", **overrides: Any) -> ModelSpec:
    """The spec of a loaded checkpoint: the one it stores where present, else inferred from
    its weights (recipe defaults for the rest), then `overrides` on top."""
    unknown = sorted(set(overrides) - set(_OVERRIDABLE))
    if unknown:
        raise CheckpointError(f"unknown override(s) {unknown}; allowed: {', '.join(_OVERRIDABLE)}")
    values = stored_spec(ckpt) or infer_architecture(extract_state_dict(ckpt, source), source)
    given = {("name" if k == "model" else k): v for k, v in overrides.items() if v is not None and k != "dropout"}
    if "num_classes" in given and given["num_classes"] != values.get("num_classes"):
        values.pop("class_names", None)  # names of other classes
    try:
        return ModelSpec.from_dict({**values, **given})
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{source}: bad model spec: {e}") from None


def _local(path: Union[PathLike, str], sha256: Optional[str], progress: bool) -> PathLike:
    if is_url(path):
        return fetch(path, sha256=sha256, progress=progress)
    if sha256 is not None:
        raise CheckpointError(f"sha256 applies to a checkpoint named by URL, not to the file {path}")
    return path


def load_pretrained(
    path: Union[PathLike, str], *, sha256: Optional[str] = None, progress: bool = True, **overrides: Any
) -> nn.Module:
    """A ready eval-mode model from a checkpoint of this project or of the original: a file,
    or an http(s) URL downloaded once into torch's hub cache (`stabn.download`), checked
    against `sha256` or the hash its file name carries.

    The architecture comes from the file's model spec, or is inferred from its weights;
    `overrides` (the names in `_OVERRIDABLE`) win over both. The model's `spec` says how to
    feed it and names its classes."""
    path = _local(path, sha256, progress)
    ckpt = read_checkpoint(path)
    return _build_loaded(ckpt, path, resolve_spec(ckpt, path, **overrides), overrides.get("dropout"))


def _build_loaded(ckpt: Mapping[str, Any], path: PathLike, spec: ModelSpec, dropout: Optional[float]) -> nn.Module:
    try:
        model = build_model(
            spec.name,
            num_classes=spec.num_classes,
            frame_length=spec.frame_length,
            frame_size=spec.frame_size,
            dropout=0.5 if dropout is None else dropout,
            width=spec.width,
            attention=spec.attention,
        )
    except (ValueError, KeyError) as e:
        raise CheckpointError(f"{path}: cannot build its model: {e}") from None
    load_weights(model, extract_state_dict(ckpt, path), path)
    model.spec = spec
    model.eval()
    return model


def hub_model(
    name: str, weights: Union[PathLike, str, None] = None, *, sha256: Optional[str] = None, **kwargs: Any
) -> nn.Module:
    """What `torch.hub.load(repo, name, weights=...)` returns. Without weights, `build_model`
    with `kwargs` over `HUB_DEFAULTS`. With weights (a file or URL, as `load_pretrained`
    takes), a ready eval-mode model whose spec comes from the checkpoint where `kwargs` leave
    it out; the weights must be of architecture `name`."""
    if weights is None:
        return build_model(name, **{**HUB_DEFAULTS, **kwargs})
    if "model" in kwargs:
        raise CheckpointError(f"the entry names the model ({name}): leave out model={kwargs['model']!r}")
    path = _local(weights, sha256, kwargs.pop("progress", True))
    ckpt = read_checkpoint(path)
    stored = resolve_spec(ckpt, path)
    if stored.name != name:
        raise CheckpointError(
            f"{weights}: holds {stored.name} weights, not {name}: load it with the {stored.name} entry"
        )
    return _build_loaded(ckpt, path, resolve_spec(ckpt, path, **kwargs), kwargs.get("dropout"))
