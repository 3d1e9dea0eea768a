"""Shared helpers of the patch stages: position draws, batched prediction, fooling-rate metrics.

Conventions (METHODS.md §0.2): fooling rates are measured on the clean-correct subset
against the clean *prediction*; accuracies against the ground truth; every rate gets a
95% Clopper-Pearson interval and its n.
"""

from __future__ import annotations

import numpy as np
import torch
from robaudit.attacks.patches.masks import random_positions

from robaudit.model import ModelAdapter
from robaudit.stats import rate_metrics


@torch.no_grad()
def predict(model: ModelAdapter, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Top-1 labels of ``x`` in batches (no gradients)."""
    return model.predict(x, batch_size=batch_size).cpu()


def attack_positions(n: int, per_image: int, grid: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    """(n, P) flat positions: all G^2 cells in order when ``per_image`` is 0, else a random subset."""
    cells = grid[0] * grid[1]
    if per_image <= 0 or per_image >= cells:
        return torch.arange(cells).expand(n, cells).clone()
    return random_positions(n, per_image, grid, generator).sort(dim=1).values


def fooling_metrics(prefix: str, flipped: np.ndarray, eligible: np.ndarray) -> dict[str, float]:
    """Rate of ``flipped`` over the entries where ``eligible`` (broadcast) is true."""
    mask = np.broadcast_to(eligible, flipped.shape).astype(bool)
    return rate_metrics(prefix, int(flipped[mask].sum()), int(mask.sum()))


def mean_ci(prefix: str, values: np.ndarray) -> dict[str, float]:
    """Mean with a normal-approximation 95% interval (for attention-share differences)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    n = len(v)
    if n == 0:
        return {prefix: float("nan"), f"{prefix}.ci_low": float("nan"), f"{prefix}.ci_high": float("nan"),
                f"{prefix}.n": 0.0}
    mean = float(v.mean())
    half = 1.96 * float(v.std(ddof=1)) / np.sqrt(n) if n > 1 else float("nan")
    return {prefix: mean, f"{prefix}.ci_low": mean - half, f"{prefix}.ci_high": mean + half, f"{prefix}.n": float(n)}


def temperature_tag(t: float) -> str:
    """Stable metric-name tag of a temperature: 2 -> ``t2_0``, 1.25 -> ``t1_25``."""
    return "t" + repr(float(t)).replace(".", "_")


def headline_first(metrics: dict[str, float], names: list[str]) -> dict[str, float]:
    """``metrics`` re-ordered so the headline rates (with their CI keys) come first (summaries show the first)."""
    first = [k for name in names for k in metrics if k == name or k.startswith(name + ".")
             and k[len(name) + 1 :] in ("ci_low", "ci_high", "n")]
    return {**{k: metrics[k] for k in first}, **{k: v for k, v in metrics.items() if k not in first}}
