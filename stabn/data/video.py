"""Video files as evaluation takes them: PyAV decodes, evaluation's own sampling picks the frames.

A video is read as if its decoded frames had been written as a frame folder (what
`prepare_ssv2` does): frames are counted as they decode, at the native rate whatever the
frame rate or container, and the clips are the evaluation's (`eval_starts`, `clip_indices`
with the dataset's default padding), so a video and its frames as JPEG files give the same
clip indices, crop and pixels (up to the JPEG round trip).

Size: frames are resized (Pillow bilinear, antialiased when shrinking, as `prepare_ssv2
--short-side`) so that their short side is the model's training short side (`ModelSpec.
short_side`) where it is known and differs; where it is not known (the original's files,
trained on SSv2's native 240 px frames), the native size is kept unless the short side is
smaller than the crop, and then it is brought up to the crop. Then the centre crop, as
evaluation (`center_crop_offset`). Rotation metadata and non-square pixels are ignored, as
`prepare_ssv2` ignores them.

Damaged files are refused, not half used: the clip position depends on the video's length, so
a clip taken from the frames that happened to decode is not the clip evaluation would take.
A stream counts as damaged when decoding raises partway, or when its frames end well before
the duration the file declares for that stream (by more than a tenth and two frames).

The video is decoded twice: once to count the frames that decode (the sampling needs the
count), once to keep only the frames the clips use, so memory holds those alone.

Writing: `write_mp4` (the attention animations) and `write_video` (any encoder the bundled
FFmpeg has, as it is told: the synthetic dataset's videos).

PyAV is an optional extra (``pip install -e .[video]``), imported only when a video is read.
"""

from __future__ import annotations

import contextlib
import os
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import BinaryIO, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image

from stabn.data.sampling import clip_indices, eval_starts
from stabn.data.transforms import center_crop_offset
from stabn.errors import DataError, PathLike, StabnError
from stabn.fileio import atomic_write

VIDEO_HINT = "PyAV is needed to read video files: pip install -e .[video]"
# Names that are taken for video files even when missing (to say "video ... not found").
VIDEO_SUFFIXES = (".mp4", ".m4v", ".webm", ".mkv", ".avi", ".mov", ".mpg", ".mpeg", ".ogv", ".wmv", ".flv", ".3gp")
# A stream whose frames end before this share of its declared duration (and by more than
# TRUNCATED_FRAMES frames) is taken as cut short.
TRUNCATED_SHARE = 0.9
TRUNCATED_FRAMES = 2
# MP4 encoders in order of preference: H.264 where the bundled FFmpeg has it, else MPEG-4 Part 2.
MP4_CODECS = ("libx264", "mpeg4")


def import_av(hint: str = VIDEO_HINT):
    """PyAV, or a one-line error that says how to install it."""
    try:
        import av
    except ImportError:
        raise StabnError(hint) from None
    return av


def looks_like_video(path: PathLike) -> bool:
    """Whether `path` is read as a video file: any file, or a missing path with a video suffix
    (so that the error says "video file", not "frame folder")."""
    path = os.fspath(path)
    if os.path.isdir(path):
        return False
    return os.path.isfile(path) or path.lower().endswith(VIDEO_SUFFIXES)


@dataclass(frozen=True)
class VideoInfo:
    """A video as read: its frames that decode, their native size, its frame rate."""

    path: str
    num_frames: int
    height: int
    width: int
    fps: Optional[float] = None  # None for a frame folder, or where the file does not say
    codec: str = ""


def short_side_size(width: int, height: int, short_side: int) -> Tuple[int, int]:
    """(width, height) scaled so that the shorter of the two is `short_side`, rounded."""
    scale = short_side / min(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def resize_short_side(image: Image.Image, short_side: int) -> Image.Image:
    """`image` resized so that its short side is `short_side`: Pillow's bilinear filter, which
    averages over the footprint when shrinking (as `prepare_ssv2 --short-side`)."""
    return image.resize(short_side_size(*image.size, short_side), Image.BILINEAR)


def target_short_side(height: int, width: int, frame_size: int, short_side: Optional[int] = None) -> Optional[int]:
    """The short side a video's frames are resized to before the crop, or None to keep them.

    `short_side` (the model's training frames) wins where known; else the native size stays
    unless it is smaller than the `frame_size` crop. Never below the crop."""
    native = min(height, width)
    target = short_side if short_side is not None else native
    target = max(target, frame_size)
    return None if target == native else target


def resized_size(height: int, width: int, frame_size: int, short_side: Optional[int] = None) -> Tuple[int, int]:
    """(height, width) of the frames the crop is taken from, by `target_short_side`."""
    target = target_short_side(height, width, frame_size, short_side)
    if target is None:
        return height, width
    w, h = short_side_size(width, height, target)
    return h, w


def _reason(error: BaseException) -> str:
    return " ".join(str(getattr(error, "strerror", None) or error).split())


@contextlib.contextmanager
def _video_stream(path: str) -> Iterator:
    """The first video stream of `path`, its container open; DataError naming the file when it
    is missing, not a video, or has no video stream."""
    av = import_av()
    if not os.path.exists(path):
        raise DataError(f"video file {path} does not exist")
    if not os.path.isfile(path):
        raise DataError(f"{path} is not a video file")
    try:
        container = av.open(path)
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise DataError(f"{path} is not a video file PyAV can read ({_reason(e)})") from None
    with container:
        if not container.streams.video:
            raise DataError(f"{path} has no video stream")
        yield container.streams.video[0]


def _decoded(stream, path: str) -> Iterator:
    """The frames of `stream` in decoding order; DataError when decoding fails partway."""
    av = import_av()
    count = 0
    try:
        for frame in stream.container.decode(stream):
            yield frame
            count += 1
    except av.error.FFmpegError as e:
        if count == 0:
            raise DataError(f"no frame of {path} could be decoded ({_reason(e)})") from None
        raise DataError(
            f"corrupt video {path}: decoding failed after frame {count} ({_reason(e)}); "
            "partly decodable videos are refused"
        ) from None


def _declared_seconds(stream) -> Optional[float]:
    """The duration the file declares for this stream (not the container's, which covers the
    audio too); None where it declares none."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    tag = {k.upper(): v for k, v in stream.metadata.items()}.get("DURATION", "")
    match = re.fullmatch(r"(\d+):(\d+):(\d+(?:\.\d+)?)", tag.strip())  # Matroska's per-track tag
    if match:
        hours, minutes, seconds = match.groups()
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    return None


def _fps(stream) -> Optional[float]:
    rate = stream.average_rate or stream.guessed_rate
    return float(rate) if rate else None


def probe_video(path: PathLike) -> VideoInfo:
    """Decode `path` once to count its frames and check that it decodes to the end.

    Raises:
        DataError: naming the file, when it is missing, not a video, has no video stream or
            no decodable frame, or is damaged partway (see the module's notes).
    """
    path = os.fspath(path)
    count, size, first, last = 0, (0, 0), None, None
    with _video_stream(path) as stream:
        for frame in _decoded(stream, path):
            if count == 0:
                size, first = (frame.height, frame.width), frame.time
            count, last = count + 1, frame.time
        fps, declared, codec = _fps(stream), _declared_seconds(stream), stream.codec_context.name
    if count == 0:
        raise DataError(f"{path} has no decodable video frame")
    check_not_cut_short(path, first, last, fps, declared)
    return VideoInfo(path, count, size[0], size[1], fps, codec)


def check_not_cut_short(
    path: str, first: Optional[float], last: Optional[float], fps: Optional[float], declared: Optional[float]
) -> None:
    """DataError when frames from `first` to `last` seconds (at `fps`) end well before the
    `declared` duration of their stream: the file was cut short or is damaged."""
    if not (declared and fps and first is not None and last is not None):
        return
    end = last - first + 1.0 / fps
    if end < declared * TRUNCATED_SHARE and declared - end > TRUNCATED_FRAMES / fps:
        raise DataError(
            f"corrupt video {path}: its frames end at {end:.2f} s of the {declared:.2f} s it declares "
            "(cut short or damaged); partly decodable videos are refused"
        )


def _crop(image: Image.Image, frame_size: int, short_side: Optional[int]) -> np.ndarray:
    """One decoded RGB frame resized by the rule and centre-cropped: uint8 [S, S, 3]."""
    target = target_short_side(image.height, image.width, frame_size, short_side)
    if target is not None:
        image = resize_short_side(image, target)
    y, x = center_crop_offset(image.height, image.width, frame_size)
    return np.asarray(image)[y : y + frame_size, x : x + frame_size]


def read_video_frames(
    path: PathLike, indices: Sequence[int], frame_size: int, short_side: Optional[int] = None
) -> Dict[int, np.ndarray]:
    """The frames `indices` (0-based, in decoding order) of `path`, resized by the rule and
    centre-cropped: uint8 RGB [S, S, 3] each. Decoding stops after the last one wanted."""
    path = os.fspath(path)
    wanted = set(indices)
    frames: Dict[int, np.ndarray] = {}
    if not wanted:
        return frames
    with _video_stream(path) as stream:
        for i, frame in enumerate(_decoded(stream, path)):
            if i in wanted:
                frames[i] = _crop(frame.to_image(), frame_size, short_side)
            if i >= max(wanted):
                break
    missing = sorted(wanted - frames.keys())
    if missing:
        raise DataError(f"frame {missing[0] + 1} of {path} did not decode on a second reading")
    return frames


@dataclass
class VideoClips:
    """Evaluation clips of one video, before normalisation."""

    clips: torch.Tensor  # uint8 RGB [K, 3, T, S, S]
    indices: List[List[int]]  # per clip, the 0-based frame indices it holds
    info: VideoInfo


def read_video_clips(
    path: PathLike,
    frame_length: int,
    frame_size: int = 224,
    num_clips: int = 1,
    short_side: Optional[int] = None,
    padding: str = "first",
) -> VideoClips:
    """`num_clips` evaluation clips of the video at `path`, as `FrameClipDataset` in eval mode
    takes them from the same frames as a folder: evenly spaced starts, `frame_length` frames,
    the centre crop of `frame_size` after the resize rule of `target_short_side`."""
    info = probe_video(path)
    starts = eval_starts(info.num_frames, frame_length, num_clips)
    indices = [clip_indices(s, info.num_frames, frame_length, padding) for s in starts]
    frames = read_video_frames(path, [i for clip in indices for i in clip], frame_size, short_side)
    clips = np.stack([np.stack([frames[i] for i in clip]) for clip in indices])  # [K, T, S, S, 3]
    return VideoClips(torch.from_numpy(clips).permute(0, 4, 1, 2, 3), indices, info)


def available_mp4_codec() -> Optional[str]:
    """The first of `MP4_CODECS` the bundled FFmpeg can encode; None where it has neither."""
    av = import_av()
    return next((name for name in MP4_CODECS if name in av.codecs_available), None)


# The animations' MP4 encoders' options: overlays and text stay sharp (MPEG-4 Part 2's default
# bit rate, about 200 kb/s, smears them).
_MP4_OPTIONS = {"libx264": {"crf": "18"}, "mpeg4": {"b": "4000000"}}


def write_mp4(path: PathLike, frames: Sequence[np.ndarray], fps: float) -> str:
    """Encode uint8 RGB frames of one size as an MP4 (H.264, else MPEG-4 Part 2, in yuv420p,
    which wants even sides: an odd side gains an edge-copied row or column); return the codec's
    name. Written atomically (`fileio.atomic_write`), as every picture."""
    codec = available_mp4_codec()
    if codec is None:
        raise StabnError(f"this PyAV's FFmpeg has none of the MP4 encoders {', '.join(MP4_CODECS)}")
    h, w = frames[0].shape[:2]
    pad = ((0, h % 2), (0, w % 2), (0, 0))
    padded = [np.pad(frame, pad, mode="edge") for frame in frames]
    write_video(path, padded, fps, codec=codec, pix_fmt="yuv420p", container="mp4", options=_MP4_OPTIONS[codec])
    return "h264" if codec == "libx264" else codec


def has_encoder(name: str) -> bool:
    """Whether the bundled FFmpeg has the encoder `name` (libx264, libvpx-vp9, ffv1, ...)."""
    return name in import_av().codecs_available


def write_video(
    path: PathLike,
    frames: Sequence[np.ndarray],
    fps: float,
    *,
    codec: str,
    pix_fmt: str,
    container: str,
    options: Optional[Dict[str, str]] = None,
) -> None:
    """Encode uint8 RGB frames [H, W, 3] of one size, as they are (no padding), with FFmpeg's
    encoder `codec` in `pix_fmt` and its `options`, in the `container` format (FFmpeg's name:
    mp4, webm, matroska) at `fps` frames a second. Written atomically (`fileio.atomic_write`)
    and bit-exact (FFmpeg's fflags +bitexact: no random ids or dates), so that the same frames
    give the same bytes."""
    av = import_av()

    def encode(file: BinaryIO) -> None:
        with av.open(file, "w", format=container, container_options={"fflags": "+bitexact"}) as output:
            stream = output.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
            stream.height, stream.width = frames[0].shape[:2]
            stream.pix_fmt = pix_fmt
            stream.options = dict(options or {})
            for frame in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                    output.mux(packet)
            for packet in stream.encode():
                output.mux(packet)

    atomic_write(path, encode)
