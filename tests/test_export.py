"""stabn.export and stabn-export: ONNX (onnxruntime) and torch.export programs with a dynamic
batch size, named outputs and the model's spec in the file, checked against eager PyTorch."""

from __future__ import annotations

import json

import pytest
import torch

import stabn
from helpers import run_console_script
from stabn.checkpoint import save_checkpoint
from stabn.exporter import ExportError

onnxruntime = pytest.importorskip("onnxruntime")

OPTIONS = {"spatial_gate": "multiply", "fusion": "product", "norm": "peak", "temporal": "motion"}


def _trained_like(name, **kwargs):
    """A small model whose BatchNorms hold their data's exact statistics, so that its
    activations have a trained model's scale: a fresh build's grow layer by layer, until whole
    frames of the spatial map saturate, where onnxruntime's sigmoid (clamped to about 1e-8)
    and PyTorch's (down to 1e-45) differ and `norm: peak` blows the difference up to 1."""
    kwargs = {"num_classes": 5, "frame_length": 8, "frame_size": 48, "width": 4, **kwargs}
    torch.manual_seed(0)
    model = stabn.build_model(name, **kwargs)
    for bn in model.modules():
        if isinstance(bn, torch.nn.modules.batchnorm._BatchNorm):
            bn.reset_running_stats()
            bn.momentum = None  # a cumulative average
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(4, 3, kwargs["frame_length"], kwargs["frame_size"], kwargs["frame_size"]))
    return model.eval()


def _eager(model, clips):
    with torch.no_grad():
        out = model(clips)
    if isinstance(out, stabn.STABNOutput):
        return [out.logits, out.att_logits, out.spatial_attention, out.temporal_attention]
    return [out]


def _onnx_outputs(path, clips):
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return names, [torch.from_numpy(o) for o in session.run(None, {"clip": clips.numpy()})]


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("abn_resnet18", {}),  # the original's attention
        ("abn_resnet18", {"attention": OPTIONS}),  # temporal: motion pools the stem's change to the map
        ("abn_resnet50", {"frame_size": 40}),  # bottleneck blocks; a map not dividing the stem's size
        ("resnet18", {}),
    ],
)
def test_onnx_matches_eager_for_batches_of_1_and_3_from_one_file(tmp_path, name, kwargs):
    model = _trained_like(name, class_names=list("abcde"), **kwargs)
    report = stabn.export(model, tmp_path / "model.onnx")
    assert report.batch_sizes == (1, 3) and report.path.stat().st_size == report.bytes
    spec = model.spec
    for batch in (1, 3):
        clips = torch.randn(batch, 3, spec.frame_length, spec.frame_size, spec.frame_size)
        names, got = _onnx_outputs(tmp_path / "model.onnx", clips)
        want = _eager(model, clips)
        assert tuple(names) == (("logits", "att_logits", "spatial", "temporal") if "abn" in name else ("logits",))
        for n, g, w in zip(names, got, want):
            assert g.shape == w.shape, n
            scale = max(1.0, float(w.abs().max())) if n.endswith("logits") else 1.0
            assert (g - w).abs().max() / scale <= (1e-4 if n.endswith("logits") else 1e-3), n
    assert stabn.exported_spec(tmp_path / "model.onnx") == spec
    assert stabn.exported_spec(tmp_path / "model.onnx").class_names == tuple("abcde")


def test_a_program_carries_its_spec_and_runs_any_batch(tmp_path):
    model = _trained_like("abn_resnet18", attention=OPTIONS, frame_length=4)
    report = stabn.export(model, tmp_path / "model.pt2")
    assert report.format == "pt2" and report.differences == dict.fromkeys(report.outputs, 0.0)
    program = torch.export.load(tmp_path / "model.pt2").module()
    clips = torch.randn(5, 3, 4, 48, 48)
    with torch.no_grad():
        got = program(clips)
    assert all(torch.equal(g, w) for g, w in zip(got, _eager(model, clips)))
    assert stabn.exported_spec(tmp_path / "model.pt2") == model.spec


def test_a_failed_check_gives_the_figure_and_leaves_the_old_file(tmp_path, monkeypatch):
    """A translation that is wrong by 2 % (the attention's pooling scaled), as a broken
    exporter function would be: the check finds it and nothing is written."""
    from stabn import exporter

    def pooled_wrong(x, output_size):
        return exporter._adaptive_avg_pool3d(x, output_size) * 1.02

    monkeypatch.setattr(exporter, "_ONNX_DECOMPOSITIONS", dict.fromkeys(exporter._ONNX_DECOMPOSITIONS, pooled_wrong))
    model = _trained_like("abn_resnet18")
    path = tmp_path / "model.onnx"
    path.write_bytes(b"an earlier export")
    with pytest.raises(ExportError) as e:
        stabn.export(model, path)
    message = str(e.value)
    assert message.startswith(f"{path}: the exported logits differs from eager PyTorch by ")
    assert message.endswith("x eager float32's own difference from float64); nothing was written")
    assert float(message.split(" by ")[1].split(" ")[0]) > 1e-3
    assert path.read_bytes() == b"an earlier export"
    with pytest.raises(ExportError, match=r"model\.tflite: unknown export format \.tflite; give \.onnx or \.pt2"):
        stabn.export(model, tmp_path / "model.tflite")


def test_stabn_export_from_a_checkpoint(tmp_path):
    model = _trained_like("abn_resnet18", frame_length=4)
    save_checkpoint(tmp_path / "ckpt.pt", model, model.spec.to_dict())
    out = run_console_script("stabn-export", ["--checkpoint", tmp_path / "ckpt.pt", "--out", tmp_path / "m.onnx"])
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"wrote {tmp_path / 'm.onnx'} (onnx, ")
    clips = torch.randn(3, 3, 4, 48, 48)
    _, got = _onnx_outputs(tmp_path / "m.onnx", clips)
    want = _eager(model, clips)[0]
    assert (got[0] - want).abs().max() <= 1e-4 * max(1.0, float(want.abs().max()))
    bad = run_console_script("stabn-export", ["--checkpoint", tmp_path / "ckpt.pt", "--out", tmp_path / "m.zip"])
    assert bad.returncode == 2
    assert bad.stderr.strip() == f"error: {tmp_path / 'm.zip'}: unknown export format .zip; give .onnx or .pt2"


def test_the_onnx_benchmark_prints_both_runtimes_from_one_run():
    out = run_console_script(
        "stabn-bench", ["onnx", "--models", "resnet18", "--frame-length", "4", "--frame-size", "32", "--repeats", "1"]
    )
    assert out.returncode == 0, out.stderr
    (line,) = out.stdout.splitlines()
    figures = json.loads(line)
    assert figures["model"] == "resnet18" and figures["clip"] == "4x32"
    assert figures["onnxruntime_over_eager"] == pytest.approx(
        figures["onnxruntime_clips_per_s"] / figures["eager_clips_per_s"]
    )
    assert figures["export_max_difference"]["logits"] <= 1e-4
    bad = run_console_script("stabn-bench", ["onnx", "--models", "resnet7"])
    assert bad.returncode == 2 and bad.stderr.startswith("error: --models 'resnet7': unknown ['resnet7']")


def test_a_deep_model_is_held_to_float32s_own_accuracy(tmp_path):
    """A 3D ResNet-101's float32 logits are further from exact arithmetic than 1e-4 in eager
    PyTorch itself; the check allows twice that, not more."""
    from stabn import exporter

    model = _trained_like("resnet101", frame_length=4, frame_size=32)
    report = stabn.export(model, tmp_path / "deep.onnx")
    floors = [exporter._float32_error(model, exporter._clips(model.spec, b, b), ("logits",))["logits"] for b in (1, 3)]
    assert report.differences["logits"] <= max(1e-4, exporter.FLOAT32_MARGIN * max(floors))
    assert max(floors) > 1e-5  # the floor is real: float32 is not exact here
