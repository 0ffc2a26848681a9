"""What resuming a run means: which checkpoint it starts from, what differs from the run that
wrote it, and the parts and counters as that checkpoint and the config's overrides leave them."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

import torch

from stabn.checkpoint import (
    LATEST_CHECKPOINT,
    extract_state_dict,
    load_weights,
    newest_intact_checkpoint,
    read_checkpoint,
)
from stabn.config import Config, config_from_dict, flat_config
from stabn.engine.build import RunParts, schedule_settings
from stabn.engine.distributed import DistContext
from stabn.errors import ConfigError, DamagedCheckpoint
from stabn.optim import LR_MULTIPLIER, restart_schedule

log = logging.getLogger(__name__)

# The train keys whose values a checkpoint's optimizer and scheduler states carry.
_OPTIMIZER_KEYS = ("momentum", "weight_decay", "nesterov")
_SCHEDULE_KEYS = ("lr", "schedule", "epochs", "milestones", "gamma", "warmup_epochs", "reset_lr_multiplier")
# How a run resumes, which is no change to the run itself.
_RESUME_KEYS = ("train.resume", "train.resume_strict")


@dataclass
class Progress:
    """Where a run stands: epochs completed, steps taken, the best validation score, the
    epochs' records, where an interrupted epoch stopped (steps done, RNG states, running loss
    sums), and the config keys that differ from the resumed checkpoint's run: (then, now)."""

    start_epoch: int = 0
    iteration: int = 0
    best_score: float = 0.0
    history: List[Dict[str, Any]] = field(default_factory=list)
    partial: Optional[Dict[str, Any]] = None
    changes: Dict[str, Tuple[Any, Any]] = field(default_factory=dict)


def changes_since(ckpt: Mapping[str, Any], cfg: Config) -> Dict[str, Tuple[Any, Any]]:
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
    path = Path(cfg.logdir) / LATEST_CHECKPOINT
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


def resume_run(cfg: Config, parts: RunParts, *, announce: bool) -> Progress:
    """Load the checkpoint a run of `cfg` resumes from into `parts` and return where it stands;
    a fresh start's progress where there is none. `announce`: warn of a checkpoint that gave
    way to an older one (rank 0)."""
    found = read_resume_checkpoint(cfg, announce=announce)
    if found is None:
        return Progress()
    path, ckpt = found
    load_weights(parts.model, extract_state_dict(ckpt, path), path)
    if ckpt.get("optimizer_state_dict"):
        _load_optimizer(parts, ckpt["optimizer_state_dict"], path)
    if ckpt.get("scheduler_state_dict"):
        parts.scheduler.load_state_dict(ckpt["scheduler_state_dict"])
    progress = Progress(
        start_epoch=int(ckpt.get("epoch", 0)),
        iteration=int(ckpt.get("iteration", 0)),
        best_score=float(ckpt.get("best_score", 0.0)),
        history=list(ckpt.get("history") or []),
        partial=ckpt.get("partial_epoch"),
    )
    where = f", step {progress.partial['step']}" if progress.partial else ""
    log.info("resumed from %s at epoch %d%s", path, progress.start_epoch + 1, where)
    progress.changes = changes_since(ckpt, cfg)
    _take_changes(cfg, parts, progress, path)
    return progress


def _take_changes(cfg: Config, parts: RunParts, progress: Progress, path: Path) -> None:
    """Apply the config's values where they differ from the checkpoint's run, from the resume
    point on: the loaded optimizer and scheduler states hold the old ones."""
    start = progress.start_epoch
    for key, (then, now) in progress.changes.items():
        log.info("%s: %r in %s, %r from epoch %d on", key, then, path.name, now, start + 1)
    changed = {key.split(".", 1)[1] for key in progress.changes if key.startswith("train.")}
    t = cfg.train
    if progress.partial and "batch_size" in changed:
        then = progress.changes["train.batch_size"][0]
        raise ConfigError(
            f"{path} stopped inside epoch {start + 1} with train.batch_size={then}: resume it with "
            "that batch size, or resume from a checkpoint of an epoch's end"
        )
    if changed & set(_OPTIMIZER_KEYS):
        for group in parts.optimizer.param_groups:
            group.update(momentum=t.momentum, weight_decay=t.weight_decay, nesterov=t.nesterov)
    if changed & set(_SCHEDULE_KEYS):
        for group in parts.optimizer.param_groups[1:]:  # the re-initialised layers' group
            group[LR_MULTIPLIER] = t.reset_lr_multiplier
        parts.scheduler = restart_schedule(parts.optimizer, t.lr, start, **schedule_settings(t))


def _load_optimizer(parts: RunParts, state: Mapping[str, Any], path: Path) -> None:
    """The checkpoint's optimizer state, whose param groups must be this run's: a run resumed
    with another train.freeze, or with model.init_from set where it was not, trains other
    parameters in other groups."""
    then = [len(g["params"]) for g in state.get("param_groups", [])]
    now = [len(g["params"]) for g in parts.optimizer.param_groups]
    if then != now:
        raise ConfigError(
            f"{path}: its optimizer trains {sum(then)} parameter tensors in {len(then)} groups, this run "
            f"{sum(now)} in {len(now)}: resume with the train.freeze and model.init_from of its run"
        )
    parts.optimizer.load_state_dict(state)


def replay_partial_epoch(
    partial: Mapping[str, Any], sampler: Iterable[int], *, batch: int, ctx: DistContext, jitter_gen: torch.Generator
) -> Tuple[int, torch.Tensor, List[int]]:
    """Where the interrupted epoch `partial` describes goes on: the step it starts at, its loss
    sums so far, and `sampler`'s indices left for its steps of `batch` videos. The global and
    `jitter_gen` random streams are set back to the stop's, where as many processes run as before."""
    first, sums = int(partial["step"]), partial["sums"].clone()
    if len(partial["rng"]) == ctx.world_size:
        torch.set_rng_state(partial["rng"][ctx.rank])
        jitter_gen.set_state(partial["jitter_rng"][ctx.rank])
    else:
        log.warning(
            "resuming on %d processes instead of %d: the rest of this epoch draws fresh random numbers",
            ctx.world_size,
            len(partial["rng"]),
        )
    return first, sums, list(sampler)[first * batch :]
