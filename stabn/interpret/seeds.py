"""The explanation benchmark over training seeds: several explain.json of models trained alike
but for their seed, on the same data and settings, combined into one figure per explainer and
metric, the mean over seeds with the interval from the lowest to the highest seed's figure.

seeds.json: ``runs`` (each run's file, model name, seed-free settings and centre-clip accuracy
of each model), ``model``, ``reference`` and ``baseline`` accuracy (mean, low, high over the
runs that have the model), ``explainers``: per explainer, ``seeds`` (how many runs scored it),
``model`` and one figure per metric key (``value``: the mean, ``low`` and ``high``: the lowest
and highest run's, ``n``: the seeds, ``per_seed``: each run's value); ``sanity``: the same per
checked explainer and randomised stage.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from stabn.errors import ConfigError, PathLike
from stabn.interpret.benchmark import TABLE_METRICS, TIME_METRICS
from stabn.interpret.report import cell, metric_table, sanity_table, write_json_and_markdown

# Settings that may differ between the runs combined: the seed (the bootstrap's and the random
# voxel order's), where each ran and how many pictures it drew.
_FREE_SETTINGS = ("seed", "device", "pictures")


def read_summary(path: PathLike) -> Dict[str, Any]:
    """One run's explain.json; a ConfigError naming the file where it is not one."""
    try:
        summary = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file (give the explain.json of each seed's benchmark)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: not a readable explain.json ({e})") from None
    if not isinstance(summary, dict) or not all(k in summary for k in ("explainers", "settings", "model")):
        raise ConfigError(f"{path}: not an explain.json of stabn-bench explain (no explainers, settings or model)")
    return summary


def _same_run(first: Dict[str, Any], first_path: PathLike, other: Dict[str, Any], path: PathLike) -> None:
    """The runs differ only in their seeds: the same data, settings and model architecture."""
    checks = {"data": (first.get("data"), other.get("data")), "videos": (first["videos"], other["videos"])}
    for key in sorted(set(first["settings"]) | set(other["settings"])):
        if key not in _FREE_SETTINGS:
            checks[f"settings.{key}"] = (first["settings"].get(key), other["settings"].get(key))
    for key in ("name", "attention"):
        checks[f"model.{key}"] = (first["model"].get(key), other["model"].get(key))
    for key, (a, b) in checks.items():
        if a != b:
            raise ConfigError(
                f"{path}: {key} is {b!r}, but {a!r} in {first_path}: combine runs that differ only in seed"
            )


def _spread(values: List[float]) -> Dict[str, Any]:
    """Mean, lowest and highest of the seeds' values (nulls without any)."""
    if not values:
        return {"value": None, "low": None, "high": None, "n": 0, "per_seed": []}
    return {"value": sum(values) / len(values), "low": min(values), "high": max(values), "n": len(values),
            "per_seed": values}  # fmt: skip


def _values(figures: Sequence[Optional[Dict[str, Any]]]) -> List[float]:
    return [f["value"] for f in figures if f and f.get("value") is not None]


def _accuracy(summaries: Sequence[Dict[str, Any]], key: str) -> Optional[Dict[str, Any]]:
    infos = [s[key] for s in summaries if s.get(key)]
    if not infos:
        return None
    return {"name": infos[0]["name"], "runs": len(infos), **_spread([i["accuracy"] for i in infos])}


def combine_seeds(paths: Sequence[PathLike]) -> Dict[str, Any]:
    """seeds.json of the benchmark runs `paths` (their explain.json)."""
    if len(paths) < 2:
        raise ConfigError(f"give the explain.json of at least two seeds' runs, got {len(paths)}")
    summaries = [read_summary(p) for p in paths]
    for path, summary in zip(paths[1:], summaries[1:]):
        _same_run(summaries[0], paths[0], summary, path)
    names = list(dict.fromkeys(name for s in summaries for name in s["explainers"]))
    metrics = summaries[0]["metrics"]
    explainers = {}
    for name in names:
        scored = [s["explainers"][name] for s in summaries if name in s["explainers"]]
        explainers[name] = {"seeds": len(scored), "model": scored[0]["model"],
                            **{key: _spread(_values([f.get(key) for f in scored])) for key in metrics}}  # fmt: skip
    sanity: Dict[str, Any] = {}
    for s in summaries:
        for name, row in (s.get("sanity") or {}).get("explainers", {}).items():
            for stage, figure in row["stages"].items():
                sanity.setdefault(name, {}).setdefault(stage, []).append(figure)
    return {
        "runs": [
            {
                "file": str(p),
                "seed": s["settings"].get("seed"),
                "model": s["model"]["name"],
                "checkpoint": s["model"].get("checkpoint"),
                "accuracy": s["model"]["accuracy"],
            }  # fmt: skip
            for p, s in zip(paths, summaries)
        ],
        "videos": summaries[0]["videos"],
        "data": summaries[0].get("data"),
        "metrics": metrics,
        "model": _accuracy(summaries, "model"),
        "reference": _accuracy(summaries, "reference"),
        "baseline": _accuracy(summaries, "baseline"),
        "explainers": explainers,
        "sanity": {
            "videos": min((s.get("sanity") or {}).get("videos", 0) for s in summaries),
            "seed": "per run",
            "explainers": {
                name: {"stages": {stage: _spread(_values(figures)) for stage, figures in stages.items()}}
                for name, stages in sanity.items()
            },
        },
    }


def seeds_markdown(combined: Dict[str, Any]) -> str:
    """seeds.json as Markdown: the where and when tables, the sanity check, what was combined."""
    runs = len(combined["runs"])
    rows = {}
    for name, figures in combined["explainers"].items():
        rows[name if figures["seeds"] == runs else f"{name} ({figures['seeds']} of {runs} runs)"] = figures
    table = {"explainers": rows}
    lines = [*metric_table(table, TABLE_METRICS), "", *metric_table(table, TIME_METRICS)]
    lines += sanity_table(combined["sanity"])
    lines += ["", f"Mean over {runs} training seeds [lowest, highest seed], {combined['videos']} videos each."]
    for key in ("model", "reference", "baseline"):
        info = combined.get(key)
        if info:
            accuracy = f"centre-clip accuracy {cell(info)} over {info['runs']} run{'s' if info['runs'] != 1 else ''}"
            lines.append(f"{key.capitalize()}: {info['name']}, {accuracy}.")
    return "\n".join(lines) + "\n"


def write_seed_reports(out: PathLike, combined: Dict[str, Any]) -> str:
    """seeds.json and seeds.md under `out`; returns the Markdown."""
    return write_json_and_markdown(out, "seeds", combined, seeds_markdown(combined))
