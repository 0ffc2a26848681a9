"""What `eval.py` writes: results.json, per_class.csv, the confusion matrix (CSV and PNG),
scores.npz and the attention images of the evaluated videos."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch
import yaml
from PIL import Image

from stabn.config import Config
from stabn.data import optional_class_names
from stabn.engine.accuracy import average_views
from stabn.engine.distributed import DistContext, raise_on_every_rank
from stabn.engine.evaluate import EvalResult
from stabn.errors import ReportedError
from stabn.fileio import atomic_write, atomic_write_text, writing
from stabn.interpret.visualize import jet, save_attention
from stabn.models import ModelSpec, STABNOutput


def _class_names(cfg: Config, spec: ModelSpec) -> List[str]:
    """The names the checkpoint carries; for a file without them (the original's), those of
    `data.class_names` when it fits; else the class numbers."""
    names = spec.class_names or optional_class_names(cfg.data.class_names, spec.num_classes)
    return list(names) if names else [str(i) for i in range(spec.num_classes)]


def confusion_png(confusion: torch.Tensor, scale: int = 4) -> bytes:
    """Row-normalised confusion matrix as a jet-coloured PNG, `scale` px per cell."""
    m = confusion.double()
    rows = m.sum(dim=1, keepdim=True).clamp_min(1)
    image = jet((m / rows).numpy())
    image = np.repeat(np.repeat(image, scale, axis=0), scale, axis=1)
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def write_reports(out: Path, result: EvalResult, names: Sequence[str], extra: Mapping[str, Any]) -> Dict[str, Any]:
    """results.json (the original's keys and more), per_class.csv, confusion.csv/.png."""
    with writing(out):
        out.mkdir(parents=True, exist_ok=True)
    per_class = result.per.per_class_accuracy().tolist()
    support = result.per.confusion.sum(dim=1).tolist()
    summary = {
        **result.summary(),
        **extra,
        "per_class_accuracy": {n: (None if np.isnan(a) else a) for n, a in zip(names, per_class)},
    }
    atomic_write_text(out / "results.json", json.dumps(summary, indent=2) + "\n")

    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["class_id", "class_name", "videos", "top1_accuracy"])
    for i, (n, s, a) in enumerate(zip(names, support, per_class)):
        writer.writerow([i, n, s, "" if np.isnan(a) else f"{a:.6f}"])
    atomic_write_text(out / "per_class.csv", text.getvalue())

    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["true\\predicted"] + list(names))
    for n, row in zip(names, result.per.confusion.tolist()):
        writer.writerow([n] + row)
    atomic_write_text(out / "confusion.csv", text.getvalue())
    png = confusion_png(result.per.confusion)
    atomic_write(out / "confusion.png", lambda f: f.write(png))
    return summary


def write_scores(path: Path, scores: Mapping[str, torch.Tensor], dataset) -> None:
    """scores.npz: `video_ids`, `labels`, and each video's averaged scores of the perception
    branch (`per`, [N, K]) and of the attention branch (`att`, where there is one)."""
    records = [dataset.records[i] for i in scores["index"].tolist()]
    arrays = {"video_ids": np.array([r.video_id for r in records]), "labels": np.array([r.label for r in records])}
    arrays.update({key: value.numpy() for key, value in scores.items() if key != "index"})
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write(path, lambda f: f.write(buf.getvalue()))


class AttentionWriter:
    """Saves the attention image of one view per video (the middle clip, centre crop), headed by
    the video's prediction: its views' scores averaged as evaluation averages them. A picture
    the operating system refuses ends the pictures; `refused` keeps its error for the end of
    evaluation, where every rank learns of it (a rank that stopped at once would leave the
    others waiting in evaluation's collectives)."""

    def __init__(self, out: Path, dataset, cfg: Config, spec: ModelSpec) -> None:
        self.out, self.dataset, self.cfg, self.spec = out, dataset, cfg, spec
        self.view, self.views = dataset.centre_view, dataset.num_views
        self.remaining = cfg.eval.max_attention_videos
        self.names = _class_names(cfg, spec)
        self.refused: Optional[ReportedError] = None

    def title(self, index: int, scores: torch.Tensor) -> str:
        """`video <id>: predicted <name> (<p>), label <name>` for a video's averaged scores."""
        record = self.dataset.records[index]
        top = int(scores.argmax())
        kind = "" if self.cfg.eval.average == "softmax" else "mean logit "  # what the number is
        label = f", label {self.names[record.label]}" if 0 <= record.label < len(self.names) else ""
        return f"video {record.video_id}: predicted {self.names[top]} ({kind}{float(scores[top]):.2f}){label}"

    def __call__(self, clips, labels, indices, outputs) -> None:
        if not isinstance(outputs, STABNOutput) or self.remaining <= 0:
            return
        scores = average_views(outputs.logits, self.views, self.cfg.eval.average).cpu()
        for b, index in enumerate(indices.tolist()):
            if self.remaining <= 0:
                return
            i = b * self.views + self.view
            frames = self.spec.denormalize(clips[i])
            video_id = self.dataset.records[index].video_id
            try:
                save_attention(
                    self.out / f"{video_id}.png",
                    frames,
                    outputs.spatial_attention[i],
                    outputs.temporal_attention[i],
                    gif=self.cfg.eval.attention_gif,
                    title=self.title(index, scores[b]),
                )
            except ReportedError as e:
                self.refused, self.remaining = e, 0
                return
            self.remaining -= 1


def write_eval_reports(
    out: Path, cfg: Config, spec: ModelSpec, result: EvalResult, dataset, extra: Mapping[str, Any], ctx: DistContext
) -> Dict[str, Any]:
    """Rank 0 writes the reports under `out`, the resolved config beside them and, where kept,
    the scores; returns the summary (empty on the other ranks). A write the operating system
    refuses stops every rank, with its line."""
    summary: Dict[str, Any] = {}
    refused: Optional[ReportedError] = None
    ctx.step = "the reports"
    if ctx.is_main:
        try:
            summary = write_reports(out, result, _class_names(cfg, spec), extra)
            atomic_write_text(out / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
            if result.scores is not None:
                write_scores(out / "scores.npz", result.scores, dataset)
        except ReportedError as e:
            refused = e
    raise_on_every_rank(refused, ctx)
    return summary
