"""Notebook API: predictions and explanations for a clip, a frames folder or a video file.

model = stabn.load_pretrained("runs/quickstart/checkpoint-best.pt")
stabn.predict(model, "data/synthetic/frames/000801").names     # class names from the model's spec
stabn.predict(model, "clip.mp4", num_clips=2).frame_indices    # the video's frames it used
stabn.explain(model, "clip.webm").image                        # a PIL image
stabn.explain(model, "clip.webm", method="gradcam", layer="layer4")   # any model of the zoo

A video file is read as evaluation reads the same frames as a folder (`stabn.data.video`:
the frame sampling, the resize rule, the centre crop); PyAV, the optional `video` extra, is
imported only then.

`explain` draws one of `EXPLAIN_METHODS`: ST-ABN's own attention (`attention`, the default
for an ST-ABN), or a peer explainer of the perception branch's logit through Captum, the
optional `explain` extra (`gradcam`, the default for a 3D ResNet; `input_gradient`;
`integrated_gradients`). A peer method's volume V [T, S, S] is drawn as ST-ABN's maps are:
the spatial map is V divided by the clip's maximum of V (so frames keep their relative
strength), the temporal profile each frame's mass V[t].sum() divided by the largest.
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
from stabn.display import explanation_html, explanation_text, png_bytes, prediction_html, prediction_text
from stabn.engine.accuracy import average_views
from stabn.interpret import saliency
from stabn.interpret.methods import IG_STEPS, MethodError, method_label, peer_maps, resolve_method
from stabn.interpret.visualize import (
    ANIMATION_FPS,
    animation_frames,
    attention_sheet,
    attention_tiles,
    gif_bytes,
    upsample_spatial,
)
from stabn.models import ModelSpec, STABNOutput, model_spec

ClipOrDir = Union[Tensor, str, os.PathLike]


@dataclass(repr=False)
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

    def __repr__(self) -> str:
        return prediction_text(self)

    def _repr_html_(self) -> str:
        return prediction_html(self)


@dataclass(repr=False)
class Explanation:
    """The maps of one clip (the middle one of `num_clips`, as eval.py draws) at the clip's
    size, and their pictures: ST-ABN's attention, or a peer method's saliency scaled to its
    peak (the module's docstring says how)."""

    spatial: np.ndarray  # [T, S, S] in [0, 1]
    temporal: np.ndarray  # [T] in [0, 1]
    frames: np.ndarray  # uint8 RGB [T, S, S, 3], the clip the model saw
    overlays: List[Image.Image]  # per frame: blended frame under its temporal bar, >= 224 px
    image: Image.Image  # the overlays in rows of 8 (the original's layout) under a header
    prediction: Prediction
    clip: int = 0  # which of prediction.frame_indices the maps belong to
    method: str = "attention"  # one of EXPLAIN_METHODS
    layer: Optional[str] = None  # Grad-CAM's layer; None for the other methods
    target: Optional[int] = None  # the class a peer method explains; None for attention

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

    def gif(self, fps: float = ANIMATION_FPS) -> bytes:
        """`animation()` as a looping GIF, e.g. for `IPython.display.Image(data=e.gif())`."""
        return gif_bytes(self.animation(), fps)

    def __repr__(self) -> str:
        return explanation_text(self)

    def _repr_png_(self) -> bytes:
        return png_bytes(self.image)

    def _repr_html_(self) -> str:
        return explanation_html(self)


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


def _check_options(spec: ModelSpec, method: str, target: Optional[int], steps: int) -> None:
    if steps < 1:
        raise MethodError(f"steps must be >= 1, got {steps}")
    if target is None:
        return
    if method == "attention":
        raise MethodError("target applies to the peer methods: ST-ABN's attention is the same for every class")
    if not 0 <= target < spec.num_classes:
        raise MethodError(f"target {target} is not a class of the model: give 0 to {spec.num_classes - 1}")


def _frames(read: _Clips, spec: ModelSpec, k: int) -> np.ndarray:
    """Clip `k` as uint8 RGB [T, S, S, 3]: as read, or the tensor denormalised."""
    if read.frames is not None:
        return np.ascontiguousarray(read.frames[k].permute(1, 2, 3, 0).numpy())
    return spec.denormalize(read.clips[k])


def explain(
    model: nn.Module,
    clip_or_dir: ClipOrDir,
    topk: int = 5,
    class_names: Optional[Sequence[str]] = None,
    num_clips: int = 1,
    *,
    method: Optional[str] = None,
    layer: Optional[str] = None,
    target: Optional[int] = None,
    steps: int = IG_STEPS,
) -> Explanation:
    """Where and when the model looked in one clip, frames folder or video file, at the clip's
    size, with the original's overlay pictures at a readable size. `method` is one of
    `EXPLAIN_METHODS` (default: `default_method`); Grad-CAM reads `layer` (default:
    `default_layer`), Integrated Gradients takes `steps`; a peer method explains `target`
    (default: the perception branch's top class) and needs Captum. With `num_clips` > 1 the
    prediction averages every clip and the maps are the middle clip's."""
    spec = model_spec(model)
    _check_names(class_names, spec)
    method, layer = resolve_method(model, method, layer)
    _check_options(spec, method, target, steps)
    if method != "attention":
        saliency.require_captum()
    read = _read(model, clip_or_dir, num_clips)
    out = _forward(model, read.clips)
    prediction = _prediction(out, topk, spec, class_names, read)
    k = len(read.clips) // 2
    frames = _frames(read, spec, k)
    title = picture_title(prediction)
    if method == "attention":
        spatial, temporal = out.spatial_attention[k], out.temporal_attention[k]
        maps = upsample_spatial(spatial, *frames.shape[1:3])
    else:
        target = prediction.classes[0] if target is None else target
        maps, profile = peer_maps(model, read.clips[k], method, target, layer=layer, steps=steps)
        spatial, temporal = torch.from_numpy(maps), torch.from_numpy(profile)
        title += f"\nmap: {method_label(method, layer, steps)} of {_names([target], spec, class_names)[0]}"
    tiles = attention_tiles(frames, spatial, temporal)
    return Explanation(
        spatial=maps,
        temporal=temporal.float().cpu().flatten().numpy(),
        frames=frames,
        overlays=[Image.fromarray(t) for t in tiles],
        image=attention_sheet(tiles, title),
        prediction=prediction,
        clip=k,
        method=method,
        layer=layer,
        target=target,
    )
