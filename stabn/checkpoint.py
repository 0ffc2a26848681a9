"""The one place that knows the checkpoint format.

A checkpoint is the original's dict `{epoch, iteration, best_score, model_state_dict,
optimizer_state_dict, scheduler_state_dict}` plus a `config` entry that describes the model
and its preprocessing, so a file is enough to rebuild what wrote it. Files of the original
(with the `module.` prefix DataParallel adds, or bare state dicts) load too. Everything is
read with `weights_only=True`: a file that carries code is refused and the code never runs.
"""
from __future__ import annotations

import os
import pickle
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

import torch
from torch import Tensor, nn

from .data.transforms import mean_std
from .errors import CheckpointError
from .fileio import atomic_write
from .models.blocks import DEPTHS, BasicBlock, Bottleneck
from .models.registry import build_model
from .version import __version__

PathLike = Union[str, os.PathLike]

# Recipe defaults for what a bare state dict cannot tell.
DEFAULT_FRAME_LENGTH = 32
DEFAULT_FRAME_SIZE = 224

# Wrappers whose prefixes end up in saved keys: DataParallel / DDP, and torch.compile.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
_MODEL_KEYS = ("model_state_dict", "state_dict", "model")
_OVERRIDABLE = ("model", "num_classes", "frame_length", "frame_size", "width", "dropout")


def model_config(
    model: str,
    num_classes: int,
    frame_length: int,
    frame_size: int = DEFAULT_FRAME_SIZE,
    width: int = 64,
    channel_order: str = "bgr",
    mean: Optional[tuple] = None,
    std: Optional[tuple] = None,
) -> Dict[str, Any]:
    """The `config` entry: what is needed to rebuild the model and feed it."""
    default_mean, default_std = mean_std(channel_order)
    return {
        "model": model,
        "num_classes": int(num_classes),
        "frame_length": int(frame_length),
        "frame_size": int(frame_size),
        "width": int(width),
        "channel_order": channel_order,
        "mean": list(mean if mean is not None else default_mean),
        "std": list(std if std is not None else default_std),
        "version": __version__,
    }


def unwrap_model(model: nn.Module) -> nn.Module:
    """The bare model inside DataParallel / DistributedDataParallel / torch.compile."""
    while True:
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def save_checkpoint(
    path: PathLike,
    model: nn.Module,
    config: Mapping[str, Any],
    optimizer: Optional[torch.optim.Optimizer] = None,
    scheduler: Optional[Any] = None,
    epoch: int = 0,
    iteration: int = 0,
    best_score: float = 0.0,
    extra: Optional[Mapping[str, Any]] = None,
) -> None:
    """Write a checkpoint atomically: a kill mid-save leaves the previous file loadable.

    Keys carry no wrapper prefix. `extra` holds further plain entries (e.g. RNG state)."""
    state = {
        "epoch": int(epoch),
        "iteration": int(iteration),
        "best_score": float(best_score),
        "model_state_dict": unwrap_model(model).state_dict(),
        "optimizer_state_dict": optimizer.state_dict() if optimizer is not None else None,
        "scheduler_state_dict": scheduler.state_dict() if scheduler is not None else None,
        "config": dict(config),
    }
    if extra:
        state.update(extra)
    atomic_write(path, lambda f: torch.save(state, f))


def read_checkpoint(path: PathLike) -> Dict[str, Any]:
    """Load a checkpoint file onto the CPU without running any code it may carry."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL (\S+)", str(e))
        if found:  # a reference to a class or function: the file would run code if unpickled
            raise CheckpointError(
                f"{path}: refused to load: it holds objects other than tensors and plain "
                f"containers (it references {found.group(1)}); loading it could run code") from None
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (unreadable pickle data)") from None
    except Exception as e:  # torch raises many types for files that are not checkpoints
        raise CheckpointError(f"{path}: not a PyTorch checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: not a checkpoint (holds a {type(obj).__name__}, not a dict)")
    return dict(obj)


def strip_wrapper_prefixes(state_dict: Mapping[str, Tensor]) -> "OrderedDict[str, Tensor]":
    """Drop the `module.` (DataParallel/DDP) and `_orig_mod.` (torch.compile) prefixes."""
    out: "OrderedDict[str, Tensor]" = OrderedDict()
    for key, value in state_dict.items():
        while key.startswith(_WRAPPER_PREFIXES):
            key = key.split(".", 1)[1]
        out[key] = value
    return out


def extract_state_dict(obj: Mapping[str, Any], source: PathLike = "<checkpoint>") -> "OrderedDict[str, Tensor]":
    """The model weights in a loaded checkpoint: a full dict of ours or the original's, or a
    bare state dict, with wrapper prefixes removed."""
    for key in _MODEL_KEYS:
        if isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(
            f"{source}: not a model checkpoint (no {' / '.join(_MODEL_KEYS)} entry and not a "
            f"state dict of tensors)"
        )
    return strip_wrapper_prefixes(obj)


def read_state_dict(path: PathLike) -> "OrderedDict[str, Tensor]":
    """The model weights of a checkpoint or state-dict file."""
    return extract_state_dict(read_checkpoint(path), path)


def _blocks_per_layer(state_dict: Mapping[str, Tensor], layer: str) -> int:
    indices = {int(k.split(".")[1]) for k in state_dict if k.startswith(layer + ".")}
    return max(indices) + 1 if indices else 0


def infer_model_config(state_dict: Mapping[str, Tensor], source: PathLike = "<checkpoint>") -> Dict[str, Any]:
    """Architecture from the weights alone: family, depth, width, num_classes and, for
    ST-ABN, frame_length. The 3D ResNet baseline's weights do not depend on frame_length."""
    if "fc.weight" not in state_dict or "conv1.weight" not in state_dict:
        raise CheckpointError(f"{source}: not a 3D ResNet / ST-ABN state dict (no conv1.weight or fc.weight)")
    block = Bottleneck if "layer1.0.conv3.weight" in state_dict else BasicBlock
    layers = tuple(_blocks_per_layer(state_dict, f"layer{i}") for i in range(1, 5))
    depth = next((d for d, (b, n) in DEPTHS.items() if b is block and n == layers), None)
    if depth is None:
        raise CheckpointError(
            f"{source}: no known depth has {block.__name__} blocks in layers {list(layers)}"
        )
    stabn_model = "fc_att_out.weight" in state_dict
    num_classes = state_dict["fc.weight"].shape[0]
    config = {
        "model": f"abn_resnet{depth}" if stabn_model else f"resnet{depth}",
        "num_classes": num_classes,
        "width": state_dict["conv1.weight"].shape[0],
    }
    if stabn_model:
        config["frame_length"] = state_dict["fc_att_out.weight"].shape[1] // num_classes
    return config


def describe_mismatch(model: nn.Module, state_dict: Mapping[str, Tensor]) -> Optional[str]:
    """The first key at which `state_dict` does not fit `model`, in words; None if it fits."""
    expected = model.state_dict()
    for key, tensor in expected.items():
        if key not in state_dict:
            return f"key {key!r} is missing from the checkpoint"
        if state_dict[key].shape != tensor.shape:
            return (f"key {key!r} has shape {list(state_dict[key].shape)} in the checkpoint "
                    f"but {list(tensor.shape)} in the model")
    extra = next((k for k in state_dict if k not in expected), None)
    if extra is not None:
        return f"key {extra!r} in the checkpoint does not exist in the model"
    return None


def load_weights(model: nn.Module, state_dict: Mapping[str, Tensor], source: PathLike) -> None:
    """Load weights strictly; a mismatch is reported by file and first differing key."""
    target = unwrap_model(model)
    problem = describe_mismatch(target, state_dict)
    if problem is not None:
        raise CheckpointError(f"{source}: does not fit the model: {problem}")
    target.load_state_dict(state_dict)


def resolve_model_config(ckpt: Mapping[str, Any], source: PathLike = "<checkpoint>", **overrides: Any) -> Dict[str, Any]:
    """The model config of a loaded checkpoint: its own `config` entry where present, else
    inferred from the weights, then `overrides` on top, then recipe defaults."""
    unknown = sorted(set(overrides) - set(_OVERRIDABLE))
    if unknown:
        raise CheckpointError(f"unknown override(s) {unknown}; allowed: {', '.join(_OVERRIDABLE)}")
    stored = ckpt.get("config")
    if isinstance(stored, Mapping) and "model" in stored:
        config = dict(stored)
    else:
        config = model_config(**{**{"frame_length": DEFAULT_FRAME_LENGTH},
                                 **infer_model_config(extract_state_dict(ckpt, source), source)})
    config.update({k: v for k, v in overrides.items() if v is not None})
    return config


def load_pretrained(path: PathLike, **overrides: Any) -> nn.Module:
    """A ready eval-mode model from a checkpoint of this project or of the original.

    The architecture comes from the file's `config`, or is inferred from its weights;
    `overrides` (model, num_classes, frame_length, frame_size, width, dropout) win over both.
    The returned model carries that config as `model.stabn_config`."""
    ckpt = read_checkpoint(path)
    state_dict = extract_state_dict(ckpt, path)
    config = resolve_model_config(ckpt, path, **overrides)
    try:
        model = build_model(
            config["model"], config["num_classes"], config["frame_length"],
            frame_size=config.get("frame_size", DEFAULT_FRAME_SIZE),
            dropout=config.get("dropout", 0.5), width=config.get("width", 64),
        )
    except (ValueError, KeyError) as e:
        raise CheckpointError(f"{path}: cannot build its model: {e}") from None
    load_weights(model, state_dict, path)
    model.stabn_config = config
    model.eval()
    return model


__all__ = [
    "model_config", "save_checkpoint", "read_checkpoint",
    "extract_state_dict", "read_state_dict", "infer_model_config", "load_weights",
    "load_pretrained", "resolve_model_config", "unwrap_model",
]
