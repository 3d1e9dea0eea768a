"""FGSM: one signed-gradient (L-inf) or normalised-gradient (L2) step of size eps."""

from __future__ import annotations

import torch
from robaudit.attacks.base import Attack, Norm, as_module, ce_objective, input_grad, l2_normalize, project
from torch import nn

from robaudit.model import ModelAdapter


class FGSM(Attack):
    """Fast Gradient Sign Method: a single gradient step inside the eps-ball.

    Threat model: ``||x_adv - x|| <= eps`` (L-inf or L2) with ``x_adv`` in [0, 1], white box
    (one forward and one backward pass per image).

    Paper: Goodfellow, Shlens, Szegedy, "Explaining and Harnessing Adversarial Examples",
    ICLR 2015. L-inf: ``x' = clip(x + eps * sign(grad CE))``; L2 variant (fast gradient
    method): ``x' = clip(x + eps * grad / ||grad||_2)``. Targeted: descend CE of the target.

    Args:
        norm: ``"linf"`` or ``"l2"``.
        eps: radius in pixel units (``8/255`` means 8 grey levels).

    Raises:
        ParameterError: negative or non-finite eps, unknown norm.

    Example:
        >>> x_adv = FGSM(norm="linf", eps=8 / 255).perturb(model, x, y, generator=g)
    """

    def __init__(self, norm: str | Norm = "linf", eps: float = 8 / 255) -> None:
        super().__init__(norm, eps)

    def _perturb(self, model: nn.Module | ModelAdapter, x: torch.Tensor, y: torch.Tensor,
                 target: torch.Tensor | None, generator: torch.Generator) -> torch.Tensor:
        if self.eps == 0.0:
            return x.clone()
        module = as_module(model)
        _, _, grad = input_grad(module, x, lambda z: ce_objective(z, y, target))
        self._count(forward=len(x), backward=len(x))
        step = grad.sign() if self.norm is Norm.LINF else l2_normalize(grad)
        return project(x, x + self.eps * step, self.norm, self.eps)
