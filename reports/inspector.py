"""The ViT attention inspector: figure format, validation and safe embedding.

Guarantee: a reader can pick an image, a view (clean / corrupted / adversarial, at each
attention temperature), a layer and a head (or the mean over heads), click a patch, and see
that query patch's attention over the image and its attention-rollout map. The figure data is
embedded as JSON in a ``<script type="application/json">`` block with ``<``, ``>``, ``&``,
U+2028 and U+2029 escaped as ``\\uXXXX``, so no string inside it (e.g. ``</script>``) can end
the block; the widget's JS (templates/inspector.js.j2) reads it with ``JSON.parse`` and only
ever writes text with ``textContent``. A malformed figure is shown as a list of its problems,
never as a silently wrong map. Background: Abnar & Zuidema (2020), "Quantifying Attention
Flow in Transformers" (rollout); Gu et al. (2022), "Are Vision Transformers Robust to Patch
Perturbations?" (attention shift onto perturbed patches).

Figure format (``type = "attention_inspector"``)::

    {"type": "attention_inspector",
     "title": str, "caption": str (optional),
     "grid": G,                  # patches per side; N = G*G patch tokens
     "image_size": [H, W],       # model input size in pixels (the png's size)
     "layers": L, "heads": Hh,
     "images": [                 # keep it small: each view costs ~1.4*L*Hh*N*N bytes
       {"id": str, "label": str,
        "views": [
          {"name": str,          # shown on the toggle, e.g. "clean, T=1"
           "version": "clean" | "corrupted" | "adversarial",
           "temperature": float, # attention temperature of the model variant
           "png": str,           # base64 PNG of the input image as the model saw it
           "attn": str,          # base64 of uint8 bytes, C order, shape (L, Hh, N, N)
           "rollout": str,       # base64 of uint8 bytes, C order, shape (N, N)
           "patch": [[r, c], ...]}]}]}   # perturbed patches (grid row, col); [] for clean

Token layout: prefix tokens (CLS, distillation) are already stripped; token ``t`` is the
patch at grid row ``t // G``, column ``t % G``; ``attn[l, h, q, k]`` is the attention of query
``q`` on key ``k``. Quantisation is per row: each row is divided by its own maximum and
scaled to 0..255, so the widget shows where a query looks, not how strongly compared with
other rows. The "mean" head averages the (de-quantised) rows over heads. Reference encoder::

    def q8(a):                       # a: float array (..., N, N), non-negative
        m = a.max(axis=-1, keepdims=True)
        m[m == 0] = 1
        return base64.b64encode(np.rint(a / m * 255).astype(np.uint8).tobytes()).decode()
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from typing import Any

from markupsafe import Markup

FIGURE_TYPE = "attention_inspector"
VERSIONS = ("clean", "corrupted", "adversarial")
_B64 = re.compile(r"^[A-Za-z0-9+/]*={0,2}$")


def _decoded_len(value: Any) -> int | None:
    if not isinstance(value, str) or len(value) % 4 or not _B64.match(value):
        return None
    try:
        return len(base64.b64decode(value, validate=True))
    except (binascii.Error, ValueError):
        return None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def check_inspector(fig: dict[str, Any]) -> list[str]:
    """Every problem of an attention_inspector figure (empty list when it is well formed).

    Checks types, that each decoded ``attn`` holds exactly L*Hh*N*N bytes and each
    ``rollout`` N*N bytes, that ``png`` is base64, versions are known and patches on the grid.
    """
    problems: list[str] = []
    if not isinstance(fig, dict) or fig.get("type") != FIGURE_TYPE:
        return [f"not an {FIGURE_TYPE} figure"]
    grid, layers, heads = _int(fig.get("grid")), _int(fig.get("layers")), _int(fig.get("heads"))
    for key, val in (("grid", grid), ("layers", layers), ("heads", heads)):
        if val is None:
            problems.append(f"{key} must be a positive integer, got {fig.get(key)!r}")
    size = fig.get("image_size")
    if not (isinstance(size, list) and len(size) == 2 and all(_int(v) for v in size)):
        problems.append(f"image_size must be [H, W] positive integers, got {size!r}")
    images = fig.get("images")
    if not isinstance(images, list) or not images:
        problems.append("images must be a non-empty list")
        return problems
    if problems:
        return problems
    assert grid and layers and heads
    n = grid * grid
    for i, img in enumerate(images):
        where = f"images[{i}]"
        if not isinstance(img, dict):
            problems.append(f"{where} must be an object")
            continue
        views = img.get("views")
        if not isinstance(views, list) or not views:
            problems.append(f"{where}.views must be a non-empty list")
            continue
        for j, view in enumerate(views):
            problems += _check_view(view, f"{where}.views[{j}]", grid, layers, heads, n)
    return problems


def _check_view(view: Any, where: str, grid: int, layers: int, heads: int, n: int) -> list[str]:
    if not isinstance(view, dict):
        return [f"{where} must be an object"]
    out: list[str] = []
    if view.get("version") not in VERSIONS:
        out.append(f"{where}.version must be one of {list(VERSIONS)}, got {view.get('version')!r}")
    temp = view.get("temperature")
    if isinstance(temp, bool) or not isinstance(temp, (int, float)) or not math.isfinite(temp):
        out.append(f"{where}.temperature must be a finite number, got {temp!r}")
    if not isinstance(view.get("name"), str):
        out.append(f"{where}.name must be a string")
    if _decoded_len(view.get("png")) in (None, 0):
        out.append(f"{where}.png must be base64 PNG data")
    want = {"attn": layers * heads * n * n, "rollout": n * n}
    for key, expected in want.items():
        got = _decoded_len(view.get(key))
        if got != expected:
            shape = f"({layers}, {heads}, {n}, {n})" if key == "attn" else f"({n}, {n})"
            out.append(f"{where}.{key} must be base64 of {expected} uint8 values {shape}, got "
                       + ("invalid base64" if got is None else f"{got} bytes"))
    patch = view.get("patch", [])
    if not isinstance(patch, list) or not all(
        isinstance(p, list) and len(p) == 2 and all(isinstance(v, int) and 0 <= v < grid for v in p)
        for p in patch
    ):
        out.append(f"{where}.patch must be a list of [row, col] grid cells in 0..{grid - 1}")
    return out


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def script_json(data: Any) -> Markup:
    """JSON text that is safe inside ``<script type="application/json">``.

    ``<``, ``>`` and ``&`` (and the JS line separators) become ``\\uXXXX`` escapes, which
    JSON.parse restores, so ``</script>`` or ``<!--`` inside a string cannot close the block.
    """
    text = json.dumps(_finite(data), separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    for ch, rep in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                    ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(ch, rep)
    return Markup(text)
