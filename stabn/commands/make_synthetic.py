"""`stabn-synthetic`: write the synthetic something-something-style dataset
(`stabn.data.synthetic.make_synthetic_dataset`): JPEG frame folders in the SSv2 layout, or video
files (mp4, webm) with generic label lists.

    stabn-synthetic --out D [--format frames|mp4|webm] [--fps R] [--lossless] [--num-train N
        --num-val M --frames F --size S --seed K --workers W] [--no-distractors]
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional, Sequence

from stabn.commands.common import CommandParser, run_command
from stabn.data.synthetic import DEFAULT_FPS, FORMATS, make_synthetic_dataset


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="stabn-synthetic",
        description="Write a synthetic something-something-style dataset: JPEG frames in the SSv2 layout, "
        "or video files with generic label lists (data.source: videos).",
    )
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument(
        "--format",
        choices=FORMATS,
        default="frames",
        help="frames: D/frames/<id>/000001.jpg ...; mp4 (H.264) or webm (VP9): D/videos/<id>.mp4|.webm",
    )
    parser.add_argument("--fps", type=float, default=None, help=f"video formats: frame rate (default {DEFAULT_FPS:g})")
    parser.add_argument(
        "--lossless",
        action="store_true",
        help="video formats: store the rendered RGB frames bit for bit (mp4: libx264rgb, or FFV1 in .mkv; webm: VP9)",
    )
    parser.add_argument("--num-train", type=int, default=800)
    parser.add_argument("--num-val", type=int, default=200)
    parser.add_argument("--frames", type=int, default=16, help="frames per video")
    parser.add_argument("--size", type=int, default=64, help="frame side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None, help="default: os.cpu_count()")
    parser.add_argument("--no-distractors", action="store_true", help="leave out the moving distractors")
    return parser


def run(args: argparse.Namespace) -> None:
    """Write the dataset `args` describe and say what was written."""
    summary = make_synthetic_dataset(
        args.out, args.num_train, args.num_val, args.frames, args.size, args.seed, args.workers,
        distractors=not args.no_distractors, format=args.format, fps=args.fps, lossless=args.lossless,
    )  # fmt: skip
    n = summary["num_train"] + summary["num_val"]
    encoded = "" if summary["codec"] is None else f", {summary['codec']} at {summary['fps']:g} fps"
    print(
        f"wrote {n} videos ({summary['num_train']} train, {summary['num_val']} val, "
        f"{summary['frames']} frames of {summary['size']}x{summary['size']} px{encoded}) "
        f"to {os.path.abspath(summary['out_dir'])}"
    )


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Exit code 0, 2 on bad input, 75 on a refused write (`run_command`)."""
    args = build_parser().parse_args(argv)
    return run_command(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
