"""`eval.py`: a trained checkpoint on the validation list, with multi-view inference,
per-class figures, attention images and, optionally, explanation metrics."""

from __future__ import annotations

import contextlib
import copy
import logging
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from stabn.checkpoint import read_checkpoint, run_checkpoint
from stabn.config import Config, layered_config, parse_overrides, read_yaml
from stabn.data import clip_loader, make_dataset
from stabn.download import fetch, is_url
from stabn.engine.distributed import (
    DistContext,
    ShardSampler,
    cleanup_distributed,
    collective_errors_named,
    raise_on_every_rank,
    setup_distributed,
)
from stabn.engine.eval_reports import AttentionWriter, write_eval_reports
from stabn.engine.evaluate import evaluate
from stabn.engine.precision import amp_dtype, exact_fp32, prepare_model
from stabn.errors import ConfigError, DataError
from stabn.models import load_pretrained

log = logging.getLogger(__name__)


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
        path = run_checkpoint(run, cfg.eval.checkpoint)
    else:  # a URL is downloaded once into torch's hub cache
        path = fetch(checkpoint) if is_url(checkpoint) else Path(checkpoint)
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
        on_batch = AttentionWriter(out / "attention", dataset, cfg, model)
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
        from stabn.interpret.eval_metrics import explanation_metrics

        ctx.step = "explanation metrics"
        extra["explanation"] = explanation_metrics(model, cfg, dataset, ctx)
    summary = write_eval_reports(out, cfg, spec, result, dataset, extra, ctx)
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
