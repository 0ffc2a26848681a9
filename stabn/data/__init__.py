"""Data: annotations, frame datasets, video files, sampling, transforms, synthetic data and preparation."""

from stabn.data.annotations import VideoRecord, count_frames, optional_class_names, read_class_names, read_label_file
from stabn.data.dataloader import clip_loader, make_dataset
from stabn.data.dataset import ClipBatch, FrameClipDataset, SkippedItem, collate_clips
from stabn.data.decode import read_jpeg
from stabn.data.folder_clips import load_clip, read_centre_clip, read_eval_clips
from stabn.data.jitter import JitterConfig, JitterParams, draw_jitter_params
from stabn.data.sampling import FRAME_TEMPLATE, clip_indices, eval_starts, frame_paths, sample_rng, train_start
from stabn.data.transforms import (
    BGR_MEAN,
    BGR_STD,
    center_crop_offset,
    crop_offsets,
    denormalize,
    jitter_affine,
    mean_std,
    normalize_batch,
    orient_crops,
    random_crop_offset,
)
from stabn.data.video import VideoClips, VideoInfo, probe_video, read_video_clips

__all__ = [
    "VideoRecord",
    "count_frames",
    "optional_class_names",
    "read_class_names",
    "read_label_file",
    "clip_loader",
    "make_dataset",
    "ClipBatch",
    "FrameClipDataset",
    "SkippedItem",
    "collate_clips",
    "load_clip",
    "read_centre_clip",
    "read_eval_clips",
    "read_jpeg",
    "FRAME_TEMPLATE",
    "clip_indices",
    "eval_starts",
    "frame_paths",
    "sample_rng",
    "train_start",
    "BGR_MEAN",
    "BGR_STD",
    "JitterConfig",
    "JitterParams",
    "center_crop_offset",
    "crop_offsets",
    "orient_crops",
    "denormalize",
    "draw_jitter_params",
    "jitter_affine",
    "mean_std",
    "normalize_batch",
    "random_crop_offset",
    "VideoClips",
    "VideoInfo",
    "probe_video",
    "read_video_clips",
]
