"""stabn: Spatio-Temporal Attention Branch Network (ST-ABN) for video classification."""
from .checkpoint import load_pretrained
from .data import load_clip
from .inference import Explanation, Prediction, explain, predict
from .models import MODEL_NAMES, STABNOutput, build_model
from .version import __version__

__all__ = [
    "MODEL_NAMES", "STABNOutput", "build_model", "load_pretrained", "load_clip", "predict",
    "explain", "Prediction", "Explanation", "__version__",
]
