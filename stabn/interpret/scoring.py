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
- Temporal hit: the frame of peak temporal attention lies inside the event window. Ties count
  fairly: where several frames share the peak (a flat profile, or a map with fewer time steps
  than the clip), the hit is the share of those frames inside the window, not whether the
  first of them is (which would make a flat profile a prior on the window's position).
- Temporal energy: the share of a temporal profile's mass inside the event window (the
  benchmark's "mass in window").
- Temporal IoU: the frames whose profile is at least `TEMPORAL_IOU_THRESHOLD` of its peak
  ("selected") against the event window's frames, |selected ∩ event| / |selected ∪ event|.
- Per-frame AUROC: the profile as a score for "this frame is in the event window", the rank
  statistic over the clip's frames (ties count half); undefined (None) for a clip with no
  event frame or only event frames.

`score_video` gives them all for one video's explanation, deletion / insertion against the
video's own random voxel order (`random_voxel_order`, which also breaks the ties of the
explanation's order), the same however the videos are split over ranks; eval.py sums them
over videos (`stabn.interpret.eval_metrics`). `bootstrap_interval` gives a percentile interval
of any of them over videos; the explanation benchmark (`stabn.interpret.benchmark`) reports
every figure with one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from stabn.data import FrameClipDataset, center_crop_offset
from stabn.models import STABNOutput

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


# Frames whose temporal profile is at least this share of its peak are the explainer's
# selected frames for the temporal IoU.
TEMPORAL_IOU_THRESHOLD = 0.5


def _event_mask(in_event: Sequence[bool]) -> Tensor:
    return torch.tensor([bool(v) for v in in_event])


def temporal_hit(temporal: Tensor, in_event: Sequence[bool]) -> float:
    """The share of the frames of peak temporal attention that lie in the event window: 1 or 0
    for a single peak, and for a peak shared by several frames (a flat profile) the share of
    them inside, so that ties are not broken by position."""
    p = temporal.detach().double().flatten().cpu()
    peaks = p == p.max()
    count = int(peaks.sum())  # 0 only for a profile of NaNs, which hits nothing
    return float((peaks & _event_mask(in_event)).sum()) / count if count else 0.0


def temporal_iou(profile: Tensor, in_event: Sequence[bool]) -> Optional[float]:
    """|selected ∩ event| / |selected ∪ event| over the clip's frames, a frame selected where the
    profile is at least `TEMPORAL_IOU_THRESHOLD` of its peak (none for a profile without a
    positive peak); None where both sets are empty."""
    p = profile.detach().double().flatten().cpu()
    peak = float(p.max())
    selected = p >= TEMPORAL_IOU_THRESHOLD * peak if peak > 0 else torch.zeros_like(p, dtype=torch.bool)
    event = _event_mask(in_event)
    union = int((selected | event).sum())
    return int((selected & event).sum()) / union if union else None


def average_ranks(values: Tensor) -> Tensor:
    """The ranks 1..n of a flat tensor's values in float64, tied values sharing the mean of
    the ranks they span."""
    _, inverse, counts = torch.unique(values.flatten(), return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).double()
    return (ends - (counts.double() - 1) / 2)[inverse]


def temporal_auroc(profile: Tensor, in_event: Sequence[bool]) -> Optional[float]:
    """The AUROC of the profile as a score for "this frame is in the event window": the chance
    that an event frame scores above a frame outside it, ties counting half (the rank
    statistic); None for a clip with no event frame or only event frames."""
    event = _event_mask(in_event)
    positives, negatives = int(event.sum()), int((~event).sum())
    if positives == 0 or negatives == 0:
        return None
    ranks = average_ranks(profile.detach().double().flatten().cpu())
    return (float(ranks[event].sum()) - positives * (positives + 1) / 2) / (positives * negatives)


def temporal_energy(profile: Tensor, in_event: Sequence[bool]) -> float:
    """The share of a non-negative temporal profile's mass [T] inside the event window; 0 for a
    profile without mass."""
    p = profile.detach().double().flatten().cpu()
    total = float(p.sum())
    if total <= 0:
        return 0.0
    return float(p[_event_mask(in_event)].sum()) / total


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
    height, width, scale = dataset.frame_geometry(index)
    y0, x0 = center_crop_offset(height, width, dataset.frame_size)
    return in_event, [_shift(_scaled(truth["boxes"][f], scale), x0, y0) for f in frames]


def video_truth(truth: Dict[str, Any], video_id: str) -> Optional[Dict[str, Any]]:
    """The ground-truth entry of a video: by its id, or for a video file by its name without
    the suffix (ground_truth.json names videos as their frame folders)."""
    return truth.get(video_id, truth.get(os.path.splitext(video_id)[0]))


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


# Streams of numpy's generator per (seed, stream, video): one per use, so that no two uses draw
# the same numbers.
RANDOM_VOLUME_STREAM, RANDOM_ORDER_STREAM, NOISE_STREAM = 0, 1, 2


def video_rng(seed: int, stream: int, index: int) -> np.random.Generator:
    """Numpy's generator of stream `stream` for video `index`: the same for a video however
    the videos are split over ranks."""
    return np.random.default_rng([seed, stream, index])


def random_voxel_order(seed: int, index: int, numel: int) -> Tensor:
    """The random voxel order of video `index`: a permutation of its `numel` flat voxel indices."""
    return torch.from_numpy(video_rng(seed, RANDOM_ORDER_STREAM, index).permutation(numel))


def saliency_order(volume: Tensor, random_order: Tensor) -> Tensor:
    """Voxels of `volume` by decreasing saliency, ties in the order of `random_order` (flat
    indices), so that a flat map is not read in raster order."""
    random_order = random_order.to(volume.device)
    shuffled = volume.flatten()[random_order]
    return random_order[shuffled.argsort(descending=True, stable=True)]


@dataclass(frozen=True)
class Perturbation:
    """What deletion / insertion of one clip needs."""

    prob: Callable[[Tensor], Tensor]  # batch of clips -> target probability (`target_probability`)
    clip: Tensor  # [3, T, H, W], normalised
    random_order: Tensor  # flat voxel indices (`random_voxel_order`)
    steps: int


class VideoScore(NamedTuple):
    """One video's figures for one explanation; None where not applicable."""

    deletion_auc: Optional[float] = None  # None: no AUC wanted
    insertion_auc: Optional[float] = None
    random_deletion_auc: Optional[float] = None  # None: the random order's not wanted
    random_insertion_auc: Optional[float] = None
    pointing_hits: Optional[int] = None  # None: no ground truth
    pointing_frames: Optional[int] = None
    energy_in_box: Optional[float] = None  # mean over the scored frames; None: none scored
    event_frames: Optional[int] = None  # clip frames in the event window; None: no ground truth
    temporal_hit: Optional[float] = None  # None: no ground truth or no temporal profile
    temporal_energy: Optional[float] = None
    temporal_iou: Optional[float] = None
    temporal_auroc: Optional[float] = None  # also None: no frame, or every frame, in the window


def score_video(
    volume: Tensor,
    profile: Optional[Tensor],
    *,
    in_event: Optional[Sequence[bool]] = None,
    boxes: Optional[Sequence[Box]] = None,
    perturbation: Optional[Perturbation] = None,
    with_random: bool = False,
) -> VideoScore:
    """Score one video's explanation: `volume` [T, H, W] and temporal `profile` [T] (or None),
    against the clip's ground truth (`clip_ground_truth`'s `in_event` and `boxes`, or None),
    and, given a `perturbation`, by deletion / insertion in `saliency_order` (with the random
    order's own AUCs where `with_random`)."""
    figures: Dict[str, Any] = {}
    if perturbation is not None:
        order = saliency_order(volume, perturbation.random_order)
        figures["deletion_auc"], figures["insertion_auc"] = _aucs(perturbation, order)
        if with_random:
            figures["random_deletion_auc"], figures["random_insertion_auc"] = _aucs(
                perturbation, perturbation.random_order
            )
    if in_event is not None and boxes is not None:
        hits, frames = pointing_game(volume, boxes, in_event)
        figures.update(pointing_hits=hits, pointing_frames=frames, event_frames=sum(map(bool, in_event)))
        if frames:
            figures["energy_in_box"] = float(np.mean(energy_in_box(volume, boxes, in_event)))
        if profile is not None:
            figures["temporal_hit"] = temporal_hit(profile, in_event)
            figures["temporal_energy"] = temporal_energy(profile, in_event)
            figures["temporal_iou"] = temporal_iou(profile, in_event)
            figures["temporal_auroc"] = temporal_auroc(profile, in_event)
    return VideoScore(**figures)


def _aucs(perturbation: Perturbation, order: Tensor) -> Tuple[float, float]:
    """Deletion and insertion AUC of `perturbation`'s clip in voxel `order`."""
    p = perturbation
    with torch.no_grad():
        deletion, insertion = deletion_insertion(p.prob, p.clip, order.to(p.clip.device), p.steps)
    return auc(deletion), auc(insertion)


def _scaled(box: Box, scale: float) -> Box:
    return box if box is None or scale == 1.0 else [c * scale for c in box]


def _shift(box: Box, x0: int, y0: int) -> Box:
    return None if box is None else [box[0] - x0, box[1] - y0, box[2] - x0, box[3] - y0]
