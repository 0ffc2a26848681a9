"""Bad input in every command: one `error: ...` line on stderr naming the file, line, key or
value at fault, exit code 2, no traceback, and nothing already written lost.

`train_dp.py` and `eval.py` run for real, as subprocesses, on tiny data. Each pays for importing
torch, so the `runs` fixture starts them all at once, a few at a time, and every test checks one
result. `stabn-bench` and `stabn-synthetic` return their exit code (`run_command`) instead of
exiting; they run in process here.
"""

import concurrent.futures
import os
import random
import re
import shutil
import signal
import subprocess
import sys

import pytest
import torch
import torchvision
from torch.utils.data import DataLoader, Dataset

from helpers import REPO, tiny_run
from stabn.checkpoint import read_checkpoint, read_state_dict
from stabn.commands.bench import main as bench_main
from stabn.commands.common import stop_loader_workers
from stabn.commands.make_synthetic import main as synthetic_main
from stabn.config import load_config
from stabn.data.synthetic import make_synthetic_dataset
from stabn.engine.distributed import DistContext
from stabn.engine.eval_job import eval_job
from stabn.engine.loop import Trainer
from stabn.errors import ConfigError, DataError, error_message
from stabn.models import build_model

CONFIG = REPO / "configs" / "synthetic.yaml"
TRUNCATED = ("000002", "000003.jpg")  # a training video and one of its frames
RANDOM_BYTES = ("000003", "000005.jpg")


def tiny_overrides(data, logdir, workers=0):
    return tiny_run(
        data,
        logdir,
        "data.flip=none",
        "train.batch_size=2",
        "train.warmup_epochs=0",
        "train.milestones=[1]",
        "eval.batch_size=2",
        workers=workers,
    )


def train_cmd(data, logdir, *extra, workers=0):
    return [
        sys.executable,
        str(REPO / "train_dp.py"),
        "--config",
        str(CONFIG),
        *tiny_overrides(data, logdir, workers),
        *extra,
    ]


def eval_cmd(logdir, checkpoint, data, *extra):
    return [
        sys.executable,
        str(REPO / "eval.py"),
        "--logdir",
        str(logdir),
        "--checkpoint",
        str(checkpoint),
        f"data.frames_root={data}/frames",
        f"data.val_labels={data}/val.txt",
        "data.num_workers=0",
        *extra,
    ]


def frame(data, video_frame):
    return data / "frames" / video_frame[0] / video_frame[1]


def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def scramble(path):
    junk = random.Random(0).randbytes(1000)
    assert not junk.startswith(b"\xff\xd8")  # not even the start of a JPEG
    path.write_bytes(junk)


def replace_line(path, lineno, text):
    lines = path.read_text().splitlines()
    lines[lineno - 1] = text
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def tmp(tmp_path_factory):
    return tmp_path_factory.mktemp("bad_input")


@pytest.fixture(scope="module")
def data(tmp):
    root = tmp / "data"
    make_synthetic_dataset(root, num_train=4, num_val=2, frames=8, size=32, workers=1)
    return root


@pytest.fixture(scope="module")
def variants(tmp, data):
    """Copies of the data, each with one kind of damage."""

    def variant(name, damage):
        root = tmp / name
        shutil.copytree(data, root)
        damage(root)
        return root

    return {
        "malformed": variant("malformed", lambda r: replace_line(r / "train.txt", 2, "000002 abc 1")),
        "class_range": variant("class_range", lambda r: replace_line(r / "val.txt", 2, "000006 8 8")),
        "missing": variant("missing", lambda r: shutil.rmtree(r / "frames" / "000003")),
        "truncated": variant("truncated", lambda r: truncate(frame(r, TRUNCATED))),
        "random": variant("random", lambda r: scramble(frame(r, RANDOM_BYTES))),
        "both": variant("both", lambda r: (truncate(frame(r, TRUNCATED)), scramble(frame(r, RANDOM_BYTES)))),
    }


@pytest.fixture(scope="module")
def trained(tmp, data):
    """A run folder after one tiny epoch of ST-ABN (8 classes, 8 frames)."""
    logdir = tmp / "trained"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        Trainer(load_config(CONFIG, tiny_overrides(data, logdir)), DistContext()).fit()
    finally:
        torch.set_num_threads(threads)
    return logdir


@pytest.fixture(scope="module")
def existing(tmp, trained):
    """A copy of the trained run folder, which a failing run then writes into; and the bytes of
    its checkpoints, history and config before that."""
    logdir = tmp / "existing"
    shutil.copytree(trained, logdir)
    return logdir, {
        p.name: p.read_bytes()
        for p in logdir.iterdir()
        if p.suffix == ".pt" or p.name in ("history.json", "config.yaml", "args.json")
    }


@pytest.fixture(scope="module")
def runs(tmp, data, variants, trained, existing):
    """Every command of the tests below, run concurrently: name -> CompletedProcess."""
    v = variants
    ckpt = trained / "checkpoint-final.pt"
    half = tmp / "half.pt"
    half.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    resnet18 = tmp / "resnet18.pth"  # a 2D ResNet at width 64, for the width-4 model
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), resnet18)
    bad_yaml = tmp / "bad.yaml"
    bad_yaml.write_text("model:\n  name: abn_resnet18\n  width: [16\ntrain:\n  epochs: 2\n")
    commands = {
        "malformed": train_cmd(v["malformed"], tmp / "r_malformed"),
        "class_range": train_cmd(v["class_range"], tmp / "r_class_range"),
        "missing_0": train_cmd(v["missing"], tmp / "r_missing_0"),
        "missing_1": train_cmd(v["missing"], tmp / "r_missing_1", workers=1),
        # the truncated frame: into a run folder that holds a good run's checkpoints
        "truncated_0": train_cmd(v["truncated"], existing[0]),
        "random_1": train_cmd(v["random"], tmp / "r_random_1", workers=1),
        "skip_0": train_cmd(v["both"], tmp / "r_skip_0", "data.skip_corrupt=true"),
        "skip_1": train_cmd(v["both"], tmp / "r_skip_1", "data.skip_corrupt=true", workers=1),
        "frame_size": train_cmd(data, tmp / "r_frame_size", "data.frame_size=64"),
        "yaml_syntax": [sys.executable, str(REPO / "train_dp.py"), "--config", str(bad_yaml)],
        "no_config": [sys.executable, str(REPO / "train_dp.py"), "train.epochs=1"],
        "eval_half": eval_cmd(tmp / "e_half", half, data),
        "eval_classes": eval_cmd(tmp / "e_classes", ckpt, data, "model.num_classes=5"),
        "eval_length": eval_cmd(tmp / "e_length", ckpt, data, "data.frame_length=4"),
        "imagenet_offline": train_cmd(data, tmp / "r_imagenet", "model.pretrained_2d=imagenet"),
        "pretrained_misfit": train_cmd(data, tmp / "r_misfit", f"model.pretrained_2d={resnet18}"),
    }
    # An empty torchvision cache, and downloads refused at once: no command here goes online.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TORCH_HOME": str(tmp / "torch_home")}
    env.update({var: "http://127.0.0.1:9" for var in ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY")})

    def run(cmd):
        return subprocess.run(cmd, capture_output=True, text=True, cwd=tmp, env=env, timeout=180)

    with concurrent.futures.ThreadPoolExecutor(max_workers=3) as pool:
        futures = {name: pool.submit(run, cmd) for name, cmd in commands.items()}
        return {name: f.result() for name, f in futures.items()}


def error_line(proc):
    """The one `error: ...` line of a failed command, after checking the rule."""
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
    return lines[0]


# -- label files --------------------------------------------------------------------------


@pytest.mark.slow
def test_malformed_label_line_names_file_and_line(runs, variants):
    line = error_line(runs["malformed"])
    assert line.startswith(f"error: {variants['malformed'] / 'train.txt'}:2: ") and "'abc'" in line


@pytest.mark.slow
def test_class_id_out_of_range_names_file_and_line(runs, variants):
    assert (
        error_line(runs["class_range"])
        == f"error: {variants['class_range'] / 'val.txt'}:2: class id 8 is outside [0, 8)"
    )


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 1])
def test_missing_frame_folder_is_named_with_its_label_file_and_line(runs, variants, workers):
    folder = variants["missing"] / "frames" / "000003"
    label_file = variants["missing"] / "train.txt"
    assert error_line(runs[f"missing_{workers}"]) == f"error: {label_file}:3: frame folder {folder} does not exist"


# -- frames -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,variant,where", [("truncated_0", "truncated", TRUNCATED), ("random_1", "random", RANDOM_BYTES)]
)
@pytest.mark.slow
def test_corrupt_jpeg_is_named(runs, variants, name, variant, where):
    line = error_line(runs[name])
    assert line.startswith(f"error: corrupt JPEG {frame(variants[variant], where)}: "), line


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 1])
def test_skip_corrupt_trains_and_logs_the_skipped_videos(runs, tmp, variants, workers):
    proc = runs[f"skip_{workers}"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    for where in (TRUNCATED, RANDOM_BYTES):
        assert re.search(
            rf"skipped a video .*corrupt JPEG {re.escape(str(frame(variants['both'], where)))}", proc.stderr
        ), proc.stderr[-3000:]
    assert (tmp / f"r_skip_{workers}" / "checkpoint-final.pt").is_file()


@pytest.mark.slow
def test_frames_smaller_than_the_crop_name_the_folder(runs, data):
    line = error_line(runs["frame_size"])
    assert re.fullmatch(
        rf"error: frames of {re.escape(str(data / 'frames'))}/\d{{6}} are 32x32, "
        r"smaller than the 64x64 crop",
        line,
    ), line


@pytest.mark.slow
def test_failing_run_keeps_what_an_earlier_run_wrote(runs, existing):
    error_line(runs["truncated_0"])
    logdir, before = existing
    for name, content in before.items():
        assert (logdir / name).read_bytes() == content, name
    assert read_checkpoint(logdir / "checkpoint-latest.pt")["epoch"] == 1


# -- configs ------------------------------------------------------------------------------


@pytest.mark.slow
def test_yaml_syntax_error_through_train_dp(runs, tmp):
    assert re.fullmatch(
        rf"error: {re.escape(str(tmp / 'bad.yaml'))}:\d+: YAML syntax error.*", error_line(runs["yaml_syntax"])
    )


@pytest.mark.slow
def test_train_dp_without_config_says_how_to_call_it(runs):
    assert error_line(runs["no_config"]) == (
        "error: no --config given; usage: train_dp.py --config configs/<name>.yaml [key=value ...] "
        "[--logdir DIR] [--resume latest]"
    )


@pytest.mark.parametrize("key", ["train_labels", "val_labels"])
def test_a_label_file_not_set_is_named(data, tmp_path, key):
    cfg = load_config(CONFIG, tiny_overrides(data, tmp_path / "run") + [f"data.{key}="])
    with pytest.raises(ConfigError, match=rf"^data\.{key} is not set: give it in the config or as data\.{key}=PATH$"):
        Trainer(cfg, DistContext())


def test_an_empty_training_list_is_named(data, tmp_path):
    (tmp_path / "empty.txt").write_text("")
    cfg = load_config(CONFIG, tiny_overrides(data, tmp_path / "run") + [f"data.train_labels={tmp_path}/empty.txt"])
    with pytest.raises(DataError, match=rf"^{tmp_path}/empty\.txt: no videos to train on$"):
        Trainer(cfg, DistContext())


@pytest.mark.slow
def test_eval_of_an_empty_list_is_named(trained, tmp_path):
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(DataError, match=rf"^{tmp_path}/empty\.txt: no videos to evaluate$"):
        eval_job(str(trained), None, [f"data.val_labels={tmp_path}/empty.txt", "data.num_workers=0"])


# -- checkpoints --------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.slow
def test_imagenet_weights_missing_offline_name_the_file_and_the_cache(runs, tmp):
    cache = tmp / "torch_home" / "hub" / "checkpoints"
    line = error_line(runs["imagenet_offline"])
    assert line.startswith(f"error: ImageNet weights resnet18-f37072fd.pth are not in torchvision's cache {cache} and "
                           "could not be downloaded (")  # fmt: skip
    assert "Connection refused" in line  # why the download failed
    assert line.endswith("): put the file from https://download.pytorch.org/models/resnet18-f37072fd.pth there, or "
                         "give model.pretrained_2d a local file")  # fmt: skip


@pytest.mark.slow
def test_a_2d_file_that_does_not_fit_the_backbone_stops_training(runs, tmp):
    line = error_line(runs["pretrained_misfit"])
    assert line.startswith(
        f"error: {tmp / 'resnet18.pth'}: does not fit abn_resnet18's backbone: key 'conv1.weight' has shape "
        "[64, 3, 7, 7] in the file, which does not fit [4, 3, 1, 7, 7] in the model"
    )


def test_eval_truncated_checkpoint(runs, tmp):
    assert error_line(runs["eval_half"]).startswith(f"error: {tmp / 'half.pt'}: cut short: its archive has no end (")


@pytest.mark.slow
def test_eval_checkpoint_that_does_not_fit_names_the_first_key(runs, trained):
    ckpt = trained / "checkpoint-final.pt"
    state = read_state_dict(ckpt)
    model = build_model("abn_resnet18", num_classes=5, frame_length=8, frame_size=32, width=4).state_dict()
    first = next(k for k, t in model.items() if k not in state or state[k].shape != t.shape)
    line = error_line(runs["eval_classes"])
    assert line.startswith(f"error: {ckpt}: ") and f"'{first}'" in line, line


@pytest.mark.slow
def test_eval_frame_length_the_model_cannot_take(runs, trained):
    line = error_line(runs["eval_length"])
    assert line.startswith(f"error: {trained / 'checkpoint-final.pt'}: ") and "'fc_att_out.weight'" in line, line


# -- the other commands, in process (their own tests run them as subprocesses) -------------


def test_bench_loader_names_the_corrupt_frame(variants, capsys):
    root = variants["truncated"]
    code = bench_main(
        [
            "loader",
            "--frames-root",
            str(root / "frames"),
            "--label-file",
            str(root / "train.txt"),
            "--frame-length",
            "8",
            "--frame-size",
            "32",
            "--mode",
            "eval",
            "--batch-size",
            "4",
            "--num-batches",
            "1",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"error: corrupt JPEG {frame(root, TRUNCATED)}: "), err


def test_synthetic_out_that_is_a_file(tmp_path, capsys):
    (tmp_path / "a_file").write_text("")
    code = synthetic_main(
        [
            "--out",
            str(tmp_path / "a_file"),
            "--num-train",
            "2",
            "--num-val",
            "0",
            "--frames",
            "4",
            "--size",
            "32",
            "--workers",
            "1",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert err == f"error: cannot write {tmp_path / 'a_file' / 'frames'}: {tmp_path / 'a_file'} is not a folder\n"
    assert (tmp_path / "a_file").read_text() == ""


# -- run_cli's helpers, in process ----------------------------------------------------------


class _Failing(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, index):
        raise DataError(f"corrupt JPEG /videos/{index}/000001.jpg: bad\nsecond line")


def _ignore_sigterm(worker_id):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # as the trainer's loader workers do


def test_error_message_of_a_loader_worker_is_its_own():
    loader = DataLoader(_Failing(), batch_size=2, num_workers=1, worker_init_fn=_ignore_sigterm)
    it = iter(loader)
    workers = list(it._workers)
    with pytest.raises(DataError) as caught:
        next(it)
    error = caught.value
    del it
    assert "Caught DataError in DataLoader worker process 0" in str(error)  # what torch makes of it
    assert error_message(error) == "corrupt JPEG /videos/0/000001.jpg: bad second line"
    assert error_message(DataError("a.txt:3: class id 9 is outside [0, 8)")) == "a.txt:3: class id 9 is outside [0, 8)"

    # The workers ignore SIGTERM: only an orderly shutdown ends them, which run_cli does
    # through the frames of the error's traceback.
    assert all(w.is_alive() for w in workers)
    assert stop_loader_workers(error) == 1
    assert not any(w.is_alive() for w in workers)
    assert stop_loader_workers(error) == 0


def test_an_error_that_follows_another_is_dated_after_it(tmp_path, monkeypatch, capsys):
    """torchrun names the earliest failure, in whole seconds, the lowest rank at a tie: a rank
    that lost its peers dates its line a second later, so the rank that failed first stays the
    root cause (rank 0's "lost the other processes" would win a tie with rank 1's bad input)."""
    import json as json_module

    from stabn.engine.distributed import PeersGone
    from stabn.errors import DataError, report_error

    monkeypatch.setattr("stabn.errors.time.time", lambda: 1000.5)
    stamps = {}
    for name, error in (("cause", DataError("corrupt JPEG x.jpg")), ("follower", PeersGone("rank 0 lost them"))):
        path = tmp_path / f"{name}.json"
        monkeypatch.setenv("TORCHELASTIC_ERROR_FILE", str(path))
        assert report_error(error) == error.exit_code
        stamps[name] = int(json_module.loads(path.read_text())["message"]["extraInfo"]["timestamp"])
    assert stamps == {"cause": 1000, "follower": 1001}
    capsys.readouterr()
