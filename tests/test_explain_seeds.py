"""`stabn-bench explain-seeds`: runs of the explanation benchmark that differ only in their seed,
combined into the mean and the range over seeds, exactly, and one-line errors for runs that do
not belong together."""

import copy
import json

import pytest
import torch

import stabn
from stabn.checkpoint import save_checkpoint
from stabn.commands.bench import main as bench_main
from stabn.data.synthetic import make_synthetic_dataset
from stabn.perf import torch_threads


@pytest.fixture(scope="module")
def one_run(tmp_path_factory):
    """The explain.json of a real benchmark run: an untrained ST-ABN on 3 tiny videos."""
    root = tmp_path_factory.mktemp("explain_seeds")
    make_synthetic_dataset(root / "data", num_train=2, num_val=3, frames=4, size=36, workers=1)
    torch.manual_seed(0)
    model = stabn.build_model("abn_resnet18", num_classes=8, frame_length=4, frame_size=32, width=4)
    save_checkpoint(root / "stabn.pt", model, model.spec.to_dict())
    with torch_threads(1):
        code = bench_main([
            "explain", "--checkpoint", str(root / "stabn.pt"), "--data", str(root / "data"), "--videos", "3",
            "--auc-videos", "1", "--steps", "2", "--smoothgrad-samples", "1", "--ig-steps", "2", "--bootstrap", "20",
            "--sanity-videos", "2", "--sanity-explainers", "stabn_attention", "--layers", "layer4",
            "--out", str(root / "s0"),
        ])  # fmt: skip
    assert code == 0
    return root, json.loads((root / "s0" / "explain.json").read_text())


def another_seed(summary, seed, shift):
    """The same run with another seed and every explainer's figures moved by `shift`."""
    other = copy.deepcopy(summary)
    other["settings"]["seed"] = seed
    other["model"]["accuracy"] += shift
    for figures in other["explainers"].values():
        for key in other["metrics"]:
            if figures[key]["value"] is not None:
                figures[key]["value"] += shift
    for row in other["sanity"]["explainers"].values():
        for figure in row["stages"].values():
            if figure["value"] is not None:
                figure["value"] += shift
    return other


def write(path, summary):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary))
    return path


def test_three_seeds_give_the_mean_and_the_range(one_run, tmp_path, capsys):
    root, first = one_run
    files = [root / "s0" / "explain.json"]
    files += [write(tmp_path / f"s{seed}" / "explain.json", another_seed(first, seed, shift))
              for seed, shift in ((1, 0.25), (2, -0.1))]  # fmt: skip
    second = another_seed(first, 1, 0.25)
    del second["explainers"]["random"]  # scored by one run fewer
    files[1] = write(tmp_path / "s1" / "explain.json", second)
    out = tmp_path / "seeds"
    assert bench_main(["explain-seeds", *map(str, files), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    combined = json.loads((out / "seeds.json").read_text())
    assert (out / "seeds.md").read_text() in printed
    assert [r["seed"] for r in combined["runs"]] == [0, 1, 2]
    hit = first["explainers"]["stabn_attention"]["temporal_hit"]["value"]
    figure = combined["explainers"]["stabn_attention"]["temporal_hit"]
    assert figure["per_seed"] == pytest.approx([hit, hit + 0.25, hit - 0.1])
    assert figure["value"] == pytest.approx(hit + 0.05) and figure["n"] == 3
    assert (figure["low"], figure["high"]) == pytest.approx((hit - 0.1, hit + 0.25))
    random = combined["explainers"]["random"]
    assert random["seeds"] == 2 and random["pointing_game"]["per_seed"] == pytest.approx(
        [
            first["explainers"]["random"]["pointing_game"]["value"],
            first["explainers"]["random"]["pointing_game"]["value"] - 0.1,
        ]
    )
    assert "| random (2 of 3 runs) |" in printed
    # No temporal profile: null in every run, null combined, a dash in the table.
    assert combined["explainers"]["centre"]["temporal_hit"]["value"] is None
    assert printed.split("| centre | ")[1].split("\n")[0].count("—") == 2
    accuracy = first["model"]["accuracy"]
    assert combined["model"]["value"] == pytest.approx(accuracy + 0.05) and combined["model"]["runs"] == 3
    stage = next(iter(first["sanity"]["explainers"]["stabn_attention"]["stages"]))
    rho = first["sanity"]["explainers"]["stabn_attention"]["stages"][stage]["value"]
    assert combined["sanity"]["explainers"]["stabn_attention"]["stages"][stage]["per_seed"] == pytest.approx(
        [rho, rho + 0.25, rho - 0.1]
    )
    assert f"{hit + 0.05:.2f} [{hit - 0.1:.2f}, {hit + 0.25:.2f}]" in printed


@pytest.mark.parametrize(
    "change,expected",
    [
        (lambda s: s["settings"].update(videos=99), "settings.videos is 99, but 3"),
        (lambda s: s.update(data="elsewhere"), "data is 'elsewhere'"),
        (lambda s: s["model"]["attention"].update(temporal="motion"), "model.attention is"),
        (lambda s: s.pop("explainers"), "not an explain.json of stabn-bench explain"),
    ],
    ids=["settings", "data", "architecture", "not-a-benchmark"],
)
def test_runs_that_differ_in_more_than_seed_are_one_line(one_run, tmp_path, capsys, change, expected):
    root, first = one_run
    other = another_seed(first, 1, 0.0)
    change(other)
    bad = write(tmp_path / "bad" / "explain.json", other)
    code = bench_main(["explain-seeds", str(root / "s0" / "explain.json"), str(bad), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith(f"error: {bad}: ") and expected in err, err
    assert not (tmp_path / "o").exists()


def test_missing_unreadable_and_single_runs_are_one_line(one_run, tmp_path, capsys):
    good = str(one_run[0] / "s0" / "explain.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    for runs, expected in (
        ([good, str(tmp_path / "none.json")], f"{tmp_path / 'none.json'}: no such file"),
        ([good, str(broken)], f"{broken}: not a readable explain.json"),
        ([good], "at least two seeds' runs, got 1"),
    ):
        code = bench_main(["explain-seeds", *runs, "--out", str(tmp_path / "o")])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and expected in err, err
