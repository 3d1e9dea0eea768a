"""Power-law fit of adversarial error vs epsilon: ``E(eps) = A * eps^beta`` (METHODS §5.3).

Guarantee: the fit uses only points in the small-eps window ``0 < E <= max_error`` with at
least ``min_errors`` errors, weights each point by the inverse delta-method variance of
``log E`` (``n E / (1 - E)``), and reports "undefined" (``beta = nan``) when fewer than
``min_points`` points qualify instead of fitting noise. A bootstrap over images gives the
CI of ``beta``.

Paper: Cubuk, Zoph, Schoenholz, Le, "Intriguing Properties of Adversarial Examples"
(ICLR 2018 workshop); the fit procedure is a robaudit choice (the paper's window is
unverified).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PowerLawFit:
    """``log E = log A + beta log eps`` fitted on ``points`` window points (nan when undefined)."""

    beta: float
    log_a: float
    r2: float
    points: int
    used: tuple[bool, ...]

    @property
    def defined(self) -> bool:
        return bool(np.isfinite(self.beta))

    @property
    def a(self) -> float:
        return float(np.exp(self.log_a)) if np.isfinite(self.log_a) else float("nan")


def fit_power_law(eps: np.ndarray | list[float], errors: np.ndarray | list[int], n: int | np.ndarray, *,
                  max_error: float = 0.5, min_errors: int = 5, min_points: int = 3) -> PowerLawFit:
    """Weighted least-squares fit of ``log E`` on ``log eps`` inside the fit window.

    Args:
        eps: budgets (> 0 to be usable; eps = 0 is never in the window).
        errors: number of adversarially wrong samples at each eps.
        n: denominator (clean-correct samples), scalar or per point.
        max_error: upper end of the window (saturation guard).
        min_errors: minimum error count for a point to be used.
        min_points: fewer usable points -> ``beta`` is undefined (nan).

    Returns:
        A :class:`PowerLawFit`; ``r2`` is the weighted coefficient of determination.
    """
    e = np.asarray(eps, dtype=np.float64)
    k = np.asarray(errors, dtype=np.float64)
    nn = np.broadcast_to(np.asarray(n, dtype=np.float64), e.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = np.where(nn > 0, k / nn, np.nan)
    used = (e > 0) & (nn > 0) & (k >= min_errors) & (rate > 0) & (rate <= max_error)
    if int(used.sum()) < min_points:
        return PowerLawFit(float("nan"), float("nan"), float("nan"), int(used.sum()), tuple(bool(u) for u in used))
    lx, ly = np.log(e[used]), np.log(rate[used])
    # delta method: Var(log p_hat) ~ (1 - p) / (n p); weight = 1 / Var
    w = nn[used] * rate[used] / np.maximum(1.0 - rate[used], 1e-12)
    w = w / w.sum()
    mx, my = float(np.sum(w * lx)), float(np.sum(w * ly))
    sxx = float(np.sum(w * (lx - mx) ** 2))
    if sxx <= 0.0:
        return PowerLawFit(float("nan"), float("nan"), float("nan"), int(used.sum()), tuple(bool(u) for u in used))
    beta = float(np.sum(w * (lx - mx) * (ly - my)) / sxx)
    log_a = my - beta * mx
    resid = ly - (log_a + beta * lx)
    ss_tot = float(np.sum(w * (ly - my) ** 2))
    r2 = 1.0 - float(np.sum(w * resid ** 2)) / ss_tot if ss_tot > 0 else 1.0
    return PowerLawFit(beta, float(log_a), r2, int(used.sum()), tuple(bool(u) for u in used))


def bootstrap_beta(eps: np.ndarray | list[float], wrong: np.ndarray, *, resamples: int = 200, seed: int = 0,
                   confidence: float = 0.95, **fit_kwargs: float) -> tuple[float, float, int]:
    """Percentile bootstrap CI of ``beta`` resampling images (rows of ``wrong``).

    Args:
        eps: budgets, one per column of ``wrong``.
        wrong: boolean ``(n_images, n_eps)``: image adversarially wrong at that eps
            (rows = the clean-correct images only).
        resamples: bootstrap draws (METHODS: 200).
        seed: numpy seed of the resampling (deterministic).

    Returns:
        ``(low, high, defined_draws)``; ``(nan, nan, d)`` if fewer than half of the
        draws give a defined beta.
    """
    wrong = np.asarray(wrong, dtype=bool)
    n = wrong.shape[0]
    if n == 0 or resamples < 1:
        return float("nan"), float("nan"), 0
    rng = np.random.default_rng(seed)
    betas = []
    for _ in range(int(resamples)):
        rows = rng.integers(0, n, size=n)
        fit = fit_power_law(eps, wrong[rows].sum(0), n, **fit_kwargs)  # type: ignore[arg-type]
        if fit.defined:
            betas.append(fit.beta)
    if len(betas) < resamples / 2:
        return float("nan"), float("nan"), len(betas)
    a = (1.0 - confidence) / 2.0
    lo, hi = np.quantile(np.asarray(betas), [a, 1.0 - a])
    return float(lo), float(hi), len(betas)
