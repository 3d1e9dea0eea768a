"""Reshape / view / flatten that keep the batch axis: a pure re-indexing."""

from __future__ import annotations

import torch

from .base import AffineOp, Interval, OpKind


class ReshapeOp(AffineOp):
    kind = OpKind.SHAPE
    label = "Reshape"

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return xs[0].reshape(xs[0].shape[0], *self.out_shape)

    def ibp(self, *intervals: Interval) -> Interval:
        lo, u = intervals[0]
        return self.forward(lo), self.forward(u)

    def backward(self, A: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        return [A.reshape(A.shape[0], A.shape[1], *self.in_shapes[0])], A.new_zeros(A.shape[:2])
