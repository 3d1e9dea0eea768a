"""Fully connected layer ``y = x W^T + b`` (features on the last axis)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .base import AffineOp, Interval


class LinearOp(AffineOp):
    label = "Linear"

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None,
                 in_shapes: Sequence[tuple[int, ...]], out_shape: tuple[int, ...]) -> None:
        super().__init__(in_shapes, out_shape)
        self.weight = weight
        self.bias = bias

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return F.linear(xs[0], self.weight, self.bias)

    def ibp(self, *intervals: Interval) -> Interval:
        lo, u = intervals[0]
        center = F.linear((u + lo) / 2, self.weight, self.bias)
        radius = F.linear((u - lo) / 2, self.weight.abs())
        return center - radius, center + radius

    def backward(self, A: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        A_in = A @ self.weight
        if self.bias is None:
            bias = A.new_zeros(A.shape[:2])
        else:
            bias = (A @ self.bias).flatten(2).sum(-1) if A.dim() > 3 else A @ self.bias
        return [A_in], bias

    def row_norm_sq(self) -> torch.Tensor | None:
        if len(self.out_shape) != 1:
            return None
        return self.weight.pow(2).sum(1)

    def fold_spec(self, C: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(C W, C b)`` for a spec ``C`` (B, S, out): the last layer with the spec folded in."""
        W = C @ self.weight
        b = C @ self.bias if self.bias is not None else C.new_zeros(C.shape[:2])
        return W, b
