"""The parts of a training run, built from its config: datasets, model, optimizer, schedule,
gradient scaler, and the model's wrapping for DDP / DataParallel / torch.compile."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from stabn.config import Config, TrainConfig
from stabn.data import FrameClipDataset, clip_loader, make_dataset, optional_class_names
from stabn.engine.distributed import DistContext
from stabn.engine.precision import amp_dtype, prepare_model, use_channels_last
from stabn.errors import ConfigError, DataError
from stabn.models import ModelSpec, build_model, class_layers, freeze_backbone, init_from_checkpoint
from stabn.optim import build_scheduler, make_sgd, param_groups

log = logging.getLogger(__name__)


def derive_seed(*parts: int) -> int:
    """A seed mixed from integers, so that (seed, epoch, rank) tuples never share a stream."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0] >> 1)


def training_sets(cfg: Config) -> Tuple[FrameClipDataset, FrameClipDataset]:
    """The training and validation datasets of `cfg`."""
    d = cfg.data
    for key in ("train_labels", "val_labels"):
        if not getattr(d, key):
            raise ConfigError(f"data.{key} is not set: give it in the config or as data.{key}=PATH")
    train_set = make_dataset(d, d.train_labels, "train", num_classes=cfg.model.num_classes, seed=cfg.train.seed)
    if not len(train_set):
        raise DataError(f"{d.train_labels}: no videos to train on")
    return train_set, make_dataset(d, d.val_labels, "eval", num_classes=cfg.model.num_classes, seed=cfg.train.seed)


def training_model(cfg: Config, short_side: Optional[int] = None, *, init_from: bool = False) -> nn.Module:
    """The model `cfg` trains, 2D weights inflated where it asks for them; with `init_from`,
    `model.init_from`'s weights loaded over those (`stabn.models.init_from_checkpoint`)."""
    model = build_model(
        cfg.model.name,
        num_classes=cfg.model.num_classes,
        frame_length=cfg.data.frame_length,
        frame_size=cfg.data.frame_size,
        dropout=cfg.model.dropout,
        width=cfg.model.width,
        pretrained_2d=cfg.model.pretrained_2d,
        pretrained_2d_strict=cfg.model.pretrained_2d_strict,
        channel_order=cfg.data.channel_order,
        attention=cfg.model.attention,
        class_names=optional_class_names(cfg.data.class_names, cfg.model.num_classes),
        short_side=short_side,
    )
    if init_from and cfg.model.init_from:
        log.info("%s", init_from_checkpoint(model, cfg.model.init_from).summary())
    return model


def few_videos(videos: int, cfg: Config, ctx: DistContext) -> bool:
    """Whether `videos` training videos are fewer than one step takes on all ranks together."""
    return videos < ctx.world_size * cfg.train.batch_size * ctx.devices


def steps_per_epoch(videos: int, cfg: Config, ctx: DistContext) -> int:
    """Steps of one epoch of `videos` training videos: every rank's share in whole batches (one
    step when the videos are fewer than that)."""
    share = videos // ctx.world_size  # DistributedSampler with drop_last
    steps = max(1, share // (cfg.train.batch_size * ctx.devices))
    return min(steps, cfg.train.max_iters_per_epoch) if cfg.train.max_iters_per_epoch else steps


def epoch_sampler(train_set: FrameClipDataset, cfg: Config, ctx: DistContext, epoch: int) -> DistributedSampler:
    """This rank's share of `train_set` in `epoch`, shuffled by (seed, epoch)."""
    # With fewer videos than one step takes, the epoch is one smaller step (the sampler
    # repeats videos so that every rank has some), not zero steps.
    whole_batches = not few_videos(len(train_set), cfg, ctx)
    sampler = DistributedSampler(
        train_set, ctx.world_size, ctx.rank, shuffle=True, seed=cfg.train.seed, drop_last=whole_batches
    )
    sampler.set_epoch(epoch)
    return sampler


def run_loader(
    cfg: Config, ctx: DistContext, dataset: FrameClipDataset, sampler: Any, batch_size: int, *, drop_last: bool = False
) -> DataLoader:
    """The loader of a run's training or validation videos in `sampler`'s order."""
    return clip_loader(
        dataset,
        sampler,
        batch_size,
        num_workers=cfg.data.num_workers,
        device=ctx.device,
        seed=cfg.train.seed,
        drop_last=drop_last,
    )


def schedule_settings(train: TrainConfig) -> Dict[str, Any]:
    """The keyword settings of `build_scheduler` / `restart_schedule`, from `train`."""
    return dict(
        schedule=train.schedule,
        epochs=train.epochs,
        milestones=train.milestones,
        gamma=train.gamma,
        warmup_epochs=train.warmup_epochs,
    )


@dataclass
class RunParts:
    """What a run trains with. `model` is the bare model, on its device: the one whose weights
    load and save; `scheduler` is replaced when a resumed run restarts its schedule."""

    model: nn.Module
    spec: ModelSpec
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    amp_dtype: Optional[torch.dtype]
    channels_last: bool


def build_parts(cfg: Config, ctx: DistContext, *, short_side: Optional[int] = None, resuming: bool = False) -> RunParts:
    """The model of `cfg` (its frames' shortest side `short_side`), on `ctx`'s device, with
    its optimizer, schedule and gradient scaler, in the state of a fresh start. `resuming`: the
    run's own checkpoint loads next, so `model.init_from`'s file is not read (it may be gone)."""
    t = cfg.train
    precision = amp_dtype(t.amp, ctx.device)
    channels_last = use_channels_last(t.channels_last, ctx.device)
    torch.manual_seed(derive_seed(t.seed))  # the same initial weights on every rank and run
    model = training_model(cfg, short_side=short_side, init_from=not resuming)
    spec = model.spec
    # A fine-tuning run's class layers have a param group of their own, resumed or not, so that
    # its checkpoints' optimizer states fit the optimizer built here.
    head = class_layers(model) if cfg.model.init_from else ()
    if cfg.model.sync_bn and ctx.distributed:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    _freeze(model, t.freeze)
    model = prepare_model(model, ctx.device, channels_last)
    groups = param_groups(model, lr=t.lr, fast_modules=head, lr_multiplier=t.reset_lr_multiplier)
    optimizer = make_sgd(groups, ctx.device, t.lr, t.momentum, t.weight_decay, t.nesterov)
    return RunParts(
        model=model,
        spec=spec,
        optimizer=optimizer,
        scheduler=build_scheduler(optimizer, **schedule_settings(t)),
        scaler=torch.amp.GradScaler(ctx.device.type, enabled=precision == torch.float16),
        amp_dtype=precision,
        channels_last=channels_last,
    )


def _freeze(model: nn.Module, point: str) -> None:
    """`train.freeze`: the backbone frozen up to `point` (after any SyncBatchNorm conversion)."""
    if point == "none":
        return
    frozen = freeze_backbone(model, point)
    params = list(model.parameters())
    log.info("train.freeze=%s: %s frozen, their BatchNorms in eval mode; %d of %d parameter tensors train",
             point, ", ".join(frozen), sum(p.requires_grad for p in params), len(params))  # fmt: skip


def wrap_model(model: nn.Module, cfg: Config, ctx: DistContext) -> Tuple[nn.Module, nn.Module]:
    """(the module that trains, the module that validates) for the bare `model`: DDP under
    torchrun, DataParallel over a process's GPUs, compiled where `train.compile` asks."""
    if ctx.distributed:
        ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        net: nn.Module = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    elif ctx.devices > 1:
        net = nn.DataParallel(model)
    else:
        net = model
    # Validation runs the bare model: DDP's forward broadcasts buffers, a collective that a
    # rank with fewer validation videos than another would never join.
    eval_net: nn.Module = model
    if cfg.train.compile:
        net = torch.compile(net)
        eval_net = torch.compile(model)
    return net, eval_net
