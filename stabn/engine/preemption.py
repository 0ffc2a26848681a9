"""Stopping on SIGTERM / SIGINT between two steps, with every rank stopping at the same one."""

from __future__ import annotations

import signal
from typing import Any, Dict, Tuple

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
