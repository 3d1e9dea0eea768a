"""Attack names accepted in stage configs and the factory that builds them."""

from __future__ import annotations

from robaudit.attacks.apgd import APGD
from robaudit.attacks.base import Attack
from robaudit.attacks.fgsm import FGSM
from robaudit.attacks.pgd import PGD
from robaudit.attacks.square import Square

from robaudit.errors import ParameterError

WHITE_BOX = ("fgsm", "pgd", "apgd-ce", "apgd-dlr")
BLACK_BOX = ("square",)
KNOWN = WHITE_BOX + BLACK_BOX


def normalize_name(name: str) -> str:
    key = str(name).strip().lower().replace("_", "-")
    if key not in KNOWN:
        raise ParameterError(f"unknown attack {name!r}; choose from {', '.join(KNOWN)}")
    return key


def build_attack(name: str, *, norm: str, eps: float, steps: int, restarts: int, alpha: float | None,
                 queries: int, p_init: float) -> Attack:
    """One configured attack instance for ``name`` (see :data:`KNOWN`)."""
    if name == "fgsm":
        return FGSM(norm, eps)
    if name == "pgd":
        return PGD(norm, eps, alpha=alpha, steps=steps, restarts=restarts)
    if name in ("apgd-ce", "apgd-dlr"):
        return APGD(norm, eps, loss=name.split("-")[1], steps=steps, restarts=restarts)
    return Square(norm, eps, queries=queries, p_init=p_init)
