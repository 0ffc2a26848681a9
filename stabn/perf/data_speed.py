"""Throughput of the data path, from JPEG files to a normalised float batch, on one thread.

The full path is what a step asks of the CPU when everything runs in-process (num_workers=0):
`FrameClipDataset.__getitems__` (what a DataLoader calls for a batch), `collate_clips`, then
`normalize_batch` (with the colour jitter in train mode). Decoding the same frame files alone is
timed in the same run, batch by batch in alternating order, so that the ratio of the two stays
fair on a busy machine.
"""

from __future__ import annotations

import os
import time
from typing import Dict, List, Optional

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

from stabn.data.dataset import FrameClipDataset, collate_clips
from stabn.data.decode import DEFAULT_BACKEND, read_jpeg
from stabn.data.sampling import FRAME_TEMPLATE
from stabn.data.transforms import JitterConfig, mean_std, normalize_batch
from stabn.errors import DataError, PathLike
from stabn.perf import torch_threads


def _noise(rng: np.random.Generator, height: int, width: int, exponent: float) -> np.ndarray:
    """Three channels of 1/f^exponent noise, zero mean and unit std: [H, W, 3]."""
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.rfftfreq(width)[None, :]
    f = np.sqrt(fy**2 + fx**2)
    f[0, 0] = 1.0
    spectrum = rng.normal(size=(3,) + f.shape) + 1j * rng.normal(size=(3,) + f.shape)
    x = np.fft.irfft2(spectrum / f**exponent, s=(height, width)).transpose(1, 2, 0)
    return (x - x.mean()) / x.std()


def _scene(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A textured background with blurred-edged shapes on it, float [H, W, 3] in 0..255."""
    base = 120 + 40 * _noise(rng, height, width, 1.4) + 4 * _noise(rng, height, width, 0.7)
    img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(40):
        x0, y0 = rng.uniform(0, width), rng.uniform(0, height)
        w, h = rng.uniform(0.02, 0.25) * width, rng.uniform(0.04, 0.33) * height
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.ellipse([x0, y0, x0 + w, y0 + h], fill=colour)
        else:
            corners = [(x0 + rng.uniform(-w, w), y0 + rng.uniform(-h, h)) for _ in range(int(rng.integers(3, 6)))]
            draw.polygon(corners, fill=colour)
    img = img.filter(ImageFilter.GaussianBlur(0.8))
    return np.asarray(img, dtype=np.float32) + 2 * _noise(rng, height, width, 0.3)


def make_frames(
    root: PathLike, num_videos: int = 8, num_frames: int = 48, height: int = 240, width: int = 427, seed: int = 0
) -> str:
    """Write `num_videos` videos of `num_frames` JPEG frames (quality 90, about 28 KB at
    240x427, like SSv2 frames) as ``root/<id>/%06d.jpg`` and ``root/labels.txt`` in the SSv2
    format; return the label file's path. A camera pans over a textured scene, with sensor noise."""
    rng = np.random.default_rng(seed)
    lines = []
    for v in range(num_videos):
        video_id = str(v + 1)
        folder = os.path.join(os.fspath(root), video_id)
        os.makedirs(folder, exist_ok=True)
        scene = _scene(rng, height + 20, width + num_frames + 4)
        for t in range(num_frames):
            dy = int(10 + 8 * np.sin(t / 7))
            frame = scene[dy : dy + height, t : t + width] + rng.normal(0, 1.5, (height, width, 3))
            Image.fromarray(np.clip(frame, 0, 255).astype(np.uint8)).save(
                os.path.join(folder, FRAME_TEMPLATE % (t + 1)), quality=90
            )
        lines.append(f"{video_id} {num_frames} {v % 2}\n")
    label_file = os.path.join(os.fspath(root), "labels.txt")
    with open(label_file, "w", encoding="utf-8") as f:
        f.writelines(lines)
    return label_file


class _LoaderPaths:
    """The two paths the loader benchmark compares, over the same videos: the full one (items
    as a DataLoader worker makes them, collated and normalised) and JPEG decoding alone."""

    def __init__(self, dataset, batch_size: int, jitter, channel_order: str, seed: int, reuse_out: bool, backend):
        self.dataset, self.batch_size, self.jitter = dataset, batch_size, jitter
        self.channel_order, self.reuse_out, self.backend = channel_order, reuse_out, backend
        self.mean, self.std = mean_std(channel_order)
        self.generator = torch.Generator().manual_seed(seed)
        self.out: Optional[torch.Tensor] = None

    def batch_indices(self, step: int) -> List[int]:
        # Walk through the videos; in train mode every pass is a new epoch (new clips and crops).
        first = step * self.batch_size
        self.dataset.set_epoch(first // len(self.dataset))
        return [(first + k) % len(self.dataset) for k in range(self.batch_size)]

    def full(self, indices: List[int]) -> None:
        batch = collate_clips(self.dataset.__getitems__(indices))  # as a DataLoader does
        if self.reuse_out and (self.out is None or self.out.shape != batch.clips.shape):
            self.out = torch.empty(batch.clips.shape)
        out = self.out if self.reuse_out else None
        normalize_batch(
            batch.clips, self.mean, self.std, self.jitter, self.generator, channel_order=self.channel_order, out=out
        )

    def decode_only(self, indices: List[int]) -> None:
        for i in indices:
            for path in self.dataset.frame_paths(i):
                read_jpeg(path, self.backend)

    def interleaved_times(self, num_batches: int) -> Dict[str, float]:
        """Seconds each path took over `num_batches` batches, measured in turns (which goes
        first alternates) after one warm-up batch of each: file cache, allocator, lazy imports."""
        times = {"full": 0.0, "decode_only": 0.0}
        self.full(self.batch_indices(0))
        self.decode_only(self.batch_indices(0))
        for step in range(num_batches):
            indices = self.batch_indices(step)
            for name in ("full", "decode_only") if step % 2 == 0 else ("decode_only", "full"):
                start = time.perf_counter()
                getattr(self, name)(indices)
                times[name] += time.perf_counter() - start
        return times


def benchmark_loader(
    frames_root: PathLike,
    label_file: PathLike,
    frame_length: int,
    frame_size: int = 224,
    mode: str = "train",
    batch_size: int = 8,
    num_batches: int = 10,
    num_clips: int = 1,
    num_crops: int = 1,
    jitter_mode: str = "tpn",
    backend: Optional[str] = None,
    seed: int = 0,
    reuse_out: bool = True,
    channel_order: str = "bgr",
) -> Dict[str, object]:
    """Time the full path and decode-only on the same items, on one thread; return the figures.

    With `reuse_out` the normalised batch is written into one buffer reused across batches, as
    a training loop can do with ``normalize_batch(..., out=)`` (and as the CUDA caching
    allocator does by itself); otherwise every batch allocates, and faults in, fresh memory."""
    backend = backend or DEFAULT_BACKEND
    dataset = FrameClipDataset(
        label_file,
        frames_root,
        frame_length,
        frame_size,
        mode=mode,
        num_clips=num_clips,
        num_crops=num_crops,
        seed=seed,
        backend=backend,
    )
    if len(dataset) == 0:
        raise DataError(f"{os.fspath(label_file)} lists no videos")
    jitter = JitterConfig(mode=jitter_mode) if mode == "train" else None
    paths = _LoaderPaths(dataset, batch_size, jitter, channel_order, seed, reuse_out, backend)
    with torch_threads(1):
        times = paths.interleaved_times(num_batches)
    clips = batch_size * num_batches
    clips_per_s = clips / times["full"]
    decode_clips_per_s = clips / times["decode_only"]
    return {
        "clips_per_s": round(clips_per_s, 3),
        "decode_clips_per_s": round(decode_clips_per_s, 3),
        "ratio": round(clips_per_s / decode_clips_per_s, 3),
        "mode": mode,
        "frame_length": frame_length,
        "frame_size": frame_size,
        "decoder": backend,
        "batch_size": batch_size,
        "num_batches": num_batches,
        "views": dataset.num_views,
        "jitter": jitter.mode if jitter else None,
        "channel_order": channel_order,
        "threads": 1,
        "reuse_out": reuse_out,
    }
