"""Stability and faithfulness measures for explanation maps (METHODS §7.2 steps 5-6).

Guarantee: deterministic functions of the maps (and, for deletion/insertion, of the model's
target-class probability on the modified images); ties are broken by pixel/block index.

* Spearman rank correlation of two maps (average ranks for ties), per image.
* Top-10% IoU: IoU of the ceil(frac * pixels) highest pixels of each map.
* Deletion / insertion AUC (Petsiuk et al., "RISE", BMVC 2018): blocks of ``block`` x
  ``block`` pixels in decreasing total importance are replaced by the blurred image
  (deletion) or revealed on top of it (insertion); AUC of p_y by the trapezoid rule over
  the fraction of blocks in [0, 1]. Lower deletion / higher insertion = more faithful.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import rankdata

from robaudit.errors import ParameterError


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image Spearman rank correlation of maps (N, ...) (NaN where a map is constant)."""
    ra = rankdata(a.detach().flatten(1).double().cpu().numpy(), axis=1)
    rb = rankdata(b.detach().flatten(1).double().cpu().numpy(), axis=1)
    ra -= ra.mean(1, keepdims=True)
    rb -= rb.mean(1, keepdims=True)
    den = np.sqrt((ra**2).sum(1) * (rb**2).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.where(den > 0, (ra * rb).sum(1) / np.where(den > 0, den, 1.0), np.nan)
    return torch.from_numpy(rho)


def top_mask(m: torch.Tensor, frac: float) -> torch.Tensor:
    """Boolean (N, P) mask of the ceil(frac * P) largest entries of each flattened map (stable ties)."""
    if not 0 < frac <= 1:
        raise ParameterError(f"frac must be in (0, 1], got {frac}")
    flat = m.detach().flatten(1)
    k = max(1, math.ceil(frac * flat.shape[1]))
    idx = torch.sort(-flat, dim=1, stable=True).indices[:, :k]
    return torch.zeros_like(flat, dtype=torch.bool).scatter_(1, idx, True)


def topk_iou(a: torch.Tensor, b: torch.Tensor, frac: float = 0.1) -> torch.Tensor:
    """Per-image IoU (a CPU tensor) of the top-``frac`` pixels of two maps (NaN where a map is constant)."""
    ma, mb = top_mask(a, frac), top_mask(b, frac)
    iou = ((ma & mb).sum(1).double() / (ma | mb).sum(1).double()).cpu()
    fa, fb = a.detach().flatten(1), b.detach().flatten(1)
    const = (fa.amax(1) == fa.amin(1)) | (fb.amax(1) == fb.amin(1))
    return iou.masked_fill(const.cpu(), float("nan"))


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur (reflect padding) of images (N, C, H, W)."""
    if sigma <= 0:
        return x.clone()
    r = max(1, math.ceil(3 * sigma))
    r = min(r, x.shape[-1] - 1, x.shape[-2] - 1)
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    c = x.shape[1]
    y = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(F.pad(y, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def block_order(maps: torch.Tensor, block: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Blocks sorted by decreasing total importance (N, B) and the block grid (gh, gw)."""
    h, w = maps.shape[-2:]
    gh, gw = math.ceil(h / block), math.ceil(w / block)
    padded = F.pad(maps.detach().unsqueeze(1), (0, gw * block - w, 0, gh * block - h))
    scores = F.avg_pool2d(padded, block).flatten(1)
    return torch.sort(-scores, dim=1, stable=True).indices, (gh, gw)


def deletion_insertion_auc(logits_fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, maps: torch.Tensor,
                           target: torch.Tensor, *, block: int = 7, blurred: torch.Tensor | None = None, sigma: float = 5.0,
                           max_batch: int = 512, steps: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(deletion AUC, insertion AUC) per image.

    Args:
        logits_fn: images (M, C, H, W) in [0, 1] -> logits (M, classes).
        x: images (N, C, H, W). maps: importance maps (N, H, W).
        target: the class y tracked for each image (N,) (p_y = softmax probability).
        block: block side in pixels (7 for CNNs, 16 or the patch size for ViTs).
        blurred: the replacement images (default: Gaussian blur of x with ``sigma``).
        steps: evaluate the curve at this many evenly spaced block counts (round(s * B / steps)
            blocks at step s) instead of after every block (None = every block).

    Returns:
        Two tensors (N,).
    """
    if block < 1:
        raise ParameterError(f"block must be >= 1 pixel, got {block}")
    if maps.shape != (x.shape[0], *x.shape[-2:]):
        raise ParameterError(f"maps must have shape {(x.shape[0], *x.shape[-2:])}, got {tuple(maps.shape)}")
    blurred = gaussian_blur(x, sigma) if blurred is None else blurred
    order, (gh, gw) = block_order(maps, block)
    nb = gh * gw
    if steps is not None and steps < 1:
        raise ParameterError(f"steps must be >= 1 (or None for every block), got {steps}")
    ns_steps = nb if steps is None else min(steps, nb)
    counts = torch.round(torch.arange(ns_steps + 1, dtype=torch.float64) * nb / ns_steps).to(x.device)
    fracs = counts.cpu() / nb
    ns = ns_steps + 1
    h, w = x.shape[-2:]
    dels, inss = [], []
    for i in range(len(x)):
        rank = torch.empty(nb, dtype=torch.long)
        rank[order[i].cpu()] = torch.arange(nb)
        grid = rank.view(1, 1, gh, gw).float()
        pix = F.interpolate(grid, scale_factor=block, mode="nearest")[0, 0, :h, :w].to(x.device)
        removed = (pix.unsqueeze(0).unsqueeze(0) < counts.view(-1, 1, 1, 1)).to(x.dtype)  # (S+1, 1, H, W)
        deleted = x[i] * (1 - removed) + blurred[i] * removed
        inserted = blurred[i] * (1 - removed) + x[i] * removed
        both = torch.cat([deleted, inserted])
        with torch.no_grad():
            p = torch.cat([F.softmax(logits_fn(both[j : j + max_batch]), dim=1)[:, int(target[i])]
                           for j in range(0, len(both), max_batch)])
        p = p.double().cpu()
        dels.append(_auc(p[:ns], fracs))
        inss.append(_auc(p[ns:], fracs))
    return torch.tensor(dels, dtype=torch.float64), torch.tensor(inss, dtype=torch.float64)


def _auc(curve: torch.Tensor, fracs: torch.Tensor) -> float:
    return float(torch.trapezoid(curve, fracs))
