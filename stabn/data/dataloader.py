"""The one DataLoader builder of training, validation and evaluation, and the dataset a
config's `data` section describes."""

from __future__ import annotations

import signal
from typing import Any, List

import torch
from torch.utils.data import DataLoader

from stabn.data.annotations import read_class_names
from stabn.data.dataset import FrameClipDataset, collate_clips
from stabn.data.video_dataset import VideoClipDataset
from stabn.data.video_lists import kinetics_labels
from stabn.errors import DataError


def kinetics_class_names(data: Any, num_classes: int) -> List[str]:
    """The class names a Kinetics CSV's labels are numbered by: data.class_names, or the sorted
    labels of the training CSV."""
    if data.class_names:
        return read_class_names(data.class_names, num_classes)
    names = kinetics_labels(data.train_labels)
    if len(names) != num_classes:
        raise DataError(f"{data.train_labels}: {len(names)} labels for {num_classes} classes (model.num_classes)")
    return names


def make_dataset(
    data: Any, labels: str, mode: str, *, num_classes: int, seed: int, num_clips: int = 1, num_crops: int = 1
) -> FrameClipDataset:
    """The dataset that `data` (a config's `data` section, `stabn.config.DataConfig`) describes
    for the label file `labels`, for training (`train`) or evaluation (`eval`)."""
    common = dict(mode=mode, num_clips=num_clips, num_crops=num_crops, padding=data.padding,
                  skip_corrupt=data.skip_corrupt, flip=data.flip, seed=seed, fmt=data.label_format,
                  num_classes=num_classes)  # fmt: skip
    if data.source == "videos":
        names = kinetics_class_names(data, num_classes) if data.label_format == "kinetics" else None
        return VideoClipDataset(labels, data.root, data.frame_length, data.frame_size, **common,
                                short_side=data.short_side, class_names=names)  # fmt: skip
    return FrameClipDataset(labels, data.frames_root, data.frame_length, data.frame_size, **common,
                            template=data.frame_template)  # fmt: skip


def ignore_stop_signals(worker_id: int) -> None:
    """Loader workers leave SIGTERM / SIGINT to the main process, which stops cleanly after
    its step (a cluster's signal often reaches every process of the job)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def clip_loader(
    dataset: FrameClipDataset,
    sampler: Any,
    batch_size: int,
    *,
    num_workers: int,
    device: torch.device,
    seed: int,
    drop_last: bool = False,
) -> DataLoader:
    """The DataLoader of training, validation and `eval.py`: `ClipBatch`es of uint8 clips."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        drop_last=drop_last,
        persistent_workers=False,
        collate_fn=collate_clips,
        worker_init_fn=ignore_stop_signals,
        # its own generator: drawing worker seeds from the global one would shift dropout
        generator=torch.Generator().manual_seed(seed),
        prefetch_factor=4 if num_workers > 0 else None,
    )
