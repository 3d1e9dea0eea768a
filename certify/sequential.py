"""Sequential (anytime-valid) randomized-smoothing certification at fixed radii.

Guarantee: for each radius ``r`` and each image, whatever the data-dependent stopping time,
``P(decision CERTIFIED at r  and  p_A <= Phi(r / sigma)) <= alpha`` and
``P(decision NOT_CERTIFIED at r  and  p_A > Phi(r / sigma)) <= alpha``, where ``p_A`` is the
probability of the class selected from ``n0`` independent draws. A CERTIFIED decision therefore
carries Cohen's guarantee: with probability ``>= 1 - alpha`` the smoothed classifier is constant
on the open L2 ball of radius ``r`` (``p_A > Phi(r/sigma)`` gives radius ``sigma Phi^-1(p_A) > r``).
For any fixed ``p_A`` only one of the two errors is possible, so each decision errs with
probability ``<= alpha``. The guarantee is per (image, radius); it is not simultaneous over radii.

Construction (conjugate-mixture likelihood-ratio test, Robbins 1970; Howard, Ramdas, McAuliffe &
Sekhon, "Time-uniform, nonparametric, nonasymptotic confidence sequences", Ann. Stat. 2021;
Waudby-Smith & Ramdas, JRSS-B 2023). With ``p0 = Phi(r/sigma)``, ``S_t`` hits of the selected class
in ``t`` estimation draws and ``F_t = t - S_t``:

    M_t^+ = int_{p0}^1 (q/p0)^S_t ((1-q)/(1-p0))^F_t  dpi^+(q),   pi^+ = Beta(1,1) restricted to (p0, 1)
    M_t^- = int_0^{p0} (q/p0)^S_t ((1-q)/(1-p0))^F_t  dpi^-(q),   pi^- = Beta(1,1) restricted to (0, p0)

For each ``q > p0`` the likelihood ratio is a nonnegative supermartingale with initial value 1
under every ``p <= p0`` (its one-step mean ``p q/p0 + (1-p)(1-q)/(1-p0)`` is increasing in ``p`` and
equals 1 at ``p0``); a mixture of supermartingales is one too, so Ville's inequality gives
``P(exists t: M_t^+ >= 1/alpha) <= alpha`` under ``p_A <= p0``; symmetrically for ``M_t^-`` under
``p_A >= p0``. The integrals are incomplete beta functions (closed form, computed in log space).
Checking after each batch is a stopping time, so batching costs nothing in validity.

Stopping per radius: CERTIFIED when ``M^+ >= 1/alpha``; NOT_CERTIFIED when ``M^- >= 1/alpha``;
UNDECIDED (treated as abstain) when the budget ``n_max`` is spent, or earlier when even
``n_max - t`` further hits could not reach ``M^+ >= 1/alpha`` (a deterministic futility stop:
``M^+`` only grows with hits). Sampling stops once every radius is decided. Samples are drawn in
batches growing geometrically from ``first_batch`` to ``batch_size``.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.special import betainc, betaincc, betaln
from scipy.stats import norm

from .smoothing import Classifier, Denoiser, GaussianSampler


class Decision(enum.IntEnum):
    """Outcome of the sequential test at one radius."""

    UNDECIDED = -1  #: budget spent (or futile) before a decision: not certified (abstain)
    NOT_CERTIFIED = 0  #: confident that p_A <= Phi(r / sigma)
    CERTIFIED = 1  #: confident that p_A > Phi(r / sigma): radius >= r


@dataclass(frozen=True)
class SequentialCertificate:
    """Per-image result. ``samples`` counts all draws (n0 selection + estimation)."""

    prediction: int
    radii: tuple[float, ...]
    decisions: tuple[Decision, ...]
    decided_at: tuple[int, ...]  #: estimation samples seen when each radius was decided
    samples: int

    def certified(self, radius: float) -> bool:
        return self.decisions[self.radii.index(radius)] is Decision.CERTIFIED


def log_evidence_above(hits: int, t: int, p0: float) -> float:
    """``log M_t^+``: evidence against ``p <= p0`` (uniform mixture over ``q in (p0, 1)``)."""
    a, b = hits + 1.0, t - hits + 1.0
    with np.errstate(divide="ignore"):  # a tail that underflows to 0 is "no evidence" (-inf)
        tail = np.log(betaincc(a, b, p0))
    return float(betaln(a, b) + tail - math.log1p(-p0) - hits * math.log(p0) - (t - hits) * math.log1p(-p0))


def log_evidence_below(hits: int, t: int, p0: float) -> float:
    """``log M_t^-``: evidence against ``p >= p0`` (uniform mixture over ``q in (0, p0)``)."""
    a, b = hits + 1.0, t - hits + 1.0
    with np.errstate(divide="ignore"):
        tail = np.log(betainc(a, b, p0))
    return float(betaln(a, b) + tail - math.log(p0) - hits * math.log(p0) - (t - hits) * math.log1p(-p0))


class SequentialTest:
    """The per-radius decision state for one stream of Bernoulli draws (hits of the selected class).

    Args:
        thresholds: ``p0 = Phi(r / sigma)`` per radius, each in (0, 1]; ``p0 = 1`` (a radius so
            large that the threshold rounds to 1) is UNDECIDED from the start.
        alpha: error probability per decision.
        n_max: estimation-sample budget.
    """

    def __init__(self, thresholds: Sequence[float], *, alpha: float, n_max: int) -> None:
        if not 0.0 < alpha < 1.0:
            raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
        if n_max < 1:
            raise ValueError(f"n_max must be >= 1, got {n_max}")
        if any(not 0.0 < p <= 1.0 for p in thresholds):
            raise ValueError(f"thresholds must lie in (0, 1], got {list(thresholds)}")
        self.thresholds = tuple(float(p) for p in thresholds)
        self.n_max = int(n_max)
        self._log_level = math.log(1.0 / alpha)
        self.hits = 0
        self.t = 0
        self.decisions: list[Decision | None] = [None] * len(self.thresholds)
        self.decided_at = [0] * len(self.thresholds)
        for i, p0 in enumerate(self.thresholds):
            if p0 >= 1.0:  # Phi(r / sigma) rounds to 1: no finite sample can certify r
                self.decisions[i] = Decision.UNDECIDED

    @property
    def done(self) -> bool:
        return all(d is not None for d in self.decisions)

    def update(self, hits: int, m: int) -> None:
        """Add a batch of ``m`` draws with ``hits`` successes and decide what can be decided."""
        if not 0 <= hits <= m or self.t + m > self.n_max:
            raise ValueError(f"bad batch: hits={hits}, m={m}, t={self.t}, n_max={self.n_max}")
        self.hits += hits
        self.t += m
        for i, p0 in enumerate(self.thresholds):
            if self.decisions[i] is not None:
                continue
            decision: Decision | None = None
            if log_evidence_above(self.hits, self.t, p0) >= self._log_level:
                decision = Decision.CERTIFIED
            elif log_evidence_below(self.hits, self.t, p0) >= self._log_level:
                decision = Decision.NOT_CERTIFIED
            elif self.t >= self.n_max or self._futile(p0):
                decision = Decision.UNDECIDED
            if decision is not None:
                self.decisions[i] = decision
                self.decided_at[i] = self.t

    def _futile(self, p0: float) -> bool:
        best = self.hits + (self.n_max - self.t)
        return log_evidence_above(best, self.n_max, p0) < self._log_level


def certify_sequential(model: Classifier, x: torch.Tensor, *, sigma: float, radii: Sequence[float],
                       n0: int, n_max: int, alpha: float, batch_size: int, generator: torch.Generator,
                       first_batch: int = 128, denoiser: Denoiser | None = None) -> SequentialCertificate:
    """Decide "certified radius >= r" for each ``r`` in ``radii``, stopping as early as possible.

    Args:
        model: classifier (see :class:`robaudit.certify.smoothing.GaussianSampler`).
        x: one image (C, H, W) in [0, 1].
        sigma: noise level (pixel units).
        radii: radii to decide (>= 0).
        n0: selection draws (fresh, independent of the estimation draws).
        n_max: estimation budget per image (the ``n`` of fixed-n CERTIFY).
        alpha: error probability per (image, radius) decision.
        batch_size: largest batch; batches grow from ``first_batch``.
        generator: source of all noise.
        denoiser: optional callable applied to the noisy input.

    Returns:
        A :class:`SequentialCertificate` (decisions in the order of ``radii``).
    """
    if n0 < 1:
        raise ValueError(f"n0 must be >= 1, got {n0}")
    if any(r < 0 for r in radii) or not radii:
        raise ValueError(f"radii must be a non-empty list of values >= 0, got {list(radii)}")
    test = SequentialTest([float(norm.cdf(r / sigma)) for r in radii], alpha=alpha, n_max=n_max)
    sampler = GaussianSampler(model, x, sigma=sigma, batch_size=batch_size, generator=generator,
                              denoiser=denoiser)
    c_hat = int(np.argmax(sampler.counts(n0)))
    m = max(1, min(first_batch, batch_size))
    while not test.done:
        m = min(m, n_max - test.t)
        test.update(int(sampler.counts(m)[c_hat]), m)
        m = min(2 * m, batch_size)
    return SequentialCertificate(
        prediction=c_hat,
        radii=tuple(float(r) for r in radii),
        decisions=tuple(d if d is not None else Decision.UNDECIDED for d in test.decisions),
        decided_at=tuple(test.decided_at),
        samples=sampler.samples_drawn,
    )
