"""Binomial confidence intervals used for every reported rate."""

from __future__ import annotations

from scipy.stats import beta


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact two-sided Clopper-Pearson interval for ``k`` successes out of ``n``.

    Returns ``(nan, nan)`` when ``n == 0`` (no data: a rate is undefined).
    """
    if n == 0:
        return (float("nan"), float("nan"))
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    a = (1.0 - confidence) / 2.0
    lo = 0.0 if k == 0 else float(beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1.0 - a, k + 1, n - k))
    return (lo, hi)


def rate_metrics(prefix: str, k: int, n: int) -> dict[str, float]:
    """``{prefix: k/n, prefix.ci_low, prefix.ci_high, prefix.n}`` with a 95% CP interval."""
    lo, hi = clopper_pearson(k, n)
    value = k / n if n else float("nan")
    return {prefix: value, f"{prefix}.ci_low": lo, f"{prefix}.ci_high": hi, f"{prefix}.n": float(n)}
