"""The one training loop, shared by `train_dp.py` and `train_ddp.py`: epochs and steps,
validation, checkpoints and logging."""

from __future__ import annotations

import gc
import json
import logging
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch
from tqdm.auto import tqdm

from stabn.checkpoint import BEST_CHECKPOINT, FINAL_CHECKPOINT, LATEST_CHECKPOINT, numbered_checkpoint, save_checkpoint
from stabn.config import Config, save_config
from stabn.data import JitterConfig
from stabn.engine.build import (
    build_parts,
    derive_seed,
    epoch_sampler,
    few_videos,
    run_loader,
    steps_per_epoch,
    training_sets,
    wrap_model,
)
from stabn.engine.distributed import (
    DistContext,
    RankZeroWrites,
    RelayedError,
    ShardSampler,
    cleanup_distributed,
    collective_errors_named,
    max_over_ranks,
    setup_distributed,
)
from stabn.engine.evaluate import EvalResult, evaluate
from stabn.engine.events import EventsWriter
from stabn.engine.precision import clips_layout
from stabn.engine.preemption import Preempted, StopRequest, every_rank_rng_states
from stabn.engine.resume import Progress, replay_partial_epoch, resume_checkpoint, resume_run
from stabn.engine.skipped import SkippedVideos
from stabn.engine.step import training_step
from stabn.errors import ReportedError, StabnError, error_message
from stabn.fileio import atomic_write_text, writing

log = logging.getLogger(__name__)


class TrainingError(StabnError):
    """Training cannot go on (e.g. the loss is no longer finite)."""


@dataclass
class _Tally:
    """What an epoch's steps add up to: the (total, perception, attention) loss sums, the clips
    this rank trained on, and the seconds it waited for the loader."""

    sums: torch.Tensor
    seen: int = 0
    wait: float = 0.0


class Trainer:
    """Holds what a run needs; `fit()` trains, validates, logs and checkpoints."""

    def __init__(self, cfg: Config, ctx: DistContext) -> None:
        self.cfg, self.ctx = cfg, ctx
        self.logdir = Path(cfg.logdir)
        self.train_set, self.val_set = training_sets(cfg)
        self.jitter = None if cfg.data.jitter == "none" else JitterConfig(mode=cfg.data.jitter)
        self.skipped = SkippedVideos(ctx, self.logdir)

        resuming = resume_checkpoint(cfg) is not None
        short_side = min(self.train_set.first_frame_size() or (0,)) or None
        parts = build_parts(cfg, ctx, short_side=short_side, resuming=resuming)
        progress = resume_run(cfg, parts, announce=ctx.is_main) if resuming else Progress()
        self.model, self.spec = parts.model, parts.spec
        self.optimizer, self.scheduler, self.scaler = parts.optimizer, parts.scheduler, parts.scaler
        self.amp_dtype, self.channels_last = parts.amp_dtype, parts.channels_last
        self.start_epoch, self.best_score = progress.start_epoch, progress.best_score
        self.iteration, self.history = progress.iteration, progress.history
        self.partial, self.changes = progress.partial, progress.changes
        self.net, self.eval_net = wrap_model(parts.model, cfg, ctx)

        self.stop = StopRequest()
        self.writes = RankZeroWrites(
            ctx, refused_hint="the files written before are intact: fix that, then go on with --resume latest"
        )
        self._config_saved = False
        self.events: Optional[EventsWriter] = None  # rank 0's, opened by fit()

    # -- checkpoints --------------------------------------------------------------------
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

    def _save_interrupted(self, epoch: int, step: int, sums: torch.Tensor, jitter_gen: torch.Generator) -> None:
        """checkpoint-latest for a stop after `step` steps of `epoch` (0-based)."""
        self.ctx.step = f"the checkpoint of the stop in epoch {epoch + 1}"
        rng, jitter_rng = every_rank_rng_states(self.ctx, jitter_gen)
        partial = {"step": step, "sums": sums, "rng": rng, "jitter_rng": jitter_rng}
        with self.writes.block():
            self.save(LATEST_CHECKPOINT, epoch, partial)
        log.warning(
            "stopped by signal after epoch %d step %d; %s written, continue with train.resume=latest",
            epoch + 1,
            step,
            LATEST_CHECKPOINT,
        )

    # -- one epoch ----------------------------------------------------------------------
    def train_one_epoch(self, epoch: int) -> Dict[str, float]:
        """Train `epoch` (0-based), or the rest of it after a stop; its mean losses and speed."""
        seed, rank = self.cfg.train.seed, self.ctx.rank
        # Everything random in an epoch derives from (seed, epoch, rank): a resumed run
        # replays exactly what an uninterrupted one would have done.
        torch.manual_seed(derive_seed(seed, epoch, rank))
        jitter_gen = torch.Generator().manual_seed(derive_seed(seed, epoch, rank, 1))
        loader, first, tally = self._epoch_loader(epoch, jitter_gen)
        self.net.train()
        start = time.perf_counter()
        self._run_steps(epoch, loader, first, tally, jitter_gen)
        elapsed = time.perf_counter() - start
        means = (tally.sums / max(1, self.steps_per_epoch)).tolist()
        return {
            "loss": means[0],
            "loss_per": means[1],
            "loss_att": means[2],
            "clips_per_s": tally.seen * self.ctx.world_size / max(elapsed, 1e-9),
            "data_wait": tally.wait / max(elapsed, 1e-9),
        }

    def _epoch_loader(self, epoch: int, jitter_gen: torch.Generator) -> Tuple[Any, int, _Tally]:
        """The loader of `epoch`, the step it starts at and the tally it starts from: for an
        interrupted epoch, its random streams restored and its done steps' videos left out."""
        cfg, ctx = self.cfg, self.ctx
        self.train_set.set_epoch(epoch)
        sampler = epoch_sampler(self.train_set, cfg, ctx, epoch)
        batch = cfg.train.batch_size * ctx.devices  # DataParallel splits it over the GPUs
        first, sums, indices = 0, torch.zeros(3, dtype=torch.float64), sampler
        if self.partial is not None:  # an interrupted epoch: replay its state, skip its steps
            first, sums, indices = replay_partial_epoch(
                self.partial, sampler, batch=batch, ctx=ctx, jitter_gen=jitter_gen
            )
            self.partial = None
        loader = run_loader(cfg, ctx, self.train_set, indices, batch, drop_last=sampler.drop_last)
        return loader, first, _Tally(sums)

    def _run_steps(self, epoch: int, loader: Any, first: int, tally: _Tally, jitter_gen: torch.Generator) -> None:
        """Steps `first`.. of `epoch`, added to `tally`; stops every rank at the same step for a
        signal or a refused write."""
        ctx = self.ctx
        bar = tqdm(
            total=self.steps_per_epoch,
            initial=first,
            desc=f"epoch {epoch + 1}/{self.cfg.train.epochs}",
            leave=False,
            disable=(not ctx.is_main) or None,
        )  # None: off when not a terminal
        it = iter(loader)
        for step in range(first, self.steps_per_epoch):
            t0 = time.perf_counter()
            clips, labels, _, skipped = next(it)
            tally.wait += time.perf_counter() - t0
            self.skipped.add(skipped)
            ctx.step = f"epoch {epoch + 1} step {step + 1}"
            if self._empty_anywhere(labels.numel() == 0):
                continue
            values = self._train_step(clips, labels, jitter_gen)
            if not torch.isfinite(values).all():
                raise TrainingError(
                    f"loss is {values[0].item()} at epoch {epoch + 1}, iteration {step + 1} "
                    f"(global {self.iteration + 1}); the last checkpoint is kept"
                )
            tally.sums += values
            tally.seen += labels.shape[0]
            self.iteration += 1
            if self.events is not None and self.iteration % self.cfg.train.log_every == 0:
                self._log_losses(values)
            bar.set_postfix(loss=f"{values[0].item():.3f}")
            bar.update()
            # Every rank stops at the same step: for a signal any rank received, or for a
            # write rank 0 could not do (its line raised on every rank).
            signum, refused = self.stop.agreed(ctx, self.writes.refused is not None)
            if refused:
                bar.close()
                self.writes.raise_kept()
            if signum:
                bar.close()
                self._save_interrupted(epoch, step + 1, tally.sums, jitter_gen)
                raise Preempted(signum)
        bar.close()

    def _train_step(self, clips: torch.Tensor, labels: torch.Tensor, jitter_gen: torch.Generator) -> torch.Tensor:
        """One step on a batch of uint8 clips; its (total, perception, attention) losses, fp64 on the CPU."""
        device = self.ctx.device
        clips = clips.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        clips = self.spec.normalize(clips, self.jitter, jitter_gen)
        clips = clips_layout(clips, self.channels_last)
        losses = training_step(
            self.net,
            clips,
            labels,
            optimizer=self.optimizer,
            scaler=self.scaler,
            device=device,
            amp_dtype=self.amp_dtype,
            spatial_sparsity=self.cfg.train.spatial_sparsity,
            temporal_sparsity=self.cfg.train.temporal_sparsity,
        )
        return torch.stack(losses).double().cpu()

    @property
    def steps_per_epoch(self) -> int:
        """Steps of one epoch (`stabn.engine.build.steps_per_epoch`)."""
        return steps_per_epoch(len(self.train_set), self.cfg, self.ctx)

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
            self.events.add_losses(values.tolist(), self.iteration)
        except ReportedError as e:
            self.writes.keep(e)

    def validate(self) -> EvalResult:
        ctx = self.ctx
        sampler = ShardSampler(len(self.val_set), ctx.rank, ctx.world_size)
        loader = run_loader(self.cfg, ctx, self.val_set, sampler, self.cfg.eval.batch_size * ctx.devices)
        return evaluate(
            self.eval_net,
            loader,
            ctx,
            amp_dtype=self.amp_dtype,
            channels_last=self.channels_last,
            on_skipped=self.skipped.add,
        )

    # -- the run ------------------------------------------------------------------------
    def fit(self) -> Dict[str, Any]:
        log.info("%s; %d steps an epoch", self.ctx.describe_batch(self.cfg.train.batch_size), self.steps_per_epoch)
        if few_videos(len(self.train_set), self.cfg, self.ctx) and self.ctx.is_main:
            n, world = len(self.train_set), self.ctx.world_size
            log.warning(
                "%d training videos are fewer than one step takes: each epoch is one step of %d a process%s",
                n,
                -(-n // world),
                ", some repeated" if n % world else "",
            )
        if not len(self.val_set) and self.ctx.is_main:
            log.warning("%s lists no videos: no validation, and no %s", self.cfg.data.val_labels, BEST_CHECKPOINT)
        with self.writes.block():
            if self.ctx.is_main:
                with writing(self.logdir):
                    self.logdir.mkdir(parents=True, exist_ok=True)
                self.events = EventsWriter(self.logdir)
        with self.stop:
            return self._epochs()

    def _epochs(self) -> Dict[str, Any]:
        epochs = self.cfg.train.epochs
        record: Dict[str, Any] = {}
        for epoch in range(self.start_epoch, epochs):
            record = {"epoch": epoch + 1, "lr": self.optimizer.param_groups[0]["lr"]}
            if self.changes:  # the resumed run's first epoch: what differs from the run before
                record["changed"] = {key: {"from": then, "to": now} for key, (then, now) in self.changes.items()}
                self.changes = {}
            record.update(self.train_one_epoch(epoch))
            self.scheduler.step()
            best = self._validate_epoch(epoch, record, last=epoch + 1 == epochs)
            if self.cfg.data.skip_corrupt:
                with self.writes.block():
                    record["skipped_videos"] = self.skipped.end_epoch(epoch + 1)
            self.history.append(record)
            self._checkpoint_epoch(epoch + 1, record, best)
        self.ctx.step = "the end of training"
        with self.writes.block():
            self.save(FINAL_CHECKPOINT, epochs)
            if self.events is not None:
                self.events.close()
        return {"best_score": self.best_score, "history": self.history, "last": record}

    def _validate_epoch(self, epoch: int, record: Dict[str, Any], *, last: bool) -> bool:
        """Validate after `epoch` (0-based) where `train.val_every` or the run's end asks, into
        `record`; whether the score is the run's best."""
        if not len(self.val_set) or ((epoch + 1) % self.cfg.train.val_every != 0 and not last):
            return False
        self.ctx.step = f"validation after epoch {epoch + 1}"
        result = self.validate().summary()
        record["val"] = result
        top1 = result["top-1_accuracy"]
        best = top1["per"] > self.best_score or not self.history
        self.best_score = max(self.best_score, top1["per"])
        return best

    def _checkpoint_epoch(self, done: int, record: Dict[str, Any], best: bool) -> None:
        """The checkpoints and logs of the state after `done` epochs."""
        self.ctx.step = f"the checkpoints of epoch {done}"
        # The first write refused ends the block, leaving the files of earlier epochs as they
        # were; history.json comes last, so that it never lists an epoch no checkpoint holds.
        with self.writes.block():
            if best:
                self.save(BEST_CHECKPOINT, done)
            if done % self.cfg.train.save_every == 0:
                self.save(numbered_checkpoint(done), done)
            self.save(LATEST_CHECKPOINT, done)
            self._log_epoch(record)

    def _log_epoch(self, record: Dict[str, Any]) -> None:
        if not self.ctx.is_main:
            return
        epoch = record["epoch"]
        self.events.add_epoch(record)
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
    ctx = setup_distributed(launcher, cfg.train.collective_timeout)
    try:
        try:
            with collective_errors_named(ctx, cfg.train.collective_timeout):
                return Trainer(cfg, ctx).fit()
        except ReportedError as e:
            error = RelayedError(error_message(e), e.exit_code, e.follows_another)
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
