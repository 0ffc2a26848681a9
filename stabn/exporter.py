"""A model out of Python: ONNX (`.onnx`, torch's dynamo exporter) or a `torch.export` program
(`.pt2`), with a dynamic batch size, named outputs and the model's spec inside the file.

    stabn.export(model, "model.onnx")    # logits, att_logits, spatial, temporal for an ST-ABN
    stabn.exported_spec("model.onnx")    # the ModelSpec the file carries

Every export checks itself before it lands: the file, read back (onnxruntime for ONNX,
`torch.export.load` for a program), runs batches of `CHECK_BATCH_SIZES` clips beside eager
PyTorch, and a difference over the tolerance is an error that gives the figure. The file is
written only once the check passes, so a failed export leaves an older file as it was.
"""

from __future__ import annotations

import copy
import importlib.util
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Sequence, Tuple

import torch
from torch import Tensor, nn

from stabn.checkpoint import unwrap_model
from stabn.errors import PathLike, StabnError
from stabn.fileio import atomic_write
from stabn.models import STABNOutput, is_stabn, model_spec
from stabn.models.spec import ModelSpec
from stabn.version import __version__

EXPORT_FORMATS = (".onnx", ".pt2")
INPUT_NAME = "clip"
STABN_OUTPUTS = ("logits", "att_logits", "spatial", "temporal")
CLASSIFIER_OUTPUTS = ("logits",)
SPEC_KEY = "stabn_spec"  # ONNX metadata key; the program's extra file is SPEC_KEY + ".json"
CHECK_BATCH_SIZES = (1, 3)
# The largest difference allowed between the export and eager PyTorch. On the logits,
# relative to the largest logit where that exceeds 1, since float32 carries about 1e-7 of a
# logit's size whatever the runtime. On the maps (in [0, 1]) ten times more: float32 eager
# itself differs from float64 by about 1e-4 there (a sigmoid of large values).
TOLERANCE = 1e-4
MAP_TOLERANCE = 1e-3
# A deep model's float32 logits can be further than TOLERANCE from exact arithmetic in eager
# PyTorch itself (a 3D ResNet-101 of random weights: 1.4e-4); there the check allows this many
# times eager's own difference from float64, as two float32 runtimes may each err that much.
FLOAT32_MARGIN = 2.0
_EXAMPLE_BATCH = 2  # a batch of 1 would make torch.export fix the batch size


class ExportError(StabnError):
    """A model that cannot be exported, a missing exporter, or an export that does not match."""


@dataclass
class ExportReport:
    """What `export` wrote and how closely the file matches eager PyTorch."""

    path: Path
    format: str  # "onnx" or "pt2"
    outputs: Tuple[str, ...]
    batch_sizes: Tuple[int, ...]  # checked
    differences: Dict[str, float]  # per output, the largest over the batches (logits: scaled)
    bytes: int

    def __str__(self) -> str:
        worst = ", ".join(f"{name} {diff:.2g}" for name, diff in self.differences.items())
        return (
            f"wrote {self.path} ({self.format}, {self.bytes / 2**20:.1f} MiB; outputs {', '.join(self.outputs)}); "
            f"against eager PyTorch on batches of {', '.join(map(str, self.batch_sizes))}: {worst}"
        )


class _Outputs(nn.Module):
    """The model with a flat tuple out, in the order of `output_names`."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, clip: Tensor) -> Tuple[Tensor, ...]:
        out = self.model(clip)
        if isinstance(out, STABNOutput):
            return out.logits, out.att_logits, out.spatial_attention, out.temporal_attention
        return (out,)


def output_names(model: nn.Module) -> Tuple[str, ...]:
    return STABN_OUTPUTS if is_stabn(model) else CLASSIFIER_OUTPUTS


def _pool_matrix(n_in: int, n_out: int, like: Tensor) -> Tensor:
    """[n_out, n_in]: row i averages input cells floor(i n_in / n_out) to ceil((i + 1) n_in /
    n_out), the cells adaptive average pooling gives output i."""
    i = torch.arange(n_out, device=like.device)
    start = (i * n_in) // n_out
    end = ((i + 1) * n_in + n_out - 1) // n_out
    j = torch.arange(n_in, device=like.device)
    inside = (j[None, :] >= start[:, None]) & (j[None, :] < end[:, None])
    return inside.to(like.dtype) / (end - start)[:, None].to(like.dtype)


def _adaptive_avg_pool3d(x: Tensor, output_size: Sequence[int]) -> Tensor:
    """Adaptive average pooling as one matrix product per pooled axis: the ONNX exporter has
    no function for aten's (ST-ABN pools its attention to (T, 1, 1), `motion` to the map)."""
    for axis, n_out in zip((2, 3, 4), output_size):
        if x.shape[axis] != n_out:
            pooled = torch.movedim(x, axis, -1) @ _pool_matrix(x.shape[axis], n_out, x).t()
            x = torch.movedim(pooled, -1, axis)
    return x


_ONNX_DECOMPOSITIONS = {
    torch.ops.aten.adaptive_avg_pool3d.default: _adaptive_avg_pool3d,
    torch.ops.aten._adaptive_avg_pool3d.default: _adaptive_avg_pool3d,
}


def _clips(spec: ModelSpec, batch: int, seed: int) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, spec.frame_length, spec.frame_size, spec.frame_size, generator=generator)


def _require(*modules: str) -> None:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ExportError(f"ONNX export needs {', '.join(missing)}: pip install -e '.[export]'")


def _program(model: nn.Module, spec: ModelSpec) -> torch.export.ExportedProgram:
    batch = torch.export.Dim("batch", min=1)
    try:
        return torch.export.export(
            _Outputs(model), (_clips(spec, _EXAMPLE_BATCH, 0),), dynamic_shapes={INPUT_NAME: {0: batch}}
        )
    except Exception as e:  # torch.export raises many types for code it cannot trace
        raise ExportError(f"torch.export cannot trace {spec.name}: {type(e).__name__}: {e}".splitlines()[0]) from None


def _metadata(spec: ModelSpec, names: Tuple[str, ...]) -> str:
    return json.dumps({"spec": spec.to_dict(), "outputs": list(names), "input": INPUT_NAME, "stabn": __version__})


def _onnx_bytes(program: torch.export.ExportedProgram, spec: ModelSpec, names: Tuple[str, ...]) -> bytes:
    _require("onnx", "onnxscript", "onnxruntime")
    onnx_program = torch.onnx.export(
        program.run_decompositions(_ONNX_DECOMPOSITIONS),
        (_clips(spec, _EXAMPLE_BATCH, 0),),
        input_names=[INPUT_NAME],
        output_names=list(names),
        dynamo=True,
        verbose=False,
    )
    onnx_program.model.metadata_props[SPEC_KEY] = _metadata(spec, names)
    return onnx_program.model_proto.SerializeToString()


def _pt2_bytes(program: torch.export.ExportedProgram, spec: ModelSpec, names: Tuple[str, ...]) -> bytes:
    buffer = io.BytesIO()
    torch.export.save(program, buffer, extra_files={SPEC_KEY + ".json": _metadata(spec, names)})
    return buffer.getvalue()


def _runner(data: bytes, fmt: str):
    """A function from a clip batch to the file's outputs, read back from its bytes."""
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
        return lambda clips: [torch.from_numpy(o) for o in session.run(None, {INPUT_NAME: clips.numpy()})]
    program = torch.export.load(io.BytesIO(data)).module()
    return lambda clips: list(program(clips))


def _difference(name: str, got: Tensor, want: Tensor) -> float:
    diff = float((got.float() - want.float()).abs().max()) if want.numel() else 0.0
    if name.endswith("logits"):
        diff /= max(1.0, float(want.abs().max()))
    return diff


def _float32_error(model: nn.Module, clips: Tensor, names: Tuple[str, ...]) -> Dict[str, float]:
    """How far eager float32 itself is from float64 arithmetic on `clips`, per logits output
    (relative, as `_difference`): the floor below which no runtime can be asked to agree."""
    exact = copy.deepcopy(model).double()
    with torch.no_grad():
        want32, want64 = _Outputs(model)(clips), _Outputs(exact)(clips.double())
    return {n: _difference(n, a, b) for n, a, b in zip(names, want32, want64) if n.endswith("logits")}


def _check(path: Path, data: bytes, fmt: str, model: nn.Module, spec: ModelSpec, names, tolerance: float):
    run = _runner(data, fmt)
    worst = dict.fromkeys(names, 0.0)
    for batch in CHECK_BATCH_SIZES:
        clips = _clips(spec, batch, batch)
        with torch.no_grad():
            want, got = _Outputs(model)(clips), run(clips)
        floor: Dict[str, float] = {}
        for name, g, w in zip(names, got, want):
            if tuple(g.shape) != tuple(w.shape):
                raise ExportError(
                    f"{path}: {name} has shape {list(g.shape)} for a batch of {batch}, eager {list(w.shape)}"
                )
            diff = _difference(name, g, w)
            worst[name] = max(worst[name], diff)
            logits = name.endswith("logits")
            allowed = tolerance if logits else max(tolerance, MAP_TOLERANCE)
            if diff > allowed and logits:  # deep models: is eager float32 itself that far from exact?
                floor = floor or _float32_error(model, clips, names)
                allowed = max(allowed, FLOAT32_MARGIN * floor[name])
            if diff > allowed:
                how = (
                    f"relative to the largest logit; the tolerance is the larger of {tolerance:g} and "
                    f"{FLOAT32_MARGIN:g} x eager float32's own difference from float64"
                    if logits
                    else "absolute"
                )
                raise ExportError(
                    f"{path}: the exported {name} differs from eager PyTorch by {diff:.3g} on a batch of "
                    f"{batch}, over the tolerance {allowed:.3g} ({how}); nothing was written"
                )
    return worst


def export(model: nn.Module, path: PathLike, *, tolerance: float = TOLERANCE) -> ExportReport:
    """Write `model` (eval mode, batch size dynamic) to `path`: ONNX for `.onnx`, a
    `torch.export` program for `.pt2`. The input is `clip` [B, 3, T, S, S] as the spec says;
    the outputs are `output_names(model)`. Raises `ExportError` where the logits differ from
    eager PyTorch by more than `tolerance` (the maps by more than `MAP_TOLERANCE`)."""
    path = Path(path)
    fmt = path.suffix.lower()
    if fmt not in EXPORT_FORMATS:
        given = path.suffix or "(no suffix)"
        raise ExportError(f"{path}: unknown export format {given}; give {' or '.join(EXPORT_FORMATS)}")
    fmt = fmt[1:]
    spec = model_spec(model)
    model = unwrap_model(model).cpu().eval()
    names = output_names(model)
    program = _program(model, spec)
    data = _onnx_bytes(program, spec, names) if fmt == "onnx" else _pt2_bytes(program, spec, names)
    differences = _check(path, data, fmt, model, spec, names, tolerance)
    atomic_write(path, lambda f: f.write(data))
    return ExportReport(path, fmt, names, CHECK_BATCH_SIZES, differences, len(data))


def exported_metadata(path: PathLike) -> Dict:
    """What an exported file says of itself: `spec`, `outputs`, `input`, `stabn` (version)."""
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        _require("onnx")
        import onnx

        props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        text = props.get(SPEC_KEY)
    else:
        extra = {SPEC_KEY + ".json": ""}
        torch.export.load(path, extra_files=extra)
        text = extra[SPEC_KEY + ".json"] or None
    if text is None:
        raise ExportError(f"{path}: carries no {SPEC_KEY}: not exported by stabn.export")
    return json.loads(text)


def exported_spec(path: PathLike) -> ModelSpec:
    """The `ModelSpec` an exported file carries (frame length, size, normalisation, classes)."""
    return ModelSpec.from_dict(exported_metadata(path)["spec"])
