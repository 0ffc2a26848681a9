"""`stabn-bench explain`'s job: checkpoints and a synthetic dataset in; the benchmark's figures
(`run_benchmark`), ST-ABN's map statistics (`attention_statistics`), explain.json, explain.md
and the pictures out."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import torch
from torch import nn

from stabn.data import FrameClipDataset
from stabn.errors import CheckpointError, ConfigError, DataError, PathLike
from stabn.interpret.benchmark import run_benchmark
from stabn.interpret.diagnose import attention_statistics
from stabn.interpret.explainers import Settings
from stabn.interpret.report import picture_writer, write_reports
from stabn.interpret.saliency import require_captum
from stabn.models import is_stabn, load_pretrained, model_spec
from stabn.perf import torch_threads

log = logging.getLogger(__name__)


def benchmark_checkpoints(
    settings: Settings,
    *,
    checkpoint: PathLike,
    data: PathLike,
    baseline_checkpoint: Optional[PathLike] = None,
    reference_checkpoint: Optional[PathLike] = None,
    out: Optional[PathLike] = None,
    device: Optional[str] = None,
    threads: Optional[int] = None,
    picture_explainers: Sequence[str] = (),
    picture_frames: int = 8,
    warn: Callable[[str], None] = log.warning,
) -> Tuple[Path, str]:
    """Run the benchmark of `settings` on the ST-ABN of `checkpoint` (and the baseline and
    reference ST-ABN given) over `data`, on `device` (cuda or cpu; default: cuda when
    available) with `threads` torch threads; write the reports and pictures under `out`
    (default: <checkpoint's folder>/explain). Returns that folder and the Markdown table.
    `warn` gets what the run should say but does not stop for."""
    require_captum()  # before any work: the peer explainers are half of the table
    run_on = _device(device)
    with torch_threads(threads):
        model = load_stabn(checkpoint, run_on)
        baseline = reference = None
        if baseline_checkpoint is not None:
            baseline = load_baseline(baseline_checkpoint, run_on)
            _warn_if_other_clips(warn, baseline_checkpoint, baseline, checkpoint, model)
        if reference_checkpoint is not None:
            reference = load_stabn(reference_checkpoint, run_on)
            _warn_if_other_clips(warn, reference_checkpoint, reference, checkpoint, model)
        dataset, truth = open_split(data, settings.split, model.spec, settings.videos)
        folder = Path(out) if out else Path(checkpoint).resolve().parent / "explain"
        pictures = picture_writer(folder, dataset, model, tuple(picture_explainers), picture_frames)
        summary = run_benchmark(model, dataset, truth, settings, baseline, reference=reference, pictures=pictures)
        summary["attention_statistics"] = attention_statistics(model, dataset, truth, settings.videos)
    summary["model"]["checkpoint"] = str(checkpoint)
    if baseline is not None:
        summary["baseline"]["checkpoint"] = str(baseline_checkpoint)
    if reference is not None:
        summary["reference"]["checkpoint"] = str(reference_checkpoint)
    summary["data"] = str(data)
    summary["settings"]["device"] = run_on.type
    return folder, write_reports(folder, summary)


def _device(name: Optional[str]) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available")
    return torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))


def _warn_if_other_clips(
    warn: Callable[[str], None], path: PathLike, other: nn.Module, main_path: PathLike, model: nn.Module
) -> None:
    a, b = model.spec, other.spec
    if (a.frame_length, a.frame_size) != (b.frame_length, b.frame_size):
        warn(
            f"{path} takes {b.frame_length} frames of {b.frame_size} px, {main_path} "
            f"{a.frame_length} of {a.frame_size}; both are given the ST-ABN's clips"
        )


def load_stabn(path: PathLike, device: torch.device) -> nn.Module:
    """The ST-ABN of checkpoint `path` on `device`, eval mode; CheckpointError if the file holds
    another model (one without an attention branch, `conv_att_common`)."""
    model = load_pretrained(path)
    if not is_stabn(model):
        raise CheckpointError(
            f"{path}: not an ST-ABN checkpoint (it holds {model_spec(model).name}); "
            "a 3D ResNet goes to --baseline-checkpoint"
        )
    return model.to(device).eval()


def load_baseline(path: PathLike, device: torch.device) -> nn.Module:
    """The baseline of checkpoint `path` (any model of this project) on `device`, eval mode."""
    return load_pretrained(path).to(device).eval()


def open_split(data: PathLike, split: str, spec: Any, videos: int) -> Tuple[FrameClipDataset, Dict[str, Any]]:
    """The evaluation dataset of `<data>/<split>.txt` (frames under `<data>/frames`, clips of
    the model's `spec`) and the ground truth of its first `videos` videos; DataError naming the
    file where something is missing."""
    root = Path(data)
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist")
    labels, frames, truth_path = root / f"{split}.txt", root / "frames", root / "ground_truth.json"
    for path, what in ((frames, "frame folder"), (labels, "label file"), (truth_path, "ground truth file")):
        if not path.exists():
            raise DataError(f"{path}: no such {what} (the explanation benchmark needs the synthetic data's layout)")
    try:
        truth = json.loads(truth_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{truth_path}: not a readable ground truth file ({e})") from None
    if not isinstance(truth, dict):
        raise DataError(f"{truth_path}: expected an object of videos, got {type(truth).__name__}")
    dataset = FrameClipDataset(
        labels, frames, spec.frame_length, spec.frame_size, mode="eval", num_classes=spec.num_classes
    )
    for record in dataset.records[:videos]:
        entry = truth.get(record.video_id)
        if not isinstance(entry, dict) or "event" not in entry or "boxes" not in entry:
            raise DataError(f"{truth_path}: no event window and boxes for video {record.video_id} of {labels}")
        if len(entry["boxes"]) < record.num_frames:
            raise DataError(
                f"{truth_path}: video {record.video_id} has {len(entry['boxes'])} boxes for {record.num_frames} frames"
            )
    if not dataset.records:
        raise DataError(f"{labels}: no videos")
    return dataset, truth
