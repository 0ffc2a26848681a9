"""The explanation benchmark: how well explainers say where and when the target acts, scored
on the same clips of the synthetic data (whose `ground_truth.json` holds, per video, the event
window and the target's box in every frame).

Each video's evaluation view (centre clip, centre crop, as `eval.py` takes it) is explained for
the class the perception branch predicts, by ST-ABN's own attention, its attention branch's
class map, Grad-CAM at chosen layers (of the ST-ABN and, given one, of a 3D ResNet baseline
trained on the same data), input gradients, SmoothGrad, Integrated Gradients, and three floors:
a random volume, a centred Gaussian (no temporal profile) and the same Gaussian with a flat
temporal profile (`uniform_in_time`). Every figure comes with a percentile bootstrap interval
over videos:

- pointing game: hits over frames, over the event frames with a visible target (`pointing_game`);
- energy in box: the share of each such frame's mass inside the box, averaged over the frames
  of a video, then over videos (`energy_in_box`);
- temporal hit (ties shared fairly), temporal energy (the profile's mass in the window),
  temporal IoU and per-frame AUROC of the explainer's temporal profile (`temporal_hit`,
  `temporal_energy`, `temporal_iou`, `temporal_auroc`), over the videos whose clip holds a
  frame of the event window (the AUROC: and a frame outside it);
- deletion and insertion AUC (`deletion_insertion`) on the first `auc_videos` videos, against
  one random voxel order per video shared by all explainers (voxels of equal saliency are
  also taken in that random order), and each AUC's ratio to the random order's;
- the sanity check (`stabn.interpret.sanity`) of the `sanity_explainers` on the first
  `sanity_videos` videos: per randomised stage, the mean Spearman correlation of the map with
  the map on the trained model.

explain.json: ``videos``, ``auc_videos``; ``model``, ``reference`` and ``baseline`` (name,
accuracy, checkpoint; the ST-ABNs' attention options); ``settings``; ``metrics`` (the keys of
`METRICS`); ``explainers``: per explainer, ``model``, ``seconds_per_video`` and one figure per
metric key (``value``, ``low``, ``high``, ``n``; the pointing game's also ``frames``), the
keys ``pointing_game``, ``energy_in_box``, ``temporal_hit``, ``temporal_energy``,
``temporal_iou``, ``temporal_auroc``, ``deletion_auc``, ``insertion_auc``, ``deletion_ratio``,
``insertion_ratio``, ``random_deletion_auc``, ``random_insertion_auc``; ``sanity``:
``videos``, ``seed`` and ``explainers``: per checked explainer, ``model`` and ``stages``, a
figure per stage name in cascade order; ``attention_statistics``; ``data``.

Each video is scored by `score_video`, the scorer of eval.py's explanation metrics too; the
settings and the explainers are in `stabn.interpret.explainers`, the reports in
`stabn.interpret.report`, the job from checkpoint files in `stabn.interpret.benchmark_job`.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from stabn.data import FrameClipDataset
from stabn.errors import ConfigError
from stabn.interpret import saliency
from stabn.interpret.explainers import BASELINE, REFERENCE, STABN, Explainer, Settings, explainers
from stabn.interpret.sanity import cascading_correlations
from stabn.interpret.scoring import (
    Perturbation,
    VideoScore,
    bootstrap_interval,
    clip_ground_truth,
    mean_of_rows,
    random_voxel_order,
    ratio_of_sums,
    score_video,
    target_probability,
)
from stabn.models import ModelSpec, model_spec

# Metric keys in table order, with their column headings; ↑ / ↓: which way is better.
METRICS: Tuple[Tuple[str, str], ...] = (
    ("pointing_game", "pointing game ↑"),
    ("energy_in_box", "energy in box ↑"),
    ("temporal_hit", "temporal hit ↑"),
    ("temporal_energy", "mass in window ↑"),
    ("deletion_auc", "deletion AUC ↓"),
    ("insertion_auc", "insertion AUC ↑"),
    ("deletion_ratio", "deletion / random ↓"),
    ("insertion_ratio", "insertion / random ↑"),
    ("random_deletion_auc", "random deletion AUC"),
    ("random_insertion_auc", "random insertion AUC"),
    ("temporal_iou", "temporal IoU ↑"),
    ("temporal_auroc", "frame AUROC ↑"),
)
# The report's tables: where (and deletion / insertion), and the finer figures of when. The
# random orders' own AUCs are the same for every explainer of a model: below the tables.
TABLE_METRICS: Tuple[str, ...] = tuple(key for key, _ in METRICS[:8])
TIME_METRICS: Tuple[str, ...] = ("temporal_iou", "temporal_auroc")


# --------------------------------------------------------------------------- per video

# What `run_benchmark` hands `pictures` for each explainer: (name, volume, profile or None), and
# `pictures` itself: (video index, uint8 frames [T, S, S, 3], boxes, drawn) -> None.
Drawn = Tuple[str, Tensor, Optional[Tensor]]
Pictures = Callable[[int, Tensor, List[Any], List[Drawn]], None]


@dataclass
class _Rows:
    """One explainer's per-video figures, the rows the bootstrap resamples."""

    pointing: List[Tuple[int, int]] = field(default_factory=list)  # (hits, frames), videos with frames
    energy: List[float] = field(default_factory=list)  # per-video mean over its scored frames
    temporal_hit: List[float] = field(default_factory=list)
    temporal_energy: List[float] = field(default_factory=list)
    temporal_iou: List[float] = field(default_factory=list)
    temporal_auroc: List[float] = field(default_factory=list)  # videos where it is defined
    deletion: List[float] = field(default_factory=list)
    insertion: List[float] = field(default_factory=list)
    seconds: float = 0.0
    calls: int = 0
    temporal: bool = True  # False: the explainer has no temporal profile

    def add(self, score: VideoScore) -> None:
        """One video's figures; time only on clips that hold a frame of the event window."""
        if score.pointing_frames:
            self.pointing.append((score.pointing_hits, score.pointing_frames))
            self.energy.append(score.energy_in_box)
        if score.temporal_hit is None:
            self.temporal = False
        elif score.event_frames:
            self.temporal_hit.append(float(score.temporal_hit))
            self.temporal_energy.append(score.temporal_energy)
            self.temporal_iou.append(score.temporal_iou)
            if score.temporal_auroc is not None:
                self.temporal_auroc.append(score.temporal_auroc)
        if score.deletion_auc is not None:
            self.deletion.append(score.deletion_auc)
            self.insertion.append(score.insertion_auc)

    def add_random(self, score: VideoScore) -> None:
        """The random order's AUCs of one video, where `score` holds them."""
        if score.random_deletion_auc is not None:
            self.deletion.append(score.random_deletion_auc)
            self.insertion.append(score.random_insertion_auc)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Run:
    """One benchmark run: the models, their explainers and the per-video rows."""

    def __init__(self, models: Dict[str, nn.Module], settings: Settings, pictures: Optional[Pictures]) -> None:
        self.models = models
        self.specs: Dict[str, ModelSpec] = {key: model_spec(m) for key, m in models.items()}
        self.settings = settings
        self.device = next(models[STABN].parameters()).device
        self.explainers = explainers(settings, BASELINE in models, REFERENCE in models)
        self.rows = {e.name: _Rows() for e in self.explainers}
        self.random_rows = {key: _Rows() for key in models}  # the random order's, per model
        self.correct = dict.fromkeys(models, 0)
        self.pictures = pictures
        names = [e.name for e in self.explainers]
        for name in settings.sanity_explainers:
            if name not in names:
                raise ConfigError(f"--sanity-explainers: no explainer {name!r}; there are {', '.join(names)}")
        # Per checked explainer, per stage: the correlations of the videos where one is defined.
        self.sanity: Dict[str, Dict[str, List[float]]] = {name: {} for name in settings.sanity_explainers}

    def video(self, dataset: FrameClipDataset, truth: Dict[str, Any], index: int, with_auc: bool) -> None:
        """Explain and score video `index` with every explainer (and draw what they gave, where
        it is one of the first `settings.pictures`)."""
        views, label, _ = dataset[index]
        view = dataset.centre_view
        frames_u8 = views[view : view + 1].to(self.device)
        in_event, boxes = clip_ground_truth(dataset, index, truth[dataset.records[index].video_id], view)
        clips, targets = self._predict(frames_u8, label)
        perturbations = self._perturbations(clips, targets, index) if with_auc else {}
        draw = self.pictures is not None and index < self.settings.pictures
        drawn: List[Drawn] = []
        random_scored = set()  # the random order is scored once per model, with its first explainer
        for explainer in self.explainers:
            key = explainer.model
            volume, profile = self._explain(explainer, clips[key], targets[key], index)
            if draw:
                drawn.append((explainer.name, volume, None if profile is None else profile.detach().float().cpu()))
            score = score_video(volume, profile, in_event=in_event, boxes=boxes, perturbation=perturbations.get(key),
                                with_random=key not in random_scored)  # fmt: skip
            random_scored.add(key)
            self.rows[explainer.name].add(score)
            self.random_rows[key].add_random(score)
            if explainer.name in self.sanity and index < self.settings.sanity_videos:
                self._sanity(explainer, clips[key], targets[key], index, volume)
        if drawn:
            self.pictures(index, frames_u8[0].permute(1, 2, 3, 0).cpu(), boxes, drawn)

    def _predict(self, frames_u8: Tensor, label: int) -> Tuple[Dict[str, Tensor], Dict[str, int]]:
        """Each model's normalised clip and predicted class, counting the correct ones."""
        clips, targets = {}, {}
        for key, m in self.models.items():
            clips[key] = self.specs[key].normalize(frames_u8)[0]
            with torch.no_grad():
                logits = saliency.logits_of(m)(clips[key].unsqueeze(0))
            targets[key] = int(logits.argmax())
            self.correct[key] += targets[key] == label
        return clips, targets

    def _perturbations(self, clips: Dict[str, Tensor], targets: Dict[str, int], index: int) -> Dict[str, Perturbation]:
        """Each model's deletion / insertion of the video, all in its one random voxel order."""
        s = self.settings
        order = random_voxel_order(s.seed, index, clips[STABN][0].numel())
        return {
            key: Perturbation(target_probability(m, targets[key], s.batch_size), clips[key], order, s.steps)
            for key, m in self.models.items()
        }

    def _sanity(self, explainer: Explainer, clip: Tensor, target: int, index: int, volume: Tensor) -> None:
        """The sanity check of `explainer` on video `index`, whose map on the trained model is `volume`."""
        stages = self.sanity[explainer.name]
        correlations = cascading_correlations(
            lambda m, c, t: explainer.run(m, c, t, index), self.models[explainer.model], clip, target, volume,
            seed=self.settings.seed,
        )  # fmt: skip
        for stage, correlation in correlations:
            values = stages.setdefault(stage, [])
            if correlation is not None:
                values.append(correlation)

    def _explain(self, explainer: Explainer, clip: Tensor, target: int, index: int) -> saliency.Explanation:
        """`explainer`'s volume (on the CPU) and profile of the clip, its time counted."""
        rows = self.rows[explainer.name]
        _sync(self.device)
        start = time.perf_counter()
        volume, profile = explainer.run(self.models[explainer.model], clip, target, index)
        _sync(self.device)
        rows.seconds += time.perf_counter() - start
        rows.calls += 1
        return volume.detach().float().cpu(), profile


def _models(
    model: nn.Module, baseline: Optional[nn.Module], reference: Optional[nn.Module], layers: Sequence[str]
) -> Dict[str, nn.Module]:
    """The models by key, in eval mode; an unknown Grad-CAM layer stops the run before it starts."""
    models = {STABN: model.eval()}
    if reference is not None:
        models[REFERENCE] = reference.eval()
    if baseline is not None:
        models[BASELINE] = baseline.eval()
    for key, m in models.items():
        if key == REFERENCE:
            continue
        for layer in layers:
            saliency.layer_of(m, layer)
    return models


def run_benchmark(
    model: nn.Module,
    dataset: FrameClipDataset,
    truth: Dict[str, Any],
    settings: Settings,
    baseline: Optional[nn.Module] = None,
    progress: bool = True,
    reference: Optional[nn.Module] = None,
    pictures: Optional[Pictures] = None,
) -> Dict[str, Any]:
    """Explain the first `settings.videos` videos of `dataset` with every explainer and
    return the figures (the layout of explain.json, less the file names). For the first
    `settings.pictures` videos, `pictures(index, frames, boxes, [(explainer, volume,
    profile)])` gets the clip's uint8 frames [T, S, S, 3] and what each explainer gave."""
    run = _Run(_models(model, baseline, reference, settings.layers), settings, pictures)
    count = min(settings.videos, len(dataset))
    auc_count = min(settings.auc_videos, count)
    for index in tqdm(range(count), desc="explain", unit="video", disable=None if progress else True):
        run.video(dataset, truth, index, index < auc_count)
    return _summary(run, count, auc_count)


def _summary(run: _Run, count: int, auc_count: int) -> Dict[str, Any]:
    """explain.json's figures, less the file names."""
    settings, specs, correct = run.settings, run.specs, run.correct
    summary: Dict[str, Any] = {
        "videos": count,
        "auc_videos": auc_count,
        "model": {"name": specs[STABN].name, "accuracy": correct[STABN] / max(count, 1)},
        "baseline": None,
        "settings": {
            **asdict(settings),
            "layers": list(settings.layers),
            "sanity_explainers": list(settings.sanity_explainers),
            "smoothgrad_stdev": saliency.SMOOTHGRAD_STDEV,
        },
        "metrics": [key for key, _ in METRICS],
        "explainers": {},
    }
    if BASELINE in specs:
        summary["baseline"] = {"name": specs[BASELINE].name, "accuracy": correct[BASELINE] / max(count, 1)}
    if REFERENCE in specs:
        summary["reference"] = {
            "name": specs[REFERENCE].name,
            "attention": asdict(specs[REFERENCE].attention),
            "accuracy": correct[REFERENCE] / max(count, 1),
        }
    summary["model"]["attention"] = asdict(specs[STABN].attention)
    for explainer in run.explainers:
        summary["explainers"][explainer.name] = _summarise(
            run.rows[explainer.name], run.random_rows[explainer.model], explainer.model, settings
        )
    model_of = {e.name: e.model for e in run.explainers}
    summary["sanity"] = {
        "videos": min(settings.sanity_videos, count),
        "seed": settings.seed,
        "explainers": {
            name: {
                "model": model_of[name],
                "stages": {stage: interval(values, mean_of_rows, settings) for stage, values in stages.items()},
            }
            for name, stages in run.sanity.items()
        },
    }
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
        "temporal_iou": interval(r.temporal_iou if temporal else [], mean_of_rows, settings),
        "temporal_auroc": interval(r.temporal_auroc if temporal else [], mean_of_rows, settings),
        "deletion_auc": interval(r.deletion, mean_of_rows, settings),
        "insertion_auc": interval(r.insertion, mean_of_rows, settings),
        "deletion_ratio": interval(list(zip(r.deletion, random.deletion)), ratio_of_sums, settings),
        "insertion_ratio": interval(list(zip(r.insertion, random.insertion)), ratio_of_sums, settings),
        "random_deletion_auc": interval(random.deletion, mean_of_rows, settings),
        "random_insertion_auc": interval(random.insertion, mean_of_rows, settings),
    }
