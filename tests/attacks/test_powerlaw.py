"""The power-law fitter (METHODS §5.5): exact recovery, the linear-model case, undefined beta."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from robaudit.attacks.fgsm import FGSM
from robaudit.attacks.powerlaw import bootstrap_beta, fit_power_law
from torch import nn

EPS = np.array([0.25, 0.5, 1, 2, 4, 8, 16]) / 255


@pytest.mark.parametrize("beta", [0.7, 1.0, 2.0])
def test_recovers_known_exponent_exactly(beta: float) -> None:
    n = 10**6
    rate = 0.3 * (EPS / EPS[-1]) ** beta  # E = A eps^beta, all below 0.5
    fit = fit_power_law(EPS, np.round(rate * n), n)
    assert fit.beta == pytest.approx(beta, abs=1e-3)
    assert fit.a == pytest.approx(0.3 / EPS[-1] ** beta, rel=1e-2)
    assert fit.r2 == pytest.approx(1.0, abs=1e-6) and fit.points == 7


def test_window_excludes_saturated_and_rare_points() -> None:
    n = 1000
    k = np.array([0, 3, 10, 20, 40, 700, 1000])  # 0 and 3 (< 5 errors) and > 50% are out
    fit = fit_power_law(EPS, k, n)
    assert fit.used == (False, False, True, True, True, False, False)
    assert fit.beta == pytest.approx(1.0, abs=1e-9)  # 10, 20, 40 on a doubling grid


def test_beta_undefined_with_fewer_than_three_points() -> None:
    fit = fit_power_law(EPS, [0, 0, 0, 0, 0, 10, 900], 1000)
    assert not fit.defined and np.isnan(fit.beta) and fit.points == 1
    lo, hi, _ = bootstrap_beta(EPS, np.zeros((50, len(EPS)), dtype=bool))
    assert np.isnan(lo) and np.isnan(hi)


def test_linear_model_fgsm_gives_beta_one() -> None:
    """f(x) = Wx, 2 classes: FGSM errs iff margin m < eps ||w_0 - w_1||_1 (exact); uniform m -> beta = 1."""
    d, n = 64, 4000
    g = torch.Generator().manual_seed(0)
    w = torch.where(torch.rand(d, generator=g) < 0.5, -1.0, 1.0)  # w_0 - w_1, ||w||_1 = d
    net = nn.Linear(d, 2)
    with torch.no_grad():
        net.weight.copy_(torch.stack([w / 2, -w / 2]))
        net.bias.copy_(torch.tensor([-0.5 * w.sum() / 2, 0.5 * w.sum() / 2]))  # margin 0 at x = 0.5
    margins = torch.rand(n, generator=g) * (0.2 * d)  # uniform on [0, 0.2 d]
    x = 0.5 + (margins / d)[:, None] * w.sign()[None, :]  # stays inside [0.3, 0.7]
    y = torch.zeros(n, dtype=torch.long)
    grid = EPS[2:]  # 1..16 / 255: E = eps / 0.2 from 0.02 to 0.31
    wrong = np.stack([(net(FGSM("linf", float(e)).perturb(net, x, y, generator=g)).argmax(1) != y).numpy()
                      for e in grid], axis=1)
    fit = fit_power_law(grid, wrong.sum(0), n)
    assert fit.beta == pytest.approx(1.0, abs=0.08)
    assert wrong.mean(0) == pytest.approx(grid / 0.2, abs=0.02)
    lo, hi, used = bootstrap_beta(grid, wrong, resamples=100, seed=1)
    assert lo <= fit.beta <= hi and hi - lo < 0.3 and used == 100


def test_bootstrap_is_deterministic_and_covers_truth() -> None:
    rng = np.random.default_rng(0)
    n = 3000
    u = rng.random(n)
    wrong = u[:, None] < 0.3 * (EPS[None, :] / EPS[-1]) ** 1.5
    a = bootstrap_beta(EPS, wrong, resamples=100, seed=3)
    assert a == bootstrap_beta(EPS, wrong, resamples=100, seed=3)
    assert a[0] < 1.5 < a[1]
