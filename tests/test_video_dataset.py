"""Video files as a data source: the same items as frame folders, bit for bit, from lossless
videos (sought into and read from the start); the count of decoded frames where the container
lies; the label lists that name videos (generic, Kinetics' CSV, SSv2's JSON); bad videos named
with their list's file and line, or skipped."""

import json
from fractions import Fraction
from pathlib import Path

import pytest
import torch

from helpers import encode_video, lossy_codec, textured_frames, unusable_videos, write_jpeg_folder
from stabn.config import load_config
from stabn.data import FrameClipDataset, SkippedItem, VideoRecord, make_dataset
from stabn.data.video_dataset import VideoClipDataset
from stabn.data.video_reader import SEEK_AFTER
from stabn.errors import DataError

av = pytest.importorskip("av")

# (suffix, encoder, pixel format, options): lossless, a keyframe every 8 frames so that seeking skips some.
LOSSLESS = [
    (".mp4", "libx264rgb", "rgb24", {"crf": "0", "g": "8"}),
    (".mkv", "ffv1", "bgr0", {"g": "8"}),
    (".webm", "libvpx-vp9", "gbrp", {"lossless": "1", "g": "8"}),
]
N, T, S = 48, 8, 32  # frames a video, a clip, the crop


def encode(path: Path, *args, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return encode_video(path, *args, **kwargs)


def lossless_videos(root: Path, suffix, codec, pix_fmt, options, videos=3):
    """Frame folders of `videos` textured videos (JPEG) and the same decoded frames encoded
    losslessly; a generic list of each: (frames list, video list)."""
    if codec not in av.codecs_available:
        pytest.skip(f"this PyAV's FFmpeg has no {codec} encoder")
    frame_lines, video_lines = [], []
    for v in range(videos):
        decoded = write_jpeg_folder(root / "frames" / f"v{v}", textured_frames(N + 4 * v, 40, 48, seed=v))
        encode(root / "videos" / f"v{v}{suffix}", decoded, 12, codec, pix_fmt, options)
        frame_lines.append(f"v{v} {v}")
        video_lines.append(f"v{v}{suffix} {v}")
    (root / "frames.txt").write_text("\n".join(frame_lines) + "\n")
    (root / "videos.txt").write_text("\n".join(video_lines) + "\n")
    return root / "frames.txt", root / "videos.txt"


def both(root, mode, **options):
    frames = FrameClipDataset(root / "frames.txt", root / "frames", T, S, mode=mode, fmt="generic", **options)
    videos = VideoClipDataset(root / "videos.txt", root / "videos", T, S, mode=mode, fmt="generic", **options)
    return frames, videos


@pytest.mark.parametrize("codec", LOSSLESS, ids=[c[1] for c in LOSSLESS])
def test_a_lossless_video_gives_its_frames_clips_bit_for_bit(tmp_path, codec):
    lossless_videos(tmp_path, *codec)
    frames, videos = both(tmp_path, "train", flip="horizontal", seed=3)
    sought = 0
    for epoch in range(4):
        frames.set_epoch(epoch)
        videos.set_epoch(epoch)
        for i in range(len(frames)):
            assert videos.clip_frames(i) == frames.clip_frames(i)
            sought += videos.clip_frames(i)[0][0] >= SEEK_AFTER
            a, b = frames[i], videos[i]
            assert torch.equal(a[0], b[0]) and a[1:] == b[1:], (epoch, i)
    assert sought > 0  # some clips were read after a seek, some from the start
    frames, videos = both(tmp_path, "eval", num_clips=3, num_crops=3)
    batch = videos.__getitems__([0, 1, 2])
    for i in range(3):
        assert torch.equal(frames[i][0], batch[i][0]) and batch[i][1] == i
    assert videos.item_shape == (9, 3, T, S, S)


def test_a_variable_frame_rate_video_counts_its_decoded_frames(tmp_path):
    """Timestamps that skip a frame time now and then: neither the declared duration nor the
    timestamps give the frames' places, the decoded frames do."""
    decoded = write_jpeg_folder(tmp_path / "frames" / "vfr", textured_frames(N, 40, 48))
    path = tmp_path / "videos" / "vfr.mkv"
    path.parent.mkdir()
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=12)
        stream.height, stream.width, stream.pix_fmt = 40, 48, "bgr0"
        stream.codec_context.time_base = stream.time_base = Fraction(1, 12)
        for i, frame in enumerate(decoded):
            image = av.VideoFrame.from_ndarray(frame, format="rgb24")
            image.pts = i + i // 5  # every fifth frame time is skipped
            for packet in stream.encode(image):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    (tmp_path / "frames.txt").write_text("vfr 0\n")
    (tmp_path / "videos.txt").write_text("vfr.mkv 0\n")
    frames, videos = both(tmp_path, "eval", num_clips=2)
    assert videos.clip_frames(0) == frames.clip_frames(0)
    assert torch.equal(frames[0][0], videos[0][0])
    frames, videos = both(tmp_path, "train", seed=1)
    for epoch in range(3):
        frames.set_epoch(epoch)
        videos.set_epoch(epoch)
        assert torch.equal(frames[0][0], videos[0][0]), epoch


def test_a_lossy_video_at_camera_size_resized_to_the_short_side(tmp_path):
    suffix, codec, pix_fmt = lossy_codec()
    encode(tmp_path / f"cam{suffix}", textured_frames(30, 240, 320), 25, codec, pix_fmt)
    (tmp_path / "list.txt").write_text(f"cam{suffix} 2\n")
    videos = VideoClipDataset(tmp_path / "list.txt", tmp_path, T, 112, mode="eval", short_side=128)
    assert videos.first_frame_size() == (128, 171)
    clip, label, index = videos[0]
    assert clip.shape == (1, 3, T, 112, 112) and (label, index) == (2, 0)
    assert clip.float().std() > 10  # a picture, not a constant


def test_bad_videos_are_named_with_their_list_line_or_skipped(tmp_path):
    bad = unusable_videos(tmp_path / "bad")
    names = [name for name in bad if name != "missing"]
    records = [VideoRecord(bad[name][0].name, 0, 0, str(bad[name][0]), line) for line, name in enumerate(names, 1)]
    dataset = VideoClipDataset(records, None, T, S, mode="eval")
    dataset.label_file = "list.txt"
    for i, name in enumerate(names):
        with pytest.raises(DataError) as raised:
            dataset[i]
        message = str(raised.value)
        # Garbage partway costs the demuxer packets too: found before decoding, as a file that ends early.
        says = "corrupt video" if name == "corrupt partway" else bad[name][1]
        assert message.startswith(f"list.txt:{i + 1}: ") and says in message and "\n" not in message, name
    dataset.skip_corrupt = True
    items = [dataset[i] for i in range(len(names))]
    assert all(isinstance(item, SkippedItem) for item in items)
    assert [item.reason.split(": ")[0] for item in items] == [f"list.txt:{i}" for i in range(1, len(names) + 1)]
    (tmp_path / "list.txt").write_text("bad/notes.mp4 0\nbad/missing.webm 1\n")
    with pytest.raises(DataError, match=r"list.txt:2: video file .*missing.webm does not exist"):
        VideoClipDataset(tmp_path / "list.txt", tmp_path, T, S)


KINETICS_CSV = """label,youtube_id,time_start,time_end,split
air drumming,abc,10,20,train
abseiling,x_y,0,10,train
air drumming,def,5,15,train
"""


def test_a_kinetics_csv_finds_its_videos_in_label_folders_or_flat(tmp_path):
    suffix, codec, pix_fmt = lossy_codec()
    clip = textured_frames(12, 40, 48)
    encode(tmp_path / "k" / "air drumming" / f"abc_000010_000020{suffix}", clip, 12, codec, pix_fmt)
    encode(tmp_path / "k" / "abseiling" / "x_y_000000_000010.mkv", clip, 12, "ffv1", "bgr0")
    encode(tmp_path / "k" / f"def_000005_000015{suffix}", clip, 12, codec, pix_fmt)
    (tmp_path / "train.csv").write_text(KINETICS_CSV)
    cfg = load_config(overrides=[
        "data.source=videos", "data.label_format=kinetics", f"data.root={tmp_path / 'k'}",
        f"data.train_labels={tmp_path / 'train.csv'}", "data.frame_length=4", "data.frame_size=32",
    ])  # fmt: skip
    dataset = make_dataset(cfg.data, cfg.data.train_labels, "eval", num_classes=2, seed=0)
    assert [(r.video_id, r.label, r.line) for r in dataset.records] == [
        (f"air drumming/abc_000010_000020{suffix}", 1, 2),
        ("abseiling/x_y_000000_000010.mkv", 0, 3),
        (f"def_000005_000015{suffix}", 1, 4),
    ]
    assert dataset[1][0].shape == (1, 3, 4, 32, 32)
    with pytest.raises(DataError, match="train.csv: 2 labels for 3 classes"):
        make_dataset(cfg.data, cfg.data.train_labels, "eval", num_classes=3, seed=0)
    (tmp_path / "val.csv").write_text(KINETICS_CSV.replace("def,5,15", "ghi,5,15"))
    with pytest.raises(DataError, match=r"val.csv:4: no video ghi_000005_000015\.\* in .*air drumming or "):
        make_dataset(cfg.data, str(tmp_path / "val.csv"), "eval", num_classes=2, seed=0)
    (tmp_path / "val.csv").write_text(KINETICS_CSV.replace("abseiling", "juggling"))
    with pytest.raises(DataError, match="val.csv:3: label 'juggling' is not one of the 2 class names"):
        make_dataset(cfg.data, str(tmp_path / "val.csv"), "eval", num_classes=2, seed=0)


def test_ssv2_json_reads_the_webm_files_as_shipped(tmp_path):
    if "libvpx-vp9" not in av.codecs_available:
        pytest.skip("this PyAV's FFmpeg has no libvpx-vp9 encoder")
    labels = {"Pushing something from left to right": "0", "Holding something": "1"}
    (tmp_path / "something-something-v2-labels.json").write_text(json.dumps(labels))
    videos = [
        {"id": "17", "template": "Holding [something]"},
        {"id": "3", "template": "Pushing [something] from left to right"},
    ]
    (tmp_path / "train.json").write_text(json.dumps(videos))
    for vid in ("17", "3"):
        encode(tmp_path / "webm" / f"{vid}.webm", textured_frames(10, 40, 48), 12, "libvpx-vp9", "yuv420p")
    cfg = load_config(overrides=[
        "data.source=videos", "data.label_format=ssv2_json", f"data.root={tmp_path / 'webm'}",
        "data.frame_length=4", "data.frame_size=32", "model.num_classes=2",
    ])  # fmt: skip
    dataset = make_dataset(cfg.data, str(tmp_path / "train.json"), "train", num_classes=2, seed=0)
    assert [(r.video_id, r.label) for r in dataset.records] == [("17.webm", 1), ("3.webm", 0)]
    assert dataset[0][0].shape == (3, 4, 32, 32)
    (tmp_path / "webm" / "3.webm").unlink()
    with pytest.raises(DataError, match=r"train.json \(entry 2\): video file .*3.webm does not exist"):
        make_dataset(cfg.data, str(tmp_path / "train.json"), "train", num_classes=2, seed=0)


def test_video_keys_that_do_not_fit_are_one_line_config_errors():
    from stabn.errors import ConfigError

    for overrides, says in (
        (
            ["data.source=videos", "data.label_format=ssv2"],
            "'data.label_format' 'ssv2' does not apply to data.source=videos",
        ),
        (["data.label_format=kinetics"], "does not apply to data.source=frames"),
        (["data.short_side=128"], "'data.short_side' resizes decoded videos"),
        (["data.source=videos", "data.label_format=generic", "data.short_side=100"], "smaller than the 224 px crop"),
        (["data.root=a", "data.frames_root=b"], "are the same key: give one"),
    ):
        with pytest.raises(ConfigError, match=says):
            load_config(overrides=overrides)
    cfg = load_config(overrides=["data.root=somewhere"])
    assert cfg.data.frames_root == cfg.data.root == "somewhere"


def test_the_preflight_check_opens_every_container_and_decodes_first_frames(tmp_path):
    from stabn.engine.preflight import check_videos

    suffix, codec, pix_fmt = lossy_codec()
    for name, (height, width) in (("a", (40, 48)), ("b", (36, 44))):
        encode(tmp_path / f"{name}{suffix}", textured_frames(6, height, width), 12, codec, pix_fmt)
    (tmp_path / "notes.mp4").write_text("not a video\n")
    (tmp_path / "list.txt").write_text(f"a{suffix} 0\nb{suffix} 1\n")
    assert check_videos(VideoClipDataset(tmp_path / "list.txt", tmp_path, T, S)) == (36, 44)
    assert check_videos(VideoClipDataset(tmp_path / "list.txt", tmp_path, T, S, short_side=40)) == (40, 48)
    with pytest.raises(DataError, match=r"list.txt:2: frames of .*b.* are 36x44, smaller than the 40x40 crop"):
        check_videos(VideoClipDataset(tmp_path / "list.txt", tmp_path, T, 40))
    (tmp_path / "list.txt").write_text(f"a{suffix} 0\nnotes.mp4 1\n")
    with pytest.raises(DataError, match=r"list.txt:2: .*notes.mp4 is not a video file PyAV can read"):
        check_videos(VideoClipDataset(tmp_path / "list.txt", tmp_path, T, S))


def test_ground_truth_boxes_follow_the_resize_and_the_crop_of_a_video(tmp_path):
    from stabn.interpret.scoring import clip_ground_truth, video_truth

    suffix, codec, pix_fmt = lossy_codec()
    encode(tmp_path / f"v7{suffix}", textured_frames(6, 40, 48), 12, codec, pix_fmt)
    (tmp_path / "list.txt").write_text(f"v7{suffix} 0\n")
    dataset = VideoClipDataset(tmp_path / "list.txt", tmp_path, 4, S, mode="eval", short_side=80)
    assert dataset.frame_geometry(0) == (80, 96, 2.0)
    truth = {"v7": {"event": [2, 4], "boxes": [[10, 10, 20, 20]] * 5 + [None]}}
    entry = video_truth(truth, dataset.records[0].video_id)
    in_event, boxes = clip_ground_truth(dataset, 0, entry, dataset.centre_view)
    assert dataset.clip_frames(0) == [[1, 2, 3, 4]] and in_event == [False, True, True, False]
    # Twice the size, then the centre crop's offset (24 rows, 32 columns) taken off.
    assert boxes == [[-12.0, -4.0, 8.0, 16.0]] * 4
