"""Notebook API: predictions and attention maps for a clip, a frames folder or a video file.

model = stabn.load_pretrained("runs/quickstart/checkpoint-best.pt")
stabn.predict(model, "data/synthetic/frames/000801").names     # class names from the model's spec
stabn.predict(model, "clip.mp4", num_clips=2).frame_indices    # the video's frames it used
stabn.explain(model, "clip.webm").image                        # a PIL image

A video file is read as evaluation reads the same frames as a folder (`stabn.data.video`:
the frame sampling, the resize rule, the centre crop); PyAV, the optional `video` extra, is
imported only then.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import List, NamedTuple, Optional, Sequence, Union

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from stabn.data import count_frames, frame_paths, read_eval_clips
from stabn.data.video import VideoInfo, looks_like_video, read_video_clips
from stabn.engine.accuracy import average_views
from stabn.interpret.visualize import animation_frames, attention_sheet, attention_tiles, upsample_spatial
from stabn.models import ModelSpec, STABNOutput, model_spec

ClipOrDir = Union[Tensor, str, os.PathLike]


@dataclass
class Prediction:
    """Top-k classes of the perception branch (and of the attention branch for ST-ABN), from
    the mean of the clips' softmax probabilities, as eval.py averages views.

    `frame_indices` (per clip, the 0-based frames of the video or folder it used) and `video`
    (what was read) say where the clips came from; they are None for a tensor and take no part
    in comparing predictions."""

    classes: List[int]
    names: List[str]
    probs: List[float]
    att_classes: Optional[List[int]] = None
    att_probs: Optional[List[float]] = None
    att_names: Optional[List[str]] = None
    frame_indices: Optional[List[List[int]]] = field(default=None, compare=False)
    video: Optional[VideoInfo] = field(default=None, compare=False)


@dataclass
class Explanation:
    """ST-ABN's attention for one clip (the middle one of `num_clips`, as eval.py draws),
    upsampled to the clip, and its pictures."""

    spatial: np.ndarray  # [T, S, S] in (0, 1)
    temporal: np.ndarray  # [T] in (0, 1)
    frames: np.ndarray  # uint8 RGB [T, S, S, 3], the clip the model saw
    overlays: List[Image.Image]  # per frame: blended frame under its temporal bar, >= 224 px
    image: Image.Image  # the overlays in rows of 8 (the original's layout) under a header
    prediction: Prediction
    clip: int = 0  # which of prediction.frame_indices the maps belong to

    @property
    def frame_indices(self) -> Optional[List[int]]:
        """The frames of the video or folder the maps belong to (None for a tensor)."""
        indices = self.prediction.frame_indices
        return None if indices is None else indices[self.clip]

    def animation(self) -> List[Image.Image]:
        """One picture per frame (header, overlaid frame, temporal curve), for a GIF or video;
        each names its place in the clip and, for a folder or video, its 0-based frame index."""
        n, indices = len(self.overlays), self.frame_indices
        labels = [f"clip frame {t + 1}/{n}" for t in range(n)]
        if indices is not None:
            labels = [f"video frame {i} ({label})" for label, i in zip(labels, indices)]
        tiles = [np.asarray(overlay) for overlay in self.overlays]
        return animation_frames(tiles, self.temporal, picture_title(self.prediction), labels)


def picture_title(prediction: Prediction) -> str:
    """The prediction as the pictures name it: each branch's top class and probability."""
    p = prediction
    lines = [f"predicted: {p.names[0]} ({p.probs[0]:.2f})"]
    if p.att_names and p.att_probs:
        lines.append(f"attention branch: {p.att_names[0]} ({p.att_probs[0]:.2f})")
    return "\n".join(lines)


class _Clips(NamedTuple):
    clips: Tensor  # normalised float [K, 3, T, S, S]
    frames: Optional[Tensor]  # uint8 RGB [K, 3, T, S, S] as read; None for a tensor
    indices: Optional[List[List[int]]]
    video: Optional[VideoInfo]


def _read(model: nn.Module, clip_or_dir: ClipOrDir, num_clips: int) -> _Clips:
    """The evaluation clips of a tensor, a frames folder or a video file."""
    if num_clips < 1:
        raise ValueError(f"num_clips must be >= 1, got {num_clips}")
    if isinstance(clip_or_dir, Tensor):
        if num_clips != 1:
            raise ValueError("a tensor is one clip: num_clips applies to frames folders and video files")
        return _Clips(as_clip(model, clip_or_dir).unsqueeze(0), None, None, None)
    spec = model_spec(model)
    path = os.fspath(clip_or_dir)
    if looks_like_video(path):
        read = read_video_clips(path, spec.frame_length, spec.frame_size, num_clips, spec.short_side)
        frames, indices, video = read.clips, read.indices, read.info
    else:
        frames, indices = read_eval_clips(path, spec.frame_length, spec.frame_size, num_clips)
        video = _folder_info(path)
    return _Clips(spec.normalize(frames), frames, indices, video)


def _folder_info(path: str) -> VideoInfo:
    """A frames folder described as a video: its JPEG count and first frame's size."""
    with Image.open(frame_paths(path, [0])[0]) as first:
        width, height = first.size
    return VideoInfo(path, count_frames(path), height, width, codec="jpeg")


def as_clip(model: nn.Module, clip_or_dir: ClipOrDir) -> Tensor:
    """A normalised float clip [3, T, S, S]: given as such, or read from a frames folder or a
    video file with the evaluation preprocessing of the model's spec (centre clip, centre crop,
    its channel order and normalisation)."""
    if isinstance(clip_or_dir, Tensor):
        clip = clip_or_dir
        if clip.dim() == 5 and clip.shape[0] == 1:
            clip = clip[0]
        if clip.dim() != 4 or clip.shape[0] != 3:
            raise ValueError(f"expected a clip [3, T, S, S], got {list(clip_or_dir.shape)}")
        return clip.float()
    return _read(model, clip_or_dir, 1).clips[0]


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _topk(probs: Tensor, k: int) -> tuple:
    top = probs.float().topk(min(k, probs.numel()))
    return top.indices.tolist(), top.values.tolist()


@torch.no_grad()
def _forward(model: nn.Module, clips: Tensor):
    """The model's output for clips [K, 3, T, S, S], one clip at a time so that memory holds
    one clip's activations whatever K."""
    model.eval()
    outs = [model(clip.unsqueeze(0).to(_device(model))) for clip in clips]
    if isinstance(outs[0], STABNOutput):
        return STABNOutput(*(torch.cat(parts) for parts in zip(*outs)))
    return torch.cat(outs)


def _names(classes: List[int], spec: ModelSpec, class_names: Optional[Sequence[str]]) -> List[str]:
    return [class_names[c] if class_names else spec.class_name(c) for c in classes]


def _check_names(class_names: Optional[Sequence[str]], spec: ModelSpec) -> None:
    if class_names is not None and len(class_names) != spec.num_classes:
        raise ValueError(
            f"class_names has {len(class_names)} names for the model's {spec.num_classes} classes: give one "
            "name per class, in class order, or leave it out to use the model's own"
        )


def _prediction(out, topk: int, spec: ModelSpec, class_names: Optional[Sequence[str]], read: _Clips) -> Prediction:
    logits = out.logits if isinstance(out, STABNOutput) else out
    classes, probs = _topk(average_views(logits, len(logits))[0], topk)
    pred = Prediction(classes, _names(classes, spec, class_names), probs, frame_indices=read.indices, video=read.video)
    if isinstance(out, STABNOutput):
        pred.att_classes, pred.att_probs = _topk(average_views(out.att_logits, len(logits))[0], topk)
        pred.att_names = _names(pred.att_classes, spec, class_names)
    return pred


def predict(
    model: nn.Module,
    clip_or_dir: ClipOrDir,
    topk: int = 5,
    class_names: Optional[Sequence[str]] = None,
    num_clips: int = 1,
) -> Prediction:
    """Top-`topk` classes with their softmax probabilities for one clip, frames folder or video
    file, named by `class_names` or else by the model's spec. A folder or a video gives
    `num_clips` evenly spaced clips (eval.py's sampling), whose probabilities are averaged."""
    _check_names(class_names, model_spec(model))
    read = _read(model, clip_or_dir, num_clips)
    return _prediction(_forward(model, read.clips), topk, model_spec(model), class_names, read)


def explain(
    model: nn.Module,
    clip_or_dir: ClipOrDir,
    topk: int = 5,
    class_names: Optional[Sequence[str]] = None,
    num_clips: int = 1,
) -> Explanation:
    """ST-ABN's spatial and temporal attention for one clip, frames folder or video file,
    upsampled to the clip, with the original's overlay pictures at a readable size. With
    `num_clips` > 1 the prediction averages every clip and the maps are the middle clip's."""
    _check_names(class_names, model_spec(model))
    read = _read(model, clip_or_dir, num_clips)
    out = _forward(model, read.clips)
    if not isinstance(out, STABNOutput):
        raise ValueError("explain() needs an ST-ABN model (abn_resnet*); this one has no attention branch")
    spec = model_spec(model)
    k = len(read.clips) // 2
    if read.frames is not None:
        frames = np.ascontiguousarray(read.frames[k].permute(1, 2, 3, 0).numpy())
    else:
        frames = spec.denormalize(read.clips[k])
    _, h, w, _ = frames.shape
    tiles = attention_tiles(frames, out.spatial_attention[k], out.temporal_attention[k])
    prediction = _prediction(out, topk, spec, class_names, read)
    return Explanation(
        spatial=upsample_spatial(out.spatial_attention[k], h, w),
        temporal=out.temporal_attention[k].float().cpu().flatten().numpy(),
        frames=frames,
        overlays=[Image.fromarray(t) for t in tiles],
        image=attention_sheet(tiles, picture_title(prediction)),
        prediction=prediction,
        clip=k,
    )
