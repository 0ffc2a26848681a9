"""`train_dp.py` whose process sends itself SIGTERM right after training step N, through the
real signal handler: `python tests/stop_at_step.py N [train_dp.py arguments]`. The stop then
lands at a known step, not wherever a signal from outside happens to arrive."""

import os
import signal
import sys

from stabn.commands.train import main as train_main
from stabn.engine.preemption import StopRequest

STEP = int(sys.argv[1])
_agreed = StopRequest.agreed
_steps = 0


def agreed_after_signal(self, ctx, refused):
    """Asked once after every step: the step's end is where the signal arrives."""
    global _steps
    _steps += 1
    if _steps == STEP:
        os.kill(os.getpid(), signal.SIGTERM)
    return _agreed(self, ctx, refused)


StopRequest.agreed = agreed_after_signal
train_main("dp", sys.argv[2:])
