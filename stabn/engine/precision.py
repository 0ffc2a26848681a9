"""How the model runs on a device, decided in one place for training, evaluation and the
benchmark: autocast precision, the channels_last_3d layout, cuDNN tuning.

The figures behind the defaults are in docs/PERFORMANCE.md.
"""

from __future__ import annotations

import contextlib
from typing import ContextManager, Dict, Iterator, Optional

import torch
from torch import Tensor, nn

from stabn.models import to_channels_last_3d

AMP_DTYPES: Dict[str, Optional[torch.dtype]] = {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}


def amp_dtype(setting: str, device: torch.device) -> Optional[torch.dtype]:
    """`auto` means bf16 on a GPU and full precision on the CPU, where bf16 autocast is many
    times slower (no bf16 instructions on common CPUs; docs/PERFORMANCE.md)."""
    if setting == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    return AMP_DTYPES[setting]


def amp_name(dtype: Optional[torch.dtype]) -> str:
    return next(name for name, d in AMP_DTYPES.items() if d == dtype)


def use_channels_last(setting: Optional[bool], device: torch.device) -> bool:
    """`None` means on a GPU only: cuDNN's tensor-core convolutions work in NDHWC. On the CPU
    it sped small widths up but slowed full-width ResNet-18 training down, so the CPU keeps
    the original's NCDHW unless asked."""
    return device.type == "cuda" if setting is None else setting


def autocast(device: torch.device, dtype: Optional[torch.dtype]) -> ContextManager:
    """Mixed-precision context for `dtype` (None: full precision)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@contextlib.contextmanager
def exact_fp32() -> Iterator[None]:
    """Full fp32 on a GPU inside the block: cuDNN convolutions and matmuls without TF32, which
    PyTorch allows for convolutions by default; the original's figures are fp32."""
    previous = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = previous


def prepare_model(model: nn.Module, device: torch.device, channels_last: bool) -> nn.Module:
    """`model` on `device`, in the layout the clips will come in; cuDNN autotuning on, since
    clip shapes stay fixed for a whole run."""
    model.to(device)
    if channels_last:
        to_channels_last_3d(model)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return model


def clips_layout(clips: Tensor, channels_last: bool) -> Tensor:
    return clips.contiguous(memory_format=torch.channels_last_3d) if channels_last else clips
