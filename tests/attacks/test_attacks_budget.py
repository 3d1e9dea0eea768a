"""Contract tests of every attack: budget, box, shape, determinism, parameter errors."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from robaudit.attacks.apgd import APGD
from robaudit.attacks.base import Attack, BudgetViolation, Norm, per_sample_norm
from robaudit.attacks.fgsm import FGSM
from robaudit.attacks.pgd import PGD
from robaudit.attacks.square import Square, p_selection
from torch import nn

from robaudit.errors import ParameterError
from robaudit.model import InputSpec, TorchModelAdapter
from tests.attacks._digits_cnn import single_thread


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


def _net() -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 10))
    return net.eval()


NET = _net()
X = torch.rand((12, 3, 8, 8), generator=torch.Generator().manual_seed(1))
X[0] = 0.0  # corners of the box must stay inside [0, 1]
X[1] = 1.0
Y = NET(X).argmax(1).detach()

EPS = {"linf": 8 / 255, "l2": 0.5}
FACTORIES = {
    "fgsm": lambda n: FGSM(n, EPS[n]),
    "pgd": lambda n: PGD(n, EPS[n], steps=5, restarts=2),
    "pgd-no-early-stop": lambda n: PGD(n, EPS[n], steps=5, early_stop=False),
    "apgd-ce": lambda n: APGD(n, EPS[n], steps=8),
    "apgd-dlr": lambda n: APGD(n, EPS[n], loss="dlr", steps=8, restarts=2),
    "square": lambda n: Square(n, EPS[n], queries=30),
}


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_within_budget_box_and_reproducible(name: str, norm: str) -> None:
    attack = FACTORIES[name](norm)
    x_adv = attack.perturb(NET, X, Y, generator=torch.Generator().manual_seed(3))
    assert x_adv.shape == X.shape and x_adv.dtype == X.dtype
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    assert float(per_sample_norm(x_adv - X, Norm(norm)).max()) <= EPS[norm] * (1 + 1e-5) + 1e-6
    assert not torch.equal(x_adv, X)  # it did perturb
    assert attack.last_counts["forward"] >= len(X)
    again = FACTORIES[name](norm).perturb(NET, X, Y, generator=torch.Generator().manual_seed(3))
    assert torch.equal(x_adv, again)
    if name != "fgsm":  # FGSM is deterministic; the others must use the generator
        other = FACTORIES[name](norm).perturb(NET, X, Y, generator=torch.Generator().manual_seed(4))
        assert not torch.equal(x_adv, other)


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_targeted_mode_reaches_target_more_often(name: str) -> None:
    target = (Y + 1) % 10
    attack = FACTORIES[name]("linf")
    attack.eps = 0.3
    x_adv = attack.perturb(NET, X, Y, generator=torch.Generator().manual_seed(0), target=target)
    hit = (NET(x_adv).argmax(1) == target).float().mean()
    assert float(hit) > float((NET(X).argmax(1) == target).float().mean())


def test_eps_zero_returns_input_and_adapter_accepted() -> None:
    adapter = TorchModelAdapter(NET, InputSpec((3, 8, 8), 10), pixel_space=True)
    for make in FACTORIES.values():
        attack = make("linf")
        attack.eps = 0.0
        assert torch.equal(attack.perturb(adapter, X, Y, generator=torch.Generator().manual_seed(0)), X)


def test_verify_rejects_out_of_budget_output() -> None:
    class Cheater(Attack):
        def _perturb(self, model, x, y, target, generator):  # type: ignore[no-untyped-def]
            return torch.clamp(x + 2 * self.eps, 0, 1)

    class OutOfBox(Attack):
        def _perturb(self, model, x, y, target, generator):  # type: ignore[no-untyped-def]
            return x + 1e-3

    with pytest.raises(BudgetViolation, match="budget"):
        Cheater("linf", 0.1).perturb(NET, X[2:], Y[2:], generator=torch.Generator())
    with pytest.raises(BudgetViolation, match=r"\[0, 1\]"):
        OutOfBox("linf", 0.1).perturb(NET, X, Y, generator=torch.Generator())


@pytest.mark.parametrize("bad", [
    lambda: PGD("linf", eps=-0.1),
    lambda: PGD("linf", eps=0.1, steps=0),
    lambda: PGD("linf", eps=0.1, alpha=0.0),
    lambda: PGD("linf", eps=0.1, alpha=-1.0),
    lambda: PGD("linf", eps=0.1, restarts=0),
    lambda: PGD("l3", eps=0.1),
    lambda: FGSM("linf", eps=float("nan")),
    lambda: APGD("linf", 0.1, loss="hinge"),
    lambda: APGD("l2", 0.1, steps=0),
    lambda: Square("linf", 0.1, queries=0),
    lambda: Square("linf", 0.1, p_init=1.5),
])
def test_bad_parameters_raise_parameter_error(bad) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ParameterError):
        bad()


def test_bad_inputs_raise_parameter_error() -> None:
    with pytest.raises(ParameterError, match=r"\[0, 1\]"):
        FGSM("linf", 0.1).perturb(NET, X * 255, Y, generator=torch.Generator())
    with pytest.raises(ParameterError, match="y must have shape"):
        FGSM("linf", 0.1).perturb(NET, X, Y[:3], generator=torch.Generator())


def test_dlr_needs_three_classes() -> None:
    two = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2)).eval()
    with pytest.raises(ParameterError, match="classes"):
        APGD("linf", 0.1, loss="dlr", steps=2).perturb(two, X, torch.zeros(12, dtype=torch.long),
                                                       generator=torch.Generator())


def test_norm_strings_and_square_schedule() -> None:
    assert Norm.parse("Linf") is Norm.LINF and Norm.parse("L2") is Norm.L2
    assert p_selection(0.8, 0, 1000) == 0.8
    assert p_selection(0.8, 5, 1000) == pytest.approx(0.4)  # 50/10000 of the budget reached
    assert p_selection(0.8, 999, 1000) == pytest.approx(0.8 / 512)
