"""Does the attention explain anything? Deletion / insertion AUC over space-time (against a
random voxel order on the same clips) and, where ground truth is known, the pointing game
and the temporal hit.

- Deletion: voxels are set to the dataset mean (0 after normalisation) in order of
  decreasing attention; the target-class probability should fall fast (low AUC is good).
- Insertion: voxels of an all-mean clip are restored in the same order; the probability
  should rise fast (high AUC is good).
- Pointing game: in each frame of the event window where the target is visible, the peak of
  the spatial attention lies inside the target's box.
- Energy in box: in those same frames, the share of the map's mass inside the target's box.
- Temporal hit: the frame of peak temporal attention lies inside the event window.
- Temporal energy: the share of a temporal profile's mass inside the event window.

`bootstrap_interval` gives a percentile interval of any of them over videos; the explanation
benchmark (`stabn.interpret.benchmark`) reports every figure with one.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from stabn.data import FrameClipDataset, center_crop_offset
from stabn.models import STABNOutput, is_stabn, model_spec

log = logging.getLogger(__name__)

Box = Optional[Sequence[float]]


def saliency_volume(spatial: Tensor, temporal: Tensor, size: Tuple[int, int]) -> Tensor:
    """Space-time saliency [T, H, W]: the spatial map bilinearly upsampled to the clip,
    scaled by each frame's temporal attention."""
    maps = spatial.detach().float().reshape(-1, 1, *spatial.shape[-2:])
    maps = F.interpolate(maps, size=size, mode="bilinear", align_corners=False)[:, 0]
    return maps * temporal.detach().float().reshape(-1, 1, 1)


def auc(curve: Sequence[float]) -> float:
    """Area under a curve sampled at evenly spaced fractions 0..1 (trapezoid rule)."""
    c = torch.as_tensor(curve, dtype=torch.float64)
    return float(((c[1:] + c[:-1]) / 2).mean()) if len(c) > 1 else float(c[0])


def deletion_insertion(
    prob_fn: Callable[[Tensor], Tensor], clip: Tensor, order: Tensor, steps: int
) -> Tuple[List[float], List[float]]:
    """Target probability as the first k of `steps` equal parts of `order` (flat voxel
    indices into [T, H, W], most important first) are deleted from `clip` [3, T, H, W]
    (set to 0) or inserted into an all-zero clip. Each curve has `steps + 1` points."""
    n = order.numel()
    counts = [round(n * k / steps) for k in range(steps + 1)]
    # rank[v] = position of voxel v in `order`; voxel v is "taken" at step k if rank < count
    rank = torch.empty(n, dtype=torch.long, device=order.device)
    rank[order] = torch.arange(n, device=order.device)
    taken = torch.stack([rank < c for c in counts]).view(steps + 1, 1, *clip.shape[1:]).to(clip.dtype)
    deleted = clip.unsqueeze(0) * (1 - taken)
    inserted = clip.unsqueeze(0) * taken
    return prob_fn(deleted).tolist(), prob_fn(inserted).tolist()


def box_hit(point: Tuple[float, float], box: Sequence[float]) -> bool:
    """Whether the pixel centre `point` (x, y) lies in `box` [x0, y0, x1, y1]."""
    x, y = point
    return box[0] <= x <= box[2] and box[1] <= y <= box[3]


def scored_frames(boxes: Sequence[Box], in_event: Sequence[bool]) -> List[int]:
    """The frames the box metrics score: those of the event window where the target is
    visible (its box is not None)."""
    return [t for t, (box, inside) in enumerate(zip(boxes, in_event)) if inside and box is not None]


def pointing_game(saliency: Tensor, boxes: Sequence[Box], in_event: Sequence[bool]) -> Tuple[int, int]:
    """(hits, frames counted): frames of the event window with a visible target whose
    attention peak (pixel centre, in the boxes' coordinates) falls inside the box."""
    frames = scored_frames(boxes, in_event)
    w = saliency.shape[-1]
    hits = 0
    for t in frames:
        y, x = divmod(int(saliency[t].argmax()), w)
        hits += box_hit((x + 0.5, y + 0.5), boxes[t])
    return hits, len(frames)


def _overlap(length: int, low: float, high: float) -> Tensor:
    """How much of each pixel [i, i + 1), i < length, lies inside [low, high]."""
    edges = torch.arange(length, dtype=torch.float64)
    return ((edges + 1).clamp(max=high) - edges.clamp(min=low)).clamp(min=0)


def box_energy(frame: Tensor, box: Sequence[float]) -> float:
    """The share of a non-negative map's mass [H, W] inside `box` [x0, y0, x1, y1], each pixel
    counted by the part of it the box covers; 0 for a map without mass."""
    frame = frame.detach().double().cpu()
    total = float(frame.sum())
    if total <= 0:
        return 0.0
    h, w = frame.shape
    weights = _overlap(h, box[1], box[3])[:, None] * _overlap(w, box[0], box[2])[None, :]
    return float((frame * weights).sum()) / total


def energy_in_box(saliency: Tensor, boxes: Sequence[Box], in_event: Sequence[bool]) -> List[float]:
    """`box_energy` of each frame `pointing_game` counts, in frame order."""
    return [box_energy(saliency[t], boxes[t]) for t in scored_frames(boxes, in_event)]


def temporal_hit(temporal: Tensor, in_event: Sequence[bool]) -> bool:
    """Whether the frame of peak temporal attention lies in the event window."""
    return bool(in_event[int(temporal.detach().flatten().argmax())])


def temporal_energy(profile: Tensor, in_event: Sequence[bool]) -> float:
    """The share of a non-negative temporal profile's mass [T] inside the event window; 0 for a
    profile without mass."""
    p = profile.detach().double().flatten().cpu()
    total = float(p.sum())
    if total <= 0:
        return 0.0
    return float(p[torch.tensor([bool(v) for v in in_event])].sum()) / total


def mean_of_rows(samples: Tensor) -> Tensor:
    """The statistic of `bootstrap_interval` by default: each resample's mean, [R, N] -> [R]."""
    return samples.mean(dim=1)


def ratio_of_sums(samples: Tensor) -> Tensor:
    """Each resample's sum of column 0 over its sum of column 1, [R, N, 2] -> [R] (NaN where
    the denominator is 0): the pointing game's hits over frames, or one mean over another."""
    sums = samples.sum(dim=1)
    return sums[:, 0] / sums[:, 1]


def bootstrap_interval(
    rows: Any,
    statistic: Callable[[Tensor], Tensor] = mean_of_rows,
    resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> Tuple[float, float]:
    """Percentile bootstrap interval of `statistic` over videos: `rows` holds one row per
    video ([N] values, or [N, k]); `resamples` times N rows are drawn with replacement (from
    `seed`), the statistic is computed on each draw ([R, N, ...] -> [R]), and the interval is
    the (1 - confidence) / 2 and (1 + confidence) / 2 quantiles of those figures (draws where
    it is undefined, NaN, left out)."""
    values = torch.as_tensor(rows, dtype=torch.float64)
    if values.shape[0] == 0:
        raise ValueError("bootstrap_interval needs at least one row")
    if resamples < 1 or not 0 < confidence < 1:
        raise ValueError(f"need resamples >= 1 and 0 < confidence < 1, got {resamples} and {confidence}")
    gen = torch.Generator().manual_seed(seed)
    picks = torch.randint(values.shape[0], (resamples, values.shape[0]), generator=gen)
    figures = statistic(values[picks])
    alpha = (1 - confidence) / 2
    low, high = torch.nanquantile(figures, torch.tensor([alpha, 1 - alpha], dtype=torch.float64)).tolist()
    return low, high


def clip_ground_truth(
    dataset: FrameClipDataset, index: int, truth: Dict[str, Any], view: int
) -> Tuple[List[bool], List[Box]]:
    """For the clip of view `view` (a centre crop) of video `index`, and the video's
    ground-truth entry `truth` ("event": [first, stop), "boxes" per video frame, in frame
    coordinates): per clip frame, whether it is in the event window, and the target's box in
    the crop's coordinates (None where the target is invisible)."""
    frames = dataset.clip_frames(index)[view // dataset.num_crops]
    first, stop = truth["event"]
    in_event = [first <= f < stop for f in frames]
    with Image.open(dataset.frame_paths(index)[0]) as im:
        width, height = im.size
    y0, x0 = center_crop_offset(height, width, dataset.frame_size)
    return in_event, [_shift(truth["boxes"][f], x0, y0) for f in frames]


def target_probability(model, target: int, batch_size: Optional[int] = None) -> Callable[[Tensor], Tensor]:
    """A function from a batch of clips to the softmax probability of class `target` that
    `model` (perception branch) gives each, on the CPU; `batch_size` clips a forward at most."""

    def prob(batch: Tensor) -> Tensor:
        parts = []
        for chunk in batch.split(batch_size or len(batch)):
            out = model(chunk)
            logits = out.logits if isinstance(out, STABNOutput) else out
            parts.append(logits.float().softmax(dim=1)[:, target].cpu())
        return torch.cat(parts)

    return prob


def _ground_truth(cfg) -> Optional[Dict[str, Any]]:
    path = (
        Path(cfg.data.ground_truth)
        if cfg.data.ground_truth
        else Path(cfg.data.frames_root).parent / "ground_truth.json"
    )
    if not path.is_file():
        return None
    return json.loads(path.read_text())


@torch.no_grad()
def explanation_metrics(model, cfg, dataset, ctx) -> Dict[str, Any]:
    """The metrics over the first `eval.explain_videos` videos of `dataset` (their middle
    clip, centre crop), split over ranks and summed; ground-truth metrics where the data
    has a ground_truth.json (the synthetic set)."""
    import torch.distributed as dist

    # Decided before the loop, the same on every rank: a rank leaving it early would leave
    # the others waiting in the all-reduce.
    if not is_stabn(model):
        return {}
    truth = _ground_truth(cfg)
    spec = model_spec(model)
    e = cfg.eval
    S = cfg.data.frame_size
    view = dataset.centre_view
    count = min(e.explain_videos, len(dataset))
    gen = torch.Generator().manual_seed(cfg.train.seed)
    # sums: deletion, insertion, random deletion, random insertion, videos,
    #       pointing hits, pointing frames, temporal hits, temporal videos
    sums = torch.zeros(9, dtype=torch.float64)
    model.eval()
    for index in range(ctx.rank, count, ctx.world_size):
        item = dataset[index]
        if not isinstance(item, tuple):
            continue  # skipped as corrupt
        views, label, _ = item
        clip = spec.normalize(views[view : view + 1].to(ctx.device))[0]
        out = model(clip.unsqueeze(0))
        target = int(out.logits.argmax())
        saliency = saliency_volume(out.spatial_attention[0], out.temporal_attention[0], (S, S))
        prob = target_probability(model, target)
        order = saliency.flatten().argsort(descending=True, stable=True)
        random_order = torch.randperm(order.numel(), generator=gen).to(order.device)
        for offset, o in ((0, order), (2, random_order)):
            deletion, insertion = deletion_insertion(prob, clip, o, e.explain_steps)
            sums[offset] += auc(deletion)
            sums[offset + 1] += auc(insertion)
        sums[4] += 1

        record = dataset.records[index]
        gt = truth.get(record.video_id) if truth else None
        if gt is None:
            continue
        in_event, boxes = clip_ground_truth(dataset, index, gt, view)  # the middle view is the centre crop
        hits, total = pointing_game(saliency, boxes, in_event)
        sums[5] += hits
        sums[6] += total
        sums[7] += temporal_hit(out.temporal_attention[0], in_event)
        sums[8] += 1
    if dist.is_available() and dist.is_initialized():
        sums = sums.to(ctx.device) if dist.get_backend() == "nccl" else sums
        dist.all_reduce(sums)
        sums = sums.cpu()
    n = max(sums[4].item(), 1)
    result: Dict[str, Any] = {
        "videos": int(sums[4]),
        "steps": e.explain_steps,
        "deletion_auc": sums[0].item() / n,
        "insertion_auc": sums[1].item() / n,
        "random_deletion_auc": sums[2].item() / n,
        "random_insertion_auc": sums[3].item() / n,
    }
    if sums[8] > 0:
        result["pointing_game"] = sums[5].item() / max(sums[6].item(), 1)
        result["pointing_frames"] = int(sums[6])
        result["temporal_hit"] = sums[7].item() / sums[8].item()
    return result


def _shift(box: Box, x0: int, y0: int) -> Box:
    return None if box is None else [box[0] - x0, box[1] - y0, box[2] - x0, box[3] - y0]
