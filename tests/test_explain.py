"""Attention images and explanation metrics on constructed inputs whose answer is known."""

import numpy as np
import pytest
import torch

from stabn.data import denormalize, mean_std, normalize_batch
from stabn.explain.metrics import auc, deletion_insertion, pointing_game, saliency_volume, temporal_hit
from stabn.explain.visualize import attention_image, jet, save_attention


def test_jet_end_points_and_middle():
    assert jet(np.array([0.0, 0.5, 1.0])).tolist() == [[0, 0, 128], [128, 255, 128], [128, 0, 0]]
    assert jet(np.array([-1.0, 2.0])).tolist() == [[0, 0, 128], [128, 0, 0]]  # clipped


def test_attention_image_layout():
    T, H, W = 10, 16, 12
    frames = np.full((T, H, W, 3), 200, dtype=np.uint8)
    spatial = torch.full((1, T, 4, 3), 1.0)  # jet(1) = (128, 0, 0) everywhere
    temporal = torch.linspace(0, 1, T).view(1, T, 1, 1)
    image = attention_image(frames, spatial, temporal)
    tile_h = 20 + H
    assert image.shape == (2 * tile_h, 8 * W, 3)  # rows of 8 frames, a 20 px bar above each
    for t in range(T):
        r, c = divmod(t, 8)
        bar = image[r * tile_h : r * tile_h + 20, c * W : (c + 1) * W]
        assert (bar == jet(np.array(temporal.flatten()[t].item()))).all()
        body = image[r * tile_h + 20 : (r + 1) * tile_h, c * W : (c + 1) * W]
        expected = np.round(0.6 * 200 + 0.4 * np.array([128, 0, 0]))
        assert (body == expected).all()
    assert (image[tile_h:, 2 * W :] == 0).all()  # unused cells of the last row


@pytest.mark.parametrize("order", ["bgr", "rgb"])
def test_denormalize_undoes_normalisation(order):
    rgb = torch.randint(0, 256, (3, 4, 8, 8), dtype=torch.uint8)
    mean, std = mean_std(order)
    clip = normalize_batch(rgb.unsqueeze(0), mean, std, channel_order=order)[0]
    frames = denormalize(clip, mean, std, order)
    assert np.array_equal(frames, rgb.permute(1, 2, 3, 0).numpy())


def test_saved_png_and_gif(tmp_path):
    frames = np.zeros((3, 8, 8, 3), dtype=np.uint8)
    written = save_attention(tmp_path / "v.png", frames, torch.rand(1, 3, 2, 2), torch.rand(1, 3, 1, 1), gif=True)
    assert [p.name for p in written] == ["v.png", "v.gif"]
    from PIL import Image

    assert Image.open(written[0]).size == (3 * 8, 20 + 8)
    assert Image.open(written[1]).n_frames == 3


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
