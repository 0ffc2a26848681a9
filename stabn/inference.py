"""Notebook API: predictions and attention maps for one clip or one frames folder.

model = stabn.load_pretrained("runs/quickstart/checkpoint-best.pt")
stabn.predict(model, "data/synthetic/frames/000801").names     # class names from the model's spec
stabn.explain(model, "data/synthetic/frames/000801").image     # a PIL image
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import List, Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from .data import read_centre_clip
from .explain.visualize import attention_grid, overlay_frames, upsample_spatial
from .models import ModelSpec, STABNOutput, model_spec

ClipOrDir = Union[Tensor, str, os.PathLike]


@dataclass
class Prediction:
    """Top-k classes of the perception branch (and of the attention branch for ST-ABN)."""

    classes: List[int]
    names: List[str]
    probs: List[float]
    att_classes: Optional[List[int]] = None
    att_probs: Optional[List[float]] = None


@dataclass
class Explanation:
    """ST-ABN's attention for one clip, upsampled to the clip, and its pictures."""

    spatial: np.ndarray  # [T, S, S] in (0, 1)
    temporal: np.ndarray  # [T] in (0, 1)
    frames: np.ndarray  # uint8 RGB [T, S, S, 3], the clip the model saw
    overlays: List[Image.Image]  # per frame: blended frame under its temporal bar
    image: Image.Image  # the overlays in rows of 8 (the original's layout)
    prediction: Prediction


def as_clip(model: nn.Module, clip_or_dir: ClipOrDir) -> Tensor:
    """A normalised float clip [3, T, S, S]: given as such, or read from a frames folder with
    the evaluation preprocessing of the model's spec (centre clip, centre crop, its channel
    order and normalisation)."""
    if isinstance(clip_or_dir, Tensor):
        clip = clip_or_dir
        if clip.dim() == 5 and clip.shape[0] == 1:
            clip = clip[0]
        if clip.dim() != 4 or clip.shape[0] != 3:
            raise ValueError(f"expected a clip [3, T, S, S], got {list(clip_or_dir.shape)}")
        return clip.float()
    spec = model_spec(model)
    return spec.normalize(read_centre_clip(clip_or_dir, spec.frame_length, spec.frame_size))


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _topk(logits: Tensor, k: int) -> tuple:
    probs = logits.float().softmax(dim=-1)
    top = probs.topk(min(k, probs.numel()))
    return top.indices.tolist(), top.values.tolist()


@torch.no_grad()
def _forward(model: nn.Module, clip: Tensor):
    model.eval()
    return model(clip.unsqueeze(0).to(_device(model)))


def _prediction(out, topk: int, spec: ModelSpec, class_names: Optional[Sequence[str]]) -> Prediction:
    logits = out.logits[0] if isinstance(out, STABNOutput) else out[0]
    classes, probs = _topk(logits, topk)
    names = [class_names[c] if class_names else spec.class_name(c) for c in classes]
    pred = Prediction(classes, names, probs)
    if isinstance(out, STABNOutput):
        pred.att_classes, pred.att_probs = _topk(out.att_logits[0], topk)
    return pred


def predict(
    model: nn.Module, clip_or_dir: ClipOrDir, topk: int = 5, class_names: Optional[Sequence[str]] = None
) -> Prediction:
    """Top-`topk` classes with their softmax probabilities for one clip or frames folder,
    named by `class_names` or else by the model's spec."""
    return _prediction(_forward(model, as_clip(model, clip_or_dir)), topk, model_spec(model), class_names)


def explain(
    model: nn.Module, clip_or_dir: ClipOrDir, topk: int = 5, class_names: Optional[Sequence[str]] = None
) -> Explanation:
    """ST-ABN's spatial and temporal attention for one clip, upsampled to it, with the
    overlay pictures the original draws."""
    clip = as_clip(model, clip_or_dir)
    out = _forward(model, clip)
    if not isinstance(out, STABNOutput):
        raise ValueError("explain() needs an ST-ABN model (abn_resnet*); this one has no attention branch")
    spec = model_spec(model)
    frames = spec.denormalize(clip)
    _, s, w, _ = frames.shape
    spatial = upsample_spatial(out.spatial_attention[0], s, w)
    temporal = out.temporal_attention[0].float().cpu().flatten().numpy()
    tiles = overlay_frames(frames, spatial, temporal)
    return Explanation(
        spatial,
        temporal,
        frames,
        [Image.fromarray(t) for t in tiles],
        Image.fromarray(attention_grid(tiles)),
        _prediction(out, topk, spec, class_names),
    )
