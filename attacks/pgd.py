"""PGD: projected gradient ascent on the cross-entropy, L-inf or L2, with random restarts."""

from __future__ import annotations

import torch
from robaudit.attacks.base import (
    Attack,
    Norm,
    as_module,
    ce_objective,
    check_positive,
    check_positive_int,
    input_grad,
    l2_normalize,
    normal,
    project,
    run_restarts,
    success,
    uniform,
)
from torch import nn

from robaudit.errors import ParameterError
from robaudit.model import ModelAdapter


class PGD(Attack):
    """Projected Gradient Descent (Madry et al.), the standard first-order white-box attack.

    Threat model: ``||x_adv - x|| <= eps`` (L-inf or L2), ``x_adv`` in [0, 1], white box.

    Paper: Madry, Makelov, Schmidt, Tsipras, Vladu, "Towards Deep Learning Models Resistant
    to Adversarial Attacks", ICLR 2018. ``x^0 = x + U(ball)``, then
    ``x^{t+1} = Proj(x^t + alpha * sign(grad))`` (L-inf) or
    ``Proj(x^t + alpha * grad / ||grad||_2)`` (L2), ascending CE(y) (or descending
    CE(target) when targeted). The L2 random start is uniform in the L2 ball.

    Early stop (default): a sample is frozen at the first iterate that already fools the
    model (checked on the logits the gradient step computes anyway, so it costs no extra
    pass) and is no longer attacked. This never turns a success into a failure, unlike
    returning the last iterate. Restarts attack only samples no restart has fooled yet,
    and each sample keeps its first successful restart.

    Args:
        norm: ``"linf"`` or ``"l2"``.
        eps: radius in pixel units.
        alpha: step size; default ``2.5 * eps / steps`` (METHODS §5.2).
        steps: gradient steps per restart (>= 1).
        restarts: independent random starts (>= 1).
        random_start: start from a uniform point of the ball (else from ``x``).
        early_stop: freeze samples once fooled (see above); False returns the last iterate.

    Raises:
        ParameterError: eps < 0, alpha <= 0, steps < 1, restarts < 1, unknown norm.

    Example:
        >>> PGD(norm="linf", eps=8/255, alpha=2/255, steps=10).perturb(model, x, y, generator=g)
    """

    def __init__(self, norm: str | Norm = "linf", eps: float = 8 / 255, alpha: float | None = None,
                 steps: int = 10, restarts: int = 1, random_start: bool = True,
                 early_stop: bool = True) -> None:
        super().__init__(norm, eps)
        self.steps = check_positive_int("steps", steps)
        self.restarts = check_positive_int("restarts", restarts)
        if alpha is None:
            alpha = 2.5 * self.eps / self.steps if self.eps > 0 else 1.0
        try:
            self.alpha = check_positive("alpha (the PGD step size)", alpha)
        except ParameterError as err:
            raise ParameterError(f"{err}; e.g. alpha = 2.5 * eps / steps") from None
        self.random_start = bool(random_start)
        self.early_stop = bool(early_stop)

    def _perturb(self, model: nn.Module | ModelAdapter, x: torch.Tensor, y: torch.Tensor,
                 target: torch.Tensor | None, generator: torch.Generator) -> torch.Tensor:
        if self.eps == 0.0:
            return x.clone()
        module = as_module(model)
        return run_restarts(x, y, target, self.restarts,
                            lambda xs, ys, ts, r: self._run(module, xs, ys, ts, generator, r < self.restarts - 1))

    def _start(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if not self.random_start:
            return x.clone()
        if self.norm is Norm.LINF:
            delta = (2.0 * uniform(tuple(x.shape), generator, x) - 1.0) * self.eps
        else:
            d = x[0].numel()
            direction = l2_normalize(normal(tuple(x.shape), generator, x))
            radius = self.eps * uniform((len(x),), generator, x) ** (1.0 / d)
            delta = direction * radius.reshape(-1, *([1] * (x.dim() - 1)))
        return project(x, x + delta, self.norm, self.eps)

    def _run(self, module: nn.Module, x: torch.Tensor, y: torch.Tensor, target: torch.Tensor | None,
             generator: torch.Generator, need_final: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """One restart on all of ``x``; returns (x_adv, success known so far)."""
        out = torch.empty_like(x)
        ok = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        ids = torch.arange(len(x), device=x.device)
        xa = self._start(x, generator)
        xs, ys, ts = x, y, target
        for _ in range(self.steps):
            logits, _, grad = input_grad(module, xa, lambda z, ys=ys, ts=ts: ce_objective(z, ys, ts))
            self._count(forward=len(xa), backward=len(xa))
            hit = success(logits, ys, ts)
            if self.early_stop and bool(hit.any()):
                out[ids[hit]] = xa[hit]
                ok[ids[hit]] = True
                keep = ~hit
                xa, xs, ys, grad, ids = xa[keep], xs[keep], ys[keep], grad[keep], ids[keep]
                ts = ts[keep] if ts is not None else None
                if len(ids) == 0:
                    return out, ok
            step = grad.sign() if self.norm is Norm.LINF else l2_normalize(grad)
            xa = project(xs, xa + self.alpha * step, self.norm, self.eps)
        out[ids] = xa
        if need_final:
            with torch.no_grad():
                logits = module(xa)
            self._count(forward=len(xa))
            ok[ids] = success(logits, ys, ts)
        return out, ok
