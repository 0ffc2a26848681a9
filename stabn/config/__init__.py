"""The run configuration: its schema (typed dataclasses and their choices) and its loading."""

from stabn.config.loading import (
    config_from_dict,
    flat_config,
    layered_config,
    load_config,
    parse_overrides,
    read_yaml,
    save_config,
    validate,
)
from stabn.config.schema import Config, DataConfig, EvalConfig, ModelConfig, TrainConfig

__all__ = [
    "Config",
    "DataConfig",
    "EvalConfig",
    "ModelConfig",
    "TrainConfig",
    "config_from_dict",
    "flat_config",
    "layered_config",
    "load_config",
    "parse_overrides",
    "read_yaml",
    "save_config",
    "validate",
]
