"""`stabn-demo`: explain one video with a trained checkpoint:

    stabn-demo VIDEO_OR_FOLDER --checkpoint C [--out DIR] [--topk 5] [--num-clips K]
               [--method attention|gradcam|input_gradient|integrated_gradients] [--layer L]

VIDEO_OR_FOLDER is a video file PyAV decodes (mp4, webm, avi, mkv, mov, ...) or a folder of
JPEG frames. Prints the top-k classes of both branches and the method of the maps, and writes
attention.gif, attention.mp4, attention.png and prediction.json under DIR (default
demo/<name of the video>; `stabn.video_report` says what each holds). The maps are ST-ABN's
attention for an ST-ABN and Grad-CAM for a 3D ResNet unless --method says otherwise. Bad input
ends with one `error: ...` line and exit code 2; a peer method without Captum gets the
predictions and the JSON first.
"""

from __future__ import annotations

import argparse
from typing import Optional, Sequence

from stabn.commands.common import CommandParser, run_cli
from stabn.config.schema import EXPLAIN_METHODS
from stabn.errors import StabnError
from stabn.video_report import write_video_report


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="stabn-demo",
        description="Predict and explain one video: top-k classes, attention GIF, MP4, contact sheet and JSON.",
    )
    parser.add_argument("video", metavar="VIDEO_OR_FOLDER", help="a video file, or a folder of JPEG frames")
    parser.add_argument("--checkpoint", required=True, help="a checkpoint (stabn.load_pretrained reads it)")
    parser.add_argument("--out", help="output folder (default: demo/<name of the video>)")
    parser.add_argument("--topk", type=int, default=5, help="classes to list per branch (default 5)")
    parser.add_argument(
        "--num-clips", type=int, default=1, help="evenly spaced clips, probabilities averaged (default 1)"
    )
    parser.add_argument(
        "--method",
        choices=EXPLAIN_METHODS,
        help="what draws the maps (default: attention for an ST-ABN, gradcam for a 3D ResNet)",
    )
    parser.add_argument("--layer", help="Grad-CAM's layer (default: layer3 for an ST-ABN, layer4 for a 3D ResNet)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, ... (default: cuda when there is one)")
    return parser


def run(args: argparse.Namespace) -> int:
    """The demo; raises StabnError on bad input (after the predictions, where Captum is missing)."""
    report = write_video_report(
        args.video,
        args.checkpoint,
        out=args.out,
        topk=args.topk,
        num_clips=args.num_clips,
        method=args.method,
        layer=args.layer,
        device=None if args.device == "auto" else args.device,
        echo=print,
    )
    if report.no_pictures is not None:
        raise StabnError(report.no_pictures)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = build_parser().parse_args(argv)
    run_cli(lambda: run(args))


if __name__ == "__main__":
    main()
