import json

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from helpers import run_console_script
from stabn import build_model
from stabn.commands.bench import main
from stabn.perf.model_speed import peak_tflops

TINY = "--model abn_resnet18 --width 4 --frame-length 4 --frame-size 32".split()
TINY += "--batch-size 2 --steps 2 --warmup 1 --device cpu".split()
KEYS = {
    "mode",
    "model",
    "frame_length",
    "frame_size",
    "batch_size",
    "width",
    "device",
    "amp",
    "channels_last",
    "compile",
    "warmup_s",
    "clips_per_s",
    "step_ms",
    "peak_mem_mb",
    "peak_mem_kind",
    "forward_gflops",
    "mfu",
    "torch",
}


def bench(*args):
    result = run_console_script("stabn-bench", args, timeout=120)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.strip().splitlines()]


def tiny_forward_gflops() -> float:
    model = build_model("abn_resnet18", num_classes=174, frame_length=4, frame_size=32, width=4)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.randn(2, 3, 4, 32, 32))
    return counter.get_total_flops() / 1e9


def check(report, mode):
    assert KEYS <= report.keys()
    assert report["mode"] == mode and report["model"] == "abn_resnet18" and report["device"] == "cpu"
    assert (report["frame_length"], report["frame_size"], report["batch_size"], report["width"]) == (4, 32, 2, 4)
    assert report["clips_per_s"] > 0 and report["step_ms"] > 0 and report["warmup_s"] > 0
    assert report["clips_per_s"] == pytest.approx(2000 / report["step_ms"], rel=1e-3)
    assert report["peak_mem_mb"] >= 0 and report["peak_mem_kind"].startswith("cpu_peak_rss")
    assert report["forward_gflops"] == pytest.approx(tiny_forward_gflops(), rel=1e-9)
    assert report["mfu"] is None and report["peak_tflops"] is None  # no MFU on the CPU
    assert report["torch"] == torch.__version__


@pytest.mark.slow
def test_train_cpu():
    (report,) = bench("train", *TINY)
    check(report, "train")
    # the trainer's CPU default: fp32, NCDHW, eager
    assert report["amp"] == "off" and report["channels_last"] is False and report["compile"] is False


@pytest.mark.slow
def test_infer_with_options():
    (report,) = bench("infer", *TINY, "--amp", "bf16", "--no-channels-last", "--threads", "1")
    check(report, "infer")
    assert report["amp"] == "bf16" and report["channels_last"] is False and report["threads"] == 1


@pytest.mark.slow
def test_compare():
    *runs, ratios = bench("train", *TINY, "--channels-last", "--compare")
    assert [(r["mode"], r["amp"], r["channels_last"]) for r in runs] == [
        ("train", "off", False),
        ("train", "off", True),
        ("infer", "off", False),
        ("infer", "off", True),
    ]
    for r in runs:
        check(r, r["mode"])
    assert ratios["mode"] == "compare"
    assert ratios["baseline"] == {"amp": "off", "channels_last": False, "compile": False}
    assert ratios["fast"] == {"amp": "off", "channels_last": True, "compile": False}
    assert ratios["train_speedup"] == pytest.approx(runs[1]["clips_per_s"] / runs[0]["clips_per_s"], abs=1e-3)
    assert ratios["infer_speedup"] == pytest.approx(runs[3]["clips_per_s"] / runs[2]["clips_per_s"], abs=1e-3)


def test_peak_table():
    assert peak_tflops("NVIDIA H100 80GB HBM3", "bf16") == 989
    assert peak_tflops("NVIDIA H100 80GB HBM3", "off") == 494
    assert peak_tflops("NVIDIA H200", "fp16") == 989
    assert peak_tflops("NVIDIA A100-SXM4-80GB", "off") == 156
    assert peak_tflops("Some GPU", "bf16") is None


def test_cli_errors(capsys):
    assert main(["train", "--model", "resnet5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown model 'resnet5'; choose one of: ") and "\n" not in err
    assert main(["infer", *TINY, "--steps", "0"]) == 2
    assert capsys.readouterr().err.strip() == "error: --steps must be >= 1, got 0"
    with pytest.raises(SystemExit) as e:
        main(["train", "--amp", "fp8"])
    assert e.value.code == 2


@pytest.mark.slow
def test_sweep():
    *runs, summary = bench("infer", *TINY, "--sweep")
    assert [(r["amp"], r["channels_last"], r["compile"]) for r in runs] == [
        (amp, cl, False) for amp in ("off", "bf16", "fp16") for cl in (False, True)
    ]
    for r in runs:
        check(r, "infer")
    assert summary["mode"] == "sweep" and summary["of"] == "infer"
    rows = summary["configs"]
    assert [row["clips_per_s"] for row in rows] == [r["clips_per_s"] for r in runs]
    assert rows[0]["speedup"] == 1.0
    for row in rows:
        assert row["speedup"] == pytest.approx(row["clips_per_s"] / rows[0]["clips_per_s"], abs=1e-3)


def test_sweep_goes_on_past_a_failing_configuration(monkeypatch, capsys):
    from stabn.commands import bench_speed as train

    real = train.benchmark

    def fp16_fails(mode, **kw):
        if kw["amp"] == "fp16":
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore detail")
        return real(mode, **kw)

    monkeypatch.setattr(train, "benchmark", fp16_fails)
    assert main(["infer", *TINY, "--sweep"]) == 0
    *runs, summary = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [r.get("error") for r in runs] == [None] * 4 + ["CUDA out of memory. Tried to allocate 2.00 GiB"] * 2
    assert [row["speedup"] is None for row in summary["configs"]] == [False] * 4 + [True] * 2


def test_cost_counts_what_the_attention_options_change():
    """On the meta device: the product fusion halves conv_att_mechanism's input channels, so
    the forward saves exactly that 1x1x1 convolution's FLOPs on layer3's grid."""
    from stabn.perf.model_cost import model_cost

    base = model_cost("abn_resnet18", frame_length=4, frame_size=64, width=4, num_classes=8)
    product = model_cost("abn_resnet18", frame_length=4, frame_size=64, width=4, num_classes=8,
                         attention={"fusion": "product"})  # fmt: skip
    channels, cells = 4 * 4, 4 * 4 * 4  # layer3's width, and T x h x w (64 px -> 4 x 4)
    # 2 FLOPs a multiply-add, for each of the `channels` input channels no longer there
    assert base["forward_flops"] - product["forward_flops"] == 2 * channels * channels * cells
    assert base["parameters"] - product["parameters"] == channels * channels
    assert base["saved_for_backward_bytes"] > product["saved_for_backward_bytes"] > 0
    longer = model_cost("abn_resnet18", frame_length=8, frame_size=64, width=4, num_classes=8)
    assert longer["saved_for_backward_bytes"] > 1.8 * base["saved_for_backward_bytes"]
