"""How predictions and explanations show themselves: a short text repr, and in a notebook an
HTML table of the top classes and the attention picture inline (IPython's `_repr_html_` and
`_repr_png_`)."""

from __future__ import annotations

import base64
import html
import io
from typing import Any, List, Optional

from PIL import Image

# `stabn.inference`'s dataclasses, which import this module for their reprs.
Prediction = Explanation = Any

_TEXT_CLASSES = 3  # classes a text repr names


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _ranked(names: List[str], probs: List[float], k: int) -> str:
    return ", ".join(f"{name!r} {prob:.2f}" for name, prob in zip(names[:k], probs[:k]))


def prediction_text(p: Prediction) -> str:
    """One line: the top classes of each branch with their probabilities."""
    more = f" (of top {len(p.names)})" if len(p.names) > _TEXT_CLASSES else ""
    text = f"Prediction({_ranked(p.names, p.probs, _TEXT_CLASSES)}{more}"
    if p.att_names and p.att_probs:
        text += f"; attention branch: {_ranked(p.att_names, p.att_probs, 1)}"
    if p.video is not None:
        text += f"; from {p.video.path}"
    return text + ")"


def _cells(names: Optional[List[str]], probs: Optional[List[float]], classes: Optional[List[int]], i: int) -> str:
    if not names or probs is None or classes is None or i >= len(names):
        return "<td></td><td></td>"
    return f"<td>{html.escape(names[i])} <small>({classes[i]})</small></td><td>{probs[i]:.3f}</td>"


def prediction_html(p: Prediction) -> str:
    """A table of the top-k of each branch: rank, class name (and index), probability."""
    stabn = bool(p.att_names)
    head = "<th>#</th><th>perception branch</th><th>p</th>"
    if stabn:
        head += "<th>attention branch</th><th>p</th>"
    rows = []
    for i in range(len(p.names)):
        row = f"<td>{i + 1}</td>{_cells(p.names, p.probs, p.classes, i)}"
        if stabn:
            row += _cells(p.att_names, p.att_probs, p.att_classes, i)
        rows.append(f"<tr>{row}</tr>")
    source = f"<caption>{html.escape(str(p.video.path))}</caption>" if p.video is not None else ""
    body = "".join(rows)
    return f'<table class="stabn-prediction">{source}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def explanation_text(e: Explanation) -> str:
    """One line: method, the maps' shapes, the class explained, the peak frame; no arrays."""
    peak = int(e.temporal.argmax())
    where = f"clip frame {peak}"
    if e.frame_indices is not None:
        where += f" (video frame {e.frame_indices[peak]})"
    method = e.method + (f" at {e.layer}" if e.layer else "")
    p = e.prediction
    explains = ""
    if e.target is not None:
        name = p.names[p.classes.index(e.target)] if e.target in p.classes else str(e.target)
        explains = f"; explains {name!r}"
    return (
        f"Explanation({method}; spatial {list(e.spatial.shape)}, temporal {list(e.temporal.shape)}; "
        f"top class {p.names[0]!r} {p.probs[0]:.2f}{explains}; peak at {where})"
    )


def explanation_html(e: Explanation) -> str:
    """The attention picture with the prediction's table beside it."""
    data = base64.b64encode(png_bytes(e.image)).decode("ascii")
    return (
        '<div style="display:flex;gap:1em;align-items:flex-start">'
        f'<img src="data:image/png;base64,{data}" style="max-width:75%"/>'
        f"{prediction_html(e.prediction)}</div>"
    )
