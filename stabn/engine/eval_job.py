"""`eval.py`: a trained checkpoint on the validation list, with multi-view inference,
per-class figures, attention images and, optionally, explanation metrics."""

from __future__ import annotations

import contextlib
import copy
import csv
import io
import json
import logging
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np
import torch
import yaml
from PIL import Image

from stabn.checkpoint import read_checkpoint
from stabn.config import Config, layered_config, parse_overrides, read_yaml
from stabn.data import clip_loader, make_dataset, optional_class_names
from stabn.engine.accuracy import average_views
from stabn.engine.distributed import (
    DistContext,
    ShardSampler,
    cleanup_distributed,
    collective_errors_named,
    raise_on_every_rank,
    setup_distributed,
)
from stabn.engine.evaluate import EvalResult, evaluate
from stabn.engine.precision import amp_dtype, exact_fp32, prepare_model
from stabn.errors import ConfigError, DataError, ReportedError
from stabn.fileio import atomic_write, atomic_write_text, writing
from stabn.interpret.visualize import jet, save_attention
from stabn.models import ModelSpec, STABNOutput, load_pretrained

log = logging.getLogger(__name__)

_CHECKPOINT_NAMES = {"best": "checkpoint-best.pt", "latest": "checkpoint-latest.pt", "final": "checkpoint-final.pt"}


def _merge(base: Dict[str, Any], top: Mapping[str, Any]) -> Dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def resolve_eval_config(logdir: str, checkpoint: Optional[str], overrides: Sequence[str]):
    """The config a checkpoint was trained with (the run's config.yaml, else the one stored
    in the checkpoint), then the overrides. Also returns the checkpoint path and the keys
    given explicitly, which are the hints for files of the original."""
    run = Path(logdir)
    command_line = parse_overrides(overrides)
    layers: List = []
    saved_path = run / "config.yaml"
    if saved_path.is_file():
        layers.append((read_yaml(saved_path)[0], f"{saved_path}: "))
    layers.append((command_line, "command line: "))
    layers.append(({"logdir": logdir}, "--logdir: "))
    cfg = layered_config(layers)
    if checkpoint is None:
        name = cfg.eval.checkpoint
        path = run / _CHECKPOINT_NAMES[name] if name in _CHECKPOINT_NAMES else Path(name)
    else:
        path = Path(checkpoint)
    if not saved_path.is_file():
        stored = read_checkpoint(path).get("run_config")
        if isinstance(stored, Mapping):
            layers.insert(0, (dict(stored), f"{path}: "))
            cfg = layered_config(layers)
    explicit: Dict[str, Any] = {}
    for values, _ in layers:
        explicit = _merge(explicit, values)
    return cfg, path, explicit


def _model_hints(cfg: Config, explicit: Mapping[str, Any]) -> Dict[str, Any]:
    """The model keys the user (or the run's config) gave, typed; the checkpoint or its
    weights decide the rest."""
    model, data = explicit.get("model", {}), explicit.get("data", {})
    keys = {
        "model": ("name" in model, cfg.model.name),
        "num_classes": ("num_classes" in model, cfg.model.num_classes),
        "width": ("width" in model, cfg.model.width),
        "frame_length": ("frame_length" in data, cfg.data.frame_length),
        "frame_size": ("frame_size" in data, cfg.data.frame_size),
    }
    return {k: value for k, (given, value) in keys.items() if given}


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


def eval_model_and_data(cfg: Config, checkpoint: Path, explicit: Mapping[str, Any]):
    """The model in `checkpoint` and the dataset of `cfg.data.val_labels` it is evaluated on;
    `cfg` takes the architecture and preprocessing from the checkpoint."""
    model = load_pretrained(checkpoint, **_model_hints(cfg, explicit))
    spec = model.spec
    # The checkpoint decides the architecture and preprocessing it was trained with.
    cfg.model.name, cfg.model.num_classes, cfg.model.width = spec.name, spec.num_classes, spec.width
    cfg.data.frame_length, cfg.data.frame_size = spec.frame_length, spec.frame_size
    cfg.data.channel_order = spec.channel_order
    if not cfg.data.val_labels:
        raise ConfigError("data.val_labels is not set: give data.val_labels=... and data.frames_root=...")

    dataset = make_dataset(
        cfg.data,
        cfg.data.val_labels,
        "eval",
        num_classes=spec.num_classes,
        seed=cfg.eval.seed,
        num_clips=cfg.eval.num_clips,
        num_crops=cfg.eval.num_crops,
    )
    if not len(dataset):
        raise DataError(f"{cfg.data.val_labels}: no videos to evaluate")
    return model, dataset


def run_eval(cfg: Config, checkpoint: Path, explicit: Mapping[str, Any], ctx: DistContext) -> Dict[str, Any]:
    """Evaluate `checkpoint` on `cfg.data.val_labels`; rank 0 writes the reports."""
    model, dataset = eval_model_and_data(cfg, checkpoint, explicit)
    spec = model.spec
    loader = clip_loader(
        dataset,
        ShardSampler(len(dataset), ctx.rank, ctx.world_size),
        cfg.eval.batch_size,
        num_workers=cfg.data.num_workers,
        device=ctx.device,
        seed=cfg.eval.seed,
    )
    # eval's own precision and layout, not training's: fp32 NCDHW unless asked.
    precision = amp_dtype(cfg.eval.amp, ctx.device)
    prepare_model(model, ctx.device, cfg.eval.channels_last)
    out = Path(cfg.logdir) / cfg.eval.output
    on_batch = None
    if cfg.eval.save_attention:
        on_batch = AttentionWriter(out / "attention", dataset, cfg, spec)
    skipped: List[str] = []
    ctx.step = "evaluation"
    with exact_fp32() if precision is None else contextlib.nullcontext():
        result = evaluate(model, loader, ctx, cfg.eval.average, amp_dtype=precision,
                          channels_last=cfg.eval.channels_last, on_batch=on_batch, on_skipped=skipped.extend,
                          keep_scores=cfg.eval.save_scores)  # fmt: skip
    raise_on_every_rank(on_batch.refused if on_batch is not None else None, ctx)  # a refused picture
    extra: Dict[str, Any] = {
        "checkpoint": str(checkpoint),
        "model": cfg.model.name,
        "average": cfg.eval.average,
        "num_clips": cfg.eval.num_clips,
        "num_crops": cfg.eval.num_crops,
        "amp": cfg.eval.amp,
        "channels_last": cfg.eval.channels_last,
    }
    if cfg.eval.explain_metrics:
        from stabn.interpret.scoring import explanation_metrics

        ctx.step = "explanation metrics"
        extra["explanation"] = explanation_metrics(model, cfg, dataset, ctx)
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
    if ctx.is_main:
        log.info(
            "Top-1 %s, Top-5 %s over %d videos x %d views; reports in %s",
            summary["top-1_accuracy"],
            summary["top-5_accuracy"],
            result.num_videos,
            result.views_per_video,
            out,
        )
    if skipped:
        log.warning("%d videos could not be read and were skipped", len(skipped))
    return summary


def eval_job(logdir: str, checkpoint: Optional[str], overrides: Sequence[str]) -> Dict[str, Any]:
    """`eval.py`'s work: one process, or one rank under torchrun."""
    cfg, path, explicit = resolve_eval_config(logdir, checkpoint, overrides)
    ctx = setup_distributed("ddp", cfg.eval.collective_timeout)
    try:
        with collective_errors_named(ctx, cfg.eval.collective_timeout, "eval.collective_timeout"):
            return run_eval(cfg, path, explicit, ctx)
    finally:
        cleanup_distributed()
