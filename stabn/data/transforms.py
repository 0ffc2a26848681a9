"""Clip transforms, split where the data changes hands.

In the loader workers everything stays uint8 and RGB, as decoded: each decoded frame is cropped
(no resize) and flipped (`orient_crops`) as it is copied into the clip. On the training device,
`normalize_batch` turns a uint8 RGB batch into the normalised float batch in the model's channel
order (``"bgr"`` as the original, which decoded with OpenCV, or ``"rgb"``), with the TPN-style
colour jitter of the original for training. The channel order costs nothing there: the float
conversion reads each output plane from whichever input channel it needs, and the jitter's
3x3 matrix absorbs the permutation; in the workers, reordering interleaved bytes would cost
several times the copy of the crop.

The jitter (``GroupColorJitter`` of the original, from TPN/mmaction) works on float pixels in
[0, 255] without clipping, in this order, each step with probability ``p``: brightness
``+delta``; contrast ``*alpha``; saturation, a blend with the grey ``0.299 c0 + 0.587 c1 +
0.114 c2``; hue, a rotation of the chroma plane of YIQ by ``alpha * pi``; then always PCA
lighting noise. Every step is affine, so one frame's jitter followed by the normalisation is a
single 3x3 matrix and offset per frame: `draw_jitter_params` draws the parameters,
`jitter_affine` composes them, and `normalize_batch` applies them to all frames at once with a
batched matmul (no HSV round trip, no per-frame Python). `reference_normalize_clip` is the
step-by-step version, frame by frame like the original, that tests compare it with.

Quirks kept from the original, which jitters BGR frames with formulas written for RGB: the grey
and YIQ weights are applied in array order (0.299 to blue), and the hue angle is ``alpha *
pi`` with ``alpha ~ U(-18, 18)``, which in effect is a uniformly random rotation. The lighting
noise, computed in RGB, is reversed onto BGR correctly. The jitter is defined on BGR whatever
the output order: with ``channel_order="rgb"`` the same augmentation is applied to the same
colours, and the output equals the BGR one with its channels reversed. The original applied
contrast either before or after saturation and hue at random; a gain commutes with linear maps,
so that order makes no difference and is not drawn.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch

from stabn.config.schema import CHANNEL_ORDERS, FLIP_MODES, JITTER_MODES

BGR_MEAN = (103.53, 116.28, 123.675)
BGR_STD = (57.375, 57.12, 58.395)
_TILE_BYTES = 4 << 20  # the jitter's float tile: small enough to stay in cache, big enough for the matmul

# ImageNet PCA of RGB pixels in [0, 255] (AlexNet lighting noise), as in the original.
_EIGVAL = np.array([55.46, 4.794, 1.148])
_EIGVEC = np.array([[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]])
_GREY = np.array([0.299, 0.587, 0.114])
_RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.321], [0.211, -0.523, 0.311]])
_YIQ_TO_RGB = np.array([[1.0, 0.956, 0.621], [1.0, -0.272, -0.647], [1.0, -1.107, 1.705]])


def _check_channel_order(channel_order: str) -> None:
    if channel_order not in CHANNEL_ORDERS:
        raise ValueError(f"channel_order must be one of {CHANNEL_ORDERS}, got {channel_order!r}")


def _input_channels(channel_order: str) -> Tuple[int, int, int]:
    """For each channel of the output in `channel_order`, the RGB input channel it comes from."""
    _check_channel_order(channel_order)
    return (2, 1, 0) if channel_order == "bgr" else (0, 1, 2)


def mean_std(channel_order: str = "bgr") -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
    """The original's normalisation constants in `channel_order`."""
    _check_channel_order(channel_order)
    if channel_order == "bgr":
        return BGR_MEAN, BGR_STD
    return BGR_MEAN[::-1], BGR_STD[::-1]


# ---------------------------------------------------------------------------------------------
# uint8 side: crop positions and flips


def center_crop_offset(height: int, width: int, size: int) -> Tuple[int, int]:
    """Top-left ``(y, x)`` of the original's centre crop: ``int(H / 2 - S / 2)``."""
    return int(height / 2 - size / 2), int(width / 2 - size / 2)


def random_crop_offset(height: int, width: int, size: int, rng: np.random.Generator) -> Tuple[int, int]:
    """Top-left ``(y, x)`` of a uniformly random ``size x size`` crop (y drawn first)."""
    y = int(rng.integers(0, height - size + 1))
    x = int(rng.integers(0, width - size + 1))
    return y, x


def crop_offsets(height: int, width: int, size: int, num_crops: int = 1) -> List[Tuple[int, int]]:
    """Evaluation crops: 1 is the centre crop; 3 are the start, the centre and the end of the
    longer side (the width when square), centred on the other."""
    cy, cx = center_crop_offset(height, width, size)
    if num_crops == 1:
        return [(cy, cx)]
    if num_crops == 3:
        if height > width:
            return [(0, cx), (cy, cx), (height - size, cx)]
        return [(cy, 0), (cy, cx), (cy, width - size)]
    raise ValueError(f"num_crops must be 1 or 3, got {num_crops}")


def orient_crops(crops: torch.Tensor, flip: str = "none") -> torch.Tensor:
    """Flip RGB crops ``[..., H, W, 3]`` (channels-last, as decoded) as `flip` says; returns
    `crops` itself when there is nothing to do. The channels stay in RGB order: `normalize_batch`
    puts them in the model's order for free as it converts to float.

    Clips stay channels-last: shuffling interleaved bytes into planes costs more than the
    crop's copy (docs/PERFORMANCE.md, "Loader"), while `normalize_batch` transposes for free
    as it converts to float. Applied frame by frame, the temporaries stay small and in cache.
    """
    if flip not in FLIP_MODES:
        raise ValueError(f"flip must be one of {FLIP_MODES}, got {flip!r}")
    if flip == "horizontal":
        return crops.flip(-2)
    if flip == "vertical":
        return crops.flip(-3)
    return crops


# ---------------------------------------------------------------------------------------------
# float side: jitter parameters, their affine form, and the batched normalisation


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
    return torch.from_numpy(_YIQ_TO_RGB) @ rot @ torch.from_numpy(_RGB_TO_YIQ)


def jitter_affine(params: JitterParams, channel_order: str = "bgr") -> Tuple[torch.Tensor, torch.Tensor]:
    """The jitter of each frame as ``x -> A @ x + b`` on its pixels: ``A [B, T, 3, 3]`` and
    ``b [B, T, 3]`` (float64), with ``x`` and the result in `channel_order`."""
    _check_channel_order(channel_order)
    gates = params.gates.to(torch.float64)
    eye = torch.eye(3, dtype=torch.float64)

    def gated(matrix: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        # matrix [B, 3, 3] where the gate is on, identity where it is off: [B, T, 3, 3]
        g = gate[..., None, None]
        return g * matrix[:, None] + (1.0 - g) * eye

    s = params.saturation[:, None, None]
    saturation = s * eye + (1.0 - s) * torch.from_numpy(_GREY).expand(3, 3)
    gain = 1.0 + gates[..., 1] * (params.contrast[:, None] - 1.0)
    a = gain[..., None, None] * (gated(_hue_matrix(params.hue), gates[..., 3]) @ gated(saturation, gates[..., 2]))
    # The brightness delta is added before the linear steps, so it goes through them.
    delta = gates[..., 0] * params.brightness[:, None]
    lighting_rgb = (torch.from_numpy(_EIGVEC) * params.lighting[:, None, :]) @ torch.from_numpy(_EIGVAL)
    b = delta[..., None] * a.sum(-1) + lighting_rgb.flip(-1)[:, None, :]
    if channel_order == "rgb":
        a, b = a.flip(-1, -2), b.flip(-1)
    return a, b


def _channel_tensor(values: Sequence[float], name: str) -> torch.Tensor:
    t = torch.as_tensor(values, dtype=torch.float64).flatten()
    if t.numel() != 3:
        raise ValueError(f"{name} must have 3 values, got {t.numel()}")
    return t


def normalize_batch(
    x: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    jitter: Optional[JitterConfig] = None,
    generator: Optional[torch.Generator] = None,
    *,
    channel_order: str = "bgr",
    params: Optional[JitterParams] = None,
    out: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """RGB uint8 clips ``[..., 3, T, H, W]`` to normalised float32 ``(x' - mean) / std`` in
    `channel_order`, where ``x'`` is `x` in that order, colour-jittered when `jitter` is given.
    Runs on `x`'s device.

    Args:
        x: uint8 RGB batch, as the dataset makes it, with any number of leading dims
            (``[B, 3, T, H, W]`` or ``[B, V, 3, T, H, W]``); channels-last in memory or not.
        mean, std: per channel, in `channel_order`.
        jitter: the colour jitter to apply, or None for evaluation.
        generator: CPU generator the jitter is drawn from (`draw_jitter_params`).
        channel_order: the channel order of the output, ``"bgr"`` (the original's) or ``"rgb"``.
            Reordering costs nothing: each output plane is read from its input channel, and the
            jitter's matrix absorbs the permutation.
        params: jitter already drawn for the flattened leading dims (then `generator` is unused).
        out: float32 tensor shaped like `x` on its device to write into; reusing one across
            steps saves allocating (and, on the CPU, page-faulting) a new batch each time.
    """
    if x.dtype != torch.uint8 or x.dim() < 4 or x.shape[-4] != 3:
        raise ValueError(f"x must be uint8 [..., 3, T, H, W], got {x.dtype} {tuple(x.shape)}")
    source = _input_channels(channel_order)
    if params is not None and jitter is None:
        raise ValueError("params given without a jitter config")
    mean_t, std_t = _channel_tensor(mean, "mean"), _channel_tensor(std, "std")
    if out is None:
        out = torch.empty(x.shape, dtype=torch.float32, device=x.device)
    elif out.shape != x.shape or out.dtype != torch.float32 or out.device != x.device or not out.is_contiguous():
        raise ValueError(f"out must be a contiguous float32 tensor of shape {tuple(x.shape)} on {x.device}")
    t, h, w = x.shape[-3:]
    xb = x.reshape(-1, 3, t, h, w)
    ob = out.view(-1, 3, t, h, w)
    # The copies from `xb` convert to float and, for channels-last clips, transpose on the way.
    if jitter is None:
        scale, shift = (1.0 / std_t).tolist(), (-mean_t / std_t).tolist()
        # One (clip, channel) plane at a time, so it is still in cache for the second pass;
        # output plane c is read from input channel source[c].
        for i in range(xb.shape[0]):
            for c, k in enumerate(source):
                plane = ob[i, c].copy_(xb[i, k])
                torch.add(torch.tensor(shift[c]), plane, alpha=scale[c], out=plane)
        return out

    if params is None:
        params = draw_jitter_params(xb.shape[0], t, jitter, generator)
    elif params.gates.shape[:2] != (xb.shape[0], t):
        raise ValueError(
            f"params are for {tuple(params.gates.shape[:2])} clips x frames, the batch has {(xb.shape[0], t)}"
        )
    a, b = jitter_affine(params, channel_order)
    # `a` maps pixels in `channel_order` to `channel_order`; on RGB input it is ``a @ P`` with
    # P the permutation from RGB to that order: its columns taken in `source` order. Fold that
    # and the normalisation into the affine map, then apply it as one batched matmul over the
    # frames of a tile of rows, whose float copy stays in cache for the matmul.
    a = a[..., list(source)] if source != (0, 1, 2) else a
    a = (a / std_t[:, None]).to(device=x.device, dtype=torch.float32)
    b = ((b - mean_t) / std_t).to(device=x.device, dtype=torch.float32).unsqueeze(-1)
    rows = max(1, min(h, _TILE_BYTES // (3 * t * w * 4)))
    pixels = torch.empty((3, t, rows, w), dtype=torch.float32, device=x.device)
    for i in range(xb.shape[0]):
        for top in range(0, h, rows):
            n = min(rows, h - top)
            tile = pixels[:, :, :n].copy_(xb[i, :, :, top : top + n])
            torch.baddbmm(
                b[i],
                a[i],
                tile.view(3, t, n * w).transpose(0, 1),
                out=ob[i, :, :, top : top + n].view(3, t, n * w).transpose(0, 1),
            )
    return out


def denormalize(
    clip: torch.Tensor, mean: Sequence[float], std: Sequence[float], channel_order: str = "bgr"
) -> np.ndarray:
    """A normalised clip [3, T, H, W] back to uint8 RGB frames [T, H, W, 3]."""
    m = torch.as_tensor(mean, dtype=torch.float32).view(3, 1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32).view(3, 1, 1, 1)
    pixels = (clip.detach().float().cpu() * s + m).clamp(0, 255).round().to(torch.uint8)
    if channel_order == "bgr":
        pixels = pixels.flip(0)
    return pixels.permute(1, 2, 3, 0).numpy()


def reference_normalize_clip(
    clip: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    jitter: Optional[JitterConfig] = None,
    params: Optional[JitterParams] = None,
    index: int = 0,
    *,
    channel_order: str = "bgr",
) -> torch.Tensor:
    """Step-by-step version of `normalize_batch` for one RGB uint8 clip ``[3, T, H, W]``, frame
    by frame in float32 as the original's ``GroupColorJitter`` and ``_normalize`` did on its
    BGR arrays, with the jitter drawn for clip `index` of `params`; the result is in
    `channel_order` (`mean` and `std` too). Slow; it is the reference tests compare with."""
    _check_channel_order(channel_order)
    rgb = clip.permute(1, 2, 3, 0).numpy().astype(np.float32)  # T, H, W, C like the original
    frames = rgb[..., ::-1]  # BGR, as the original decoded with OpenCV
    if jitter is not None:
        if params is None:
            raise ValueError("the reference needs the drawn params")
        delta = np.float32(params.brightness[index].item())
        gain = np.float32(params.contrast[index].item())
        sat = float(params.saturation[index].item())
        angle = params.hue[index].item() * np.pi
        rotation = np.array(
            [[1.0, 0.0, 0.0], [0.0, np.cos(angle), -np.sin(angle)], [0.0, np.sin(angle), np.cos(angle)]]
        )
        hue = (_YIQ_TO_RGB @ rotation @ _RGB_TO_YIQ).astype(np.float32)
        lighting_rgb = np.dot(_EIGVEC * params.lighting[index].numpy(), _EIGVAL).astype(np.float32)
        jittered = []
        for img, frame_gates in zip(frames, params.gates[index].numpy()):
            on_brightness, on_contrast, on_saturation, on_hue = frame_gates
            if on_brightness:
                img = img + delta
            if on_contrast:
                img = img * gain
            if on_saturation:
                grey = np.sum(img * _GREY.astype(np.float32), axis=2, keepdims=True)
                img = img * np.float32(sat) + grey * np.float32(1.0 - sat)
            if on_hue:
                img = img @ hue.T
            jittered.append(img + lighting_rgb[::-1])
        frames = np.stack(jittered)
    if channel_order == "rgb":
        frames = frames[..., ::-1]
    frames = (frames - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray(frames.transpose(3, 0, 1, 2)))
