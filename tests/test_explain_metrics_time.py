"""The explanation benchmark's finer figures of when (temporal IoU, per-frame AUROC, the fair
temporal hit), the uniform-in-time floor, and the model-randomisation sanity check, on
constructed inputs whose answer is known and on a tiny model."""

import math

import pytest
import torch

import stabn
from stabn.interpret import saliency
from stabn.interpret.report import sanity_table
from stabn.interpret.sanity import SANITY_STAGES, cascading_correlations, model_stages, spearman
from stabn.interpret.scoring import (
    TEMPORAL_IOU_THRESHOLD,
    average_ranks,
    score_video,
    temporal_auroc,
    temporal_hit,
    temporal_iou,
)
from stabn.perf import torch_threads

WINDOW = [False, True, True, False]


@pytest.fixture(autouse=True)
def one_thread():
    with torch_threads(1):
        yield


def test_temporal_iou_selects_frames_at_half_the_peak():
    assert TEMPORAL_IOU_THRESHOLD == 0.5
    # Selected {0, 1} (0.5 is exactly half the peak, 0.49 is not); event {1, 2}: 1 / 3.
    assert temporal_iou(torch.tensor([0.5, 1.0, 0.49, 0.0]), WINDOW) == pytest.approx(1 / 3)
    assert temporal_iou(torch.tensor([0.0, 0.8, 0.7, 0.3]), WINDOW) == 1.0
    assert temporal_iou(torch.tensor([1.0, 0.0, 0.0, 0.9]), WINDOW) == 0.0
    assert temporal_iou(torch.ones(4), WINDOW) == 0.5  # a flat profile selects every frame
    assert temporal_iou(torch.zeros(4), WINDOW) == 0.0  # no peak selects nothing
    assert temporal_iou(torch.zeros(4), [False] * 4) is None


def test_temporal_auroc_counts_ties_half():
    # Event frames score 0.5 and 0.5, the others 0.2, 0.5, 0.1: each event frame beats two and
    # ties one, (2 * 2 + 2 * 0.5) / (2 * 3) = 5 / 6.
    profile = torch.tensor([0.2, 0.5, 0.5, 0.5, 0.1])
    assert temporal_auroc(profile, [False, True, True, False, False]) == pytest.approx(5 / 6)
    assert temporal_auroc(torch.tensor([0.0, 0.9, 0.8, 0.1]), WINDOW) == 1.0
    assert temporal_auroc(torch.tensor([1.0, 0.1, 0.2, 0.9]), WINDOW) == 0.0
    assert temporal_auroc(torch.ones(4), WINDOW) == 0.5
    assert temporal_auroc(torch.rand(4), [True] * 4) is None
    assert temporal_auroc(torch.rand(4), [False] * 4) is None


def test_average_ranks_share_the_mean_rank_of_ties():
    assert average_ranks(torch.tensor([3.0, 1.0, 3.0, 2.0, 3.0])).tolist() == [4.0, 1.0, 4.0, 2.0, 4.0]


def test_the_temporal_hit_of_tied_peaks_is_the_share_inside_the_window():
    assert temporal_hit(torch.ones(4), WINDOW) == 0.5
    assert temporal_hit(torch.tensor([1.0, 1.0, 0.0, 1.0]), WINDOW) == pytest.approx(1 / 3)
    assert temporal_hit(torch.tensor([0.2, 0.9, 0.1, 0.3]), WINDOW) == 1.0
    assert temporal_hit(torch.tensor([0.9, 0.2, 0.1, 0.3]), WINDOW) == 0.0


def test_the_uniform_in_time_floor_on_a_constructed_clip():
    clip = torch.zeros(3, 4, 8, 8)
    volume, profile = saliency.uniform_in_time(clip)
    centre, _ = saliency.centre_prior(clip)
    assert torch.equal(volume, centre)
    assert torch.equal(profile, torch.full((4,), float(centre[0].sum())))
    box = [2.0, 2.0, 6.0, 6.0]
    score = score_video(volume, profile, in_event=WINDOW, boxes=[box] * 4)
    assert (score.pointing_hits, score.pointing_frames, score.event_frames) == (2, 2, 2)
    # Flat in time: half the frames are in the window, whichever way it is counted.
    assert score.temporal_hit == 0.5
    assert score.temporal_energy == pytest.approx(0.5)
    assert score.temporal_iou == 0.5
    assert score.temporal_auroc == 0.5


def test_spearman_against_a_hand_computed_case_with_ties():
    # Ranks [1, 2.5, 2.5, 4] and [1, 3, 2, 4]; centred, their dot product is 4.5 and their
    # squared norms 4.5 and 5: 4.5 / sqrt(22.5) = 3 / sqrt(10).
    assert spearman(torch.tensor([1.0, 2.0, 2.0, 3.0]), torch.tensor([1.0, 3.0, 2.0, 4.0])) == pytest.approx(
        3 / math.sqrt(10)
    )
    a = torch.rand(2, 3, 3, generator=torch.Generator().manual_seed(0))
    assert spearman(a, a.exp()) == 1.0  # a monotone map keeps the ranks
    assert spearman(a, -a) == -1.0
    assert spearman(a, torch.ones(2, 3, 3)) is None


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model = stabn.build_model("abn_resnet18", num_classes=4, frame_length=4, frame_size=32, width=4).eval()
    clip = torch.randn(3, 4, 32, 32, generator=torch.Generator().manual_seed(1))
    return model, clip


def correlations(model, clip, explain):
    original, _ = explain(model, clip, 1)
    return dict(cascading_correlations(explain, model, clip, 1, original, seed=0))


def test_the_stages_of_each_model_kind():
    model = stabn.build_model("resnet18", num_classes=4, frame_length=4, frame_size=32, width=4)
    assert [name for name, _ in model_stages(model)] == ["fc", "layer4", "layer3", "layer2", "layer1", "stem"]
    assert [name for name, _ in SANITY_STAGES["stabn"]] == [
        "fc", "layer4", "attention", "layer3", "layer2", "layer1", "stem",
    ]  # fmt: skip


def test_randomising_changes_gradcam_and_leaves_the_model_alone(tiny):
    model, clip = tiny
    before = {key: value.clone() for key, value in model.state_dict().items()}
    gradcam = correlations(model, clip, lambda m, c, t: saliency.gradcam(m, c, t, "layer3"))
    assert list(gradcam) == ["fc", "layer4", "attention", "layer3", "layer2", "layer1", "stem"]
    assert all(value < 1.0 for value in gradcam.values()), gradcam
    assert correlations(model, clip, lambda m, c, t: saliency.gradcam(m, c, t, "layer3")) == gradcam  # seeded
    after = model.state_dict()
    assert all(torch.equal(before[key], after[key]) for key in before)


def test_the_attention_depends_on_its_branch_only(tiny):
    model, clip = tiny
    attention = correlations(model, clip, lambda m, c, t: saliency.stabn_attention(m, c, t))
    # The perception branch (fc, layer4) comes after the maps: they stay exactly the same.
    assert attention["fc"] == 1.0 and attention["layer4"] == 1.0
    assert attention["attention"] < 1.0


def test_a_model_independent_map_correlates_exactly_one(tiny):
    model, clip = tiny
    centre = correlations(model, clip, lambda m, c, t: saliency.centre_prior(c))
    assert centre == dict.fromkeys(centre, 1.0) and len(centre) == 7


def test_the_sanity_table():
    figure = {"value": 0.5, "low": 0.25, "high": 0.75, "n": 3}
    sanity = {"videos": 3, "seed": 0, "explainers": {"gradcam_layer3": {"model": "stabn", "stages": {"fc": figure}}}}
    lines = sanity_table(sanity)
    assert lines[-3:] == ["| explainer | fc ↓ |", "| --- | --- |", "| gradcam_layer3 | 0.50 [0.25, 0.75] |"]
    assert "3 videos" in lines[1] and "seed 0" in lines[1]
    assert sanity_table({**sanity, "videos": 0}) == [] and sanity_table(None) == []
