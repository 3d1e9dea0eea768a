"""Attack strength on a CNN trained in-process on scikit-learn digits (fixed seeds)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from robaudit.attacks.apgd import APGD
from robaudit.attacks.fgsm import FGSM
from robaudit.attacks.pgd import PGD
from robaudit.attacks.square import Square

from tests.attacks._digits_cnn import digits_cnn, single_thread

EPS = 0.1  # L-inf, digits pixels are in [0, 1]


@pytest.fixture(scope="module")
def cnn() -> Iterator[tuple[torch.nn.Module, torch.Tensor, torch.Tensor]]:
    with single_thread():
        net, x, y = digits_cnn()
        keep = net(x).argmax(1) == y
        yield net, x[keep][:150], y[keep][:150]


def _acc(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    with torch.no_grad():
        return int((net(x).argmax(1) == y).sum())


def test_model_is_trained(cnn) -> None:  # type: ignore[no-untyped-def]
    net, x, y = digits_cnn()
    assert _acc(net, x, y) / len(y) > 0.9


def test_pgd_at_least_as_strong_as_torchattacks(cnn) -> None:  # type: ignore[no-untyped-def]
    torchattacks = pytest.importorskip("torchattacks")
    net, x, y = cnn
    ours = PGD("linf", EPS, alpha=EPS / 4, steps=10).perturb(net, x, y, generator=torch.Generator().manual_seed(0))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        theirs = torchattacks.PGD(net, eps=EPS, alpha=EPS / 4, steps=10, random_start=True)(x, y)
    ra_ours, ra_theirs = _acc(net, ours, y), _acc(net, theirs, y)
    assert ra_ours < len(y)  # the attack does something
    assert ra_ours <= ra_theirs + 1, (ra_ours, ra_theirs)


def test_pgd_l2_at_least_as_strong_as_torchattacks(cnn) -> None:  # type: ignore[no-untyped-def]
    torchattacks = pytest.importorskip("torchattacks")
    net, x, y = cnn
    ours = PGD("l2", 1.0, alpha=0.25, steps=10).perturb(net, x, y, generator=torch.Generator().manual_seed(0))
    with torch.random.fork_rng():
        torch.manual_seed(0)
        theirs = torchattacks.PGDL2(net, eps=1.0, alpha=0.25, steps=10, random_start=True)(x, y)
    assert _acc(net, ours, y) <= _acc(net, theirs, y) + 1


@pytest.mark.parametrize("norm,eps", [("linf", EPS), ("l2", 1.0)])
def test_apgd_at_least_as_strong_as_pgd(cnn, norm: str, eps: float) -> None:  # type: ignore[no-untyped-def]
    net, x, y = cnn
    g = torch.Generator().manual_seed(0)
    pgd = _acc(net, PGD(norm, eps, steps=10).perturb(net, x, y, generator=g), y)
    apgd = _acc(net, APGD(norm, eps, steps=10).perturb(net, x, y, generator=g), y)
    fgsm = _acc(net, FGSM(norm, eps).perturb(net, x, y, generator=g), y)
    assert apgd <= pgd <= fgsm + 1
    dlr = APGD(norm, eps, loss="dlr", steps=10)
    assert _acc(net, dlr.perturb(net, x, y, generator=g), y) < len(y) * 0.9


@pytest.mark.parametrize("norm,eps", [("linf", EPS), ("l2", 1.0)])
def test_square_reduces_accuracy_and_counts_queries(cnn, norm: str, eps: float) -> None:  # type: ignore[no-untyped-def]
    net, x, y = cnn
    x, y = x[:60], y[:60]
    sq = Square(norm, eps, queries=100)
    x_adv = sq.perturb(net, x, y, generator=torch.Generator().manual_seed(0))
    fooled = net(x_adv).argmax(1) != y
    assert int(fooled.sum()) >= 5
    q = sq.last_queries
    assert q.shape == (60,) and int(q.min()) >= 1 and int(q.max()) <= 100
    assert int(q[~fooled].min()) == 100  # robust samples used the whole budget
    assert float(q[fooled].float().mean()) < 100  # fooled samples stopped early
    assert sq.last_counts["queries"] == float(q.sum()) and sq.last_counts["backward"] == 0


def test_pgd_error_monotone_in_eps_and_zero_at_zero(cnn) -> None:  # type: ignore[no-untyped-def]
    net, x, y = cnn
    errs = []
    for eps in (0.0, 0.025, 0.05, 0.1, 0.2):
        x_adv = PGD("linf", eps, steps=10).perturb(net, x, y, generator=torch.Generator().manual_seed(0))
        errs.append(len(y) - _acc(net, x_adv, y))
    assert errs[0] == 0
    assert all(b >= a - 2 for a, b in zip(errs, errs[1:])), errs
    assert errs[-1] > errs[1]


def test_early_stop_never_weaker_and_saves_passes(cnn) -> None:  # type: ignore[no-untyped-def]
    net, x, y = cnn
    es = PGD("linf", EPS, steps=10)
    full = PGD("linf", EPS, steps=10, early_stop=False)
    a = _acc(net, es.perturb(net, x, y, generator=torch.Generator().manual_seed(0)), y)
    b = _acc(net, full.perturb(net, x, y, generator=torch.Generator().manual_seed(0)), y)
    assert a <= b
    assert full.last_counts["backward"] == 10 * len(y)
    assert es.last_counts["backward"] < full.last_counts["backward"]


def test_apgd_halves_step_sizes_at_checkpoints(cnn) -> None:  # type: ignore[no-untyped-def]
    net, x, y = cnn
    attack = APGD("linf", 0.03, steps=30)
    attack.perturb(net, x, y, generator=torch.Generator().manual_seed(0))
    steps = attack.last_step_sizes / (2 * 0.03)  # 1, 1/2, 1/4, ... of the initial 2 eps
    assert len(steps) > 10  # most samples survive eps = 0.03
    halvings = torch.log2(steps)
    assert torch.allclose(halvings, halvings.round(), atol=1e-4) and float(halvings.max()) <= 0
    assert float(halvings.min()) < 0  # at least one checkpoint reduced a step
