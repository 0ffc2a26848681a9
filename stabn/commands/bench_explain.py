"""How well explainers say where and when the target acts, on the same clips of the synthetic
data: ST-ABN's attention, its attention branch's class map, Grad-CAM (of the ST-ABN and of a 3D
ResNet baseline), input gradients, SmoothGrad, Integrated Gradients, a random volume and a
centred Gaussian, scored by the pointing game, the energy in the target's box, the temporal
hit and energy of the event window, and deletion / insertion AUC against a random voxel order,
each with a 95% bootstrap interval over videos. Writes explain.json and explain.md and prints
the table. The peer explainers need Captum: pip install -e .[explain].
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Tuple

import torch

from stabn.errors import ConfigError
from stabn.interpret.benchmark import Settings, load_baseline, load_stabn, open_split, run_benchmark, write_reports
from stabn.interpret.diagnose import attention_statistics
from stabn.interpret.saliency import require_captum
from stabn.interpret.visualize import explanation_sheet
from stabn.perf import torch_threads

_DEFAULTS = Settings()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``explain`` subcommand's options."""
    parser.add_argument("--checkpoint", required=True, help="an ST-ABN checkpoint")
    parser.add_argument(
        "--data", required=True, help="a synthetic dataset folder (frames/, <split>.txt, ground_truth.json)"
    )
    parser.add_argument(
        "--baseline-checkpoint", default=None, help="a 3D ResNet trained on the same data, for its Grad-CAM"
    )
    parser.add_argument(
        "--reference-checkpoint",
        default=None,
        help="another ST-ABN trained on the same data (e.g. the original architecture): its own attention is "
        "scored on the same clips, as reference_stabn_attention",
    )
    parser.add_argument("--split", default=_DEFAULTS.split, help="label file <data>/<split>.txt (default: val)")
    parser.add_argument("--videos", type=int, default=_DEFAULTS.videos, help="the first N videos of the split")
    parser.add_argument(
        "--auc-videos", type=int, default=_DEFAULTS.auc_videos, help="deletion / insertion on the first M of those"
    )
    parser.add_argument("--steps", type=int, default=_DEFAULTS.steps, help="deletion / insertion steps")
    parser.add_argument(
        "--layers", default=",".join(_DEFAULTS.layers), help="Grad-CAM layers, comma-separated (default: layer3,layer4)"
    )
    parser.add_argument("--smoothgrad-samples", type=int, default=_DEFAULTS.smoothgrad_samples)
    parser.add_argument("--ig-steps", type=int, default=_DEFAULTS.ig_steps, help="Integrated Gradients steps")
    parser.add_argument("--bootstrap", type=int, default=_DEFAULTS.bootstrap, help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=_DEFAULTS.seed)
    parser.add_argument(
        "--batch-size", type=int, default=_DEFAULTS.batch_size, help="clips a forward at most (default: 8)"
    )
    parser.add_argument(
        "--pictures", type=int, default=_DEFAULTS.pictures, help="pictures of every explainer for the first N videos"
    )
    parser.add_argument(
        "--picture-explainers",
        default="",
        help="the explainers the pictures show, comma-separated, in that order (default: all)",
    )
    parser.add_argument(
        "--picture-frames",
        type=int,
        default=8,
        help="evenly spaced frames a picture shows (default 8; the clip's length shows every frame)",
    )
    parser.add_argument("--out", default=None, help="output folder (default: <checkpoint's folder>/explain)")
    parser.add_argument("--device", choices=("cuda", "cpu"), default=None, help="default: cuda when available")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads for the run")


def _layers(text: str) -> Tuple[str, ...]:
    layers = tuple(name.strip() for name in text.split(",") if name.strip())
    if len(set(layers)) != len(layers):
        raise ConfigError(f"--layers names a layer twice: {text!r}")
    return layers


def settings_of(args: argparse.Namespace) -> Settings:
    """The parsed options as `Settings`; ConfigError for a value out of range."""
    for name, minimum in (
        ("videos", 1), ("auc_videos", 0), ("steps", 1), ("smoothgrad_samples", 1), ("ig_steps", 1),
        ("bootstrap", 1), ("seed", 0), ("batch_size", 1), ("pictures", 0), ("picture_frames", 1),
    ):  # fmt: skip
        if getattr(args, name) < minimum:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= {minimum}, got {getattr(args, name)}")
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {args.threads}")
    return Settings(
        videos=args.videos,
        auc_videos=args.auc_videos,
        steps=args.steps,
        layers=_layers(args.layers),
        smoothgrad_samples=args.smoothgrad_samples,
        ig_steps=args.ig_steps,
        bootstrap=args.bootstrap,
        seed=args.seed,
        split=args.split,
        batch_size=args.batch_size,
        pictures=args.pictures,
    )


def _warn_if_other_clips(path, other, main_path, model) -> None:
    a, b = model.spec, other.spec
    if (a.frame_length, a.frame_size) != (b.frame_length, b.frame_size):
        print(
            f"warning: {path} takes {b.frame_length} frames of {b.frame_size} px, {main_path} "
            f"{a.frame_length} of {a.frame_size}; both are given the ST-ABN's clips",
            file=sys.stderr,
        )


def _names(text: str) -> Tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


def picture_writer(out: Path, dataset, model, names: Tuple[str, ...] = (), frame_count: int = 8):
    """Writes `pictures/<video_id>.png`: each explainer's map (those in `names`, in that order,
    or all) on `frame_count` evenly spaced frames of the clip."""

    def write(index, frames, boxes, drawn) -> None:
        if names:
            by_name = {row[0]: row for row in drawn}
            unknown = [name for name in names if name not in by_name]
            if unknown:
                raise ConfigError(f"--picture-explainers: no explainer {unknown[0]!r}; there are {', '.join(by_name)}")
            drawn = [by_name[name] for name in names]
        frames = frames.numpy()
        step = max(1, frames.shape[0] // frame_count)
        chosen = list(range(0, frames.shape[0], step))[:frame_count]
        record = dataset.records[index]
        title = f"video {record.video_id}, class {model.spec.class_name(record.label)}"
        rows = [(name, volume.numpy(), None if profile is None else profile.numpy()) for name, volume, profile in drawn]
        sheet = explanation_sheet(frames, rows, chosen, boxes, title)
        (out / "pictures").mkdir(parents=True, exist_ok=True)
        sheet.save(out / "pictures" / f"{record.video_id}.png")

    return write


def main(args: argparse.Namespace) -> int:
    """Run the benchmark the parsed `args` describe; write and print its table."""
    settings = settings_of(args)
    require_captum()  # before any work: the peer explainers are half of the table
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    with torch_threads(args.threads):
        model = load_stabn(args.checkpoint, device)
        baseline = reference = None
        if args.baseline_checkpoint is not None:
            baseline = load_baseline(args.baseline_checkpoint, device)
            _warn_if_other_clips(args.baseline_checkpoint, baseline, args.checkpoint, model)
        if args.reference_checkpoint is not None:
            reference = load_stabn(args.reference_checkpoint, device)
            _warn_if_other_clips(args.reference_checkpoint, reference, args.checkpoint, model)
        dataset, truth = open_split(args.data, settings.split, model.spec, settings.videos)
        out = Path(args.out) if args.out else Path(args.checkpoint).resolve().parent / "explain"
        pictures = picture_writer(out, dataset, model, _names(args.picture_explainers), args.picture_frames)
        summary = run_benchmark(model, dataset, truth, settings, baseline, reference=reference, pictures=pictures)
        summary["attention_statistics"] = attention_statistics(model, dataset, truth, settings.videos)
    summary["model"]["checkpoint"] = str(args.checkpoint)
    if baseline is not None:
        summary["baseline"]["checkpoint"] = str(args.baseline_checkpoint)
    if reference is not None:
        summary["reference"]["checkpoint"] = str(args.reference_checkpoint)
    summary["data"] = str(args.data)
    summary["settings"]["device"] = device.type
    text = write_reports(out, summary)
    print(text, end="")
    print(f"wrote {out / 'explain.json'} and {out / 'explain.md'}")
    return 0
