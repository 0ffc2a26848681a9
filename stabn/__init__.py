"""stabn: Spatio-Temporal Attention Branch Network (ST-ABN) for video classification."""
from .models import MODEL_NAMES, STABNOutput, build_model
from .version import __version__

__all__ = ["MODEL_NAMES", "STABNOutput", "build_model", "__version__"]
