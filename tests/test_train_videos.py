"""Training and evaluation from video files, as users launch them: `stabn-synthetic --format
mp4|webm` writes the data, `torchrun` trains on 2 ranks with the decoding in loader workers,
`eval.py` evaluates from the videos, a stop mid-epoch resumes bit-identically, and corrupt
videos are skipped and listed."""

import json
import re
import subprocess
import sys

import pytest
import torch

from helpers import REPO, SYNTHETIC_CONFIG, child_env, run_console_script, torchrun
from stabn.checkpoint import read_checkpoint

av = pytest.importorskip("av")

NUM_TRAIN, NUM_VAL = 12, 4
FORMATS = {"mp4": "libx264", "webm": "libvpx-vp9"}


@pytest.fixture(scope="module", params=sorted(FORMATS))
def video_data(request, tmp_path_factory):
    if FORMATS[request.param] not in av.codecs_available:
        pytest.skip(f"this PyAV's FFmpeg has no {FORMATS[request.param]} encoder")
    root = tmp_path_factory.mktemp(f"synthetic_{request.param}")
    proc = run_console_script("stabn-synthetic", [
        "--out", root, "--format", request.param, "--num-train", NUM_TRAIN, "--num-val", NUM_VAL,
        "--frames", 12, "--size", 40, "--seed", 5, "--workers", 1,
    ])  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return root, request.param


def video_run(data, logdir, *extra, epochs=2, workers=1):
    root, suffix = data
    return [
        f"logdir={logdir}", "model.name=abn_resnet18", "model.width=4", "model.num_classes=8",
        "data.source=videos", "data.label_format=generic", f"data.root={root}/videos",
        f"data.train_labels={root}/train.txt", f"data.val_labels={root}/val.txt",
        f"data.class_names={root}/classes.txt", "data.frame_length=8", "data.frame_size=32",
        f"data.num_workers={workers}", f"train.epochs={epochs}", "train.batch_size=2", "train.lr=0.01",
        "train.milestones=[1]", "train.save_every=1", "eval.batch_size=2", *extra,
    ]  # fmt: skip


def run(cmd, cwd, timeout=400):
    return subprocess.run(cmd, capture_output=True, text=True, env=child_env(), cwd=cwd, timeout=timeout)


@pytest.mark.slow
@pytest.mark.distributed
def test_torchrun_trains_from_videos_and_eval_reads_them(video_data, tmp_path):
    logdir = tmp_path / "run"
    proc = run(torchrun("train_ddp.py", "--config", str(SYNTHETIC_CONFIG), *video_run(video_data, logdir)), tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "batch 2 per process x 2 processes = 4; 3 steps an epoch" in proc.stdout
    history = json.loads((logdir / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2] and all(h["val"]["num_videos"] == NUM_VAL for h in history)
    saved = (logdir / "config.yaml").read_text()
    assert "source: videos" in saved and f"root: {video_data[0]}/videos" in saved

    evaluation = ["eval.num_clips=2", "eval.num_crops=3", "eval.checkpoint=final", "eval.explain_metrics=true",
                  "eval.explain_videos=4"]  # fmt: skip
    proc = run(torchrun("eval.py", "--logdir", str(logdir), *evaluation), tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((logdir / "eval" / "results.json").read_text())
    assert results["num_videos"] == NUM_VAL and results["views_per_video"] == 6
    # The ground truth of the videos is found by their names: the temporal hit is scored.
    assert results["explanation"]["videos"] == NUM_VAL and results["explanation"]["temporal_hit"] is not None

    check = run_console_script("stabn-check", ["--config", SYNTHETIC_CONFIG, *video_run(video_data, tmp_path / "c")])
    assert check.returncode == 0, check.stderr
    assert "every video's container opens" in check.stdout


@pytest.mark.slow
@pytest.mark.parametrize("video_data", ["webm"], indirect=True)  # one format suffices here
def test_a_stop_mid_epoch_resumes_bit_identically_from_videos(video_data, tmp_path):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    train = [sys.executable, str(REPO / "train_dp.py"), "--config", str(SYNTHETIC_CONFIG)]
    assert run(train + video_run(video_data, whole), tmp_path).returncode == 0
    # SIGTERM after step 8: the 2nd of the second epoch's 6.
    stopped = run([sys.executable, str(REPO / "tests" / "stop_at_step.py"), "8", "--config", str(SYNTHETIC_CONFIG),
                   *video_run(video_data, cut)], tmp_path)  # fmt: skip
    assert stopped.returncode == 143, stopped.stderr[-3000:]
    assert read_checkpoint(cut / "checkpoint-latest.pt")["partial_epoch"]["step"] == 2
    resumed = run(train + video_run(video_data, cut) + ["--resume", "latest"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = torch.load(whole / "checkpoint-final.pt", weights_only=True)
    b = torch.load(cut / "checkpoint-final.pt", weights_only=True)
    assert a["iteration"] == b["iteration"] == 12
    for key, value in a["model_state_dict"].items():
        assert torch.equal(value, b["model_state_dict"][key]), key


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("video_data", ["mp4"], indirect=True)
def test_torchrun_skips_corrupt_videos_and_lists_them(video_data, tmp_path):
    root, suffix = video_data
    broken = sorted((root / "videos").glob(f"*.{suffix}"))
    data = tmp_path / "data"
    (data / "videos").mkdir(parents=True)
    for path in broken:
        (data / "videos" / path.name).write_bytes(path.read_bytes())
    for name in ("train.txt", "val.txt", "classes.txt"):
        (data / name).write_text((root / name).read_text())
    first = (root / "train.txt").read_text().split()[0]
    (data / "videos" / first).write_bytes(b"not a video")
    cmd = torchrun("train_ddp.py", "--config", str(SYNTHETIC_CONFIG),
                   *video_run((data, suffix), tmp_path / "run", epochs=1), "data.skip_corrupt=true")  # fmt: skip
    proc = run(cmd, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    listed = (tmp_path / "run" / "skipped.txt").read_text().splitlines()
    assert listed == [f"epoch 1\t{data / 'train.txt'}:1: {data / 'videos' / first} is not a video file PyAV can read "
                      "(Invalid data found when processing input)"]  # fmt: skip
    assert "epoch 1: 1 video skipped (data.skip_corrupt), listed in" in proc.stderr + proc.stdout


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("video_data", ["mp4"], indirect=True)
def test_a_second_torchrun_job_fine_tunes_to_another_label_set(video_data, tmp_path):
    """A run on the 8 classes, then a 2-rank job from its checkpoint on 4 new classes (the old
    ones paired), layer1 frozen: the class layers start afresh, the rest from the first run."""
    root, suffix = video_data
    first = tmp_path / "first"
    train = [sys.executable, str(REPO / "train_dp.py"), "--config", str(SYNTHETIC_CONFIG)]
    assert run(train + video_run(video_data, first, epochs=1, workers=0), tmp_path).returncode == 0
    for split in ("train", "val"):
        lines = [line.split() for line in (root / f"{split}.txt").read_text().splitlines()]
        (tmp_path / f"{split}4.txt").write_text("".join(f"{path} {int(label) // 2}\n" for path, label in lines))
    (tmp_path / "classes4.txt").write_text("".join(f"pair {i}\n" for i in range(4)))
    second = tmp_path / "second"
    tune = [f"model.init_from={first / 'checkpoint-final.pt'}", "model.num_classes=4", "train.freeze=layer1",
            "train.reset_lr_multiplier=10", f"data.train_labels={tmp_path / 'train4.txt'}",
            f"data.val_labels={tmp_path / 'val4.txt'}", f"data.class_names={tmp_path / 'classes4.txt'}"]  # fmt: skip
    proc = run(torchrun("train_ddp.py", "--config", str(SYNTHETIC_CONFIG),
                        *video_run(video_data, second, *tune, epochs=1)), tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"model.init_from .*first/checkpoint-final.pt: kept \d+ of \d+ tensors; reset \d+ for 4 classes "
                     r"\(was 8\)", proc.stdout), proc.stdout  # fmt: skip
    import stabn

    tuned = stabn.load_pretrained(second / "checkpoint-final.pt")
    assert tuned.spec.num_classes == 4 and tuned.spec.class_names == ("pair 0", "pair 1", "pair 2", "pair 3")
    before = torch.load(first / "checkpoint-final.pt", weights_only=True)["model_state_dict"]
    after = tuned.state_dict()
    assert torch.equal(after["layer1.0.conv1.weight"], before["layer1.0.conv1.weight"])  # frozen
    assert not torch.equal(after["layer2.0.conv1.weight"], before["layer2.0.conv1.weight"])  # fine-tuned
    assert after["fc.weight"].shape[0] == 4
