"""The operator contract of the LiRPA graph.

Every node of a traced network holds one :class:`Op`. Shapes exclude the batch dimension.
Linear-relaxation matrices ``A`` have shape ``(B, S, *node_shape)``: ``S`` specification rows
per batch element; a backward step maps ``A`` at an op's output to ``A`` at its inputs plus a
constant ``(B, S)`` bias, so that ``A . out = sum_i A_i . in_i + bias`` exactly (affine ops)
or as a lower bound (relaxed activations).
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch

Interval = tuple[torch.Tensor, torch.Tensor]


class OpKind(str, enum.Enum):
    """How an op changes a box: kept exact (shape, diagonal), mixed (affine), or relaxed."""

    SHAPE = "shape"  #: reshape / identity: a box stays a box
    DIAGONAL = "diagonal"  #: elementwise affine: a box stays a box
    AFFINE = "affine"  #: mixes coordinates (linear, conv, pooling, add)
    ACTIVATION = "activation"  #: elementwise nonlinearity, linearly relaxed


class Op(ABC):
    """One operator. ``in_shapes`` / ``out_shape`` exclude the batch dimension."""

    kind: OpKind = OpKind.AFFINE
    label: str = "op"

    def __init__(self, in_shapes: Sequence[tuple[int, ...]], out_shape: tuple[int, ...]) -> None:
        self.in_shapes = [tuple(s) for s in in_shapes]
        self.out_shape = tuple(out_shape)

    @abstractmethod
    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        """The op on concrete batched inputs."""

    @abstractmethod
    def ibp(self, *intervals: Interval) -> Interval:
        """Elementwise interval of the output given input intervals."""


class AffineOp(Op):
    """``out = sum_i L_i(in_i) + c`` with linear maps ``L_i``."""

    @abstractmethod
    def backward(self, A: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """``A`` (B, S, *out) -> per-input ``A_i`` (B, S, *in_i) and bias (B, S)."""

    def row_norm_sq(self) -> torch.Tensor | None:
        """Squared L2 norm of each output's row of the linear map (single-input ops), if cheap."""
        return None


class ActivationOp(Op):
    """An elementwise activation with a linear relaxation on ``[l, u]``."""

    kind = OpKind.ACTIVATION
    optimizable: bool = False  #: has a free lower slope (alpha-CROWN)

    @abstractmethod
    def relax(self, lo: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(lw, lb, uw, ub)`` with ``lw x + lb <= f(x) <= uw x + ub`` on ``[l, u]``."""

    def alpha_bounds(self) -> tuple[float, float]:
        """Valid range of the free lower slope."""
        raise NotImplementedError

    def unstable(self, lo: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """Neurons whose relaxation is not exact on ``[l, u]``."""
        return torch.ones_like(lo, dtype=torch.bool)

    def ibp(self, *intervals: Interval) -> Interval:
        lo, u = intervals[0]
        return self.forward(lo), self.forward(u)

    def backward_relaxed(self, A: torch.Tensor, lo: torch.Tensor, u: torch.Tensor,
                         alpha: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Lower-bound step: positive entries of ``A`` take the lower line, negative the upper.

        ``alpha`` (B, S, *shape), when given, replaces the lower slope of unstable neurons.
        ``torch.where`` (not ``clamp``) selects the side so gradients reach every alpha.
        """
        lw, lb, uw, ub = (t.unsqueeze(1) for t in self.relax(lo, u))
        if alpha is not None:
            lw = torch.where(self.unstable(lo, u).unsqueeze(1), alpha, lw)
        pos = A >= 0
        A_in = A * torch.where(pos, lw, uw)
        bias = (A * torch.where(pos, lb, ub)).flatten(2).sum(-1)
        return A_in, bias
