"""The explanation benchmark: how well explainers say where and when the target acts, scored
on the same clips of the synthetic data (whose `ground_truth.json` holds, per video, the event
window and the target's box in every frame).

Each video's evaluation view (centre clip, centre crop, as `eval.py` takes it) is explained for
the class the perception branch predicts, by ST-ABN's own attention, its attention branch's
class map, Grad-CAM at chosen layers (of the ST-ABN and, given one, of a 3D ResNet baseline
trained on the same data), input gradients, SmoothGrad, Integrated Gradients, and two floors:
a random volume and a centred Gaussian. Every figure comes with a percentile bootstrap
interval over videos:

- pointing game: hits over frames, over the event frames with a visible target (`pointing_game`);
- energy in box: the share of each such frame's mass inside the box, averaged over the frames
  of a video, then over videos (`energy_in_box`);
- temporal hit and temporal energy of the explainer's temporal profile (`temporal_hit`,
  `temporal_energy`), over the videos whose clip holds a frame of the event window;
- deletion and insertion AUC (`deletion_insertion`) on the first `auc_videos` videos, against
  one random voxel order per video shared by all explainers (voxels of equal saliency are
  also taken in that random order), and each AUC's ratio to the random order's.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from stabn.data import FrameClipDataset
from stabn.errors import CheckpointError, DataError, PathLike
from stabn.fileio import atomic_write_text
from stabn.interpret import saliency
from stabn.interpret.scoring import (
    auc,
    bootstrap_interval,
    clip_ground_truth,
    deletion_insertion,
    energy_in_box,
    mean_of_rows,
    pointing_game,
    ratio_of_sums,
    target_probability,
    temporal_energy,
    temporal_hit,
)
from stabn.models import is_stabn, load_pretrained, model_spec

log = logging.getLogger(__name__)


# Metric keys in table order, with their column headings; ↑ / ↓: which way is better.
METRICS: Tuple[Tuple[str, str], ...] = (
    ("pointing_game", "pointing game ↑"),
    ("energy_in_box", "energy in box ↑"),
    ("temporal_hit", "temporal hit ↑"),
    ("temporal_energy", "temporal energy ↑"),
    ("deletion_auc", "deletion AUC ↓"),
    ("insertion_auc", "insertion AUC ↑"),
    ("deletion_ratio", "deletion / random ↓"),
    ("insertion_ratio", "insertion / random ↑"),
    ("random_deletion_auc", "random deletion AUC"),
    ("random_insertion_auc", "random insertion AUC"),
)
TABLE_METRICS = 8  # the random orders' own AUCs are the same for every explainer of a model: below the table
# The ST-ABN explained; a second ST-ABN (e.g. the original architecture) whose own attention is
# scored on the same clips; the 3D ResNet baseline.
STABN, REFERENCE, BASELINE = "stabn", "reference", "baseline"
# Streams of numpy's generator per (seed, stream, video).
_RANDOM_VOLUME, _RANDOM_ORDER, _NOISE = 0, 1, 2


@dataclass
class Settings:
    """What the benchmark runs; the CLI's options."""

    videos: int = 200  # the first N videos of the split
    auc_videos: int = 64  # deletion / insertion on the first M of those
    steps: int = 16  # deletion / insertion steps
    layers: Tuple[str, ...] = ("layer3", "layer4")  # Grad-CAM layers
    smoothgrad_samples: int = 8
    ig_steps: int = 16
    bootstrap: int = 1000  # resamples
    confidence: float = 0.95
    seed: int = 0
    split: str = "val"
    batch_size: int = 8  # clips a forward at most (noisy, interpolated, deleted / inserted)
    pictures: int = 0  # side-by-side pictures of every explainer for the first N videos


@dataclass
class Explainer:
    """One row of the benchmark: a name, the model it explains (ST-ABN or the baseline) and a
    function ``(model, clip, target, video_index) -> (V [T, S, S], p [T] or None)``."""

    name: str
    model: str
    run: Callable[[nn.Module, Tensor, int, int], saliency.Explanation]


def _seed_for(seed: int, stream: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream, index])


def explainers(settings: Settings, with_baseline: bool, with_reference: bool = False) -> List[Explainer]:
    """The benchmark's explainers, in table order."""
    s = settings
    rows = [Explainer("stabn_attention", STABN, lambda m, c, t, i: saliency.stabn_attention(m, c, t))]
    if with_reference:
        rows.append(
            Explainer("reference_stabn_attention", REFERENCE, lambda m, c, t, i: saliency.stabn_attention(m, c, t))
        )
    rows += [Explainer("attention_class_map", STABN, lambda m, c, t, i: saliency.attention_class_map(m, c, t))]
    for layer in s.layers:
        rows.append(Explainer(f"gradcam_{layer}", STABN, partial(_gradcam, layer=layer)))
    if with_baseline:
        for layer in s.layers:
            rows.append(Explainer(f"baseline_gradcam_{layer}", BASELINE, partial(_gradcam, layer=layer)))

    def smooth(m: nn.Module, c: Tensor, t: int, i: int) -> saliency.Explanation:
        seed = int(_seed_for(s.seed, _NOISE, i).integers(2**62))
        return saliency.smoothgrad(m, c, t, s.smoothgrad_samples, seed, s.batch_size)

    rows += [
        Explainer("input_gradient", STABN, lambda m, c, t, i: saliency.input_gradient(m, c, t)),
        Explainer("smoothgrad", STABN, smooth),
        Explainer(
            "integrated_gradients",
            STABN,
            lambda m, c, t, i: saliency.integrated_gradients(m, c, t, s.ig_steps, s.batch_size),
        ),
        Explainer(
            "random", STABN, lambda m, c, t, i: saliency.random_explainer(c, _seed_for(s.seed, _RANDOM_VOLUME, i))
        ),
        Explainer("centre", STABN, lambda m, c, t, i: saliency.centre_prior(c)),
    ]
    return rows


def _gradcam(model: nn.Module, clip: Tensor, target: int, index: int, layer: str) -> saliency.Explanation:
    return saliency.gradcam(model, clip, target, layer)


# --------------------------------------------------------------------------- inputs


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


# --------------------------------------------------------------------------- per video


@dataclass
class _Rows:
    """One explainer's per-video figures, the rows the bootstrap resamples."""

    pointing: List[Tuple[int, int]] = field(default_factory=list)  # (hits, frames), videos with frames
    energy: List[float] = field(default_factory=list)  # per-video mean over its scored frames
    temporal_hit: List[float] = field(default_factory=list)
    temporal_energy: List[float] = field(default_factory=list)
    deletion: List[float] = field(default_factory=list)
    insertion: List[float] = field(default_factory=list)
    seconds: float = 0.0
    calls: int = 0
    temporal: bool = True  # False: the explainer has no temporal profile


def _order(volume: Tensor, random_order: Tensor) -> Tensor:
    """Voxels by decreasing saliency, ties in the order of `random_order` (flat indices)."""
    shuffled = volume.flatten()[random_order]
    return random_order[shuffled.argsort(descending=True, stable=True)]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_benchmark(
    model: nn.Module,
    dataset: FrameClipDataset,
    truth: Dict[str, Any],
    settings: Settings,
    baseline: Optional[nn.Module] = None,
    progress: bool = True,
    reference: Optional[nn.Module] = None,
    pictures: Optional[Callable[[int, Tensor, List[Any], List[Tuple[str, Tensor, Optional[Tensor]]]], None]] = None,
) -> Dict[str, Any]:
    """Explain the first `settings.videos` videos of `dataset` with every explainer and
    return the figures (the layout of explain.json, less the file names). For the first
    `settings.pictures` videos, `pictures(index, frames, boxes, [(explainer, volume,
    profile)])` gets the clip's uint8 frames [T, S, S, 3] and what each explainer gave."""
    device = next(model.parameters()).device
    models = {STABN: model.eval()}
    specs = {STABN: model_spec(model)}
    if reference is not None:
        models[REFERENCE], specs[REFERENCE] = reference.eval(), model_spec(reference)
    if baseline is not None:
        models[BASELINE], specs[BASELINE] = baseline.eval(), model_spec(baseline)
    for key, m in models.items():  # an unknown layer stops the run before it starts
        if key == REFERENCE:
            continue
        for layer in settings.layers:
            saliency.layer_of(m, layer)
    rows_of = explainers(settings, baseline is not None, reference is not None)
    rows = {e.name: _Rows() for e in rows_of}
    random_rows = {key: _Rows() for key in models}
    correct = dict.fromkeys(models, 0)
    count = min(settings.videos, len(dataset))
    auc_count = min(settings.auc_videos, count)
    view = dataset.centre_view

    for index in tqdm(range(count), desc="explain", unit="video", disable=None if progress else True):
        views, label, _ = dataset[index]
        frames_u8 = views[view : view + 1].to(device)
        in_event, boxes = clip_ground_truth(dataset, index, truth[dataset.records[index].video_id], view)
        clips, targets = {}, {}
        for key, m in models.items():
            clips[key] = specs[key].normalize(frames_u8)[0]
            with torch.no_grad():
                logits = saliency.logits_of(m)(clips[key].unsqueeze(0))
            targets[key] = int(logits.argmax())
            correct[key] += targets[key] == label
        with_auc = index < auc_count
        if with_auc:
            numel = clips[STABN][0].numel()
            random_order = torch.from_numpy(_seed_for(settings.seed, _RANDOM_ORDER, index).permutation(numel))
            probs = {
                key: target_probability(models[key], targets[key], settings.batch_size) for key in models
            }  # fmt: skip
            with torch.no_grad():
                for key in models:
                    deletion, insertion = deletion_insertion(
                        probs[key], clips[key], random_order.to(device), settings.steps
                    )
                    random_rows[key].deletion.append(auc(deletion))
                    random_rows[key].insertion.append(auc(insertion))
        has_event = any(in_event)
        drawn: List[Tuple[str, Tensor, Optional[Tensor]]] = []

        for explainer in rows_of:
            r = rows[explainer.name]
            key = explainer.model
            _sync(device)
            start = time.perf_counter()
            volume, profile = explainer.run(models[key], clips[key], targets[key], index)
            _sync(device)
            r.seconds += time.perf_counter() - start
            r.calls += 1
            volume = volume.detach().float().cpu()
            if pictures is not None and index < settings.pictures:
                drawn.append((explainer.name, volume, None if profile is None else profile.detach().float().cpu()))
            hits, frames = pointing_game(volume, boxes, in_event)
            if frames:
                r.pointing.append((hits, frames))
                r.energy.append(float(np.mean(energy_in_box(volume, boxes, in_event))))
            if profile is None:
                r.temporal = False
            elif has_event:
                r.temporal_hit.append(float(temporal_hit(profile, in_event)))
                r.temporal_energy.append(temporal_energy(profile, in_event))
            if with_auc:
                order = _order(volume, random_order).to(device)
                with torch.no_grad():
                    deletion, insertion = deletion_insertion(probs[key], clips[key], order, settings.steps)
                r.deletion.append(auc(deletion))
                r.insertion.append(auc(insertion))
        if drawn:
            pictures(index, frames_u8[0].permute(1, 2, 3, 0).cpu(), boxes, drawn)

    summary: Dict[str, Any] = {
        "videos": count,
        "auc_videos": auc_count,
        "model": {"name": specs[STABN].name, "accuracy": correct[STABN] / max(count, 1)},
        "baseline": None,
        "settings": {
            **asdict(settings),
            "layers": list(settings.layers),
            "smoothgrad_stdev": saliency.SMOOTHGRAD_STDEV,
        },
        "metrics": [key for key, _ in METRICS],
        "explainers": {},
    }
    if baseline is not None:
        summary["baseline"] = {"name": specs[BASELINE].name, "accuracy": correct[BASELINE] / max(count, 1)}
    if reference is not None:
        summary["reference"] = {
            "name": specs[REFERENCE].name,
            "attention": asdict(specs[REFERENCE].attention),
            "accuracy": correct[REFERENCE] / max(count, 1),
        }
    summary["model"]["attention"] = asdict(specs[STABN].attention)
    for explainer in rows_of:
        summary["explainers"][explainer.name] = _summarise(
            rows[explainer.name], random_rows[explainer.model], explainer.model, settings
        )
    return summary


# --------------------------------------------------------------------------- aggregation


def interval(
    rows: Sequence[Any], statistic: Callable[[Tensor], Tensor], settings: Settings, **extra: Any
) -> Dict[str, Any]:
    """One figure: its value on the videos, the bootstrap interval and the number of videos
    (nulls and n = 0 without any)."""
    if not rows:
        return {"value": None, "low": None, "high": None, "n": 0, **extra}
    values = torch.as_tensor(rows, dtype=torch.float64)
    value = float(statistic(values.unsqueeze(0))[0])
    low, high = bootstrap_interval(values, statistic, settings.bootstrap, settings.seed, settings.confidence)
    return {"value": value, "low": low, "high": high, "n": len(rows), **extra}


def _summarise(r: _Rows, random: _Rows, model: str, settings: Settings) -> Dict[str, Any]:
    temporal = r.temporal
    return {
        "model": model,
        "seconds_per_video": r.seconds / max(r.calls, 1),
        "pointing_game": interval(r.pointing, ratio_of_sums, settings, frames=sum(f for _, f in r.pointing)),
        "energy_in_box": interval(r.energy, mean_of_rows, settings),
        "temporal_hit": interval(r.temporal_hit if temporal else [], mean_of_rows, settings),
        "temporal_energy": interval(r.temporal_energy if temporal else [], mean_of_rows, settings),
        "deletion_auc": interval(r.deletion, mean_of_rows, settings),
        "insertion_auc": interval(r.insertion, mean_of_rows, settings),
        "deletion_ratio": interval(list(zip(r.deletion, random.deletion)), ratio_of_sums, settings),
        "insertion_ratio": interval(list(zip(r.insertion, random.insertion)), ratio_of_sums, settings),
        "random_deletion_auc": interval(random.deletion, mean_of_rows, settings),
        "random_insertion_auc": interval(random.insertion, mean_of_rows, settings),
    }


# --------------------------------------------------------------------------- reports


def cell(figure: Optional[Dict[str, Any]]) -> str:
    """``0.81 [0.77, 0.85]``, or ``—`` where the figure is not applicable."""
    if not figure or figure.get("value") is None:
        return "—"
    return f"{figure['value']:.2f} [{figure['low']:.2f}, {figure['high']:.2f}]"


def markdown_table(summary: Dict[str, Any]) -> str:
    """The figures as a Markdown table, one row per explainer, and a few lines saying what
    they were measured on."""
    settings = summary["settings"]
    shown = METRICS[:TABLE_METRICS]
    lines = [
        "| explainer | " + " | ".join(title for _, title in shown) + " |",
        "| --- | " + " | ".join("---" for _ in shown) + " |",
    ]
    for name, figures in summary["explainers"].items():
        lines.append(f"| {name} | " + " | ".join(cell(figures[key]) for key, _ in shown) + " |")
    percent = round(100 * settings["confidence"])
    auc_part = (
        f"deletion / insertion: the first {summary['auc_videos']}, {settings['steps']} steps"
        if summary["auc_videos"]
        else "no deletion / insertion"
    )
    lines += [
        "",
        f"{summary['videos']} videos of `{settings['split']}` ({auc_part}); {percent}% percentile bootstrap "
        f"intervals over videos ({settings['bootstrap']} resamples, seed {settings['seed']}).",
    ]
    for key, title in ((STABN, "model"), (REFERENCE, "reference"), (BASELINE, "baseline")):
        info = summary.get(title)
        if not info:
            continue
        first = next((f for f in summary["explainers"].values() if f["model"] == key), None)
        line = f"{title.capitalize()}: {info['name']}, centre-clip accuracy {info['accuracy']:.2f}"
        if first is not None and first["random_deletion_auc"]["value"] is not None:
            line += (
                f"; random voxel order: deletion AUC {cell(first['random_deletion_auc'])}, "
                f"insertion AUC {cell(first['random_insertion_auc'])}"
            )
        lines.append(line + ".")
    stats = summary.get("attention_statistics")
    if stats:
        lines += ["", "ST-ABN's maps (`stabn.interpret.diagnose`): " + ", ".join(
            f"{key} {value:.3f}" for key, value in stats.items()) + "."]  # fmt: skip
    return "\n".join(lines) + "\n"


def write_reports(out: PathLike, summary: Dict[str, Any]) -> str:
    """explain.json and explain.md under `out`; returns the Markdown."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "explain.json", json.dumps(summary, indent=2) + "\n")
    text = markdown_table(summary)
    atomic_write_text(out / "explain.md", text)
    return text
