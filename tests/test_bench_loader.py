import json

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import run_console_script
from stabn.commands.bench import main
from stabn.data import read_label_file
from stabn.perf.data_speed import make_frames

KEYS = {"clips_per_s", "decode_clips_per_s", "ratio", "mode", "frame_length", "frame_size", "decoder"}
TINY = "--videos 2 --video-frames 6 --height 40 --width 56 --frame-length 4 --frame-size 32".split()
TINY += "--batch-size 2 --num-batches 2".split()


def bench(*args):
    return run_console_script("stabn-bench", args, timeout=120)


def test_make_frames(tmp_path):
    labels = make_frames(tmp_path, num_videos=2, num_frames=3, height=40, width=56)
    records = read_label_file(labels, tmp_path, check_frames=True)
    assert [(r.video_id, r.num_frames) for r in records] == [("1", 3), ("2", 3)]
    frame = np.asarray(Image.open(tmp_path / "2" / "000003.jpg"))
    assert frame.shape == (40, 56, 3) and frame.std() > 10  # textured, not flat


@pytest.mark.slow
def test_cli_end_to_end(tmp_path):
    result = bench("loader", "--make-frames", str(tmp_path / "frames"), "--mode", "train", *TINY)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert KEYS <= report.keys()
    assert report["mode"] == "train" and report["frame_length"] == 4 and report["frame_size"] == 32
    assert report["clips_per_s"] > 0 and report["decode_clips_per_s"] > 0 and report["ratio"] > 0
    assert (tmp_path / "frames" / "labels.txt").exists()


def test_eval_on_given_frames(tmp_path, capsys):
    make_frames(tmp_path, num_videos=2, num_frames=6, height=40, width=56)
    threads = torch.get_num_threads()
    assert (
        main(
            ["loader", "--frames-root", str(tmp_path), "--mode", "eval", "--num-clips", "2", "--num-crops", "3", *TINY]
        )
        == 0
    )
    assert torch.get_num_threads() == threads  # restored
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert KEYS <= report.keys()
    assert report["mode"] == "eval" and report["views"] == 6 and report["jitter"] is None


def test_rgb_output_order(tmp_path, capsys):
    make_frames(tmp_path, num_videos=2, num_frames=6, height=40, width=56)
    assert main(["loader", "--frames-root", str(tmp_path), "--channel-order", "rgb", *TINY]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["channel_order"] == "rgb" and report["mode"] == "train" and report["clips_per_s"] > 0


def test_cli_errors(tmp_path, capsys):
    assert main(["loader", "--make-frames", str(tmp_path), *TINY, "--frame-size", "64"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: frames of ") and "smaller than the 64x64 crop" in err and "\n" not in err
    assert main(["loader", "--batch-size", "0"]) == 2
    assert capsys.readouterr().err.strip() == "error: --batch-size must be >= 1, got 0"
    with pytest.raises(SystemExit) as e:
        main([])  # a benchmark is required
    assert e.value.code == 2
