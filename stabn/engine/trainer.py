"""The one training loop, shared by `train_dp.py` and `train_ddp.py`."""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import time
import traceback
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

import numpy as np
import torch
from torch import nn
from torch.utils.data import DistributedSampler
from tqdm import tqdm

from stabn.checkpoint import (
    extract_state_dict,
    load_weights,
    newest_intact_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from stabn.config import Config, config_from_dict, flat_config, save_config
from stabn.data import FrameClipDataset, JitterConfig, clip_loader, make_dataset, optional_class_names
from stabn.engine.distributed import (
    DistContext,
    RelayedError,
    ShardSampler,
    collective_errors_named,
    max_over_ranks,
    raise_on_every_rank,
)
from stabn.engine.evaluate import EvalResult, evaluate
from stabn.engine.events import EventsWriter
from stabn.engine.losses import classification_losses
from stabn.engine.precision import amp_dtype, autocast, clips_layout, prepare_model, use_channels_last
from stabn.engine.preemption import Preempted, StopRequest
from stabn.errors import (
    ConfigError,
    DamagedCheckpoint,
    DataError,
    ReportedError,
    StabnError,
    WriteRefused,
    error_message,
)
from stabn.fileio import atomic_write_text, writing
from stabn.models import build_model
from stabn.optim import build_scheduler, make_sgd, restart_schedule

log = logging.getLogger(__name__)


class TrainingError(StabnError):
    """Training cannot go on (e.g. the loss is no longer finite)."""


# The train keys whose values a checkpoint's optimizer and scheduler states carry.
_OPTIMIZER_KEYS = ("momentum", "weight_decay", "nesterov")
_SCHEDULE_KEYS = ("lr", "schedule", "epochs", "milestones", "gamma", "warmup_epochs")
# How a run resumes, which is no change to the run itself.
_RESUME_KEYS = ("train.resume", "train.resume_strict")


def _changes_since(ckpt: Mapping[str, Any], cfg: Config) -> Dict[str, Tuple[Any, Any]]:
    """Dotted config key -> (the checkpoint run's value, `cfg`'s) where the two differ. A
    checkpoint of the original holds no config: its optimizer state tells lr, momentum, weight
    decay and Nesterov."""
    now = flat_config(cfg)
    stored = ckpt.get("run_config")
    if isinstance(stored, Mapping):
        then = flat_config(config_from_dict(stored))
    else:
        group = ((ckpt.get("optimizer_state_dict") or {}).get("param_groups") or [{}])[0]
        then = {f"train.{key}": group[key] for key in _OPTIMIZER_KEYS if key in group}
        if "initial_lr" in group:
            then["train.lr"] = group["initial_lr"]
    return {key: (then[key], now[key]) for key in then if key not in _RESUME_KEYS and then[key] != now[key]}


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


def training_model(cfg: Config, short_side: Optional[int] = None) -> nn.Module:
    """The model `cfg` trains, 2D weights inflated where it asks for them."""
    return build_model(
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


def resume_checkpoint(cfg: Config) -> Optional[Path]:
    """The checkpoint a run of `cfg` resumes from, None for a fresh start: `train.resume`'s
    file, or for `latest` the run folder's checkpoint-latest.pt where there is one yet."""
    resume = cfg.train.resume
    if not resume and int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0:
        resume = "latest"  # torchrun restarted the workers: carry on where they stopped
    if not resume:
        return None
    if resume != "latest":
        return Path(resume)
    path = Path(cfg.logdir) / "checkpoint-latest.pt"
    if not path.exists():
        log.info("no %s yet; starting from scratch", path)
        return None
    return path


def read_resume_checkpoint(cfg: Config, announce: bool = True) -> Optional[Tuple[Path, Dict[str, Any]]]:
    """The checkpoint a run of `cfg` resumes from (`resume_checkpoint`) and its contents; None
    for a fresh start. A checkpoint-latest.pt that cannot be read (cut short, damaged) gives way
    to the newest checkpoint of the run that reads, with a warning naming both (where
    `announce`): the epochs since that one are trained again, instead of the job stopping while
    older checkpoints sit beside it. `train.resume_strict=true` stops instead; a checkpoint
    named by its path never gives way."""
    path = resume_checkpoint(cfg)
    if path is None:
        return None
    try:
        return path, read_checkpoint(path)
    except DamagedCheckpoint as e:
        if cfg.train.resume not in (None, "latest"):
            raise
        if cfg.train.resume_strict:
            raise DamagedCheckpoint(f"{e} (train.resume_strict=true: no older checkpoint instead)") from None
        damaged = str(e)
    found = newest_intact_checkpoint(path)
    if found is None:
        raise DamagedCheckpoint(f"{damaged}; no other checkpoint in {path.parent} reads either")
    if announce:
        log.warning(
            "%s; resuming from %s instead, the newest checkpoint of the run that reads (after epoch %d)",
            damaged,
            found[0],
            int(found[1].get("epoch", 0)),
        )
    return found


def derive_seed(*parts: int) -> int:
    """A seed mixed from integers, so that (seed, epoch, rank) tuples never share a stream."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0] >> 1)


class Trainer:
    """Holds what a run needs; `fit()` trains, validates, logs and checkpoints."""

    def __init__(self, cfg: Config, ctx: DistContext) -> None:
        self.cfg, self.ctx = cfg, ctx
        self.logdir = Path(cfg.logdir)
        d, t = cfg.data, cfg.train
        self.amp_dtype = amp_dtype(t.amp, ctx.device)
        self.channels_last = use_channels_last(t.channels_last, ctx.device)

        self.train_set, self.val_set = training_sets(cfg)
        self.jitter = None if d.jitter == "none" else JitterConfig(mode=d.jitter)
        self.skipped = 0

        torch.manual_seed(derive_seed(t.seed))  # the same initial weights on every rank and run
        model = training_model(cfg, short_side=min(self.train_set.first_frame_size() or (0,)) or None)
        self.spec = model.spec
        if cfg.model.sync_bn and ctx.distributed:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model = prepare_model(model, ctx.device, self.channels_last)
        self.optimizer = make_sgd(model.parameters(), ctx.device, t.lr, t.momentum, t.weight_decay, t.nesterov)
        self.scheduler = build_scheduler(self.optimizer, **self._schedule_settings())
        self.scaler = torch.amp.GradScaler(ctx.device.type, enabled=self.amp_dtype == torch.float16)
        self.start_epoch, self.iteration, self.best_score = 0, 0, 0.0
        self.history: List[Dict[str, Any]] = []
        self.partial: Optional[Dict[str, Any]] = None
        # Config keys that differ from the resumed checkpoint's run: (then, now).
        self.changes: Dict[str, Tuple[Any, Any]] = {}
        self.stop = StopRequest()
        # A write of this process that the operating system refused, until every rank knows.
        self.refused: Optional[ReportedError] = None
        self._config_saved = False
        self._resume()

        if ctx.distributed:
            ids = [ctx.device.index] if ctx.device.type == "cuda" else None
            self.net: nn.Module = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        elif ctx.devices > 1:
            self.net = nn.DataParallel(model)
        else:
            self.net = model
        # Validation runs the bare model: DDP's forward broadcasts buffers, a collective that a
        # rank with fewer validation videos than another would never join.
        self.eval_net: nn.Module = model
        if t.compile:
            self.net = torch.compile(self.net)
            self.eval_net = torch.compile(model)
        self.events: Optional[EventsWriter] = None  # rank 0's, opened by fit()

    # -- checkpoints --------------------------------------------------------------------
    @contextlib.contextmanager
    def _writes(self) -> Iterator[None]:
        """Rank 0's writes (the other ranks pass through the block): a write the operating
        system refuses ends the block on rank 0, and every rank raises its line at the end
        (`raise_on_every_rank`, a barrier too), so that no rank trains on without rank 0."""
        try:
            yield
        except ReportedError as e:
            self._refused(e)
        raise_on_every_rank(self.refused, self.ctx)

    def _refused(self, error: ReportedError) -> None:
        """Keep `error` for every rank to raise; a refused write says how to go on."""
        if isinstance(error, WriteRefused):
            error = WriteRefused(
                f"{error}; the files written before are intact: fix that, then go on with --resume latest"
            )
        self.refused = error

    def save(self, name: str, epoch: int, partial: Optional[Dict[str, Any]] = None) -> None:
        """Rank 0 writes `name`; `epoch` counts completed epochs, and `partial` holds where
        an interrupted epoch stands (steps done, RNG states, running loss sums)."""
        if not self.ctx.is_main:
            return
        extra = {"run_config": self.cfg.to_dict(), "history": self.history}
        if partial is not None:
            extra["partial_epoch"] = partial
        save_checkpoint(
            self.logdir / name,
            self.model,
            self.spec.to_dict(),
            self.optimizer,
            self.scheduler,
            epoch=epoch,
            iteration=self.iteration,
            best_score=self.best_score,
            extra=extra,
        )
        if not self._config_saved:
            # Written after the first checkpoint, not at start-up: a run that fails before it
            # has saved anything (a crash, a refused write) leaves an earlier run's config.yaml
            # in place, the config of the checkpoints there.
            save_config(self.cfg, self.logdir)
            self._config_saved = True

    def _resume(self) -> None:
        found = read_resume_checkpoint(self.cfg, announce=self.ctx.is_main)
        if found is None:
            return
        path, ckpt = found
        load_weights(self.model, extract_state_dict(ckpt, path), path)
        if ckpt.get("optimizer_state_dict"):
            self.optimizer.load_state_dict(ckpt["optimizer_state_dict"])
        if ckpt.get("scheduler_state_dict"):
            self.scheduler.load_state_dict(ckpt["scheduler_state_dict"])
        self.start_epoch = int(ckpt.get("epoch", 0))
        self.iteration = int(ckpt.get("iteration", 0))
        self.best_score = float(ckpt.get("best_score", 0.0))
        self.history = list(ckpt.get("history") or [])
        self.partial = ckpt.get("partial_epoch")
        where = f", step {self.partial['step']}" if self.partial else ""
        log.info("resumed from %s at epoch %d%s", path, self.start_epoch + 1, where)
        self._take_changes(ckpt, path)

    def _take_changes(self, ckpt: Dict[str, Any], path: Path) -> None:
        """Apply the config's values where they differ from the checkpoint's run, from the
        resume point on: the loaded optimizer and scheduler states hold the old ones."""
        self.changes = _changes_since(ckpt, self.cfg)
        for key, (then, now) in self.changes.items():
            log.info("%s: %r in %s, %r from epoch %d on", key, then, path.name, now, self.start_epoch + 1)
        changed = {key.split(".", 1)[1] for key in self.changes if key.startswith("train.")}
        t = self.cfg.train
        if self.partial and "batch_size" in changed:
            then = self.changes["train.batch_size"][0]
            raise ConfigError(
                f"{path} stopped inside epoch {self.start_epoch + 1} with train.batch_size={then}: resume it with "
                "that batch size, or resume from a checkpoint of an epoch's end"
            )
        if changed & set(_OPTIMIZER_KEYS):
            for group in self.optimizer.param_groups:
                group.update(momentum=t.momentum, weight_decay=t.weight_decay, nesterov=t.nesterov)
        if changed & set(_SCHEDULE_KEYS):
            self.scheduler = restart_schedule(self.optimizer, t.lr, self.start_epoch, **self._schedule_settings())

    def _schedule_settings(self) -> Dict[str, Any]:
        """The keyword settings of `build_scheduler` / `restart_schedule`, from `cfg.train`."""
        t = self.cfg.train
        return dict(
            schedule=t.schedule, epochs=t.epochs, milestones=t.milestones, gamma=t.gamma, warmup_epochs=t.warmup_epochs
        )

    # -- loop ---------------------------------------------------------------------------
    def train_one_epoch(self, epoch: int) -> Dict[str, float]:
        cfg, ctx = self.cfg, self.ctx
        # Everything random in an epoch derives from (seed, epoch, rank): a resumed run
        # replays exactly what an uninterrupted one would have done.
        torch.manual_seed(derive_seed(cfg.train.seed, epoch, ctx.rank))
        jitter_gen = torch.Generator().manual_seed(derive_seed(cfg.train.seed, epoch, ctx.rank, 1))
        self.train_set.set_epoch(epoch)
        # With fewer videos than one step takes, the epoch is one smaller step (the sampler
        # repeats videos so that every rank has some), not zero steps.
        whole_batches = not self.few_videos
        sampler = DistributedSampler(
            self.train_set, ctx.world_size, ctx.rank, shuffle=True, seed=cfg.train.seed, drop_last=whole_batches
        )
        sampler.set_epoch(epoch)
        batch = cfg.train.batch_size * ctx.devices  # DataParallel splits it over the GPUs
        steps = self.steps_per_epoch
        first, sums = 0, torch.zeros(3, dtype=torch.float64)
        indices: Any = sampler
        if self.partial is not None:  # an interrupted epoch: replay its state, skip its steps
            first, sums = int(self.partial["step"]), self.partial["sums"].clone()
            if len(self.partial["rng"]) == ctx.world_size:
                torch.set_rng_state(self.partial["rng"][ctx.rank])
                jitter_gen.set_state(self.partial["jitter_rng"][ctx.rank])
            else:
                log.warning(
                    "resuming on %d processes instead of %d: the rest of this epoch draws fresh random numbers",
                    ctx.world_size,
                    len(self.partial["rng"]),
                )
            indices = list(sampler)[first * batch :]
            self.partial = None
        loader = self._loader(self.train_set, indices, batch, drop_last=whole_batches)

        self.net.train()
        seen, wait, start = 0, 0.0, time.perf_counter()
        bar = tqdm(
            total=steps,
            initial=first,
            desc=f"epoch {epoch + 1}/{cfg.train.epochs}",
            leave=False,
            disable=(not ctx.is_main) or None,
        )  # None: off when not a terminal
        it = iter(loader)
        for step in range(first, steps):
            t0 = time.perf_counter()
            clips, labels, _, skipped = next(it)
            wait += time.perf_counter() - t0
            self._count_skipped(skipped)
            ctx.step = f"epoch {epoch + 1} step {step + 1}"
            if self._empty_anywhere(labels.numel() == 0):
                continue
            clips = clips.to(ctx.device, non_blocking=True)
            labels = labels.to(ctx.device, non_blocking=True)
            clips = self.spec.normalize(clips, self.jitter, jitter_gen)
            clips = clips_layout(clips, self.channels_last)
            with autocast(ctx.device, self.amp_dtype):
                loss, loss_per, loss_att = classification_losses(
                    self.net(clips), labels, cfg.train.spatial_sparsity, cfg.train.temporal_sparsity
                )
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()

            values = torch.stack([loss.detach(), loss_per.detach(), loss_att.detach()]).double().cpu()
            if not torch.isfinite(values).all():
                raise TrainingError(
                    f"loss is {values[0].item()} at epoch {epoch + 1}, iteration {step + 1} "
                    f"(global {self.iteration + 1}); the last checkpoint is kept"
                )
            sums += values
            seen += labels.shape[0]
            self.iteration += 1
            if self.events is not None and self.iteration % cfg.train.log_every == 0:
                self._log_losses(values)
            bar.set_postfix(loss=f"{values[0].item():.3f}")
            bar.update()
            # Every rank stops at the same step: for a signal any rank received, or for a
            # write rank 0 could not do (its line raised on every rank).
            signum, refused = self.stop.agreed(ctx, self.refused is not None)
            if refused:
                bar.close()
                raise_on_every_rank(self.refused, ctx)
            if signum:
                bar.close()
                self._save_interrupted(epoch, step + 1, sums, jitter_gen)
                raise Preempted(signum)
        bar.close()
        elapsed = time.perf_counter() - start
        means = (sums / max(1, steps)).tolist()
        return {
            "loss": means[0],
            "loss_per": means[1],
            "loss_att": means[2],
            "clips_per_s": seen * ctx.world_size / max(elapsed, 1e-9),
            "data_wait": wait / max(elapsed, 1e-9),
        }

    @property
    def few_videos(self) -> bool:
        """Whether the training videos are fewer than one step takes on all ranks together."""
        return len(self.train_set) < self.ctx.world_size * self.cfg.train.batch_size * self.ctx.devices

    @property
    def steps_per_epoch(self) -> int:
        """Steps of one epoch: every rank's share of the videos in whole batches (one step when
        the videos are fewer than that)."""
        share = len(self.train_set) // self.ctx.world_size  # DistributedSampler with drop_last
        steps = max(1, share // (self.cfg.train.batch_size * self.ctx.devices))
        return min(steps, self.cfg.train.max_iters_per_epoch) if self.cfg.train.max_iters_per_epoch else steps

    def _empty_anywhere(self, empty: bool) -> bool:
        """Whether any rank's batch lost all its videos to `data.skip_corrupt`: then every
        rank skips the step, since DDP's gradient all-reduce needs all of them."""
        if not self.cfg.data.skip_corrupt:
            return empty
        return bool(max_over_ranks([empty], self.ctx)[0])

    def _log_losses(self, values: torch.Tensor) -> None:
        """The step's losses to TensorBoard; a refused write is kept for the step's end, where
        every rank learns of it."""
        try:
            for name, v in zip(("loss/all", "loss/per", "loss/att"), values.tolist()):
                self.events.add_scalar(name, v, self.iteration)
        except ReportedError as e:
            self._refused(e)

    def _save_interrupted(self, epoch: int, step: int, sums: torch.Tensor, jitter_gen: torch.Generator) -> None:
        """checkpoint-latest for a stop after `step` steps of `epoch` (0-based)."""
        self.ctx.step = f"the checkpoint of the stop in epoch {epoch + 1}"
        rng, jitter_rng = [torch.get_rng_state()], [jitter_gen.get_state()]
        if self.ctx.distributed:  # every rank's random streams go into rank 0's file
            rng = [torch.empty_like(rng[0]) for _ in range(self.ctx.world_size)]
            jitter_rng = [torch.empty_like(jitter_rng[0]) for _ in range(self.ctx.world_size)]
            torch.distributed.all_gather_object(rng, torch.get_rng_state())
            torch.distributed.all_gather_object(jitter_rng, jitter_gen.get_state())
        partial = {"step": step, "sums": sums, "rng": rng, "jitter_rng": jitter_rng}
        with self._writes():
            self.save("checkpoint-latest.pt", epoch, partial)
        log.warning(
            "stopped by signal after epoch %d step %d; checkpoint-latest.pt written, continue with train.resume=latest",
            epoch + 1,
            step,
        )

    def _count_skipped(self, reasons) -> None:
        for reason in reasons:
            self.skipped += 1
            log.warning("skipped a video (%d so far): %s", self.skipped, reason)

    def _loader(self, dataset, sampler, batch_size: int, drop_last: bool = False):
        return clip_loader(
            dataset,
            sampler,
            batch_size,
            num_workers=self.cfg.data.num_workers,
            device=self.ctx.device,
            seed=self.cfg.train.seed,
            drop_last=drop_last,
        )

    def validate(self) -> EvalResult:
        ctx = self.ctx
        sampler = ShardSampler(len(self.val_set), ctx.rank, ctx.world_size)
        loader = self._loader(self.val_set, sampler, self.cfg.eval.batch_size * ctx.devices)
        return evaluate(
            self.eval_net,
            loader,
            ctx,
            amp_dtype=self.amp_dtype,
            channels_last=self.channels_last,
            on_skipped=self._count_skipped,
        )

    def fit(self) -> Dict[str, Any]:
        log.info("%s; %d steps an epoch", self.ctx.describe_batch(self.cfg.train.batch_size), self.steps_per_epoch)
        if self.few_videos and self.ctx.is_main:
            n, world = len(self.train_set), self.ctx.world_size
            log.warning(
                "%d training videos are fewer than one step takes: each epoch is one step of %d a process%s",
                n,
                -(-n // world),
                ", some repeated" if n % world else "",
            )
        if not len(self.val_set) and self.ctx.is_main:
            log.warning("%s lists no videos: no validation, and no checkpoint-best.pt", self.cfg.data.val_labels)
        with self._writes():
            if self.ctx.is_main:
                with writing(self.logdir):
                    self.logdir.mkdir(parents=True, exist_ok=True)
                self.events = EventsWriter(self.logdir)
        with self.stop:
            return self._epochs()

    def _epochs(self) -> Dict[str, Any]:
        cfg = self.cfg
        record: Dict[str, Any] = {}
        for epoch in range(self.start_epoch, cfg.train.epochs):
            record = {"epoch": epoch + 1, "lr": self.optimizer.param_groups[0]["lr"]}
            if self.changes:  # the resumed run's first epoch: what differs from the run before
                record["changed"] = {key: {"from": then, "to": now} for key, (then, now) in self.changes.items()}
                self.changes = {}
            record.update(self.train_one_epoch(epoch))
            self.scheduler.step()
            last = epoch + 1 == cfg.train.epochs
            best = False
            if len(self.val_set) and ((epoch + 1) % cfg.train.val_every == 0 or last):
                self.ctx.step = f"validation after epoch {epoch + 1}"
                result = self.validate().summary()
                record["val"] = result
                top1 = result["top-1_accuracy"]
                best = top1["per"] > self.best_score or not self.history
                self.best_score = max(self.best_score, top1["per"])
            self.history.append(record)
            self.ctx.step = f"the checkpoints of epoch {epoch + 1}"
            # The first write refused ends the block, leaving the files of earlier epochs as they
            # were; history.json comes last, so that it never lists an epoch no checkpoint holds.
            with self._writes():
                if best:
                    self.save("checkpoint-best.pt", epoch + 1)
                if (epoch + 1) % cfg.train.save_every == 0:
                    self.save(f"checkpoint-{epoch + 1:04d}.pt", epoch + 1)
                self.save("checkpoint-latest.pt", epoch + 1)
                self._log_epoch(record)
        self.ctx.step = "the end of training"
        with self._writes():
            self.save("checkpoint-final.pt", cfg.train.epochs)
            if self.events is not None:
                self.events.close()
        return {"best_score": self.best_score, "history": self.history, "last": record}

    def _log_epoch(self, record: Dict[str, Any]) -> None:
        if not self.ctx.is_main:
            return
        epoch = record["epoch"]
        w = self.events
        w.add_scalar("lr", record["lr"], epoch)
        w.add_scalar("speed/clips_per_s", record["clips_per_s"], epoch)
        w.add_scalar("speed/data_wait_fraction", record["data_wait"], epoch)
        if "val" in record:
            for k in (1, 5):
                for branch, value in record["val"][f"top-{k}_accuracy"].items():
                    name = f"accuracy/{branch}" if k == 1 else f"accuracy_top5/{branch}"
                    w.add_scalar(name, value, epoch)
        atomic_write_text(self.logdir / "history.json", json.dumps(self.history, indent=2) + "\n")
        val = record.get("val", {}).get("top-1_accuracy", {})
        log.info(
            "epoch %d: loss %.4f, val top-1 %s, %.1f clips/s, data wait %.0f%%",
            epoch,
            record["loss"],
            val or "-",
            record["clips_per_s"],
            100 * record["data_wait"],
        )


def train(cfg: Config, launcher: str) -> Dict[str, Any]:
    """Run a training job; `launcher` is `ddp` (under torchrun) or `dp` (one process)."""
    from stabn.engine.distributed import cleanup_distributed, setup_distributed

    ctx = setup_distributed(launcher, cfg.train.collective_timeout)
    try:
        try:
            with collective_errors_named(ctx, cfg.train.collective_timeout):
                return Trainer(cfg, ctx).fit()
        except ReportedError as e:
            error = RelayedError(error_message(e), e.exit_code)
            # The frames of the error's tracebacks hold the Trainer, and with it DDP and the
            # DataLoader iterators: they go now, before the process group, or DDP's teardown at
            # exit, after the group's, can abort the process (SIGABRT instead of the exit code).
            # Cleared frames free the iterators first, each shutting its workers down.
            while e is not None:
                traceback.clear_frames(e.__traceback__)
                e = e.__context__
        gc.collect()
        raise error
    except Preempted as stop:
        raise SystemExit(128 + stop.signum) from None
    finally:
        cleanup_distributed()
