"""Sum (or difference) of two traced tensors of equal shape: residual connections."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .base import AffineOp, Interval


class AddOp(AffineOp):
    label = "Add"

    def __init__(self, in_shapes: Sequence[tuple[int, ...]], out_shape: tuple[int, ...], sign: float = 1.0) -> None:
        super().__init__(in_shapes, out_shape)
        self.sign = sign
        self.label = "Add" if sign > 0 else "Sub"

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return xs[0] + self.sign * xs[1]

    def ibp(self, *intervals: Interval) -> Interval:
        (l0, u0), (l1, u1) = intervals
        if self.sign > 0:
            return l0 + l1, u0 + u1
        return l0 - u1, u0 - l1

    def backward(self, A: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        return [A, A * self.sign], A.new_zeros(A.shape[:2])
