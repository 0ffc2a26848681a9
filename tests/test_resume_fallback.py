"""`resume=latest` when checkpoint-latest.pt cannot be read (cut short by a partial copy, bit rot
in its data): the run resumes from the newest checkpoint of the run folder that reads, by the
step stored in it, with a warning naming both files; `train.resume_strict=true` stops instead,
and a checkpoint named by its path never gives way."""

import logging
import re
import shutil
import zipfile

import pytest
import torch

from helpers import SYNTHETIC_CONFIG, tiny_run
from stabn.checkpoint import read_checkpoint
from stabn.config import load_config
from stabn.data.synthetic import make_synthetic_dataset
from stabn.engine.distributed import DistContext
from stabn.engine.loop import Trainer
from stabn.engine.resume import read_resume_checkpoint
from stabn.errors import DamagedCheckpoint


def overrides(data, logdir, *extra, epochs=4):
    return tiny_run(data, logdir, "train.batch_size=2", "eval.batch_size=2", "train.save_every=1", *extra,
                    epochs=epochs)  # fmt: skip


@pytest.fixture(scope="module")
def three_epochs(tmp_path_factory):
    """(data, run folder) of a run of 4 epochs stopped after its third: checkpoint-0001..0003.pt,
    -best.pt, -latest.pt (epoch 3), no -final.pt yet."""
    data = tmp_path_factory.mktemp("data")
    make_synthetic_dataset(data, num_train=4, num_val=2, frames=8, size=32, seed=3, workers=1)
    logdir = tmp_path_factory.mktemp("three_epochs") / "run"
    torch.set_num_threads(1)
    Trainer(load_config(SYNTHETIC_CONFIG, overrides(data, logdir, epochs=3)), DistContext()).fit()
    (logdir / "checkpoint-final.pt").unlink()
    return data, logdir


def cut_short(path):
    """As a copy between clusters that stopped halfway."""
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def rot(path):
    """Bit rot: bytes flipped in the middle of the largest tensor's data, which torch.load reads
    without a word."""
    with zipfile.ZipFile(path) as archive:
        record = max(archive.infolist(), key=lambda r: r.file_size)
    data = bytearray(path.read_bytes())
    # The data follow the record's local header: 30 bytes, its name and its extra field.
    name_length = int.from_bytes(data[record.header_offset + 26 : record.header_offset + 28], "little")
    extra_length = int.from_bytes(data[record.header_offset + 28 : record.header_offset + 30], "little")
    middle = record.header_offset + 30 + name_length + extra_length + record.file_size // 2
    data[middle : middle + 8] = bytes(b ^ 0xFF for b in data[middle : middle + 8])
    path.write_bytes(bytes(data))
    torch.load(path, weights_only=True)  # torch does not notice


@pytest.fixture
def run(three_epochs, tmp_path):
    """A copy of the run folder, to damage."""
    data, logdir = three_epochs
    return data, shutil.copytree(logdir, tmp_path / "run")


def resume_config(data, logdir, *extra):
    return load_config(SYNTHETIC_CONFIG, overrides(data, logdir, "train.resume=latest", *extra))


def test_bit_rot_is_damage(run):
    _, logdir = run
    rot(logdir / "checkpoint-0002.pt")
    with pytest.raises(DamagedCheckpoint) as caught:
        read_checkpoint(logdir / "checkpoint-0002.pt")
    assert re.fullmatch(rf"{logdir}/checkpoint-0002\.pt: damaged: record archive/data/\d+ does not match its CRC-32",
                        str(caught.value))  # fmt: skip


def test_the_newest_checkpoint_that_reads_resumes_the_run_to_its_end(run, caplog):
    """latest cut short, -0003 rotten: -0002 is the newest that reads (best holds epoch 1)."""
    data, logdir = run
    shutil.copy(logdir / "checkpoint-0001.pt", logdir / "checkpoint-best.pt")
    cut_short(logdir / "checkpoint-latest.pt")
    rot(logdir / "checkpoint-0003.pt")
    with caplog.at_level(logging.WARNING, logger="stabn"):
        trainer = Trainer(resume_config(data, logdir), DistContext())
    warning = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning == [
        f"{logdir / 'checkpoint-latest.pt'}: cut short: its archive has no end "
        f"({(logdir / 'checkpoint-latest.pt').stat().st_size} bytes); resuming from {logdir / 'checkpoint-0002.pt'} "
        "instead, the newest checkpoint of the run that reads (after epoch 2)"
    ]
    assert trainer.start_epoch == 2 and [h["epoch"] for h in trainer.history] == [1, 2]
    result = trainer.fit()
    assert [h["epoch"] for h in result["history"]] == [1, 2, 3, 4]
    assert read_checkpoint(logdir / "checkpoint-final.pt")["epoch"] == 4
    assert read_checkpoint(logdir / "checkpoint-latest.pt")["epoch"] == 4  # whole again


def test_best_is_taken_where_it_is_the_newest(run):
    """latest and -0003 cut short, -0002 rotten: best (epoch 3) is newer than -0001."""
    data, logdir = run
    shutil.copy(logdir / "checkpoint-0003.pt", logdir / "checkpoint-best.pt")
    for name in ("checkpoint-latest.pt", "checkpoint-0003.pt"):
        cut_short(logdir / name)
    rot(logdir / "checkpoint-0002.pt")
    path, ckpt = read_resume_checkpoint(resume_config(data, logdir))
    assert path == logdir / "checkpoint-best.pt" and ckpt["epoch"] == 3


def test_at_the_same_epoch_a_numbered_checkpoint_is_taken_over_best(run):
    """best holds the state -0003 holds, saved earlier in the epoch: -0003 is taken."""
    data, logdir = run
    shutil.copy(logdir / "checkpoint-0003.pt", logdir / "checkpoint-best.pt")
    cut_short(logdir / "checkpoint-latest.pt")
    path, _ = read_resume_checkpoint(resume_config(data, logdir))
    assert path == logdir / "checkpoint-0003.pt"


def test_resume_strict_stops(run):
    data, logdir = run
    cut_short(logdir / "checkpoint-latest.pt")
    with pytest.raises(DamagedCheckpoint) as caught:
        read_resume_checkpoint(resume_config(data, logdir, "train.resume_strict=true"))
    assert str(caught.value).startswith(f"{logdir / 'checkpoint-latest.pt'}: cut short: its archive has no end")
    assert str(caught.value).endswith("(train.resume_strict=true: no older checkpoint instead)")
    assert caught.value.exit_code == 2


def test_a_checkpoint_named_by_its_path_never_gives_way(run):
    data, logdir = run
    cut_short(logdir / "checkpoint-latest.pt")
    cfg = load_config(SYNTHETIC_CONFIG, overrides(data, logdir, f"train.resume={logdir / 'checkpoint-latest.pt'}"))
    with pytest.raises(
        DamagedCheckpoint, match=r"checkpoint-latest\.pt: cut short: its archive has no end \(\d+ bytes\)$"
    ):
        read_resume_checkpoint(cfg)


def test_no_checkpoint_that_reads(run):
    data, logdir = run
    for path in logdir.glob("checkpoint-*.pt"):
        cut_short(path)
    with pytest.raises(DamagedCheckpoint, match=rf"; no other checkpoint in {logdir} reads either$"):
        read_resume_checkpoint(resume_config(data, logdir))
