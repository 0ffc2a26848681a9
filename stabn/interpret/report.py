"""The explanation benchmark's reports: explain.json, explain.md (the tables: one row per
explainer for where, for the finer figures of when, and per checked explainer for the sanity
check; and what they were measured on) and the side-by-side pictures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from stabn.errors import ConfigError, PathLike
from stabn.fileio import atomic_write_text
from stabn.interpret.benchmark import METRICS, TABLE_METRICS, TIME_METRICS
from stabn.interpret.explainers import BASELINE, REFERENCE, STABN
from stabn.interpret.visualize import explanation_sheet


def cell(figure: Optional[Dict[str, Any]]) -> str:
    """``0.81 [0.77, 0.85]``, or ``—`` where the figure is not applicable."""
    if not figure or figure.get("value") is None:
        return "—"
    return f"{figure['value']:.2f} [{figure['low']:.2f}, {figure['high']:.2f}]"


def _table(first: str, titles: Sequence[str], rows: Dict[str, List[str]]) -> List[str]:
    """A Markdown table: a heading row (`first`, then `titles`) and a row of cells per name."""
    lines = ["| " + " | ".join([first, *titles]) + " |", "| --- | " + " | ".join("---" for _ in titles) + " |"]
    return lines + [f"| {name} | " + " | ".join(cells) + " |" for name, cells in rows.items()]


def metric_table(summary: Dict[str, Any], keys: Sequence[str]) -> List[str]:
    titles = dict(METRICS)
    rows = {name: [cell(figures[key]) for key in keys] for name, figures in summary["explainers"].items()}
    return _table("explainer", [titles[key] for key in keys], rows)


def sanity_table(sanity: Optional[Dict[str, Any]]) -> List[str]:
    """The sanity check as Markdown lines: per checked explainer, the Spearman correlation with
    its map on the trained model once each stage is randomised (cascading, left to right); none
    where no explainer was checked."""
    if not sanity or not sanity["videos"] or not sanity["explainers"]:
        return []
    checked = sanity["explainers"]
    stages = list(dict.fromkeys(stage for row in checked.values() for stage in row["stages"]))
    rows = {name: [cell(row["stages"].get(stage)) for stage in stages] for name, row in checked.items()}
    return [
        "",
        f"Sanity check (randomised weights, cascading from the top, seed {sanity['seed']}): Spearman "
        f"correlation with the map on the trained model, {sanity['videos']} videos (less those where the "
        "randomised map is constant, e.g. an all-zero Grad-CAM). Near 1 once the weights a map depends on "
        "are random: the map does not explain the model.",
        "",
        *_table("explainer", [f"{stage} ↓" for stage in stages], rows),
    ]


def markdown_table(summary: Dict[str, Any]) -> str:
    """The figures as Markdown tables (where, when, the sanity check), and a few lines saying
    what they were measured on."""
    settings = summary["settings"]
    lines = metric_table(summary, TABLE_METRICS)
    lines += ["", *metric_table(summary, TIME_METRICS)]
    lines += sanity_table(summary.get("sanity"))
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


def write_json_and_markdown(out: PathLike, name: str, data: Dict[str, Any], text: str) -> str:
    """`name`.json (of `data`) and `name`.md (`text`) under `out`; returns `text`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / f"{name}.json", json.dumps(data, indent=2) + "\n")
    atomic_write_text(out / f"{name}.md", text)
    return text


def write_reports(out: PathLike, summary: Dict[str, Any]) -> str:
    """explain.json and explain.md under `out`; returns the Markdown."""
    return write_json_and_markdown(out, "explain", summary, markdown_table(summary))


def picture_writer(
    out: Path, dataset: Any, model: Any, names: Tuple[str, ...] = (), frame_count: int = 8
) -> Callable[[int, torch.Tensor, Sequence, List[tuple]], None]:
    """The explanation benchmark's `pictures`: writes `pictures/<video_id>.png` under `out`,
    each explainer's map (those in `names`, in that order, or all) on `frame_count` evenly
    spaced frames of the clip (`explanation_sheet`)."""

    def write(index: int, frames: torch.Tensor, boxes: Sequence, drawn: List[tuple]) -> None:
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
