"""Helpers shared by the test modules: where the repository and its fixtures are, how to launch
the repository's commands (its console scripts) in child processes, faults of the operating
system made for real, the original's reference outputs, and small videos encoded with PyAV."""

from __future__ import annotations

import collections
import contextlib
import ctypes
import importlib.util
import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from stabn.models import build_model

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
SYNTHETIC_CONFIG = CONFIGS / "synthetic.yaml"
# The original's reference outputs and preprocessing, kept in the repository;
# STABN_FIXTURES points at another copy.
FIXTURES = Path(os.environ.get("STABN_FIXTURES", Path(__file__).resolve().parent / "fixtures"))


def child_env(**extra: str) -> dict:
    """Environment for a launched job: none of torch.distributed's variables inherited, the
    repository importable, one thread per process."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("RANK", "WORLD_SIZE", "MASTER_", "LOCAL_RANK", "TORCHELASTIC"))
    }
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in [env.get("PYTHONPATH")] if p])
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def torchrun(script: str, *args: str, nproc: int = 2, launcher_args: tuple = ()) -> List[str]:
    """The command line of `torchrun --standalone` running one of the repo's scripts."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        *launcher_args,
        str(REPO / script),
        *args,
    ]


def tiny_run(data, logdir, *extra: str, workers: int = 0, epochs: int = 1) -> List[str]:
    """Overrides of configs/synthetic.yaml for a CPU-sized run on the synthetic dataset `data`
    (width 4, 8 frames, 32 px crops), writing to `logdir`; `extra` overrides come last."""
    return [
        f"logdir={logdir}", "model.width=4", f"data.frames_root={data}/frames",
        f"data.train_labels={data}/train.txt", f"data.val_labels={data}/val.txt",
        f"data.class_names={data}/classes.txt", "data.frame_length=8", "data.frame_size=32",
        f"data.num_workers={workers}", f"train.epochs={epochs}", *extra,
    ]  # fmt: skip


def console_script(name: str) -> Path:
    """The console script `name` (setup.py's entry points) of the environment running the tests."""
    return Path(sys.executable).parent / name


def run_console_script(
    name: str, args: Sequence[str], timeout: float = 300, cwd=REPO, **kwargs
) -> subprocess.CompletedProcess:
    """The console script `name` (`stabn-check`, ...) run as a user runs it, from `cwd` (the
    repository root unless given), its output captured as text."""
    return subprocess.run(
        [str(console_script(name)), *map(str, args)],
        cwd=cwd,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )


# -- faults of the operating system, made for real --------------------------------------------


@contextlib.contextmanager
def file_size_limit(limit: int) -> Iterator[None]:
    """This process's RLIMIT_FSIZE lowered to `limit` bytes inside the block: a write past it
    fails with EFBIG, "file too large" (Python ignores SIGXFSZ, which would kill the process).
    Keep the block free of output that goes to a file, pytest's capture files included."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def limit_file_size(limit: int) -> Callable[[], None]:
    """A preexec_fn that gives a child process (and its own children) RLIMIT_FSIZE `limit`."""
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))


# Linux capabilities that let root read and write whatever the file modes say.
_PR_CAPBSET_DROP = 24
_ROOT_OVERRIDES = (1, 2, 3)  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER


def as_a_user() -> Optional[Callable[[], None]]:
    """A preexec_fn under which file modes apply to a child as to any user: for root, the
    capabilities that override them are dropped from the child's bounding set, which its
    programs then run without. None where the tests do not run as root."""
    if os.geteuid() != 0:
        return None
    libc = ctypes.CDLL(None, use_errno=True)

    def drop() -> None:
        for cap in _ROOT_OVERRIDES:
            if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")

    return drop


def file_modes_apply(scratch: str) -> Optional[str]:
    """None if a child started with `as_a_user()` is refused a folder of mode 0555 (made under
    `scratch`); else why not, for a skip."""
    folder = Path(scratch) / "read-only-folder"
    folder.mkdir(exist_ok=True)
    folder.chmod(0o555)
    try:
        proc = subprocess.run([sys.executable, "-c", f"open({str(folder / 'x')!r}, 'w')"], preexec_fn=as_a_user(),
                              capture_output=True, text=True, timeout=60)  # fmt: skip
    except (OSError, subprocess.SubprocessError) as e:
        return f"cannot start a child without root's overrides: {e}"
    finally:
        folder.chmod(0o755)
    return None if "PermissionError" in proc.stderr else "file modes do not bind a child here (root's capabilities)"


class Tmpfs:
    """A tmpfs mounted at `path` (root only): a disk that fills up, or turns read-only, for real."""

    def __init__(self, path: Path, size: str) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self._mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs")

    def _mount(self, *args: str) -> None:
        proc = subprocess.run(["mount", *args, str(self.path)], capture_output=True, text=True, timeout=60)
        if proc.returncode:
            raise OSError(f"mount {' '.join(args)} {self.path}: {proc.stderr.strip()}")

    def remount(self, options: str) -> None:
        """e.g. `ro`, `rw`, `size=2m` (a size no smaller than what the files take)."""
        self._mount("-o", f"remount,{options}")

    def used(self) -> int:
        """Bytes the files take."""
        st = os.statvfs(self.path)
        return (st.f_blocks - st.f_bfree) * st.f_frsize

    def unmount(self) -> None:
        subprocess.run(["umount", str(self.path)], capture_output=True, timeout=60)


def try_tmpfs(path: Path, size: str) -> Tuple[Optional[Tmpfs], str]:
    """(a `Tmpfs` at `path`, "") or (None, why there can be none: not root, no mount)."""
    if os.geteuid() != 0:
        return None, "mounting a tmpfs needs root"
    try:
        return Tmpfs(path, size), ""
    except (OSError, subprocess.SubprocessError) as e:
        return None, f"cannot mount a tmpfs here: {e}"


def mount_tmpfs(path: Path, size: str) -> Tmpfs:
    """A `Tmpfs` at `path`, or a skip saying why there can be none."""
    import pytest

    disk, why_not = try_tmpfs(path, size)
    if disk is None:
        pytest.skip(why_not)
    return disk


class CodePayload:
    """Unpickling this creates `marker`: the proof that a file's code ran."""

    def __init__(self, marker) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


# -- the original's reference outputs (fixtures/reference_*.json) ---------------------------


def fill_rule(fixtures_dir: Path):
    spec = importlib.util.spec_from_file_location("fill_rule", fixtures_dir / "fill_rule.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_reference(fixtures_dir: Path, name: str) -> dict:
    return json.loads((fixtures_dir / name).read_text())


def reference_outputs(ref: dict):
    return [torch.tensor(o["values"]).view(o["shape"]) for o in ref["outputs"]]


def max_relative_error(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return ((ours - ref).abs().max() / ref.abs().max().clamp_min(1e-12)).item()


def run_reference_input(model, ref: dict, fixtures_dir: Path, channels_last: bool = False):
    x = fill_rule(fixtures_dir).make_input(ref["frame_length"], ref["frame_size"])
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last_3d)
    with torch.no_grad():
        out = model.eval()(x)
    return list(out) if isinstance(out, tuple) else [out]


def filled_reference_model(fixtures_dir: Path, name: str):
    """The reference fixture's model with its weights filled by the fixture's rule, and the fixture."""
    ref = load_reference(fixtures_dir, name)
    model = build_model(
        ref["model"], num_classes=ref["num_classes"], frame_length=ref["frame_length"], frame_size=ref["frame_size"]
    )
    model.load_state_dict(fill_rule(fixtures_dir).fill_params(model.state_dict()))
    return model, ref


def save_like_the_original(model, path):
    """As the original's trainer: DataParallel (keys get `module.`), SGD, MultiStepLR."""
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    wrapped = nn.DataParallel(model)
    optimizer = torch.optim.SGD(wrapped.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, [75, 125], 0.1)
    for p in wrapped.parameters():
        p.grad = torch.randn_like(p)
    optimizer.step()  # momentum buffers now exist
    scheduler.step()
    model.load_state_dict(weights)  # the reference outputs belong to the filled weights
    torch.save(
        {
            "epoch": 3,
            "iteration": 120,
            "best_score": 0.25,
            "model_state_dict": wrapped.state_dict(),
            "optimizer_state_dict": optimizer.state_dict(),
            "scheduler_state_dict": scheduler.state_dict(),
        },
        path,
    )


# -- small videos, encoded with PyAV -----------------------------------------------------------

# (container suffix, encoder, pixel format, options) of lossless encoders: decoded frames equal
# the frames given, to the bit. The tests take the first the bundled FFmpeg has.
LOSSLESS_CODECS = [(".mp4", "libx264rgb", "rgb24", {"crf": "0"}), (".mkv", "ffv1", "bgr0", {})]


def has_encoder(name: str) -> bool:
    import av

    return name in av.codecs_available


def lossless_codec(suffix: str = ""):
    """The first of LOSSLESS_CODECS the bundled FFmpeg encodes (with `suffix`'s container, if
    given); None where there is none."""
    return next((c for c in LOSSLESS_CODECS if has_encoder(c[1]) and suffix in ("", c[0])), None)


def lossy_codec():
    """(suffix, encoder, pixel format): H.264 in MP4 where the bundled FFmpeg has it, else VP9
    in WebM."""
    return (".mp4", "libx264", "yuv420p") if has_encoder("libx264") else (".webm", "libvpx-vp9", "yuv420p")


def encode_video(path, frames, rate, codec: str, pix_fmt: str, options=None) -> Path:
    """Write uint8 RGB frames [N, H, W, 3] (N may be 0: a video stream without frames) with
    `codec` at `rate` frames a second (a Fraction for rates like 30000/1001)."""
    import av

    path = Path(path)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = pix_fmt
        if options:
            stream.options = dict(options)
        if len(frames) == 0:
            container.start_encoding()
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_jpeg_folder(folder, frames, quality: int = 95) -> np.ndarray:
    """Frames as 000001.jpg ... in `folder`; returns them as the frame reader decodes them."""
    from PIL import Image

    from stabn.data import read_jpeg

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    decoded = []
    for i, frame in enumerate(frames):
        path = folder / ("%06d.jpg" % (i + 1))
        Image.fromarray(frame).save(path, quality=quality)
        decoded.append(read_jpeg(path).permute(1, 2, 0).numpy())
    return np.stack(decoded)


def textured_frames(num_frames: int, height: int, width: int, seed: int = 0) -> np.ndarray:
    """uint8 RGB frames [N, H, W, 3]: a smooth random texture drifting right, so each frame
    differs and a model's outputs do too."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (height // 8 + 1, (width + 4 * num_frames) // 8 + 1, 3)).astype(np.uint8)
    wide = coarse.repeat(8, axis=0).repeat(8, axis=1)[:height]
    return np.stack([wide[:, 4 * i : 4 * i + width] for i in range(num_frames)])


def unusable_videos(root) -> dict:
    """name -> (path, what its error says) for files that are no usable video: not a video, a
    video stream without frames, garbage partway through, cut short, no video stream, missing."""
    import av

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    text = root / "notes.mp4"
    text.write_text("not a video\n")
    empty = encode_video(root / "empty.avi", np.zeros((0, 48, 64, 3), np.uint8), 10, "mjpeg", "yuvj420p")
    # Garbage over the middle of a lossless stream: decoding fails partway.
    broken = encode_video(root / "broken.mkv", textured_frames(20, 48, 64), 25, "ffv1", "bgr0")
    data = bytearray(broken.read_bytes())
    middle = slice(len(data) // 2, len(data) // 2 + len(data) // 8)
    data[middle] = np.random.default_rng(0).integers(0, 256, len(data[middle]), dtype=np.uint8).tobytes()
    broken.write_bytes(bytes(data))
    # Cut in half: it decodes without an error, but its frames end long before its declared end.
    cut = encode_video(root / "cut.webm", textured_frames(20, 48, 64), 10, "libvpx-vp9", "yuv420p")
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    with av.open(str(root / "sound.wav"), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in list(stream.encode(frame)) + list(stream.encode()):
            container.mux(packet)
    return {
        "not a video": (text, "is not a video file"),
        "no frames": (empty, "has no decodable video frame"),
        "corrupt partway": (broken, "decoding failed after frame"),
        "cut short": (cut, "s it declares"),
        "no video stream": (root / "sound.wav", "has no video stream"),
        "missing": (root / "missing.webm", "does not exist"),
    }


class FileServer:
    """A local HTTP server of files given as bytes, counting the requests for each path. A path
    in `cut_short` announces its full length but sends half of it and closes the connection."""

    def __init__(self, files: dict, cut_short: tuple = ()) -> None:
        import http.server
        import threading

        server_files, requests = dict(files), collections.Counter()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (the standard library's name)
                requests[self.path] += 1
                body = server_files.get(self.path)
                if body is None:
                    self.send_error(404, "Not Found")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2] if self.path in cut_short else body)
                self.close_connection = True

            def log_message(self, *args):
                pass

        self.requests = requests
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self._server.server_port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
