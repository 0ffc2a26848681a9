"""Throughput of the data path, from files to a normalised float batch, on one thread.

The full path is what a step asks of the CPU when everything runs in-process (num_workers=0):
the dataset's `__getitems__` (what a DataLoader calls for a batch), `collate_clips`, then
`normalize_batch` (with the colour jitter in train mode). Decoding the same files alone (JPEG
frames, or a video's frames that the clips use, with `open_video` and `clip_frames`) is timed
in the same run, batch by batch in alternating order, so that the ratio of the two stays fair
on a busy machine. The run is one process on one thread, so its clips/s are also the figure
per core; the process's CPU time is given beside the wall time.
"""

from __future__ import annotations

import collections
import functools
import io
import os
import time
from typing import Callable, Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter

from stabn.data.dataset import FrameClipDataset, collate_clips
from stabn.data.decode import DEFAULT_BACKEND, read_jpeg
from stabn.data.sampling import FRAME_TEMPLATE, frame_paths, frame_uses
from stabn.data.transforms import JitterConfig, mean_std, normalize_batch
from stabn.data.video import import_av, resize_short_side
from stabn.data.video_dataset import VideoClipDataset
from stabn.data.video_reader import CountMismatch, clip_frames, open_video
from stabn.errors import ConfigError, DataError, PathLike, StabnError
from stabn.perf import torch_threads

VIDEO_LIST = "videos.txt"
JPEG_QUALITY = 90  # about 28 KB a 240x427 frame, like SSv2's


class VideoCodec(NamedTuple):
    """How `make_videos` writes one codec: the encoder (with its own defaults, in yuv420p),
    the container and the size and rate of the videos unless told otherwise."""

    encoder: str
    suffix: str
    fps: int
    size: Tuple[int, int]  # (height, width)
    settings: str  # the encoder's defaults that apply, for the report


VIDEO_CODECS = {
    # SSv2's own: VP9 WebM, 240 px high, 12 frames a second.
    "vp9": VideoCodec(
        "libvpx-vp9", ".webm", 12, (240, 427),
        "FFmpeg's libvpx-vp9 defaults: constant quality at crf 32, no bitrate cap, keyframes where libvpx puts them",
    ),
    # A camera's or a web video's: H.264 MP4 at 720p, 30 frames a second.
    "h264": VideoCodec(
        "libx264", ".mp4", 30, (720, 1280),
        "x264's defaults: preset medium, crf 23, keyint 250 (scenecut 40), 3 B-frames",
    ),
}  # fmt: skip


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


def _pan_frames(rng: np.random.Generator, num_frames: int, height: int, width: int) -> Iterator[np.ndarray]:
    """uint8 [H, W, 3] frames of a camera panning over a textured scene, with sensor noise."""
    scene = _scene(rng, height + 20, width + num_frames + 4)
    for t in range(num_frames):
        dy = int(10 + 8 * np.sin(t / 7))
        frame = scene[dy : dy + height, t : t + width] + rng.normal(0, 1.5, (height, width, 3))
        yield np.clip(frame, 0, 255).astype(np.uint8)


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
        for t, frame in enumerate(_pan_frames(rng, num_frames, height, width)):
            Image.fromarray(frame).save(os.path.join(folder, FRAME_TEMPLATE % (t + 1)), quality=JPEG_QUALITY)
        lines.append(f"{video_id} {num_frames} {v % 2}\n")
    return _write_list(os.path.join(os.fspath(root), "labels.txt"), lines)


def _write_list(path: str, lines: Sequence[str]) -> str:
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(lines)
    return path


def make_videos(
    root: PathLike,
    codec: str = "vp9",
    *,
    num_videos: int = 8,
    num_frames: int = 48,
    size: Optional[Tuple[int, int]] = None,
    fps: Optional[int] = None,
    seed: int = 0,
    jpeg_short_side: Optional[int] = None,
) -> Tuple[str, Dict[str, object]]:
    """Write the scenes `make_frames` renders (the same frames for the same seed and size) as
    one `codec` video each (`VIDEO_CODECS`; `size` (height, width) and `fps` default to the
    codec's), ``root/<id><suffix>``, and ``root/videos.txt``, a generic list.

    Returns the list's path and the files and bytes the same frames take as `make_frames`'
    JPEG files, resized first to `jpeg_short_side` where given (as ``prepare_ssv2 --short-side``)."""
    spec = VIDEO_CODECS[codec]
    height, width = size or spec.size
    if codec == "h264" and (height % 2 or width % 2):
        raise ConfigError(f"h264 in yuv420p needs even sides, got {height}x{width}")
    if spec.encoder not in import_av().codecs_available:
        raise StabnError(f"this PyAV's FFmpeg has no {spec.encoder} encoder (--codec {codec})")
    os.makedirs(root, exist_ok=True)
    rng = np.random.default_rng(seed)
    lines, jpeg_bytes, jpeg_size = [], 0, (height, width)
    for v in range(num_videos):
        name = f"{v + 1}{spec.suffix}"
        frames = []
        for frame in _pan_frames(rng, num_frames, height, width):
            image = Image.fromarray(frame)
            image = image if jpeg_short_side is None else resize_short_side(image, jpeg_short_side)
            jpeg = io.BytesIO()
            image.save(jpeg, format="JPEG", quality=JPEG_QUALITY)
            jpeg_bytes, jpeg_size = jpeg_bytes + jpeg.tell(), (image.height, image.width)
            frames.append(frame)
        _write_video(os.path.join(os.fspath(root), name), frames, spec.encoder, fps or spec.fps)
        lines.append(f"{name} {v % 2}\n")
    as_jpeg = {"files": num_videos * num_frames, "bytes": jpeg_bytes, "size": list(jpeg_size)}
    return _write_list(os.path.join(os.fspath(root), VIDEO_LIST), lines), as_jpeg


def _write_video(path: str, frames: Sequence[np.ndarray], encoder: str, fps: int) -> None:
    """uint8 RGB `frames` as a yuv420p video with `encoder`'s own rate control and keyframes."""
    av = import_av()
    with av.open(path, "w") as container:
        stream = container.add_stream(encoder, rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        # Frame threads as the ffmpeg command line uses them: PyAV's default, slice threads,
        # would cut every H.264 frame into slices, which few real files have.
        stream.thread_type = "AUTO"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


# What decoding a batch alone is: prepared untimed from the batch's indices, then timed.
Decoding = Callable[[List[int]], Callable[[], object]]


def _decode_videos(jobs: Sequence[Tuple[str, List[int]]]) -> None:
    for path, wanted in jobs:
        with open_video(path) as video:
            try:
                collections.deque(clip_frames(video, wanted), maxlen=0)
            except CountMismatch as e:
                raise DataError(f"{e}: the benchmark takes videos whose container fits their frames") from None


def _jpeg_decoding(dataset: FrameClipDataset, backend: str) -> Decoding:
    def prepare(indices: List[int]) -> Callable[[], object]:
        paths = [p for i in indices for p in dataset.frame_paths(i)]
        return lambda: collections.deque((read_jpeg(p, backend) for p in paths), maxlen=0)

    return prepare


def _video_decoding(dataset: VideoClipDataset) -> Decoding:
    def prepare(indices: List[int]) -> Callable[[], object]:
        jobs = [(dataset.records[i].path, sorted(frame_uses(dataset.clip_frames(i)))) for i in indices]
        return functools.partial(_decode_videos, jobs)

    return prepare


class _LoaderPaths:
    """The two paths the loader benchmark compares, over the same videos: the full one (items
    as a DataLoader worker makes them, collated and normalised) and decoding alone."""

    def __init__(self, dataset, decoding: Decoding, *, batch_size: int, jitter, channel_order: str, seed: int,
                 reuse_out: bool) -> None:  # fmt: skip
        self.dataset, self.decoding, self.batch_size, self.jitter = dataset, decoding, batch_size, jitter
        self.channel_order, self.reuse_out = channel_order, reuse_out
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

    def interleaved_times(self, num_batches: int) -> Tuple[Dict[str, float], Dict[str, float]]:
        """Wall and process CPU seconds each path took over `num_batches` batches, measured in
        turns (which goes first alternates) after one warm-up batch of each: file cache,
        allocator, lazy imports."""
        wall = {"full": 0.0, "decode_only": 0.0}
        cpu = dict(wall)
        self.full(self.batch_indices(0))
        self.decoding(self.batch_indices(0))()
        for step in range(num_batches):
            indices = self.batch_indices(step)
            work = {"full": functools.partial(self.full, indices), "decode_only": self.decoding(indices)}
            for name in ("full", "decode_only") if step % 2 == 0 else ("decode_only", "full"):
                start, start_cpu = time.perf_counter(), time.process_time()
                work[name]()
                wall[name] += time.perf_counter() - start
                cpu[name] += time.process_time() - start_cpu
        return wall, cpu


def _total_bytes(paths: Sequence[str]) -> int:
    try:
        return sum(os.path.getsize(p) for p in paths)
    except OSError as e:
        raise DataError(f"{e.filename}: {e.strerror}") from None


def _dataset(source: str, root: PathLike, label_file: PathLike, frame_length: int, backend: str,
             short_side: Optional[int], **options) -> Tuple[FrameClipDataset, Decoding]:  # fmt: skip
    """The dataset of `source` and what decoding a batch of it alone is."""
    if source == "videos":
        dataset = VideoClipDataset(label_file, root, frame_length, short_side=short_side, **options)
        return dataset, _video_decoding(dataset)
    dataset = FrameClipDataset(label_file, root, frame_length, backend=backend, **options)
    return dataset, _jpeg_decoding(dataset, backend)


def _figures(wall: Dict[str, float], cpu: Dict[str, float], clips: int) -> Dict[str, object]:
    """Throughputs and ratios of one run's timings of `clips` clips on each path."""
    clips_per_s = round(clips / wall["full"], 3)
    return {
        "clips_per_s": clips_per_s,
        "decode_clips_per_s": round(clips / wall["decode_only"], 3),
        "ratio": round(wall["decode_only"] / wall["full"], 3),
        "cpu_ratio": round(cpu["decode_only"] / cpu["full"], 3),  # the same, from the process's CPU time
        "clips_per_s_per_core": clips_per_s,  # one process on one thread
        "clips": clips,
        "seconds": wall,
        "cpu_seconds": cpu,
    }


def benchmark_loader(
    root: PathLike,
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
    *,
    source: str = "frames",
    short_side: Optional[int] = None,
) -> Dict[str, object]:
    """Time the full path and decode-only on the same items, on one thread; return the figures
    and the files the run reads: frame folders of an SSv2-format list (`backend`: the JPEG
    decoder), or with ``source="videos"`` the video files of a generic list, resized to
    `short_side` where given (its codec, size, rate, frames and keyframes too).

    With `reuse_out` the normalised batch is written into one buffer reused across batches, as
    a training loop can do with ``normalize_batch(..., out=)`` (and as the CUDA caching
    allocator does by itself); otherwise every batch allocates, and faults in, fresh memory."""
    backend = backend or DEFAULT_BACKEND
    dataset, decoding = _dataset(source, root, label_file, frame_length, backend, short_side, frame_size=frame_size,
                                 mode=mode, num_clips=num_clips, num_crops=num_crops, seed=seed)  # fmt: skip
    if len(dataset) == 0:
        raise DataError(f"{os.fspath(label_file)} lists no videos")
    jitter = JitterConfig(mode=jitter_mode) if mode == "train" else None
    paths = _LoaderPaths(dataset, decoding, batch_size=batch_size, jitter=jitter, channel_order=channel_order,
                         seed=seed, reuse_out=reuse_out)  # fmt: skip
    with torch_threads(1):
        wall, cpu = paths.interleaved_times(num_batches)
    clips = batch_size * num_batches
    result = {
        "source": source,
        **_figures(wall, cpu, clips),
        "mode": mode,
        "frame_length": frame_length,
        "frame_size": frame_size,
        "decoder": "pyav" if source == "videos" else backend,
        "batch_size": batch_size,
        "num_batches": num_batches,
        "views": dataset.num_views,
        "jitter": jitter.mode if jitter else None,
        "channel_order": channel_order,
        "threads": 1,
        "reuse_out": reuse_out,
    }
    read = dataset.records[:clips]  # the run reads these videos (all of them, if fewer)
    if source == "videos":
        return {**result, "short_side": short_side, **_describe_videos([r.path for r in read])}
    files = [p for r in read for p in frame_paths(r.path, range(r.num_frames), dataset.template)]
    return {**result, "files": len(files), "bytes": _total_bytes(files)}


def _describe_videos(paths: Sequence[str]) -> Dict[str, object]:
    """The first video's codec, size and rate; the mean frames and keyframes a video; the count
    and bytes of the files."""
    with open_video(paths[0]) as video:
        codec, size, fps = video.stream.codec_context.name, list(video.size), video.rate
    frames = keyframes = 0
    for path in paths:
        with open_video(path) as video:
            frames += video.frame_count
            keyframes += sum(1 for p in video.stream.container.demux(video.stream) if p.size and p.is_keyframe)
    return {
        "codec": codec,
        "size": size,
        "fps": float(fps) if fps else None,
        "frames_per_video": round(frames / len(paths), 1),
        "keyframes_per_video": round(keyframes / len(paths), 2),
        "files": len(paths),
        "bytes": _total_bytes(paths),
    }
