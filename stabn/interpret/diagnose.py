"""What ST-ABN's own attention maps look like on data with ground truth: where their peaks
fall, how saturated and how contrasted they are, and how much more they weight the target
than the rest. Figures for docs/EXPLANATIONS.md: `stabn-bench explain` prints them under its
table."""

from __future__ import annotations

from typing import Any, Dict, List, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from stabn.data import FrameClipDataset
from stabn.interpret.scoring import Box, clip_ground_truth, scored_frames
from stabn.models import model_spec

SATURATED = 0.01  # a map value this close to 0 or 1 has a vanishing sigmoid gradient


def _grid_cell(x: float, y: float, size: int, cells: int) -> tuple:
    """The (row, column) of the attention grid cell that pixel position (x, y) falls in."""
    return min(int(y * cells / size), cells - 1), min(int(x * cells / size), cells - 1)


def _box_mask(box: Box, size: int) -> Tensor:
    """[size, size] bool: the pixels whose centres lie in `box`."""
    centres = torch.arange(size, dtype=torch.float64) + 0.5
    rows = (centres >= box[1]) & (centres <= box[3])
    cols = (centres >= box[0]) & (centres <= box[2])
    return rows[:, None] & cols[None, :]


def map_statistics(
    spatial: Tensor, temporal: Tensor, boxes: Sequence[Box], in_event: Sequence[bool], size: int
) -> Dict[str, List[float]]:
    """Per-frame and per-clip figures of one clip's maps: `spatial` [T, h, w] and `temporal`
    [T] as the model outputs them, `boxes` in clip pixels (size x size)."""
    t, h, w = spatial.shape
    spatial, temporal = spatial.detach().double().cpu(), temporal.detach().double().cpu().flatten()
    up = F.interpolate(spatial[:, None].float(), size=(size, size), mode="bilinear", align_corners=False)[:, 0]
    out: Dict[str, List[float]] = {key: [] for key in ("peak_on_border", "target_on_border", "target_ratio")}
    for i in scored_frames(boxes, in_event):
        peak = int(spatial[i].argmax())
        row, col = divmod(peak, w)
        out["peak_on_border"].append(float(row in (0, h - 1) or col in (0, w - 1)))
        box = boxes[i]
        trow, tcol = _grid_cell((box[0] + box[2]) / 2, (box[1] + box[3]) / 2, size, h)
        out["target_on_border"].append(float(trow in (0, h - 1) or tcol in (0, w - 1)))
        inside = _box_mask(box, size)
        if inside.any() and (~inside).any():
            out["target_ratio"].append(float(up[i][inside].mean() / up[i][~inside].mean().clamp_min(1e-12)))
    values = spatial.flatten()
    out["spatial_mean"] = [float(values.mean())]
    out["spatial_saturated"] = [float(((values < SATURATED) | (values > 1 - SATURATED)).double().mean())]
    out["spatial_range"] = [float((spatial.flatten(1).amax(1) - spatial.flatten(1).amin(1)).mean())]
    event = torch.tensor([bool(v) for v in in_event])
    out["temporal_saturated"] = [float(((temporal < SATURATED) | (temporal > 1 - SATURATED)).double().mean())]
    out["temporal_range"] = [float(temporal.max() - temporal.min())]
    if event.any() and (~event).any():
        out["temporal_event_minus_rest"] = [float(temporal[event].mean() - temporal[~event].mean())]
    return out


@torch.no_grad()
def attention_statistics(
    model: torch.nn.Module, dataset: FrameClipDataset, truth: Dict[str, Any], count: int
) -> Dict[str, float]:
    """`map_statistics` over the first `count` videos of `dataset` (their centre view),
    averaged: shares and ratios over scored frames, the rest over clips."""
    spec = model_spec(model)
    model.eval()
    view = dataset.centre_view
    gathered: Dict[str, List[float]] = {}
    for index in range(min(count, len(dataset))):
        views, _, _ = dataset[index]
        out = model(spec.normalize(views[view : view + 1]))
        in_event, boxes = clip_ground_truth(dataset, index, truth[dataset.records[index].video_id], view)
        stats = map_statistics(out.spatial_attention[0, 0], out.temporal_attention[0], boxes, in_event, spec.frame_size)
        for key, values in stats.items():
            gathered.setdefault(key, []).extend(values)
    return {key: sum(values) / len(values) for key, values in gathered.items() if values}
