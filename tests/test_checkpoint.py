import os

import pytest
import torch

import stabn
from helpers import (
    CodePayload,
    filled_reference_model,
    max_relative_error,
    reference_outputs,
    run_reference_input,
    save_like_the_original,
)
from stabn.checkpoint import read_checkpoint, save_checkpoint
from stabn.errors import CheckpointError
from stabn.fileio import atomic_write
from stabn.models import ModelSpec, build_model, infer_architecture


@pytest.mark.parametrize("name", ["reference_abn_resnet18_t8_s64.json", "reference_resnet18_t16_s112.json"])
def test_original_dp_checkpoint_loads_without_hints_and_reproduces_outputs(fixtures_dir, tmp_path, name):
    model, ref = filled_reference_model(fixtures_dir, name)
    path = tmp_path / "checkpoint-best.pt"
    save_like_the_original(model, path)
    assert all(k.startswith("module.") for k in torch.load(path, weights_only=True)["model_state_dict"])

    loaded = stabn.load_pretrained(path)
    assert not loaded.training
    assert loaded.spec.name == ref["model"]
    assert loaded.spec.num_classes == 174
    assert loaded.spec.class_names is None
    if ref["model"].startswith("abn_"):
        assert loaded.spec.frame_length == ref["frame_length"]
    for out, exp in zip(run_reference_input(loaded, ref, fixtures_dir), reference_outputs(ref)):
        assert max_relative_error(out, exp) <= 1e-4


@pytest.mark.parametrize("form", ["bare", "ddp_bare", "state_dict_key"])
def test_other_forms_of_the_original_load(fixtures_dir, tmp_path, form):
    model, ref = filled_reference_model(fixtures_dir, "reference_abn_resnet18_t8_s64.json")
    sd = model.state_dict()
    obj = {
        "bare": sd,
        "ddp_bare": {f"module.{k}": v for k, v in sd.items()},
        "state_dict_key": {"state_dict": sd, "epoch": 1},
    }[form]
    torch.save(obj, tmp_path / "w.pth")
    loaded = stabn.load_pretrained(tmp_path / "w.pth")
    out = run_reference_input(loaded, ref, fixtures_dir)[0]
    assert max_relative_error(out, reference_outputs(ref)[0]) <= 1e-4


def test_our_checkpoint_describes_itself(tmp_path):
    torch.manual_seed(0)
    names = [f"class {i}" for i in range(9)]
    model = build_model(
        "abn_resnet34", num_classes=9, frame_length=6, frame_size=48, width=4, channel_order="rgb", class_names=names
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [2])
    save_checkpoint(tmp_path / "c.pt", model, model.spec.to_dict(), opt, sched, epoch=2, iteration=10, best_score=0.5)

    ckpt = read_checkpoint(tmp_path / "c.pt")
    assert {
        "epoch",
        "iteration",
        "best_score",
        "model_state_dict",
        "optimizer_state_dict",
        "scheduler_state_dict",
        "model_spec",
    } <= set(ckpt)
    assert ckpt["stabn_version"] == stabn.__version__
    assert ckpt["model_spec"] == {
        "name": "abn_resnet34", "num_classes": 9, "frame_length": 6, "frame_size": 48, "width": 4,
        "channel_order": "rgb", "mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375],
        "class_names": names, "short_side": None,
        "attention": {"spatial_gate": "residual", "fusion": "concat", "norm": "none", "temporal": "mlp"},
    }  # fmt: skip
    loaded = stabn.load_pretrained(tmp_path / "c.pt")
    assert loaded.spec == model.spec
    x = torch.randn(2, 3, 6, 48, 48)
    with torch.no_grad():
        for a, b in zip(model.eval()(x), loaded(x)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_checkpoint_of_the_earlier_format_loads(tmp_path):
    """Files written before the model spec existed keep a `config` entry with the model's name
    under `model` and no class names."""
    torch.manual_seed(0)
    model = build_model("abn_resnet18", num_classes=5, frame_length=4, frame_size=40, width=4)
    old_config = {
        "model": "abn_resnet18", "num_classes": 5, "frame_length": 4, "frame_size": 40, "width": 4,
        "channel_order": "rgb", "mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375],
        "version": "0.1.0",
    }  # fmt: skip
    torch.save({"epoch": 2, "iteration": 8, "best_score": 0.5, "model_state_dict": model.state_dict(),
                "optimizer_state_dict": None, "scheduler_state_dict": None, "config": old_config,
                "run_config": {"logdir": "runs/x"}, "history": []}, tmp_path / "old.pt")  # fmt: skip
    loaded = stabn.load_pretrained(tmp_path / "old.pt")
    assert loaded.spec == ModelSpec(
        name="abn_resnet18", num_classes=5, frame_length=4, frame_size=40, width=4, channel_order="rgb"
    )
    assert loaded.spec.mean == (123.675, 116.28, 103.53)
    x = torch.randn(1, 3, 4, 40, 40)
    with torch.no_grad():
        for a, b in zip(model.eval()(x), loaded(x)):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("name", [n for n in stabn.MODEL_NAMES if not n.endswith("_v2")])
def test_architecture_is_inferred_from_weights(name):
    model = build_model(name, num_classes=11, frame_length=5, frame_size=32, width=4)
    inferred = infer_architecture(model.state_dict())
    assert inferred["name"] == name
    assert inferred["num_classes"] == 11 and inferred["width"] == 4
    assert inferred.get("frame_length") == (5 if name.startswith("abn_") else None)


def test_overrides_fill_in_what_the_file_cannot_say(tmp_path):
    torch.save(
        build_model("resnet18", num_classes=4, frame_length=8, frame_size=32, width=4).state_dict(), tmp_path / "r.pth"
    )
    model = stabn.load_pretrained(tmp_path / "r.pth", frame_length=8, frame_size=32)
    assert model.spec.frame_length == 8 and model.frame_size == 32
    with pytest.raises(CheckpointError, match="unknown override"):
        stabn.load_pretrained(tmp_path / "r.pth", frames=8)


def test_checkpoint_that_does_not_fit_names_file_and_first_key(tmp_path):
    torch.save(
        build_model("abn_resnet18", num_classes=10, frame_length=8, frame_size=32, width=4).state_dict(),
        tmp_path / "a.pth",
    )
    with pytest.raises(CheckpointError, match=r"a\.pth: does not fit the model: key 'fc\.weight' has shape \[10, 32\]"):
        stabn.load_pretrained(tmp_path / "a.pth", num_classes=12)
    with pytest.raises(CheckpointError, match=r"a\.pth: .*key 'conv1\.weight' has shape \[4, 3, 1, 7, 7\]"):
        stabn.load_pretrained(tmp_path / "a.pth", width=8)


def test_file_that_is_not_a_checkpoint_is_named(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(CheckpointError, match=r"notes\.txt: not a PyTorch checkpoint"):
        stabn.load_pretrained(tmp_path / "notes.txt")
    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    with pytest.raises(CheckpointError, match=r"tensor\.pt: not a checkpoint"):
        stabn.load_pretrained(tmp_path / "tensor.pt")
    torch.save({"epoch": 3}, tmp_path / "meta.pt")
    with pytest.raises(CheckpointError, match=r"meta\.pt: not a model checkpoint"):
        stabn.load_pretrained(tmp_path / "meta.pt")
    with pytest.raises(CheckpointError, match=r"missing\.pt: no such checkpoint file"):
        stabn.load_pretrained(tmp_path / "missing.pt")


def test_a_folder_given_for_a_checkpoint_says_what_to_pass(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    with pytest.raises(CheckpointError) as caught:
        stabn.load_pretrained(run)
    assert str(caught.value) == f"{run} is a folder, not a checkpoint file: it holds no .pt file"
    model = build_model("abn_resnet18", num_classes=4, frame_length=4, frame_size=32, width=4)
    for name in ("checkpoint-0004.pt", "checkpoint-latest.pt", "checkpoint-best.pt"):
        save_checkpoint(run / name, model, model.spec.to_dict())
    with pytest.raises(CheckpointError) as caught:
        stabn.load_pretrained(run)
    assert str(caught.value) == (
        f"{run} is a folder, not a checkpoint file: pass one of its checkpoints, e.g. {run / 'checkpoint-best.pt'}"
    )


def test_checkpoint_carrying_code_is_refused_and_the_code_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    sd = build_model("abn_resnet18", num_classes=4, frame_length=4, frame_size=32, width=4).state_dict()
    torch.save({"model_state_dict": sd, "epoch": CodePayload(marker)}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match=r"evil\.pt: refused to load"):
        stabn.load_pretrained(tmp_path / "evil.pt")
    assert not marker.exists()
    torch.load(tmp_path / "evil.pt", weights_only=False)  # the payload is real:
    assert marker.exists()  # an unsafe load runs it


def test_interrupted_atomic_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "checkpoint-latest.pt"
    model = build_model("resnet18", num_classes=3, frame_length=4, frame_size=32, width=4)
    save_checkpoint(path, model, model.spec.to_dict())

    def dies_half_way(f):
        f.write(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, dies_half_way)
    assert read_checkpoint(path)["model_spec"]["name"] == "resnet18"
    assert os.listdir(tmp_path) == ["checkpoint-latest.pt"]


def test_optimizer_and_scheduler_state_survive_safe_loading(tmp_path):
    # weights_only loading must accept the scheduler's Counter and the optimizer state.
    model = build_model("resnet18", num_classes=3, frame_length=4, frame_size=32, width=4)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [75, 125])
    save_checkpoint(tmp_path / "c.pt", model, model.spec.to_dict(), opt, sched)
    ckpt = read_checkpoint(tmp_path / "c.pt")
    assert dict(ckpt["scheduler_state_dict"]["milestones"]) == {75: 1, 125: 1}
    assert ckpt["optimizer_state_dict"]["param_groups"][0]["nesterov"] is True
