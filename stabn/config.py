"""Typed run configuration: dataclasses filled from YAML, then `dotted.key=value` overrides.

Every key is declared here with its type and default; an unknown key is an error that
suggests the closest valid one. The resolved config is saved beside every run.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import yaml

from .data.annotations import FORMATS
from .data.sampling import PADDING_MODES
from .data.transforms import CHANNEL_ORDERS, FLIP_MODES, JITTER_MODES
from .errors import ConfigError
from .fastpath import AMP_SETTINGS
from .fileio import atomic_write_text
from .metrics import VIEW_AVERAGES
from .models import MODEL_NAMES
from .models.stabn import ATTENTION_NORMS, FUSIONS, SPATIAL_GATES, TEMPORAL_SOURCES, AttentionOptions
from .optim import SCHEDULES


@dataclass
class ModelConfig:
    name: str = "abn_resnet50"
    num_classes: int = 174
    width: int = 64
    dropout: float = 0.5
    # 2D ImageNet weights inflated into the 3D model: "imagenet" (torchvision's IMAGENET1K_V1
    # through its weights API and cache, $TORCH_HOME) or a local torchvision ResNet file.
    pretrained_2d: Optional[str] = None
    # The 2D file must fill the whole backbone (conv1, bn1, layer1-4): a file of another depth or
    # width is an error naming its first misfit. false loads the tensors that fit, with a warning.
    pretrained_2d_strict: bool = True
    sync_bn: bool = False
    # ST-ABN's attention (stabn/models/stabn.py); the defaults are the original architecture:
    # spatial_gate residual: x * (1 + s) | multiply: x * s;
    # fusion concat: [x * gate(s), x * a] | product: x * gate(s) * a;
    # norm none | peak: the spatial map divided by its maximum in each frame, the temporal
    # map by its maximum over the clip; temporal mlp (Linear(T, T) over the frames) | frame (each
    # frame scored from its own response, the same weights at every position).
    attention: AttentionOptions = field(default_factory=AttentionOptions)


@dataclass
class DataConfig:
    frames_root: str = ""
    train_labels: str = ""
    val_labels: str = ""
    class_names: Optional[str] = None  # one name per line, line i = class i
    ground_truth: Optional[str] = None  # boxes and event windows; default: beside frames_root
    label_format: str = "ssv2"  # ssv2: "id num_frames label"; generic: "dir label"
    frame_template: str = "%06d.jpg"
    frame_length: int = 32
    frame_size: int = 224
    channel_order: str = "bgr"  # the original decoded with OpenCV
    padding: str = "first"  # short videos: first | last | loop
    jitter: str = "tpn"  # tpn (per frame, as the original) | clip | none
    # The training flip, p = 0.5: horizontal | vertical | none. The original's code flips axis 1
    # of its [T, H, W, C] clips, i.e. vertically, under a "horizontal flip" comment.
    flip: str = "horizontal"
    num_workers: int = 4
    skip_corrupt: bool = False


@dataclass
class TrainConfig:
    epochs: int = 150
    # Per GPU (per process on the CPU) under every launcher: train_dp.py on N GPUs steps
    # N x batch_size clips, torchrun with N processes too. The start-up log line says the total.
    batch_size: int = 8
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    schedule: str = "multistep"  # multistep | cosine
    milestones: List[int] = field(default_factory=lambda: [75, 125])
    gamma: float = 0.1
    warmup_epochs: int = 0
    amp: str = "auto"  # auto (bf16 on GPU, off on CPU) | bf16 | fp16 | off
    channels_last: Optional[bool] = None  # None: on for GPU
    compile: bool = False
    seed: int = 0
    resume: Optional[str] = None  # a checkpoint path, or "latest"
    # With resume "latest": a checkpoint-latest.pt that cannot be read (cut short, damaged) gives
    # way to the newest checkpoint of the run that reads, with a warning; true stops instead.
    resume_strict: bool = False
    save_every: int = 10
    val_every: int = 1
    log_every: int = 10
    # Add spatial_sparsity * mean spatial attention and temporal_sparsity * mean temporal
    # attention to an ST-ABN's loss: the
    # maps then keep only what the decision needs.
    spatial_sparsity: float = 0.0
    temporal_sparsity: float = 0.0
    max_iters_per_epoch: int = 0  # 0: the whole epoch; >0 shortens epochs for smoke runs
    # Seconds a process waits in a collective (gradient all-reduce, validation counts, barriers)
    # for the others, under torchrun (eval.py too); past it the job ends with one line naming
    # the step, instead of hanging. Longer than any one step, validation's unevenness included.
    collective_timeout: float = 1800.0


@dataclass
class EvalConfig:
    checkpoint: str = "best"  # best | latest | final | a path
    num_clips: int = 1
    num_crops: int = 1
    batch_size: int = 8  # videos per GPU (per process on the CPU)
    # Precision and layout of eval.py. The defaults, fp32 (no TF32) in NCDHW, reproduce the
    # original's evaluation; bf16 and channels_last are faster on a GPU.
    amp: str = "off"  # off | auto | bf16 | fp16
    channels_last: bool = False
    save_scores: bool = False  # scores.npz: each video's averaged scores of both branches
    average: str = "softmax"  # softmax | logits
    save_attention: bool = False
    attention_gif: bool = False
    max_attention_videos: int = 32
    explain_metrics: bool = False
    explain_videos: int = 64
    explain_steps: int = 16
    output: str = "eval"  # sub-folder of the logdir for results


@dataclass
class Config:
    logdir: str = "runs/default"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


# The choices are the ones the code that uses them accepts.
_CHOICES = {
    "data.label_format": FORMATS,
    "data.channel_order": CHANNEL_ORDERS,
    "data.padding": PADDING_MODES,
    "data.jitter": (*JITTER_MODES, "none"),
    "data.flip": FLIP_MODES,
    "train.schedule": SCHEDULES,
    "model.attention.spatial_gate": SPATIAL_GATES,
    "model.attention.fusion": FUSIONS,
    "model.attention.norm": ATTENTION_NORMS,
    "model.attention.temporal": TEMPORAL_SOURCES,
    "train.amp": AMP_SETTINGS,
    "eval.amp": AMP_SETTINGS,
    "eval.average": VIEW_AVERAGES,
}


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


def validate(cfg: Config) -> None:
    for key, choices in _CHOICES.items():
        value = _get(cfg, key)
        if value not in choices:
            raise ConfigError(f"'{key}' must be one of {', '.join(choices)}, got {value!r}")
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
    if (not cfg.model.attention.original or sparsity) and not cfg.model.name.startswith("abn_"):
        raise ConfigError(f"'model.name' {cfg.model.name!r} has no attention branch: model.attention and "
                          "train.spatial_sparsity / temporal_sparsity are ST-ABN options")  # fmt: skip
    if cfg.train.lr <= 0:
        raise ConfigError(f"'train.lr' must be positive, got {cfg.train.lr!r}")
    if cfg.train.nesterov and cfg.train.momentum <= 0:
        raise ConfigError(f"'train.nesterov' needs a positive 'train.momentum', got {cfg.train.momentum!r}")
    if cfg.train.collective_timeout <= 0:
        raise ConfigError(f"'train.collective_timeout' must be positive, got {cfg.train.collective_timeout!r}")
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
    _apply(cfg, parse_overrides(overrides), "", "command line: ", {})
    validate(cfg)
    return cfg


def layered_config(layers: Sequence[Tuple[Mapping[str, Any], str]]) -> Config:
    """Defaults, then each `(values, where)` layer in turn; `where` prefixes its errors."""
    cfg = Config()
    for values, where in layers:
        _apply(cfg, values, "", where, {})
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
