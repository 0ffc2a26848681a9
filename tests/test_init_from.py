"""Fine-tuning: model.init_from (any checkpoint, the class layers re-initialised), train.freeze
(frozen stages bit-identical through training) and train.reset_lr_multiplier (the fresh layers'
own param group, scaled by every schedule)."""

import logging
import subprocess
import sys

import pytest
import torch

from helpers import CONFIGS, REPO, SYNTHETIC_CONFIG, child_env, save_like_the_original, tiny_run
from stabn.checkpoint import save_checkpoint
from stabn.config import load_config
from stabn.data.synthetic import make_synthetic_dataset
from stabn.engine.build import build_parts, schedule_settings, training_model
from stabn.engine.distributed import DistContext
from stabn.engine.loop import Trainer
from stabn.engine.step import training_step
from stabn.errors import ConfigError
from stabn.models import build_model, class_layers, frozen_modules, init_from_checkpoint, load_pretrained
from stabn.optim import build_scheduler, restart_schedule

# ST-ABN's layers sized by the class count K, and the norms right after them: conv_att_common's
# first BatchNorm normalises layer_att_common's features and is no class layer.
STABN_CLASS_LAYERS = (
    "fc",
    "conv_att_common.1",
    "conv_att_common.2",
    "conv_att_out.0",
    "fc_att_out",
    "conv_spatial_att.0",
    "conv_spatial_att.1",
    "conv_temp_att1.0",
    "conv_temp_att1.1",
)
SUMMARY_LAYERS = "fc, conv_att_common.{1,2}, conv_att_out.0, fc_att_out, conv_spatial_att.{0,1}, conv_temp_att1.{0,1}"
NEW_CLASSES = ["wave", "clap", "jump", "sit", "stand"]


def tiny(name="abn_resnet18", num_classes=5, seed=0, **options):
    torch.manual_seed(seed)
    options.setdefault("width", 4)
    return build_model(name, num_classes=num_classes, frame_length=4, frame_size=32, **options)


def owner(key):
    return key.rpartition(".")[0]


def write_ours(model, path):
    save_checkpoint(path, model, model.spec.to_dict())


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """The synthetic dataset (8 classes), and lists of its videos of classes 0-4 named anew."""
    root = tmp_path_factory.mktemp("synthetic")
    make_synthetic_dataset(root, num_train=8, num_val=4, frames=4, size=32, seed=3, workers=1)
    for split in ("train", "val"):
        lines = (root / f"{split}.txt").read_text().splitlines()
        (root / f"{split}5.txt").write_text("".join(f"{x}\n" for x in lines if int(x.split()[2]) < 5))
    (root / "classes5.txt").write_text("".join(f"{name}\n" for name in NEW_CLASSES))
    return root


def run_overrides(data, logdir, *extra, classes=8, epochs=1):
    five = [f"data.train_labels={data}/train5.txt", f"data.val_labels={data}/val5.txt",
            f"data.class_names={data}/classes5.txt"] if classes == 5 else []  # fmt: skip
    return tiny_run(data, logdir, "model.name=abn_resnet18", f"model.num_classes={classes}", "data.frame_length=4",
                    "data.flip=none", "train.batch_size=2", "train.max_iters_per_epoch=2", "train.warmup_epochs=0",
                    "train.milestones=[1]",
                    "eval.batch_size=2", *five, *extra, epochs=epochs)  # fmt: skip


@pytest.mark.parametrize("writer", [write_ours, save_like_the_original], ids=["ours", "original"])
def test_a_checkpoint_of_more_classes_loads_all_but_the_class_layers(tmp_path, writer):
    source = tiny(num_classes=8, seed=1)
    path = tmp_path / "source.pt"
    writer(source, path)
    model, fresh = tiny(seed=7), tiny(seed=7)
    report = init_from_checkpoint(model, path)

    assert report.reset_modules == STABN_CLASS_LAYERS
    state, before, loaded = model.state_dict(), fresh.state_dict(), source.state_dict()
    assert report.reset == [key for key in state if owner(key) in STABN_CLASS_LAYERS]
    assert report.kept == [key for key in state if owner(key) not in STABN_CLASS_LAYERS]
    assert "conv_att_common.0.running_var" in report.kept and "conv_temp_att2.0.weight" in report.kept
    for key in report.kept:
        assert torch.equal(state[key], loaded[key]), key
    for key in report.reset:
        assert torch.equal(state[key], before[key]), key
    assert report.summary() == (
        f"model.init_from {path}: kept 166 of 189 tensors; reset 23 for 5 classes (was 8): {SUMMARY_LAYERS}"
    )


def test_the_log_line_of_a_run_that_starts_from_a_checkpoint(tmp_path, caplog):
    path = tmp_path / "source.pt"
    write_ours(tiny(num_classes=8, seed=1), path)
    cfg = load_config(None, ["model.name=abn_resnet18", "model.num_classes=5", "model.width=4",
                             "data.frame_length=4", "data.frame_size=32", f"model.init_from={path}"])  # fmt: skip
    with caplog.at_level(logging.INFO, logger="stabn.engine.build"):
        training_model(cfg, init_from=True)
    assert caplog.messages == [
        f"model.init_from {path}: kept 166 of 189 tensors; reset 23 for 5 classes (was 8): {SUMMARY_LAYERS}"
    ]


def test_a_checkpoint_of_the_same_classes_loads_whole(tmp_path):
    source = tiny(num_classes=5, seed=1).eval()
    path = tmp_path / "source.pt"
    save_like_the_original(source, path)
    model = tiny(seed=7)
    report = init_from_checkpoint(model, path)
    assert (
        report.reset == []
        and report.summary() == f"model.init_from {path}: loaded all 189 tensors (5 classes there too)"
    )
    clip = torch.randn(2, 3, 4, 32, 32)
    with torch.no_grad():
        for ours, theirs in zip(model.eval()(clip), source(clip)):
            assert torch.equal(ours, theirs)


@pytest.mark.parametrize(
    "name, attention, layers",
    [
        ("abn_resnet18", {"temporal": "frame"}, STABN_CLASS_LAYERS),
        ("abn_resnet18", {"temporal": "class"}, STABN_CLASS_LAYERS[:7]),
        ("abn_resnet18", {"temporal": "motion", "fusion": "product"}, STABN_CLASS_LAYERS[:7]),
        ("abn_resnet50", None, STABN_CLASS_LAYERS),
        ("resnet18", None, ("fc",)),
    ],
)
def test_the_class_layers_of_every_architecture(tmp_path, name, attention, layers):
    """Found from the model itself: the frame head's layers load, the class and motion heads
    have no conv_temp_att1, the 3D ResNet has its fc alone."""
    source = tiny(name, num_classes=3, seed=1, attention=attention)
    write_ours(source, tmp_path / "source.pt")
    model, fresh = tiny(name, seed=7, attention=attention), tiny(name, seed=7, attention=attention)
    assert class_layers(model) == layers
    init_from_checkpoint(model, tmp_path / "source.pt")
    for key, value in model.state_dict().items():
        expected = fresh if owner(key) in layers else source
        assert torch.equal(value, expected.state_dict()[key]), key


STABN_STEM, RESNET_STEM = "[4, 3, 1, 7, 7]", "[4, 3, 7, 7, 7]"


@pytest.mark.parametrize(
    "source, target, problem",
    [
        (dict(width=8), {}, f"key 'conv1.weight' has shape [8, 3, 1, 7, 7] in the checkpoint but {STABN_STEM} in "
                            "the model (it holds abn_resnet18 of width 8 with 8 classes)"),
        (dict(name="abn_resnet34"), {}, "key 'layer1.2.conv1.weight' in the checkpoint does not exist in the model "
                                        "(it holds abn_resnet34 of width 4 with 8 classes)"),
        ({}, dict(name="abn_resnet34"), "key 'layer1.2.conv1.weight' is missing from the checkpoint (it holds "
                                        "abn_resnet18 of width 4 with 8 classes)"),
        # A 3D ResNet's kernels are not ST-ABN's: neither starts the other.
        (dict(name="resnet18"), {}, f"key 'conv1.weight' has shape {RESNET_STEM} in the checkpoint but {STABN_STEM} "
                                    "in the model (it holds resnet18 of width 4 with 8 classes)"),
        ({}, dict(name="resnet18"), f"key 'conv1.weight' has shape {STABN_STEM} in the checkpoint but {RESNET_STEM} "
                                    "in the model (it holds abn_resnet18 of width 4 with 8 classes)"),
        ({}, dict(attention={"temporal": "frame"}), "key 'temp_att_frame.0.weight' is missing from the checkpoint (it "
                                                    "holds abn_resnet18 of width 4 with 8 classes)"),
    ],
)  # fmt: skip
def test_a_checkpoint_of_another_architecture_is_one_line_naming_the_tensor(tmp_path, source, target, problem):
    path = tmp_path / "other.pt"
    write_ours(tiny(num_classes=8, **source), path)
    model = tiny(**target)
    with pytest.raises(ConfigError) as caught:
        init_from_checkpoint(model, path)
    assert str(caught.value) == f"model.init_from {path}: does not fit {model.spec.name}: {problem}"


def test_a_missing_init_from_file_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"^model.init_from .*gone\.pt: no such checkpoint file$"):
        init_from_checkpoint(tiny(), tmp_path / "gone.pt")


@pytest.mark.slow
def test_train_dp_refuses_a_checkpoint_of_another_width_with_exit_code_2(tiny_data, tmp_path):
    path = tmp_path / "wide.pt"
    write_ours(tiny(num_classes=8, width=8), path)
    logdir = tmp_path / "run"
    cmd = [sys.executable, str(REPO / "train_dp.py"), "--config", str(SYNTHETIC_CONFIG),
           *run_overrides(tiny_data, logdir, f"model.init_from={path}")]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=child_env(), cwd=tmp_path, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.splitlines() == [
        f"error: model.init_from {path}: does not fit abn_resnet18: key 'conv1.weight' has shape [8, 3, 1, 7, 7] in "
        "the checkpoint but [4, 3, 1, 7, 7] in the model (it holds abn_resnet18 of width 8 with 8 classes)"
    ]
    assert not logdir.exists()  # nothing that looks like a run


def fine_tuning_parts(tiny_data, tmp_path, *extra):
    path = tmp_path / "source.pt"
    write_ours(tiny(num_classes=8, seed=1), path)
    cfg = load_config(SYNTHETIC_CONFIG, run_overrides(tiny_data, tmp_path / "run", f"model.init_from={path}",
                                                      "train.lr=0.1", "train.reset_lr_multiplier=10", *extra,
                                                      classes=5))  # fmt: skip
    return build_parts(cfg, DistContext())


def test_freeze_layer2_keeps_the_frozen_stages_bit_identical_through_training(tiny_data, tmp_path):
    parts = fine_tuning_parts(tiny_data, tmp_path, "train.freeze=layer2")
    model, optimizer = parts.model, parts.optimizer
    frozen = frozen_modules("layer2")
    assert frozen == ("conv1", "bn1", "layer1", "layer2")
    params = dict(model.named_parameters())
    is_frozen = {name: name.split(".")[0] in frozen for name in params}
    assert [p.requires_grad for p in params.values()] == [not is_frozen[name] for name in params]
    # Frozen parameters are in no group; the class layers have their own, at lr x 10.
    groups = [[id(p) for p in group["params"]] for group in optimizer.param_groups]
    head = [id(p) for name, p in params.items() if owner(name) in STABN_CLASS_LAYERS]
    rest = [id(p) for name, p in params.items() if not is_frozen[name] and owner(name) not in STABN_CLASS_LAYERS]
    assert groups == [rest, head]
    assert [g["lr"] for g in optimizer.param_groups] == [0.1, pytest.approx(1.0)]

    before = {key: value.clone() for key, value in model.state_dict().items()}
    model.train()
    torch.manual_seed(0)
    for _ in range(2):
        training_step(model, torch.randn(2, 3, 4, 32, 32), torch.tensor([0, 3]), optimizer=optimizer,
                      scaler=parts.scaler, device=torch.device("cpu"), amp_dtype=None)  # fmt: skip
    after = model.state_dict()
    for key, value in before.items():
        if key.split(".")[0] in frozen:
            assert torch.equal(after[key], value), key
    for key in ("layer3.0.conv1.weight", "layer3.0.bn1.running_mean", "layer3.0.bn1.num_batches_tracked",
                "fc.weight", "conv_att_common.0.running_var", "fc_att_out.bias"):  # fmt: skip
        assert not torch.equal(after[key], before[key]), key

    parts.scheduler.step()  # train.milestones=[1]: x0.1 for each group
    assert [g["lr"] for g in optimizer.param_groups] == pytest.approx([0.01, 0.1])


@pytest.mark.parametrize("schedule", ["train.schedule=cosine", "train.warmup_epochs=2"])
def test_every_schedule_scales_each_group_from_its_own_lr(tiny_data, tmp_path, schedule):
    parts = fine_tuning_parts(tiny_data, tmp_path, schedule, "train.epochs=6", "train.milestones=[3]")
    optimizer = parts.optimizer
    for _ in range(5):
        base, fresh = (g["lr"] for g in optimizer.param_groups)
        assert fresh == pytest.approx(10 * base)
        optimizer.step()
        parts.scheduler.step()
    # A resumed run's new lr keeps the group's multiple.
    restart_schedule(optimizer, 0.2, 3, schedule="multistep", epochs=6, milestones=[3], gamma=0.1)
    assert [g["initial_lr"] for g in optimizer.param_groups] == pytest.approx([0.2, 2.0])


def test_without_init_from_the_optimizer_is_the_original_one_group(tiny_data, tmp_path):
    """reset_lr_multiplier alone changes nothing: the optimizer's state dict is laid out as the
    one of `model.parameters()` that earlier checkpoints hold."""
    cfg = load_config(SYNTHETIC_CONFIG, run_overrides(tiny_data, tmp_path / "run", "train.reset_lr_multiplier=10"))
    parts = build_parts(cfg, DistContext())
    plain = torch.optim.SGD(parts.model.parameters(), lr=cfg.train.lr, momentum=0.9, weight_decay=5e-4, foreach=True)
    build_scheduler(plain, **schedule_settings(cfg.train))
    assert parts.optimizer.state_dict() == plain.state_dict()


def test_freeze_backbone_of_a_3d_resnet_is_a_linear_probe(tiny_data, tmp_path):
    cfg = load_config(SYNTHETIC_CONFIG, run_overrides(tiny_data, tmp_path / "run", "model.name=resnet18",
                                                      "train.freeze=backbone"))  # fmt: skip
    parts = build_parts(cfg, DistContext())
    (group,) = parts.optimizer.param_groups
    assert group["params"] == [parts.model.fc.weight, parts.model.fc.bias]
    parts.model.train()
    assert not any(m.training for m in parts.model.modules() if isinstance(m, torch.nn.BatchNorm3d))


def test_fine_tuning_run_end_to_end_and_its_resume_without_the_source(tiny_data, tmp_path, caplog):
    torch.set_num_threads(1)
    first = tmp_path / "first"
    Trainer(load_config(SYNTHETIC_CONFIG, run_overrides(tiny_data, first)), DistContext()).fit()
    source = first / "checkpoint-final.pt"
    second = tmp_path / "second"
    tune = [f"model.init_from={source}", "train.freeze=layer2", "train.reset_lr_multiplier=10", "train.lr=0.05"]
    with caplog.at_level(logging.INFO):
        Trainer(load_config(SYNTHETIC_CONFIG, run_overrides(tiny_data, second, *tune, classes=5)), DistContext()).fit()
    assert f"model.init_from {source}: kept 166 of 189 tensors; reset 23 for 5 classes (was 8)" in caplog.text

    tuned = load_pretrained(second / "checkpoint-final.pt")
    assert tuned.spec.num_classes == 5 and tuned.spec.class_names == tuple(NEW_CLASSES)
    original = load_pretrained(source).state_dict()
    assert torch.equal(tuned.state_dict()["layer2.1.bn2.running_mean"], original["layer2.1.bn2.running_mean"])
    assert not torch.equal(tuned.state_dict()["layer3.1.conv2.weight"], original["layer3.1.conv2.weight"])

    # Resumed, the run's own checkpoint wins: the source may be gone, and its groups fit.
    source.unlink()
    resumed = Trainer(load_config(SYNTHETIC_CONFIG, run_overrides(tiny_data, second, *tune, "train.resume=latest",
                                                                  classes=5, epochs=2)), DistContext())  # fmt: skip
    assert resumed.start_epoch == 1
    assert [g["initial_lr"] for g in resumed.optimizer.param_groups] == pytest.approx([0.05, 0.5])
    resumed.fit()
    assert torch.equal(load_pretrained(second / "checkpoint-final.pt").state_dict()["layer1.0.conv1.weight"],
                       original["layer1.0.conv1.weight"])  # fmt: skip

    # A new multiplier takes effect from the resume point; another freeze trains other tensors.
    faster = [*tune[:2], "train.reset_lr_multiplier=20", tune[3], "train.resume=latest"]
    again = Trainer(load_config(SYNTHETIC_CONFIG, run_overrides(tiny_data, second, *faster, classes=5, epochs=3)),
                    DistContext())  # fmt: skip
    assert [g["initial_lr"] for g in again.optimizer.param_groups] == pytest.approx([0.05, 1.0])
    other = [tune[0], "train.freeze=layer3", *tune[2:], "train.resume=latest"]
    with pytest.raises(ConfigError, match=r"checkpoint-latest.pt: its optimizer trains \d+ parameter tensors in 2 "
                                          r"groups, this run \d+ in 2: resume with the train.freeze"):  # fmt: skip
        Trainer(
            load_config(SYNTHETIC_CONFIG, run_overrides(tiny_data, second, *other, classes=5, epochs=3)), DistContext()
        )


@pytest.mark.slow
@pytest.mark.distributed
def test_torchrun_fine_tunes_with_frozen_stages(tiny_data, tmp_path):
    """DDP leaves the frozen parameters out of its gradient reduction: no unused-parameter error."""
    from helpers import torchrun

    path = tmp_path / "source.pt"
    write_ours(tiny(num_classes=8, seed=1), path)
    cmd = torchrun("train_ddp.py", "--config", str(SYNTHETIC_CONFIG),
                   *run_overrides(tiny_data, tmp_path / "run", f"model.init_from={path}", "train.freeze=layer3",
                                  classes=5))  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=child_env(), cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "run" / "checkpoint-final.pt").is_file()


def test_the_example_fine_tunes_the_ssv2_recipes_model_on_videos():
    """configs/finetune_ssv2_videos.yaml loads, and its model is the SSv2 recipe's but for the
    class count, so that an SSv2 checkpoint fits all but the class layers."""
    cfg = load_config(CONFIGS / "finetune_ssv2_videos.yaml")
    ssv2 = load_config(CONFIGS / "ssv2" / "abn_resnet50.yaml")
    assert cfg.model.init_from == "checkpoints/stabn_ssv2_resnet50.pth"
    assert (cfg.train.freeze, cfg.train.reset_lr_multiplier, cfg.model.num_classes) == ("layer2", 10.0, 10)
    assert (cfg.data.source, cfg.data.label_format, cfg.data.frames_root) == ("videos", "generic", "data/my_videos")
    same = ("model.name", "model.width", "model.attention", "data.frame_length", "data.frame_size",
            "data.channel_order")  # fmt: skip
    for key in same:
        section, name = key.split(".")
        assert getattr(getattr(cfg, section), name) == getattr(getattr(ssv2, section), name), key
    assert cfg.data.short_side == 240  # the short side of SSv2's videos, which its model saw
