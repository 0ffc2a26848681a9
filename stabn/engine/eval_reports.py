"""What `eval.py` writes: results.json, per_class.csv, the confusion matrix (CSV and PNG),
scores.npz and the attention images of the evaluated videos."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import yaml
from PIL import Image
from torch import nn

from stabn.config import Config
from stabn.data import optional_class_names
from stabn.engine.accuracy import average_views
from stabn.engine.distributed import DistContext, raise_on_every_rank
from stabn.engine.evaluate import EvalResult
from stabn.errors import ConfigError, ReportedError
from stabn.fileio import atomic_write, atomic_write_text, writing
from stabn.interpret.methods import MethodError, method_label, peer_maps, resolve_method
from stabn.interpret.saliency import CaptumMissing, require_captum
from stabn.interpret.visualize import jet, save_attention
from stabn.models import ModelSpec, STABNOutput, model_spec


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


def attention_method(cfg: Config, model: nn.Module) -> Tuple[str, Optional[str]]:
    """`eval.attention_method` (auto: `stabn.explain`'s default for `model`) and
    `eval.attention_layer` resolved for `model`, before evaluation starts; ConfigError naming
    the key that does not fit, or the missing Captum a peer method needs."""
    asked = None if cfg.eval.attention_method == "auto" else cfg.eval.attention_method
    try:
        method, _ = resolve_method(model, asked, None)
    except MethodError as e:
        raise ConfigError(f"'eval.attention_method': {e}") from None
    try:
        method, layer = resolve_method(model, method, cfg.eval.attention_layer)
    except MethodError as e:
        raise ConfigError(f"'eval.attention_layer': {e} (eval.attention_method={cfg.eval.attention_method})") from None
    if method != "attention":
        try:
            require_captum()
        except CaptumMissing as e:
            raise ConfigError(
                f"'eval.attention_method' {cfg.eval.attention_method} draws {method_label(method, layer)} for "
                f"{model_spec(model).name}: {e}"
            ) from None
    return method, layer


class AttentionWriter:
    """Saves the attention image of one view per video (the middle clip, centre crop), headed by
    the video's prediction: its views' scores averaged as evaluation averages them. The maps
    are `attention_method`'s: ST-ABN's attention from the forward pass, or a peer method's
    saliency of the video's predicted class (`stabn.interpret.methods.peer_maps`). A picture the
    operating system refuses ends the pictures; `refused` keeps its error for the end of
    evaluation, where every rank learns of it (a rank that stopped at once would leave the
    others waiting in evaluation's collectives)."""

    def __init__(self, out: Path, dataset, cfg: Config, model: nn.Module) -> None:
        self.out, self.dataset, self.cfg, self.model = out, dataset, cfg, model
        self.spec = model_spec(model)
        self.method, self.layer = attention_method(cfg, model)
        self.view, self.views = dataset.centre_view, dataset.num_views
        self.remaining = cfg.eval.max_attention_videos
        self.names = _class_names(cfg, self.spec)
        self.refused: Optional[ReportedError] = None

    def title(self, index: int, scores: torch.Tensor) -> str:
        """`video <id>: predicted <name> (<p>), label <name>` for a video's averaged scores."""
        record = self.dataset.records[index]
        top = int(scores.argmax())
        kind = "" if self.cfg.eval.average == "softmax" else "mean logit "  # what the number is
        label = f", label {self.names[record.label]}" if 0 <= record.label < len(self.names) else ""
        return f"video {record.video_id}: predicted {self.names[top]} ({kind}{float(scores[top]):.2f}){label}"

    def maps(self, clip: torch.Tensor, outputs, i: int, scores: torch.Tensor) -> Tuple[Any, Any, str]:
        """View `i`'s spatial and temporal maps and the line naming them (empty for attention)."""
        if self.method == "attention":
            return outputs.spatial_attention[i], outputs.temporal_attention[i], ""
        target = int(scores.argmax())
        spatial, temporal = peer_maps(self.model, clip, self.method, target, layer=self.layer)
        line = f"\nmap: {method_label(self.method, self.layer)} of {self.names[target]}"
        return torch.from_numpy(spatial), torch.from_numpy(temporal), line

    def __call__(self, clips, labels, indices, outputs) -> None:
        if self.remaining <= 0:
            return
        logits = outputs.logits if isinstance(outputs, STABNOutput) else outputs
        scores = average_views(logits, self.views, self.cfg.eval.average).cpu()
        for b, index in enumerate(indices.tolist()):
            if self.remaining <= 0:
                return
            i = b * self.views + self.view
            frames = self.spec.denormalize(clips[i])
            video_id = self.dataset.records[index].video_id
            spatial, temporal, line = self.maps(clips[i], outputs, i, scores[b])
            try:
                save_attention(
                    self.out / f"{video_id}.png",
                    frames,
                    spatial,
                    temporal,
                    gif=self.cfg.eval.attention_gif,
                    title=self.title(index, scores[b]) + line,
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
