"""TensorBoard scalars, written in the calling thread.

torch's SummaryWriter writes from a thread of its own: a write the operating system refuses
there prints that thread's traceback, and reaches the training loop only at a later call. Here
each scalar is one record written whole at once, so that a refused write ends the run as one
line naming the events file (`fileio.writing`), at the step that met it.
"""

from __future__ import annotations

import io
import itertools
import os
import socket
import time
from pathlib import Path
from typing import Any, Mapping, Sequence, Union

from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.summary.writer.record_writer import RecordWriter
from torch.utils.tensorboard.summary import scalar

from stabn.fileio import writing


class _WholeWrites(io.FileIO):
    """An unbuffered file whose every write is whole or raises. Unbuffered: no data is left for
    the interpreter to flush at exit, where a full disk would print an error of its own; whole:
    os.write may write less on a disk filling up, and only the next call says why."""

    def write(self, data) -> int:
        view = memoryview(data)
        while view:
            view = view[super().write(view) :]
        return len(data)


class EventsWriter:
    """A new TensorBoard events file in `logdir` (`events.out.tfevents.<time>.<host>.<pid>.<n>`,
    the name TensorBoard looks for), with scalars added one at a time."""

    def __init__(self, logdir: Union[str, os.PathLike]) -> None:
        stem = f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}"
        for n in itertools.count():  # another run of this process may have started in the same second
            self.path = Path(logdir) / f"{stem}.{n}"
            with writing(self.path):
                try:
                    self._file = _WholeWrites(self.path, "xb")
                except FileExistsError:
                    continue
            break
        self._records = RecordWriter(self._file)
        self._write(Event(wall_time=time.time(), file_version="brain.Event:2"))

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self._write(Event(wall_time=time.time(), step=int(step), summary=scalar(tag, value)))

    def add_losses(self, losses: Sequence[float], step: int) -> None:
        """A training step's (total, perception, attention) losses."""
        for name, value in zip(("loss/all", "loss/per", "loss/att"), losses):
            self.add_scalar(name, value, step)

    def add_epoch(self, record: Mapping[str, Any]) -> None:
        """An epoch's record of history.json: learning rate, speed and, where it was
        validated, Top-1 / Top-5 of each branch."""
        epoch = record["epoch"]
        self.add_scalar("lr", record["lr"], epoch)
        self.add_scalar("speed/clips_per_s", record["clips_per_s"], epoch)
        self.add_scalar("speed/data_wait_fraction", record["data_wait"], epoch)
        if "val" in record:
            for k in (1, 5):
                for branch, value in record["val"][f"top-{k}_accuracy"].items():
                    name = f"accuracy/{branch}" if k == 1 else f"accuracy_top5/{branch}"
                    self.add_scalar(name, value, epoch)

    def _write(self, event: Event) -> None:
        with writing(self.path):
            self._records.write(event.SerializeToString())

    def close(self) -> None:
        self._file.close()
