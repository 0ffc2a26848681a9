"""The synthetic dataset written as video files (mp4, webm): the rendered videos, decoded back
with PyAV; the generic label lists; the lossless option; the encoder fallbacks; the errors."""

import math
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import CONFIGS, run_console_script
from stabn.config import load_config
from stabn.data import synthetic
from stabn.data.dataloader import make_dataset
from stabn.data.synthetic import ENCODINGS, VideoEncoding, make_synthetic_dataset
from stabn.data.synthetic_video import render_video
from stabn.errors import DataError

av = pytest.importorskip("av")

ARGS = dict(num_train=4, num_val=2, frames=8, size=40, seed=0, workers=1)
# (video id, label) of ARGS's videos: round-robin labels within each split.
VIDEOS = [("000001", 0), ("000002", 1), ("000003", 2), ("000004", 3), ("000005", 0), ("000006", 1)]
# The mean absolute difference (of 255) a lossy video may have from the rendered frames: the
# frames format's JPEGs (quality 90) lose about 4.5 on these.
LOSSY_MAD = 6.0
# What PyAV's decoder calls the stream each encoder writes.
DECODED_NAMES = {"libx264": "h264", "mpeg4": "mpeg4", "libvpx-vp9": "vp9", "libx264rgb": "h264", "ffv1": "ffv1"}


def _encoding_or_skip(fmt: str, lossless: bool) -> VideoEncoding:
    found = next((e for e in ENCODINGS[(fmt, lossless)] if e.codec in av.codecs_available), None)
    if found is None:
        pytest.skip(f"this PyAV's FFmpeg lacks {' and '.join(e.codec for e in ENCODINGS[(fmt, lossless)])}")
    return found


def _write(root: Path, fmt: str, lossless: bool = False, **extra) -> Path:
    out = root / f"{fmt}{'-lossless' if lossless else ''}"
    make_synthetic_dataset(out, **{**ARGS, **extra}, format=fmt, lossless=lossless)
    return out


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """Each format's output, written on first use."""
    root, done = tmp_path_factory.mktemp("synthetic-videos"), {}

    def get(fmt: str, lossless: bool = False) -> Path:
        if (fmt, lossless) not in done:
            done[(fmt, lossless)] = _write(root, fmt, lossless)
        return done[(fmt, lossless)]

    return get


def _rendered(index: int, label: int) -> np.ndarray:
    return render_video(ARGS["seed"], index, label, ARGS["frames"], ARGS["size"])[0]


def _decode(path: Path):
    """(frames uint8 [N, H, W, 3], the decoder's name, the stream's frame rate)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(stream)])
        return frames, stream.codec_context.name, stream.average_rate


def _files(root: Path) -> list:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def _assert_videos(out: Path, encoding: VideoEncoding, exact: bool) -> None:
    names = [f"{vid}{encoding.suffix}" for vid, _ in VIDEOS]
    assert _files(out) == sorted(["classes.txt", "ground_truth.json", "train.txt", "val.txt"] +
                                 [f"videos/{n}" for n in names])  # fmt: skip
    for index, ((_vid, label), name) in enumerate(zip(VIDEOS, names)):
        decoded, codec, rate = _decode(out / "videos" / name)
        rendered = _rendered(index, label)
        assert decoded.shape == rendered.shape == (ARGS["frames"], ARGS["size"], ARGS["size"], 3)
        assert (codec, rate) == (DECODED_NAMES[encoding.codec], 12)
        if exact:
            np.testing.assert_array_equal(decoded, rendered)
        else:
            mad = np.abs(decoded.astype(int) - rendered.astype(int)).mean()
            assert 0 < mad < LOSSY_MAD, (name, mad)


@pytest.mark.parametrize("fmt", ["mp4", "webm"])
def test_video_files_decode_to_the_rendered_frames(written, fmt):
    encoding = _encoding_or_skip(fmt, lossless=False)
    _assert_videos(written(fmt), encoding, exact=False)


@pytest.mark.parametrize("fmt", ["mp4", "webm"])
def test_lossless_videos_hold_the_rendered_frames_bit_for_bit(written, fmt):
    encoding = _encoding_or_skip(fmt, lossless=True)
    _assert_videos(written(fmt, lossless=True), encoding, exact=True)


@pytest.mark.parametrize("fmt, suffix", [("mp4", ".mp4"), ("webm", ".webm")])
def test_generic_label_lists_and_the_frames_formats_ground_truth(written, fmt, suffix):
    _encoding_or_skip(fmt, lossless=False)
    out, frames = written(fmt), written("frames")
    train = f"000001{suffix} 0\n000002{suffix} 1\n000003{suffix} 2\n000004{suffix} 3\n"
    assert (out / "train.txt").read_text() == train
    assert (out / "val.txt").read_text() == f"000005{suffix} 0\n000006{suffix} 1\n"
    for name in ("classes.txt", "ground_truth.json"):
        assert (out / name).read_bytes() == (frames / name).read_bytes()


def test_frames_format_is_the_default_and_unchanged(written, tmp_path):
    frames = written("frames")
    make_synthetic_dataset(tmp_path / "default", **ARGS)
    assert {f: (frames / f).read_bytes() for f in _files(frames)} == {
        f: (tmp_path / "default" / f).read_bytes() for f in _files(tmp_path / "default")
    }
    assert (frames / "train.txt").read_text() == "000001 8 0\n000002 8 1\n000003 8 2\n000004 8 3\n"
    assert (frames / "val.txt").read_text() == "000005 8 0\n000006 8 1\n"
    assert len(list((frames / "frames").glob("*/*.jpg"))) == 6 * 8 and not (frames / "videos").exists()


def test_parallel_workers_write_the_same_bytes(written, tmp_path):
    _encoding_or_skip("webm", lossless=False)
    one = written("webm")
    two = _write(tmp_path, "webm", workers=2)
    assert {f: (one / f).read_bytes() for f in _files(one)} == {f: (two / f).read_bytes() for f in _files(two)}


def _without(monkeypatch, *missing: str) -> None:
    """As if the bundled FFmpeg lacked the encoders `missing`."""
    monkeypatch.setattr(synthetic, "has_encoder", lambda name: name not in missing and name in av.codecs_available)


def test_lossless_mp4_falls_back_to_ffv1_in_matroska(monkeypatch, tmp_path):
    if "ffv1" not in av.codecs_available:
        pytest.skip("this PyAV's FFmpeg lacks ffv1")
    _without(monkeypatch, "libx264rgb")
    out = _write(tmp_path, "mp4", lossless=True)
    encoding = ENCODINGS[("mp4", True)][1]
    assert encoding.codec == "ffv1" and encoding.suffix == ".mkv"
    _assert_videos(out, encoding, exact=True)
    assert (out / "val.txt").read_text() == "000005.mkv 0\n000006.mkv 1\n"


def test_mp4_falls_back_to_mpeg4(monkeypatch, tmp_path):
    if "mpeg4" not in av.codecs_available:
        pytest.skip("this PyAV's FFmpeg lacks mpeg4")
    _without(monkeypatch, "libx264")
    out = _write(tmp_path, "mp4")
    _assert_videos(out, ENCODINGS[("mp4", False)][1], exact=False)


@pytest.mark.parametrize(
    "fmt, lossless, message",
    [
        ("webm", False, "format webm (video) needs the encoder libvpx-vp9, which this PyAV's FFmpeg lacks"),
        ("mp4", False, "format mp4 (video) needs the encoder libx264 or mpeg4, which this PyAV's FFmpeg lacks"),
        (
            "mp4",
            True,
            "format mp4 (lossless video) needs the encoder libx264rgb or ffv1, which this PyAV's FFmpeg lacks",
        ),
    ],
)
def test_a_format_ffmpeg_cannot_encode_is_one_error_naming_the_encoder(monkeypatch, tmp_path, fmt, lossless, message):
    _without(monkeypatch, *av.codecs_available)
    with pytest.raises(DataError, match=f"^{re.escape(message)}$"):
        make_synthetic_dataset(tmp_path / "x", **ARGS, format=fmt, lossless=lossless)
    assert not (tmp_path / "x").exists()


def test_a_failed_encode_leaves_no_file_under_its_name(monkeypatch, tmp_path):
    if "libx264" not in av.codecs_available:
        pytest.skip("this PyAV's FFmpeg lacks libx264")
    # libx264 refuses odd sides in yuv420p when it opens, after the file has been started.
    monkeypatch.setitem(ENCODINGS, ("mp4", False), (VideoEncoding("libx264", "yuv420p", {}),))
    with pytest.raises(av.error.FFmpegError):
        make_synthetic_dataset(tmp_path / "x", **{**ARGS, "size": 41}, format="mp4")
    assert list((tmp_path / "x").rglob("*")) == [tmp_path / "x" / "videos"]


@pytest.mark.parametrize(
    "extra, message",
    [
        (dict(format="avi"), "format must be one of frames, mp4, webm, got 'avi'"),
        (dict(format="webm", fps=0), "fps must be above 0 and at most 1000, got 0"),
        (dict(format="webm", fps=-12.5), "fps must be above 0 and at most 1000, got -12.5"),
        (dict(format="webm", fps=math.nan), "fps must be above 0 and at most 1000, got nan"),
        (dict(format="webm", fps=5000), "fps must be above 0 and at most 1000, got 5000"),
        (dict(format="webm", fps="12"), "fps must be a number, got '12'"),
        (dict(format="webm", fps=True), "fps must be a number, got True"),
        (dict(fps=12), "fps and lossless apply to the video formats (mp4, webm), not to frames (JPEG files)"),
        (dict(lossless=True), "fps and lossless apply to the video formats (mp4, webm), not to frames (JPEG files)"),
        (dict(format="mp4", size=41), "size must be even for format mp4 ({mp4} in yuv420p), got 41"),
    ],
)
def test_bad_video_arguments_raise_data_error(tmp_path, extra, message):
    if "{mp4}" in message:
        message = message.format(mp4=_encoding_or_skip("mp4", lossless=False).codec)
    with pytest.raises(DataError, match=f"^{re.escape(message)}$"):
        make_synthetic_dataset(tmp_path / "x", **{**ARGS, **extra})
    assert not (tmp_path / "x").exists()


def test_config_reads_the_videos_as_the_renderer_drew_them(written):
    _encoding_or_skip("mp4", lossless=True)
    cfg = load_config(CONFIGS / "synthetic_videos.yaml")
    data = cfg.data
    assert (data.source, data.label_format, data.root) == ("videos", "generic", "data/synthetic_videos/videos")
    assert (data.train_labels, data.val_labels) == ("data/synthetic_videos/train.txt", "data/synthetic_videos/val.txt")
    out = written("mp4", lossless=True)
    cfg = load_config(CONFIGS / "synthetic_videos.yaml", [
        f"data.root={out}/videos", f"data.val_labels={out}/val.txt", "data.frame_length=8", "data.frame_size=32",
    ])  # fmt: skip
    dataset = make_dataset(cfg.data, cfg.data.val_labels, "eval", num_classes=8, seed=0)
    clips, label = dataset[1][:2]
    # The centre 32 px of the sixth video (000006, label 1), every frame, RGB.
    expected = torch.from_numpy(_rendered(5, 1)[:, 4:36, 4:36]).permute(3, 0, 1, 2)
    assert label == 1 and torch.equal(clips[0], expected)


def _cli(*args: str) -> subprocess.CompletedProcess:
    return run_console_script("stabn-synthetic", args, timeout=120)


@pytest.mark.slow
def test_cli_writes_videos(tmp_path):
    encoding = _encoding_or_skip("webm", lossless=False)
    out = tmp_path / "cli"
    proc = _cli("--out", out, "--format", "webm", "--fps", "24", "--num-train", "2", "--num-val", "1",
                "--frames", "6", "--size", "32", "--workers", "2")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == (
        f"wrote 3 videos (2 train, 1 val, 6 frames of 32x32 px, {encoding.codec} at 24 fps) to {out}"
    )
    assert (out / "train.txt").read_text() == "000001.webm 0\n000002.webm 1\n"
    decoded, codec, rate = _decode(out / "videos" / "000003.webm")
    assert decoded.shape == (6, 32, 32, 3) and (codec, rate) == ("vp9", 24)


@pytest.mark.slow
@pytest.mark.parametrize(
    "bad, message",
    [
        (["--format", "avi"], "error: argument --format: invalid choice: 'avi'"),
        (["--format", "mp4", "--fps", "0"], "error: fps must be above 0 and at most 1000, got 0.0"),
        (["--format", "mp4", "--fps", "x"], "error: argument --fps: invalid float value: 'x'"),
    ],
)
def test_cli_bad_format_or_fps_one_line_exit_2(tmp_path, bad, message):
    proc = _cli("--out", tmp_path / "bad", *bad)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), proc.stderr
    assert not (tmp_path / "bad").exists()
