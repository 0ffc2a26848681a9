import numpy as np
import pytest
import torch
from PIL import Image
from reference_transforms import reference_normalize_clip

import stabn.data.transforms as transforms
from stabn.data import (
    BGR_MEAN,
    BGR_STD,
    JitterConfig,
    center_crop_offset,
    crop_offsets,
    draw_jitter_params,
    jitter_affine,
    mean_std,
    normalize_batch,
    orient_crops,
    read_jpeg,
)
from stabn.errors import DataError


def random_clips(shape, seed=0, channels_last=True):
    """uint8 RGB clips [..., 3, T, H, W]; channels-last in memory, like the dataset's."""
    g = torch.Generator().manual_seed(seed)
    *lead, c, t, h, w = shape
    x = torch.randint(0, 256, (*lead, t, h, w, c), dtype=torch.uint8, generator=g)
    x = x.movedim(-1, -4)
    return x if channels_last else x.contiguous()


# --- crops, flips -----------------------------------------------------------------------------


def test_centre_crop_matches_the_original():
    assert center_crop_offset(240, 320, 224) == (8, 48)
    assert center_crop_offset(240, 427, 224) == (8, 101)  # int(101.5)
    assert center_crop_offset(5, 5, 2) == (1, 1)  # int(1.5)


def test_three_crops_span_the_longer_side():
    assert crop_offsets(240, 427, 224, 3) == [(8, 0), (8, 101), (8, 203)]
    assert crop_offsets(427, 240, 224, 3) == [(0, 8), (101, 8), (203, 8)]
    assert crop_offsets(240, 427, 224, 1) == [(8, 101)]
    with pytest.raises(ValueError):
        crop_offsets(240, 427, 224, 5)


@pytest.mark.parametrize("flip", ["none", "horizontal", "vertical"])
def test_orient_crops(flip):
    crops = torch.randint(0, 256, (2, 5, 7, 3), dtype=torch.uint8)  # [T, H, W, C] RGB
    expected = crops.numpy()  # the channels stay RGB, as decoded
    if flip == "horizontal":
        expected = expected[:, :, ::-1]
    elif flip == "vertical":
        expected = expected[:, ::-1]
    assert np.array_equal(orient_crops(crops, flip).numpy(), expected)
    if flip == "none":
        assert orient_crops(crops, flip) is crops
    with pytest.raises(ValueError):
        orient_crops(crops, "both")


# --- normalisation and jitter ------------------------------------------------------------------


def test_mean_std_orders():
    assert mean_std("bgr") == (BGR_MEAN, BGR_STD)
    assert mean_std("rgb") == (BGR_MEAN[::-1], BGR_STD[::-1])


@pytest.mark.parametrize("order", ["bgr", "rgb"])
@pytest.mark.parametrize("channels_last", [True, False])
def test_normalize_without_jitter(order, channels_last):
    x = random_clips((2, 3, 4, 6, 5), channels_last=channels_last)
    mean, std = mean_std(order)
    y = normalize_batch(x, mean, std, channel_order=order)
    assert y.dtype == torch.float32 and y.shape == x.shape and y.is_contiguous()
    ordered = x.flip(1) if order == "bgr" else x  # output plane c is RGB channel 2 - c for BGR
    expected = (ordered.double() - torch.tensor(mean).view(3, 1, 1, 1)) / torch.tensor(std).view(3, 1, 1, 1)
    torch.testing.assert_close(y.double(), expected, rtol=0, atol=1e-5)
    for i in range(2):
        torch.testing.assert_close(
            y[i], reference_normalize_clip(x[i], mean, std, channel_order=order), rtol=0, atol=1e-5
        )
    if order == "bgr":
        torch.testing.assert_close(y, normalize_batch(x, BGR_MEAN, BGR_STD), rtol=0, atol=0)  # the default


def test_channel_order_is_checked():
    x = random_clips((1, 3, 2, 4, 4))
    with pytest.raises(ValueError, match="channel_order"):
        normalize_batch(x, BGR_MEAN, BGR_STD, channel_order="bgra")
    with pytest.raises(ValueError, match="channel_order"):
        normalize_batch(x, BGR_MEAN, BGR_STD, JitterConfig(), channel_order="bgra")
    with pytest.raises(ValueError, match="channel_order"):
        reference_normalize_clip(x[0], BGR_MEAN, BGR_STD, channel_order="bgra")
    with pytest.raises(TypeError):
        JitterConfig(channel_order="bgr")  # the output order is normalize_batch's


def test_normalize_views_and_out():
    x = random_clips((2, 3, 3, 4, 6, 5))  # [B, V, 3, T, H, W]
    out = torch.full(x.shape, float("nan"))
    y = normalize_batch(x, BGR_MEAN, BGR_STD, out=out)
    assert y is out
    torch.testing.assert_close(y.flatten(0, 1), normalize_batch(x.flatten(0, 1), BGR_MEAN, BGR_STD))
    with pytest.raises(ValueError):
        normalize_batch(x, BGR_MEAN, BGR_STD, out=torch.empty(2, 3))
    with pytest.raises(ValueError):
        normalize_batch(x.float(), BGR_MEAN, BGR_STD)


@pytest.mark.parametrize("mode", ["tpn", "clip"])
@pytest.mark.parametrize("order", ["bgr", "rgb"])
def test_batched_jitter_equals_the_step_by_step_reference(mode, order, monkeypatch):
    # Tiles of 3 rows, so that the last tile of the 7 rows is a partial one.
    monkeypatch.setattr(transforms, "_TILE_BYTES", 3 * 3 * 5 * 6 * 4)
    config = JitterConfig(mode=mode)
    mean, std = mean_std(order)
    x = random_clips((4, 3, 5, 7, 6), seed=1)
    params = draw_jitter_params(4, 5, config, torch.Generator().manual_seed(2))
    y = normalize_batch(x, mean, std, config, params=params, channel_order=order)
    for i in range(4):
        expected = reference_normalize_clip(x[i], mean, std, config, params, index=i, channel_order=order)
        torch.testing.assert_close(y[i], expected, rtol=0, atol=2e-5)


def test_gates_per_frame_or_per_clip():
    g = torch.Generator().manual_seed(0)
    tpn = draw_jitter_params(64, 16, JitterConfig(mode="tpn"), g).gates
    clip = draw_jitter_params(64, 16, JitterConfig(mode="clip"), g).gates
    assert tpn.shape == clip.shape == (64, 16, 4)
    assert (clip == clip[:, :1]).all()
    assert not (tpn == tpn[:, :1]).all()
    assert 0.4 < tpn.double().mean() < 0.6


def test_jitter_draw_is_reproducible_and_in_range():
    config = JitterConfig()
    a = draw_jitter_params(256, 4, config, torch.Generator().manual_seed(5))
    b = draw_jitter_params(256, 4, config, torch.Generator().manual_seed(5))
    for u, v in zip(a, b):
        assert torch.equal(u, v)
    assert a.brightness.abs().max() <= 32 and a.hue.abs().max() <= 18
    assert 0.6 <= a.contrast.min() and a.saturation.max() <= 1.4
    assert 0.05 < a.lighting.std() < 0.15


@pytest.mark.parametrize("order", ["bgr", "rgb"])
def test_jitter_off_is_the_plain_normalisation(order):
    x = random_clips((2, 3, 4, 5, 6))
    config = JitterConfig(p=0.0, lighting_std=0.0)
    mean, std = mean_std(order)
    y = normalize_batch(x, mean, std, config, torch.Generator().manual_seed(0), channel_order=order)
    torch.testing.assert_close(y, normalize_batch(x, mean, std, channel_order=order), rtol=0, atol=1e-5)


def test_jitter_of_rgb_is_the_jitter_of_bgr_reversed():
    x = random_clips((3, 3, 4, 5, 6))
    params = draw_jitter_params(3, 4, JitterConfig(), torch.Generator().manual_seed(3))
    bgr = normalize_batch(x, *mean_std("bgr"), JitterConfig(), params=params)
    rgb = normalize_batch(x, *mean_std("rgb"), JitterConfig(), params=params, channel_order="rgb")
    torch.testing.assert_close(rgb, bgr.flip(1), rtol=0, atol=1e-5)


def test_affine_in_either_order():
    params = draw_jitter_params(2, 3, JitterConfig(), torch.Generator().manual_seed(4))
    a, b = jitter_affine(params)
    a_rgb, b_rgb = jitter_affine(params, "rgb")
    assert torch.equal(a_rgb, a.flip(-1, -2)) and torch.equal(b_rgb, b.flip(-1))
    with pytest.raises(ValueError, match="channel_order"):
        jitter_affine(params, "bgra")


def test_affine_of_single_steps():
    # Brightness alone adds delta to every channel of the frames it is drawn for.
    params = draw_jitter_params(1, 2, JitterConfig(), torch.Generator().manual_seed(0))
    gates = torch.tensor([[[True, False, False, False], [False, False, False, False]]])
    params = params._replace(gates=gates, lighting=torch.zeros(1, 3))
    a, b = jitter_affine(params)
    torch.testing.assert_close(a, torch.eye(3, dtype=torch.float64).expand(1, 2, 3, 3))
    torch.testing.assert_close(b[0, 0], params.brightness[0].expand(3))
    torch.testing.assert_close(b[0, 1], torch.zeros(3, dtype=torch.float64))


# --- decoding ----------------------------------------------------------------------------------


def test_decoders_agree_on_the_fixture(fixtures_dir):
    path = fixtures_dir / "preprocess" / "frames" / "101" / "000001.jpg"
    tv, pil = read_jpeg(path, "torchvision"), read_jpeg(path, "pillow")
    assert tv.shape == (3, 240, 320) and tv.dtype == torch.uint8
    assert torch.equal(tv, pil)


@pytest.mark.parametrize("backend", ["torchvision", "pillow"])
def test_bad_jpegs_raise_data_error(tmp_path, backend):
    good = tmp_path / "good.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(good)
    data = good.read_bytes()
    Image.new("L", (8, 6), 77).save(tmp_path / "grey.jpg")
    assert read_jpeg(tmp_path / "grey.jpg", backend).shape == (3, 6, 8)
    cases = {"truncated.jpg": data[: len(data) // 2], "empty.jpg": b"", "text.jpg": b"not a jpeg at all"}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(DataError, match=f"corrupt JPEG .*{name}"):
            read_jpeg(tmp_path / name, backend)
    with pytest.raises(DataError, match="missing frame .*nope.jpg"):
        read_jpeg(tmp_path / "nope.jpg", backend)
