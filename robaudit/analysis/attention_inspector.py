"""Attention shares and the attention-inspector figure (format: reports/inspector.py).

Guarantee: the inspector data are the model's own softmax attention (prefix tokens
stripped, token t = grid cell (t // G, t % G)) and its patch-to-patch rollout, each
row divided by its maximum and quantised to 0..255; ``patch`` lists the perturbed
cells. Attention share (METHODS.md §1.5, robaudit choice): rho(P) = sum of the CLS
rollout over the tokens in P divided by its sum over all patch tokens.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
import torch

from robaudit.analysis.attention import AttentionMaps, cls_rollout_grid, patch_rollout, rollout
from robaudit.figures import encode_png

VERSION_NAMES = ("clean", "corrupted", "adversarial")


def rollout_share(maps: AttentionMaps, positions: torch.Tensor, head_fusion: str,
                  discard_ratio: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(rho (B,), full rollout (B, N_all, N_all)) for perturbed flat cells ``positions`` (B, k)."""
    r = rollout(maps.attn, head_fusion, discard_ratio)
    cls = cls_rollout_grid(r, maps.num_prefix_tokens, maps.grid).flatten(1)
    rho = cls.gather(1, positions.to(cls.device)).sum(1) / cls.sum(1)
    return rho, r


def layer_head_share(maps: AttentionMaps, positions: torch.Tensor) -> torch.Tensor:
    """(B, L, heads): raw CLS attention on the cells ``positions`` over its mass on all patch tokens."""
    rows = maps.attn[:, :, :, 0, maps.num_prefix_tokens:]
    b, layers, heads, n = rows.shape
    idx = positions.to(rows.device).view(b, 1, 1, -1).expand(b, layers, heads, positions.shape[1])
    return rows.gather(-1, idx).sum(-1) / rows.sum(-1)


def quantise_rows(a: torch.Tensor) -> np.ndarray:
    """uint8 array: each row (last axis) divided by its max and scaled to 0..255."""
    m = a.amax(-1, keepdim=True)
    m = torch.where(m > 0, m, torch.ones_like(m))
    return torch.round(a / m * 255).clamp(0, 255).to(torch.uint8).cpu().numpy()


def inspector_view_arrays(maps: AttentionMaps, head_fusion: str, discard_ratio: float) -> tuple[np.ndarray, ...]:
    """(attn (B, L, H, N, N) uint8, rollout (B, N, N) uint8) with prefix tokens stripped."""
    p = maps.num_prefix_tokens
    attn = maps.attn[:, :, :, p:, p:]
    r = patch_rollout(rollout(maps.attn, head_fusion, discard_ratio), p)
    return quantise_rows(attn), quantise_rows(r)


def to_uint8_image(x: torch.Tensor) -> np.ndarray:
    return torch.round(x.clamp(0, 1) * 255).to(torch.uint8).cpu().numpy()


def _b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a, dtype=np.uint8).tobytes()).decode("ascii")


def inspector_figure(title: str, caption: str, grid: int, image_size: tuple[int, int],
                     arrays: dict[str, np.ndarray], ids: list[str], labels: list[str]) -> dict[str, Any]:
    """Build the ``attention_inspector`` figure from the stage's ``insp_*`` arrays.

    Args:
        arrays: ``insp_attn`` (I, V, L, H, N, N) u8, ``insp_rollout`` (I, V, N, N) u8, ``insp_img``
            (I, V, C, H, W) u8, ``insp_version`` (I, V) index into VERSION_NAMES, ``insp_temp`` (I, V),
            ``insp_pos`` (I,) flat cell of the perturbed patch.
    """
    attn, roll, img = arrays["insp_attn"], arrays["insp_rollout"], arrays["insp_img"]
    layers, heads = int(attn.shape[2]), int(attn.shape[3])
    images = []
    for i in range(attn.shape[0]):
        r, c = divmod(int(arrays["insp_pos"][i]), grid)
        views = []
        for v in range(attn.shape[1]):
            version = VERSION_NAMES[int(arrays["insp_version"][i, v])]
            temp = float(arrays["insp_temp"][i, v])
            views.append({"name": f"{version}, T={temp:g}", "version": version, "temperature": temp,
                          "png": encode_png(img[i, v]), "attn": _b64(attn[i, v]), "rollout": _b64(roll[i, v]),
                          "patch": [] if version == "clean" else [[r, c]]})
        images.append({"id": ids[i], "label": labels[i], "views": views})
    return {"type": "attention_inspector", "title": title, "caption": caption, "grid": grid,
            "image_size": [int(image_size[0]), int(image_size[1])], "layers": layers, "heads": heads,
            "images": images}
