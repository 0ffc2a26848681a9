"""Attention images in the original's layout, drawn with numpy and Pillow.

Each frame is blended 0.6 * frame + 0.4 * jet(spatial attention, bilinearly upsampled),
with a 20 px bar coloured by the frame's temporal attention above it; frames go in rows
of 8.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

BAR_HEIGHT = 20
FRAMES_PER_ROW = 8
FRAME_WEIGHT, ATTENTION_WEIGHT = 0.6, 0.4


def jet(values: np.ndarray) -> np.ndarray:
    """The jet colour map: values in [0, 1] -> uint8 RGB, blue (0) to red (1)."""
    v = np.clip(np.asarray(values, dtype=np.float32), 0.0, 1.0)[..., None]
    # Piecewise-linear ramps centred at 3/4 (red), 1/2 (green) and 1/4 (blue).
    rgb = np.clip(1.5 - np.abs(4.0 * v - np.array([3.0, 2.0, 1.0], dtype=np.float32)), 0.0, 1.0)
    return (rgb * 255.0 + 0.5).astype(np.uint8)


def upsample_spatial(spatial: torch.Tensor, height: int, width: int) -> np.ndarray:
    """Spatial attention [1, T, h, w] (or [T, h, w]) bilinearly resized to [T, H, W]."""
    maps = spatial.detach().float().cpu().reshape(-1, 1, *spatial.shape[-2:])
    maps = F.interpolate(maps, size=(height, width), mode="bilinear", align_corners=False)
    return maps[:, 0].numpy()


def overlay_frames(frames: np.ndarray, spatial: np.ndarray, temporal: np.ndarray) -> List[np.ndarray]:
    """Per frame: the blended frame under its temporal-attention bar, uint8 [20 + H, W, 3].

    `frames` uint8 [T, H, W, 3]; `spatial` [T, H, W] at frame size; `temporal` [T]."""
    t, h, w, _ = frames.shape
    blended = FRAME_WEIGHT * frames.astype(np.float32) + ATTENTION_WEIGHT * jet(spatial).astype(np.float32)
    blended = np.clip(blended + 0.5, 0, 255).astype(np.uint8)
    bars = np.broadcast_to(jet(np.asarray(temporal).reshape(t, 1, 1)), (t, BAR_HEIGHT, w, 3))
    return [np.concatenate([bars[i], blended[i]], axis=0) for i in range(t)]


def attention_grid(tiles: Sequence[np.ndarray], per_row: int = FRAMES_PER_ROW) -> np.ndarray:
    """Tiles of equal size in rows of `per_row`; unused cells of the last row stay black."""
    th, tw, _ = tiles[0].shape
    rows = (len(tiles) + per_row - 1) // per_row
    cols = min(per_row, len(tiles))
    grid = np.zeros((rows * th, cols * tw, 3), dtype=np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, per_row)
        grid[r * th : (r + 1) * th, c * tw : (c + 1) * tw] = tile
    return grid


def attention_tiles(frames: np.ndarray, spatial: torch.Tensor, temporal: torch.Tensor) -> List[np.ndarray]:
    """`overlay_frames` for one clip's model outputs: `frames` uint8 RGB [T, H, W, 3];
    `spatial` [1, T, h, w]; `temporal` [1, T, 1, 1]."""
    _, h, w, _ = frames.shape
    return overlay_frames(frames, upsample_spatial(spatial, h, w), temporal.detach().float().cpu().flatten().numpy())


def attention_image(frames: np.ndarray, spatial: torch.Tensor, temporal: torch.Tensor) -> np.ndarray:
    """The original's attention figure for one clip (see `attention_tiles`): uint8 RGB, rows of 8 frames."""
    return attention_grid(attention_tiles(frames, spatial, temporal))


def save_attention(
    path: Union[str, Path],
    frames: np.ndarray,
    spatial: torch.Tensor,
    temporal: torch.Tensor,
    gif: bool = False,
    gif_ms: int = 125,
) -> List[Path]:
    """Write the attention PNG (and, with `gif`, an animation of the overlaid frames)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tiles = attention_tiles(frames, spatial, temporal)
    Image.fromarray(attention_grid(tiles)).save(path)
    written = [path]
    if gif:
        images = [Image.fromarray(t) for t in tiles]
        gif_path = path.with_suffix(".gif")
        images[0].save(gif_path, save_all=True, append_images=images[1:], duration=gif_ms, loop=0)
        written.append(gif_path)
    return written


MIN_FRAME_SIDE = 224  # frames smaller than this are enlarged before drawing, to be readable
LABEL_WIDTH = 200


def enlarge(frames: np.ndarray, min_side: int = MIN_FRAME_SIDE) -> np.ndarray:
    """uint8 frames [T, H, W, 3] enlarged by the smallest whole factor that brings their
    shorter side to `min_side` (each pixel becomes a block: nothing is invented); frames that
    are large enough are returned as they are."""
    factor = -(-min_side // min(frames.shape[1:3]))
    if factor <= 1:
        return frames
    return frames.repeat(factor, axis=1).repeat(factor, axis=2)


def _normalise(volume: np.ndarray) -> np.ndarray:
    """A non-negative volume scaled to [0, 1] by its own maximum (so each explainer's strongest
    evidence is red)."""
    peak = float(volume.max())
    return volume / peak if peak > 0 else volume


def explanation_sheet(
    frames: np.ndarray,
    maps: Sequence[tuple],
    frame_indices: Sequence[int],
    boxes: Sequence = (),
    title: str = "",
    min_side: int = MIN_FRAME_SIDE,
) -> Image.Image:
    """One row per explainer, side by side on the same frames: each row is `(name, volume
    [T, H, W], profile [T] or None)`; frames `frame_indices` of `frames` (uint8 RGB
    [T, H, W, 3]) are enlarged to at least `min_side` px, the volume (scaled to its maximum)
    bilinearly upsampled and blended as jet over it, and the frame's share of the profile's
    peak drawn as a bar above it. `boxes` (one [x0, y0, x1, y1] or None per frame, in frame
    pixels) are outlined in white. A jet colour bar and `title` head the sheet."""
    from PIL import ImageDraw, ImageFont

    big = enlarge(frames[list(frame_indices)], min_side)
    scale = big.shape[1] / frames.shape[1]
    h, w = big.shape[1:3]
    font = ImageFont.load_default(size=16)
    head = 40
    sheet = Image.new("RGB", (LABEL_WIDTH + w * len(frame_indices), head + (h + BAR_HEIGHT) * len(maps)), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((8, 10), title, fill="black", font=font)
    bar_x = sheet.width - 300
    colours = jet(np.linspace(0, 1, 200)[None, :].repeat(12, axis=0))
    sheet.paste(Image.fromarray(colours), (bar_x + 30, 14))
    draw.text((bar_x, 10), "low", fill="black", font=font)
    draw.text((bar_x + 236, 10), "high", fill="black", font=font)
    for row, (name, volume, profile) in enumerate(maps):
        top = head + row * (h + BAR_HEIGHT)
        draw.text((8, top + BAR_HEIGHT + h // 2 - 8), name, fill="black", font=font)
        volume = _normalise(np.asarray(volume, dtype=np.float32))
        selected = torch.from_numpy(volume[list(frame_indices)])[:, None]
        upsampled = F.interpolate(selected, size=(h, w), mode="bilinear", align_corners=False)[:, 0].numpy()
        tiles = overlay_frames(big, upsampled, np.zeros(len(frame_indices)))
        bars = None
        if profile is not None:
            bars = _normalise(np.asarray(profile, dtype=np.float32))[list(frame_indices)]
        for col, tile in enumerate(tiles):
            left = LABEL_WIDTH + col * w
            tile = tile.copy()
            if bars is None:
                tile[:BAR_HEIGHT] = 255
            else:
                tile[:BAR_HEIGHT] = jet(np.full((BAR_HEIGHT, w), bars[col]))
            sheet.paste(Image.fromarray(tile), (left, top))
            box = boxes[frame_indices[col]] if len(boxes) else None
            if box is not None:
                x0, y0, x1, y1 = (v * scale for v in box)
                draw.rectangle([left + x0, top + BAR_HEIGHT + y0, left + x1, top + BAR_HEIGHT + y1], outline="white")
    return sheet
