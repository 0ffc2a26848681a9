"""`stabn-prepare-ssv2`: Something-Something V2's videos extracted to JPEG frame folders and
TSM-style label files (`stabn.data.ssv2_frames.prepare_ssv2`, whose docstring lists the files).

    stabn-prepare-ssv2 --video-dir V --anno-dir A --out-dir O [--workers N]
        [--quality Q] [--limit K] [--short-side N] [--no-progress]
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from stabn.commands.common import CommandParser, run_command
from stabn.data.ssv2_frames import prepare_ssv2


def build_parser() -> argparse.ArgumentParser:
    p = CommandParser(
        prog="stabn-prepare-ssv2",
        description="Extract Something-Something V2 .webm videos to JPEG frames and write "
        "TSM-style label files (train/val/test_videofolder.txt, category.txt).",
    )
    p.add_argument("--video-dir", required=True, help="folder with <id>.webm files")
    p.add_argument(
        "--anno-dir", required=True, help="folder with something-something-v2-{labels,train,validation,test}.json"
    )
    p.add_argument("--out-dir", required=True, help="output folder (frames/ and label files)")
    p.add_argument("--workers", type=int, default=None, help="processes (default: the CPUs this process may use)")
    p.add_argument("--quality", type=int, default=95, help="JPEG quality 1-100 (default 95)")
    p.add_argument("--limit", type=int, default=None, help="only the first K videos of each split (for a trial run)")
    p.add_argument(
        "--short-side",
        type=int,
        default=None,
        metavar="N",
        help="resize frames so that their short side is N pixels (default: the native size, as the original)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def run(args: argparse.Namespace) -> int:
    """Prepare the frames `args` describe and print the summary; 1 where some videos failed."""
    summary = prepare_ssv2(
        args.video_dir,
        args.anno_dir,
        args.out_dir,
        workers=args.workers,
        quality=args.quality,
        limit=args.limit,
        progress=not args.no_progress,
        short_side=args.short_side,
    )
    print(summary.format())
    return 0 if summary.ok else 1


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Exit code 0 if every video succeeded, 1 if some failed, 2 on bad input, 75 on a refused
    write, 130 on Ctrl-C (`run_command`)."""
    args = build_parser().parse_args(argv)
    return run_command(lambda: run(args), interrupted="interrupted: run the same command again to resume")


if __name__ == "__main__":
    sys.exit(main())
