"""The one place that knows the checkpoint format.

A checkpoint is the original's dict `{epoch, iteration, best_score, model_state_dict,
optimizer_state_dict, scheduler_state_dict}` plus a `model_spec` entry that describes the
model, its input and its classes (`stabn.models.ModelSpec.to_dict()`), so a file is enough to
rebuild what wrote it. Files of the original (with the `module.` prefix DataParallel adds, or
bare state dicts) and of earlier versions (a `config` entry instead of `model_spec`) load too.
Everything is read with `weights_only=True`: a file that carries code is refused and the code
never runs. A file cut short, or whose data no longer matches the checksums torch.save wrote
into its archive (bit rot, a partial copy), is refused as damaged. Rebuilding a model out of a
file is `stabn.models.load_pretrained`'s work.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch
from torch import Tensor, nn

from stabn.errors import CheckpointError, DamagedCheckpoint, PathLike
from stabn.fileio import atomic_write
from stabn.torch_compat import compiled_inner
from stabn.version import __version__

# Wrappers whose prefixes end up in saved keys: DataParallel / DDP, and torch.compile.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
_MODEL_KEYS = ("model_state_dict", "state_dict", "model")
# A run folder's checkpoints: after the epoch of the best validation score, after the last
# epoch, after the newest epoch (or stop) of the run.
BEST_CHECKPOINT = "checkpoint-best.pt"
FINAL_CHECKPOINT = "checkpoint-final.pt"
LATEST_CHECKPOINT = "checkpoint-latest.pt"
# The words `eval.checkpoint` takes for them.
_NAMED_CHECKPOINTS = {"best": BEST_CHECKPOINT, "latest": LATEST_CHECKPOINT, "final": FINAL_CHECKPOINT}
# In the order a folder given for a file suggests them.
_RUN_CHECKPOINTS = (BEST_CHECKPOINT, FINAL_CHECKPOINT, LATEST_CHECKPOINT)
# checkpoint-0010.pt: the state after that many epochs (`numbered_checkpoint`).
_NUMBERED = re.compile(r"checkpoint-(\d+)\.pt")
# The first bytes of a zip archive, which torch.save has written since PyTorch 1.6.
_ZIP_MAGIC = b"PK\x03\x04"
SPEC_KEY = "model_spec"
# Earlier versions stored the spec as `config`, its name under `model`.
_LEGACY_SPEC_KEY, _LEGACY_NAME_KEY = "config", "model"


def unwrap_model(model: nn.Module) -> nn.Module:
    """The bare model inside DataParallel / DistributedDataParallel / torch.compile."""
    while True:
        if isinstance(model, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            model = model.module
        elif compiled_inner(model) is not None:
            model = compiled_inner(model)
        else:
            return model


def numbered_checkpoint(epoch: int) -> str:
    """The name of a run folder's checkpoint of the state after `epoch` epochs."""
    return f"checkpoint-{epoch:04d}.pt"


def run_checkpoint(run: PathLike, name: str) -> Path:
    """The file an `eval.checkpoint` value means: `best`, `latest` or `final` the run folder
    `run`'s checkpoint of that kind, anything else a path of its own."""
    return Path(run) / _NAMED_CHECKPOINTS[name] if name in _NAMED_CHECKPOINTS else Path(name)


def save_checkpoint(
    path: PathLike,
    model: nn.Module,
    spec: Mapping[str, Any],
    optimizer: Optional[torch.optim.Optimizer] = None,
    scheduler: Optional[Any] = None,
    epoch: int = 0,
    iteration: int = 0,
    best_score: float = 0.0,
    extra: Optional[Mapping[str, Any]] = None,
) -> None:
    """Write a checkpoint atomically: a kill mid-save leaves the previous file loadable.

    `spec` is the model's `ModelSpec.to_dict()`. Keys carry no wrapper prefix. `extra` holds
    further plain entries (e.g. RNG state)."""
    state = {
        "epoch": int(epoch),
        "iteration": int(iteration),
        "best_score": float(best_score),
        "model_state_dict": unwrap_model(model).state_dict(),
        "optimizer_state_dict": optimizer.state_dict() if optimizer is not None else None,
        "scheduler_state_dict": scheduler.state_dict() if scheduler is not None else None,
        SPEC_KEY: dict(spec),
        "stabn_version": __version__,
    }
    if extra:
        state.update(extra)
    atomic_write(path, lambda f: torch.save(state, f))


def read_checkpoint(path: PathLike) -> Dict[str, Any]:
    """Load a checkpoint file onto the CPU without running any code it may carry."""
    path = Path(path)
    if path.is_dir():
        found = [path / name for name in _RUN_CHECKPOINTS if (path / name).is_file()] or sorted(path.glob("*.pt"))
        hint = f"pass one of its checkpoints, e.g. {found[0]}" if found else "it holds no .pt file"
        raise CheckpointError(f"{path} is a folder, not a checkpoint file: {hint}")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    _check_archive(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL (\S+)", str(e))
        if found:  # a reference to a class or function: the file would run code if unpickled
            raise CheckpointError(
                f"{path}: refused to load: it holds objects other than tensors and plain "
                f"containers (it references {found.group(1)}); loading it could run code"
            ) from None
        raise DamagedCheckpoint(f"{path}: not a PyTorch checkpoint (unreadable pickle data)") from None
    except Exception as e:  # torch raises many types for files that are not checkpoints
        raise DamagedCheckpoint(f"{path}: not a PyTorch checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: not a checkpoint (holds a {type(obj).__name__}, not a dict)")
    return dict(obj)


def _check_archive(path: Path) -> None:
    """Refuse a zip archive cut short, or one whose records no longer match the CRC-32 torch.save
    wrote for them: torch.load reads such a record without a word, and the weights are wrong.
    Records written without a checksum (torch.serialization.set_crc32_options(False)) hold 0."""
    with open(path, "rb") as f:
        if f.read(len(_ZIP_MAGIC)) != _ZIP_MAGIC:
            return  # the format before PyTorch 1.6, or no checkpoint at all: torch.load says which
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise DamagedCheckpoint(f"{path}: cut short: its archive has no end ({path.stat().st_size} bytes)") from None
    with archive:
        for record in archive.infolist():
            if not record.CRC:
                continue
            try:
                with archive.open(record) as data:  # the CRC-32 is compared at the end
                    while data.read(1 << 22):
                        pass
            except zipfile.BadZipFile as e:
                problem = "does not match its CRC-32" if str(e).startswith("Bad CRC-32") else f"is unreadable ({e})"
                raise DamagedCheckpoint(f"{path}: damaged: record {record.filename} {problem}") from None
            except (EOFError, OSError) as e:
                raise DamagedCheckpoint(f"{path}: damaged: record {record.filename} is unreadable ({e})") from None


def newest_intact_checkpoint(path: PathLike) -> Optional[Tuple[Path, Dict[str, Any]]]:
    """The newest checkpoint of `path`'s run folder that reads, `path` itself aside: by the
    (epoch, iteration) stored in checkpoint-final.pt, checkpoint-best.pt and the newest
    checkpoint-NNNN.pt that reads (NNNN counts epochs, so older ones are never newer); at equal
    steps the one written last in an epoch (final, then NNNN, then best). None if none reads."""
    path = Path(path)
    folder = path.parent
    numbered = sorted(
        (p for p in folder.glob("checkpoint-*.pt") if _NUMBERED.fullmatch(p.name)),
        key=lambda p: int(_NUMBERED.fullmatch(p.name).group(1)),
        reverse=True,
    )
    found: List[Tuple[Tuple[int, int, int], Path, Dict[str, Any]]] = []
    for order, candidates in ((2, [folder / FINAL_CHECKPOINT]), (1, numbered), (0, [folder / BEST_CHECKPOINT])):
        for candidate in candidates:
            if candidate == path or not candidate.is_file():
                continue
            try:
                ckpt = read_checkpoint(candidate)
            except CheckpointError:
                continue
            found.append(((int(ckpt.get("epoch", 0)), int(ckpt.get("iteration", 0)), order), candidate, ckpt))
            break
    if not found:
        return None
    _, best_path, ckpt = max(found, key=lambda item: item[0])
    return best_path, ckpt


def strip_wrapper_prefixes(state_dict: Mapping[str, Tensor]) -> OrderedDict[str, Tensor]:
    """Drop the `module.` (DataParallel/DDP) and `_orig_mod.` (torch.compile) prefixes."""
    out: OrderedDict[str, Tensor] = OrderedDict()
    for key, value in state_dict.items():
        while key.startswith(_WRAPPER_PREFIXES):
            key = key.split(".", 1)[1]
        out[key] = value
    return out


def extract_state_dict(obj: Mapping[str, Any], source: PathLike = "<checkpoint>") -> OrderedDict[str, Tensor]:
    """The model weights in a loaded checkpoint: a full dict of ours or the original's, or a
    bare state dict, with wrapper prefixes removed."""
    for key in _MODEL_KEYS:
        if isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    if not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(
            f"{source}: not a model checkpoint (no {' / '.join(_MODEL_KEYS)} entry and not a state dict of tensors)"
        )
    return strip_wrapper_prefixes(obj)


def read_state_dict(path: PathLike) -> OrderedDict[str, Tensor]:
    """The model weights of a checkpoint or state-dict file."""
    return extract_state_dict(read_checkpoint(path), path)


def stored_spec(ckpt: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
    """The model spec a loaded checkpoint carries, as a dict with the field names of
    `ModelSpec`; None for files without one (the original's)."""
    spec = ckpt.get(SPEC_KEY)
    if isinstance(spec, Mapping) and "name" in spec:
        return dict(spec)
    legacy = ckpt.get(_LEGACY_SPEC_KEY)
    if isinstance(legacy, Mapping) and _LEGACY_NAME_KEY in legacy:
        spec = {k: v for k, v in legacy.items() if k != _LEGACY_NAME_KEY}
        spec["name"] = legacy[_LEGACY_NAME_KEY]
        return spec
    return None


def describe_mismatch(model: nn.Module, state_dict: Mapping[str, Tensor]) -> Optional[str]:
    """The first key at which `state_dict` does not fit `model`, in words; None if it fits."""
    expected = model.state_dict()
    for key, tensor in expected.items():
        if key not in state_dict:
            return f"key {key!r} is missing from the checkpoint"
        if state_dict[key].shape != tensor.shape:
            return (
                f"key {key!r} has shape {list(state_dict[key].shape)} in the checkpoint "
                f"but {list(tensor.shape)} in the model"
            )
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


__all__ = [
    "BEST_CHECKPOINT",
    "FINAL_CHECKPOINT",
    "LATEST_CHECKPOINT",
    "numbered_checkpoint",
    "run_checkpoint",
    "save_checkpoint",
    "read_checkpoint",
    "newest_intact_checkpoint",
    "extract_state_dict",
    "read_state_dict",
    "stored_spec",
    "strip_wrapper_prefixes",
    "describe_mismatch",
    "load_weights",
    "unwrap_model",
]
