"""torch modules for the ONNX operator versions onnx2torch 1.5.15 has no module for.

Guarantee: each module reproduces the ONNX operator's definition (onnx.ai/onnx/operators) for
float inputs, as far as its docstring says; anything outside that raises NotImplementedError at
conversion time (in :mod:`robaudit.loaders.onnx_converters`) rather than computing something else.
The converters that build these modules live in :mod:`robaudit.loaders.onnx_converters`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["OnnxGelu", "OnnxPadAxes", "OnnxReduce18", "OnnxReshapeAllowZero", "OnnxSize", "OnnxSplitEven"]

_PAD_MODES = {"constant": "constant", "reflect": "reflect", "edge": "replicate", "wrap": "circular"}


def _product(x: torch.Tensor, dims: list[int], keepdim: bool) -> torch.Tensor:
    for dim in sorted(dims, reverse=True):  # descending, so earlier indices stay valid without keepdim
        x = torch.prod(x, dim=dim, keepdim=keepdim)
    return x


_REDUCTIONS = {
    "ReduceL1": lambda x, d, k: torch.sum(torch.abs(x), dim=d, keepdim=k),
    "ReduceL2": lambda x, d, k: torch.sqrt(torch.sum(x * x, dim=d, keepdim=k)),
    "ReduceLogSum": lambda x, d, k: torch.log(torch.sum(x, dim=d, keepdim=k)),
    "ReduceLogSumExp": lambda x, d, k: torch.logsumexp(x, dim=d, keepdim=k),
    "ReduceMax": lambda x, d, k: torch.amax(x, dim=d, keepdim=k),
    "ReduceMean": lambda x, d, k: torch.mean(x, dim=d, keepdim=k),
    "ReduceMin": lambda x, d, k: torch.amin(x, dim=d, keepdim=k),
    "ReduceProd": _product,
    "ReduceSum": lambda x, d, k: torch.sum(x, dim=d, keepdim=k),
    "ReduceSumSquare": lambda x, d, k: torch.sum(x * x, dim=d, keepdim=k),
}


class OnnxReduce18(nn.Module):
    """Reduce*-18 (axes as a constant input instead of an attribute).

    Semantics (ONNX 18): reduce over ``axes`` (negative counts from the end); empty or absent
    axes reduce over all dimensions unless ``noop_with_empty_axes`` is 1, in which case the
    input is returned unchanged. ``keepdims`` keeps reduced dimensions with size 1.
    """

    def __init__(
        self, operation_type: str, axes: Sequence[int] | None, keepdims: int, noop_with_empty_axes: int
    ):
        super().__init__()
        if operation_type not in _REDUCTIONS:
            raise NotImplementedError(f"{operation_type} has no torch reduction")
        self.operation_type = operation_type
        self.axes = [int(a) for a in axes] if axes is not None else []
        self.keepdims = bool(keepdims)
        self.noop_with_empty_axes = bool(noop_with_empty_axes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.axes and self.noop_with_empty_axes:
            return x
        rank = x.dim()
        dims = sorted({a % rank for a in self.axes}) if self.axes else list(range(rank))
        return _REDUCTIONS[self.operation_type](x, dims, self.keepdims)


class OnnxGelu(nn.Module):
    """Gelu-20: ``0.5 x (1 + erf(x / sqrt 2))``, or the tanh form when ``approximate='tanh'``."""

    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise NotImplementedError(f"Gelu approximate={approximate!r} is not defined by ONNX")
        self.approximate = approximate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(x, approximate=self.approximate)


class OnnxReshapeAllowZero(nn.Module):
    """Reshape-19 with ``allowzero=1``: a 0 in ``shape`` is a literal zero, -1 is inferred.

    That is exactly ``torch.reshape``'s meaning of the shape list.
    """

    def forward(self, x: torch.Tensor, shape: torch.Tensor) -> torch.Tensor:
        return torch.reshape(x, [int(s) for s in shape.tolist()])


class OnnxSize(nn.Module):
    """Size-1/13/19: the number of elements of the input as an int64 scalar."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tensor(x.numel(), dtype=torch.int64, device=x.device)


class OnnxSplitEven(nn.Module):
    """Split-18 with the ``num_outputs`` attribute and no ``split`` input.

    ONNX 18: chunks of size ``ceil(len / num_outputs)`` along ``axis``; the last one is smaller
    when the length is not divisible. Raises when that does not give ``num_outputs`` chunks
    (e.g. length 5 in 4 outputs), which the ONNX definition leaves undefined.
    """

    def __init__(self, num_outputs: int, axis: int = 0) -> None:
        super().__init__()
        self.num_outputs = int(num_outputs)
        self.axis = int(axis)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        length = x.shape[self.axis]
        chunks = torch.split(x, math.ceil(length / self.num_outputs), dim=self.axis)
        if len(chunks) != self.num_outputs:
            raise RuntimeError(
                f"Split-18: cannot split length {length} into {self.num_outputs} outputs of ceil size"
            )
        return tuple(chunks)


class OnnxPadAxes(nn.Module):
    """Pad-18/19 with an ``axes`` input and/or ``mode='wrap'`` (torch ``circular``).

    Semantics: ``pads`` is ``[begin_1..begin_k, end_1..end_k]`` for the listed ``axes`` (all axes
    when absent; negative axes count from the end); modes constant/reflect/edge/wrap. torch's
    non-constant modes only pad trailing spatial dimensions, so batch/channel pads raise there.
    """

    def __init__(self, mode: str = "constant") -> None:
        super().__init__()
        if mode not in _PAD_MODES:
            raise NotImplementedError(f"Pad mode {mode!r} is not defined by ONNX")
        self.mode = _PAD_MODES[mode]

    def forward(
        self,
        x: torch.Tensor,
        pads: torch.Tensor,
        constant_value: torch.Tensor | None = None,
        axes: torch.Tensor | None = None,
    ) -> torch.Tensor:
        rank = x.dim()
        pad_list = [int(p) for p in pads.tolist()]
        axis_list = [int(a) % rank for a in axes.tolist()] if axes is not None else list(range(rank))
        if len(pad_list) != 2 * len(axis_list):
            raise RuntimeError(f"Pad: {len(pad_list)} pads for {len(axis_list)} axes")
        begin = dict.fromkeys(range(rank), 0)
        end = dict.fromkeys(range(rank), 0)
        for i, axis in enumerate(axis_list):
            begin[axis] = pad_list[i]
            end[axis] = pad_list[i + len(axis_list)]
        torch_pads: list[int] = []
        for axis in reversed(range(rank)):  # torch wants (last_begin, last_end, prev_begin, ...)
            torch_pads += [begin[axis], end[axis]]
        if self.mode != "constant":
            spatial = 2 * max(rank - 2, 1)
            while len(torch_pads) > spatial and torch_pads[-2:] == [0, 0]:
                torch_pads = torch_pads[:-2]
            if len(torch_pads) > spatial:
                raise NotImplementedError(f"torch {self.mode} padding cannot pad batch/channel dims")
            return F.pad(x, torch_pads, mode=self.mode)
        value = float(constant_value.item()) if constant_value is not None and constant_value.numel() else 0.0
        return F.pad(x, torch_pads, mode="constant", value=value)
