"""Does the attention explain anything? Deletion / insertion AUC over space-time (against a
random voxel order on the same clips) and, where ground truth is known, the pointing game
and the temporal hit.

- Deletion: voxels are set to the dataset mean (0 after normalisation) in order of
  decreasing attention; the target-class probability should fall fast (low AUC is good).
- Insertion: voxels of an all-mean clip are restored in the same order; the probability
  should rise fast (high AUC is good).
- Pointing game: in each frame of the event window where the target is visible, the peak of
  the spatial attention lies inside the target's box.
- Temporal hit: the frame of peak temporal attention lies inside the event window.
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

from ..checkpoint import unwrap_model
from ..data import center_crop_offset
from ..models import STABN, STABNOutput, model_spec

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


def pointing_game(saliency: Tensor, boxes: Sequence[Box], in_event: Sequence[bool]) -> Tuple[int, int]:
    """(hits, frames counted): frames of the event window with a visible target whose
    attention peak (pixel centre, in the boxes' coordinates) falls inside the box."""
    hits = total = 0
    t, h, w = saliency.shape
    for i in range(t):
        if not in_event[i] or boxes[i] is None:
            continue
        flat = int(saliency[i].argmax())
        y, x = divmod(flat, w)
        total += 1
        hits += box_hit((x + 0.5, y + 0.5), boxes[i])
    return hits, total


def temporal_hit(temporal: Tensor, in_event: Sequence[bool]) -> bool:
    """Whether the frame of peak temporal attention lies in the event window."""
    return bool(in_event[int(temporal.detach().flatten().argmax())])


def _target_probability(model, target: int) -> Callable[[Tensor], Tensor]:
    def prob(batch: Tensor) -> Tensor:
        out = model(batch)
        logits = out.logits if isinstance(out, STABNOutput) else out
        return logits.float().softmax(dim=1)[:, target].cpu()

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
    if not isinstance(unwrap_model(model), STABN):
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
        prob = _target_probability(model, target)
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
        frames = dataset.clip_frames(index)[view // dataset.num_crops]
        first, stop = gt["event"]
        in_event = [first <= f < stop for f in frames]
        with Image.open(dataset.frame_paths(index)[0]) as im:
            width, height = im.size
        y0, x0 = center_crop_offset(height, width, S)  # the middle view is the centre crop
        boxes = [_shift(gt["boxes"][f], x0, y0) for f in frames]
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
