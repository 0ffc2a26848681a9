"""Process-group set-up for torchrun (DDP) and single-process (DataParallel / CPU) runs."""

from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from stabn.errors import FAILED_EXIT_CODE, ReportedError, WriteRefused, error_message


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    distributed: bool = False  # a torch.distributed process group is up
    devices: int = 1  # GPUs this process drives: all visible ones under DataParallel
    # Where the job is ("epoch 3 step 12", "validation after epoch 3"): what a collective that
    # never completes is named by.
    step: str = "start-up"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def describe_batch(self, per_device: int) -> str:
        """How `per_device` clips per GPU (or per process on the CPU) add up, e.g.
        "batch 8 per GPU x 8 GPUs = 64"."""
        unit = "GPU" if self.device.type == "cuda" or self.devices > 1 else "process"
        count = self.world_size * self.devices
        units = unit if count == 1 else {"GPU": "GPUs", "process": "processes"}[unit]
        return f"batch {per_device} per {unit} x {count} {units} = {per_device * count}"


def setup_distributed(launcher: str, timeout: float) -> DistContext:
    """`ddp`: join the process group torchrun describes (NCCL on GPUs, Gloo on CPU), whose
    collectives give up after `timeout` seconds. `dp`: one process using every visible GPU
    (DataParallel), or the CPU."""
    if launcher == "ddp" and "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ.get("LOCAL_RANK", 0))
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank)
            device, backend = torch.device("cuda", local_rank), "nccl"
        else:
            device, backend = torch.device("cpu"), "gloo"
        if not dist.is_initialized():
            _init_process_group(backend, datetime.timedelta(seconds=timeout))
        return DistContext(rank, world, local_rank, device, True)
    if torch.cuda.is_available():
        return DistContext(device=torch.device("cuda"), devices=torch.cuda.device_count())
    return DistContext()


def _init_process_group(backend: str, timeout: datetime.timedelta) -> None:
    restart = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    if restart == 0:
        dist.init_process_group(backend=backend, timeout=timeout)
        return
    # Restarted workers share torchrun's store with the round before; under a fresh prefix
    # they cannot read that round's Gloo/NCCL addresses and dial processes that are gone.
    from torch.distributed.rendezvous import rendezvous

    store, rank, world = next(rendezvous("env://"))
    dist.init_process_group(
        backend=backend,
        store=dist.PrefixStore(f"stabn/restart-{restart}", store),
        rank=rank,
        world_size=world,
        timeout=timeout,
    )


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class ShardSampler(Sampler[int]):
    """Every index exactly once across ranks, without the padding DistributedSampler adds,
    so that distributed evaluation counts each video once."""

    def __init__(self, length: int, rank: int = 0, world_size: int = 1) -> None:
        self.indices = list(range(rank, length, world_size))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def max_over_ranks(values: Sequence[int], ctx: DistContext) -> List[int]:
    """The largest of every rank's `values`, one by one (the values themselves outside
    torch.distributed): how ranks agree on flags, such as a stop signal, a refused write or an
    empty batch, that any one of them raised."""
    if not ctx.distributed:
        return list(values)
    flags = torch.tensor(list(values), device=ctx.device)
    dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    return [int(v) for v in flags.tolist()]


class RelayedError(ReportedError):
    """An error raised again with the line and exit code it had: another rank's, on this one, or
    this rank's own, without the traceback that held its objects."""

    def __init__(self, message: str, exit_code: int, follows_another: bool = False) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.follows_another = follows_another


def raise_on_every_rank(error: Optional[ReportedError], ctx: DistContext) -> None:
    """Raise `error` where this process met one; under torchrun, every rank raises as soon as
    any did, all with the line of the lowest rank that met one, so that no rank waits for ever
    on one that stopped (rank 0's refused write of a checkpoint stops them all), and torchrun's
    summary shows that line whichever rank's error file it picks. Every rank calls it at the
    same point: it is a barrier too."""
    if ctx.distributed:
        mine = None if error is None else (error_message(error), getattr(error, "exit_code", FAILED_EXIT_CODE))
        everyone: List[Optional[tuple]] = [None] * ctx.world_size
        dist.all_gather_object(everyone, mine)
        first = next((e for e in everyone if e is not None), None)
        if first is not None and first != mine:
            raise RelayedError(*first)
    if error is not None:
        raise error


class RankZeroWrites:
    """Rank 0's writes, which no rank trains on without: a write the operating system refused
    is kept in `refused` until every rank raises its line (`raise_kept`). `refused_hint` ends
    the line of a refused write, saying how to go on."""

    def __init__(self, ctx: DistContext, *, refused_hint: str) -> None:
        self.ctx = ctx
        self.refused: Optional[ReportedError] = None
        self._hint = refused_hint

    @contextlib.contextmanager
    def block(self) -> Iterator[None]:
        """Rank 0's writes (the other ranks pass through the block): a write refused ends the
        block on rank 0, and every rank raises its line at the end, a barrier too."""
        try:
            yield
        except ReportedError as e:
            self.keep(e)
        self.raise_kept()

    def keep(self, error: ReportedError) -> None:
        """Keep `error` for every rank to raise."""
        if isinstance(error, WriteRefused):
            error = WriteRefused(f"{error}; {self._hint}")
        self.refused = error

    def raise_kept(self) -> None:
        """Raise the kept error on every rank (`raise_on_every_rank`); every rank calls it at
        the same point."""
        raise_on_every_rank(self.refused, self.ctx)


class CollectiveError(ReportedError):
    """A collective that gave up: the other processes never joined it, or are gone."""


class PeersGone(CollectiveError):
    """The other processes of a collective are gone: one of them failed first."""

    follows_another = True


# How Gloo and NCCL word the two failures; they raise a plain RuntimeError for both.
_TIMED_OUT = ("timed out", "timeout")
_PEERS_GONE = ("connection closed by peer", "connection reset by peer", "broken pipe")


@contextlib.contextmanager
def collective_errors_named(ctx: DistContext, timeout: float, key: str = "train.collective_timeout") -> Iterator[None]:
    """A collective inside the block that waited `timeout` seconds in vain, or whose peers are
    gone, ends as a `CollectiveError` naming `ctx.step` and the config `key` that set the
    timeout (one line, exit code 1) instead of a traceback out of Gloo or NCCL."""
    try:
        yield
    except RuntimeError as e:
        text = str(e).lower()
        if not ctx.distributed:
            raise
        if any(words in text for words in _TIMED_OUT):
            raise CollectiveError(
                f"rank {ctx.rank} waited {timeout:g} s for the other processes at {ctx.step} "
                f"({key}): they took another path or stopped answering"
            ) from None
        if any(words in text for words in _PEERS_GONE):
            raise PeersGone(
                f"rank {ctx.rank} lost the other processes at {ctx.step}: one of them stopped; "
                "torchrun's summary names the first failure"
            ) from None
        raise
