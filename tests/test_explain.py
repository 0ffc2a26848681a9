"""Attention images and explanation metrics on constructed inputs whose answer is known."""

import numpy as np
import pytest
import torch

from stabn.data import denormalize, mean_std, normalize_batch
from stabn.interpret.scoring import auc, deletion_insertion, pointing_game, saliency_volume, temporal_hit
from stabn.interpret.visualize import (
    attention_grid,
    attention_image,
    attention_tiles,
    enlarge,
    header_height,
    jet,
    save_attention,
)


def test_jet_end_points_and_middle():
    assert jet(np.array([0.0, 0.5, 1.0])).tolist() == [[0, 0, 128], [128, 255, 128], [128, 0, 0]]
    assert jet(np.array([-1.0, 2.0])).tolist() == [[0, 0, 128], [128, 0, 0]]  # clipped


def test_attention_image_layout():
    T, H, W = 10, 16, 12
    frames = np.full((T, H, W, 3), 200, dtype=np.uint8)
    spatial = torch.full((1, T, 4, 3), 1.0)  # jet(1) = (128, 0, 0) everywhere
    temporal = torch.linspace(0, 1, T).view(1, T, 1, 1)
    image = attention_image(frames, spatial, temporal, title="predicted: x")
    # Frames under 224 px are enlarged by the smallest whole factor that reaches it: 12 px x 19.
    h, w = 19 * H, 19 * W
    top, tile_h = header_height(1), 20 + h
    assert image.shape == (top + 2 * tile_h, 8 * w, 3)  # header, then rows of 8 frames, a 20 px bar above each
    for t in range(T):
        r, c = divmod(t, 8)
        bar = image[top + r * tile_h : top + r * tile_h + 20, c * w : (c + 1) * w]
        assert (bar == jet(np.array(temporal.flatten()[t].item()))).all()
        body = image[top + r * tile_h + 20 : top + (r + 1) * tile_h, c * w : (c + 1) * w]
        expected = np.round(0.6 * 200 + 0.4 * np.array([128, 0, 0]))
        assert (body == expected).all()
    assert (image[top + tile_h :, 2 * w :] == 0).all()  # unused cells of the last row
    assert (image[:top] != 255).any(axis=-1).sum() > 100  # the title and the colour bar are drawn


def test_small_frames_are_enlarged_by_blocks_and_maps_upsampled_bilinearly():
    frames = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    spatial = torch.tensor([[0.0, 1.0], [1.0, 0.0]]).expand(1, 2, 2, 2)
    tiles = attention_tiles(frames, spatial, torch.ones(1, 2, 1, 1))
    assert tiles[0].shape == (20 + 224, 224, 3)  # 4 px x 56
    big = enlarge(frames)
    assert np.array_equal(big[:, ::56, ::56], frames) and np.array_equal(big[:, 55::56, 55::56], frames)
    maps = torch.nn.functional.interpolate(spatial.reshape(2, 1, 2, 2), size=(224, 224), mode="bilinear")
    expected = np.clip(0.6 * big.astype(np.float32) + 0.4 * jet(maps[:, 0].numpy()) + 0.5, 0, 255).astype(np.uint8)
    assert np.array_equal(np.stack([t[20:] for t in tiles]), expected)
    large = np.zeros((1, 240, 320, 3), dtype=np.uint8)
    assert enlarge(large) is large  # 224 px and more: drawn as they are


@pytest.mark.parametrize("order", ["bgr", "rgb"])
def test_denormalize_undoes_normalisation(order):
    rgb = torch.randint(0, 256, (3, 4, 8, 8), dtype=torch.uint8)
    mean, std = mean_std(order)
    clip = normalize_batch(rgb.unsqueeze(0), mean, std, channel_order=order)[0]
    frames = denormalize(clip, mean, std, order)
    assert np.array_equal(frames, rgb.permute(1, 2, 3, 0).numpy())


def test_saved_png_and_gif(tmp_path):
    frames = np.zeros((3, 8, 8, 3), dtype=np.uint8)
    spatial, temporal = torch.rand(1, 3, 2, 2), torch.rand(1, 3, 1, 1)
    written = save_attention(tmp_path / "v.png", frames, spatial, temporal, gif=True, title="predicted: a")
    assert [p.name for p in written] == ["v.png", "v.gif"]
    from PIL import Image

    png = np.asarray(Image.open(written[0]).convert("RGB"))
    grid = attention_grid(attention_tiles(frames, spatial, temporal))
    assert grid.shape == (20 + 224, 3 * 224, 3)  # 8 px frames drawn 28x
    assert png.shape == (header_height(1) + 20 + 224, 3 * 224, 3)
    assert np.array_equal(png[header_height(1) :], grid)
    gif = Image.open(written[1])
    assert gif.n_frames == 3 and gif.width >= 224 and gif.height > header_height(2) + 20 + 224


def test_saliency_volume_scales_space_by_time():
    vol = saliency_volume(torch.full((1, 2, 2, 2), 0.5), torch.tensor([0.2, 1.0]).view(1, 2, 1, 1), (4, 4))
    assert vol.shape == (2, 4, 4)
    torch.testing.assert_close(vol[0], torch.full((4, 4), 0.1))
    torch.testing.assert_close(vol[1], torch.full((4, 4), 0.5))


def test_auc_trapezoid():
    assert auc([1, 0, 0, 0, 0]) == 0.125
    assert auc([0, 1, 1, 1, 1]) == 0.875
    assert auc([1, 1]) == 1.0


def test_deletion_and_insertion_with_known_answers():
    # 32 voxels (T=2, 4x4); the class evidence is 8 voxels of ones; the "model" reports the
    # fraction of the evidence present.
    clip = torch.zeros(3, 2, 4, 4)
    clip[:, 0, :2, :] = 1.0
    evidence = clip.sum()

    def prob(batch):
        return batch.sum(dim=(1, 2, 3, 4)) / evidence

    saliency = clip[0].clone()  # attention exactly on the evidence
    best = saliency.flatten().argsort(descending=True, stable=True)
    deletion, insertion = deletion_insertion(prob, clip, best, steps=4)
    assert deletion == [1.0, 0.0, 0.0, 0.0, 0.0]
    assert insertion == [0.0, 1.0, 1.0, 1.0, 1.0]
    assert (auc(deletion), auc(insertion)) == (0.125, 0.875)

    worst = best.flip(0)  # evidence last
    deletion, insertion = deletion_insertion(prob, clip, worst, steps=4)
    assert deletion == [1.0, 1.0, 1.0, 1.0, 0.0]
    assert insertion == [0.0, 0.0, 0.0, 0.0, 1.0]


def test_pointing_game_counts_event_frames_with_a_visible_target():
    sal = torch.zeros(4, 8, 8)
    sal[0, 3, 5] = 1  # peak at pixel centre (5.5, 3.5): inside the box
    sal[1, 7, 0] = 1  # outside
    sal[2, 3, 5] = 1  # a hit, but outside the event window
    sal[3, 3, 5] = 1  # target invisible
    box = [4, 2, 7, 5]
    hits, total = pointing_game(sal, [box, box, box, None], [True, True, False, True])
    assert (hits, total) == (1, 2)


def test_temporal_hit():
    assert temporal_hit(torch.tensor([0.1, 0.3, 0.9, 0.2]), [False, True, True, False])
    assert not temporal_hit(torch.tensor([0.9, 0.3, 0.1, 0.2]), [False, True, True, False])
