"""The example notebooks, executed in a real ipykernel by nbclient against a small checkpoint
served over a local HTTP server and a video encoded here; and committed without outputs."""

from __future__ import annotations

import base64
import hashlib
import io
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch
from PIL import Image

import stabn
from helpers import FileServer, encode_video, lossy_codec, textured_frames
from stabn.checkpoint import save_checkpoint

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "examples").glob("*.ipynb"))
CLASSES = ["left to right", "right to left", "appearing", "disappearing"]


def test_there_are_notebooks_and_they_carry_no_outputs():
    assert [p.name for p in NOTEBOOKS] == ["hub_and_export.ipynb", "predict_and_explain.ipynb"]
    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4)
        nbformat.validate(notebook)
        for i, cell in enumerate(notebook.cells):
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, f"{path.name} cell {i}: strip its outputs"
        assert "widgets" not in notebook.metadata, f"{path.name}: strip its widget state"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """An ST-ABN checkpoint behind a local URL (its name carrying its hash, as torch.hub names
    weights), and an H.264 (else VP9) video of 24 frames at 160 x 120."""
    out = tmp_path_factory.mktemp("notebook")
    torch.manual_seed(0)
    model = stabn.build_model(
        "abn_resnet18", num_classes=4, frame_length=8, frame_size=48, width=4, class_names=CLASSES
    ).eval()
    save_checkpoint(out / "tiny.pt", model, model.spec.to_dict())
    data = (out / "tiny.pt").read_bytes()
    name = f"tiny-{hashlib.sha256(data).hexdigest()[:12]}.pt"
    suffix, codec, pix_fmt = lossy_codec()
    video = encode_video(out / f"clip{suffix}", textured_frames(24, 120, 160), 12, codec, pix_fmt)
    server = FileServer({"/" + name: data})
    yield {"url": f"{server.url}/{name}", "name": name, "video": video, "server": server, "out": out}
    server.close()


def _execute(path: Path, env: dict, cwd: Path, monkeypatch):
    from nbclient import NotebookClient

    for key, value in env.items():
        monkeypatch.setenv(key, str(value))  # the kernel inherits the environment
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
    return {cell.metadata.get("tags", [""])[0]: cell for cell in notebook.cells if cell.cell_type == "code"}


def _outputs(cell, mime):
    shown = [o for o in cell.outputs if o.get("output_type") in ("display_data", "execute_result")]
    return [o["data"][mime] for o in shown if mime in o["data"]]


def _png(data) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(data)))


@pytest.mark.slow
def test_predict_and_explain_runs_in_a_kernel_from_a_url(served, tmp_path, monkeypatch):
    env = {"STABN_CHECKPOINT": served["url"], "STABN_VIDEO": served["video"], "TORCH_HOME": tmp_path / "torch"}
    cells = _execute(REPO / "examples" / "predict_and_explain.ipynb", env, tmp_path, monkeypatch)
    assert served["server"].requests["/" + served["name"]] == 1
    assert (tmp_path / "torch" / "hub" / "checkpoints" / served["name"]).is_file()

    (spec_text,) = _outputs(cells["load"], "text/plain")
    assert spec_text.splitlines()[0] == "model      abn_resnet18, width 4"

    (table,) = _outputs(cells["predict"], "text/html")
    assert table.startswith('<table class="stabn-prediction">') and table.count("<tr>") == 4  # header + top 3
    model = stabn.load_pretrained(tmp_path / "torch" / "hub" / "checkpoints" / served["name"])
    prediction = stabn.predict(model, served["video"], topk=3, num_clips=2)
    assert f"<td>{prediction.names[0]} <small>({prediction.classes[0]})</small></td>" in table

    (picture,) = _outputs(cells["explain"], "image/png")
    explanation = stabn.explain(model, served["video"])
    assert np.array_equal(np.asarray(_png(picture).convert("RGB")), np.asarray(explanation.image.convert("RGB")))
    (beside,) = _outputs(cells["explain"], "text/html")
    assert beside.count('<img src="data:image/png;base64,') == 1 and '<table class="stabn-prediction">' in beside

    methods = _outputs(cells["methods"], "image/png")
    printed = "".join(o.get("text", "") for o in cells["methods"].outputs if o.get("output_type") == "stream")
    assert len(methods) == 3 and all(_png(p).width == explanation.image.width for p in methods)
    for method in ("gradcam at layer3", "input_gradient", "integrated_gradients"):
        assert f"Explanation({method}; spatial [8, 48, 48], temporal [8];" in printed

    (gif,) = _outputs(cells["animation"], "image/gif")
    animation = Image.open(io.BytesIO(base64.b64decode(gif)))
    assert animation.format == "GIF" and animation.n_frames == 8


@pytest.mark.slow
def test_hub_and_export_runs_in_a_kernel(served, tmp_path, monkeypatch):
    env = {"STABN_CHECKPOINT": served["url"], "STABN_REPO": REPO, "TORCH_HOME": tmp_path / "torch"}
    cells = _execute(REPO / "examples" / "hub_and_export.ipynb", env, tmp_path, monkeypatch)
    (spec_text,) = _outputs(cells["hub"], "text/plain")
    assert "classes    4: 'left to right', 'right to left', 'appearing', ... (4 in all)" in spec_text
    printed = "".join(o.get("text", "") for o in cells["export"].outputs if o.get("output_type") == "stream")
    assert printed.startswith("wrote ") and "(onnx, " in printed
    (shapes,) = _outputs(cells["onnxruntime"], "text/plain")
    assert " ".join(shapes.split()) == (
        "{'logits': (3, 4), 'att_logits': (3, 4), 'spatial': (3, 1, 8, 3, 3), 'temporal': (3, 1, 8, 1, 1)}"
    )
