"""JPEG frames to uint8 tensors.

Both backends give the same pixels (libjpeg-turbo with default settings, like the OpenCV
``imread`` of the original). torchvision's decoder is the default, being the faster one
(docs/PERFORMANCE.md, "JPEG decoding"); it deprecated its image codecs in 0.29, and Pillow
is the fallback where they are gone.
"""

from __future__ import annotations

import os
import warnings
from typing import Optional

import numpy as np
import torch
from PIL import Image

from stabn.errors import DataError, PathLike

try:
    from torchvision.io import ImageReadMode
    from torchvision.io import decode_jpeg as _tv_decode_jpeg
except ImportError:
    _tv_decode_jpeg = None


BACKENDS = ("torchvision", "pillow")
DEFAULT_BACKEND = "torchvision" if _tv_decode_jpeg is not None else "pillow"


def read_jpeg(path: PathLike, backend: Optional[str] = None) -> torch.Tensor:
    """Decode the JPEG at `path` to an RGB uint8 tensor ``[3, H, W]`` (grey images are expanded
    to three channels, as OpenCV's ``imread`` does). Both backends return a view of an
    ``[H, W, 3]`` (channels-last) buffer.

    Raises:
        DataError: naming the file, when it is missing, empty, truncated or not a JPEG.
    """
    backend = backend or DEFAULT_BACKEND
    path = os.fspath(path)
    if backend == "torchvision":
        if _tv_decode_jpeg is None:
            raise ValueError("this torchvision has no JPEG decoder; use backend='pillow'")
        try:
            with open(path, "rb") as f:
                data = bytearray(f.read())
        except FileNotFoundError:
            raise DataError(f"missing frame {path}") from None
        except OSError as e:
            raise DataError(f"cannot read frame {path}: {e.strerror or e}") from None
        if not data:
            raise DataError(f"corrupt JPEG {path}: empty file")
        try:
            with warnings.catch_warnings():
                # Its deprecation warning, once per frame, would drown everything else.
                warnings.simplefilter("ignore", DeprecationWarning)
                return _tv_decode_jpeg(torch.frombuffer(data, dtype=torch.uint8), mode=ImageReadMode.RGB)
        except RuntimeError as e:
            # torchvision prefixes the C++ source location: "decode_jpeg, file.cpp:171, reason".
            raise DataError(f"corrupt JPEG {path}: {str(e).rsplit(', ', 1)[-1].strip()}") from None
    if backend == "pillow":
        try:
            with Image.open(path) as img:
                array = np.array(img.convert("RGB"))  # a writable copy, as torch wants
        except FileNotFoundError:
            raise DataError(f"missing frame {path}") from None
        except (OSError, SyntaxError, ValueError) as e:
            raise DataError(f"corrupt JPEG {path}: {e}") from None
        return torch.from_numpy(array).permute(2, 0, 1)
    raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
