"""Frames of one video file for a training or evaluation clip: the count from the container,
a seek to the clip, and only the frames it needs decoded.

A frame's index is its place in decoding order, as if the video had been extracted to a frame
folder (`prepare_ssv2`): a clip from a losslessly encoded video equals the same clip from its
frames. The count is the container's: MP4's sample table, or where a container has no count
(WebM, Matroska) its video packets, one a frame, counted without decoding. Where the container
lies (a stream that ends before the count, a frame rate that does not fit the timestamps, as
with variable frame rate), the frames that decode win: the video is decoded once to count
them (`probe_video`, which also refuses damaged files) and the clip is taken by that count.

Seeking: far enough into the video, the reader seeks to the keyframe before the clip and
indexes the frames by their timestamps; the timestamps must then run one frame apart,
otherwise the reader starts again from the first frame and counts.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterator, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from stabn.data.video import _declared_seconds, _decoded, _fps, _video_stream, check_not_cut_short, resize_short_side
from stabn.errors import DataError

# Seek only when the clip starts at least this many frames in: closer to the start, decoding
# from the first frame costs less than a seek and the decoder's flush.
SEEK_AFTER = 24


class CountMismatch(Exception):
    """The container's count or timestamps do not fit the frames that decode."""


@dataclass
class OpenVideo:
    """A video file open for reading, its first video stream and what its container declares."""

    path: str
    stream: object
    frame_count: int  # the container's count
    exact: bool  # whether the count is the container's own (MP4's sample table), not its packets
    rate: Optional[Fraction]
    size: Tuple[int, int]  # (height, width) as declared


def _packets(stream) -> Tuple[int, Optional[float], Optional[float]]:
    """The video packets of `stream`, one a frame, and the first and last one's time (seconds)."""
    count, first, last = 0, None, None
    for packet in stream.container.demux(stream):
        if not packet.size:
            continue
        count += 1
        if packet.pts is not None:
            time = float(packet.pts * stream.time_base)
            first = time if first is None else min(first, time)
            last = time if last is None else max(last, time)
    return count, first, last


def _opened(path: str, stream, count: int, exact: bool) -> OpenVideo:
    rate = stream.average_rate or stream.guessed_rate
    return OpenVideo(path, stream, count, exact, Fraction(rate) if rate else None, (stream.height, stream.width))


def _one_thread(stream) -> None:
    """Decode in the calling thread: the loader's workers are the parallelism, and FFmpeg's
    slice threads cost a 240 px VP9 frame about 40% more CPU (docs/PERFORMANCE.md)."""
    stream.thread_type = "NONE"


@contextlib.contextmanager
def open_video(path: str) -> Iterator[OpenVideo]:
    """`path` open; DataError naming the file when it is missing, not a video or has no video
    stream. The count is MP4's sample table, else the video packets, one a frame, counted by
    reading the container without decoding (a millisecond for a clip of SSv2's), after which
    the file is opened again to decode from its start."""
    with _video_stream(path) as stream:
        if stream.frames and stream.frames > 0:
            _one_thread(stream)
            yield _opened(path, stream, int(stream.frames), True)
            return
        count, first, last = _packets(stream)
        check_not_cut_short(path, first, last, _fps(stream), _declared_seconds(stream))
    with _video_stream(path) as stream:
        _one_thread(stream)
        yield _opened(path, stream, count, False)


def video_header(path: str) -> Tuple[int, int]:
    """(height, width) that the container of `path` declares, read from its header alone;
    DataError as `open_video`'s."""
    with _video_stream(path) as stream:
        return stream.height, stream.width


def _array(frame, short_side: Optional[int]) -> np.ndarray:
    """One decoded frame as uint8 RGB [H, W, 3], resized so its short side is `short_side`."""
    rgb = frame.to_ndarray(format="rgb24")
    if short_side is None or min(frame.height, frame.width) == short_side:
        return rgb
    # Pillow's resize, as prepare_ssv2 --short-side and predict; from the array, which is the
    # same pixels as frame.to_image() for a millisecond less at 720p.
    return np.array(resize_short_side(Image.fromarray(rgb), short_side))  # writable, as torch wants


def _by_order(video: OpenVideo, wanted: Sequence[int], short_side: Optional[int]) -> Iterator[Tuple[int, np.ndarray]]:
    """The `wanted` frames (sorted, unique) in decoding order from the first frame, of a video
    nothing was read from yet."""
    stream = video.stream
    targets = iter(wanted)
    want = next(targets, None)
    for i, frame in enumerate(_decoded(stream, video.path)):
        if want is None:
            return
        if i == want:
            yield i, _array(frame, short_side)
            want = next(targets, None)
    if want is not None:
        raise CountMismatch(f"{video.path} ends before frame {want + 1}")


def _by_time(video: OpenVideo, wanted: Sequence[int], short_side: Optional[int]) -> Iterator[Tuple[int, np.ndarray]]:
    """The `wanted` frames after a seek to the keyframe before the first, indexed by timestamp."""
    stream, rate = video.stream, video.rate
    start = stream.start_time or 0
    per_frame = 1 / (rate * stream.time_base)  # timestamp units a frame
    stream.container.seek(int(start + wanted[0] * per_frame), stream=stream, backward=True)
    targets = iter(wanted)
    want, previous = next(targets), None
    for frame in _decoded(stream, video.path):
        if frame.pts is None:
            raise CountMismatch(f"{video.path} has frames without timestamps")
        index = round((frame.pts - start) / per_frame)
        if (previous is None and index > want) or (previous is not None and index != previous + 1):
            raise CountMismatch(f"the timestamps of {video.path} do not run one frame apart")
        previous = index
        if index == want:
            yield index, _array(frame, short_side)
            want = next(targets, None)
            if want is None:
                return
    raise CountMismatch(f"{video.path} ends before frame {want + 1}")


def clip_frames(
    video: OpenVideo, wanted: Sequence[int], short_side: Optional[int] = None
) -> Iterator[Tuple[int, np.ndarray]]:
    """The frames `wanted` (sorted, unique, 0-based in decoding order) of `video`, in order.
    Raises CountMismatch where the container's count or timestamps do not fit the frames (the
    caller then counts them, `probe_video`, and calls `frames_in_order`)."""
    if not wanted:
        return iter(())
    if wanted[0] >= SEEK_AFTER and video.rate and video.stream.time_base:
        return _by_time(video, wanted, short_side)
    return _by_order(video, wanted, short_side)


def frames_in_order(
    path: str, wanted: Sequence[int], short_side: Optional[int] = None
) -> Iterator[Tuple[int, np.ndarray]]:
    """The frames `wanted` of the file at `path` decoded from its first frame, counted in
    decoding order whatever the timestamps: the reading of a video whose container lies."""
    with open_video(path) as video:
        try:
            yield from _by_order(video, wanted, short_side)
        except CountMismatch:
            raise DataError(f"{path}: frame {wanted[-1] + 1} did not decode on a second reading") from None
