"""One frames folder read as evaluation reads it: its evaluation clips, its centre clip, and the
original's preprocessing of that clip, for the notebook API and single videos."""

from __future__ import annotations

import os
from typing import List, Optional, Tuple

import torch

from stabn.data.annotations import VideoRecord, count_frames
from stabn.data.dataset import FrameClipDataset
from stabn.data.transforms import mean_std, normalize_batch
from stabn.errors import DataError, PathLike


def read_eval_clips(
    video_dir: PathLike, frame_length: int, frame_size: int = 224, num_clips: int = 1, num_frames: Optional[int] = None
) -> Tuple[torch.Tensor, List[List[int]]]:
    """`num_clips` evaluation clips of one frames folder, centre-cropped, as evaluation takes
    them: uint8 RGB ``[K, 3, T, S, S]`` before normalisation, and each clip's 0-based frame
    indices.

    `num_frames` is the video's frame count as the label file gives it (the original's clip
    position depends on it); None counts the JPEGs in the folder."""
    video_dir = os.fspath(video_dir)
    if num_frames is None:
        num_frames = count_frames(video_dir)
    if num_frames < 1:
        raise DataError(f"no JPEG frames in {video_dir}")
    record = VideoRecord(os.path.basename(os.path.normpath(video_dir)), num_frames, -1, video_dir)
    dataset = FrameClipDataset([record], None, frame_length, frame_size, mode="eval", num_clips=num_clips)
    views, _, _ = dataset[0]
    return views, dataset.clip_frames(0)


def read_centre_clip(
    video_dir: PathLike, frame_length: int, frame_size: int = 224, num_frames: Optional[int] = None
) -> torch.Tensor:
    """The centre clip and centre crop of one frames folder as evaluation takes it: uint8 RGB
    ``[3, T, S, S]``, before normalisation (`num_frames` as in `read_eval_clips`)."""
    return read_eval_clips(video_dir, frame_length, frame_size, 1, num_frames)[0][0]


def load_clip(
    video_dir: PathLike,
    frame_length: int,
    frame_size: int = 224,
    num_frames: Optional[int] = None,
    *,
    channel_order: str = "bgr",
) -> torch.Tensor:
    """The original's evaluation preprocessing of one frames folder: the centre clip, the
    centre crop, BGR, normalised; float32 ``[3, T, S, S]``.

    `num_frames` is as in `read_centre_clip`. ``channel_order="rgb"`` gives the same clip with
    its channels (and the normalisation constants) in RGB order.
    """
    clip = read_centre_clip(video_dir, frame_length, frame_size, num_frames)
    mean, std = mean_std(channel_order)
    return normalize_batch(clip, mean, std, channel_order=channel_order)
