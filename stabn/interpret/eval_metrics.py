"""eval.py's explanation metrics (``eval.explain_metrics=true``): ST-ABN's own attention scored
by `score_video` on each video's evaluation view, summed over videos and ranks."""

from __future__ import annotations

import json
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Any, Dict, Optional

import torch
import torch.distributed as dist

from stabn.interpret.scoring import (
    Perturbation,
    VideoScore,
    clip_ground_truth,
    random_voxel_order,
    saliency_volume,
    score_video,
    target_probability,
    video_truth,
)
from stabn.models import is_stabn, model_spec


@dataclass
class _Totals:
    """Sums over videos, all-reduced over ranks."""

    videos: float = 0.0
    deletion_auc: float = 0.0
    insertion_auc: float = 0.0
    random_deletion_auc: float = 0.0
    random_insertion_auc: float = 0.0
    truth_videos: float = 0.0  # videos with ground truth
    pointing_hits: float = 0.0
    pointing_frames: float = 0.0
    temporal_hits: float = 0.0

    def add(self, score: VideoScore) -> None:
        self.videos += 1
        self.deletion_auc += score.deletion_auc
        self.insertion_auc += score.insertion_auc
        self.random_deletion_auc += score.random_deletion_auc
        self.random_insertion_auc += score.random_insertion_auc
        if score.pointing_frames is None:
            return
        self.truth_videos += 1
        self.pointing_hits += score.pointing_hits
        self.pointing_frames += score.pointing_frames
        self.temporal_hits += score.temporal_hit

    def summed_over_ranks(self, device: torch.device) -> _Totals:
        if not (dist.is_available() and dist.is_initialized()):
            return self
        sums = torch.tensor(astuple(self), dtype=torch.float64)
        sums = sums.to(device) if dist.get_backend() == "nccl" else sums
        dist.all_reduce(sums)
        return _Totals(*sums.cpu().tolist())


def _ground_truth(cfg) -> Optional[Dict[str, Any]]:
    path = (
        Path(cfg.data.ground_truth)
        if cfg.data.ground_truth
        else Path(cfg.data.frames_root).parent / "ground_truth.json"
    )
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def _score(model, cfg, dataset, index: int, truth: Optional[Dict[str, Any]], device) -> Optional[VideoScore]:
    """The attention's score on video `index`'s middle clip, centre crop; None for a video
    skipped as corrupt."""
    item = dataset[index]
    if not isinstance(item, tuple):
        return None
    views, _, _ = item
    view = dataset.centre_view
    clip = model_spec(model).normalize(views[view : view + 1].to(device))[0]
    out = model(clip.unsqueeze(0))
    target = int(out.logits.argmax())
    size = cfg.data.frame_size
    volume = saliency_volume(out.spatial_attention[0], out.temporal_attention[0], (size, size))
    order = random_voxel_order(cfg.eval.seed, index, volume.numel())
    perturbation = Perturbation(target_probability(model, target), clip, order, cfg.eval.explain_steps)
    gt = video_truth(truth, dataset.records[index].video_id) if truth else None
    in_event, boxes = clip_ground_truth(dataset, index, gt, view) if gt is not None else (None, None)
    return score_video(
        volume, out.temporal_attention[0], in_event=in_event, boxes=boxes, perturbation=perturbation, with_random=True
    )


@torch.no_grad()
def explanation_metrics(model, cfg, dataset, ctx) -> Dict[str, Any]:
    """The metrics over the first `eval.explain_videos` videos of `dataset` (their middle
    clip, centre crop), split over ranks and summed; ground-truth metrics where the data
    has a ground_truth.json (the synthetic set)."""
    # Decided before the loop, the same on every rank: a rank leaving it early would leave
    # the others waiting in the all-reduce.
    if not is_stabn(model):
        return {}
    truth = _ground_truth(cfg)
    count = min(cfg.eval.explain_videos, len(dataset))
    totals = _Totals()
    model.eval()
    for index in range(ctx.rank, count, ctx.world_size):
        score = _score(model, cfg, dataset, index, truth, ctx.device)
        if score is not None:
            totals.add(score)
    totals = totals.summed_over_ranks(ctx.device)
    n = max(totals.videos, 1)
    result: Dict[str, Any] = {
        "videos": int(totals.videos),
        "steps": cfg.eval.explain_steps,
        "deletion_auc": totals.deletion_auc / n,
        "insertion_auc": totals.insertion_auc / n,
        "random_deletion_auc": totals.random_deletion_auc / n,
        "random_insertion_auc": totals.random_insertion_auc / n,
    }
    if totals.truth_videos > 0:
        result["pointing_game"] = totals.pointing_hits / max(totals.pointing_frames, 1)
        result["pointing_frames"] = int(totals.pointing_frames)
        result["temporal_hit"] = totals.temporal_hits / totals.truth_videos
    return result
