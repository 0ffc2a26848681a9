"""`stabn-check`: each input a job reads checked before it starts, in process; bad input
as one `error:` line and exit code 2 from a real process; and the launch scripts run the check
before their launcher, stopping there on bad input."""

import shutil

import pytest
import torch
import torchvision

from helpers import SYNTHETIC_CONFIG, file_size_limit, run_console_script, tiny_run
from stabn.commands.check import main
from stabn.config import load_config
from stabn.data.synthetic import make_synthetic_dataset
from stabn.engine.distributed import DistContext
from stabn.engine.loop import Trainer


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_synthetic_dataset(root, num_train=4, num_val=2, frames=8, size=32, seed=9, workers=1)
    return root


@pytest.fixture
def run_check(capsys):
    """The check run in process: (exit code, stdout, stderr)."""

    def run(*args):
        with pytest.raises(SystemExit) as caught:
            main(list(map(str, args)))
        out, err = capsys.readouterr()
        return caught.value.code, out, err

    return run


def training_args(data, logdir, *extra):
    return ["--config", SYNTHETIC_CONFIG, *tiny_run(data, logdir), *extra]


def error_of(result):
    """The one `error:` line of a failed check (exit code 2, nothing else on stderr)."""
    code, out, err = result
    assert code == 2 and out == "", (code, out, err)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0][len("error: ") :]


def test_a_good_training_job_passes(run_check, data, tmp_path):
    code, out, err = run_check(*training_args(data, tmp_path / "run"))
    assert code == 0, err
    assert out == (
        f"check passed: 4 training and 2 validation videos, every frame folder there, first frames decode "
        f"(the smallest 32x32), abn_resnet18 builds, {tmp_path / 'run'} writable\n"
    )


def test_a_missing_frame_folder_is_named_with_its_label_file_and_line(run_check, data, tmp_path):
    labels = tmp_path / "val.txt"
    labels.write_text((data / "val.txt").read_text() + "999999 8 0\n")
    message = error_of(run_check(*training_args(data, tmp_path / "run", f"data.val_labels={labels}")))
    assert message == f"{labels}:3: frame folder {data / 'frames' / '999999'} does not exist"


def test_first_frames_that_do_not_decode_or_are_too_small(run_check, data, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    first = copy / "frames" / "000001" / "000001.jpg"  # the first training video's
    first.write_bytes(first.read_bytes()[:50])
    message = error_of(run_check(*training_args(copy, tmp_path / "run")))
    assert message.startswith(f"{copy / 'train.txt'}:1: corrupt JPEG {first}: ")
    message = error_of(run_check(*training_args(data, tmp_path / "run", "data.frame_size=40")))
    assert message == (
        f"{data / 'train.txt'}:1: frames of {data / 'frames' / '000001'} are 32x32, smaller than the 40x40 crop"
    )
    message = error_of(run_check(*training_args(data, tmp_path / "run", "data.frame_template=img_%05d.jpg")))
    assert message == f"{data / 'train.txt'}:1: missing frame {data / 'frames' / '000001' / 'img_00001.jpg'}"


def test_config_errors(run_check, data, tmp_path):
    message = error_of(run_check(*training_args(data, tmp_path / "run", "train.epoch=1")))
    assert message == "command line: unknown config key 'train.epoch'; did you mean 'train.epochs'?"
    assert error_of(run_check("train.epochs=1")).startswith("no --config given; usage: stabn-check --config ")


def test_a_run_folder_that_cannot_be_written(run_check, data, tmp_path):
    (tmp_path / "a_file").write_text("")
    message = error_of(run_check(*training_args(data, tmp_path / "a_file" / "run")))
    assert message == (
        f"cannot write {tmp_path / 'a_file' / 'run'}: {tmp_path / 'a_file'} is not a folder; "
        "choose a logdir you can write to"
    )


def test_a_run_folder_that_takes_no_data(run_check, data, tmp_path):
    """The check writes a block of data, which a full disk refuses (here a file-size limit, the
    same refusal for the process): exit code 75, the machine's."""
    with file_size_limit(1000):
        code, out, err = run_check(*training_args(data, tmp_path / "run"))
    assert (code, out) == (75, "")
    assert err == f"error: cannot write {tmp_path / 'run'}: file too large; choose a logdir you can write to\n"


def test_2d_weights_that_do_not_fit(run_check, data, tmp_path):
    resnet18 = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), resnet18)
    message = error_of(run_check(*training_args(data, tmp_path / "run", f"model.pretrained_2d={resnet18}")))
    assert message.startswith(f"{resnet18}: does not fit abn_resnet18's backbone: key 'conv1.weight' has shape ")
    code, out, _ = run_check(
        *training_args(data, tmp_path / "run", "model.width=64", f"model.pretrained_2d={resnet18}")
    )
    assert code == 0 and f"abn_resnet18 builds with the 2D weights of {resnet18}" in out


@pytest.mark.slow
def test_resume_and_evaluation_checkpoints(run_check, data, tmp_path, caplog):
    """The checkpoint to resume must fit the config's model, a checkpoint-latest.pt cut short
    gives way as in training; eval.py's check reads the run's."""
    logdir = tmp_path / "run"
    torch.set_num_threads(1)
    Trainer(load_config(SYNTHETIC_CONFIG, tiny_run(data, logdir)), DistContext()).fit()
    code, out, err = run_check(*training_args(data, logdir, "--resume", "latest"))
    assert code == 0 and f"resumes from {logdir / 'checkpoint-latest.pt'} after epoch 1" in out, err
    message = error_of(run_check(*training_args(data, logdir, "model.width=8", "train.resume=latest")))
    assert message.startswith(f"{logdir / 'checkpoint-latest.pt'}: does not fit the model: key 'conv1.weight' ")
    message = error_of(run_check(*training_args(data, logdir, f"train.resume={logdir}")))
    assert message.startswith(f"{logdir} is a folder, not a checkpoint file: pass one of its checkpoints")
    latest, final = logdir / "checkpoint-latest.pt", logdir / "checkpoint-final.pt"
    shutil.copy(latest, tmp_path / "latest.pt")
    latest.write_bytes(latest.read_bytes()[:1000])
    code, out, err = run_check(*training_args(data, logdir, "--resume", "latest"))
    assert code == 0 and f"resumes from {final} after epoch 1" in out, err
    assert f"{latest}: cut short: its archive has no end (1000 bytes); resuming from {final} instead" in caplog.text
    shutil.copy(tmp_path / "latest.pt", latest)

    code, out, err = run_check("--eval", "--logdir", logdir, "eval.num_clips=2")
    assert code == 0, err
    assert out == (
        f"check passed: {logdir / 'checkpoint-best.pt'} holds abn_resnet18, 2 videos to evaluate, every frame folder "
        f"there, first frames decode (the smallest 32x32), {logdir / 'eval'} writable\n"
    )
    message = error_of(run_check("--eval", "--logdir", logdir, "--checkpoint", tmp_path / "none.pt"))
    assert message == f"{tmp_path / 'none.pt'}: no such checkpoint file"


@pytest.mark.slow
def test_a_real_process_exits_2_with_one_line(data, tmp_path):
    proc = run_console_script(
        "stabn-check", training_args(data, tmp_path / "run", "train.epoch=1"), cwd=tmp_path, timeout=120
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == "error: command line: unknown config key 'train.epoch'; did you mean 'train.epochs'?\n"
