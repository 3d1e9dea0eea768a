"""Sequential (anytime-valid) smoothing certification: closed form, soundness over seeds, savings."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from robaudit.certify.clopper_pearson import lower_bound
from robaudit.certify.sequential import (
    Decision,
    SequentialTest,
    certify_sequential,
    log_evidence_above,
    log_evidence_below,
)
from robaudit.certify.smoothing import certify
from scipy.integrate import quad
from scipy.stats import binom, norm

sys.path.insert(0, str(Path(__file__).parent))
from _smoothing_models import Constant, LinearBinary  # noqa: E402

W4 = torch.tensor([1.0, -2.0, 0.5, 1.5])


def _run_stream(p: float, p0: float, *, alpha: float, n_max: int, rng: np.random.Generator,
                first: int = 16, batch: int = 512) -> Decision:
    test = SequentialTest([p0], alpha=alpha, n_max=n_max)
    m = first
    while not test.done:
        m = min(m, n_max - test.t)
        test.update(int(rng.binomial(m, p)), m)
        m = min(2 * m, batch)
    return test.decisions[0]


@pytest.mark.parametrize("hits,t,p0", [(9, 10, 0.6), (3, 12, 0.5), (40, 50, 0.841), (0, 5, 0.3)])
def test_log_evidence_matches_numerical_mixture(hits, t, p0):
    def ratio(q: float) -> float:
        return (q / p0) ** hits * ((1 - q) / (1 - p0)) ** (t - hits)

    above = quad(ratio, p0, 1.0, epsabs=0, epsrel=1e-10)[0] / (1 - p0)
    below = quad(ratio, 0.0, p0, epsabs=0, epsrel=1e-10)[0] / p0
    assert log_evidence_above(hits, t, p0) == pytest.approx(math.log(above), abs=1e-7)
    assert log_evidence_below(hits, t, p0) == pytest.approx(math.log(below), abs=1e-7)


def test_false_certification_rate_at_the_boundary_is_below_alpha():
    # worst case for "certified": p_A exactly at the threshold, many looks, many seeds
    alpha, seeds, p0 = 0.05, 1500, 0.8
    rng = np.random.default_rng(0)
    decisions = [_run_stream(p0, p0, alpha=alpha, n_max=4000, rng=rng) for _ in range(seeds)]
    false_cert = sum(d is Decision.CERTIFIED for d in decisions)
    assert false_cert <= binom.ppf(0.999, seeds, alpha)
    false_reject = sum(d is Decision.NOT_CERTIFIED for d in decisions)  # p = p0: "not certifiable" is correct
    assert false_reject > 0


def test_false_not_certified_rate_just_above_threshold_is_below_alpha():
    alpha, seeds, p0 = 0.05, 1500, 0.8
    rng = np.random.default_rng(1)
    decisions = [_run_stream(p0 + 1e-9, p0, alpha=alpha, n_max=4000, rng=rng) for _ in range(seeds)]
    assert sum(d is Decision.NOT_CERTIFIED for d in decisions) <= binom.ppf(0.999, seeds, alpha)


def test_the_simulation_catches_naive_repeated_looks():
    # negative control: a fixed-n Clopper-Pearson bound checked after every batch is NOT anytime-valid
    alpha, seeds, p0 = 0.05, 400, 0.8
    rng = np.random.default_rng(2)
    false_cert = 0
    for _ in range(seeds):
        hits = t = 0
        m = 16
        while t < 4000:
            m = min(m, 4000 - t)
            hits += int(rng.binomial(m, p0))
            t += m
            m = min(2 * m, 512)
            if lower_bound(hits, t, alpha) >= p0:
                false_cert += 1
                break
    assert false_cert > binom.ppf(0.999, seeds, alpha)


def test_sequential_certify_sound_when_p_a_just_below_threshold():
    # end to end: p_A = Phi(d / sigma) with d = 0.2; asking r = 0.205 puts p_A just below Phi(r / sigma)
    model = LinearBinary(W4, b=-0.3).eval()
    sigma, d, r, alpha, seeds = 0.25, 0.2, 0.205, 0.1, 300
    w = model.w
    x = (torch.full((4,), 0.5) + (d - (0.5 * float(w.sum()) - 0.3) / float(w.norm())) * w / w.norm()).view(1, 2, 2)
    assert model.distance(x) == pytest.approx(d, abs=1e-5)
    certified = 0
    for seed in range(seeds):
        cert = certify_sequential(model, x, sigma=sigma, radii=[r], n0=16, n_max=3000, alpha=alpha,
                                  batch_size=1024, generator=torch.Generator().manual_seed(seed), first_batch=64)
        assert cert.prediction in (0, 1)
        certified += cert.decisions[0] is Decision.CERTIFIED
    assert certified <= binom.ppf(0.999, seeds, alpha)


def test_decisions_and_savings_far_from_the_threshold():
    sigma, alpha, n_max = 0.25, 0.001, 100_000
    model = LinearBinary(W4, b=-0.3).eval()
    w = model.w

    def at(d: float) -> torch.Tensor:
        return (torch.full((4,), 0.5) + (d - (0.5 * float(w.sum()) - 0.3) / float(w.norm())) * w / w.norm()
                ).view(1, 2, 2)

    gen = torch.Generator().manual_seed(0)
    # p_A = Phi(0.6 / 0.25) = 0.992 > Phi(0.25 / 0.25) = 0.841: certified at r = 0.25, not at r = 0.75
    cert = certify_sequential(model, at(0.6), sigma=sigma, radii=[0.25, 0.75], n0=100, n_max=n_max, alpha=alpha,
                              batch_size=1000, generator=gen)
    assert cert.prediction == 1
    assert cert.decisions == (Decision.CERTIFIED, Decision.NOT_CERTIFIED)
    assert cert.samples < 10_000 and cert.samples == 100 + max(cert.decided_at)
    assert cert.certified(0.25) and not cert.certified(0.75)
    fixed_c, fixed_r = certify(model, at(0.6), sigma=sigma, n0=100, n=n_max, alpha=alpha, batch_size=50_000,
                               generator=gen)
    assert fixed_c == 1 and 0.25 <= fixed_r < 0.75  # same decisions as fixed-n CERTIFY
    # constant classifier: certified after the first batch
    const = certify_sequential(Constant(2).eval(), torch.rand(3, 4, 4), sigma=sigma, radii=[0.5], n0=10,
                               n_max=n_max, alpha=alpha, batch_size=1000, generator=gen, first_batch=128)
    p0, schedule = norm.cdf(0.5 / sigma), np.cumsum([128, 256, 512, 1000, 1000])
    first = next(int(t) for t in schedule if log_evidence_above(int(t), int(t), p0) >= math.log(1 / alpha))
    assert const.decisions == (Decision.CERTIFIED,) and const.samples == 10 + first
    assert first == 896  # all hits: (t + 1)(1 - p0) p0^t <= alpha first holds after 128 + 256 + 512 draws


def test_unreachable_radius_stops_as_undecided_at_once():
    # r above the n_max ceiling: even all hits cannot certify -> futility stop after the first batch
    sigma, n_max, alpha = 0.25, 1000, 0.001
    r = 1.01 * sigma * norm.ppf(alpha ** (1 / n_max))
    cert = certify_sequential(Constant(0).eval(), torch.rand(1, 2, 2), sigma=sigma, radii=[r], n0=5, n_max=n_max,
                              alpha=alpha, batch_size=500, generator=torch.Generator().manual_seed(0), first_batch=50)
    assert cert.decisions == (Decision.UNDECIDED,) and cert.samples == 55


def test_budget_is_respected_and_inputs_validated():
    test = SequentialTest([0.9], alpha=0.01, n_max=100)
    with pytest.raises(ValueError):
        test.update(5, 101)
    with pytest.raises(ValueError):
        SequentialTest([1.5], alpha=0.01, n_max=10)
    assert SequentialTest([1.0], alpha=0.01, n_max=10).decisions == [Decision.UNDECIDED]
    cert = certify_sequential(LinearBinary(W4, 0.0).eval(), torch.full((1, 2, 2), 0.5), sigma=1.0, radii=[0.0],
                              n0=4, n_max=300, alpha=0.01, batch_size=64, generator=torch.Generator().manual_seed(0))
    # p_A = 1/2 exactly at r = 0: "certified" must be rare; whatever happens the budget holds
    assert cert.samples <= 304 and max(cert.decided_at) <= 300
