"""Counterfactual Stability (METHODS §6.6 tests 1, 2, 4), CF generation and T-Rex (test 3)."""

from __future__ import annotations

import math

import pytest
import torch

from robaudit.analysis.counterfactual import (
    TargetProb,
    closest_counterfactual,
    stability,
    stability_terms,
    stability_with_se,
)
from robaudit.analysis.trex import trex_search
from robaudit.errors import ParameterError


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def logistic(w: torch.Tensor, b: float):
    return lambda z: torch.sigmoid(z.flatten(1) @ w.flatten() + b)


def linear_logits(w: torch.Tensor, b: torch.Tensor):
    return lambda z: z.flatten(1) @ w.T + b


@pytest.mark.parametrize("form", ["relaxed", "lipschitz"])
def test_constant_model_gives_its_constant(form: str) -> None:
    x = torch.rand(3, 1, 4, 4, generator=gen(1))
    r = stability(lambda z: torch.full((len(z),), 0.37), x, sigma=0.1, k=64, generator=gen(), form=form)
    assert torch.allclose(r, torch.full((3,), 0.37), atol=1e-7)


def test_small_sigma_limit_is_model_value_and_bounds() -> None:
    w = torch.randn(16, generator=gen(2))
    m = logistic(w, 0.3)
    x = torch.rand(4, 1, 4, 4, generator=gen(3))
    r = stability(m, x, sigma=1e-6, k=32, generator=gen())
    assert torch.allclose(r, m(x), atol=1e-5)
    t = stability_terms(m, x, sigma=0.5, k=256, generator=gen())
    noisy_mean = stability_terms(lambda z: m(z) * 0 + m(z), x, sigma=0.5, k=256, generator=gen())
    assert (t.mean(1) <= noisy_mean.mean(1) + 1e-7).all() and (t.mean(1) <= 1).all()


def test_logistic_first_order_formula_within_two_percent() -> None:
    """R^ ~ m - sqrt(2/pi) sigma ||w|| m (1 - m) (K = 1e5, batched)."""
    w = torch.randn(1, 3, 8, 8, generator=gen(4), dtype=torch.float64)
    w = w / w.norm() * 5.0
    m = logistic(w, 0.0)
    x = torch.full((2, 3, 8, 8), 0.5, dtype=torch.float64)
    x[1] += 0.02 * torch.sign(w[0])  # a second point with m ~ 0.6
    sigma = 0.002  # sigma ||w|| = 0.01
    r = stability(m, x, sigma=sigma, k=100_000, generator=gen(5), batch_size=50_000)
    m0 = m(x)
    dev_pred = math.sqrt(2 / math.pi) * sigma * 5.0 * m0 * (1 - m0)
    pred = m0 - dev_pred
    assert torch.allclose(r, pred, rtol=0.02)
    # the deviation term itself (much smaller than R^) is within 2% too
    assert torch.allclose(m0 - r, dev_pred, rtol=0.02)
    assert not torch.allclose(m0 - r, dev_pred / math.sqrt(2 / math.pi), rtol=0.02)


def test_monte_carlo_standard_error_matches_spread() -> None:
    w = torch.randn(16, generator=gen(6), dtype=torch.float64)
    m = logistic(w, 0.0)
    x = torch.full((1, 1, 4, 4), 0.1, dtype=torch.float64)
    k = 200
    reps = [stability_with_se(m, x, sigma=0.3, k=k, generator=gen(100 + i)) for i in range(300)]
    values = torch.stack([v for v, _ in reps]).flatten()
    se = torch.stack([s for _, s in reps]).flatten().mean()
    assert se == pytest.approx(float(values.std()), rel=0.15)
    terms = stability_terms(m, x, sigma=0.3, k=k, generator=gen(100))
    assert reps[0][1].item() == pytest.approx(float(terms.std() / math.sqrt(k)), rel=1e-9)


def test_common_random_numbers_share_draws() -> None:
    m = logistic(torch.randn(16, generator=gen(7)), 0.0)
    x = torch.full((2, 1, 4, 4), 0.3)
    same = stability(m, x, sigma=0.2, k=32, generator=gen(), common=True)
    diff = stability(m, x, sigma=0.2, k=32, generator=gen(), common=False)
    assert same[0] == same[1] and diff[0] != diff[1]


def test_lipschitz_estimate_of_a_linear_function() -> None:
    w = torch.tensor([3.0, -4.0], dtype=torch.float64)  # ||w|| = 5
    x = torch.zeros(1, 1, 1, 2, dtype=torch.float64)
    t = stability_terms(lambda z: z.flatten(1) @ w, x, sigma=1.0, k=400, generator=gen(), form="lipschitz")
    assert t.shape == (1, 400)
    # terms = m(eta_i) - gamma ||eta_i|| with the same draws: recover gamma from every draw
    g = torch.Generator().manual_seed(0)
    eta = torch.randn(1, 400, 1, 1, 2, generator=g, dtype=torch.float64)
    mvals = eta.flatten(2) @ w
    gamma = ((mvals - t[0]) / eta.flatten(2).norm(dim=2)).flatten()
    assert torch.allclose(gamma, gamma[0].expand_as(gamma))
    assert 0.97 * 5.0 <= float(gamma[0]) <= 5.0 + 1e-9


def test_bad_parameters_name_the_fix() -> None:
    with pytest.raises(ParameterError, match="sigma"):
        stability(lambda z: z.sum((1, 2, 3)), torch.zeros(1, 1, 2, 2), sigma=0.0, k=8, generator=gen())
    with pytest.raises(ParameterError, match="form"):
        stability(lambda z: z.sum((1, 2, 3)), torch.zeros(1, 1, 2, 2), sigma=0.1, k=8, generator=gen(), form="x")


def test_closest_counterfactual_matches_linear_boundary_distance() -> None:
    w = torch.randn(3, 12, generator=gen(8))
    b = torch.zeros(3)
    f = linear_logits(w, b)
    x = 0.5 + 0.01 * torch.randn(5, 3, 2, 2, generator=gen(9))
    logits = f(x)
    target = logits.topk(2, dim=1).indices[:, 1]
    cf = closest_counterfactual(f, x, target, steps=40, init_radius=0.05, search_steps=10)
    assert cf.valid.all()
    assert (f(cf.x).argmax(1) == target).all()
    pred = logits.argmax(1)
    # exact distance to the pairwise boundary (a lower bound; equal when the runner-up is the only rival)
    dw = w[target] - w[pred]
    dist = (logits.gather(1, pred[:, None]) - logits.gather(1, target[:, None])).flatten() / dw.norm(dim=1)
    assert (cf.cost >= dist * (1 - 1e-4)).all()
    assert (cf.cost <= dist * 1.1 + 1e-4).all()
    assert torch.allclose(cf.cost, (cf.x - x).flatten(1).norm(dim=1))


def test_trex_output_is_valid_and_within_radius() -> None:
    w = torch.randn(2, 12, generator=gen(10)) * 4
    f = linear_logits(w, torch.zeros(2))
    x = 0.5 + 0.05 * torch.randn(6, 3, 2, 2, generator=gen(11))
    target = f(x).argmin(1)
    cf = closest_counterfactual(f, x, target, steps=30, init_radius=0.05)
    assert cf.valid.all()
    res = trex_search(f, cf.x, target, generator=gen(), tau=0.9, sigma=0.05, k=64, step_size=0.02,
                      radius=0.1, max_steps=20)
    assert (f(res.x).argmax(1) == target).all()
    assert ((res.x - cf.x).flatten(1).norm(dim=1) <= 0.1 + 1e-5).all()
    prob = TargetProb(f, target)
    before = stability(prob, cf.x, sigma=0.05, k=512, generator=gen(1))
    after = stability(prob, res.x, sigma=0.05, k=512, generator=gen(1))
    assert (after > before + 0.05).all()
    assert (res.steps >= 1).all()


def test_trex_stops_once_stability_reaches_tau() -> None:
    w = torch.randn(2, 12, generator=gen(12)) * 4
    f = linear_logits(w, torch.zeros(2))
    x = 0.5 + 0.05 * torch.randn(4, 3, 2, 2, generator=gen(13))
    target = f(x).argmax(1)  # already deep in its own class: R^ is high
    res = trex_search(f, x, target, generator=gen(), tau=0.05, k=32, max_steps=20)
    assert (res.steps == 0).all() and res.reached.all() and torch.equal(res.x, x)
    res = trex_search(f, x, target, generator=gen(), tau=1.0, k=32, max_steps=3, radius=0.05)
    assert (res.steps == 3).all() and not res.reached.any()
