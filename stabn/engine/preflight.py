"""The pre-flight check's library: what a training or evaluation job would read and write,
checked in seconds before it starts (`stabn-check`)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Optional, Sequence, Tuple

from stabn.checkpoint import extract_state_dict, load_weights
from stabn.config import Config
from stabn.data import FrameClipDataset, frame_paths, read_jpeg
from stabn.data.annotations import first_missing_folder
from stabn.data.video_dataset import VideoClipDataset
from stabn.data.video_lists import place
from stabn.data.video_reader import CountMismatch, clip_frames, open_video, video_header
from stabn.errors import DataError, write_error

# Videos of each list whose first frame is decoded: enough to catch frames of another name,
# size or format than the config expects, few enough to take no time.
SAMPLED_VIDEOS = 8


def _video_files(dataset: VideoClipDataset) -> Tuple[int, int]:
    """Every video's container opens with a video stream, and the first frames of
    `SAMPLED_VIDEOS` videos spread over them decode to at least the crop size once resized;
    returns the size (height, width) of the one with the shortest side."""
    for record in dataset.records:
        try:
            video_header(record.path)
        except DataError as e:
            raise DataError(f"{place(dataset.label_file, record)}: {e}") from None
    count, s = len(dataset.records), dataset.frame_size
    sizes = []
    for index in sorted({i * count // SAMPLED_VIDEOS for i in range(SAMPLED_VIDEOS)}):
        record = dataset.records[index]
        try:
            with open_video(record.path) as video:
                _, frame = next(clip_frames(video, [0], dataset.short_side))
        except (DataError, CountMismatch, StopIteration) as e:
            raise DataError(f"{place(dataset.label_file, record)}: {record.path}: no first frame ({e})") from None
        height, width = frame.shape[:2]
        if min(height, width) < s:
            raise DataError(f"{place(dataset.label_file, record)}: frames of {record.path} are {height}x{width}, "
                            f"smaller than the {s}x{s} crop")  # fmt: skip
        sizes.append((height, width))
    return min(sizes, key=min)


def check_videos(dataset: FrameClipDataset) -> Tuple[int, int]:
    """Every frame folder (or video file) of `dataset` exists, and the first frames of
    `SAMPLED_VIDEOS` videos spread over it decode to at least the crop size; returns the size
    (height, width) of the one with the shortest side."""
    if isinstance(dataset, VideoClipDataset):
        return _video_files(dataset)
    missing = first_missing_folder(dataset.records)
    if missing is not None:
        raise DataError(f"{dataset.label_file}:{missing.line}: frame folder {missing.path} does not exist")
    count, s = len(dataset.records), dataset.frame_size
    sizes = []
    for index in sorted({i * count // SAMPLED_VIDEOS for i in range(SAMPLED_VIDEOS)}):
        record = dataset.records[index]
        where = f"{dataset.label_file}:{record.line}"
        try:
            height, width = read_jpeg(frame_paths(record.path, [0], dataset.template)[0]).shape[1:]
        except DataError as e:
            raise DataError(f"{where}: {e}") from None
        if min(height, width) < s:
            raise DataError(f"{where}: frames of {record.path} are {height}x{width}, smaller than the {s}x{s} crop")
        sizes.append((height, width))
    return min(sizes, key=min)


def _every(source: str) -> str:
    return "every frame folder there" if source == "frames" else "every video's container opens"


def check_writable(folder: Path) -> None:
    """`folder` exists, or can be made, and takes new data: a block of it written to disk, which
    a full disk or an exhausted quota refuses where an empty file would still be made."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder) as f:
            f.write(bytes(4096))
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        raise write_error(folder, e, "choose a logdir you can write to") from None


def check_training(cfg: Config) -> str:
    """What `train_dp.py` / `train_ddp.py` would read and write; one line saying what was checked."""
    from stabn.engine.build import training_model, training_sets
    from stabn.engine.resume import read_resume_checkpoint

    train_set, val_set = training_sets(cfg)
    smallest = min((check_videos(split) for split in (train_set, val_set) if len(split)), key=min)
    found = read_resume_checkpoint(cfg)
    model = training_model(cfg, init_from=found is None)
    pretrained = cfg.model.pretrained_2d
    done = [
        f"{len(train_set)} training and {len(val_set)} validation videos, {_every(cfg.data.source)}",
        "first frames decode (the smallest {}x{})".format(*smallest),
        f"{cfg.model.name} builds" + (f" with the 2D weights of {pretrained}" if pretrained else ""),
    ]
    if cfg.model.init_from and found is None:
        done.append(f"{cfg.model.init_from} fits (model.init_from)")
    if found is not None:
        path, ckpt = found
        load_weights(model, extract_state_dict(ckpt, path), path)
        done.append(f"resumes from {path} after epoch {int(ckpt.get('epoch', 0))}")
    check_writable(Path(cfg.logdir))
    done.append(f"{cfg.logdir} writable")
    return ", ".join(done)


def check_evaluation(logdir: str, checkpoint: Optional[str], overrides: Sequence[str]) -> str:
    """What `eval.py` would read and write; one line saying what was checked."""
    from stabn.engine.eval_job import eval_model_and_data, resolve_eval_config

    cfg, path, explicit = resolve_eval_config(logdir, checkpoint, overrides)
    model, dataset = eval_model_and_data(cfg, path, explicit)
    height, width = check_videos(dataset)
    out = Path(cfg.logdir) / cfg.eval.output
    check_writable(out)
    return (
        f"{path} holds {model.spec.name}, {len(dataset)} videos to evaluate, {_every(cfg.data.source)}, first "
        f"frames decode (the smallest {height}x{width}), {out} writable"
    )
