"""The explanation benchmark: its metrics on constructed maps whose answer is known, its
explainers on tiny models, and the command end to end on a tiny synthetic dataset."""

import json
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import stabn
from stabn.checkpoint import save_checkpoint
from stabn.commands.bench import main as bench_main
from stabn.data import FrameClipDataset
from stabn.data.synthetic import make_synthetic_dataset
from stabn.interpret import saliency
from stabn.interpret.benchmark import METRICS, interval
from stabn.interpret.explainers import Settings
from stabn.interpret.report import cell
from stabn.interpret.scoring import (
    bootstrap_interval,
    box_energy,
    clip_ground_truth,
    energy_in_box,
    mean_of_rows,
    pointing_game,
    ratio_of_sums,
    scored_frames,
    temporal_energy,
    temporal_hit,
)
from stabn.perf import torch_threads

T, S = 4, 32
CLASSES = 8


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny convolutions run far faster on one thread than on several."""
    with torch_threads(1):
        yield


# --------------------------------------------------------------------------- metrics


BOX = [4.0, 2.0, 8.0, 6.0]  # x0, y0, x1, y1


def peaked(y: int, x: int, frames: int = 3, size: int = 12) -> torch.Tensor:
    volume = torch.rand(frames, size, size, generator=torch.Generator().manual_seed(0)) * 0.1
    volume[:, y, x] = 1.0
    return volume


def test_pointing_is_one_for_a_peak_inside_the_box_and_zero_outside():
    boxes, in_event = [BOX] * 3, [True] * 3
    inside, outside = peaked(3, 5), peaked(9, 10)
    assert pointing_game(inside, boxes, in_event) == (3, 3)
    assert pointing_game(outside, boxes, in_event) == (0, 3)
    settings = Settings(bootstrap=50)
    assert interval([pointing_game(inside, boxes, in_event)] * 4, ratio_of_sums, settings)["value"] == 1.0
    figure = interval([pointing_game(outside, boxes, in_event)] * 4, ratio_of_sums, settings, frames=12)
    assert (figure["value"], figure["low"], figure["high"], figure["n"], figure["frames"]) == (0.0, 0.0, 0.0, 4, 12)


def test_pointing_takes_a_ratio_of_sums_over_videos():
    # Video A: 1 hit of 1 frame; video B: 0 hits of 3 frames -> 1 / 4, not the mean of 1 and 0.
    figure = interval([(1, 1), (0, 3)], ratio_of_sums, Settings(bootstrap=200))
    assert figure["value"] == 0.25 and 0.0 <= figure["low"] <= 0.25 <= figure["high"] <= 1.0


def test_the_box_metrics_score_only_event_frames_with_a_visible_target():
    assert scored_frames([BOX, None, BOX, BOX], [True, True, False, True]) == [0, 3]
    volume = peaked(3, 5, frames=4)
    assert pointing_game(volume, [BOX, None, BOX, BOX], [True, True, False, True]) == (2, 2)
    assert len(energy_in_box(volume, [BOX, None, BOX, BOX], [True, True, False, True])) == 2


def test_energy_in_box_is_the_share_of_mass_inside():
    frame = torch.zeros(12, 12)
    frame[3, 5] = 1.0  # inside
    frame[10, 10] = 3.0  # outside
    assert box_energy(frame, BOX) == pytest.approx(0.25)
    assert box_energy(torch.ones(12, 12), BOX) == pytest.approx(16 / 144)
    # A box edge through the middle of pixels counts the part of each pixel it covers.
    assert box_energy(torch.ones(4, 4), [1.5, 0.0, 2.5, 1.0]) == pytest.approx(1 / 16)
    assert box_energy(torch.ones(4, 4), [-3.0, -3.0, 9.0, 9.0]) == pytest.approx(1.0)  # box beyond the crop
    assert box_energy(torch.zeros(4, 4), BOX) == 0.0  # no mass, no share
    shares = energy_in_box(torch.stack([frame, torch.ones(12, 12)]), [BOX, BOX], [True, True])
    assert shares == pytest.approx([0.25, 16 / 144])


def test_temporal_hit_and_energy():
    window = [False, True, True, False]
    assert temporal_hit(torch.tensor([0.0, 0.2, 1.0, 0.1]), window)
    assert not temporal_hit(torch.tensor([1.0, 0.2, 0.3, 0.1]), window)
    assert temporal_energy(torch.tensor([1.0, 2.0, 1.0, 0.0]), window) == pytest.approx(0.75)
    assert temporal_energy(torch.tensor([0.0, 1.0, 1.0, 0.0]), window) == pytest.approx(1.0)
    assert temporal_energy(torch.tensor([1.0, 0.0, 0.0, 1.0]), window) == 0.0
    assert temporal_energy(torch.zeros(4), window) == 0.0


def test_bootstrap_interval_of_equal_values_has_zero_width():
    assert bootstrap_interval([0.625] * 10, resamples=200) == (0.625, 0.625)
    assert bootstrap_interval([[1.0, 4.0]] * 5, ratio_of_sums, resamples=200) == (0.25, 0.25)
    figure = interval([0.625] * 10, mean_of_rows, Settings(bootstrap=100))
    assert (figure["value"], figure["low"], figure["high"], figure["n"]) == (0.625, 0.625, 0.625, 10)


def test_bootstrap_interval_of_a_zero_one_list():
    values = [1, 0, 1, 1, 0, 1, 0, 1, 1, 1, 0, 1, 1, 0, 1, 1]
    mean = sum(values) / len(values)
    low, high = bootstrap_interval(values, resamples=1000, seed=3)
    assert 0.0 <= low < mean < high <= 1.0
    assert bootstrap_interval(values, resamples=1000, seed=3) == (low, high)  # seeded
    assert bootstrap_interval(values, resamples=1000, seed=4) != (low, high)
    narrow = bootstrap_interval(values, resamples=1000, seed=3, confidence=0.5)
    assert low <= narrow[0] <= narrow[1] <= high


def test_figures_without_videos_are_null():
    assert interval([], mean_of_rows, Settings()) == {"value": None, "low": None, "high": None, "n": 0}
    assert cell(interval([], mean_of_rows, Settings())) == "—"
    assert cell({"value": 0.8125, "low": 0.7712, "high": 0.85}) == "0.81 [0.77, 0.85]"


# --------------------------------------------------------------------------- explainers


@pytest.fixture(scope="module")
def tiny_models():
    torch.manual_seed(0)
    model = stabn.build_model("abn_resnet18", num_classes=CLASSES, frame_length=T, frame_size=S, width=4).eval()
    baseline = stabn.build_model("resnet18", num_classes=CLASSES, frame_length=T, frame_size=S, width=4).eval()
    clip = torch.randn(3, T, S, S, generator=torch.Generator().manual_seed(1))
    return model, baseline, clip


def check(explanation, temporal=True):
    volume, profile = explanation
    assert volume.shape == (T, S, S)
    assert torch.isfinite(volume).all() and (volume >= 0).all()
    if temporal:
        assert profile.shape == (T,) and (profile >= 0).all()
    else:
        assert profile is None


@pytest.mark.parametrize(
    "explain",
    [
        lambda m, c: saliency.gradcam(m, c, 2, "layer3"),
        lambda m, c: saliency.gradcam(m, c, 2, "layer4"),
        lambda m, c: saliency.input_gradient(m, c, 2),
        lambda m, c: saliency.smoothgrad(m, c, 2, samples=3, seed=0),
        lambda m, c: saliency.integrated_gradients(m, c, 2, steps=4),
        lambda m, c: saliency.stabn_attention(m, c, 2),
        lambda m, c: saliency.attention_class_map(m, c, 2),
    ],
    ids=["gradcam_layer3", "gradcam_layer4", "input_gradient", "smoothgrad", "ig", "attention", "class_map"],
)
def test_stabn_explainers_give_a_non_negative_volume(tiny_models, explain):
    model, _, clip = tiny_models
    check(explain(model, clip))


@pytest.mark.parametrize("layer", ["layer3", "layer4"])
def test_baseline_gradcam_of_a_layer_with_fewer_frames(tiny_models, layer):
    _, baseline, clip = tiny_models
    with torch.no_grad():
        frames = saliency.layer_of(baseline, layer)  # the 3D ResNet strides in time
        seen = []
        handle = frames.register_forward_hook(lambda m, i, out: seen.append(out.shape[2]))
        baseline(clip.unsqueeze(0))
        handle.remove()
    assert seen[0] < T
    check(saliency.gradcam(baseline, clip, 2, layer))


def test_upsampling_is_linear_in_time_and_bilinear_in_space():
    maps = torch.tensor([0.0, 1.0]).view(2, 1, 1).expand(2, 3, 3)
    volume = saliency.upsample_volume(maps, 4, 6)
    assert volume.shape == (4, 6, 6)
    for t, value in enumerate([0.0, 0.25, 0.75, 1.0]):  # half-pixel centres, edges clamped
        torch.testing.assert_close(volume[t], torch.full((6, 6), value))
    # Same number of frames: each frame bilinearly upsampled, as the attention maps are.
    maps = torch.rand(4, 3, 3, generator=torch.Generator().manual_seed(0))
    bilinear = F.interpolate(maps.unsqueeze(1), size=(12, 12), mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(saliency.upsample_volume(maps, 4, 12), bilinear)


def test_attention_explainers_are_the_forward_pass_maps(tiny_models):
    model, _, clip = tiny_models
    with torch.no_grad():
        out = model(clip.unsqueeze(0))
    volume, profile = saliency.stabn_attention(model, clip, 0)
    torch.testing.assert_close(profile, out.temporal_attention.flatten())
    spatial = F.interpolate(out.spatial_attention[0, 0].unsqueeze(1), size=(S, S), mode="bilinear")[:, 0]
    torch.testing.assert_close(volume, spatial * out.temporal_attention.view(T, 1, 1))
    # conv_att_common is [B, K, T, h, w]: its channel of the class.
    volume, _ = saliency.attention_class_map(model, clip, 3)
    with torch.no_grad():
        layer3 = model.layer3(model.layer2(model.layer1(model.maxpool(model.relu(model.bn1(model.conv1(clip[None])))))))
        maps = model.conv_att_common(model.layer_att_common(layer3))[0, 3]
    torch.testing.assert_close(volume, saliency.upsample_volume(maps, T, S))


def test_smoothgrad_is_seeded_and_the_floors(tiny_models):
    model, _, clip = tiny_models
    a, b = (saliency.smoothgrad(model, clip, 1, samples=2, seed=7)[0] for _ in range(2))
    assert torch.equal(a, b)
    check(saliency.random_explainer(clip, np.random.default_rng(0)))
    centre, profile = saliency.centre_prior(clip)
    check((centre, profile), temporal=False)
    peak = centre[0].argmax()
    assert divmod(int(peak), S) in {
        (S // 2 - 1, S // 2 - 1),
        (S // 2, S // 2),
        (S // 2 - 1, S // 2),
        (S // 2, S // 2 - 1),
    }
    assert torch.equal(centre[0], centre[-1])


# --------------------------------------------------------------------------- the command


@pytest.fixture(scope="module")
def bench_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("explain_bench")
    make_synthetic_dataset(root / "data", num_train=8, num_val=6, frames=8, size=40, workers=1)
    torch.manual_seed(0)
    # Clips of all 8 frames: every clip holds the event window.
    model = stabn.build_model("abn_resnet18", num_classes=CLASSES, frame_length=8, frame_size=S, width=4)
    baseline = stabn.build_model("resnet18", num_classes=CLASSES, frame_length=8, frame_size=S, width=4)
    options = stabn.build_model("abn_resnet18", num_classes=CLASSES, frame_length=8, frame_size=S, width=4,
                                attention=EXPLAIN_OPTIONS)  # fmt: skip
    (root / "run").mkdir()
    save_checkpoint(root / "run" / "stabn.pt", model, model.spec.to_dict())
    save_checkpoint(root / "baseline.pt", baseline, baseline.spec.to_dict())
    save_checkpoint(root / "options.pt", options, options.spec.to_dict())
    return root


def test_boxes_move_with_the_centre_crop(bench_files):
    data = bench_files / "data"
    truth = json.loads((data / "ground_truth.json").read_text())
    dataset = FrameClipDataset(data / "val.txt", data / "frames", 4, S, mode="eval")
    record = dataset.records[0]
    in_event, boxes = clip_ground_truth(dataset, 0, truth[record.video_id], dataset.centre_view)
    frames = dataset.clip_frames(0)[0]  # 4 of 8 frames: the middle ones
    assert frames == [2, 3, 4, 5]
    first, stop = truth[record.video_id]["event"]
    assert in_event == [first <= f < stop for f in frames]
    offset = (40 - S) // 2
    for f, box in zip(frames, boxes):
        given = truth[record.video_id]["boxes"][f]
        assert box == (
            None if given is None else [given[0] - offset, given[1] - offset, given[2] - offset, given[3] - offset]
        )


EXPLAIN_OPTIONS = {"spatial_gate": "multiply", "fusion": "product", "norm": "peak", "temporal": "frame"}


def run_bench(capsys, *args):
    code = bench_main(["explain", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.slow
def test_the_command_writes_every_explainer_and_metric(bench_files, capsys):
    out = bench_files / "out"
    code, stdout, stderr = run_bench(
        capsys, "--checkpoint", bench_files / "options.pt", "--baseline-checkpoint", bench_files / "baseline.pt",
        "--reference-checkpoint", bench_files / "run" / "stabn.pt",
        "--data", bench_files / "data", "--videos", 5, "--auc-videos", 2, "--steps", 3, "--smoothgrad-samples", 2,
        "--ig-steps", 4, "--bootstrap", 100, "--threads", 1, "--out", out, "--pictures", 1,
    )  # fmt: skip
    assert code == 0, stderr
    summary = json.loads((out / "explain.json").read_text())
    names = [
        "stabn_attention", "reference_stabn_attention", "attention_class_map", "gradcam_layer3", "gradcam_layer4",
        "baseline_gradcam_layer3", "baseline_gradcam_layer4", "input_gradient", "smoothgrad", "integrated_gradients",
        "random", "centre", "uniform_in_time",
    ]  # fmt: skip
    assert list(summary["explainers"]) == names
    assert summary["videos"] == 5 and summary["auc_videos"] == 2
    assert summary["model"]["name"] == "abn_resnet18" and summary["baseline"]["name"] == "resnet18"
    assert summary["model"]["attention"] == EXPLAIN_OPTIONS
    assert summary["reference"]["attention"] == {"spatial_gate": "residual", "fusion": "concat", "norm": "none",
                                                 "temporal": "mlp"}  # fmt: skip
    assert {"peak_on_border", "target_ratio", "spatial_range", "temporal_range"} <= set(summary["attention_statistics"])
    with Image.open(out / "pictures" / "000009.png") as picture:  # the first validation video
        assert picture.height == 40 + len(names) * (224 + 20)
    code, _, stderr = run_bench(
        capsys, "--checkpoint", bench_files / "options.pt", "--data", bench_files / "data", "--videos", 1,
        "--auc-videos", 0, "--bootstrap", 10, "--threads", 1, "--out", out / "few", "--pictures", 1,
        "--picture-explainers", "gradcam_layer3,stabn_attention", "--picture-frames", 3,
    )  # fmt: skip
    assert code == 0, stderr
    with (
        Image.open(out / "few" / "pictures" / "000009.png") as picture,
        Image.open(out / "pictures" / "000009.png") as eight,
    ):
        assert picture.height == 40 + 2 * (224 + 20) and eight.width - picture.width == 5 * 224
    assert summary["settings"]["bootstrap"] == 100 and summary["settings"]["layers"] == ["layer3", "layer4"]
    assert summary["metrics"] == [key for key, _ in METRICS]
    for name, figures in summary["explainers"].items():
        assert figures["model"] == (name.split("_")[0] if name.startswith(("baseline", "reference")) else "stabn")
        for key, _ in METRICS:
            figure = figures[key]
            if name == "centre" and key.startswith("temporal"):
                assert figure["value"] is None and figure["n"] == 0, (name, key)
                continue
            assert figure["low"] - 1e-12 <= figure["value"] <= figure["high"] + 1e-12, (name, key, figure)
            assert figure["n"] == (2 if "deletion" in key or "insertion" in key else 5), (name, key)
            if key.startswith(("pointing", "energy", "temporal")):
                assert 0.0 <= figure["low"] and figure["high"] <= 1.0, (name, key)
    # A flat profile: each of the five clips' figures is its share of event frames, and AUROC 0.5.
    uniform, share = summary["explainers"]["uniform_in_time"], event_shares(bench_files / "data", 5)
    for key in ("temporal_hit", "temporal_energy", "temporal_iou"):
        assert uniform[key]["value"] == pytest.approx(np.mean(share)), key
    assert uniform["temporal_auroc"]["value"] == 0.5
    assert summary["settings"]["sanity_explainers"] == ["stabn_attention", "gradcam_layer3"]
    sanity = summary["sanity"]
    assert sanity["videos"] == 5 and list(sanity["explainers"]) == ["stabn_attention", "gradcam_layer3"]
    stages = ["fc", "layer4", "attention", "layer3", "layer2", "layer1", "stem"]
    for name, row in sanity["explainers"].items():
        assert row["model"] == "stabn" and list(row["stages"]) == stages, name
        # A randomised Grad-CAM can be all zero, its correlation undefined: those videos are left out.
        assert all(-1.0 <= figure["value"] <= 1.0 and 1 <= figure["n"] <= 5 for figure in row["stages"].values()), name
    assert all(figure["n"] == 5 for figure in sanity["explainers"]["stabn_attention"]["stages"].values())
    assert sanity["explainers"]["stabn_attention"]["stages"]["fc"]["value"] == 1.0  # the maps come before fc
    tables = [table.splitlines() for table in (out / "explain.md").read_text().split("\n\n")]
    markdown = (out / "explain.md").read_text()
    where, when, sanity_rows = tables[0], tables[1], tables[3]
    assert [row.split(" | ")[0][2:] for row in where[2:]] == names
    assert all(row.count(" | ") == 8 for row in where)
    assert when[0] == "| explainer | temporal IoU ↑ | frame AUROC ↑ |"
    assert [row.split(" | ")[0][2:] for row in when[2:]] == names and all(row.count(" | ") == 2 for row in when)
    assert sanity_rows[0] == "| explainer | " + " | ".join(f"{stage} ↓" for stage in stages) + " |"
    assert [row.split(" | ")[0][2:] for row in sanity_rows[2:]] == ["stabn_attention", "gradcam_layer3"]
    assert "| centre | " in markdown and "— | — |" in markdown and "mass in window ↑" in where[0]
    assert markdown.splitlines()[0] in stdout


def event_shares(data, videos):
    """Each of the first `videos` validation videos' share of its (8, all in the clip) frames in
    the event window."""
    truth = json.loads((data / "ground_truth.json").read_text())
    ids = [line.split()[0] for line in (data / "val.txt").read_text().splitlines()[:videos]]
    return [(truth[i]["event"][1] - truth[i]["event"][0]) / 8 for i in ids]


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda f: ["--checkpoint", f / "baseline.pt"], "baseline.pt: not an ST-ABN checkpoint"),
        (lambda f: ["--data", f / "nowhere"], "data folder"),
        (lambda f: ["--split", "test"], "test.txt: no such label file"),
        (lambda f: ["--checkpoint", f / "data" / "val.txt"], "val.txt: not a PyTorch checkpoint"),
        (lambda f: ["--layers", "layer9"], "no layer 'layer9'"),
        (lambda f: ["--sanity-explainers", "nothing"], "--sanity-explainers: no explainer 'nothing'"),
        (lambda f: ["--sanity-videos", "-1"], "--sanity-videos must be >= 0"),
    ],
    ids=[
        "baseline-as-stabn",
        "no-data",
        "no-split",
        "not-a-checkpoint",
        "unknown-layer",
        "unknown-sanity",
        "sanity-videos",
    ],  # fmt: skip
)
def test_bad_input_is_one_line(bench_files, capsys, change, expected):
    args = {"--checkpoint": bench_files / "run" / "stabn.pt", "--data": bench_files / "data"}
    extra = change(bench_files)
    args.update(dict(zip(extra[::2], extra[1::2])))
    code, _, stderr = run_bench(capsys, *[x for kv in args.items() for x in kv], "--videos", 1, "--threads", 1)
    assert code == 2
    assert stderr.startswith("error: ") and stderr.count("\n") == 1 and expected in stderr, stderr


def test_a_split_without_ground_truth_is_named(bench_files, tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    (data / "frames").symlink_to(bench_files / "data" / "frames")
    (data / "val.txt").write_text((bench_files / "data" / "val.txt").read_text())
    checkpoint = bench_files / "run" / "stabn.pt"
    code, _, stderr = run_bench(capsys, "--checkpoint", checkpoint, "--data", data, "--videos", 1)
    assert code == 2 and "ground_truth.json: no such ground truth file" in stderr, stderr
    (data / "ground_truth.json").write_text("{}")
    code, _, stderr = run_bench(capsys, "--checkpoint", checkpoint, "--data", data, "--videos", 1)
    assert code == 2 and "no event window and boxes for video" in stderr, stderr


def test_without_captum_the_command_says_how_to_install_it(bench_files, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "captum", None)
    code, _, stderr = run_bench(
        capsys, "--checkpoint", bench_files / "run" / "stabn.pt", "--data", bench_files / "data"
    )
    assert code == 2
    assert stderr == "error: Captum is needed for the peer explainers: pip install -e .[explain]\n"


def test_map_statistics_on_constructed_maps():
    from stabn.interpret.diagnose import map_statistics

    # 2 frames of a 4 x 4 map on a 32 px clip (8 px cells); the target's box covers cell (1, 2).
    spatial = torch.full((2, 4, 4), 0.5)
    spatial[0, 0, 3] = 1.0  # frame 0 peaks on the border
    spatial[1, 1, 2] = 0.9  # frame 1 peaks on the target, inside the grid
    temporal = torch.tensor([0.2, 0.8])
    box = [16.0, 8.0, 24.0, 16.0]
    stats = map_statistics(spatial, temporal, [box, box], [True, True], 32)
    assert stats["peak_on_border"] == [1.0, 0.0]
    assert stats["target_on_border"] == [0.0, 0.0]
    assert stats["spatial_saturated"] == [pytest.approx(1 / 32)]  # the one value at 1.0
    assert stats["spatial_range"] == [pytest.approx(((1.0 - 0.5) + (0.9 - 0.5)) / 2)]
    assert stats["temporal_range"] == [pytest.approx(0.6)]
    assert "temporal_event_minus_rest" not in stats  # every frame is in the event
    assert stats["target_ratio"][0] < stats["target_ratio"][1]
    stats = map_statistics(spatial, temporal, [None, box], [False, True], 32)
    assert stats["peak_on_border"] == [0.0] and stats["temporal_event_minus_rest"] == [pytest.approx(0.6)]


def test_explanation_sheet_draws_every_row_at_a_readable_size():
    from stabn.interpret.visualize import explanation_sheet

    frames = np.zeros((4, 32, 32, 3), dtype=np.uint8)
    volume = np.zeros((4, 32, 32), dtype=np.float32)
    volume[:, 8:16, 8:16] = 1.0
    rows = [("a", volume, np.ones(4)), ("b", volume, None)]
    sheet = explanation_sheet(frames, rows, [0, 2], [[8, 8, 16, 16]] * 4, title="t")
    # Frames of 32 px are enlarged 7x to 224 px; each row holds a 20 px bar above them.
    assert sheet.size == (200 + 2 * 224, 40 + 2 * (224 + 20))
    pixels = np.asarray(sheet)
    # 0.6 x the black frame + 0.4 x jet: red (128, 0, 0) on the hot square, blue elsewhere.
    assert pixels[40 + 20 + 12 * 7, 200 + 12 * 7].tolist() == [51, 0, 0]
    assert pixels[40 + 20 + 28 * 7, 200 + 28 * 7].tolist() == [0, 0, 51]
