"""The explanation methods behind `stabn.explain`, the demo and eval.py's pictures: which one
applies to a model, its defaults, and a peer method's maps as the pictures show them."""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
from torch import Tensor, nn

from stabn.config.schema import EXPLAIN_METHODS
from stabn.errors import ConfigError, StabnError
from stabn.interpret import saliency
from stabn.interpret.visualize import scale_to_peak
from stabn.models import is_stabn, model_spec

IG_STEPS = 16  # Integrated Gradients' steps, as the explanation benchmark takes them


PEER_METHODS = tuple(m for m in EXPLAIN_METHODS if m != "attention")  # Captum's, for every model


class MethodError(StabnError, ValueError):
    """An explanation method, layer or target that does not apply to the model: a ValueError
    in a notebook, one `error:` line in a command."""


def default_method(model: nn.Module) -> str:
    """ST-ABN's own attention for an ST-ABN, Grad-CAM for a 3D ResNet."""
    return "attention" if is_stabn(model) else "gradcam"


def default_layer(model: nn.Module) -> str:
    """Grad-CAM's layer where none is named: the one that points best in the explanation
    benchmark (docs/EXPLANATIONS.md): an ST-ABN's layer3, the features its attention branch
    reads; a 3D ResNet's layer4."""
    return "layer3" if is_stabn(model) else "layer4"


def resolve_method(model: nn.Module, method: Optional[str], layer: Optional[str]) -> Tuple[str, Optional[str]]:
    """The method (default: `default_method`) and Grad-CAM layer (default: `default_layer`;
    None for the other methods) that explain `model`; MethodError for one that does not apply."""
    method = default_method(model) if method is None else method
    if method not in EXPLAIN_METHODS:
        raise MethodError(f"method must be one of {', '.join(EXPLAIN_METHODS)}, got {method!r}")
    if method == "attention" and not is_stabn(model):
        raise MethodError(
            f"method 'attention' needs an ST-ABN model (abn_resnet*): {model_spec(model).name} has no attention "
            f"branch; give method one of {', '.join(PEER_METHODS)}"
        )
    if method != "gradcam":
        if layer is not None:
            raise MethodError(f"layer {layer!r} is Grad-CAM's layer: it does not apply to method {method!r}")
        return method, None
    layer = default_layer(model) if layer is None else layer
    try:
        saliency.layer_of(model, layer)
    except ConfigError:
        raise MethodError(
            f"{model_spec(model).name} has no layer {layer!r} for Grad-CAM: give a submodule's name, e.g. layer3 "
            "or layer4"
        ) from None
    return method, layer


def method_label(method: str, layer: Optional[str] = None, steps: int = IG_STEPS) -> str:
    """The method in words, for pictures and printouts."""
    labels = {
        "attention": "ST-ABN attention",
        "gradcam": f"Grad-CAM at {layer}",
        "input_gradient": "input gradient",
        "integrated_gradients": f"Integrated Gradients ({steps} steps)",
    }
    return labels[method]


def peer_maps(
    model: nn.Module, clip: Tensor, method: str, target: int, *, layer: Optional[str] = None, steps: int = IG_STEPS
) -> Tuple[np.ndarray, np.ndarray]:
    """A peer method's saliency of class `target` for a normalised clip [3, T, S, S], as the
    pictures show it: the volume [T, S, S] scaled to the clip's maximum and each frame's mass
    [T] scaled to the largest (`scale_to_peak`), both in [0, 1]."""
    clip = clip.to(next(model.parameters()).device)
    run = {
        "gradcam": lambda: saliency.gradcam(model, clip, target, layer),
        "input_gradient": lambda: saliency.input_gradient(model, clip, target),
        # One interpolated clip a pass: memory holds one clip's activations whatever `steps`.
        "integrated_gradients": lambda: saliency.integrated_gradients(model, clip, target, steps, batch_size=1),
    }
    volume, profile = run[method]()
    return scale_to_peak(volume.float().cpu().numpy()), scale_to_peak(profile.float().cpu().numpy())
