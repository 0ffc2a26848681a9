"""One video predicted and explained with a trained checkpoint, written as pictures and JSON.

`write_video_report` takes a video file PyAV decodes (mp4, webm, avi, mkv, mov, ...) or a
folder of JPEG frames, and writes under its output folder:

    attention.gif     the clip's frames with the spatial map overlaid, the temporal profile
                      as a bar above each frame and as a curve under it
    attention.mp4     the same as a video (H.264 where the bundled FFmpeg has it, else MPEG-4)
    attention.png     the contact sheet in the original's layout, under the prediction
    prediction.json   the top-k of both branches, the frame indices, the method that made the
                      maps, the temporal profile per frame, the checkpoint and video paths

The maps are those of `stabn.explain`'s `method` (default: ST-ABN's attention for an ST-ABN,
Grad-CAM for a 3D ResNet); a peer method without Captum leaves the predictions and the JSON
only. Frames are sampled and preprocessed as eval.py does (`stabn.data.video`); frame indices
are 0-based, as in the notebook API. The text the command prints (the top-k of both branches,
what was read, the method, what was written, the time taken) goes to `echo` as it is written.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from stabn.data import count_frames
from stabn.data.video import VIDEO_SUFFIXES, looks_like_video, resized_size, write_mp4
from stabn.errors import DataError, PathLike, StabnError
from stabn.fileio import atomic_write_text, writing
from stabn.inference import Explanation, Prediction, explain, predict
from stabn.interpret.methods import method_label, resolve_method
from stabn.interpret.saliency import CaptumMissing, require_captum
from stabn.interpret.visualize import ANIMATION_FPS, save_gif, save_png
from stabn.models import ModelSpec, load_pretrained


@dataclass(frozen=True)
class VideoReport:
    """What `write_video_report` found and wrote: `explanation` is None where the maps could
    not be made, and `no_pictures` says why; `files` maps gif, mp4, mp4_codec, png and json to
    what was written."""

    prediction: Prediction
    explanation: Optional[Explanation]
    model_name: str
    files: Dict[str, str]
    no_pictures: Optional[str] = None


def _check_source(path: str) -> None:
    """A folder of videos is not a frames folder: say so, naming a video to give instead."""
    if looks_like_video(path) or not os.path.isdir(path) or count_frames(path) > 0:
        return
    videos = sorted(n for n in os.listdir(path) if n.lower().endswith(VIDEO_SUFFIXES))
    if videos:
        raise DataError(f"{path} holds no JPEG frames but videos: give one video, e.g. {os.path.join(path, videos[0])}")


def _ranges(indices: Sequence[int]) -> str:
    """Frame indices in few words: runs of consecutive frames as a-b, repeats as a (xN)."""
    parts: List[str] = []
    i = 0
    while i < len(indices):
        j = i
        if j + 1 < len(indices) and indices[j + 1] == indices[i]:
            while j + 1 < len(indices) and indices[j + 1] == indices[i]:
                j += 1
            parts.append(f"{indices[i]} (x{j - i + 1})")
        else:
            while j + 1 < len(indices) and indices[j + 1] == indices[j] + 1:
                j += 1
            parts.append(str(indices[i]) if i == j else f"{indices[i]}-{indices[j]}")
        i = j + 1
    return ", ".join(parts)


def _describe_input(pred: Prediction, spec: ModelSpec) -> List[str]:
    """What was read and which frames the clips took, for the printout."""
    info = pred.video
    lines = []
    if info is not None and info.codec == "jpeg":
        lines.append(f"frames folder: {info.num_frames} JPEG frames of {info.width}x{info.height}")
    elif info is not None:
        rate = f" at {info.fps:.4g} fps" if info.fps else ""
        h, w = resized_size(info.height, info.width, spec.frame_size, spec.short_side)
        size = "kept" if (h, w) == (info.height, info.width) else f"resized to {w}x{h}"
        lines.append(f"video: {info.num_frames} frames of {info.width}x{info.height}{rate} ({info.codec}); {size}")
    clips = pred.frame_indices or []
    crop = f"{spec.frame_length} frames, centre crop {spec.frame_size}x{spec.frame_size}"
    for k, clip in enumerate(clips):
        name = "clip" if len(clips) == 1 else f"clip {k + 1}/{len(clips)}"
        lines.append(f"{name}: frames {_ranges(clip)} ({crop})")
    return lines


def _table(pred: Prediction) -> List[str]:
    """The top-k of both branches side by side."""
    left = [f"{p:.3f}  {n}" for n, p in zip(pred.names, pred.probs)]
    width = max(len(s) for s in left + ["perception branch"]) + 4
    if pred.att_names is None or pred.att_probs is None:
        return ["  perception branch"] + [f"  {s}" for s in left]
    right = [f"{p:.3f}  {n}" for n, p in zip(pred.att_names, pred.att_probs)]
    rows = [f"  {a:<{width}}{b}" for a, b in zip(left, right)]
    return [f"  {'perception branch':<{width}}attention branch"] + rows


def _ranked(classes: Optional[List[int]], names: Optional[List[str]], probs: Optional[List[float]]) -> Any:
    if classes is None or names is None or probs is None:
        return None
    return [{"class": c, "name": n, "prob": p} for c, n, p in zip(classes, names, probs)]


def _numbers(
    video: PathLike, checkpoint: PathLike, num_clips: int, pred: Prediction, e: Optional[Explanation],
    files: Dict[str, str],
) -> Dict:  # fmt: skip
    """prediction.json's content."""
    info = pred.video
    return {
        "video": os.fspath(video),
        "checkpoint": os.fspath(checkpoint),
        "video_info": None if info is None else {
            "frames": info.num_frames, "height": info.height, "width": info.width, "fps": info.fps,
            "codec": info.codec,
        },
        "num_clips": num_clips,
        "frame_indices": pred.frame_indices,  # per clip, 0-based
        "perception": _ranked(pred.classes, pred.names, pred.probs),
        "attention": _ranked(pred.att_classes, pred.att_names, pred.att_probs),
        "explained_clip": None if e is None else e.clip,
        "method": None if e is None else e.method,  # one of EXPLAIN_METHODS
        "layer": None if e is None else e.layer,  # Grad-CAM's layer
        # The explained clip's frames (0-based) and each one's temporal attention (a peer
        # method's per-frame mass, scaled to its largest).
        "temporal_attention": None if e is None else {
            "frames": e.frame_indices, "values": [float(v) for v in e.temporal]
        },
        "files": files,
    }  # fmt: skip


_NUMBER_LIST = re.compile(r"\[\s*(-?[\d.eE+-]+(?:,\s*-?[\d.eE+-]+)*)\s*\]")


def _json(report: Dict) -> str:
    """Indented JSON with lists of numbers on one line (the frame indices stay readable)."""
    text = json.dumps(report, indent=2)
    return _NUMBER_LIST.sub(lambda m: "[" + ", ".join(m.group(1).replace(",", " ").split()) + "]", text) + "\n"


def _pictures(e: Explanation, out: Path, echo: Callable[[str], None]) -> Dict[str, str]:
    """The GIF, the MP4 (where PyAV can write one) and the contact sheet."""
    frames = e.animation()
    files = {"gif": str(save_gif(out / "attention.gif", frames, ANIMATION_FPS))}
    try:
        codec = write_mp4(out / "attention.mp4", [np.asarray(f) for f in frames], ANIMATION_FPS)
        files["mp4"], files["mp4_codec"] = str(out / "attention.mp4"), codec
    except StabnError as error:  # no PyAV (a frames folder needs none) or no MP4 encoder
        echo(f"attention.mp4 not written: {error}")
    files["png"] = str(save_png(out / "attention.png", e.image))
    return files


def _written(files: Dict[str, str]) -> str:
    codec = f" ({files['mp4_codec']})" if "mp4_codec" in files else ""
    return "wrote " + ", ".join(
        files[k] + (codec if k == "mp4" else "") for k in ("gif", "mp4", "png", "json") if k in files
    )


def _captum_missing(method: str, layer: Optional[str], checkpoint: PathLike) -> Optional[str]:
    """Why a peer method cannot draw the maps (no Captum), or None where it can."""
    if method == "attention":
        return None
    try:
        require_captum()
    except CaptumMissing as error:
        return f"{error} ({method_label(method, layer)} for {checkpoint}): predictions only, no pictures"
    return None


def _quiet(text: str) -> None:
    """An `echo` that drops the text."""


def write_video_report(
    video: PathLike,
    checkpoint: PathLike,
    *,
    out: Optional[PathLike] = None,
    topk: int = 5,
    num_clips: int = 1,
    method: Optional[str] = None,
    layer: Optional[str] = None,
    device: Union[str, torch.device, None] = None,
    echo: Callable[[str], None] = _quiet,
) -> VideoReport:
    """Predict and explain `video` with `checkpoint` on `device` (default: CUDA where there is
    one) by `method` (and Grad-CAM's `layer`; `stabn.explain` says the defaults), and write the
    pictures and prediction.json under `out` (default demo/<name of the video>). Raises
    StabnError on bad input."""
    if topk < 1 or num_clips < 1:
        raise StabnError(f"--topk and --num-clips must be >= 1, got {topk} and {num_clips}")
    start = time.perf_counter()
    video = os.fspath(video)
    _check_source(video)
    if device is None:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = load_pretrained(checkpoint).to(device)
    spec = model.spec
    method, layer = resolve_method(model, method, layer)
    no_pictures = _captum_missing(method, layer, checkpoint)
    loaded = time.perf_counter()
    e: Optional[Explanation] = None
    if no_pictures is None:
        e = explain(model, video, topk, num_clips=num_clips, method=method, layer=layer)
        pred = e.prediction
    else:
        pred = predict(model, video, topk, num_clips=num_clips)
    inferred = time.perf_counter()
    echo(f"{video}, {spec.name} from {checkpoint}")
    echo("\n".join(f"  {line}" for line in _describe_input(pred, spec)))
    echo("\n".join(_table(pred)))
    if e is not None:
        echo(f"maps: {method_label(method, layer)}" + ("" if e.target is None else f" of {pred.names[0]}"))

    out = Path(out) if out else Path("demo") / Path(os.path.normpath(video)).stem
    with writing(out):
        out.mkdir(parents=True, exist_ok=True)
    files = {} if e is None else _pictures(e, out, echo)
    files["json"] = str(out / "prediction.json")
    atomic_write_text(out / "prediction.json", _json(_numbers(video, checkpoint, num_clips, pred, e, files)))
    done = time.perf_counter()
    echo(_written(files))
    echo(
        f"time: {loaded - start:.2f} s loading the checkpoint, {inferred - loaded:.2f} s reading the frames and "
        f"running the model, {done - inferred:.2f} s pictures, {done - start:.2f} s in all"
    )
    return VideoReport(pred, e, spec.name, files, no_pictures)
