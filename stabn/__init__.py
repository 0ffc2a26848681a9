"""stabn: Spatio-Temporal Attention Branch Network (ST-ABN) for video classification."""

from .data import load_clip
from .inference import Explanation, Prediction, explain, predict
from .models import MODEL_NAMES, ModelSpec, STABNOutput, build_model, list_models, load_pretrained
from .version import __version__

__all__ = [
    "MODEL_NAMES",
    "ModelSpec",
    "STABNOutput",
    "build_model",
    "list_models",
    "load_pretrained",
    "load_clip",
    "predict",
    "explain",
    "Prediction",
    "Explanation",
    "__version__",
]
