"""The attack contract: ``Attack.perturb(model, x, y, *, generator, target=None) -> x_adv``.

Threat model shared by every attack: an adversary who may move each [0, 1] pixel-space
image ``x`` anywhere inside the ``norm`` ball of radius ``eps`` around it, intersected with
the image box [0, 1]^d. :meth:`Attack.perturb` *verifies* that every returned image obeys
that budget (and keeps shape, dtype and finiteness) and raises :class:`BudgetViolation`
otherwise, so a buggy attack can never report an out-of-budget "success".

Targeting: ``y`` is always the ground-truth label. Passing ``target`` makes the attack
targeted (success = prediction equals ``target``); without it the attack is untargeted
(success = prediction differs from ``y``).

Accounting: after ``perturb`` the attack's ``last_counts`` holds ``forward``, ``backward``
and ``queries`` (all counted in images processed) and, for query attacks, the per-sample
``last_queries`` tensor.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from robaudit.errors import CapabilityError, ParameterError
from robaudit.model import Capability, ModelAdapter

#: absolute slack allowed on the norm budget and the [0, 1] box (float32 round-off)
BUDGET_ATOL = 1e-5


class Norm(str, enum.Enum):
    """The perturbation norm of a threat model."""

    LINF = "linf"
    L2 = "l2"

    @classmethod
    def parse(cls, value: str | Norm) -> Norm:
        if isinstance(value, Norm):
            return value
        key = str(value).strip().lower().replace("-", "").replace("_", "")
        aliases = {"linf": cls.LINF, "inf": cls.LINF, "l∞": cls.LINF, "l2": cls.L2, "2": cls.L2}
        if key not in aliases:
            raise ParameterError(f"unknown norm {value!r}; use 'linf' or 'l2'")
        return aliases[key]


class BudgetViolation(RuntimeError):
    """An attack returned an image outside its threat model (a robaudit bug; please report it)."""


def per_sample_norm(delta: torch.Tensor, norm: Norm) -> torch.Tensor:
    """``||delta_i||`` per sample (shape ``(N,)``)."""
    flat = delta.flatten(1)
    if norm is Norm.LINF:
        return flat.abs().amax(1) if flat.shape[1] else flat.new_zeros(flat.shape[0])
    return flat.norm(p=2, dim=1)


def project(x: torch.Tensor, x_adv: torch.Tensor, norm: Norm, eps: float | torch.Tensor) -> torch.Tensor:
    """Map ``x_adv`` into the ``eps``-ball around ``x`` and then into [0, 1].

    Clipping to the box after the ball never leaves the ball (each coordinate moves
    towards ``x``), so the result satisfies both constraints.
    """
    delta = x_adv - x
    shape = (-1, *([1] * (x.dim() - 1)))
    radius = (eps.to(x.device, x.dtype).reshape(shape) if isinstance(eps, torch.Tensor)
              else torch.tensor(float(eps), dtype=x.dtype, device=x.device))
    if norm is Norm.LINF:
        delta = torch.maximum(torch.minimum(delta, radius), -radius)
    else:
        n = per_sample_norm(delta, norm).reshape(shape)
        delta = delta * torch.clamp(radius / (n + 1e-12), max=1.0)
    return torch.clamp(x + delta, 0.0, 1.0)


def l2_normalize(t: torch.Tensor) -> torch.Tensor:
    """``t_i / ||t_i||_2`` per sample (zero rows stay zero)."""
    n = t.flatten(1).norm(p=2, dim=1).reshape(-1, *([1] * (t.dim() - 1)))
    return t / (n + 1e-12)


def as_module(model: nn.Module | ModelAdapter) -> Any:
    """The differentiable callable (taking [0, 1] inputs) behind ``model``.

    An nn.Module is returned as is (it must be in eval mode); an adapter gives its
    ``torch_module()``, or its differentiable ``logits`` when it has GRADIENTS only.

    Raises:
        CapabilityError: the adapter offers no gradients.
    """
    if isinstance(model, ModelAdapter):
        if model.has(Capability.TORCH_MODULE):
            return model.torch_module()
        if model.has(Capability.GRADIENTS):
            return model.logits
        raise CapabilityError(
            f"model {model.name!r} has no gradients: use a black-box attack (Square) or give a "
            "PyTorch model / an ONNX model whose torch twin can be built"
        )
    if isinstance(model, nn.Module):
        return model
    raise ParameterError(
        f"model must be a torch nn.Module or a robaudit ModelAdapter, got {type(model).__name__}"
    )


def logits_fn(model: nn.Module | ModelAdapter) -> Any:
    """A callable ``x -> logits`` using only inference (works for ONNX adapters)."""
    if isinstance(model, ModelAdapter):
        return model.logits
    return as_module(model)


def margin(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """Success margin: <= 0 exactly when the attack succeeded on that sample.

    Untargeted: ``z_y - max_{j != y} z_j``; targeted: ``max_{j != t} z_j - z_t``.
    """
    label = y if target is None else target
    z_lab = logits.gather(1, label[:, None])[:, 0]
    other = logits.scatter(1, label[:, None], float("-inf")).amax(1)
    return z_lab - other if target is None else other - z_lab


def success(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """Boolean per sample: misclassified (untargeted) or classified as ``target``."""
    pred = logits.argmax(1)
    return pred != y if target is None else pred == target


def ce_objective(logits: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None) -> torch.Tensor:
    """Per-sample loss to *maximise*: CE(y) untargeted, -CE(target) targeted."""
    if target is None:
        return F.cross_entropy(logits, y, reduction="none")
    return -F.cross_entropy(logits, target, reduction="none")


def input_grad(module: Any, x_adv: torch.Tensor, objective: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One forward and one backward pass: ``(logits, per-sample objective, d objective / d x)``.

    Gradients are taken with ``torch.autograd.grad`` w.r.t. the input only (no parameter
    gradients are accumulated). ``objective(logits) -> (N,)`` is summed before backward,
    which is exact because samples do not interact in an eval-mode network.
    """
    x_adv = x_adv.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = module(x_adv)
        loss = objective(logits)
        (grad,) = torch.autograd.grad(loss.sum(), [x_adv])
    return logits.detach(), loss.detach(), grad.detach()


RestartFn = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None", int], tuple[torch.Tensor, torch.Tensor]]


def run_restarts(x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None, restarts: int,
                 run: RestartFn) -> torch.Tensor:
    """Restarts that only re-attack samples not yet fooled; each sample keeps its first success.

    ``run(x_sub, y_sub, target_sub, restart_index) -> (x_adv_sub, fooled_sub)``.
    """
    best = x.clone()
    fooled = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    for r in range(restarts):
        idx = (~fooled).nonzero()[:, 0]
        if len(idx) == 0:
            break
        adv, ok = run(x[idx], y[idx], target[idx] if target is not None else None, r)
        best[idx] = adv
        fooled[idx] = ok
    return best


def uniform(shape: tuple[int, ...], generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """U[0, 1) drawn from ``generator`` (on its device), moved to ``like``'s device and dtype."""
    return torch.rand(shape, generator=generator, device=generator.device).to(like.device, like.dtype)


def normal(shape: tuple[int, ...], generator: torch.Generator, like: torch.Tensor) -> torch.Tensor:
    """N(0, 1) drawn from ``generator``, moved to ``like``'s device and dtype."""
    return torch.randn(shape, generator=generator, device=generator.device).to(like.device, like.dtype)


def check_eps(eps: float) -> float:
    eps = float(eps)
    if not eps >= 0.0 or eps != eps or eps == float("inf"):
        raise ParameterError(f"eps must be a finite number >= 0 (pixel units, e.g. 8/255), got {eps}")
    return eps


def check_positive_int(name: str, value: int) -> int:
    if isinstance(value, bool) or int(value) != value or int(value) < 1:
        raise ParameterError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def check_positive(name: str, value: float) -> float:
    value = float(value)
    if not value > 0.0 or value == float("inf"):
        raise ParameterError(f"{name} must be a finite number > 0, got {value}")
    return value


class Attack(ABC):
    """Base class: validates inputs, runs ``_perturb``, then verifies the budget.

    Subclasses set ``self.norm`` / ``self.eps`` in ``__init__`` (validated there) and
    implement :meth:`_perturb`, updating ``self._counts`` as they go.
    """

    norm: Norm
    eps: float

    def __init__(self, norm: str | Norm, eps: float) -> None:
        self.norm = Norm.parse(norm)
        self.eps = check_eps(eps)
        self.last_counts: dict[str, float] = {"forward": 0.0, "backward": 0.0, "queries": 0.0}
        self._counts = dict(self.last_counts)

    def perturb(self, model: nn.Module | ModelAdapter, x: torch.Tensor, y: torch.Tensor, *,
                generator: torch.Generator, target: torch.Tensor | None = None) -> torch.Tensor:
        """Adversarial versions of ``x`` (same shape/dtype), each within the budget.

        Args:
            model: an nn.Module or ModelAdapter taking [0, 1] NCHW float32 inputs (eval mode).
            x: images ``(N, C, H, W)`` in [0, 1].
            y: ground-truth labels ``(N,)``.
            generator: the only source of randomness (same seed -> identical output).
            target: optional target labels ``(N,)``; makes the attack targeted.

        Returns:
            ``x_adv`` with ``||x_adv - x|| <= eps`` and values in [0, 1].

        Raises:
            ParameterError: malformed inputs. BudgetViolation: the attack broke its budget.
        """
        if not isinstance(x, torch.Tensor) or x.dim() < 2 or not x.is_floating_point():
            raise ParameterError("x must be a floating-point tensor of shape (N, C, H, W)")
        if y.shape != x.shape[:1]:
            raise ParameterError(f"y must have shape ({x.shape[0]},), got {tuple(y.shape)}")
        if target is not None and target.shape != y.shape:
            raise ParameterError(f"target must have shape {tuple(y.shape)}, got {tuple(target.shape)}")
        if x.numel() and (x.min() < 0.0 or x.max() > 1.0):
            raise ParameterError("x must lie in [0, 1] (pixel space); un-normalise the images first")
        x = x.detach()
        y = y.detach().long().to(x.device)
        target = target.detach().long().to(x.device) if target is not None else None
        self._counts = {"forward": 0.0, "backward": 0.0, "queries": 0.0}
        if len(x) == 0:
            self.last_counts = dict(self._counts)
            return x.clone()
        x_adv = self._perturb(model, x, y, target, generator).detach()
        self.last_counts = dict(self._counts)
        self.verify(x, x_adv)
        return x_adv

    def verify(self, x: torch.Tensor, x_adv: torch.Tensor) -> None:
        """Raise BudgetViolation unless ``x_adv`` is a valid attack output for ``x``."""
        if x_adv.shape != x.shape or x_adv.dtype != x.dtype:
            raise BudgetViolation(
                f"{type(self).__name__} returned shape {tuple(x_adv.shape)} {x_adv.dtype}, "
                f"expected {tuple(x.shape)} {x.dtype}"
            )
        if not torch.isfinite(x_adv).all():
            raise BudgetViolation(f"{type(self).__name__} returned non-finite pixels")
        if x_adv.min() < -BUDGET_ATOL or x_adv.max() > 1.0 + BUDGET_ATOL:
            raise BudgetViolation(f"{type(self).__name__} returned pixels outside [0, 1]")
        dist = per_sample_norm(x_adv - x, self.norm)
        worst = float(dist.max())
        if worst > self.eps * (1.0 + 1e-5) + BUDGET_ATOL:
            raise BudgetViolation(
                f"{type(self).__name__} exceeded its {self.norm.value} budget: "
                f"||delta|| = {worst:.6g} > eps = {self.eps:.6g}"
            )

    def _count(self, forward: int = 0, backward: int = 0) -> None:
        self._counts["forward"] += forward
        self._counts["backward"] += backward
        self._counts["queries"] += forward

    @abstractmethod
    def _perturb(self, model: nn.Module | ModelAdapter, x: torch.Tensor, y: torch.Tensor,
                 target: torch.Tensor | None, generator: torch.Generator) -> torch.Tensor:
        """The attack itself; inputs are already validated and detached."""

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith(("_", "last_")))
        return f"{type(self).__name__}({fields})"
