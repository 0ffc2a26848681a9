"""What a model is and how to feed it, declared once and carried with the model and its
checkpoints (in the spirit of timm's `pretrained_cfg` and torchvision's weights `meta`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from stabn.checkpoint import unwrap_model
from stabn.config.schema import STABN_NAMES, AttentionOptions
from stabn.data.jitter import JitterConfig
from stabn.data.transforms import denormalize, mean_std, normalize_batch

# Recipe defaults for what a bare state dict cannot tell.
DEFAULT_FRAME_LENGTH = 32
DEFAULT_FRAME_SIZE = 224


@dataclass(repr=False)
class ModelSpec:
    """A model's architecture, its input (clip length and size, channel order and
    normalisation) and the names of its classes.

    `mean` and `std` are in `channel_order`; left out, they are the original's constants in
    that order. `class_names[i]` names class i (None: unnamed). `attention` holds ST-ABN's
    attention options."""

    name: str
    num_classes: int
    frame_length: int = DEFAULT_FRAME_LENGTH
    frame_size: int = DEFAULT_FRAME_SIZE
    width: int = 64
    channel_order: str = "bgr"
    mean: Optional[Tuple[float, float, float]] = None
    std: Optional[Tuple[float, float, float]] = None
    class_names: Optional[Tuple[str, ...]] = None
    # The short side of the frames the model was trained on, before cropping (SSv2: 240);
    # video files of another size are resized to it. None where unknown (the original's files).
    short_side: Optional[int] = None
    attention: AttentionOptions = field(default_factory=AttentionOptions)  # ST-ABN's; the original's by default

    def __post_init__(self) -> None:
        default_mean, default_std = mean_std(self.channel_order)
        self.mean = tuple(float(v) for v in (self.mean if self.mean is not None else default_mean))
        self.std = tuple(float(v) for v in (self.std if self.std is not None else default_std))
        if self.class_names is not None:
            self.class_names = tuple(str(n) for n in self.class_names)
            if len(self.class_names) != self.num_classes:
                raise ValueError(f"class_names has {len(self.class_names)} names for {self.num_classes} classes")
        if isinstance(self.attention, Mapping):
            self.attention = AttentionOptions(**self.attention)

    def __repr__(self) -> str:
        return (
            f"ModelSpec({self.name}, {self.num_classes} classes, {self.frame_length} frames of "
            f"{self.frame_size} px, {self.channel_order.upper()})"
        )

    def __str__(self) -> str:
        names = "unnamed (class numbers)"
        if self.class_names is not None:
            shown = ", ".join(repr(n) for n in self.class_names[:3])
            names = shown + (f", ... ({self.num_classes} in all)" if self.num_classes > 3 else "")
        short_side = f", frames resized to a short side of {self.short_side} px" if self.short_side else ""
        lines = [
            f"model      {self.name}, width {self.width}",
            f"input      {self.frame_length} frames of {self.frame_size} x {self.frame_size} px{short_side}",
            f"normalise  {self.channel_order.upper()}, mean {_rounded(self.mean)}, std {_rounded(self.std)}",
            f"classes    {self.num_classes}: {names}",
        ]
        if self.name in STABN_NAMES:
            options = ", ".join(f"{k}={v}" for k, v in dataclasses.asdict(self.attention).items())
            lines.append(f"attention  {options}")
        return "\n".join(lines)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # IPython's display
        printer.text(str(self))

    def class_name(self, index: int) -> str:
        """The name of class `index`, or its number when the classes are unnamed."""
        return self.class_names[index] if self.class_names is not None else str(index)

    def normalize(
        self, clips: Tensor, jitter: Optional[JitterConfig] = None, generator: Optional[torch.Generator] = None
    ) -> Tensor:
        """uint8 RGB clips ``[..., 3, T, H, W]`` as the model takes them (see `normalize_batch`)."""
        return normalize_batch(clips, self.mean, self.std, jitter, generator, channel_order=self.channel_order)

    def denormalize(self, clip: Tensor) -> np.ndarray:
        """A clip the model takes ``[3, T, H, W]`` back to uint8 RGB frames ``[T, H, W, 3]``."""
        return denormalize(clip, self.mean, self.std, self.channel_order)

    def to_dict(self) -> Dict[str, Any]:
        """Plain values only (lists, not tuples), as a checkpoint stores them."""
        out = dataclasses.asdict(self)
        for key in ("mean", "std", "class_names"):
            if out[key] is not None:
                out[key] = list(out[key])
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ModelSpec:
        """The spec a checkpoint stored; keys this version does not know are ignored."""
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    def replace(self, **changes: Any) -> ModelSpec:
        """A copy with `changes`; changing `channel_order` alone brings its default mean/std."""
        if "channel_order" in changes and changes["channel_order"] != self.channel_order:
            changes.setdefault("mean", None)
            changes.setdefault("std", None)
        return dataclasses.replace(self, **changes)


def _rounded(values: Optional[Tuple[float, ...]]) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in values or ()) + ")"


def model_spec(model: nn.Module) -> ModelSpec:
    """The spec of `model` (wrappers such as DDP or torch.compile looked through); a model
    built without `build_model` gets one from its own attributes."""
    model = unwrap_model(model)
    spec = getattr(model, "spec", None)
    if isinstance(spec, ModelSpec):
        return spec
    fc = getattr(model, "fc", None)
    return ModelSpec(
        name=type(model).__name__,
        num_classes=fc.out_features if isinstance(fc, nn.Linear) else 0,
        frame_length=getattr(model, "frame_length", DEFAULT_FRAME_LENGTH),
        frame_size=getattr(model, "frame_size", DEFAULT_FRAME_SIZE),
    )
