"""The one evaluation routine: training-time validation and `eval.py` both call it.

Each video arrives as V views (clips x crops); the views go through the model as one batch
and their scores are averaged per video. Under torch.distributed every video is seen by
exactly one rank and the counts are summed, so the figures are exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from stabn.engine.accuracy import ClassificationMeter, average_views
from stabn.engine.distributed import DistContext
from stabn.engine.precision import autocast, clips_layout
from stabn.models import STABNOutput, is_stabn, model_spec


@dataclass
class EvalResult:
    num_videos: int
    views_per_video: int
    per: ClassificationMeter
    att: Optional[ClassificationMeter]  # None for models without an attention branch
    # With `keep_scores`: every video's dataset index and averaged scores [N, K] of each branch,
    # gathered from every rank, in index order.
    scores: Optional[Dict[str, Tensor]] = None

    def summary(self) -> Dict[str, Any]:
        """The original's keys (`top-1_accuracy` / `top-5_accuracy` with `per` and `att`)."""
        out: Dict[str, Any] = {"num_videos": self.num_videos, "views_per_video": self.views_per_video}
        for k in (1, 5):
            entry = {"per": self.per.topk()[k]}
            if self.att is not None:
                entry["att"] = self.att.topk()[k]
            out[f"top-{k}_accuracy"] = entry
        return out


BatchCallback = Callable[[Tensor, Tensor, Tensor, Any], None]


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Any,
    ctx: DistContext,
    average: str = "softmax",
    amp_dtype: Optional[torch.dtype] = None,
    channels_last: bool = False,
    on_batch: Optional[BatchCallback] = None,
    on_skipped: Optional[Callable[[Sequence[str]], None]] = None,
    progress: bool = True,
    keep_scores: bool = False,
) -> EvalResult:
    """Top-1/Top-5 of both branches over `loader`, whose batches are `ClipBatch`es of
    RGB uint8 views [B, V, 3, T, S, S], normalised as the model's spec says; `on_skipped`
    hears of videos the loader dropped.

    `on_batch(clips, labels, indices, outputs)` sees each normalised batch (views flattened
    to [B*V, ...]) and the model's raw output, e.g. to draw attention maps. `keep_scores` keeps
    each video's averaged scores in the result."""
    model.eval()
    spec = model_spec(model)
    per = ClassificationMeter(spec.num_classes)
    # Decided up front, not from the outputs: a rank with no videos must still all-reduce.
    att = ClassificationMeter(spec.num_classes) if is_stabn(model) else None
    views_per_video = 0
    kept: Dict[str, List[Tensor]] = {"index": [], "per": [], "att": []}
    bar = tqdm(loader, desc="eval", leave=False, disable=(not (progress and ctx.is_main)) or None)
    for views, labels, indices, skipped in bar:
        if skipped and on_skipped is not None:
            on_skipped(skipped)
        if labels.numel() == 0:
            continue
        b, v = views.shape[:2]
        views_per_video = v
        clips = views.to(ctx.device, non_blocking=True).flatten(0, 1)
        clips = spec.normalize(clips)
        clips = clips_layout(clips, channels_last)
        with autocast(ctx.device, amp_dtype):
            outputs = model(clips)
        if isinstance(outputs, STABNOutput):
            att_scores = average_views(outputs.att_logits, v, average)
            att.update(att_scores, labels)
            if keep_scores:
                kept["att"].append(att_scores.cpu())
            logits = outputs.logits
        else:
            logits = outputs
        per_scores = average_views(logits, v, average)
        per.update(per_scores, labels)
        if keep_scores:
            kept["per"].append(per_scores.cpu())
            kept["index"].append(indices.cpu())
        if on_batch is not None:
            on_batch(clips, labels, indices, outputs)
    per.all_reduce()
    if att is not None:
        att.all_reduce()
    if att is None:
        del kept["att"]
    scores = _gather_scores(kept, spec.num_classes) if keep_scores else None
    return EvalResult(per.count, views_per_video, per, att, scores)


def _gather_scores(kept: Dict[str, List[Tensor]], num_classes: int) -> Dict[str, Tensor]:
    """Every rank's kept scores, concatenated and sorted by dataset index."""
    import torch.distributed as dist

    # A rank without videos still takes part, with empty tensors.
    empty = {"index": torch.empty(0, dtype=torch.int64)}
    local = {key: torch.cat(parts) if parts else empty.get(key, torch.empty(0, num_classes))
             for key, parts in kept.items()}  # fmt: skip
    if dist.is_available() and dist.is_initialized():
        everyone: List[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(everyone, local)
        local = {key: torch.cat([part[key] for part in everyone]) for key in local}
    order = local["index"].argsort()
    return {key: value[order] for key, value in local.items()}
