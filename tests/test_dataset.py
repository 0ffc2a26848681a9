import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from stabn.data import (
    BGR_MEAN,
    BGR_STD,
    ClipBatch,
    FrameClipDataset,
    SkippedItem,
    VideoRecord,
    collate_clips,
    eval_starts,
    load_clip,
    normalize_batch,
    read_jpeg,
)
from stabn.errors import DataError

H, W, S, T = 48, 64, 32, 4


def make_video(root, name, num_frames, height=H, width=W):
    """Frames whose red channel codes the frame index (10 i + 5), green the column (3 x) and
    blue the row (4 y); JPEG at quality 100 without chroma subsampling keeps them within 2."""
    folder = root / name
    folder.mkdir(parents=True)
    yy, xx = np.mgrid[0:height, 0:width]
    for i in range(num_frames):
        img = np.stack([np.full((height, width), 10 * i + 5), 3 * xx, 4 * yy], -1).astype(np.uint8)
        Image.fromarray(img).save(folder / ("%06d.jpg" % (i + 1)), quality=100, subsampling=0)
    return folder


def decode_view(view):
    """(frame indices, (y, x) of the crop, mirrored?) of an RGB uint8 view [3, T, S, S]."""
    v = view.double()
    frames = ((v[0].mean((1, 2)) - 5) / 10).round().long().tolist()
    x0 = round(v[1].mean().item() / 3 - (S - 1) / 2)
    y0 = round(v[2].mean().item() / 4 - (S - 1) / 2)
    mirrored = v[1, :, :, 0].mean() > v[1, :, :, -1].mean()
    return frames, (y0, x0), bool(mirrored)


@pytest.fixture
def videos(tmp_path):
    root = tmp_path / "frames"
    make_video(root, "10", 10)
    make_video(root, "20", 12)
    make_video(root, "short", 3)
    (tmp_path / "labels.txt").write_text("10 10 1\n20 12 2\nshort 3 0\n")
    return tmp_path


def test_eval_views_are_clip_major(videos):
    ds = FrameClipDataset(videos / "labels.txt", videos / "frames", T, S, mode="eval", num_clips=2, num_crops=3)
    views, label, index = ds[0]
    assert views.shape == (6, 3, T, S, S) and views.dtype == torch.uint8
    assert (label, index) == (1, 0)
    starts = eval_starts(10, T, 2)
    assert starts == [1, 5]
    expected = [(list(range(s, s + T)), (8, x)) for s in starts for x in (0, 16, 32)]
    assert [decode_view(v)[:2] for v in views] == expected
    assert not any(decode_view(v)[2] for v in views)


def test_short_video_repeats_the_first_frame(videos):
    ds = FrameClipDataset(videos / "labels.txt", videos / "frames", T, S, mode="eval")
    views, _, _ = ds[2]
    assert decode_view(views[0])[0] == [0, 1, 2, 0]
    ds = FrameClipDataset(videos / "labels.txt", videos / "frames", T, S, mode="eval", padding="loop")
    assert decode_view(ds[2][0][0])[0] == [0, 1, 2, 0]
    ds = FrameClipDataset(videos / "labels.txt", videos / "frames", T, S, mode="eval", padding="last")
    assert decode_view(ds[2][0][0])[0] == [0, 1, 2, 2]


def test_train_clips(videos):
    ds = FrameClipDataset(videos / "labels.txt", videos / "frames", T, S, mode="train", seed=7)
    seen_flips = set()
    for epoch in range(12):
        ds.set_epoch(epoch)
        clip, label, index = ds[1]
        assert clip.shape == (3, T, S, S) and (label, index) == (2, 1)
        frames, (y0, x0), mirrored = decode_view(clip)
        assert frames == list(range(frames[0], frames[0] + T)) and 0 <= frames[0] <= 12 - T
        assert 0 <= y0 <= H - S and 0 <= x0 <= W - S
        seen_flips.add(mirrored)
    assert seen_flips == {True, False}


@pytest.mark.parametrize("flip", ["horizontal", "vertical", "none"])
def test_the_configured_flip_reaches_the_training_clips(videos, flip):
    """`data.flip` through the trainer's dataset: which of the two mirrorings clips show."""
    from stabn.config import load_config
    from stabn.data import make_dataset

    cfg = load_config(
        None,
        [
            f"data.frames_root={videos}/frames",
            f"data.frame_length={T}",
            f"data.frame_size={S}",
            f"data.flip={flip}",
            "train.seed=7",
        ],
    )
    ds = make_dataset(
        cfg.data, str(videos / "labels.txt"), "train", num_classes=cfg.model.num_classes, seed=cfg.train.seed
    )
    seen = set()
    for epoch in range(12):
        ds.set_epoch(epoch)
        v = ds[1][0].double()
        left_right = bool(v[1, :, :, 0].mean() > v[1, :, :, -1].mean())  # green codes the column
        upside_down = bool(v[2, :, 0, :].mean() > v[2, :, -1, :].mean())  # blue codes the row
        seen.add((left_right, upside_down))
    assert (
        seen
        == {
            "horizontal": {(False, False), (True, False)},
            "vertical": {(False, False), (False, True)},
            "none": {(False, False)},
        }[flip]
    )


def test_clips_are_the_decoded_rgb_pixels(videos):
    ds = FrameClipDataset(videos / "labels.txt", videos / "frames", T, S, mode="eval", num_clips=2, num_crops=3)
    views, _, _ = ds[0]
    for view, (start, (y, x)) in zip(views, [(s, (8, x)) for s in eval_starts(10, T, 2) for x in (0, 16, 32)]):
        for t in range(T):
            frame = read_jpeg(videos / "frames" / "10" / ("%06d.jpg" % (start + t + 1)))
            assert torch.equal(view[:, t], frame[:, y : y + S, x : x + S])
    ds = FrameClipDataset(videos / "labels.txt", videos / "frames", T, S, mode="train", seed=3)
    for epoch in range(4):
        ds.set_epoch(epoch)
        clip, _, _ = ds[1]
        frames, (y, x), mirrored = decode_view(clip)
        for t, i in enumerate(frames):
            crop = read_jpeg(videos / "frames" / "20" / ("%06d.jpg" % (i + 1)))[:, y : y + S, x : x + S]
            assert torch.equal(clip[:, t], crop.flip(-1) if mirrored else crop)


def test_train_sampling_is_reproducible(videos):
    def run(ds, epoch, indices):
        ds.set_epoch(epoch)
        return [ds[i][0] for i in indices]

    make = lambda seed=0: FrameClipDataset(videos / "labels.txt", videos / "frames", T, S, seed=seed)  # noqa: E731
    uninterrupted = make()
    run(uninterrupted, 0, [0, 1, 2])
    expected = run(uninterrupted, 1, [2, 0, 1])
    resumed = make()  # a new process resuming at epoch 1, reading in another order
    got = run(resumed, 1, [0, 1, 2])
    assert all(torch.equal(a, b) for a, b in zip(expected, [got[2], got[0], got[1]]))
    epochs = [run(make(), e, [1])[0] for e in range(4)]
    assert any(not torch.equal(epochs[0], e) for e in epochs[1:])
    assert any(not torch.equal(a, b) for a, b in zip(run(make(0), 0, [0, 1]), run(make(1), 0, [0, 1])))


def test_loader_workers_give_the_same_batches(videos):
    ds = FrameClipDataset(videos / "labels.txt", videos / "frames", T, S, seed=5)
    ds.set_epoch(2)
    expected = collate_clips([ds[i] for i in range(3)])
    loader = DataLoader(ds, batch_size=3, num_workers=2, collate_fn=collate_clips)
    (batch,) = list(loader)
    assert isinstance(batch, ClipBatch) and batch.skipped == ()
    assert torch.equal(batch.clips, expected.clips)
    assert batch.labels.tolist() == [1, 2, 0] and batch.indices.tolist() == [0, 1, 2]


def test_getitems_fills_one_batch(videos):
    ds = FrameClipDataset(videos / "labels.txt", videos / "frames", T, S, mode="eval", num_clips=2, num_crops=3)
    batch = collate_clips(ds.__getitems__([1, 0]))
    assert batch.clips.shape == (2, 6, 3, T, S, S)
    assert torch.equal(batch.clips[0], ds[1][0]) and torch.equal(batch.clips[1], ds[0][0])
    x = normalize_batch(batch.clips, BGR_MEAN, BGR_STD)
    assert x.shape == batch.clips.shape and x.dtype == torch.float32


def test_getitems_reuses_its_buffer_only_once_released(videos):
    import pickle

    ds = FrameClipDataset(videos / "labels.txt", videos / "frames", T, S, seed=4)
    fresh = [ds[i][0].clone() for i in range(3)]
    first = collate_clips(ds.__getitems__([0, 1]))
    second = collate_clips(ds.__getitems__([2, 0]))  # the first batch is alive: not overwritten
    assert second.clips.data_ptr() != first.clips.data_ptr()
    assert torch.equal(first.clips[0], fresh[0]) and torch.equal(first.clips[1], fresh[1])
    assert torch.equal(second.clips[0], fresh[2]) and torch.equal(second.clips[1], fresh[0])
    view = second.clips[1, 1:2]  # a view of the second batch keeps its buffer
    del first, second
    third = collate_clips(ds.__getitems__([2, 1]))
    assert torch.equal(view, fresh[0][1:2])  # not overwritten
    assert torch.equal(third.clips[0], fresh[2]) and torch.equal(third.clips[1], fresh[1])
    ptr = third.clips.data_ptr()
    del third  # nothing holds its buffer now: the next batch is written into it
    fourth = collate_clips(ds.__getitems__([1, 2]))
    assert fourth.clips.data_ptr() == ptr
    assert torch.equal(fourth.clips[0], fresh[1]) and torch.equal(fourth.clips[1], fresh[2])
    del fourth
    assert collate_clips(ds.__getitems__([0])).clips.shape == (1, 3, T, S, S)  # another shape: a new one
    assert len(pickle.loads(pickle.dumps(ds))._spare) == 0


def test_a_worker_hands_its_batch_over_in_shared_memory(videos):
    from torch.utils.data import DataLoader

    ds = FrameClipDataset(videos / "labels.txt", videos / "frames", T, S, seed=4)
    batch = next(iter(DataLoader(ds, batch_size=2, num_workers=1, collate_fn=collate_clips)))
    assert batch.clips.is_shared()
    assert torch.equal(batch.clips[0], ds[0][0]) and torch.equal(batch.clips[1], ds[1][0])


def test_corrupt_frames(videos):
    frame = videos / "frames" / "20" / "000006.jpg"
    frame.write_bytes(frame.read_bytes()[:300])
    ds = FrameClipDataset(videos / "labels.txt", videos / "frames", T, S, mode="eval")
    with pytest.raises(DataError, match="corrupt JPEG .*20/000006.jpg"):
        ds[1]

    ds = FrameClipDataset(videos / "labels.txt", videos / "frames", T, S, mode="eval", skip_corrupt=True)
    item = ds[1]
    assert isinstance(item, SkippedItem) and item.index == 1 and "000006.jpg" in item.reason
    for items in ([ds[0], ds[1], ds[2]], ds.__getitems__([0, 1, 2])):
        batch = collate_clips(items)
        assert batch.clips.shape == (2, 1, 3, T, S, S)
        assert batch.indices.tolist() == [0, 2] and batch.labels.tolist() == [1, 0]
        assert len(batch.skipped) == 1 and "20/000006.jpg" in batch.skipped[0]
        assert torch.equal(batch.clips[1], ds[2][0])
    empty = collate_clips(ds.__getitems__([1]))
    assert empty.clips.shape == (0, 1, 3, T, S, S) and empty.labels.shape == (0,)


def test_bad_videos_are_named(videos):
    root = videos / "frames"
    make_video(root, "small", 4, height=24, width=64)
    make_video(root, "mixed", 2)
    Image.new("RGB", (60, 48)).save(root / "mixed" / "000003.jpg")
    records = [
        VideoRecord("small", 4, 0, ""),
        VideoRecord("mixed", 3, 0, ""),
        VideoRecord("gone", 4, 0, ""),
        VideoRecord("10", 11, 0, ""),
    ]
    ds = FrameClipDataset(records, root, T, S, mode="eval")
    with pytest.raises(DataError, match=r"frames of .*small are 24x64, smaller than the 32x32 crop"):
        ds[0]
    with pytest.raises(DataError, match=r"frame .*mixed/000003.jpg is 48x60"):
        ds[1]
    with pytest.raises(DataError, match=r"frame folder .*gone does not exist"):
        ds[2]
    with pytest.raises(DataError, match=r"missing frame .*10/000011.jpg"):
        FrameClipDataset(records[3:], root, 11, S, mode="eval")[0]


def test_arguments_are_checked(videos):
    for kwargs in (
        {"mode": "test"},
        {"num_clips": 2},
        {"mode": "eval", "num_crops": 2},
        {"padding": "zero"},
        {"flip": "both"},
    ):
        with pytest.raises(ValueError):
            FrameClipDataset(videos / "labels.txt", videos / "frames", T, S, **kwargs)
    with pytest.raises(TypeError):  # clips are RGB; normalize_batch puts them in the model's order
        FrameClipDataset(videos / "labels.txt", videos / "frames", T, S, channel_order="bgr")


def test_load_clip_equals_the_original(fixtures_dir):
    root = fixtures_dir / "preprocess"
    expected = json.loads((root / "expected_eval_clips.json").read_text())
    num_frames = {line.split()[0]: int(line.split()[1]) for line in (root / "labels.txt").read_text().splitlines()}
    for clip in expected["clips"]:
        for n in (None, num_frames[clip["video_id"]]):
            x = load_clip(root / "frames" / clip["video_id"], expected["frame_length"], expected["frame_size"], n)
            assert list(x.shape) == clip["shape"] and x.dtype == torch.float32
            samples = torch.tensor(clip["samples"], dtype=torch.float64)
            c, t, y, xx = samples[:, :4].long().unbind(1)
            assert (x[c, t, y, xx].double() - samples[:, 4]).abs().max() <= 0.07
            torch.testing.assert_close(
                x.mean((2, 3)).double(), torch.tensor(clip["mean_ct"], dtype=torch.float64), rtol=0, atol=1e-3
            )
            torch.testing.assert_close(
                x.std((2, 3)).double(), torch.tensor(clip["std_ct"], dtype=torch.float64), rtol=0, atol=1e-3
            )
            rgb = load_clip(
                root / "frames" / clip["video_id"],
                expected["frame_length"],
                expected["frame_size"],
                n,
                channel_order="rgb",
            )
            assert torch.equal(rgb, x.flip(0))


def test_load_clip_of_an_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no JPEG frames in .*empty"):
        load_clip(tmp_path / "empty", 8)
    with pytest.raises(DataError, match="frame folder .*nope does not exist"):
        load_clip(tmp_path / "nope", 8)
