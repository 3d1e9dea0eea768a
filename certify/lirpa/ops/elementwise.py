"""Per-element affine maps ``y = x * scale + shift``: Normalize, BatchNorm (eval), constant arithmetic."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .base import AffineOp, Interval, OpKind


class ElementwiseAffineOp(AffineOp):
    """``scale`` and ``shift`` broadcast against the output shape (no batch dimension)."""

    kind = OpKind.DIAGONAL

    def __init__(self, scale: torch.Tensor, shift: torch.Tensor, in_shapes: Sequence[tuple[int, ...]],
                 out_shape: tuple[int, ...], label: str = "ElementwiseAffine") -> None:
        super().__init__(in_shapes, out_shape)
        self.scale = scale.expand(out_shape).contiguous()
        self.shift = shift.expand(out_shape).contiguous()
        self.label = label

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return xs[0] * self.scale + self.shift

    def ibp(self, *intervals: Interval) -> Interval:
        lo, u = intervals[0]
        center = (u + lo) / 2 * self.scale + self.shift
        radius = (u - lo) / 2 * self.scale.abs()
        return center - radius, center + radius

    def backward(self, A: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        bias = (A * self.shift).flatten(2).sum(-1)
        return [A * self.scale], bias

    def row_norm_sq(self) -> torch.Tensor | None:
        return self.scale.pow(2)
