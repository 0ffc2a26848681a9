import json
import subprocess
import sys

import pytest
import yaml

from helpers import REPO
from stabn.config import Config, config_from_dict, load_config, save_config
from stabn.errors import ConfigError


def write(tmp_path, text, name="c.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_yaml_then_dotted_overrides(tmp_path):
    path = write(tmp_path, "logdir: runs/a\nmodel:\n  name: abn_resnet18\n  width: 16\ntrain:\n  epochs: 5\n")
    cfg = load_config(
        path,
        ["train.epochs=2", "train.lr=0.1", "train.milestones=[1, 2]", "train.resume=latest", "data.skip_corrupt=true"],
    )
    assert (cfg.logdir, cfg.model.name, cfg.model.width) == ("runs/a", "abn_resnet18", 16)
    assert cfg.train.epochs == 2 and cfg.train.lr == 0.1 and cfg.train.milestones == [1, 2]
    assert cfg.train.resume == "latest" and cfg.data.skip_corrupt is True
    assert cfg.train.momentum == 0.9  # untouched default


def test_unknown_key_names_file_line_and_closest_key(tmp_path):
    path = write(tmp_path, "model:\n  name: abn_resnet18\ntrain:\n  epochs: 2\n  lr_rate: 0.1\n")
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert str(e.value) == f"{path}:5: unknown config key 'train.lr_rate'; did you mean 'train.lr'?"
    with pytest.raises(ConfigError, match="unknown config key 'train.epoch'; did you mean 'train.epochs'"):
        load_config(None, ["train.epoch=3"])


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = write(tmp_path, "model:\n  name: abn_resnet18\n  width: [16\ntrain:\n  epochs: 2\n")
    with pytest.raises(ConfigError, match=rf"^{path}:\d+: YAML syntax error"):
        load_config(path)


@pytest.mark.parametrize(
    "override,message",
    [
        ("train.epochs=two", "'train.epochs' expects int, got 'two'"),
        ("train.epochs=0", "'train.epochs' must be at least 1"),
        ("data.padding=wrap", "'data.padding' must be one of first, last, loop"),
        ("model.name=abn_resnet5", "did you mean 'abn_resnet50'"),
        ("eval.num_crops=2", "'eval.num_crops' must be 1 or 3"),
        ("train.nesterov=maybe", "'train.nesterov' expects bool"),
        ("train", "is not of the form key=value"),
        ("data.flip=diagonal", "'data.flip' must be one of horizontal, vertical, none, got 'diagonal'"),
        ("data.hflip=maybe", "'data.hflip' expects bool, got 'maybe'"),
        ("train.collective_timeout=0", "'train.collective_timeout' must be positive, got 0.0"),
        ("train.nesterov=true train.momentum=0", "'train.nesterov' needs a positive 'train.momentum', got 0.0"),
        (
            "eval.attention_method=gradcm",
            "'eval.attention_method' must be one of auto, attention, gradcam, input_gradient, integrated_gradients, "
            "got 'gradcm'",
        ),
        (
            "eval.attention_method=input_gradient eval.attention_layer=layer4",
            "'eval.attention_layer' is Grad-CAM's layer: it does not apply to eval.attention_method=input_gradient",
        ),
    ],
)
def test_bad_values_are_named(override, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        load_config(None, override.split())


def test_resolved_config_is_saved_and_reads_back(tmp_path):
    cfg = load_config(None, ["model.name=resnet18", "train.epochs=3"])
    save_config(cfg, tmp_path)
    saved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert config_from_dict(saved) == cfg
    args = json.loads((tmp_path / "args.json").read_text())
    assert args["train.epochs"] == 3 and args["model.name"] == "resnet18"


def test_hflip_of_older_runs_reads_as_data_flip(tmp_path):
    """Run folders written before `data.flip` hold `data.hflip`; eval.py reads their config.yaml."""
    assert load_config(write(tmp_path, "data:\n  hflip: false\n")).data.flip == "none"
    assert load_config(write(tmp_path, "data:\n  hflip: true\n")).data.flip == "horizontal"
    assert load_config(None, ["data.hflip=false"]).data.flip == "none"
    assert load_config(None).data.flip == "horizontal"


@pytest.mark.parametrize(
    "name", ["ssv2/abn_resnet50.yaml", "ssv2/resnet50.yaml", "ssv2/resnet101.yaml", "synthetic.yaml"]
)
def test_shipped_configs_load(name):
    cfg = load_config(REPO / "configs" / name)
    assert isinstance(cfg, Config)


def recipe_table():
    """The README's "Reproducing the original" table: (element, stabn key, value) per row."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Reproducing the original") :]
    section = section[: section.index("\n## ", 1)]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[3].startswith("`"):
            rows.append((cells[0], cells[3].strip("`"), cells[4].strip("`")))
    return rows


def test_the_recipe_table_covers_the_recipe():
    keys = {key for _, key, _ in recipe_table()}
    assert {"model.pretrained_2d", "data.flip", "train.nesterov", "train.batch_size", "train.lr", "train.milestones",
            "train.epochs", "eval.amp", "data.frame_length", "data.frame_size"} <= keys  # fmt: skip


@pytest.mark.parametrize("name", sorted(p.name for p in (REPO / "configs" / "ssv2").glob("*.yaml")))
def test_ssv2_config_is_the_originals_recipe(name):
    cfg = load_config(REPO / "configs" / "ssv2" / name).to_dict()
    for element, key, cell in recipe_table():
        section, field = key.split(".")
        ours = cfg[section][field]
        value = cell if isinstance(ours, str) else yaml.safe_load(cell)
        assert ours == value, f"{name}: {element} ({key}) is {ours!r}, not {value!r}"
    assert cfg["model"]["num_classes"] == 174 and cfg["model"]["name"] == name.removesuffix(".yaml")


@pytest.mark.slow
def test_cli_config_error_is_one_line_exit_2(tmp_path):
    path = write(tmp_path, "train:\n  epochz: 2\n")
    proc = subprocess.run(
        [sys.executable, str(REPO / "train_dp.py"), "--config", str(path)], capture_output=True, text=True, cwd=tmp_path
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {path}:2: unknown config key 'train.epochz'; did you mean 'train.epochs'?"


def test_yaml_off_and_on_are_strings_not_booleans(tmp_path):
    """`amp: off` means the choice "off" (YAML 1.2), in a file and on the command line."""
    path = write(tmp_path, "train:\n  amp: off\n  nesterov: true\neval:\n  amp: bf16\n  channels_last: false\n")
    cfg = load_config(path, ["eval.amp=off"])
    assert (cfg.train.amp, cfg.train.nesterov, cfg.eval.amp, cfg.eval.channels_last) == ("off", True, "off", False)
    with pytest.raises(ConfigError, match=r"'train.nesterov' expects bool, got 'yes'"):
        load_config(path, ["train.nesterov=yes"])
