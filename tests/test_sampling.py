import numpy as np
import pytest

from stabn.data import clip_indices, eval_starts, frame_paths, sample_rng, train_start


def test_train_start_is_uniform_over_valid_starts():
    rng = np.random.default_rng(0)
    starts = {train_start(12, 8, rng) for _ in range(500)}
    assert starts == {0, 1, 2, 3, 4}
    assert train_start(8, 8, rng) == 0
    assert train_start(5, 8, rng) == 0  # shorter than the clip


@pytest.mark.parametrize(
    "n, t, k, expected",
    [
        (12, 8, 1, [2]),  # tick 5: int(2.5)
        (48, 32, 2, [4, 12]),  # tick 8.5: int(4.25), int(12.75)
        (100, 32, 3, [11, 34, 57]),  # tick 23
        (32, 32, 2, [0, 0]),  # tick 0.5: int(0.25), int(0.75)
        (5, 8, 2, [0, 0]),  # shorter than the clip
    ],
)
def test_eval_starts(n, t, k, expected):
    assert eval_starts(n, t, k) == expected


@pytest.mark.parametrize(
    "padding, expected",
    [("first", [0, 1, 2, 3, 4, 0, 0, 0]), ("last", [0, 1, 2, 3, 4, 4, 4, 4]), ("loop", [0, 1, 2, 3, 4, 0, 1, 2])],
)
def test_padding_of_short_videos(padding, expected):
    assert clip_indices(0, 5, 8, padding) == expected


def test_padding_repeats_the_clips_first_frame():
    # The original pads with the frame at the clip's start, not frame 0.
    assert clip_indices(3, 5, 4, "first") == [3, 4, 3, 3]
    assert clip_indices(3, 5, 4, "loop") == [3, 4, 3, 4]
    assert clip_indices(3, 5, 4, "last") == [3, 4, 4, 4]


def test_full_clip_indices():
    assert clip_indices(2, 12, 8) == list(range(2, 10))
    with pytest.raises(ValueError):
        clip_indices(12, 12, 8)
    with pytest.raises(ValueError):
        clip_indices(0, 12, 8, "mirror")


def test_frame_paths_are_numbered_from_one():
    assert frame_paths("root/101", [0, 9]) == ["root/101/000001.jpg", "root/101/000010.jpg"]
    assert frame_paths("v", [4], template="img_%05d.jpg") == ["v/img_00005.jpg"]


def test_sample_rng_depends_on_seed_epoch_index_only():
    draw = lambda *key: sample_rng(*key).integers(0, 2**31, 4).tolist()  # noqa: E731
    assert draw(1, 2, 3) == draw(1, 2, 3)
    assert len({str(draw(*key)) for key in [(1, 2, 3), (1, 2, 4), (1, 3, 3), (2, 2, 3)]}) == 4
    with pytest.raises(ValueError):
        sample_rng(0, -1, 0)
