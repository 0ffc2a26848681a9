"""Video files in the notebook API: the frames evaluation would take, the same clip as the frames
written as a folder, the resize rule, and one-line errors for files that are not usable videos."""

import sys
from fractions import Fraction

import numpy as np
import pytest
import torch
from PIL import Image

import stabn
from helpers import encode_video, lossless_codec, lossy_codec, textured_frames, unusable_videos, write_jpeg_folder
from stabn.checkpoint import save_checkpoint
from stabn.data import clip_indices, eval_starts, read_eval_clips
from stabn.data.video import VIDEO_HINT, probe_video, read_video_clips, resize_short_side, target_short_side, write_mp4
from stabn.errors import DataError, StabnError, error_message

av = pytest.importorskip("av")

T, S, N = 8, 32, 30  # clip length, crop, frames per test video
NAMES = [f"class {i}" for i in range(8)]


def expected_indices(num_frames: int, num_clips: int):
    return [clip_indices(s, num_frames, T) for s in eval_starts(num_frames, T, num_clips)]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    torch.manual_seed(0)
    built = stabn.build_model("abn_resnet18", num_classes=8, frame_length=T, frame_size=S, width=4, class_names=NAMES)
    path = tmp_path_factory.mktemp("ckpt") / "abn.pt"
    save_checkpoint(path, built, built.spec.to_dict())
    return stabn.load_pretrained(path)


@pytest.fixture(scope="module")
def same_frames(tmp_path_factory):
    """A JPEG frames folder, and the pixels it decodes to encoded losslessly in each container
    the bundled FFmpeg can write so, at odd frame rates: a video and a folder of the same frames."""
    root = tmp_path_factory.mktemp("same")
    decoded = write_jpeg_folder(root / "frames", textured_frames(N, 48, 64))
    videos = {}
    for suffix, rate in ((".mp4", Fraction(30000, 1001)), (".mkv", Fraction(15, 2))):
        codec = lossless_codec(suffix)
        if codec is not None:
            videos[suffix] = encode_video(root / f"clip{suffix}", decoded, rate, *codec[1:])
    if not videos:
        pytest.skip("this PyAV's FFmpeg has no lossless encoder (libx264rgb, ffv1)")
    return root / "frames", videos, decoded


def levels(count: int) -> np.ndarray:
    """Flat grey frames whose level encodes their index (10 + 8 i), readable after lossy coding."""
    return (10 + 8 * np.arange(count, dtype=np.uint8))[:, None, None, None].repeat(48, 1).repeat(64, 2).repeat(3, 3)


def read_levels(frames: np.ndarray) -> list:
    return [int(round((float(f.mean()) - 10) / 8)) for f in frames]


@pytest.fixture(scope="module")
def lossy_videos(tmp_path_factory):
    """Lossy videos of numbered frames in several containers and frame rates."""
    root = tmp_path_factory.mktemp("lossy")
    suffix, codec, pix = lossy_codec()
    made = {"default": encode_video(root / f"a{suffix}", levels(28), 30, codec, pix)}
    if "libvpx-vp9" in av.codecs_available:
        made["webm"] = encode_video(root / "b.webm", levels(27), Fraction(15, 2), "libvpx-vp9", "yuv420p")
    if "mpeg4" in av.codecs_available:
        made["mov"] = encode_video(root / "c.mov", levels(25), Fraction(30000, 1001), "mpeg4", "yuv420p")
    made["short"] = encode_video(root / f"short{suffix}", levels(5), 24, codec, pix)
    return made


@pytest.mark.parametrize("num_clips", [1, 3])
def test_a_video_gives_the_clips_of_its_frames_as_a_folder(same_frames, num_clips):
    folder, videos, _ = same_frames
    from_folder, folder_indices = read_eval_clips(folder, T, S, num_clips)
    for video in videos.values():
        read = read_video_clips(video, T, S, num_clips)
        assert read.info.num_frames == N and (read.info.height, read.info.width) == (48, 64)
        assert read.indices == folder_indices == expected_indices(N, num_clips)
        assert torch.equal(read.clips, from_folder)


def test_predict_and_explain_on_a_video_equal_those_on_its_frames_folder(same_frames, model):
    torch.set_num_threads(1)
    folder, videos, decoded = same_frames
    on_folder = stabn.predict(model, folder, topk=3, num_clips=2)
    assert on_folder.frame_indices == expected_indices(N, 2) and on_folder.video.num_frames == N
    for video in videos.values():
        on_video = stabn.predict(model, video, topk=3, num_clips=2)
        assert on_video == on_folder  # classes, names and probabilities of both branches, exactly
        assert on_video.frame_indices == on_folder.frame_indices and on_video.names == [
            NAMES[c] for c in on_video.classes
        ]
        e = stabn.explain(model, video, topk=3, num_clips=2)
        f = stabn.explain(model, folder, topk=3, num_clips=2)
        assert e.prediction == on_folder and e.clip == 1 and e.frame_indices == expected_indices(N, 2)[1]
        assert np.array_equal(e.frames, f.frames) and np.array_equal(e.spatial, f.spatial)
        # The model saw the decoded frames at those indices, centre-cropped.
        y, x = (48 - S) // 2, (64 - S) // 2
        assert np.array_equal(e.frames, decoded[e.frame_indices, y : y + S, x : x + S])
        # Pictures a person can read: every frame drawn at least 224 px.
        assert all(min(o.size[0], o.size[1] - 20) >= 224 for o in e.overlays)
        assert e.image.width >= 8 * 224
        frames = e.animation()
        assert len(frames) == T and len({im.size for im in frames}) == 1 and frames[0].width >= 224


def test_one_clip_by_default_and_the_mean_of_the_clips_softmax(same_frames, model):
    folder, videos, _ = same_frames
    video = next(iter(videos.values()))
    single = stabn.predict(model, video, topk=8)
    assert single.frame_indices == expected_indices(N, 1)
    clips, _ = read_eval_clips(folder, T, S, 3)
    with torch.no_grad():
        out = model(model.spec.normalize(clips))
    mean = out.logits.softmax(-1).mean(0)
    three = stabn.predict(model, video, topk=2, num_clips=3)  # the two clearly ahead, no ties
    assert three.classes == mean.topk(2).indices.tolist()
    # One clip at a time against a batch of three: the same up to the convolutions' rounding.
    assert three.probs == pytest.approx(mean.topk(2).values.tolist(), abs=1e-4)
    assert three.att_probs == pytest.approx(out.att_logits.softmax(-1).mean(0).topk(2).values.tolist(), abs=1e-4)


def test_lossy_videos_in_other_containers_and_rates_sample_the_evaluation_frames(lossy_videos, model):
    for name, video in lossy_videos.items():
        n = probe_video(video).num_frames
        assert n == {"default": 28, "webm": 27, "mov": 25, "short": 5}[name], name
        e = stabn.explain(model, video, num_clips=1)
        assert e.prediction.frame_indices == expected_indices(n, 1), name
        assert read_levels(e.frames) == e.frame_indices, name  # the frames are those indices' frames
    # Shorter than the clip: the first frame is repeated, as evaluation pads.
    assert stabn.predict(model, lossy_videos["short"]).frame_indices == [[0, 1, 2, 3, 4, 0, 0, 0]]


def test_resize_rule():
    # Unknown training size (the original's files): native size, unless smaller than the crop.
    assert target_short_side(240, 427, 224) is None
    assert target_short_side(48, 64, 32) is None
    assert target_short_side(24, 40, 32) == 32
    # Known training size: resized to it where it differs; never below the crop.
    assert target_short_side(480, 640, 224, short_side=256) == 256
    assert target_short_side(256, 340, 224, short_side=256) is None
    assert target_short_side(48, 64, 32, short_side=24) == 32


def test_videos_are_resized_to_the_training_short_side_then_centre_cropped(same_frames, tmp_path):
    folder, videos, decoded = same_frames
    video = next(iter(videos.values()))
    # A model trained on frames of short side 40: 48x64 frames become 40x53, then the centre crop.
    read = read_video_clips(video, T, S, short_side=40)
    resized = [np.asarray(resize_short_side(Image.fromarray(decoded[i]), 40)) for i in read.indices[0]]
    assert resized[0].shape == (40, 53, 3)
    y, x = int(40 / 2 - S / 2), int(53 / 2 - S / 2)
    assert np.array_equal(read.clips[0].permute(1, 2, 3, 0).numpy(), np.stack(resized)[:, y : y + S, x : x + S])
    # Frames smaller than the crop are brought up to it.
    codec = lossless_codec()
    small = encode_video(tmp_path / f"small{codec[0]}", decoded[:10, :24, :40], 25, *codec[1:])
    read = read_video_clips(small, T, S)
    expected = np.asarray(resize_short_side(Image.fromarray(decoded[read.indices[0][0], :24, :40]), S))
    assert expected.shape == (32, 53, 3)
    assert np.array_equal(read.clips[0, :, 0].permute(1, 2, 0).numpy(), expected[:, 10 : 10 + S])


def test_unusable_videos_are_one_line_errors_naming_the_file(tmp_path, model):
    for name, (path, says) in unusable_videos(tmp_path).items():
        for call in (stabn.predict, stabn.explain):
            with pytest.raises(DataError) as caught:
                call(model, path)
            line = error_message(caught.value)
            assert str(path) in line and says in line and "\n" not in str(caught.value), (name, line)


def test_without_pyav_videos_say_how_to_install_it_and_folders_still_work(same_frames, model, monkeypatch):
    folder, videos, _ = same_frames
    expected = stabn.predict(model, folder)
    monkeypatch.setitem(sys.modules, "av", None)  # makes `import av` raise ImportError
    with pytest.raises(StabnError) as caught:
        stabn.predict(model, next(iter(videos.values())))
    assert str(caught.value) == VIDEO_HINT == "PyAV is needed to read video files: pip install -e .[video]"
    assert stabn.predict(model, folder) == expected


def test_tensors_are_one_clip(model):
    clip = torch.randn(3, T, S, S)
    assert stabn.predict(model, clip).frame_indices is None
    with pytest.raises(ValueError, match="a tensor is one clip"):
        stabn.predict(model, clip, num_clips=2)


def test_write_mp4_pads_odd_sides_and_keeps_every_frame(tmp_path):
    frames = [np.full((45, 61, 3), 20 * i, dtype=np.uint8) for i in range(6)]
    codec = write_mp4(tmp_path / "a.mp4", frames, 8)
    assert codec == ("h264" if "libx264" in av.codecs_available else "mpeg4")
    with av.open(str(tmp_path / "a.mp4")) as container:
        stream = container.streams.video[0]
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        assert stream.average_rate == 8
    assert len(decoded) == 6 and decoded[0].shape == (46, 62, 3)
    assert [round(float(f[:45, :61].mean()) / 20) for f in decoded] == list(range(6))  # lossy, but close
