"""Clips from folders of JPEG frames, as the original's SSv2 dataset made them.

Items are uint8 and RGB, as decoded (see `stabn.data.transforms`): the float work, the model's
channel order included, happens batched on the training device, in `normalize_batch`. Training
items are ``(clip [3, T, S, S], label, index)``; evaluation items are ``(views [V, 3, T, S, S],
label, index)`` with ``V = num_clips * num_crops`` in clip-major order (clip 0 crop 0, clip 0
crop 1, ...), for the evaluator to average over.

Training randomness comes from `sampling.sample_rng(seed, epoch, index)` only, so the data do
not depend on the number of workers or on where a run was resumed. Call `set_epoch` before
each epoch's ``iter(loader)``: workers copy the dataset when the iterator starts, which is why
``persistent_workers=True`` would keep them at the epoch they started with.

With ``skip_corrupt=True`` an item whose frames cannot be read is returned as a
`SkippedItem` (with the one-line reason) instead of raising; `collate_clips` drops those from
the batch and lists their reasons in `ClipBatch.skipped`.

Clips are channels-last in memory (see `transforms.orient_crops`); use `collate_clips`, which
keeps them so, and let `normalize_batch` make the float batch channels-first.
"""

from __future__ import annotations

import os
from collections import deque
from typing import Callable, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, default_collate, get_worker_info

from stabn.config.schema import FLIP_MODES, PADDING_MODES
from stabn.data.annotations import VideoRecord, read_label_file
from stabn.data.decode import read_jpeg
from stabn.data.sampling import (
    FRAME_TEMPLATE,
    clip_indices,
    eval_starts,
    frame_paths,
    frame_uses,
    sample_rng,
    train_start,
)
from stabn.data.transforms import crop_offsets, frame_crops, orient_crops, random_crop_offset
from stabn.errors import DataError, PathLike
from stabn.torch_compat import shared_uint8_tensor, storage_use_count

MODES = ("train", "eval")
Item = Tuple[torch.Tensor, int, int]  # (uint8 clip or views, label, dataset index)


class SkippedItem(NamedTuple):
    """Stands for an item that could not be loaded, with ``skip_corrupt=True``."""

    index: int
    reason: str
    shape: Tuple[int, ...]  # the shape the item's clip would have had


class ClipBatch(NamedTuple):
    """A collated batch; `skipped` holds the reasons of the items dropped from it."""

    clips: torch.Tensor  # uint8 RGB [B, 3, T, S, S] (train) or [B, V, 3, T, S, S] (eval)
    labels: torch.Tensor  # int64 [B]
    indices: torch.Tensor  # int64 [B], dataset indices
    skipped: Tuple[str, ...]


class _ItemBatch(list):
    """Items from `FrameClipDataset.__getitems__`; `clips` holds all their clips, stacked."""

    clips: torch.Tensor


def collate_clips(batch: Sequence[Union[Item, SkippedItem]]) -> ClipBatch:
    """Stack a list of items into a `ClipBatch`, dropping `SkippedItem`s. If every item was
    skipped, the tensors have a batch size of 0."""
    kept = [item for item in batch if not isinstance(item, SkippedItem)]
    skipped = tuple(item.reason for item in batch if isinstance(item, SkippedItem))
    if isinstance(batch, _ItemBatch) and not skipped:
        clips = batch.clips
    elif kept:
        # Stack the clips' channels-last buffers as they lie in memory (a plain copy), into
        # shared memory inside a worker as default_collate does; the batch stays channels-last.
        clips = default_collate([item[0].movedim(-4, -1) for item in kept]).movedim(-1, -4)
    else:
        clips = torch.empty((0,) + tuple(batch[0].shape), dtype=torch.uint8)
    labels = torch.tensor([item[1] for item in kept], dtype=torch.int64)
    indices = torch.tensor([item[2] for item in kept], dtype=torch.int64)
    return ClipBatch(clips, labels, indices, skipped)


def _check_options(
    mode: str, frame_length: int, frame_size: int, num_clips: int, num_crops: int, padding: str, flip: str, seed: int
) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "train" and (num_clips, num_crops) != (1, 1):
        raise ValueError("training takes one clip and one crop per video")
    if num_crops not in (1, 3):
        raise ValueError(f"num_crops must be 1 or 3, got {num_crops}")
    if num_clips < 1 or frame_length < 1 or frame_size < 1:
        raise ValueError("num_clips, frame_length and frame_size must be >= 1")
    for name, value, allowed in (("padding", padding, PADDING_MODES), ("flip", flip, FLIP_MODES)):
        if value not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")


def _under(record: VideoRecord, frames_root: PathLike) -> VideoRecord:
    """`record` with its frame folder in `frames_root`."""
    return record._replace(path=os.path.join(os.fspath(frames_root), record.video_id))


class FrameClipDataset(Dataset):
    """Clips of `frame_length` frames from one folder of JPEG frames per video, in RGB as
    decoded (`normalize_batch` gives them the model's channel order).

    Args:
        source: a label file (read with `read_label_file`) or a sequence of `VideoRecord`s.
        frames_root: folder holding the frame folders; None to use the records' ``path``.
        frame_length: frames per clip, T.
        frame_size: crop side, S (no resize: frames must be at least S x S).
        mode: ``"train"`` (random start, random crop, flip) or ``"eval"`` (evenly spaced clips,
            fixed crops).
        num_clips, num_crops: evaluation views per video (crops: 1 or 3); 1 for training.
        padding: how clips of videos shorter than T are filled (`sampling.clip_indices`).
        skip_corrupt: return a `SkippedItem` instead of raising on unreadable frames.
        flip: the training flip, applied with probability 0.5: ``"horizontal"``, ``"vertical"``
            (what the original's code does: it flips axis 1 of its ``[T, H, W, C]`` arrays) or
            ``"none"``.
        seed: base seed of the training randomness.
        template: frame file name pattern, numbered from 1.
        fmt, num_classes, labelled: passed to `read_label_file`.
        backend: JPEG decoder (`decode.read_jpeg`).
    """

    def __init__(
        self,
        source: Union[PathLike, Sequence[VideoRecord]],
        frames_root: Optional[PathLike],
        frame_length: int,
        frame_size: int = 224,
        mode: str = "train",
        num_clips: int = 1,
        num_crops: int = 1,
        padding: str = "first",
        skip_corrupt: bool = False,
        flip: str = "horizontal",
        seed: int = 0,
        template: str = FRAME_TEMPLATE,
        fmt: str = "ssv2",
        num_classes: Optional[int] = None,
        labelled: bool = True,
        backend: Optional[str] = None,
    ) -> None:
        _check_options(mode, frame_length, frame_size, num_clips, num_crops, padding, flip, seed)
        # Named with a record's line when its frame folder turns out to be missing.
        self.label_file = os.fspath(source) if isinstance(source, (str, os.PathLike)) else None
        if self.label_file is not None:
            records = read_label_file(source, frames_root, num_classes, fmt, labelled=labelled)
        else:
            records = [r if frames_root is None else _under(r, frames_root) for r in source]
        self.records: List[VideoRecord] = records
        self.frame_length = frame_length
        self.frame_size = frame_size
        self.mode = mode
        self.num_clips = num_clips
        self.num_crops = num_crops
        self.padding = padding
        self.skip_corrupt = skip_corrupt
        self.flip = flip
        self.seed = seed
        self.template = template
        self.backend = backend
        self.epoch = 0
        self._spare: deque[torch.Tensor] = deque(maxlen=1)  # see __getitems__

    def __getstate__(self) -> Dict[str, object]:
        state = self.__dict__.copy()
        state["_spare"] = deque(maxlen=1)  # a buffer is not worth pickling to a worker
        return state

    @property
    def num_views(self) -> int:
        """Views per evaluation item, V."""
        return self.num_clips * self.num_crops

    @property
    def centre_view(self) -> int:
        """Index, among an item's views, of the middle clip's centre crop."""
        return (self.num_clips // 2) * self.num_crops + self.num_crops // 2

    @property
    def item_shape(self) -> Tuple[int, ...]:
        """Shape of an item's uint8 clip (train) or views (eval)."""
        clip = (3, self.frame_length, self.frame_size, self.frame_size)
        return clip if self.mode == "train" else (self.num_views,) + clip

    def set_epoch(self, epoch: int) -> None:
        """Select the training randomness of `epoch`."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    def _clips(
        self, index: int, num_frames: Optional[int] = None
    ) -> Tuple[Optional[np.random.Generator], List[List[int]]]:
        """The training randomness of item `index` and its clips' frame indices, for a video of
        `num_frames` frames (default: its record's count)."""
        if num_frames is None:
            num_frames = self.records[index].num_frames
        if self.mode == "train":
            rng = sample_rng(self.seed, self.epoch, index)
            starts = [train_start(num_frames, self.frame_length, rng)]
        else:
            rng = None
            starts = eval_starts(num_frames, self.frame_length, self.num_clips)
        return rng, [clip_indices(s, num_frames, self.frame_length, self.padding) for s in starts]

    def clip_frames(self, index: int) -> List[List[int]]:
        """The frame indices (0-based) of each clip of item `index`, in the current epoch."""
        return self._clips(index)[1]

    def first_frame_size(self) -> Optional[Tuple[int, int]]:
        """(height, width) of the first video's first frame, as stored; None when there is no
        video or that frame cannot be opened (the loader names the problem later)."""
        if not self.records:
            return None
        try:
            return self.frame_geometry(0)[:2]
        except (OSError, ValueError, DataError):
            return None

    def frame_geometry(self, index: int) -> Tuple[int, int, float]:
        """(height, width) of video `index`'s frames as its clips are cropped from, and their
        scale from the frames as stored (1: not resized)."""
        with Image.open(self.frame_paths(index)[0]) as image:
            return image.size[1], image.size[0], 1.0

    def frame_paths(self, index: int) -> List[str]:
        """The frame files item `index` reads (each once), in the current epoch."""
        unique = sorted({i for clip in self.clip_frames(index) for i in clip})
        return frame_paths(self.records[index].path, unique, self.template)

    def _read(self, index: int, path: str) -> torch.Tensor:
        try:
            return read_jpeg(path, self.backend)
        except DataError:
            record = self.records[index]
            if not os.path.isdir(record.path):
                where = f"{self.label_file}:{record.line}: " if self.label_file and record.line else ""
                raise DataError(f"{where}frame folder {record.path} does not exist") from None
            raise

    def _load(self, index: int, crops: torch.Tensor) -> None:
        """Fill `crops` ``[V, T, S, S, 3]`` with item `index`'s views (RGB, channels-last)."""
        rng, clips = self._clips(index)
        folder = self.records[index].path
        order = sorted(frame_uses(clips))
        paths = dict(zip(order, frame_paths(folder, order, self.template)))
        frames = ((i, self._read(index, paths[i])) for i in order)
        self._fill(crops, clips, rng, frames, folder, paths.__getitem__)

    def _fill(
        self,
        crops: torch.Tensor,
        clips: List[List[int]],
        rng: Optional[np.random.Generator],
        frames: Iterable[Tuple[int, torch.Tensor]],
        source: str,
        frame_name: Callable[[int], str],
    ) -> None:
        """Copy the crops of `frames`, ``(index, [3, H, W] view of an [H, W, 3] buffer)`` in
        increasing index order, each frame of `clips` once, into `crops`; `source` names the
        video in errors, `frame_name` a frame by its index."""
        # Each frame is read once and its crops copied out at once, so that only one decoded
        # frame is alive at a time (fewer fresh pages to fault in).
        uses = frame_uses(clips)
        # Where each (view, frame) goes, unbound at once: indexing a tensor from Python costs a
        # few microseconds a call, which adds up over the frames.
        slots = [view.unbind(0) for view in crops.unbind(0)]
        offsets: List[Tuple[int, int]] = []
        size: Tuple[int, ...] = ()
        flip = "none"
        for i, frame in frames:
            if not offsets:
                size = tuple(frame.shape[1:])
                offsets, flip = self._placement(source, size, rng)
            elif tuple(frame.shape[1:]) != size:
                raise DataError(
                    f"frame {frame_name(i)} is {frame.shape[1]}x{frame.shape[2]}, the other frames "
                    f"of {source} are {size[0]}x{size[1]}"
                )
            for j, crop in enumerate(frame_crops(frame, offsets, self.frame_size)):
                crop = orient_crops(crop, flip)
                for k, t in uses[i]:
                    slots[k * len(offsets) + j][t].copy_(crop)

    def _placement(
        self, folder: str, size: Tuple[int, ...], rng: Optional[np.random.Generator]
    ) -> Tuple[List[Tuple[int, int]], str]:
        """The crop offsets and the flip of a video whose frames are `size` (H, W); training
        draws them from `rng`, the offsets first."""
        s = self.frame_size
        if min(size) < s:
            raise DataError(f"frames of {folder} are {size[0]}x{size[1]}, smaller than the {s}x{s} crop")
        if rng is None:
            return crop_offsets(size[0], size[1], s, self.num_crops), "none"
        offsets = [random_crop_offset(size[0], size[1], s, rng)]
        return offsets, self.flip if rng.random() < 0.5 else "none"

    def _item(self, index: int, crops: torch.Tensor) -> Union[Item, SkippedItem]:
        try:
            self._load(index, crops)
        except DataError as e:
            if not self.skip_corrupt:
                raise
            return SkippedItem(index, str(e), self.item_shape)
        views = crops.movedim(-1, -4)  # [V, 3, T, S, S], channels-last in memory
        return views[0] if self.mode == "train" else views, self.records[index].label, index

    def __getitem__(self, index: int) -> Union[Item, SkippedItem]:
        return self._item(index, torch.empty(self._crops_shape, dtype=torch.uint8))

    def __getitems__(self, indices: Sequence[int]) -> List[Union[Item, SkippedItem]]:
        """The items of a batch, written into one buffer that `collate_clips` takes as the batch
        as it is (DataLoader calls this rather than ``__getitem__`` when it exists); in a
        loader worker the buffer is in shared memory, so it reaches the main process uncopied.

        In the main process (``num_workers=0``) the buffer of the previous batch is written
        again once nothing made from it (batch, items, views) is alive any more, since a fresh
        one is faulted in page by page and unmapped again (docs/PERFORMANCE.md, "Loader"). The
        dataset keeps that one buffer between batches."""
        buffer = self._batch_buffer((len(indices),) + self._crops_shape)
        items = _ItemBatch(self._item(index, buffer[n]) for n, index in enumerate(indices))
        clips = buffer.movedim(-1, -4)
        items.clips = clips[:, 0] if self.mode == "train" else clips
        if get_worker_info() is None:
            self._spare.append(buffer)
        return items

    def _batch_buffer(self, shape: Tuple[int, ...]) -> torch.Tensor:
        """A buffer for a batch: the spare one when nothing made from it is alive any more (not
        when this torch cannot tell), else a new one, in shared memory inside a loader worker."""
        if get_worker_info() is not None:
            # As default_collate does in a worker: shared memory is handed to the main process as is.
            return shared_uint8_tensor(shape)
        spare = self._spare.pop() if self._spare else None
        if spare is not None and spare.shape == shape and storage_use_count(spare) == 1:
            return spare
        return torch.empty(shape, dtype=torch.uint8)

    @property
    def _crops_shape(self) -> Tuple[int, ...]:
        return (self.num_views, self.frame_length, self.frame_size, self.frame_size, 3)
