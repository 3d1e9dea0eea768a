"""The input set a bound holds on, and how a linear function is minimised over it.

Threat model: every input ``x'`` with ``||x' - x0[b]||_p <= eps`` around each batch element,
for ``p = inf`` intersected with the pixel box ``[x_min, x_max]`` (when given), or ``p = 2``.
For ``p = 2`` the box is ignored: the bound then holds on the whole L2 ball, a superset of
the ball intersected with the box (sound but looser, as in auto_LiRPA's ``PerturbationLpNorm``).

Concretisation (Xu et al. 2020, auto_LiRPA ``perturbations.py::concretize_matrix``):
``min_x A x = A+ x_L + A- x_U`` for a box, ``A x0 - eps ||A_row||_q`` for an Lp ball (1/p + 1/q = 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from robaudit.errors import ParameterError


@dataclass(frozen=True)
class Perturbation:
    """An L-inf (optionally box-clipped) or L2 ball around ``x0`` (B, *shape)."""

    x0: torch.Tensor
    eps: float
    norm: float = math.inf
    x_min: float | None = 0.0
    x_max: float | None = 1.0

    def __post_init__(self) -> None:
        if self.norm not in (math.inf, 2.0):
            raise ParameterError(f"norm must be inf or 2, got {self.norm!r}; use norm=float('inf') or norm=2")
        if not (self.eps >= 0 and math.isfinite(self.eps)):
            raise ParameterError(f"eps must be a finite number >= 0, got {self.eps!r}")
        if (self.x_min is None) != (self.x_max is None):
            raise ParameterError("give both x_min and x_max, or set both to None to disable the pixel box")
        if self.x_min is not None and self.x_max is not None and self.x_min > self.x_max:
            raise ParameterError(f"x_min ({self.x_min}) must not exceed x_max ({self.x_max})")

    @property
    def is_linf(self) -> bool:
        return self.norm == math.inf

    def box(self) -> tuple[torch.Tensor, torch.Tensor]:
        """An elementwise box containing the input set (exact for L-inf)."""
        lo, hi = self.x0 - self.eps, self.x0 + self.eps
        if self.is_linf and self.x_min is not None and self.x_max is not None:
            lo = lo.clamp(min=self.x_min).clamp(max=self.x_max)
            hi = hi.clamp(max=self.x_max).clamp(min=self.x_min)
            lo = torch.minimum(lo, hi)
        return lo, hi

    def concretize(self, A: torch.Tensor) -> torch.Tensor:
        """``min over the set of A[b, s] . x`` for A of shape (B, S, *x_shape) -> (B, S)."""
        flat = A.reshape(A.shape[0], A.shape[1], -1)
        if self.is_linf:
            lo, hi = self.box()
            center = ((hi + lo) / 2).reshape(lo.shape[0], -1, 1)
            radius = ((hi - lo) / 2).reshape(lo.shape[0], -1, 1)
            return torch.bmm(flat, center).squeeze(-1) - torch.bmm(flat.abs(), radius).squeeze(-1)
        x0 = self.x0.reshape(self.x0.shape[0], -1, 1)
        return torch.bmm(flat, x0).squeeze(-1) - self.eps * flat.norm(p=2, dim=-1)
