"""eval.py end to end, and the evaluation routine against a hand computation."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from torch import nn

import stabn
from helpers import (
    REPO,
    SYNTHETIC_CONFIG,
    child_env,
    filled_reference_model,
    reference_outputs,
    run_reference_input,
    save_like_the_original,
    tiny_run,
    torchrun,
)
from stabn.checkpoint import save_checkpoint
from stabn.config import load_config
from stabn.data import ClipBatch, read_label_file
from stabn.data.synthetic import CLASS_NAMES, make_synthetic_dataset
from stabn.engine.distributed import DistContext
from stabn.engine.evaluate import evaluate
from stabn.engine.loop import Trainer
from stabn.interpret.visualize import header_height
from stabn.models import ModelSpec

NUM_VAL = 5


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    data = tmp_path_factory.mktemp("data")
    make_synthetic_dataset(data, num_train=8, num_val=NUM_VAL, frames=12, size=40, seed=5, workers=1)
    logdir = tmp_path_factory.mktemp("run")
    cfg = load_config(SYNTHETIC_CONFIG, tiny_run(data, logdir, "train.batch_size=4", "eval.batch_size=2"))
    torch.set_num_threads(1)
    Trainer(cfg, DistContext()).fit()
    return logdir, data


@pytest.mark.slow
def test_a_trained_checkpoint_names_its_classes(trained_run):
    """The class names of `data.class_names` travel in the checkpoint to `predict`."""
    logdir, data = trained_run
    model = stabn.load_pretrained(logdir / "checkpoint-best.pt")
    assert model.spec.class_names == CLASS_NAMES
    assert model.spec.short_side == 40  # the synthetic frames of this run are 40 x 40
    video = data / "frames" / read_label_file(data / "val.txt")[0].video_id
    pred = stabn.predict(model, video, topk=3)
    assert pred.names == [CLASS_NAMES[c] for c in pred.classes]


def run_eval(*args, cwd):
    return subprocess.run(
        [sys.executable, str(REPO / "eval.py"), *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=300
    )


@pytest.mark.slow
def test_eval_multi_view_attention_and_explanations(trained_run, tmp_path):
    logdir, data = trained_run
    proc = run_eval(
        "--logdir",
        logdir,
        "eval.num_clips=2",
        "eval.num_crops=3",
        "eval.save_attention=true",
        "eval.explain_metrics=true",
        "eval.explain_steps=4",
        "eval.attention_gif=true",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = logdir / "eval"
    results = json.loads((out / "results.json").read_text())
    assert results["num_videos"] == NUM_VAL and results["views_per_video"] == 6
    for k in ("top-1_accuracy", "top-5_accuracy"):
        assert set(results[k]) == {"per", "att"}
        assert all(0 <= v <= 1 and (v * NUM_VAL) == pytest.approx(round(v * NUM_VAL)) for v in results[k].values())
    assert results["top-5_accuracy"]["per"] >= results["top-1_accuracy"]["per"]
    expl = results["explanation"]
    assert expl["videos"] == NUM_VAL
    for key in (
        "deletion_auc",
        "insertion_auc",
        "random_deletion_auc",
        "random_insertion_auc",
        "pointing_game",
        "temporal_hit",
    ):
        assert 0.0 <= expl[key] <= 1.0, key
    assert expl["pointing_frames"] > 0

    rows = list(csv.reader((out / "per_class.csv").open()))
    assert rows[0] == ["class_id", "class_name", "videos", "top1_accuracy"] and len(rows) == 9
    assert sum(int(r[2]) for r in rows[1:]) == NUM_VAL
    confusion = list(csv.reader((out / "confusion.csv").open()))
    assert sum(int(x) for row in confusion[1:] for x in row[1:]) == NUM_VAL
    assert Image.open(out / "confusion.png").size == (8 * 4, 8 * 4)

    pngs = sorted((out / "attention").glob("*.png"))
    assert len(pngs) == NUM_VAL and len(list((out / "attention").glob("*.gif"))) == NUM_VAL
    # 8 frames of 32 px, drawn 7x, in one row, a bar above each, under the prediction and colour bar
    assert Image.open(pngs[0]).size == (8 * 224, header_height(1) + 20 + 224)


@pytest.mark.slow
def test_eval_draws_grad_cam_for_a_resnet_and_names_the_map(trained_run, tmp_path):
    """A 3D ResNet's checkpoint gets attention pictures too: Grad-CAM at the layer asked."""
    _, data = trained_run
    torch.manual_seed(0)
    model = stabn.build_model("resnet18", num_classes=8, frame_length=8, frame_size=32, width=4)
    save_checkpoint(tmp_path / "resnet.pt", model, model.spec.to_dict())
    proc = run_eval(
        "--logdir", tmp_path / "resnet_eval", "--checkpoint", tmp_path / "resnet.pt",
        f"data.frames_root={data}/frames", f"data.val_labels={data}/val.txt", "data.num_workers=0",
        "eval.save_attention=true", "eval.attention_method=gradcam", "eval.attention_layer=layer3",
        "eval.max_attention_videos=2", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "resnet_eval" / "eval"
    saved = yaml.safe_load((out / "config.yaml").read_text())["eval"]
    assert (saved["attention_method"], saved["attention_layer"]) == ("gradcam", "layer3")
    pngs = sorted((out / "attention").glob("*.png"))
    assert len(pngs) == 2
    # One branch, and the line naming the map, over 8 frames of 32 px drawn 7x.
    assert Image.open(pngs[0]).size == (8 * 224, header_height(2) + 20 + 224)


@pytest.mark.slow
def test_eval_in_channels_last_predicts_the_same(trained_run, tmp_path):
    """The GPU's default layout, asked for on the CPU, through eval.py."""
    logdir, _ = trained_run
    for name, extra in (("ncdhw", []), ("channels_last", ["eval.channels_last=true"])):
        proc = run_eval("--logdir", logdir, f"eval.output={name}", "eval.num_crops=3", *extra, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = logdir / "ncdhw", logdir / "channels_last"
    assert yaml.safe_load((b / "config.yaml").read_text())["eval"]["channels_last"] is True
    results_a, results_b = (json.loads((d / "results.json").read_text()) for d in (a, b))
    assert (results_a.pop("channels_last"), results_b.pop("channels_last")) == (False, True)
    assert results_a == results_b
    assert (a / "confusion.csv").read_text() == (b / "confusion.csv").read_text()


@pytest.mark.slow
def test_eval_by_default_is_the_originals_fp32_forward(fixtures_dir, tmp_path):
    """On a checkpoint of the original, eval.py in its default mode gives the scores of the fp32
    forward that reproduces the original's reference outputs, whatever precision and layout the
    run trained in; eval.amp=bf16 is what moves them."""
    model, ref = filled_reference_model(fixtures_dir, "reference_abn_resnet18_t8_s64.json")
    save_like_the_original(model, tmp_path / "original.pt")
    loaded = stabn.load_pretrained(tmp_path / "original.pt")
    for ours, theirs in zip(run_reference_input(loaded, ref, fixtures_dir), reference_outputs(ref)):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)

    videos = fixtures_dir / "preprocess"
    (tmp_path / "run").mkdir()
    # A run that trained in bf16 and channels_last: eval.py must not take that over.
    (tmp_path / "run" / "config.yaml").write_text(yaml.safe_dump({"train": {"amp": "bf16", "channels_last": True}}))
    common = ["--logdir", tmp_path / "run", "--checkpoint", tmp_path / "original.pt",
              f"data.frames_root={videos}/frames", f"data.val_labels={videos}/labels.txt", "data.frame_length=8",
              "data.frame_size=64", "data.num_workers=0", "eval.average=logits", "eval.save_scores=true"]  # fmt: skip
    for name, extra in (("default", []), ("bf16", ["eval.amp=bf16"])):
        proc = run_eval(*common, f"eval.output={name}", *extra, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]

    records = read_label_file(videos / "labels.txt")
    with torch.no_grad():
        expected = [loaded(stabn.load_clip(videos / "frames" / r.video_id, 8, 64, r.num_frames)[None]) for r in records]
    for name, close in (("default", True), ("bf16", False)):
        scores = np.load(tmp_path / "run" / name / "scores.npz")
        assert scores["video_ids"].tolist() == [r.video_id for r in records]
        assert scores["labels"].tolist() == [r.label for r in records]
        for key, field in (("per", "logits"), ("att", "att_logits")):
            ours = torch.from_numpy(scores[key])
            theirs = torch.cat([getattr(out, field) for out in expected])
            assert ours.shape == (2, 174)
            difference = (ours - theirs).abs().max().item()
            assert (difference <= 1e-5) == close, (name, key, difference)


@pytest.mark.slow
def test_eval_reads_an_original_checkpoint_with_hints(trained_run, tmp_path):
    logdir, data = trained_run
    ckpt = torch.load(logdir / "checkpoint-final.pt", weights_only=True)
    original = {
        "epoch": 1,
        "iteration": 2,
        "best_score": 0.0,
        "model_state_dict": {f"module.{k}": v for k, v in ckpt["model_state_dict"].items()},
        "optimizer_state_dict": ckpt["optimizer_state_dict"],
        "scheduler_state_dict": None,
    }
    torch.save(original, tmp_path / "original.pt")
    proc = run_eval(
        "--logdir",
        tmp_path / "orig_eval",
        "--checkpoint",
        tmp_path / "original.pt",
        f"data.frames_root={data}/frames",
        f"data.val_labels={data}/val.txt",
        "data.frame_size=32",
        "data.num_workers=0",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ours = json.loads((logdir / "eval" / "results.json").read_text()) if (logdir / "eval").exists() else None
    results = json.loads((tmp_path / "orig_eval" / "eval" / "results.json").read_text())
    assert results["model"] == "abn_resnet18" and results["num_videos"] == NUM_VAL
    assert ours is None or "top-1_accuracy" in ours


@pytest.mark.slow
def test_eval_bad_input_is_one_line(trained_run, tmp_path):
    logdir, _ = trained_run
    proc = run_eval("--logdir", logdir, "eval.num_clipz=2", cwd=tmp_path)
    assert proc.returncode == 2
    assert (
        proc.stderr.strip()
        == "error: command line: unknown config key 'eval.num_clipz'; did you mean 'eval.num_clips'?"
    )
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    proc = run_eval("--logdir", logdir, "--checkpoint", tmp_path / "junk.pt", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith(f"error: {tmp_path / 'junk.pt'}: not a PyTorch checkpoint")
    assert "could run code" not in proc.stderr


class MeanModel(nn.Module):
    """Logits [m, 0, -m] from the clip's mean value m: known scores for known inputs; its spec
    leaves pixel values as they are."""

    spec = ModelSpec(name="mean", num_classes=3, frame_length=2, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))

    def forward(self, x):
        m = x.mean(dim=(1, 2, 3, 4))
        return torch.stack([m, torch.zeros_like(m), -m], dim=1)


def test_evaluate_averages_views_like_the_hand_computation():
    # 2 videos x 3 views; views are constant clips whose normalised mean is known
    values = [[3, 0, 0], [0, 0, 1]]  # per-view pixel values
    views = torch.tensor(values, dtype=torch.uint8).view(2, 3, 1, 1, 1, 1).expand(2, 3, 3, 2, 4, 4).contiguous()
    batch = ClipBatch(views, torch.tensor([0, 2]), torch.tensor([0, 1]), ())
    result = evaluate(MeanModel(), [batch], DistContext(), progress=False)

    def softmax(m):
        e = torch.tensor([m, 0.0, -m]).exp()
        return e / e.sum()

    by_hand = [sum(softmax(v) for v in vs) / 3 for vs in values]
    # video 0: mean of softmax favours class 0 (label 0: hit); video 1: class 0 too (label 2: miss)
    assert [int(p.argmax()) for p in by_hand] == [0, 0]
    assert result.num_videos == 2 and result.views_per_video == 3
    assert result.per.topk()[1] == 0.5
    assert result.per.confusion.tolist() == [[1, 0, 0], [0, 0, 0], [1, 0, 0]]
    assert result.att is None


@pytest.mark.slow
@pytest.mark.distributed
def test_eval_under_torchrun_counts_each_video_once(trained_run, tmp_path):
    logdir, _ = trained_run
    proc = subprocess.run(
        # overrides before and after the flag alike
        torchrun("eval.py", "eval.num_clips=2", "--logdir", str(logdir), "eval.num_crops=3", "eval.output=eval_ddp"),
        capture_output=True,
        text=True,
        env=child_env(),
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = json.loads((logdir / "eval_ddp" / "results.json").read_text())
    assert ddp["num_videos"] == NUM_VAL and ddp["views_per_video"] == 6
    single = run_eval(
        "--logdir", logdir, "eval.num_clips=2", "eval.num_crops=3", "eval.output=eval_single", cwd=tmp_path
    )
    assert single.returncode == 0, single.stderr[-3000:]
    one = json.loads((logdir / "eval_single" / "results.json").read_text())
    assert ddp["top-1_accuracy"] == one["top-1_accuracy"] and ddp["top-5_accuracy"] == one["top-5_accuracy"]
    assert ddp["per_class_accuracy"] == one["per_class_accuracy"]


def test_exact_fp32_turns_tf32_off_and_back():
    from stabn.engine.precision import exact_fp32

    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    try:
        with exact_fp32():
            assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before
