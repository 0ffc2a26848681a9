"""`train_ddp.py` whose rank 1 stops answering before its first validation, until a signal
ends the wait: `torchrun ... tests/stall_rank.py [train_ddp.py arguments]`. Rank 0 then waits
in validation's collective for a rank that never comes, as after a mismatch of collectives."""

import sys
import time

from stabn.commands.train import main as train_main
from stabn.engine.loop import Trainer

_validate = Trainer.validate


def stalled_validate(self):
    if self.ctx.rank == 1:
        # Until torchrun's SIGTERM, once rank 0 has given up; a minute at most, should it never.
        deadline = time.monotonic() + 60
        while not self.stop.signum and time.monotonic() < deadline:
            time.sleep(0.05)
    return _validate(self)


Trainer.validate = stalled_validate
train_main("ddp", sys.argv[1:])
