"""The learning-rate schedules, and a schedule restarted at a resumed run's epoch."""

import pytest
import torch

from stabn.optim import build_scheduler, make_sgd, restart_schedule

SCHEDULES = [
    dict(schedule="multistep", epochs=10, milestones=[3, 6], gamma=0.1, warmup_epochs=0),  # the original's
    dict(schedule="multistep", epochs=10, milestones=[0, 3, 3], gamma=0.5, warmup_epochs=0),
    dict(schedule="multistep", epochs=10, milestones=[3, 6], gamma=0.1, warmup_epochs=2),
    dict(schedule="cosine", epochs=10, milestones=[], gamma=0.1, warmup_epochs=2),
]


def lrs(optimizer, scheduler, epochs):
    """The lr of each of `epochs` epochs, stepping as the trainer does."""
    out = []
    for _ in range(epochs):
        out.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return out


def sgd(lr):
    return make_sgd([torch.nn.Parameter(torch.zeros(2))], torch.device("cpu"), lr, 0.9, 0.0)


@pytest.mark.parametrize("settings", SCHEDULES, ids=lambda s: f"{s['schedule']}-{s['milestones']}-{s['warmup_epochs']}")
def test_a_restarted_schedule_goes_on_as_if_it_had_run_from_the_start(settings):
    """From any epoch, a schedule restarted with another base lr gives what a run with that lr
    from the first epoch gives, whatever state the optimizer and scheduler held before."""
    optimizer = sgd(0.1)
    whole = lrs(optimizer, build_scheduler(optimizer, **settings), 10)
    for epoch in range(10):
        optimizer = sgd(0.7)
        old = build_scheduler(optimizer, **settings)
        lrs(optimizer, old, epoch)  # the run before the resume, at another lr
        assert lrs(optimizer, restart_schedule(optimizer, 0.1, epoch, **settings), 10 - epoch) == pytest.approx(
            whole[epoch:], rel=1e-12
        )
