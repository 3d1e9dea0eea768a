"""2-D convolution (and average pooling, as a depthwise convolution).

Backward steps never build the convolution's dense matrix: ``A`` is reshaped to
``(B*S, C_out, H_out, W_out)`` and mapped through ``conv_transpose2d``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .base import AffineOp, Interval


class Conv2dOp(AffineOp):
    label = "Conv2d"

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, *, stride: tuple[int, int],
                 padding: tuple[int, int], dilation: tuple[int, int], groups: int,
                 in_shapes: Sequence[tuple[int, ...]], out_shape: tuple[int, ...], label: str = "Conv2d") -> None:
        super().__init__(in_shapes, out_shape)
        self.weight, self.bias = weight, bias
        self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
        self.label = label
        _, h_in, w_in = self.in_shapes[0]
        _, h_out, w_out = self.out_shape
        kh, kw = weight.shape[-2:]
        self.output_padding = tuple(
            size_in - ((size_out - 1) * s - 2 * p + d * (k - 1) + 1)
            for size_in, size_out, s, p, d, k in zip(
                (h_in, w_in), (h_out, w_out), stride, padding, dilation, (kh, kw))
        )

    def _conv(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return self._conv(xs[0], self.weight, self.bias)

    def ibp(self, *intervals: Interval) -> Interval:
        lo, u = intervals[0]
        center = self._conv((u + lo) / 2, self.weight, self.bias)
        radius = self._conv((u - lo) / 2, self.weight.abs(), None)
        return center - radius, center + radius

    def backward(self, A: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        b, s = A.shape[:2]
        flat = A.reshape(b * s, *self.out_shape)
        A_in = F.conv_transpose2d(flat, self.weight, None, self.stride, self.padding,
                                  self.output_padding, self.groups, self.dilation)
        A_in = A_in.reshape(b, s, *self.in_shapes[0])
        if self.bias is None:
            bias = A.new_zeros((b, s))
        else:
            bias = A.sum(dim=(-1, -2)) @ self.bias
        return [A_in], bias

    def row_norm_sq(self) -> torch.Tensor | None:
        ones = self.weight.new_ones((1, *self.in_shapes[0]))
        return self._conv(ones, self.weight.pow(2), None)[0]
