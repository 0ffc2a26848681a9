"""`stabn-bench loader`: the options of the data-path benchmark (`stabn.perf.data_speed`), from
JPEG frames (``--source frames``) or from video files (``--source videos``)."""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from typing import Dict

from stabn.config.schema import CHANNEL_ORDERS, DATA_SOURCES, JITTER_MODES
from stabn.data.decode import BACKENDS
from stabn.errors import ConfigError
from stabn.perf.data_speed import VIDEO_CODECS, VIDEO_LIST, benchmark_loader, make_frames, make_videos

# The options of one source only, and the source they belong to.
SOURCE_OPTIONS = {
    "frames_root": "frames",
    "make_frames": "frames",
    "decoder": "frames",
    "video_root": "videos",
    "make_videos": "videos",
    "codec": "videos",
    "fps": "videos",
    "short_side": "videos",
}
# Options that must be >= 1 where given.
POSITIVE = (
    "videos", "video_frames", "height", "width", "fps", "short_side", "frame_length", "frame_size", "batch_size",
    "num_batches", "num_clips",
)  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``loader`` subcommand's options."""
    parser.add_argument("--source", choices=DATA_SOURCES, default="frames", help="JPEG frame folders or video files")
    parser.add_argument("--frames-root", help="frame folders; generated in a temporary folder when omitted")
    parser.add_argument(
        "--label-file",
        help=f"SSv2-format label file of frames, generic list of videos (default: labels.txt in --frames-root, "
        f"{VIDEO_LIST} in --video-root)",
    )
    parser.add_argument(
        "--make-frames",
        metavar="DIR",
        help="write synthetic 240x427 JPEG videos and labels.txt to DIR and benchmark them",
    )
    parser.add_argument("--video-root", help="video files; generated in a temporary folder when omitted")
    parser.add_argument(
        "--make-videos",
        metavar="DIR",
        help=f"write the scenes of --make-frames as --codec videos and {VIDEO_LIST} to DIR and benchmark them",
    )
    parser.add_argument(
        "--codec",
        choices=tuple(VIDEO_CODECS),
        help="synthetic videos: vp9 (WebM, 240x427 at 12 fps, like SSv2; the default) or h264 (MP4, 720x1280 at "
        "30 fps), in yuv420p with the encoder's default rate control and keyframes",
    )
    parser.add_argument("--fps", type=int, help="synthetic videos' frame rate (default: the codec's)")
    parser.add_argument("--short-side", type=int, help="videos: resize frames to this short side before the crop")
    parser.add_argument("--videos", type=int, default=8, help="synthetic videos to write")
    parser.add_argument("--video-frames", type=int, default=48, help="frames per synthetic video")
    parser.add_argument("--height", type=int, help="synthetic frame height (default: 240; h264: 720)")
    parser.add_argument("--width", type=int, help="synthetic frame width (default: 427; h264: 1280)")
    parser.add_argument("--frame-length", type=int, default=32)
    parser.add_argument("--frame-size", type=int, default=224)
    parser.add_argument("--mode", choices=("train", "eval"), default="train")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--num-batches", type=int, default=10)
    parser.add_argument("--num-clips", type=int, default=1, help="eval clips per video")
    parser.add_argument("--num-crops", type=int, default=1, choices=(1, 3), help="eval crops per clip")
    parser.add_argument("--jitter", choices=JITTER_MODES, default="tpn", help="train colour jitter mode")
    parser.add_argument("--decoder", choices=BACKENDS, default=None, help="JPEG decoder (frames)")
    parser.add_argument("--channel-order", choices=CHANNEL_ORDERS, default="bgr")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--fresh-out", action="store_true", help="allocate every normalised batch anew instead of reusing one buffer"
    )


def _option(name: str) -> str:
    return f"--{name.replace('_', '-')}"


def check_options(args: argparse.Namespace) -> None:
    """ConfigError naming the first option that is out of range or does not fit --source."""
    for name in POSITIVE:
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ConfigError(f"{_option(name)} must be >= 1, got {value}")
    if args.seed < 0:
        raise ConfigError(f"--seed must be >= 0, got {args.seed}")
    for name, source in SOURCE_OPTIONS.items():
        if getattr(args, name) is not None and args.source != source:
            raise ConfigError(f"{_option(name)} applies to --source {source}")
    if args.video_root is not None and args.make_videos is None:
        for name in ("codec", "fps"):
            if getattr(args, name) is not None:
                raise ConfigError(f"{_option(name)} describes the videos --make-videos writes, not --video-root's")


def _common(args: argparse.Namespace) -> Dict[str, object]:
    """The options both sources' benchmarks take, by their keywords."""
    return {
        "frame_size": args.frame_size,
        "mode": args.mode,
        "batch_size": args.batch_size,
        "num_batches": args.num_batches,
        "num_clips": args.num_clips,
        "num_crops": args.num_crops,
        "jitter_mode": args.jitter,
        "seed": args.seed,
        "reuse_out": not args.fresh_out,
        "channel_order": args.channel_order,
    }


def _frames(args: argparse.Namespace, tmp: str) -> Dict[str, object]:
    frames_root, label_file = args.frames_root, args.label_file
    if args.make_frames or frames_root is None:
        frames_root = args.make_frames or tmp
        size = (args.height or 240, args.width or 427)
        label_file = make_frames(frames_root, args.videos, args.video_frames, *size, args.seed)
    elif label_file is None:
        label_file = os.path.join(frames_root, "labels.txt")
    return benchmark_loader(frames_root, label_file, args.frame_length, backend=args.decoder, **_common(args))


def _videos(args: argparse.Namespace, tmp: str) -> Dict[str, object]:
    root, label_file = args.video_root, args.label_file
    made: Dict[str, object] = {"encoder": None, "encoder_settings": None, "as_jpeg_frames": None}
    if args.make_videos or root is None:
        root, codec = args.make_videos or tmp, args.codec or "vp9"
        spec = VIDEO_CODECS[codec]
        size = (args.height or spec.size[0], args.width or spec.size[1])
        label_file, as_jpeg = make_videos(root, codec, num_videos=args.videos, num_frames=args.video_frames,
                                          size=size, fps=args.fps, seed=args.seed,
                                          jpeg_short_side=args.short_side)  # fmt: skip
        made = {"encoder": spec.encoder, "encoder_settings": spec.settings, "as_jpeg_frames": as_jpeg}
    elif label_file is None:
        label_file = os.path.join(root, VIDEO_LIST)
    result = benchmark_loader(root, label_file, args.frame_length, source="videos", short_side=args.short_side,
                              **_common(args))  # fmt: skip
    return {**result, **made}


def main(args: argparse.Namespace) -> int:
    """Run the benchmark the parsed `args` describe and print its JSON line."""
    check_options(args)
    with tempfile.TemporaryDirectory(prefix="stabn-bench-") as tmp:
        result = _videos(args, tmp) if args.source == "videos" else _frames(args, tmp)
    print(json.dumps(result))
    return 0
