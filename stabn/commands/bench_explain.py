"""How well explainers say where and when the target acts, on the same clips of the synthetic
data: ST-ABN's attention, its attention branch's class map, Grad-CAM (of the ST-ABN and of a 3D
ResNet baseline), input gradients, SmoothGrad, Integrated Gradients, a random volume and a
centred Gaussian (and the same with a flat temporal profile), scored by the pointing game, the
energy in the target's box, the temporal hit, mass, IoU and per-frame AUROC of the event window,
and deletion / insertion AUC against a random voxel order, each with a 95% bootstrap interval
over videos; and the model-randomisation sanity check of chosen explainers. Writes explain.json
and explain.md and prints the tables. The peer explainers need Captum: pip install -e .[explain].
"""

from __future__ import annotations

import argparse
import sys
from typing import Tuple

from stabn.errors import ConfigError
from stabn.interpret.benchmark_job import benchmark_checkpoints
from stabn.interpret.explainers import Settings

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
        "--sanity-explainers",
        default=",".join(_DEFAULTS.sanity_explainers),
        help="explainers of the model-randomisation sanity check, comma-separated "
        f"(default: {','.join(_DEFAULTS.sanity_explainers)}; empty: none)",
    )
    parser.add_argument(
        "--sanity-videos",
        type=int,
        default=_DEFAULTS.sanity_videos,
        help=f"the sanity check on the first N videos (default: {_DEFAULTS.sanity_videos}; 0: none)",
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
    layers = _names(text)
    if len(set(layers)) != len(layers):
        raise ConfigError(f"--layers names a layer twice: {text!r}")
    return layers


def settings_of(args: argparse.Namespace) -> Settings:
    """The parsed options as `Settings`; ConfigError for a value out of range."""
    for name, minimum in (
        ("videos", 1), ("auc_videos", 0), ("steps", 1), ("smoothgrad_samples", 1), ("ig_steps", 1),
        ("bootstrap", 1), ("seed", 0), ("batch_size", 1), ("pictures", 0), ("picture_frames", 1), ("sanity_videos", 0),
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
        sanity_explainers=_names(args.sanity_explainers),
        sanity_videos=args.sanity_videos,
    )


def _names(text: str) -> Tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def main(args: argparse.Namespace) -> int:
    """Run the benchmark the parsed `args` describe; write and print its table."""
    out, text = benchmark_checkpoints(
        settings_of(args),
        checkpoint=args.checkpoint,
        data=args.data,
        baseline_checkpoint=args.baseline_checkpoint,
        reference_checkpoint=args.reference_checkpoint,
        out=args.out,
        device=args.device,
        threads=args.threads,
        picture_explainers=_names(args.picture_explainers),
        picture_frames=args.picture_frames,
        warn=_warn,
    )
    print(text, end="")
    print(f"wrote {out / 'explain.json'} and {out / 'explain.md'}")
    return 0
