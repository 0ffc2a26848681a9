"""The console scripts setup.py installs: each one there, its `--help` exit code 0, and its bad
input, whether argparse or the command itself meets it, one `error:` line and exit code 2."""

import importlib
import os
import re

import pytest

from helpers import REPO, console_script, run_console_script

# The console scripts and the function each one runs.
SCRIPTS = {
    "stabn-check": "stabn.commands.check:main",
    "stabn-demo": "stabn.commands.demo:main",
    "stabn-bench": "stabn.commands.bench:main",
    "stabn-export": "stabn.commands.export:main",
    "stabn-synthetic": "stabn.commands.make_synthetic:main",
    "stabn-prepare-ssv2": "stabn.commands.prepare_ssv2:main",
}
# Arguments each script parses and then refuses as bad input (the command's own check), and
# how its error line starts.
BAD_INPUT = {
    "stabn-check": (["train.epochs=1"], "error: no --config given; usage: stabn-check --config "),
    "stabn-demo": (["clip.mp4", "--checkpoint", "none.pt", "--topk", "0"], "error: --topk and --num-clips must be"),
    "stabn-bench": (["loader", "--batch-size", "0"], "error: --batch-size must be >= 1, got 0"),
    "stabn-export": (["--checkpoint", "{tmp}/none.pt", "--out", "{tmp}/m.onnx"], "error: "),
    "stabn-synthetic": (["--out", "{tmp}/data", "--size", "16"], "error: size must be at least 32, got 16"),
    "stabn-prepare-ssv2": (
        ["--video-dir", "{tmp}", "--anno-dir", "{tmp}/none", "--out-dir", "{tmp}/out"],
        "error: annotation directory not found: ",
    ),
}


def command_main(name: str):
    module, _, function = SCRIPTS[name].partition(":")
    return getattr(importlib.import_module(module), function)


def one_error_line(stderr: str, start: str = "error: ") -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(start), stderr
    return lines[0]


def test_every_command_is_an_installed_console_script():
    listed = dict(re.findall(r'"(stabn-[\w-]+) = ([\w.:]+)"', (REPO / "setup.py").read_text()))
    assert listed == SCRIPTS
    for name in SCRIPTS:
        path = console_script(name)
        assert path.is_file() and os.access(path, os.X_OK), f"no {path}: run pip install -e . again"


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_a_usage_error_is_one_line_and_exit_code_2(name, capsys):
    with pytest.raises(SystemExit) as stopped:
        command_main(name)(["--no-such-flag"])
    assert stopped.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    one_error_line(err)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_help_and_bad_input_of_a_console_script(name, tmp_path):
    proc = run_console_script(name, ["--help"], timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"usage: {name} "), proc.stdout
    args, start = BAD_INPUT[name]
    proc = run_console_script(name, [a.format(tmp=tmp_path) for a in args], timeout=120, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    one_error_line(proc.stderr, start)
