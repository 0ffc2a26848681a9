"""stabn: Spatio-Temporal Attention Branch Network (ST-ABN) for video classification.

The public names below load on first use, so that `import stabn.config` (or any one module)
imports only what that module needs, not the model zoo and the engine.
"""

from __future__ import annotations

import importlib
from typing import Any, List

from stabn.version import __version__

# Public name -> the module that defines it.
_PUBLIC = {
    "MODEL_NAMES": "stabn.models",
    "ModelSpec": "stabn.models",
    "STABNOutput": "stabn.models",
    "build_model": "stabn.models",
    "list_models": "stabn.models",
    "load_pretrained": "stabn.models",
    "load_clip": "stabn.data",
    "predict": "stabn.inference",
    "explain": "stabn.inference",
    "Prediction": "stabn.inference",
    "Explanation": "stabn.inference",
    "export": "stabn.exporter",
    "exported_spec": "stabn.exporter",
}

__all__ = [*_PUBLIC, "__version__"]


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'stabn' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> List[str]:
    return sorted({*globals(), *_PUBLIC})
