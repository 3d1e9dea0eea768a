"""Average pooling as a depthwise convolution with weights ``1 / (kh * kw)``.

Supported when the divisor is always the window size: no ``ceil_mode`` windows past the
edge, no ``divisor_override``, and padding either 0 or counted (``count_include_pad``).
AdaptiveAvgPool2d is supported when the input size is a multiple of the output size.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .conv import Conv2dOp


def _pair(v: Any) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def avgpool_op(key: Any, target: Any, vals: Any, kvals: dict[str, Any], in_shape: tuple[int, ...],
               out_shape: tuple[int, ...], dtype: torch.dtype, unsupported: Callable[..., Exception],
               device: torch.device | str = "cpu") -> Conv2dOp:
    if len(in_shape) != 3:
        raise unsupported("pooling needs a (C, H, W) input")
    c, h, w = in_shape
    if key in (nn.AdaptiveAvgPool2d, "adaptive_avg_pool2d"):
        ho, wo = out_shape[1:]
        if h % ho or w % wo:
            raise unsupported(f"adaptive pooling from {h}x{w} to {ho}x{wo} has uneven windows")
        kernel, stride, padding = (h // ho, w // wo), (h // ho, w // wo), (0, 0)
        count_pad: Any = True
        ceil: Any = False
        divisor: Any = None
    elif isinstance(target, nn.Module):
        kernel, padding = _pair(target.kernel_size), _pair(target.padding)
        stride = _pair(target.stride if target.stride is not None else target.kernel_size)
        count_pad, ceil, divisor = target.count_include_pad, target.ceil_mode, target.divisor_override
    else:
        names = ("kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override")
        defaults = {"stride": None, "padding": 0, "ceil_mode": False, "count_include_pad": True,
                    "divisor_override": None}
        given = dict(zip(names, vals[1:]))
        given.update(kvals)
        opts = {**defaults, **given}
        kernel, padding = _pair(opts["kernel_size"]), _pair(opts["padding"])
        stride = _pair(opts["stride"] or opts["kernel_size"])
        count_pad, ceil, divisor = opts["count_include_pad"], opts["ceil_mode"], opts["divisor_override"]
    if divisor is not None or (padding != (0, 0) and not count_pad):
        raise unsupported("divisor_override / count_include_pad=False change the divisor per window")
    if ceil:
        floor_shape = tuple((s + 2 * p - k) // st + 1 for s, p, k, st in zip((h, w), padding, kernel, stride))
        if floor_shape != tuple(out_shape[1:]):
            raise unsupported("ceil_mode creates partial windows")
    weight = torch.full((c, 1, *kernel), 1.0 / (kernel[0] * kernel[1]), dtype=dtype, device=device)
    return Conv2dOp(weight, None, stride=stride, padding=padding, dilation=(1, 1), groups=c,
                    in_shapes=[in_shape], out_shape=out_shape, label="AvgPool2d")
