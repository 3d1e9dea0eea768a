"""Piecewise-linear activations: ReLU and LeakyReLU (CROWN relaxation, alpha-optimisable).

On an unstable neuron (``l < 0 < u``) the upper line is the chord through ``(l, f(l))`` and
``(u, f(u))``; the lower line is ``alpha x`` with ``alpha`` in ``[slope, 1]``. CROWN's
"adaptive" choice (auto_LiRPA ``relu.py``) is ``alpha = 1`` if ``u > -l`` else ``slope``
(0 for ReLU). Stable neurons are exact.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .base import ActivationOp


class LeakyReLUOp(ActivationOp):
    """``f(x) = x`` for ``x >= 0``, ``slope * x`` otherwise, ``0 <= slope <= 1``."""

    optimizable = True

    def __init__(self, in_shapes: Sequence[tuple[int, ...]], out_shape: tuple[int, ...],
                 negative_slope: float = 0.0) -> None:
        super().__init__(in_shapes, out_shape)
        self.slope = float(negative_slope)
        self.label = "ReLU" if self.slope == 0.0 else "LeakyReLU"

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(xs[0], self.slope) if self.slope else torch.relu(xs[0])

    def alpha_bounds(self) -> tuple[float, float]:
        return (self.slope, 1.0)

    def unstable(self, lo: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return (lo < 0) & (u > 0)

    def init_alpha(self, lo: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """CROWN's adaptive lower slope."""
        return torch.where(u > -lo, torch.ones_like(lo), torch.full_like(lo, self.slope))

    def relax(self, lo: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, ...]:
        s = self.slope
        active, inactive = lo >= 0, u <= 0
        unstable = ~(active | inactive)
        width = torch.where(unstable, u - lo, torch.ones_like(u))
        up_w = torch.where(unstable, (u - s * lo) / width, torch.where(active, 1.0, s).to(lo.dtype))
        up_b = torch.where(unstable, s * lo - up_w * lo, torch.zeros_like(lo))
        low_w = torch.where(unstable, self.init_alpha(lo, u), up_w)
        return low_w, torch.zeros_like(lo), up_w, up_b


def ReLUOp(in_shapes: Sequence[tuple[int, ...]], out_shape: tuple[int, ...]) -> LeakyReLUOp:  # noqa: N802
    """A ReLU is a LeakyReLU with slope 0."""
    return LeakyReLUOp(in_shapes, out_shape, 0.0)
