"""`stabn-bench loader`: the options of the data-path benchmark (`stabn.perf.data_speed`)."""

from __future__ import annotations

import argparse
import json
import os
import tempfile

from stabn.config.schema import CHANNEL_ORDERS, JITTER_MODES
from stabn.data.decode import BACKENDS
from stabn.errors import ConfigError
from stabn.perf.data_speed import benchmark_loader, make_frames


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``loader`` subcommand's options."""
    parser.add_argument("--frames-root", help="frame folders; generated in a temporary folder when omitted")
    parser.add_argument("--label-file", help="SSv2-format label file (default: labels.txt in --frames-root)")
    parser.add_argument(
        "--make-frames",
        metavar="DIR",
        help="write synthetic 240x427 JPEG videos and labels.txt to DIR and benchmark them",
    )
    parser.add_argument("--videos", type=int, default=8, help="synthetic videos to write")
    parser.add_argument("--video-frames", type=int, default=48, help="frames per synthetic video")
    parser.add_argument("--height", type=int, default=240, help="synthetic frame height")
    parser.add_argument("--width", type=int, default=427, help="synthetic frame width")
    parser.add_argument("--frame-length", type=int, default=32)
    parser.add_argument("--frame-size", type=int, default=224)
    parser.add_argument("--mode", choices=("train", "eval"), default="train")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--num-batches", type=int, default=10)
    parser.add_argument("--num-clips", type=int, default=1, help="eval clips per video")
    parser.add_argument("--num-crops", type=int, default=1, choices=(1, 3), help="eval crops per clip")
    parser.add_argument("--jitter", choices=JITTER_MODES, default="tpn", help="train colour jitter mode")
    parser.add_argument("--decoder", choices=BACKENDS, default=None)
    parser.add_argument("--channel-order", choices=CHANNEL_ORDERS, default="bgr")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--fresh-out", action="store_true", help="allocate every normalised batch anew instead of reusing one buffer"
    )


def main(args: argparse.Namespace) -> int:
    """Run the benchmark the parsed `args` describe and print its JSON line."""
    for name in (
        "videos",
        "video_frames",
        "height",
        "width",
        "frame_length",
        "frame_size",
        "batch_size",
        "num_batches",
        "num_clips",
    ):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.seed < 0:
        raise ConfigError(f"--seed must be >= 0, got {args.seed}")
    with tempfile.TemporaryDirectory(prefix="stabn-bench-") as tmp:
        frames_root = args.frames_root
        label_file = args.label_file
        if args.make_frames or frames_root is None:
            frames_root = args.make_frames or tmp
            label_file = make_frames(frames_root, args.videos, args.video_frames, args.height, args.width, args.seed)
        elif label_file is None:
            label_file = os.path.join(frames_root, "labels.txt")
        result = benchmark_loader(
            frames_root,
            label_file,
            args.frame_length,
            args.frame_size,
            args.mode,
            args.batch_size,
            args.num_batches,
            args.num_clips,
            args.num_crops,
            args.jitter,
            args.decoder,
            args.seed,
            reuse_out=not args.fresh_out,
            channel_order=args.channel_order,
        )
    print(json.dumps(result))
    return 0
