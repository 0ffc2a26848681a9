"""`stabn-export --checkpoint CKPT --out model.onnx`: a checkpoint (file or URL) as ONNX or a
`torch.export` program (`.pt2`), checked against eager PyTorch (`stabn.exporter`)."""

from __future__ import annotations

import sys
from typing import Optional, Sequence

from stabn.commands.common import CommandParser, run_command


def build_parser() -> CommandParser:
    parser = CommandParser(prog="stabn-export", description=__doc__)
    parser.add_argument("--checkpoint", required=True, help="checkpoint file or http(s) URL (load_pretrained)")
    parser.add_argument("--out", required=True, help="the file to write: .onnx or .pt2")
    parser.add_argument("--sha256", help="the SHA-256 a URL's download must match")
    parser.add_argument(
        "--tolerance", type=float, default=None, help="largest difference allowed on the logits (default 1e-4)"
    )
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        from stabn.exporter import TOLERANCE, export
        from stabn.models import load_pretrained

        model = load_pretrained(args.checkpoint, sha256=args.sha256)
        print(export(model, args.out, tolerance=TOLERANCE if args.tolerance is None else args.tolerance))
        return 0

    return run_command(body)


if __name__ == "__main__":
    sys.exit(main())
