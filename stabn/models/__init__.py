"""Model zoo: the 3D ResNet baseline, ST-ABN, their specs, the registry, 2D->3D inflation and
loading from checkpoints."""

from .blocks import to_channels_last_3d
from .inflate import InflationReport, inflate_2d_weights
from .pretrained import infer_architecture, load_pretrained, resolve_spec
from .registry import MODEL_NAMES, MODEL_REGISTRY, build_model, is_stabn, list_models
from .resnet3d import ResNet3D
from .spec import DEFAULT_FRAME_LENGTH, DEFAULT_FRAME_SIZE, ModelSpec, model_spec
from .stabn import STABN, STABNOutput

__all__ = [
    "MODEL_NAMES",
    "MODEL_REGISTRY",
    "build_model",
    "list_models",
    "is_stabn",
    "InflationReport",
    "inflate_2d_weights",
    "ResNet3D",
    "STABN",
    "STABNOutput",
    "to_channels_last_3d",
    "ModelSpec",
    "model_spec",
    "DEFAULT_FRAME_LENGTH",
    "DEFAULT_FRAME_SIZE",
    "load_pretrained",
    "resolve_spec",
    "infer_architecture",
]
