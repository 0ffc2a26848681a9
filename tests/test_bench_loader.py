import json

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import has_encoder, run_console_script
from stabn.commands.bench import main
from stabn.data import read_label_file
from stabn.data.video_dataset import VideoClipDataset
from stabn.data.video_reader import clip_frames, open_video
from stabn.perf.data_speed import VIDEO_CODECS, make_frames, make_videos

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


# Videos: a few 64x48 clips of the synthetic scenes, 2 batches.
TINY_VIDEOS = "--videos 2 --video-frames 6 --height 48 --width 64 --frame-length 4 --frame-size 32".split()
TINY_VIDEOS += "--batch-size 2 --num-batches 2".split()
VIDEO_KEYS = {"source", "codec", "size", "fps", "frames_per_video", "keyframes_per_video", "files", "bytes"}
VIDEO_KEYS |= {"encoder", "encoder_settings", "as_jpeg_frames", "short_side", "clips_per_s_per_core", "cpu_seconds"}


def needs_encoder(codec):
    return pytest.mark.skipif(
        not has_encoder(VIDEO_CODECS[codec].encoder), reason=f"no {VIDEO_CODECS[codec].encoder} in PyAV's FFmpeg"
    )


CODECS = [pytest.param(c, marks=needs_encoder(c)) for c in VIDEO_CODECS]


def last_report(capsys):
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def check_figures(report):
    """The figures are the arithmetic of one run's two timings."""
    seconds, clips = report["seconds"], report["clips"]
    assert clips == report["batch_size"] * report["num_batches"]
    assert report["clips_per_s"] == round(clips / seconds["full"], 3)
    assert report["decode_clips_per_s"] == round(clips / seconds["decode_only"], 3)
    assert report["ratio"] == round(seconds["decode_only"] / seconds["full"], 3)
    assert report["clips_per_s_per_core"] == report["clips_per_s"] and report["threads"] == 1
    cpu = report["cpu_seconds"]
    assert report["cpu_ratio"] == round(cpu["decode_only"] / cpu["full"], 3)


@pytest.mark.parametrize("codec", CODECS)
def test_make_videos_holds_the_scenes_of_make_frames(tmp_path, codec):
    frames_list = make_frames(tmp_path / "frames", num_videos=2, num_frames=3, height=48, width=64, seed=3)
    video_list, as_jpeg = make_videos(tmp_path / "videos", codec, num_videos=2, num_frames=3, size=(48, 64), seed=3)
    suffix = VIDEO_CODECS[codec].suffix
    assert (tmp_path / "videos" / "videos.txt").read_text() == f"1{suffix} 0\n2{suffix} 1\n"
    jpegs = sorted((tmp_path / "frames").glob("*/*.jpg"))
    assert as_jpeg == {"files": 6, "bytes": sum(p.stat().st_size for p in jpegs), "size": [48, 64]}
    records = read_label_file(frames_list, tmp_path / "frames")
    dataset = VideoClipDataset(video_list, tmp_path / "videos", 3, 32, mode="eval")
    assert [r.label for r in dataset.records] == [r.label for r in records] == [0, 1]
    with open_video(dataset.records[1].path) as video:
        assert video.rate == VIDEO_CODECS[codec].fps and video.size == (48, 64)
        decoded = [frame for _, frame in clip_frames(video, [0, 1, 2])]
    for t, frame in enumerate(decoded):
        same, other = (np.asarray(Image.open(tmp_path / "frames" / v / f"{t + 1:06d}.jpg"), "f4") for v in "21")
        # The same frame through two lossy codecs (yuv420p's chroma too), unlike the other video's.
        assert np.abs(frame - same).mean() < 12 < np.abs(frame - other).mean() / 3


@pytest.mark.parametrize("codec", CODECS)
def test_video_benchmark(tmp_path, capsys, codec):
    made = tmp_path / "videos"
    assert main(["loader", "--source", "videos", "--make-videos", str(made), "--codec", codec, *TINY_VIDEOS]) == 0
    report = last_report(capsys)
    assert (KEYS | VIDEO_KEYS) <= report.keys()
    check_figures(report)
    spec = VIDEO_CODECS[codec]
    videos = [made / f"{n}{spec.suffix}" for n in (1, 2)]
    assert report["source"] == "videos" and report["codec"] == codec and report["encoder"] == spec.encoder
    assert report["size"] == [48, 64] and report["fps"] == spec.fps and report["frames_per_video"] == 6
    assert report["files"] == 2 and report["bytes"] == sum(p.stat().st_size for p in videos)
    assert report["as_jpeg_frames"]["files"] == 12 and report["keyframes_per_video"] >= 1
    assert report["mode"] == "train" and report["short_side"] is None and report["decoder"] == "pyav"

    # The same videos again, given: resized before the crop, in eval mode.
    args = ["--video-root", str(made), "--short-side", "40", "--mode", "eval", "--num-clips", "2"]
    assert main(["loader", "--source", "videos", *args, *TINY_VIDEOS]) == 0
    report = last_report(capsys)
    check_figures(report)
    assert report["short_side"] == 40 and report["views"] == 2 and report["files"] == 2
    assert report["encoder"] is None and report["as_jpeg_frames"] is None and report["codec"] == codec


def test_frames_report_their_files(tmp_path, capsys):
    make_frames(tmp_path, num_videos=2, num_frames=6, height=40, width=56)
    assert main(["loader", "--frames-root", str(tmp_path), *TINY]) == 0
    report = last_report(capsys)
    check_figures(report)
    jpegs = list(tmp_path.glob("*/*.jpg"))
    assert report["source"] == "frames" and report["files"] == 12 == len(jpegs)
    assert report["bytes"] == sum(p.stat().st_size for p in jpegs)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--source", "videos", "--frames-root", "x"], "--frames-root applies to --source frames"),
        (["--source", "videos", "--decoder", "pillow"], "--decoder applies to --source frames"),
        (["--codec", "vp9"], "--codec applies to --source videos"),
        (["--short-side", "256"], "--short-side applies to --source videos"),
        (["--source", "videos", "--short-side", "0"], "--short-side must be >= 1, got 0"),
        (["--source", "videos", "--fps", "-1"], "--fps must be >= 1, got -1"),
        (
            ["--source", "videos", "--video-root", "x", "--codec", "h264"],
            "--codec describes the videos --make-videos writes, not --video-root's",
        ),
        (["--source", "videos", "--codec", "h264", "--width", "63"], "h264 in yuv420p needs even sides, got 48x63"),
    ],
)
def test_video_option_errors(capsys, args, message):
    assert main(["loader", *TINY_VIDEOS, *args]) == 2
    assert capsys.readouterr().err == f"error: {message}\n"


@pytest.mark.parametrize("codec", CODECS[:1])
def test_video_data_errors(tmp_path, capsys, codec):
    assert main(["loader", "--source", "videos", "--video-root", str(tmp_path), *TINY_VIDEOS]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "videos.txt" in err and err.count("\n") == 1
    made = ["--make-videos", str(tmp_path / "v"), "--codec", codec, "--short-side", "20"]
    assert main(["loader", "--source", "videos", *made, *TINY_VIDEOS]) == 2
    video = tmp_path / "v" / f"1{VIDEO_CODECS[codec].suffix}"
    expected = f"{tmp_path / 'v' / 'videos.txt'}:1: frames of {video} are 20x27, smaller than the 32x32 crop"
    assert capsys.readouterr().err == f"error: {expected}\n"
