"""Model zoo: the 3D ResNet baseline, ST-ABN, the registry and 2D->3D inflation."""
from .blocks import to_channels_last_3d
from .inflate import InflationReport, inflate_2d_weights
from .registry import MODEL_NAMES, MODEL_REGISTRY, build_model, is_stabn
from .resnet3d import ResNet3D
from .stabn import STABN, STABNOutput

__all__ = [
    "MODEL_NAMES", "MODEL_REGISTRY", "build_model", "is_stabn", "InflationReport",
    "inflate_2d_weights", "ResNet3D", "STABN", "STABNOutput", "to_channels_last_3d",
]
