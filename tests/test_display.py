"""How predictions, explanations and specs show themselves: short text, HTML, PNG."""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

import stabn
from stabn.data.video import VideoInfo
from stabn.inference import Prediction

CLASSES = ["push <left>", "pull", "lift", "drop", "turn"]


def _model(name="abn_resnet18"):
    torch.manual_seed(0)
    return stabn.build_model(name, num_classes=5, frame_length=4, frame_size=32, width=4, class_names=CLASSES).eval()


def test_a_prediction_is_one_line_and_an_html_table():
    p = Prediction(
        classes=[2, 0, 4],
        names=["lift", "push <left>", "turn"],
        probs=[0.7, 0.2, 0.05],
        att_classes=[2, 1, 0],
        att_probs=[0.6, 0.3, 0.1],
        att_names=["lift", "pull", "push <left>"],
        video=VideoInfo("clip.mp4", 24, 120, 160, codec="h264"),
    )
    assert (
        repr(p)
        == "Prediction('lift' 0.70, 'push <left>' 0.20, 'turn' 0.05; attention branch: 'lift' 0.60; from clip.mp4)"
    )
    html = p._repr_html_()
    assert html.count("<tr>") == 4 and "<caption>clip.mp4</caption>" in html
    assert (
        "<tr><td>2</td><td>push &lt;left&gt; <small>(0)</small></td><td>0.200</td>"
        "<td>pull <small>(1)</small></td><td>0.300</td></tr>" in html
    )


def test_an_explanation_is_one_line_without_arrays_and_a_png_of_its_picture():
    model = _model()
    clip = torch.randn(3, 4, 32, 32)
    e = stabn.explain(model, clip)
    text = repr(e)
    peak = int(e.temporal.argmax())
    assert text == (
        f"Explanation(attention; spatial [4, 32, 32], temporal [4]; top class {e.prediction.names[0]!r} "
        f"{e.prediction.probs[0]:.2f}; peak at clip frame {peak})"
    )
    png = Image.open(io.BytesIO(e._repr_png_()))
    assert png.format == "PNG" and np.array_equal(np.asarray(png.convert("RGB")), np.asarray(e.image.convert("RGB")))
    assert e._repr_html_().startswith('<div style="display:flex')
    gif = Image.open(io.BytesIO(e.gif()))
    assert gif.format == "GIF" and gif.n_frames == 4
    peer = stabn.explain(_model("resnet18"), clip, method="input_gradient", target=3)
    assert repr(peer).startswith("Explanation(input_gradient; spatial [4, 32, 32], temporal [4]; top class ")
    assert "; explains " in repr(peer)
