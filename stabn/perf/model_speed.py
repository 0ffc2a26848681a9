"""Model throughput: training steps or inference forwards on random clips made on the device.

A training step is the trainer's own, `stabn.engine.step.training_step`, on a batch already on
the device: forward under autocast, cross-entropy (for an ST-ABN, CE(logits) + CE(att_logits)),
backward, and an SGD step (fused on CUDA, foreach on the CPU). Data loading is left out (see the `loader`
benchmark). Prints one JSON line per configuration: clips/s, ms per step, peak memory, the
forward's FLOPs (counted by `torch.utils.flop_counter.FlopCounterMode`) and, on a GPU, the
model FLOPs utilisation (a training step counts as 3 forwards).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import platform
import resource
import time
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from stabn.engine.precision import (
    AMP_DTYPES,
    amp_dtype,
    amp_name,
    autocast,
    clips_layout,
    prepare_model,
    use_channels_last,
)
from stabn.engine.step import training_step
from stabn.models import build_model
from stabn.optim import make_sgd

# Dense peak TFLOP/s as (bf16/fp16, tf32) by device name; the first matching entry wins.
# Full-precision runs count against tf32: cuDNN convolutions use TF32 by default.
PEAK_TFLOPS: List[Tuple[str, float, float]] = [
    ("H100 PCIe", 756.0, 378.0),
    ("H100", 989.0, 494.0),
    ("H200", 989.0, 494.0),
    ("A100", 312.0, 156.0),
]


def device_defaults(device: torch.device) -> Tuple[str, bool]:
    """(amp, channels_last) as the trainer and `eval.py` run by default on `device`."""
    return amp_name(amp_dtype("auto", device)), use_channels_last(None, device)


def peak_tflops(device_name: str, amp: str) -> Optional[float]:
    """The device's dense peak for the precision `amp` runs in, or None if not in the table."""
    for key, half, tf32 in PEAK_TFLOPS:
        if key.lower() in device_name.lower():
            return half if amp in ("bf16", "fp16") else tf32
    return None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def count_forward_flops(model: nn.Module, clips: torch.Tensor) -> int:
    """FLOPs of one forward of `clips` (a multiply-add counts 2), as FlopCounterMode counts them."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(clips)
    return counter.get_total_flops()


class PeakMemory:
    """Peak memory since the last `reset()`: `torch.cuda.max_memory_allocated` on a GPU; on the
    CPU the growth of the process's peak RSS (`resource.getrusage`), its peak first reset to
    the current RSS where Linux allows it (/proc/self/clear_refs), after glibc has returned
    freed memory (`malloc_trim`), so that configurations measured in turn are comparable."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.kind = "cuda_max_memory_allocated" if device.type == "cuda" else "cpu_peak_rss_growth"
        self._start = 0
        self.reset()

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            return
        with contextlib.suppress(OSError, AttributeError):  # glibc: give freed heap pages back first
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:  # the peak stays the process's: a later configuration may under-report
            self.kind = "cpu_peak_rss_growth_over_process_peak"
        self._start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def mb(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - self._start) / 1024  # KiB on Linux


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _step_function(
    mode: str, model: nn.Module, net: nn.Module, clips: Tensor, labels: Tensor, dev: torch.device, dtype
) -> Callable[[], None]:
    """One timed unit: the trainer's training step (`mode="train"`) or a forward under no_grad."""
    if mode == "train":
        optimizer = make_sgd(model.parameters(), dev, lr=0.01, momentum=0.9, weight_decay=5e-4)
        scaler = torch.amp.GradScaler(dev.type, enabled=dtype == torch.float16)
        return lambda: training_step(
            net, clips, labels, optimizer=optimizer, scaler=scaler, device=dev, amp_dtype=dtype
        )

    def forward() -> None:
        with torch.no_grad(), autocast(dev, dtype):
            net(clips)

    return forward


def _time(
    step: Callable[[], None], warmup: int, steps: int, dev: torch.device, memory: PeakMemory
) -> Tuple[float, float]:
    """(seconds of the `warmup` untimed calls, seconds per call of the `steps` timed ones)."""
    start = time.perf_counter()
    for _ in range(warmup):
        step()
    _sync(dev)
    warmup_s = time.perf_counter() - start  # with --compile, mostly compilation
    if dev.type == "cuda":
        memory.reset()  # the steady state, without cuDNN's autotuning workspaces
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(dev)
    return warmup_s, (time.perf_counter() - start) / steps


def benchmark(
    mode: str,
    model_name: str,
    frame_length: int,
    frame_size: int,
    batch_size: int,
    width: int = 64,
    num_classes: int = 174,
    device: str = "cpu",
    amp: str = "off",
    channels_last: bool = False,
    compile: bool = False,
    steps: int = 20,
    warmup: int = 5,
    peak: Optional[float] = None,
    attention: Optional[Dict[str, str]] = None,
) -> Dict[str, object]:
    """Time `steps` training steps (`mode="train"`) or forwards (`"infer"`) after `warmup`
    untimed ones; return the figures as a dict (the JSON line)."""
    dev = torch.device(device)
    dtype = AMP_DTYPES[amp]
    # On the CPU from here, so that weights, gradients, momenta and activations count (freed
    # memory may stay resident); on a GPU from after the warm-up (see below).
    memory = PeakMemory(dev)
    torch.manual_seed(0)
    model = build_model(
        model_name, num_classes=num_classes, frame_length=frame_length, frame_size=frame_size, width=width,
        attention=attention,
    )  # fmt: skip
    prepare_model(model, dev, channels_last)
    model.train(mode == "train")
    clips = torch.randn(batch_size, 3, frame_length, frame_size, frame_size, device=dev)
    clips = clips_layout(clips, channels_last)
    labels = torch.randint(0, num_classes, (batch_size,), device=dev)
    flops = count_forward_flops(model, clips)
    net = torch.compile(model) if compile else model
    step = _step_function(mode, model, net, clips, labels, dev, dtype)
    warmup_s, step_s = _time(step, warmup, steps, dev, memory)
    achieved = flops * (3 if mode == "train" else 1) / step_s / 1e12
    if dev.type != "cuda":
        peak = None  # no MFU on the CPU
    elif peak is None:
        peak = peak_tflops(device_name(dev), amp)
    return {
        "mode": mode,
        "model": model_name,
        "frame_length": frame_length,
        "frame_size": frame_size,
        "batch_size": batch_size,
        "width": width,
        "num_classes": num_classes,
        "attention": dict(attention or {}),
        "device": dev.type,
        "device_name": device_name(dev),
        "amp": amp,
        "channels_last": channels_last,
        "compile": compile,
        "steps": steps,
        "warmup": warmup,
        "warmup_s": round(warmup_s, 3),
        "threads": torch.get_num_threads(),
        "clips_per_s": round(batch_size / step_s, 3),
        "step_ms": round(step_s * 1e3, 3),
        "peak_mem_mb": round(memory.mb(), 1),
        "peak_mem_kind": memory.kind,
        "forward_gflops": flops / 1e9,
        "achieved_tflops": round(achieved, 4),
        "peak_tflops": peak,
        "mfu": round(achieved / peak, 4) if peak else None,
        "torch": torch.__version__,
    }


def _release(device: torch.device) -> None:
    """Free the last configuration's tensors before the next one is measured."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
