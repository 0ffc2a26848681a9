"""Explainers for the explanation benchmark: each takes a model, one normalised clip
``[3, T, S, S]`` and the class to explain, and gives a non-negative space-time saliency volume
``V [T, S, S]`` at the clip's resolution and a temporal profile ``p [T]`` (None where the
explainer says nothing about time; by default ``p[t] = V[t].sum()``).

ST-ABN's own explanations (`stabn_attention`, `attention_class_map`) need only the forward
pass. The peer explainers (`gradcam`, `input_gradient`, `smoothgrad`, `integrated_gradients`)
use Captum, an optional extra (``pip install -e .[explain]``), imported only when one of them
runs; `require_captum` says so in one line when it is missing. `random_explainer` and
`centre_prior` are the floors any explainer should beat, and `uniform_in_time` the floor of
the temporal figures: the centre prior with a flat temporal profile.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stabn.checkpoint import unwrap_model
from stabn.errors import ConfigError, StabnError
from stabn.interpret.scoring import saliency_volume
from stabn.models import STABNOutput

Explanation = Tuple[Tensor, Optional[Tensor]]  # (V [T, S, S], p [T] or None)

CAPTUM_MESSAGE = "Captum is needed for the peer explainers: pip install -e .[explain]"
SMOOTHGRAD_STDEV = 0.15  # of the clip's value range, as SmoothGrad's paper recommends (10-20%)


class CaptumMissing(StabnError):
    """Captum, which the peer explainers use, is not installed."""


def require_captum() -> Any:
    """Captum's `captum.attr` module; `CaptumMissing` when Captum cannot be imported."""
    try:
        import captum.attr
    except ImportError:
        raise CaptumMissing(CAPTUM_MESSAGE) from None
    return captum.attr


def logits_of(model: nn.Module) -> Callable[[Tensor], Tensor]:
    """The perception branch's logits as a function of a batch of clips (an ST-ABN returns
    `STABNOutput`, a 3D ResNet its logits)."""

    def forward(x: Tensor) -> Tensor:
        out = model(x)
        return out.logits if isinstance(out, STABNOutput) else out

    return forward


def default_profile(volume: Tensor) -> Tensor:
    """The temporal profile of a volume: each frame's mass, ``p[t] = V[t].sum()``."""
    return volume.sum(dim=(1, 2))


def upsample_volume(maps: Tensor, frames: int, size: int) -> Tensor:
    """A map ``[T', h, w]`` at the clip's resolution ``[frames, size, size]``: linear in time
    where T' differs from `frames` (an identity where it does not), bilinear in space."""
    volume = maps.detach().float().reshape(1, 1, *maps.shape[-3:])
    return F.interpolate(volume, size=(frames, size, size), mode="trilinear", align_corners=False)[0, 0]


def _batch(clip: Tensor, grad: bool = False) -> Tensor:
    """`clip` as a batch of one (a leaf that requires grad where `grad`, for Captum)."""
    if clip.dim() != 4 or clip.shape[0] != 3:
        raise ValueError(f"expected a clip [3, T, S, S], got {list(clip.shape)}")
    x = clip.detach().unsqueeze(0)
    return x.clone().requires_grad_() if grad else x


def _volume_of(attributions: Tensor) -> Explanation:
    """Input attributions ``[1, 3, T, S, S]`` as a volume: absolute values summed over channels."""
    volume = attributions.detach().float()[0].abs().sum(dim=0)
    return volume, default_profile(volume)


# --------------------------------------------------------------------------- ST-ABN's own


@torch.no_grad()
def stabn_attention(model: nn.Module, clip: Tensor, target: int) -> Explanation:
    """ST-ABN's spatial attention, upsampled to the clip and scaled by each frame's temporal
    attention (`saliency_volume`); the profile is the temporal attention itself. `target` is
    unused: the attention maps are the same for every class."""
    del target
    out = model(_batch(clip))
    if not isinstance(out, STABNOutput):
        raise ConfigError(f"{type(unwrap_model(model)).__name__} is not an ST-ABN: its forward gives no attention")
    size = tuple(clip.shape[-2:])
    volume = saliency_volume(out.spatial_attention[0], out.temporal_attention[0], size)
    return volume, out.temporal_attention[0].detach().float().flatten()


@torch.no_grad()
def attention_class_map(model: nn.Module, clip: Tensor, target: int) -> Explanation:
    """The attention branch's response map of class `target`: channel `target` of
    `conv_att_common`'s output ``[B, K, T, h, w]`` (after its ReLU), upsampled to the clip."""
    module = getattr(unwrap_model(model), "conv_att_common", None)
    if module is None:
        raise ConfigError(f"{type(unwrap_model(model)).__name__} has no conv_att_common: not an ST-ABN")
    captured = []
    handle = module.register_forward_hook(lambda m, i, out: captured.append(out[0, target].detach().clone()))
    try:
        model(_batch(clip))
    finally:
        handle.remove()
    volume = upsample_volume(captured[0], clip.shape[1], clip.shape[-1])
    return volume, default_profile(volume)


# --------------------------------------------------------------------------- peers (Captum)


def layer_of(model: nn.Module, name: str) -> nn.Module:
    """The submodule `name` of `model` (wrappers looked through); ConfigError if none."""
    try:
        return unwrap_model(model).get_submodule(name)
    except AttributeError:
        raise ConfigError(f"{type(unwrap_model(model)).__name__} has no layer {name!r}") from None


def gradcam(model: nn.Module, clip: Tensor, target: int, layer: str) -> Explanation:
    """Grad-CAM of the perception logit of `target` at the output of `layer` (Captum's
    `LayerGradCam`, its gradients averaged over time and space, ReLU on the result),
    upsampled to the clip."""
    attr = require_captum()
    cam = attr.LayerGradCam(logits_of(model), layer_of(model, layer))
    with torch.enable_grad():
        maps = cam.attribute(_batch(clip, grad=True), target=target, relu_attributions=True)
    volume = upsample_volume(maps[0, 0], clip.shape[1], clip.shape[-1]).clamp_min(0)
    return volume, default_profile(volume)


def input_gradient(model: nn.Module, clip: Tensor, target: int) -> Explanation:
    """The absolute gradient of the perception logit of `target` with respect to the input
    (Captum's `Saliency`), summed over the three channels."""
    attr = require_captum()
    with torch.enable_grad():
        grads = attr.Saliency(logits_of(model)).attribute(_batch(clip, grad=True), target=target, abs=True)
    return _volume_of(grads)


@contextlib.contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Torch's global generators (the CPU's and `device`'s) seeded inside the block, restored after."""
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def smoothgrad(
    model: nn.Module,
    clip: Tensor,
    target: int,
    samples: int = 8,
    seed: int = 0,
    batch_size: Optional[int] = None,
    stdev: float = SMOOTHGRAD_STDEV,
) -> Explanation:
    """SmoothGrad: `Saliency` averaged over `samples` copies of the clip with Gaussian noise of
    standard deviation ``stdev * (max - min)`` of the clip (Captum's `NoiseTunnel`), the noise
    drawn from `seed`; `batch_size` noisy clips a pass at most."""
    attr = require_captum()
    x = _batch(clip, grad=True)
    tunnel = attr.NoiseTunnel(attr.Saliency(logits_of(model)))
    spread = stdev * float(clip.max() - clip.min())
    with seeded(seed, x.device), torch.enable_grad():
        grads = tunnel.attribute(
            x, nt_type="smoothgrad", nt_samples=samples, nt_samples_batch_size=batch_size, stdevs=spread,
            target=target, abs=True,
        )  # fmt: skip
    return _volume_of(grads)


def integrated_gradients(
    model: nn.Module, clip: Tensor, target: int, steps: int = 16, batch_size: Optional[int] = None
) -> Explanation:
    """Integrated Gradients from an all-zero clip (the dataset mean, as deletion uses) in
    `steps` steps (Captum's `IntegratedGradients`), absolute values summed over channels;
    `batch_size` interpolated clips a pass at most."""
    attr = require_captum()
    x = _batch(clip, grad=True)
    with torch.enable_grad():
        ig = attr.IntegratedGradients(logits_of(model))
        attributions = ig.attribute(
            x, baselines=torch.zeros_like(x.detach()), target=target, n_steps=steps, internal_batch_size=batch_size
        )
    return _volume_of(attributions)


# --------------------------------------------------------------------------- floors


def random_explainer(clip: Tensor, rng: np.random.Generator) -> Explanation:
    """A uniformly random volume and an independent uniformly random profile, from `rng`."""
    _, t, h, w = clip.shape
    volume = torch.from_numpy(rng.random((t, h, w), dtype=np.float32))
    profile = torch.from_numpy(rng.random(t, dtype=np.float32))
    return volume, profile


def centre_prior(clip: Tensor) -> Explanation:
    """An isotropic Gaussian at the clip's centre (sigma: a quarter of its side), the same in
    every frame; no temporal profile (it says nothing about when)."""
    _, t, h, w = clip.shape
    sigma = w / 4
    ys = torch.arange(h, dtype=torch.float32) + 0.5 - h / 2
    xs = torch.arange(w, dtype=torch.float32) + 0.5 - w / 2
    image = torch.exp(-(ys[:, None] ** 2 + xs[None, :] ** 2) / (2 * sigma**2))
    return image.expand(t, h, w).clone(), None


def uniform_in_time(clip: Tensor) -> Explanation:
    """`centre_prior`'s volume, the same in every frame, with its flat profile (each frame's
    equal mass): what an explainer that knows nothing about when scores on the temporal
    figures."""
    volume, _ = centre_prior(clip)
    return volume, default_profile(volume)
