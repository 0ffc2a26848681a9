"""Stopping on SIGTERM / SIGINT between two steps, with every rank stopping at the same one
and every rank's random streams kept for the rest of the epoch."""

from __future__ import annotations

import signal
from typing import Any, Dict, List, Tuple

import torch
from torch import Tensor

from stabn.engine.distributed import DistContext, max_over_ranks


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

    def __enter__(self) -> StopRequest:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        self.signum = signum

    def agreed(self, ctx: DistContext, refused: bool) -> Tuple[int, bool]:
        """The signal any rank received (0 if none), and whether a write of any rank was refused
        (`refused`: this rank's): all ranks must stop at the same step."""
        signum, any_refused = max_over_ranks([self.signum, refused], ctx)
        return signum, bool(any_refused)


def every_rank_rng_states(ctx: DistContext, jitter_gen: torch.Generator) -> Tuple[List[Tensor], List[Tensor]]:
    """Every rank's state of the global torch generator and of `jitter_gen`, by rank: what
    rank 0's checkpoint of a stop keeps so that each rank replays its rest of the epoch."""
    rng, jitter_rng = [torch.get_rng_state()], [jitter_gen.get_state()]
    if ctx.distributed:
        rng = [torch.empty_like(rng[0]) for _ in range(ctx.world_size)]
        jitter_rng = [torch.empty_like(jitter_rng[0]) for _ in range(ctx.world_size)]
        torch.distributed.all_gather_object(rng, torch.get_rng_state())
        torch.distributed.all_gather_object(jitter_rng, jitter_gen.get_state())
    return rng, jitter_rng
