"""JSON-native figure specs that stages return and reports/ renders.

A stage describes *what* to plot (data and labels); the renderer decides *how*.
Each constructor returns a plain dict with a ``type`` key, so figures survive a
round trip through ``results.json`` and ``robaudit report`` can redraw them.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

import numpy as np


def _floats(values: Sequence[float] | np.ndarray) -> list[float | None]:
    arr = np.asarray(values, dtype=np.float64).ravel()
    return [float(v) if np.isfinite(v) else None for v in arr]


def series(name: str, x: Sequence[float], y: Sequence[float], *, low: Sequence[float] | None = None,
           high: Sequence[float] | None = None) -> dict[str, Any]:
    """One line of a line chart, optionally with a confidence band (low, high)."""
    out: dict[str, Any] = {"name": name, "x": _floats(x), "y": _floats(y)}
    if low is not None and high is not None:
        out["low"], out["high"] = _floats(low), _floats(high)
    return out


def line_chart(title: str, x_label: str, y_label: str, lines: list[dict[str, Any]], *,
               x_log: bool = False, y_log: bool = False, y_range: tuple[float, float] | None = None,
               caption: str = "") -> dict[str, Any]:
    return {"type": "line", "title": title, "x_label": x_label, "y_label": y_label, "series": lines,
            "x_log": x_log, "y_log": y_log, "y_range": list(y_range) if y_range else None,
            "caption": caption}


def heatmap(title: str, values: np.ndarray | Sequence[Sequence[float]], *, row_labels: Sequence[str],
            col_labels: Sequence[str], value_label: str, vmin: float | None = None,
            vmax: float | None = None, caption: str = "", annotate: bool = True) -> dict[str, Any]:
    arr = np.asarray(values, dtype=np.float64)
    return {"type": "heatmap", "title": title, "values": [_floats(r) for r in arr],
            "row_labels": [str(r) for r in row_labels], "col_labels": [str(c) for c in col_labels],
            "value_label": value_label, "vmin": vmin, "vmax": vmax, "caption": caption,
            "annotate": annotate}


def bar_chart(title: str, labels: Sequence[str], values: Sequence[float], *, y_label: str,
              low: Sequence[float] | None = None, high: Sequence[float] | None = None,
              caption: str = "") -> dict[str, Any]:
    return {"type": "bars", "title": title, "labels": [str(v) for v in labels], "values": _floats(values),
            "low": _floats(low) if low is not None else None,
            "high": _floats(high) if high is not None else None, "y_label": y_label, "caption": caption}


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]], *, caption: str = "") -> dict[str, Any]:
    def cell(v: Any) -> Any:
        if isinstance(v, (float, np.floating)):
            return float(v) if np.isfinite(v) else None
        if isinstance(v, (np.integer,)):
            return int(v)
        return v if isinstance(v, (int, str, bool)) or v is None else str(v)

    return {"type": "table", "title": title, "columns": [str(c) for c in columns],
            "rows": [[cell(v) for v in r] for r in rows], "caption": caption}


def encode_png(image: np.ndarray) -> str:
    """Base64 PNG of an image array (H, W), (H, W, C) or (C, H, W), floats in [0, 1] or uint8."""
    from PIL import Image

    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = np.transpose(arr, (1, 2, 0))
    if arr.dtype != np.uint8:
        arr = (np.clip(arr, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", optimize=True)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def image_grid(title: str, rows: list[dict[str, Any]], *, caption: str = "", scale: int = 4) -> dict[str, Any]:
    """Rows of labelled images: ``rows = [{"label": str, "images": [{"label": str, "png": b64}]}]``."""
    return {"type": "images", "title": title, "rows": rows, "caption": caption, "scale": scale}


def image_cell(label: str, image: np.ndarray) -> dict[str, Any]:
    return {"label": label, "png": encode_png(image)}


def graph(title: str, layers: list[list[dict[str, Any]]], edges: list[dict[str, Any]], *,
          caption: str = "") -> dict[str, Any]:
    """A layered DAG: ``layers[i] = [{"id", "label", "weight"}]``, ``edges = [{"src", "dst", "weight"}]``."""
    return {"type": "graph", "title": title, "layers": layers, "edges": edges, "caption": caption}
