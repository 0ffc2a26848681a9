"""The one training loop, shared by `train_dp.py` and `train_ddp.py`."""
from __future__ import annotations

import json
import logging
import math
import os
import signal
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from ..checkpoint import load_weights, model_config, read_checkpoint, save_checkpoint
from ..config import Config, save_config
from ..data import FrameClipDataset, JitterConfig, collate_clips, mean_std, normalize_batch
from ..errors import StabnError
from ..fileio import atomic_write_text
from ..models import STABNOutput, build_model
from .distributed import DistContext, ShardSampler, barrier
from .evaluate import EvalResult, evaluate
from .fastpath import (amp_dtype, autocast, clips_layout, make_sgd, prepare_model,
                       use_channels_last)

log = logging.getLogger(__name__)


class TrainingError(StabnError):
    """Training cannot go on (e.g. the loss is no longer finite)."""


class Preempted(Exception):
    """SIGTERM or SIGINT arrived; checkpoint-latest holds the state after the last step."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopRequest:
    """Remembers SIGTERM / SIGINT instead of dying mid-step; the loop stops after the step."""

    def __init__(self) -> None:
        self.signum = 0
        self._previous: Dict[int, Any] = {}

    def __enter__(self) -> "StopRequest":
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        self.signum = signum

    def agreed(self, distributed: bool, device: torch.device) -> int:
        """The signal any rank received (0 if none): all ranks must stop at the same step."""
        if not distributed:
            return self.signum
        flag = torch.tensor([self.signum], device=device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return int(flag.item())


def derive_seed(*parts: int) -> int:
    """A seed mixed from integers, so that (seed, epoch, rank) tuples never share a stream."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0] >> 1)


def build_scheduler(cfg: Config, optimizer: torch.optim.Optimizer):
    """The original's MultiStepLR (stepped per epoch), optionally behind a linear warm-up or
    replaced by a cosine decay."""
    t = cfg.train
    if t.schedule == "multistep" and t.warmup_epochs == 0:
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, t.milestones, t.gamma)

    def factor(epoch: int) -> float:
        if epoch < t.warmup_epochs:
            return (epoch + 1) / (t.warmup_epochs + 1)
        if t.schedule == "cosine":
            progress = (epoch - t.warmup_epochs) / max(1, t.epochs - t.warmup_epochs)
            return 0.5 * (1 + math.cos(math.pi * progress))
        return t.gamma ** sum(epoch >= m for m in t.milestones)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def classification_losses(out: Union[STABNOutput, Tensor], labels: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """(total, perception, attention) cross-entropies, in fp32 from the logits; for a plain
    ResNet the attention term is zero. ST-ABN trains on their sum, as the original."""
    if isinstance(out, STABNOutput):
        loss_per = F.cross_entropy(out.logits.float(), labels)
        loss_att = F.cross_entropy(out.att_logits.float(), labels)
    else:
        loss_per = F.cross_entropy(out.float(), labels)
        loss_att = torch.zeros((), device=labels.device)
    return loss_per + loss_att, loss_per, loss_att


class Trainer:
    """Holds what a run needs; `fit()` trains, validates, logs and checkpoints."""

    def __init__(self, cfg: Config, ctx: DistContext) -> None:
        self.cfg, self.ctx = cfg, ctx
        self.logdir = Path(cfg.logdir)
        d, t = cfg.data, cfg.train
        self.mean, self.std = mean_std(d.channel_order)
        self.amp_dtype = amp_dtype(t.amp, ctx.device)
        self.channels_last = use_channels_last(t.channels_last, ctx.device)

        self.train_set = make_dataset(cfg, d.train_labels, "train")
        self.val_set = make_dataset(cfg, d.val_labels, "eval")
        self.jitter = None if d.jitter == "none" else JitterConfig(mode=d.jitter)
        self.skipped = 0

        torch.manual_seed(derive_seed(t.seed))  # the same initial weights on every rank and run
        model = build_model(cfg.model.name, cfg.model.num_classes, d.frame_length, d.frame_size,
                            cfg.model.dropout, cfg.model.width, cfg.model.pretrained_2d)
        if cfg.model.sync_bn and ctx.distributed:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        self.model = prepare_model(model, ctx.device, self.channels_last)
        self.optimizer = make_sgd(model.parameters(), ctx.device, t.lr, t.momentum, t.weight_decay, t.nesterov)
        self.scheduler = build_scheduler(cfg, self.optimizer)
        self.scaler = torch.amp.GradScaler(ctx.device.type, enabled=self.amp_dtype == torch.float16)
        self.start_epoch, self.iteration, self.best_score = 0, 0, 0.0
        self.history: List[Dict[str, Any]] = []
        self.partial: Optional[Dict[str, Any]] = None
        self.stop = StopRequest()
        self._config_saved = False
        self._resume()

        if ctx.distributed:
            ids = [ctx.device.index] if ctx.device.type == "cuda" else None
            self.net: nn.Module = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        elif ctx.device.type == "cuda" and torch.cuda.device_count() > 1:
            self.net = nn.DataParallel(model)
        else:
            self.net = model
        if t.compile:
            self.net = torch.compile(self.net)
        self.writer = None
        if ctx.is_main:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.logdir))

    # -- checkpoints --------------------------------------------------------------------
    def _checkpoint_config(self) -> Dict[str, Any]:
        d = self.cfg.data
        return model_config(self.cfg.model.name, self.cfg.model.num_classes, d.frame_length,
                            d.frame_size, self.cfg.model.width, d.channel_order)

    def save(self, name: str, epoch: int, partial: Optional[Dict[str, Any]] = None) -> None:
        """Rank 0 writes `name`; `epoch` counts completed epochs, and `partial` holds where
        an interrupted epoch stands (steps done, RNG states, running loss sums)."""
        if not self.ctx.is_main:
            return
        if not self._config_saved:
            # Written with the first checkpoint, not at start-up: a run that fails before it
            # has anything to save leaves an earlier run's config.yaml in place.
            save_config(self.cfg, self.logdir)
            self._config_saved = True
        extra = {"run_config": self.cfg.to_dict(), "history": self.history}
        if partial is not None:
            extra["partial_epoch"] = partial
        save_checkpoint(
            self.logdir / name, self.model, self._checkpoint_config(), self.optimizer,
            self.scheduler, epoch=epoch, iteration=self.iteration, best_score=self.best_score,
            extra=extra,
        )

    def _resume(self) -> None:
        resume = self.cfg.train.resume
        if not resume and int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0:
            resume = "latest"  # torchrun restarted the workers: carry on where they stopped
        if not resume:
            return
        path = self.logdir / "checkpoint-latest.pt" if resume == "latest" else Path(resume)
        if resume == "latest" and not path.exists():
            log.info("no %s yet; starting from scratch", path)
            return
        ckpt = read_checkpoint(path)
        load_weights(self.model, ckpt["model_state_dict"], path)
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

    # -- loop ---------------------------------------------------------------------------
    def train_one_epoch(self, epoch: int) -> Dict[str, float]:
        cfg, ctx = self.cfg, self.ctx
        # Everything random in an epoch derives from (seed, epoch, rank): a resumed run
        # replays exactly what an uninterrupted one would have done.
        torch.manual_seed(derive_seed(cfg.train.seed, epoch, ctx.rank))
        jitter_gen = torch.Generator().manual_seed(derive_seed(cfg.train.seed, epoch, ctx.rank, 1))
        self.train_set.set_epoch(epoch)
        sampler = DistributedSampler(self.train_set, ctx.world_size, ctx.rank, shuffle=True,
                                     seed=cfg.train.seed, drop_last=True)
        sampler.set_epoch(epoch)
        batch = cfg.train.batch_size
        steps = len(sampler) // batch
        if cfg.train.max_iters_per_epoch:
            steps = min(steps, cfg.train.max_iters_per_epoch)
        first, sums = 0, torch.zeros(3, dtype=torch.float64)
        indices: Any = sampler
        if self.partial is not None:  # an interrupted epoch: replay its state, skip its steps
            first, sums = int(self.partial["step"]), self.partial["sums"].clone()
            if len(self.partial["rng"]) == ctx.world_size:
                torch.set_rng_state(self.partial["rng"][ctx.rank])
                jitter_gen.set_state(self.partial["jitter_rng"][ctx.rank])
            else:
                log.warning("resuming on %d processes instead of %d: the rest of this epoch "
                            "draws fresh random numbers", ctx.world_size, len(self.partial["rng"]))
            indices = list(sampler)[first * batch:]
            self.partial = None
        loader = clip_loader(cfg, self.train_set, indices, batch, ctx.device, drop_last=True)

        self.net.train()
        seen, wait, start = 0, 0.0, time.perf_counter()
        bar = tqdm(total=steps, initial=first, desc=f"epoch {epoch + 1}/{cfg.train.epochs}",
                   leave=False, disable=(not ctx.is_main) or None)  # None: off when not a terminal
        it = iter(loader)
        for step in range(first, steps):
            t0 = time.perf_counter()
            clips, labels, _, skipped = next(it)
            wait += time.perf_counter() - t0
            self._count_skipped(skipped)
            if self._empty_anywhere(labels.numel() == 0):
                continue
            clips = clips.to(ctx.device, non_blocking=True)
            labels = labels.to(ctx.device, non_blocking=True)
            clips = normalize_batch(clips, self.mean, self.std, self.jitter, jitter_gen,
                                    channel_order=self.cfg.data.channel_order)
            clips = clips_layout(clips, self.channels_last)
            with autocast(ctx.device, self.amp_dtype):
                loss, loss_per, loss_att = classification_losses(self.net(clips), labels)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()

            values = torch.stack([loss.detach(), loss_per.detach(), loss_att.detach()]).double().cpu()
            if not torch.isfinite(values).all():
                raise TrainingError(
                    f"loss is {values[0].item()} at epoch {epoch + 1}, iteration {step + 1} "
                    f"(global {self.iteration + 1}); the last checkpoint is kept")
            sums += values
            seen += labels.shape[0]
            self.iteration += 1
            if self.writer is not None and self.iteration % cfg.train.log_every == 0:
                for name, v in zip(("loss/all", "loss/per", "loss/att"), values.tolist()):
                    self.writer.add_scalar(name, v, self.iteration)
            bar.set_postfix(loss=f"{values[0].item():.3f}")
            bar.update()
            signum = self.stop.agreed(ctx.distributed, ctx.device)
            if signum:
                bar.close()
                self._save_interrupted(epoch, step + 1, sums, jitter_gen)
                raise Preempted(signum)
        bar.close()
        elapsed = time.perf_counter() - start
        means = (sums / max(1, steps)).tolist()
        return {
            "loss": means[0], "loss_per": means[1], "loss_att": means[2],
            "clips_per_s": seen * ctx.world_size / max(elapsed, 1e-9),
            "data_wait": wait / max(elapsed, 1e-9),
        }

    def _empty_anywhere(self, empty: bool) -> bool:
        """Whether any rank's batch lost all its videos to `data.skip_corrupt`: then every
        rank skips the step, since DDP's gradient all-reduce needs all of them."""
        if not (self.cfg.data.skip_corrupt and self.ctx.distributed):
            return empty
        flag = torch.tensor([int(empty)], device=self.ctx.device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        return bool(flag.item())

    def _save_interrupted(self, epoch: int, step: int, sums: torch.Tensor, jitter_gen: torch.Generator) -> None:
        """checkpoint-latest for a stop after `step` steps of `epoch` (0-based)."""
        rng, jitter_rng = [torch.get_rng_state()], [jitter_gen.get_state()]
        if self.ctx.distributed:  # every rank's random streams go into rank 0's file
            rng = [torch.empty_like(rng[0]) for _ in range(self.ctx.world_size)]
            jitter_rng = [torch.empty_like(jitter_rng[0]) for _ in range(self.ctx.world_size)]
            torch.distributed.all_gather_object(rng, torch.get_rng_state())
            torch.distributed.all_gather_object(jitter_rng, jitter_gen.get_state())
        partial = {"step": step, "sums": sums, "rng": rng, "jitter_rng": jitter_rng}
        self.save("checkpoint-latest.pt", epoch, partial)
        barrier()
        log.warning("stopped by signal after epoch %d step %d; checkpoint-latest.pt written, "
                    "continue with train.resume=latest", epoch + 1, step)

    def _count_skipped(self, reasons) -> None:
        for reason in reasons:
            self.skipped += 1
            log.warning("skipped a video (%d so far): %s", self.skipped, reason)

    def validate(self) -> EvalResult:
        c, ctx = self.cfg, self.ctx
        sampler = ShardSampler(len(self.val_set), ctx.rank, ctx.world_size)
        loader = clip_loader(c, self.val_set, sampler, c.eval.batch_size, ctx.device)
        return evaluate(self.net, loader, ctx, c.model.num_classes, self.mean, self.std,
                        amp_dtype=self.amp_dtype, channels_last=self.channels_last,
                        on_skipped=self._count_skipped, channel_order=c.data.channel_order)

    def fit(self) -> Dict[str, Any]:
        if self.ctx.is_main:
            self.logdir.mkdir(parents=True, exist_ok=True)
        barrier()
        with self.stop:
            return self._epochs()

    def _epochs(self) -> Dict[str, Any]:
        cfg = self.cfg
        record: Dict[str, Any] = {}
        for epoch in range(self.start_epoch, cfg.train.epochs):
            record = {"epoch": epoch + 1, "lr": self.optimizer.param_groups[0]["lr"]}
            record.update(self.train_one_epoch(epoch))
            self.scheduler.step()
            last = epoch + 1 == cfg.train.epochs
            if (epoch + 1) % cfg.train.val_every == 0 or last:
                result = self.validate().summary()
                record["val"] = result
                top1 = result["top-1_accuracy"]
                if top1["per"] > self.best_score or not self.history:
                    self.best_score = max(self.best_score, top1["per"])
                    self.save("checkpoint-best.pt", epoch + 1)
            self.history.append(record)
            self._log_epoch(record)
            if (epoch + 1) % cfg.train.save_every == 0:
                self.save(f"checkpoint-{epoch + 1:04d}.pt", epoch + 1)
            self.save("checkpoint-latest.pt", epoch + 1)
            barrier()
        self.save("checkpoint-final.pt", cfg.train.epochs)
        if self.writer is not None:
            self.writer.close()
        barrier()
        return {"best_score": self.best_score, "history": self.history, "last": record}

    def _log_epoch(self, record: Dict[str, Any]) -> None:
        if not self.ctx.is_main:
            return
        epoch = record["epoch"]
        w = self.writer
        w.add_scalar("lr", record["lr"], epoch)
        w.add_scalar("speed/clips_per_s", record["clips_per_s"], epoch)
        w.add_scalar("speed/data_wait_fraction", record["data_wait"], epoch)
        if "val" in record:
            for k in (1, 5):
                for branch, value in record["val"][f"top-{k}_accuracy"].items():
                    name = f"accuracy/{branch}" if k == 1 else f"accuracy_top5/{branch}"
                    w.add_scalar(name, value, epoch)
        w.flush()
        atomic_write_text(self.logdir / "history.json", json.dumps(self.history, indent=2) + "\n")
        val = record.get("val", {}).get("top-1_accuracy", {})
        log.info("epoch %d: loss %.4f, val top-1 %s, %.1f clips/s, data wait %.0f%%",
                 epoch, record["loss"], val or "-", record["clips_per_s"], 100 * record["data_wait"])


def _ignore_stop_signals(worker_id: int) -> None:
    """Loader workers leave SIGTERM / SIGINT to the main process, which stops cleanly after
    its step (a cluster's signal often reaches every process of the job)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def make_dataset(cfg: Config, labels: str, mode: str, num_clips: int = 1, num_crops: int = 1) -> FrameClipDataset:
    """The dataset a config describes, for training (`train`) or evaluation (`eval`)."""
    d = cfg.data
    return FrameClipDataset(
        labels, d.frames_root, d.frame_length, d.frame_size, mode=mode, num_clips=num_clips,
        num_crops=num_crops, padding=d.padding,
        skip_corrupt=d.skip_corrupt, flip=d.flip,
        seed=cfg.train.seed, template=d.frame_template, fmt=d.label_format,
        num_classes=cfg.model.num_classes,
    )


def clip_loader(cfg: Config, dataset: FrameClipDataset, sampler: Any, batch_size: int,
                device: torch.device, drop_last: bool = False) -> DataLoader:
    """The DataLoader of training, validation and `eval.py`: `ClipBatch`es of uint8 clips."""
    workers = cfg.data.num_workers
    return DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
        pin_memory=device.type == "cuda", drop_last=drop_last,
        persistent_workers=False, collate_fn=collate_clips, worker_init_fn=_ignore_stop_signals,
        # its own generator: drawing worker seeds from the global one would shift dropout
        generator=torch.Generator().manual_seed(cfg.train.seed),
        prefetch_factor=4 if workers > 0 else None,
    )


def train(cfg: Config, launcher: str) -> Dict[str, Any]:
    """Run a training job; `launcher` is `ddp` (under torchrun) or `dp` (one process)."""
    from .distributed import cleanup_distributed, setup_distributed

    ctx = setup_distributed(launcher)
    try:
        return Trainer(cfg, ctx).fit()
    except Preempted as stop:
        raise SystemExit(128 + stop.signum) from None
    finally:
        cleanup_distributed()


