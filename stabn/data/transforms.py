"""Clip transforms, split where the data changes hands.

In the loader workers everything stays uint8 and RGB, as decoded: each decoded frame is cropped
(no resize) and flipped (`orient_crops`) as it is copied into the clip. On the training device,
`normalize_batch` turns a uint8 RGB batch into the normalised float batch in the model's channel
order (``"bgr"`` as the original, which decoded with OpenCV, or ``"rgb"``), with the TPN-style
colour jitter of the original for training (`stabn.data.jitter`). The channel order costs
nothing there: the float conversion reads each output plane from whichever input channel it
needs, and the jitter's 3x3 matrix absorbs the permutation; in the workers, reordering
interleaved bytes would cost several times the copy of the crop.

One frame's jitter followed by the normalisation is a single 3x3 matrix and offset per frame,
which `normalize_batch` applies to all frames at once with a batched matmul (no HSV round trip,
no per-frame Python); tests/reference_transforms.py holds the step-by-step version, frame by
frame like the original, that tests compare it with. The jitter is defined on BGR whatever the
output order: with ``channel_order="rgb"`` the same augmentation is applied to the same colours,
and the output equals the BGR one with its channels reversed.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

from stabn.config.schema import CHANNEL_ORDERS, FLIP_MODES
from stabn.data.jitter import JitterConfig, JitterParams, bgr_jitter_affine, draw_jitter_params

BGR_MEAN = (103.53, 116.28, 123.675)
BGR_STD = (57.375, 57.12, 58.395)
_TILE_BYTES = 4 << 20  # the jitter's float tile: small enough to stay in cache, big enough for the matmul


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


def frame_crops(frame: torch.Tensor, offsets: Sequence[Tuple[int, int]], size: int) -> List[torch.Tensor]:
    """Channels-last views ``[S, S, 3]`` of a decoded frame ``[3, H, W]`` (a view of an
    ``[H, W, 3]`` buffer, as `decode.read_jpeg` gives it) at each top-left ``(y, x)`` of `offsets`."""
    c_stride, y_stride, x_stride = frame.stride()
    first = frame.storage_offset()
    # frame.permute(1, 2, 0)[y:y + s, x:x + s], in one call each
    return [
        frame.as_strided((size, size, 3), (y_stride, x_stride, c_stride), first + y * y_stride + x * x_stride)
        for y, x in offsets
    ]


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
# float side: the jitter in the output's channel order, and the batched normalisation


def jitter_affine(params: JitterParams, channel_order: str = "bgr") -> Tuple[torch.Tensor, torch.Tensor]:
    """The jitter of each frame as ``x -> A @ x + b`` on its pixels: ``A [B, T, 3, 3]`` and
    ``b [B, T, 3]`` (float64), with ``x`` and the result in `channel_order`."""
    _check_channel_order(channel_order)
    a, b = bgr_jitter_affine(params)
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
    out = _checked_out(x, out)
    t, h, w = x.shape[-3:]
    xb = x.reshape(-1, 3, t, h, w)
    ob = out.view(-1, 3, t, h, w)
    if jitter is None:
        _normalize_planes(xb, ob, source, mean_t, std_t)
        return out
    if params is None:
        params = draw_jitter_params(xb.shape[0], t, jitter, generator)
    elif params.gates.shape[:2] != (xb.shape[0], t):
        raise ValueError(
            f"params are for {tuple(params.gates.shape[:2])} clips x frames, the batch has {(xb.shape[0], t)}"
        )
    a, b = _normalizing_affine(params, channel_order, mean_t, std_t, x.device)
    _apply_affine(xb, ob, a, b)
    return out


def _checked_out(x: torch.Tensor, out: Optional[torch.Tensor]) -> torch.Tensor:
    """`out`, or a new float32 tensor shaped like `x` on its device when None."""
    if out is None:
        return torch.empty(x.shape, dtype=torch.float32, device=x.device)
    if out.shape != x.shape or out.dtype != torch.float32 or out.device != x.device or not out.is_contiguous():
        raise ValueError(f"out must be a contiguous float32 tensor of shape {tuple(x.shape)} on {x.device}")
    return out


def _normalize_planes(
    xb: torch.Tensor, ob: torch.Tensor, source: Tuple[int, int, int], mean: torch.Tensor, std: torch.Tensor
) -> None:
    """``ob = (xb' - mean) / std`` for uint8 clips `xb` ``[N, 3, T, H, W]``, where output plane c
    is read from input channel ``source[c]``."""
    scale, shift = (1.0 / std).tolist(), (-mean / std).tolist()
    # One (clip, channel) plane at a time, so it is still in cache for the second pass; the copy
    # converts to float and, for channels-last clips, transposes on the way.
    for i in range(xb.shape[0]):
        for c, k in enumerate(source):
            plane = ob[i, c].copy_(xb[i, k])
            torch.add(torch.tensor(shift[c]), plane, alpha=scale[c], out=plane)


def _normalizing_affine(
    params: JitterParams, channel_order: str, mean: torch.Tensor, std: torch.Tensor, device: torch.device
) -> Tuple[torch.Tensor, torch.Tensor]:
    """The jitter and then the normalisation of each frame as one map from RGB input pixels to
    the output in `channel_order`: float32 ``A [N, T, 3, 3]`` and ``b [N, T, 3, 1]`` on `device`."""
    a, b = jitter_affine(params, channel_order)
    # `a` maps pixels in `channel_order` to `channel_order`; on RGB input it is ``a @ P`` with
    # P the permutation from RGB to that order: its columns taken in input-channel order.
    source = _input_channels(channel_order)
    a = a[..., list(source)] if source != (0, 1, 2) else a
    a = (a / std[:, None]).to(device=device, dtype=torch.float32)
    b = ((b - mean) / std).to(device=device, dtype=torch.float32).unsqueeze(-1)
    return a, b


def _apply_affine(xb: torch.Tensor, ob: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> None:
    """``ob = a @ xb + b`` per frame, for uint8 clips `xb` ``[N, 3, T, H, W]``, as one batched
    matmul over the frames of a tile of rows, whose float copy stays in cache for the matmul."""
    _, _, t, h, w = xb.shape
    rows = max(1, min(h, _TILE_BYTES // (3 * t * w * 4)))
    pixels = torch.empty((3, t, rows, w), dtype=torch.float32, device=xb.device)
    for i in range(xb.shape[0]):
        for top in range(0, h, rows):
            n = min(rows, h - top)
            # The copy converts to float and, for channels-last clips, transposes on the way.
            tile = pixels[:, :, :n].copy_(xb[i, :, :, top : top + n])
            torch.baddbmm(
                b[i],
                a[i],
                tile.view(3, t, n * w).transpose(0, 1),
                out=ob[i, :, :, top : top + n].view(3, t, n * w).transpose(0, 1),
            )


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
