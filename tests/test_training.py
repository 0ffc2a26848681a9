"""The training loop for real: torchrun with two Gloo processes, resume, exact counting."""

import json
import logging
import subprocess

import pytest
import torch
import yaml

from helpers import REPO, SYNTHETIC_CONFIG, child_env, tiny_run, torchrun
from stabn.config import load_config
from stabn.data import make_dataset
from stabn.data.synthetic import make_synthetic_dataset
from stabn.engine.distributed import DistContext, ShardSampler
from stabn.engine.loop import Trainer
from stabn.errors import ConfigError

NUM_VAL = 5  # odd: two ranks cannot split it evenly


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    make_synthetic_dataset(root, num_train=12, num_val=NUM_VAL, frames=8, size=32, seed=3, workers=1)
    return root


def tiny_overrides(data, logdir, epochs=2):
    return tiny_run(
        data,
        logdir,
        "model.name=abn_resnet18",
        "model.num_classes=8",
        "data.flip=none",
        "train.batch_size=2",
        "train.lr=0.01",
        "train.milestones=[1]",
        "train.save_every=1",
        "train.log_every=1",
        "eval.batch_size=2",
        epochs=epochs,
    )


def test_shard_sampler_sees_every_index_once():
    shards = [list(ShardSampler(NUM_VAL, r, 2)) for r in range(2)]
    assert sorted(shards[0] + shards[1]) == list(range(NUM_VAL))
    assert list(ShardSampler(1, 1, 2)) == []


@pytest.mark.slow
@pytest.mark.distributed
def test_torchrun_two_processes(tiny_data, tmp_path):
    logdir = tmp_path / "run"
    overrides = tiny_overrides(tiny_data, logdir)
    # Overrides before and after the flags alike.
    cmd = torchrun("train_ddp.py", overrides[0], "--config", str(SYNTHETIC_CONFIG), *overrides[1:4],
                   "--resume", "latest", *overrides[4:])  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=child_env(), cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[rank 0] batch 2 per process x 2 processes = 4; 3 steps an epoch" in proc.stdout

    for name in (
        "checkpoint-best.pt",
        "checkpoint-0001.pt",
        "checkpoint-0002.pt",
        "checkpoint-latest.pt",
        "checkpoint-final.pt",
        "config.yaml",
        "args.json",
        "history.json",
    ):
        assert (logdir / name).is_file(), name
    saved = yaml.safe_load((logdir / "config.yaml").read_text())
    assert saved["train"]["epochs"] == 2 and saved["model"]["width"] == 4
    assert json.loads((logdir / "args.json").read_text())["train.batch_size"] == 2

    history = json.loads((logdir / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2]
    for h in history:
        # every validation video counted exactly once across the two ranks
        assert h["val"]["num_videos"] == NUM_VAL
        assert h["val"]["top-1_accuracy"]["per"] * NUM_VAL == pytest.approx(
            round(h["val"]["top-1_accuracy"]["per"] * NUM_VAL)
        )
        assert set(h["val"]["top-1_accuracy"]) == {"per", "att"}

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(logdir)).Reload()
    tags = set(events.Tags()["scalars"])
    assert {
        "loss/all",
        "loss/per",
        "loss/att",
        "accuracy/per",
        "accuracy/att",
        "lr",
        "speed/clips_per_s",
        "speed/data_wait_fraction",
    } <= tags
    # 12 videos, 2 ranks x batch 2 -> 3 iterations per epoch
    assert [e.step for e in events.Scalars("loss/all")] == [1, 2, 3, 4, 5, 6]

    ckpt = torch.load(logdir / "checkpoint-final.pt", weights_only=True)
    assert ckpt["epoch"] == 2 and ckpt["iteration"] == 6
    assert ckpt["model_spec"]["name"] == "abn_resnet18"
    assert not any(k.startswith("module.") for k in ckpt["model_state_dict"])


def train_in_process(overrides):
    cfg = load_config(REPO / "configs/synthetic.yaml", overrides)
    torch.set_num_threads(1)
    return Trainer(cfg, DistContext()).fit()


@pytest.mark.slow
def test_resumed_run_is_bit_identical(tiny_data, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    train_in_process(tiny_overrides(tiny_data, a, epochs=2))
    train_in_process(tiny_overrides(tiny_data, b, epochs=1))
    train_in_process(tiny_overrides(tiny_data, b, epochs=2) + ["train.resume=latest"])

    sa = torch.load(a / "checkpoint-final.pt", weights_only=True)
    sb = torch.load(b / "checkpoint-final.pt", weights_only=True)
    assert sa["iteration"] == sb["iteration"] == 12
    for key, value in sa["model_state_dict"].items():
        assert torch.equal(value, sb["model_state_dict"][key]), key
    for key, value in sa["optimizer_state_dict"]["state"].items():
        assert torch.equal(value["momentum_buffer"], sb["optimizer_state_dict"]["state"][key]["momentum_buffer"])
    ha = json.loads((a / "history.json").read_text())
    hb = json.loads((b / "history.json").read_text())
    assert [h["loss"] for h in ha] == [h["loss"] for h in hb]


@pytest.mark.slow
def test_resume_applies_new_lr_schedule_and_optimizer_values_from_the_resume_point(tiny_data, tmp_path, caplog):
    """`train.lr=... --resume latest` trains on at the new lr, not the checkpoint's: in the
    optimizer, in history.json and in config.yaml alike; each change is logged in one line."""
    logdir = tmp_path / "run"
    first = ["train.warmup_epochs=0"]  # the original's MultiStepLR: lr 0.01, x0.1 at epoch 1
    train_in_process(tiny_overrides(tiny_data, logdir, epochs=1) + first)
    changed = ["train.lr=0.2", "train.milestones=[2]", "train.weight_decay=0.001", "train.nesterov=true"]
    cfg = load_config(SYNTHETIC_CONFIG, tiny_overrides(tiny_data, logdir, epochs=3) + first + changed
                      + ["train.resume=latest"])  # fmt: skip
    with caplog.at_level(logging.INFO):
        trainer = Trainer(cfg, DistContext())
    group = trainer.optimizer.param_groups[0]
    assert (group["lr"], group["weight_decay"], group["nesterov"]) == (0.2, 0.001, True)
    assert "train.lr: 0.01 in checkpoint-latest.pt, 0.2 from epoch 2 on" in caplog.text
    assert "train.milestones: [1] in checkpoint-latest.pt, [2] from epoch 2 on" in caplog.text
    trainer.fit()

    history = json.loads((logdir / "history.json").read_text())
    assert [h["lr"] for h in history] == pytest.approx([0.01, 0.2, 0.02])
    assert history[1]["changed"] == {
        "train.epochs": {"from": 1, "to": 3},
        "train.lr": {"from": 0.01, "to": 0.2},
        "train.weight_decay": {"from": 0.0005, "to": 0.001},
        "train.nesterov": {"from": False, "to": True},
        "train.milestones": {"from": [1], "to": [2]},
    }
    assert "changed" not in history[0] and "changed" not in history[2]
    saved = yaml.safe_load((logdir / "config.yaml").read_text())["train"]
    assert (saved["lr"], saved["milestones"], saved["weight_decay"]) == (0.2, [2], 0.001)
    final = torch.load(logdir / "checkpoint-final.pt", weights_only=True)["optimizer_state_dict"]["param_groups"][0]
    assert final["initial_lr"] == 0.2 and final["lr"] == pytest.approx(0.02) and final["weight_decay"] == 0.001


def test_resume_inside_an_epoch_refuses_another_batch_size(tiny_data, tmp_path):
    logdir = tmp_path / "run"
    trainer = Trainer(load_config(SYNTHETIC_CONFIG, tiny_overrides(tiny_data, logdir, epochs=1)), DistContext())
    rng = [torch.get_rng_state()]
    trainer.save("checkpoint-latest.pt", 0, {"step": 1, "sums": torch.zeros(3), "rng": rng, "jitter_rng": rng})
    cfg = load_config(SYNTHETIC_CONFIG, tiny_overrides(tiny_data, logdir, epochs=1)
                      + ["train.batch_size=1", "train.resume=latest"])  # fmt: skip
    with pytest.raises(ConfigError) as caught:
        Trainer(cfg, DistContext())
    assert str(caught.value) == (
        f"{logdir / 'checkpoint-latest.pt'} stopped inside epoch 1 with train.batch_size=2: resume it with that "
        "batch size, or resume from a checkpoint of an epoch's end"
    )


def test_train_batch_size_is_per_gpu_under_data_parallel(tiny_data, tmp_path, caplog):
    """train_dp.py on N GPUs steps N x train.batch_size clips, split by DataParallel (on the
    CPU DataParallel passes the batch through whole)."""
    cfg = load_config(SYNTHETIC_CONFIG, tiny_overrides(tiny_data, tmp_path / "run", epochs=1))
    torch.set_num_threads(1)
    trainer = Trainer(cfg, DistContext(devices=2))
    assert isinstance(trainer.net, torch.nn.DataParallel)
    assert trainer.steps_per_epoch == 12 // (2 * 2)
    with caplog.at_level(logging.INFO):
        trainer.fit()
    assert "batch 2 per GPU x 2 GPUs = 4; 3 steps an epoch" in caplog.text
    assert trainer.iteration == 3
    assert DistContext(device=torch.device("cuda"), devices=8).describe_batch(8) == "batch 8 per GPU x 8 GPUs = 64"
    assert DistContext(world_size=2, distributed=True).describe_batch(8) == "batch 8 per process x 2 processes = 16"


def test_different_epochs_see_different_data(tiny_data):
    # shorter clips and smaller crops than the videos, so start and crop are drawn
    cfg = load_config(
        REPO / "configs/synthetic.yaml",
        tiny_overrides(tiny_data, "unused") + ["data.frame_length=4", "data.frame_size=24"],
    )
    ds = make_dataset(cfg.data, cfg.data.train_labels, "train", num_classes=cfg.model.num_classes, seed=cfg.train.seed)
    ds.set_epoch(0)
    first = [ds[i][0] for i in range(4)]
    ds.set_epoch(0)
    assert all(torch.equal(x, ds[i][0]) for i, x in enumerate(first))
    ds.set_epoch(1)
    assert not all(torch.equal(x, ds[i][0]) for i, x in enumerate(first))


@pytest.mark.slow
@pytest.mark.distributed
def test_torchrun_skips_a_corrupt_video_without_hanging(tmp_path):
    data = tmp_path / "data"
    make_synthetic_dataset(data, num_train=6, num_val=2, frames=8, size=32, seed=4, workers=1)
    first = sorted((data / "frames" / "000002").glob("*.jpg"))[0]
    first.write_bytes(first.read_bytes()[:100])  # truncated: that video cannot be read
    # batch 1 per rank: the rank that draws the broken video has nothing to train on that step
    cmd = torchrun(
        "train_ddp.py",
        "--config",
        str(REPO / "configs/synthetic.yaml"),
        *tiny_overrides(data, tmp_path / "run", epochs=1),
        "train.batch_size=1",
        "data.skip_corrupt=true",
    )
    proc = subprocess.run(cmd, capture_output=True, text=True, env=child_env(), cwd=tmp_path, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "skipped a video" in proc.stderr and "000002" in proc.stderr
    assert (tmp_path / "run" / "checkpoint-final.pt").is_file()
    # Every rank's skips summed at the epoch's end and listed once, by rank 0.
    listed = (tmp_path / "run" / "skipped.txt").read_text().splitlines()
    assert len(listed) == 1 and listed[0].startswith("epoch 1\t") and str(first) in listed[0], listed
    assert f"epoch 1: 1 video skipped (data.skip_corrupt), listed in {tmp_path / 'run' / 'skipped.txt'}" in proc.stderr
    assert json.loads((tmp_path / "run" / "history.json").read_text())[0]["skipped_videos"] == 1


def final_weights(logdir):
    return torch.load(logdir / "checkpoint-final.pt", weights_only=True)["model_state_dict"]


def scalars(logdir, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    return [e.value for e in EventAccumulator(str(logdir)).Reload().Scalars(tag)]


NO_DROPOUT = ["model.dropout=0"]  # compiled dropout draws its masks from Inductor's own generator


@pytest.fixture(scope="module")
def plain_run(tiny_data, tmp_path_factory):
    """One epoch the original's way (fp32, NCDHW, eager) to hold the fast paths against."""
    logdir = tmp_path_factory.mktemp("plain")
    train_in_process(tiny_overrides(tiny_data, logdir, epochs=1) + NO_DROPOUT)
    return logdir


@pytest.mark.slow
@pytest.mark.parametrize("option", ["train.channels_last=true", "train.compile=true"])
def test_fast_path_options_train_to_the_same_weights(tiny_data, plain_run, tmp_path, option):
    """The GPU's channels_last_3d layout (ST-ABN has a Conv2d among its Conv3d layers) and
    torch.compile, run on the CPU: the weights after an epoch equal plain fp32 NCDHW eager
    training's up to rounding, and the checkpoint keys are the model's own."""
    cfg = load_config(
        REPO / "configs/synthetic.yaml", tiny_overrides(tiny_data, tmp_path / "fast", epochs=1) + NO_DROPOUT + [option]
    )
    trainer = Trainer(cfg, DistContext())
    if option == "train.channels_last=true":
        assert trainer.model.conv1.weight.is_contiguous(memory_format=torch.channels_last_3d)
        assert trainer.model.conv_temp_att2[0].weight.is_contiguous()
    result = trainer.fit()
    assert result["history"][0]["val"]["num_videos"] == NUM_VAL
    plain, fast = final_weights(plain_run), final_weights(tmp_path / "fast")
    assert fast.keys() == plain.keys()
    for key, value in plain.items():
        torch.testing.assert_close(fast[key], value, rtol=1e-4, atol=1e-5, msg=key)


@pytest.mark.slow
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_mixed_precision_training(tiny_data, plain_run, tmp_path, amp):
    """The GPU's autocast path (fp16 through a GradScaler), run on the CPU: the first step,
    same weights and batch, gives fp32's losses to the precision's rounding, and the epoch
    ends with finite weights."""
    train_in_process(tiny_overrides(tiny_data, tmp_path / amp, epochs=1) + NO_DROPOUT + [f"train.amp={amp}"])
    for tag in ("loss/per", "loss/att"):
        first, ours = scalars(plain_run, tag)[0], scalars(tmp_path / amp, tag)[0]
        assert ours == pytest.approx(first, rel=0.01) and ours != first, tag
    assert all(torch.isfinite(v.float()).all() for v in final_weights(tmp_path / amp).values())


@pytest.mark.slow
@pytest.mark.distributed
def test_the_explanation_config_trains_under_torchrun(tiny_data, tmp_path):
    """configs/synthetic_explain.yaml (ST-ABN with the explanation options and the sparsity
    term) with two Gloo processes, on tiny data."""
    logdir = tmp_path / "run"
    cmd = torchrun("train_ddp.py", "--config", str(REPO / "configs" / "synthetic_explain.yaml"),
                   *tiny_run(tiny_data, logdir, "train.batch_size=2", "eval.batch_size=2"))  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=child_env(), cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = torch.load(logdir / "checkpoint-final.pt", weights_only=True)
    assert ckpt["model_spec"]["attention"] == yaml.safe_load(
        (REPO / "configs" / "synthetic_explain.yaml").read_text())["model"]["attention"]  # fmt: skip
    history = json.loads((logdir / "history.json").read_text())
    assert len(history) == 1 and history[0]["loss"] > 0
    saved = yaml.safe_load((logdir / "config.yaml").read_text())
    assert saved["train"]["spatial_sparsity"] > 0 and saved["train"]["temporal_sparsity"] > 0
