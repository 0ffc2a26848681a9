"""Loading the run configuration: defaults (`stabn.config.schema`), then a YAML file, then
`dotted.key=value` overrides, validated; and saving the resolved config beside a run.

An unknown key is an error that suggests the closest valid one, naming the file and line.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
import typing
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import yaml

from stabn.config.schema import CHOICES, MODEL_NAMES, SOURCE_LABEL_FORMATS, STABN_NAMES, Config
from stabn.errors import ConfigError
from stabn.fileio import atomic_write_text


class _YamlLoader(yaml.SafeLoader):
    """YAML with only true / false as booleans (YAML 1.2): `amp: off` stays the string "off"."""


_YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _yaml(text: str) -> Any:
    return yaml.load(text, Loader=_YamlLoader)


def _all_keys(cls: type = Config, prefix: str = "") -> List[str]:
    keys = []
    for name, hint in typing.get_type_hints(cls).items():
        if dataclasses.is_dataclass(hint):
            keys += _all_keys(hint, f"{prefix}{name}.")
        else:
            keys.append(prefix + name)
    return keys


def _unknown_key(key: str, where: str) -> ConfigError:
    close = difflib.get_close_matches(key, _all_keys(), n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return ConfigError(f"{where}unknown config key '{key}'{hint}")


def _coerce(value: Any, hint: Any, key: str, where: str) -> Any:
    """`value` as type `hint`; strings from the command line are parsed as YAML scalars."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Union:  # Optional[X]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            return None
        return _coerce(value, next(a for a in args if a is not type(None)), key, where)
    if isinstance(value, str) and hint is not str:
        try:
            value = _yaml(value)
        except yaml.YAMLError:
            pass
    bad = ConfigError(f"{where}'{key}' expects {getattr(hint, '__name__', hint)}, got {value!r}")
    if origin in (list, List):
        if not isinstance(value, (list, tuple)):
            raise bad
        return [_coerce(v, args[0], key, where) for v in value]
    if hint is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e30" as a string; Python does not
            try:
                value = float(value)
            except ValueError:
                raise bad from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if hint is str:
        if isinstance(value, (dict, list)) or value is None:
            raise bad
        return str(value)
    return value


# Keys of earlier versions, still read from the config.yaml of older runs:
# old key -> (new name, old type, conversion of the old value).
_RENAMED: Dict[str, Tuple[str, type, Callable[[Any], Any]]] = {
    "data.hflip": ("flip", bool, lambda on: "horizontal" if on else "none")
}


def _apply(cfg: Any, values: Mapping[str, Any], prefix: str, where: str, lines: Mapping[str, int]) -> None:
    hints = typing.get_type_hints(type(cfg))
    names = {f.name for f in dataclasses.fields(cfg)}
    for name, value in values.items():
        key = f"{prefix}{name}"
        loc = f"{where}:{lines[key]}: " if key in lines else where
        if key in _RENAMED:
            name, old_type, convert = _RENAMED[key]
            value = convert(_coerce(value, old_type, key, loc))
        if name not in names:
            raise _unknown_key(key, loc)
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{loc}'{key}' must be a mapping of keys, got {value!r}")
            _apply(getattr(cfg, name), value, key + ".", where, lines)
        else:
            setattr(cfg, name, _coerce(value, hint, key, loc))


def _key_lines(node: yaml.Node, prefix: str = "") -> Dict[str, int]:
    """Dotted key -> 1-based line in the YAML file, for error messages."""
    lines: Dict[str, int] = {}
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            key = f"{prefix}{k.value}"
            lines[key] = k.start_mark.line + 1
            lines.update(_key_lines(v, key + "."))
    return lines


def read_yaml(path: Union[str, Path]) -> Tuple[Dict[str, Any], Dict[str, int]]:
    """A YAML mapping and the line of each key; syntax errors name the file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config ({e.strerror})") from None
    try:
        data = _yaml(text)
        node = yaml.compose(text, Loader=_YamlLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}{line}: YAML syntax error: {problem}") from None
    if data is None:
        return {}, {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping of keys, got {type(data).__name__}")
    return data, _key_lines(node)


def parse_overrides(items: Sequence[str]) -> Dict[str, Any]:
    """`["train.epochs=2", ...]` -> nested dict; values stay strings until typed."""
    nested: Dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value")
        key, value = item.split("=", 1)
        node = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}' conflicts with an earlier one")
        node[parts[-1]] = value
    return nested


def _sync_root(cfg: Config, values: Mapping[str, Any], where: str) -> None:
    """data.root and data.frames_root name the same folder: the one a layer gives fills the
    other, so that a later layer (an override, a resume's) wins whichever name it uses."""
    data = values.get("data")
    if not isinstance(data, Mapping):
        return
    if "root" in data and "frames_root" in data and cfg.data.root != cfg.data.frames_root:
        raise ConfigError(f"{where}data.root {cfg.data.root!r} and data.frames_root {cfg.data.frames_root!r} "
                          "are the same key: give one")  # fmt: skip
    if "root" in data:
        cfg.data.frames_root = cfg.data.root
    elif "frames_root" in data:
        cfg.data.root = cfg.data.frames_root


def validate(cfg: Config) -> None:
    for key, choices in CHOICES.items():
        value = _get(cfg, key)
        if value not in choices:
            raise ConfigError(f"'{key}' must be one of {', '.join(choices)}, got {value!r}")
    formats = SOURCE_LABEL_FORMATS[cfg.data.source]
    if cfg.data.label_format not in formats:
        raise ConfigError(f"'data.label_format' {cfg.data.label_format!r} does not apply to data.source="
                          f"{cfg.data.source}: give one of {', '.join(formats)}")  # fmt: skip
    if cfg.data.short_side is not None and cfg.data.source != "videos":
        raise ConfigError("'data.short_side' resizes decoded videos (data.source=videos); frame folders are "
                          "resized when prepared (stabn-prepare-ssv2 --short-side)")  # fmt: skip
    if cfg.data.short_side is not None and cfg.data.short_side < cfg.data.frame_size:
        raise ConfigError(f"'data.short_side' {cfg.data.short_side} is smaller than the "
                          f"{cfg.data.frame_size} px crop (data.frame_size)")  # fmt: skip
    if cfg.train.reset_lr_multiplier <= 0:
        raise ConfigError(f"'train.reset_lr_multiplier' must be positive, got {cfg.train.reset_lr_multiplier!r}")
    positive = [
        "model.num_classes",
        "model.width",
        "data.frame_length",
        "data.frame_size",
        "train.epochs",
        "train.batch_size",
        "train.save_every",
        "train.val_every",
        "eval.num_clips",
        "eval.batch_size",
        "train.log_every",
        "eval.explain_steps",
    ]
    for key in positive:
        section, name = key.split(".")
        if getattr(getattr(cfg, section), name) < 1:
            raise ConfigError(f"'{key}' must be at least 1, got {getattr(getattr(cfg, section), name)!r}")
    if cfg.eval.num_crops not in (1, 3):
        raise ConfigError(f"'eval.num_crops' must be 1 or 3, got {cfg.eval.num_crops!r}")
    if not 0.0 <= cfg.model.dropout < 1.0:
        raise ConfigError(f"'model.dropout' must be in [0, 1), got {cfg.model.dropout!r}")
    for key in ("spatial_sparsity", "temporal_sparsity"):
        if getattr(cfg.train, key) < 0:
            raise ConfigError(f"'train.{key}' must be at least 0, got {getattr(cfg.train, key)!r}")
    sparsity = cfg.train.spatial_sparsity or cfg.train.temporal_sparsity
    if (not cfg.model.attention.original or sparsity) and cfg.model.name not in STABN_NAMES:
        raise ConfigError(f"'model.name' {cfg.model.name!r} has no attention branch: model.attention and "
                          "train.spatial_sparsity / temporal_sparsity are ST-ABN options")  # fmt: skip
    if cfg.train.lr <= 0:
        raise ConfigError(f"'train.lr' must be positive, got {cfg.train.lr!r}")
    if cfg.train.nesterov and cfg.train.momentum <= 0:
        raise ConfigError(f"'train.nesterov' needs a positive 'train.momentum', got {cfg.train.momentum!r}")
    for section in (cfg.train, cfg.eval):
        if section.collective_timeout <= 0:
            key = f"{'train' if section is cfg.train else 'eval'}.collective_timeout"
            raise ConfigError(f"'{key}' must be positive, got {section.collective_timeout!r}")
    if cfg.eval.attention_layer is not None and cfg.eval.attention_method not in ("auto", "gradcam"):
        raise ConfigError(f"'eval.attention_layer' is Grad-CAM's layer: it does not apply to "
                          f"eval.attention_method={cfg.eval.attention_method}")  # fmt: skip
    if cfg.model.name not in MODEL_NAMES:
        close = difflib.get_close_matches(cfg.model.name, MODEL_NAMES, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"'model.name' {cfg.model.name!r} is not a known model{hint}")


def load_config(path: Optional[Union[str, Path]] = None, overrides: Sequence[str] = ()) -> Config:
    """Defaults, then the YAML file, then `key=value` overrides; validated."""
    cfg = Config()
    if path is not None:
        data, lines = read_yaml(path)
        _apply(cfg, data, "", str(path), lines)
        _sync_root(cfg, data, f"{path}: ")
    values = parse_overrides(overrides)
    _apply(cfg, values, "", "command line: ", {})
    _sync_root(cfg, values, "command line: ")
    validate(cfg)
    return cfg


def layered_config(layers: Sequence[Tuple[Mapping[str, Any], str]]) -> Config:
    """Defaults, then each `(values, where)` layer in turn; `where` prefixes its errors."""
    cfg = Config()
    for values, where in layers:
        _apply(cfg, values, "", where, {})
        _sync_root(cfg, values, where)
    validate(cfg)
    return cfg


def config_from_dict(data: Mapping[str, Any]) -> Config:
    """A Config from a saved dict (e.g. a run's config.yaml already parsed)."""
    return layered_config([(data, "saved config: ")])


def flat_config(cfg: Config) -> Dict[str, Any]:
    """Every key of `cfg` by its dotted name: `{"train.lr": 0.01, ...}`."""
    return {key: _get(cfg, key) for key in _all_keys()}


def save_config(cfg: Config, logdir: Union[str, Path]) -> None:
    """The resolved config as `config.yaml`, and flat as `args.json` like the original."""
    logdir = Path(logdir)
    atomic_write_text(logdir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    atomic_write_text(logdir / "args.json", json.dumps(flat_config(cfg), indent=2) + "\n")


def _get(cfg: Config, key: str) -> Any:
    value: Any = cfg
    for part in key.split("."):
        value = getattr(value, part)
    return value
