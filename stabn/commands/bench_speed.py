"""`stabn-bench train|infer`: the options of the model-throughput benchmark
(`stabn.perf.model_speed`), and its one-shot, compare and sweep runs."""

from __future__ import annotations

import argparse
import json
from typing import Callable, Dict, List, Optional

import torch

from stabn.engine.precision import AMP_DTYPES
from stabn.errors import ConfigError
from stabn.models import MODEL_NAMES, build_model
from stabn.perf import torch_threads
from stabn.perf.model_speed import _release, benchmark, device_defaults


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``train`` and ``infer`` subcommands' options."""
    parser.add_argument("--model", default="abn_resnet50", help="a registered model name")
    parser.add_argument("--frame-length", type=int, default=32)
    parser.add_argument("--frame-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--width", type=int, default=64, help="channels of the first stage")
    parser.add_argument("--num-classes", type=int, default=174)
    parser.add_argument(
        "--attention",
        default="",
        metavar="KEY=VALUE,...",
        help="ST-ABN attention options, e.g. spatial_gate=multiply,fusion=product,norm=peak (default: the original)",
    )
    parser.add_argument(
        "--amp",
        choices=("auto", *AMP_DTYPES),
        default="auto",
        help="autocast dtype (default auto: bf16 on CUDA, off on the CPU)",
    )
    parser.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="channels_last_3d convolution weights and input (default: on a GPU, off on the CPU)",
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--steps", type=int, default=20, help="timed steps")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--device", choices=("cuda", "cpu"), default=None, help="default: cuda when available")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads for the run")
    parser.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="the GPU's dense peak TFLOP/s for the precision used (default: from a table)",
    )
    what = parser.add_mutually_exclusive_group()
    what.add_argument(
        "--compare",
        action="store_true",
        help="measure train and infer, baseline (fp32, NCDHW, eager) and this configuration, and print the speed-ups",
    )
    what.add_argument(
        "--sweep",
        action="store_true",
        help="measure every amp (off, bf16, fp16) x layout (NCDHW, channels_last_3d), eager "
        "(and compiled with --compile), and print each one's speed-up over the first",
    )


def _check(args: argparse.Namespace) -> torch.device:
    if args.model not in MODEL_NAMES:
        raise ConfigError(f"unknown model {args.model!r}; choose one of: {', '.join(MODEL_NAMES)}")
    for name in ("frame_length", "frame_size", "batch_size", "width", "num_classes", "steps"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.warmup < 0:
        raise ConfigError(f"--warmup must be >= 0, got {args.warmup}")
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {args.threads}")
    if args.peak_tflops is not None and args.peak_tflops <= 0:
        raise ConfigError(f"--peak-tflops must be > 0, got {args.peak_tflops}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available")
    try:
        build_model(args.model, num_classes=1, frame_length=1, frame_size=8, width=1, attention=attention_options(args))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"--attention {args.attention!r}: {e}") from None
    return torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))


def attention_options(args: argparse.Namespace) -> Dict[str, str]:
    """`--attention a=b,c=d` as a dict."""
    pairs = [item.split("=", 1) for item in args.attention.split(",") if item.strip()]
    if any(len(pair) != 2 for pair in pairs):
        raise ConfigError(f"--attention {args.attention!r}: expected KEY=VALUE pairs separated by commas")
    return {key.strip(): value.strip() for key, value in pairs}


def main(args: argparse.Namespace, mode: str) -> int:
    """Run the benchmark the parsed `args` describe (`mode`: train or infer); print JSON lines."""
    device = _check(args)
    amp_default, channels_last_default = device_defaults(device)
    fast = {
        "amp": amp_default if args.amp == "auto" else args.amp,
        "channels_last": channels_last_default if args.channels_last is None else args.channels_last,
        "compile": args.compile,
    }
    baseline = {"amp": "off", "channels_last": False, "compile": False}
    common = dict(
        model_name=args.model,
        frame_length=args.frame_length,
        frame_size=args.frame_size,
        batch_size=args.batch_size,
        width=args.width,
        num_classes=args.num_classes,
        device=str(device),
        steps=args.steps,
        warmup=args.warmup,
        peak=args.peak_tflops,
        attention=attention_options(args),
    )

    def run(m: str, cfg: Dict[str, object]) -> Dict[str, object]:
        return benchmark(m, **common, **cfg)

    with torch_threads(args.threads):
        if args.sweep:
            _sweep(mode, run, device, args)
        elif args.compare:
            _compare(run, device, args, baseline, fast)
        else:
            print(json.dumps(run(mode, fast)), flush=True)
    return 0


Runner = Callable[[str, Dict[str, object]], Dict[str, object]]


def _compare(
    run: Runner, device: torch.device, args: argparse.Namespace, baseline: Dict[str, object], fast: Dict[str, object]
) -> None:
    speedups: Dict[str, float] = {}
    for m in ("train", "infer"):
        figures = []
        for cfg in (baseline, fast):
            result = run(m, cfg)
            _release(device)
            print(json.dumps(result), flush=True)
            figures.append(float(result["clips_per_s"]))
        speedups[f"{m}_speedup"] = round(figures[1] / figures[0], 3)
    print(
        json.dumps(
            {
                "mode": "compare",
                "model": args.model,
                "device": device.type,
                "baseline": baseline,
                "fast": fast,
                **speedups,
                "torch": torch.__version__,
            }
        )
    )


def _sweep(mode: str, run: Runner, device: torch.device, args: argparse.Namespace) -> None:
    """Every configuration in one process, the first (fp32 NCDHW eager) as the baseline. One
    that fails (out of memory, an op without a kernel for that dtype) prints its error and the
    sweep goes on."""
    configs = [
        {"amp": amp, "channels_last": cl, "compile": compiled}
        for compiled in ((False, True) if args.compile else (False,))
        for amp in ("off", "bf16", "fp16")
        for cl in (False, True)
    ]
    rows: List[Dict[str, object]] = []
    base: Optional[float] = None
    for i, cfg in enumerate(configs):
        try:
            result = run(mode, cfg)
        except RuntimeError as e:  # torch.cuda.OutOfMemoryError is one
            print(json.dumps({"mode": mode, **cfg, "error": str(e).strip().splitlines()[0]}), flush=True)
            rows.append({**cfg, "clips_per_s": None, "speedup": None, "mfu": None})
            _release(device)
            continue
        _release(device)
        print(json.dumps(result), flush=True)
        clips = float(result["clips_per_s"])
        if i == 0:
            base = clips
        rows.append(
            {**cfg, "clips_per_s": clips, "speedup": round(clips / base, 3) if base else None, "mfu": result["mfu"]}
        )
    print(
        json.dumps(
            {
                "mode": "sweep",
                "of": mode,
                "model": args.model,
                "device": device.type,
                "configs": rows,
                "torch": torch.__version__,
            }
        )
    )
