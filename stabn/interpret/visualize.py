"""Attention images in the original's layout, drawn with numpy and Pillow.

Each frame is blended 0.6 * frame + 0.4 * jet(spatial attention, bilinearly upsampled),
with a 20 px bar coloured by the frame's temporal attention above it; frames go in rows
of 8.

Every picture made for people (eval.py's attention images, `stabn.explain`, the demo) is
drawn at a readable size by one rule: frames whose shorter side is under 224 px are enlarged
by the smallest whole factor that reaches 224 (each pixel becomes a square block, so nothing
is invented: 32 px crops are drawn 7x, 56 px 4x, 112 px 2x), and the spatial attention is
upsampled bilinearly from the model's own resolution straight to the enlarged frame. A
header names the prediction and shows the jet colour bar from 0 to 1 that the overlays and
the temporal bars share; animations add the clip's temporal attention as a curve under each
frame.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import List, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from stabn.fileio import write_image

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


MIN_FRAME_SIDE = 224  # frames smaller than this are enlarged before drawing, to be readable
LABEL_WIDTH = 200
ANIMATION_FPS = 8  # 125 ms a frame, slow enough to follow the attention from frame to frame
FONT_SIZE = 16
LINE_HEIGHT = 22
MARGIN = 8
LEGEND_HEIGHT = 24
LEGEND_BAR = (160, 12)  # the colour bar's largest width and its height
CURVE_HEIGHT = 72
CURVE_COLOUR = (40, 40, 40)


def enlarge(frames: np.ndarray, min_side: int = MIN_FRAME_SIDE) -> np.ndarray:
    """uint8 frames [T, H, W, 3] enlarged by the smallest whole factor that brings their
    shorter side to `min_side` (each pixel becomes a block: nothing is invented); frames that
    are large enough are returned as they are."""
    factor = -(-min_side // min(frames.shape[1:3]))
    if factor <= 1:
        return frames
    return frames.repeat(factor, axis=1).repeat(factor, axis=2)


def attention_tiles(
    frames: np.ndarray, spatial: torch.Tensor, temporal: torch.Tensor, min_side: int = MIN_FRAME_SIDE
) -> List[np.ndarray]:
    """`overlay_frames` for one clip's model outputs, at a readable size: `frames` uint8 RGB
    [T, H, W, 3] are enlarged to at least `min_side` px (`enlarge`), and `spatial` [1, T, h, w]
    is upsampled bilinearly from the model's own resolution straight to the enlarged frames;
    `temporal` [1, T, 1, 1] colours the bars."""
    big = enlarge(frames, min_side)
    maps = upsample_spatial(torch.as_tensor(spatial), *big.shape[1:3])
    return overlay_frames(big, maps, torch.as_tensor(temporal).detach().float().cpu().flatten().numpy())


def _font():
    return ImageFont.load_default(size=FONT_SIZE)


def _text_width(text: str) -> int:
    return int(math.ceil(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(text, font=_font())))


def _lines(title: Union[str, Sequence[str]]) -> List[str]:
    return [line for line in (title.split("\n") if isinstance(title, str) else list(title)) if line]


_LEGEND_LOW, _LEGEND_HIGH = "attention  0", "1"


def _header_width(lines: Sequence[str]) -> int:
    """The narrowest header that shows `lines` and a colour bar of at least 40 px."""
    legend = _text_width(_LEGEND_LOW) + 40 + _text_width(_LEGEND_HIGH) + 12
    return 2 * MARGIN + max([legend] + [_text_width(line) for line in lines])


def header_height(num_lines: int) -> int:
    """The height of a header with `num_lines` lines of text above its colour bar."""
    return MARGIN + num_lines * LINE_HEIGHT + LEGEND_HEIGHT


def _header(width: int, lines: Sequence[str]) -> Image.Image:
    """White rows of text above the legend: the jet colour bar from 0 (low) to 1 (high), which
    both the overlays and the temporal bars use."""
    font = _font()
    image = Image.new("RGB", (width, header_height(len(lines))), "white")
    draw = ImageDraw.Draw(image)
    y = MARGIN // 2
    for line in lines:
        draw.text((MARGIN, y), line, fill="black", font=font)
        y += LINE_HEIGHT
    draw.text((MARGIN, y), _LEGEND_LOW, fill="black", font=font)
    x = MARGIN + _text_width(_LEGEND_LOW) + 6
    bar_w = max(40, min(LEGEND_BAR[0], width - x - _text_width(_LEGEND_HIGH) - MARGIN - 6))
    image.paste(Image.fromarray(jet(np.linspace(0.0, 1.0, bar_w)[None].repeat(LEGEND_BAR[1], axis=0))), (x, y + 4))
    draw.text((x + bar_w + 6, y), _LEGEND_HIGH, fill="black", font=font)
    return image


def _stack(parts: Sequence[Image.Image], width: int) -> Image.Image:
    """`parts` one under the other, left-aligned on white, `width` wide."""
    sheet = Image.new("RGB", (width, sum(p.height for p in parts)), "white")
    y = 0
    for part in parts:
        sheet.paste(part, (0, y))
        y += part.height
    return sheet


def attention_sheet(tiles: Sequence[np.ndarray], title: Union[str, Sequence[str]] = "") -> Image.Image:
    """The original's layout (`attention_grid`: tiles in rows of 8) under a header that names
    the prediction (`title`, lines split at newlines) and shows the colour bar."""
    grid = attention_grid(tiles)
    lines = _lines(title)
    width = max(grid.shape[1], _header_width(lines))
    return _stack([_header(width, lines), Image.fromarray(grid)], width)


def _curve(width: int, values: np.ndarray, current: int) -> Image.Image:
    """The clip's temporal attention as a curve on a 0-to-1 scale, frame `current` marked by a
    line and a dot in its jet colour, and its value written beside it."""
    image = Image.new("RGB", (width, CURVE_HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    left, right, top, bottom = MARGIN, width - MARGIN, 6, CURVE_HEIGHT - LINE_HEIGHT
    draw.rectangle([left, top, right, bottom], outline=(190, 190, 190))
    step = (right - left) / len(values)
    points = [
        (left + (i + 0.5) * step, bottom - float(np.clip(v, 0, 1)) * (bottom - top)) for i, v in enumerate(values)
    ]
    x, y = points[current]
    colour = tuple(int(c) for c in jet(np.array(values[current])))
    draw.line([(x, top), (x, bottom)], fill=colour, width=3)
    if len(points) > 1:
        draw.line(points, fill=CURVE_COLOUR, width=2)
    draw.ellipse([x - 5, y - 5, x + 5, y + 5], fill=colour, outline=CURVE_COLOUR)
    draw.text((left, bottom + 2), f"temporal {float(values[current]):.2f}", fill="black", font=_font())
    return image


def animation_frames(
    tiles: Sequence[np.ndarray],
    temporal: np.ndarray,
    title: Union[str, Sequence[str]] = "",
    labels: Optional[Sequence[str]] = None,
) -> List[Image.Image]:
    """One picture per frame, for a GIF or a video: the header (`title`, the frame's label,
    the colour bar), the tile (temporal bar over the overlaid frame), and under it the clip's
    temporal attention as a curve with this frame marked. All of one size."""
    temporal = np.asarray(temporal, dtype=np.float32).reshape(-1)
    labels = list(labels) if labels is not None else [f"frame {t + 1} of {len(tiles)}" for t in range(len(tiles))]
    lines = _lines(title)
    width = max(tiles[0].shape[1], max(_header_width(lines + [label]) for label in labels))
    return [
        _stack([_header(width, lines + [labels[t]]), Image.fromarray(tile), _curve(width, temporal, t)], width)
        for t, tile in enumerate(tiles)
    ]


def attention_image(
    frames: np.ndarray, spatial: torch.Tensor, temporal: torch.Tensor, title: Union[str, Sequence[str]] = ""
) -> np.ndarray:
    """The original's attention figure for one clip at a readable size (`attention_tiles`,
    rows of 8 frames) under a header with `title` and the colour bar: uint8 RGB."""
    return np.asarray(attention_sheet(attention_tiles(frames, spatial, temporal), title))


# Pictures are written atomically (`fileio.write_image`): a write the operating system refuses
# leaves no half picture behind and ends as one line naming it.


def save_png(path: Union[str, Path], image: Image.Image) -> Path:
    """`image` as a PNG file."""
    path = Path(path)
    write_image(path, image, format="PNG")
    return path


def _gif_params(images: Sequence[Image.Image], fps: float) -> dict:
    duration = round(1000 / fps)
    return {"format": "GIF", "save_all": True, "append_images": list(images[1:]), "duration": duration, "loop": 0}


def save_gif(path: Union[str, Path], images: Sequence[Image.Image], fps: float = ANIMATION_FPS) -> Path:
    """An endlessly looping GIF of `images`, `fps` a second."""
    path = Path(path)
    write_image(path, images[0], **_gif_params(images, fps))
    return path


def gif_bytes(images: Sequence[Image.Image], fps: float = ANIMATION_FPS) -> bytes:
    """`save_gif`'s file, in memory (for `IPython.display.Image`)."""
    buffer = io.BytesIO()
    images[0].save(buffer, **_gif_params(images, fps))
    return buffer.getvalue()


def save_attention(
    path: Union[str, Path],
    frames: np.ndarray,
    spatial: torch.Tensor,
    temporal: torch.Tensor,
    gif: bool = False,
    gif_ms: int = 1000 // ANIMATION_FPS,
    title: Union[str, Sequence[str]] = "",
) -> List[Path]:
    """Write the attention PNG (`attention_sheet`) and, with `gif`, an animation of the
    overlaid frames (`animation_frames`)."""
    path = Path(path)
    tiles = attention_tiles(frames, spatial, temporal)
    written = [save_png(path, attention_sheet(tiles, title))]
    if gif:
        values = torch.as_tensor(temporal).detach().float().cpu().flatten().numpy()
        written.append(save_gif(path.with_suffix(".gif"), animation_frames(tiles, values, title), 1000 / gif_ms))
    return written


def scale_to_peak(volume: np.ndarray) -> np.ndarray:
    """A non-negative array scaled to [0, 1] by its own maximum (so each explainer's strongest
    evidence is red); an all-zero one stays as it is."""
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
        volume = scale_to_peak(np.asarray(volume, dtype=np.float32))
        selected = torch.from_numpy(volume[list(frame_indices)])[:, None]
        upsampled = F.interpolate(selected, size=(h, w), mode="bilinear", align_corners=False)[:, 0].numpy()
        tiles = overlay_frames(big, upsampled, np.zeros(len(frame_indices)))
        bars = None
        if profile is not None:
            bars = scale_to_peak(np.asarray(profile, dtype=np.float32))[list(frame_indices)]
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
