"""Clips from video files, decoded with PyAV in the loader workers: the same items, sampling,
crops, flip and views as `FrameClipDataset`, whose frames a video's decoded frames stand in for
(`stabn.data.video_reader` says how they are counted, sought and indexed).

A video's frame count comes from its container when an item is read, not from the label list.
Frames are resized so that their short side is `short_side` where it is given.
"""

from __future__ import annotations

import os
from typing import Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from stabn.data.annotations import VideoRecord
from stabn.data.dataset import FrameClipDataset
from stabn.data.sampling import frame_uses
from stabn.data.video import probe_video, short_side_size
from stabn.data.video_lists import place, read_generic_videos, read_kinetics_csv, read_ssv2_json
from stabn.data.video_reader import CountMismatch, clip_frames, frames_in_order, open_video, video_header
from stabn.errors import DataError, PathLike


def read_video_records(
    source: PathLike,
    root: PathLike,
    fmt: str,
    *,
    num_classes: Optional[int] = None,
    class_names: Optional[Sequence[str]] = None,
    labelled: bool = True,
) -> List[VideoRecord]:
    """The records of a video list in `fmt` (generic, kinetics or ssv2_json) under `root`."""
    if fmt == "generic":
        return read_generic_videos(source, root, num_classes, labelled)
    if fmt == "kinetics":
        if class_names is None:
            raise ValueError("a Kinetics CSV needs the class names its labels are looked up in")
        return read_kinetics_csv(source, root, class_names, labelled)
    if fmt == "ssv2_json":
        return read_ssv2_json(source, root, num_classes, labelled)
    raise ValueError(f"video lists are generic, kinetics or ssv2_json, got {fmt!r}")


class VideoClipDataset(FrameClipDataset):
    """`FrameClipDataset`'s items from one video file per record.

    Args:
        source: a label list (read by `read_video_records` in `fmt`) or `VideoRecord`s whose
            ``path`` is the video file.
        root: the folder the list's paths are under.
        short_side: resize frames so their short side is this many pixels; None keeps them.
        class_names: the class names a Kinetics CSV's labels are looked up in.
        The others as `FrameClipDataset` (``template`` and ``backend`` do not apply).
    """

    def __init__(
        self,
        source: Union[PathLike, Sequence[VideoRecord]],
        root: Optional[PathLike],
        frame_length: int,
        frame_size: int = 224,
        mode: str = "train",
        num_clips: int = 1,
        num_crops: int = 1,
        padding: str = "first",
        skip_corrupt: bool = False,
        flip: str = "horizontal",
        seed: int = 0,
        fmt: str = "generic",
        num_classes: Optional[int] = None,
        labelled: bool = True,
        short_side: Optional[int] = None,
        class_names: Optional[Sequence[str]] = None,
    ) -> None:
        records: Sequence[VideoRecord]
        if isinstance(source, (str, os.PathLike)):
            records = read_video_records(source, root if root is not None else "", fmt, num_classes=num_classes,
                                         class_names=class_names, labelled=labelled)  # fmt: skip
        else:
            under = None if root is None else os.fspath(root)
            records = [r if under is None else r._replace(path=os.path.join(under, r.video_id)) for r in source]
        super().__init__(records, None, frame_length, frame_size, mode=mode, num_clips=num_clips, num_crops=num_crops,
                         padding=padding, skip_corrupt=skip_corrupt, flip=flip, seed=seed)  # fmt: skip
        self.label_file = os.fspath(source) if isinstance(source, (str, os.PathLike)) else None
        self.short_side = short_side

    def _where(self, index: int) -> str:
        where = place(self.label_file, self.records[index])
        return f"{where}: " if where else ""

    def _count(self, index: int) -> int:
        """Item `index`'s frame count as the reading of its clips takes it."""
        with open_video(self.records[index].path) as video:
            return video.frame_count if video.frame_count > 0 else probe_video(video.path).num_frames

    def clip_frames(self, index: int) -> List[List[int]]:
        try:
            return self._clips(index, self._count(index))[1]
        except DataError as e:
            raise DataError(f"{self._where(index)}{e}") from None

    def frame_paths(self, index: int) -> List[str]:
        """A video has one file: the frames are in it."""
        return [self.records[index].path]

    def frame_geometry(self, index: int) -> Tuple[int, int, float]:
        """(height, width) of video `index`'s frames as its clips are cropped from (after the
        resize to `short_side`), and their scale from the frames as decoded."""
        height, width = video_header(self.records[index].path)
        if self.short_side is None:
            return height, width, 1.0
        scale = self.short_side / min(height, width)
        new_width, new_height = short_side_size(width, height, self.short_side)
        return new_height, new_width, scale

    def _load(self, index: int, crops: torch.Tensor) -> None:
        try:
            self._load_video(index, crops)
        except DataError as e:
            raise DataError(f"{self._where(index)}{e}") from None

    def _load_video(self, index: int, crops: torch.Tensor) -> None:
        path = self.records[index].path
        with open_video(path) as video:
            count = video.frame_count if video.frame_count > 0 else probe_video(path).num_frames
            rng, clips = self._clips(index, count)
            try:
                frames = clip_frames(video, sorted(frame_uses(clips)), self.short_side)
                self._fill(crops, clips, rng, _tensors(frames), path, _frame_number)
                return
            except CountMismatch:
                pass
        # The container lied: the frames that decode give the count, and the clip is theirs.
        rng, clips = self._clips(index, probe_video(path).num_frames)
        frames = frames_in_order(path, sorted(frame_uses(clips)), self.short_side)
        self._fill(crops, clips, rng, _tensors(frames), path, _frame_number)


def _frame_number(index: int) -> str:
    return str(index + 1)


def _tensors(frames: Iterator[Tuple[int, np.ndarray]]) -> Iterator[Tuple[int, torch.Tensor]]:
    """Frames as `_fill` takes them: [3, H, W] views of their [H, W, 3] arrays."""
    for i, array in frames:
        yield i, torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)
