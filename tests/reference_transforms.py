"""The step-by-step reference that tests compare `stabn.data.normalize_batch` with: one clip,
frame by frame in float32, as the original's ``GroupColorJitter`` and ``_normalize`` did on
its BGR arrays."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from stabn.config.schema import CHANNEL_ORDERS
from stabn.data.jitter import EIGVAL, EIGVEC, GREY, RGB_TO_YIQ, YIQ_TO_RGB, JitterConfig, JitterParams


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
    if channel_order not in CHANNEL_ORDERS:
        raise ValueError(f"channel_order must be one of {CHANNEL_ORDERS}, got {channel_order!r}")
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
        hue = (YIQ_TO_RGB @ rotation @ RGB_TO_YIQ).astype(np.float32)
        lighting_rgb = np.dot(EIGVEC * params.lighting[index].numpy(), EIGVAL).astype(np.float32)
        jittered = []
        for img, frame_gates in zip(frames, params.gates[index].numpy()):
            on_brightness, on_contrast, on_saturation, on_hue = frame_gates
            if on_brightness:
                img = img + delta
            if on_contrast:
                img = img * gain
            if on_saturation:
                grey = np.sum(img * GREY.astype(np.float32), axis=2, keepdims=True)
                img = img * np.float32(sat) + grey * np.float32(1.0 - sat)
            if on_hue:
                img = img @ hue.T
            jittered.append(img + lighting_rgb[::-1])
        frames = np.stack(jittered)
    if channel_order == "rgb":
        frames = frames[..., ::-1]
    frames = (frames - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray(frames.transpose(3, 0, 1, 2)))
