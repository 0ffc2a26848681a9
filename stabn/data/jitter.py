"""The original's colour jitter, as one affine map per frame.

The jitter (``GroupColorJitter`` of the original, from TPN/mmaction) works on float BGR pixels
in [0, 255] without clipping, in this order, each step with probability ``p``: brightness
``+delta``; contrast ``*alpha``; saturation, a blend with the grey ``0.299 c0 + 0.587 c1 +
0.114 c2``; hue, a rotation of the chroma plane of YIQ by ``alpha * pi``; then always PCA
lighting noise. Every step is affine, so one frame's jitter is a single 3x3 matrix and offset:
`draw_jitter_params` draws the parameters and `bgr_jitter_affine` composes them; the float
side of `stabn.data.transforms` applies them batched, in either channel order.

Quirks kept from the original, which jitters BGR frames with formulas written for RGB: the grey
and YIQ weights are applied in array order (0.299 to blue), and the hue angle is ``alpha *
pi`` with ``alpha ~ U(-18, 18)``, which in effect is a uniformly random rotation. The lighting
noise, computed in RGB, is reversed onto BGR correctly. The original applied contrast either
before or after saturation and hue at random; a gain commutes with linear maps, so that order
makes no difference and is not drawn.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Optional, Tuple

import numpy as np
import torch

from stabn.config.schema import JITTER_MODES

# ImageNet PCA of RGB pixels in [0, 255] (AlexNet lighting noise), as in the original.
EIGVAL = np.array([55.46, 4.794, 1.148])
EIGVEC = np.array([[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]])
GREY = np.array([0.299, 0.587, 0.114])
RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.321], [0.211, -0.523, 0.311]])
YIQ_TO_RGB = np.array([[1.0, 0.956, 0.621], [1.0, -0.272, -0.647], [1.0, -1.107, 1.705]])


@dataclass(frozen=True)
class JitterConfig:
    """TPN-style colour jitter; the defaults are the original's.

    Args:
        mode: ``"tpn"`` decides each step's application independently per frame, as the
            original; ``"clip"`` decides once per clip, so the jitter is consistent over time.
            The magnitudes (delta, alphas, lighting) are drawn once per clip in both modes.
        p: probability of each of brightness, contrast, saturation and hue.
        brightness: delta ~ U(-brightness, brightness), added.
        contrast: gain ~ U(*contrast).
        saturation: alpha ~ U(*saturation); ``alpha * x + (1 - alpha) * grey``.
        hue: alpha ~ U(-hue, hue); the chroma rotation angle is ``alpha * pi`` radians.
        lighting_std: std of the PCA lighting coefficients (always applied).

    The channel order of the output is `normalize_batch`'s ``channel_order``; the jitter is the
    same augmentation of the same colours in either order.
    """

    mode: str = "tpn"
    p: float = 0.5
    brightness: float = 32.0
    contrast: Tuple[float, float] = (0.6, 1.4)
    saturation: Tuple[float, float] = (0.6, 1.4)
    hue: float = 18.0
    lighting_std: float = 0.1

    def __post_init__(self) -> None:
        if self.mode not in JITTER_MODES:
            raise ValueError(f"mode must be one of {JITTER_MODES}, got {self.mode!r}")
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {self.p}")


class JitterParams(NamedTuple):
    """Drawn jitter for a batch of B clips of T frames (float64 / bool CPU tensors)."""

    brightness: torch.Tensor  # [B] delta
    contrast: torch.Tensor  # [B] gain
    saturation: torch.Tensor  # [B] alpha
    hue: torch.Tensor  # [B] alpha (angle alpha * pi)
    lighting: torch.Tensor  # [B, 3] PCA coefficients
    gates: torch.Tensor  # [B, T, 4] bool: brightness, contrast, saturation, hue applied to frame t


def draw_jitter_params(
    batch_size: int, num_frames: int, config: JitterConfig = JitterConfig(), generator: Optional[torch.Generator] = None
) -> JitterParams:
    """Draw the jitter of `batch_size` clips on the CPU, from `generator` (a CPU generator;
    the global one when None), so the draw does not depend on the training device."""

    def uniform(low: float, high: float, *shape: int) -> torch.Tensor:
        return torch.rand(shape, generator=generator, dtype=torch.float64) * (high - low) + low

    b = batch_size
    brightness = uniform(-config.brightness, config.brightness, b)
    contrast = uniform(*config.contrast, b)
    saturation = uniform(*config.saturation, b)
    hue = uniform(-config.hue, config.hue, b)
    lighting = torch.randn((b, 3), generator=generator, dtype=torch.float64) * config.lighting_std
    gate_frames = num_frames if config.mode == "tpn" else 1
    gates = torch.rand((b, gate_frames, 4), generator=generator, dtype=torch.float64) < config.p
    return JitterParams(brightness, contrast, saturation, hue, lighting, gates.expand(b, num_frames, 4).contiguous())


def _hue_matrix(alpha: torch.Tensor) -> torch.Tensor:
    """[..., 3, 3] chroma rotations by ``alpha * pi`` in YIQ, in the original's array order."""
    angle = alpha * np.pi
    cos, sin = torch.cos(angle), torch.sin(angle)
    rot = torch.zeros(alpha.shape + (3, 3), dtype=torch.float64)
    rot[..., 0, 0] = 1.0
    rot[..., 1, 1], rot[..., 1, 2] = cos, -sin
    rot[..., 2, 1], rot[..., 2, 2] = sin, cos
    return torch.from_numpy(YIQ_TO_RGB) @ rot @ torch.from_numpy(RGB_TO_YIQ)


def bgr_jitter_affine(params: JitterParams) -> Tuple[torch.Tensor, torch.Tensor]:
    """The jitter of each frame as ``x -> A @ x + b`` on its BGR pixels: ``A [B, T, 3, 3]`` and
    ``b [B, T, 3]`` (float64)."""
    gates = params.gates.to(torch.float64)
    eye = torch.eye(3, dtype=torch.float64)

    def gated(matrix: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        # matrix [B, 3, 3] where the gate is on, identity where it is off: [B, T, 3, 3]
        g = gate[..., None, None]
        return g * matrix[:, None] + (1.0 - g) * eye

    s = params.saturation[:, None, None]
    saturation = s * eye + (1.0 - s) * torch.from_numpy(GREY).expand(3, 3)
    gain = 1.0 + gates[..., 1] * (params.contrast[:, None] - 1.0)
    a = gain[..., None, None] * (gated(_hue_matrix(params.hue), gates[..., 3]) @ gated(saturation, gates[..., 2]))
    # The brightness delta is added before the linear steps, so it goes through them.
    delta = gates[..., 0] * params.brightness[:, None]
    lighting_rgb = (torch.from_numpy(EIGVEC) * params.lighting[:, None, :]) @ torch.from_numpy(EIGVAL)
    return a, delta[..., None] * a.sum(-1) + lighting_rgb.flip(-1)[:, None, :]
