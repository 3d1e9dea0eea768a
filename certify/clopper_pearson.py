"""Exact one-sided Clopper-Pearson bounds and the smoothing radius ceiling.

Guarantee: for ``K ~ Binomial(n, p)``, ``P(lower_bound(K, n, alpha) > p) <= alpha`` and
``P(upper_bound(K, n, alpha) < p) <= alpha`` for every ``p`` (exact, not asymptotic).

Paper: Clopper & Pearson (1934); used by Cohen, Rosenfeld & Kolter, "Certified Adversarial
Robustness via Randomized Smoothing" (ICML 2019), ``code/core.py::_lower_confidence_bound``
(statsmodels ``proportion_confint(nA, n, alpha=2*alpha, method="beta")[0]``).
"""

from __future__ import annotations

import math

from scipy.stats import beta, norm


def lower_bound(n_success: int, n: int, alpha: float) -> float:
    """One-sided ``(1 - alpha)`` lower confidence bound on ``p``: ``Beta^-1(alpha; k, n - k + 1)``.

    Returns 0 when ``n_success == 0``.

    Raises:
        ValueError: ``n < 1``, ``n_success`` outside ``[0, n]`` or ``alpha`` outside (0, 1).
    """
    _check(n_success, n, alpha)
    if n_success == 0:
        return 0.0
    return float(beta.ppf(alpha, n_success, n - n_success + 1))


def upper_bound(n_success: int, n: int, alpha: float) -> float:
    """One-sided ``(1 - alpha)`` upper confidence bound on ``p``: ``Beta^-1(1 - alpha; k + 1, n - k)``.

    Returns 1 when ``n_success == n``.
    """
    _check(n_success, n, alpha)
    if n_success == n:
        return 1.0
    return float(beta.ppf(1.0 - alpha, n_success + 1, n - n_success))


def max_certifiable_radius(sigma: float, n: int, alpha: float) -> float:
    """``sigma * Phi^-1(alpha^(1/n))``: the radius CERTIFY returns when all ``n`` samples agree.

    No image can be certified beyond it with ``n`` samples at level ``alpha``
    (3.81 sigma for n = 1e5, alpha = 1e-3).
    """
    if n < 1 or not 0.0 < alpha < 1.0:
        raise ValueError(f"need n >= 1 and 0 < alpha < 1, got n={n}, alpha={alpha}")
    return float(sigma * norm.ppf(math.exp(math.log(alpha) / n)))


def _check(n_success: int, n: int, alpha: float) -> None:
    if n < 1 or not 0 <= n_success <= n:
        raise ValueError(f"need n >= 1 and 0 <= n_success <= n, got n_success={n_success}, n={n}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
