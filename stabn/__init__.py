"""stabn: Spatio-Temporal Attention Branch Network (ST-ABN) for video classification."""
from .checkpoint import load_pretrained
from .models import MODEL_NAMES, STABNOutput, build_model
from .version import __version__

__all__ = ["MODEL_NAMES", "STABNOutput", "build_model", "load_pretrained", "__version__"]
