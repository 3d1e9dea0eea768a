"""``compute_bounds``: the public entry point of the LiRPA engine."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from robaudit.errors import ParameterError

from .alpha_crown import AlphaOptions, alpha_crown_bounds
from .crown import crown_bounds
from .graph import Graph, trace
from .ibp import ibp_bounds
from .method import Method
from .perturbation import Perturbation


def parse_norm(norm: float | str) -> float:
    """``inf``/``"inf"``/``"linf"`` -> ``math.inf``; ``2``/``"2"``/``"l2"`` -> ``2.0``."""
    key = str(norm).strip().lower().lstrip("lo")
    if key in ("inf", "infinity"):
        return math.inf
    if key in ("2", "2.0"):
        return 2.0
    raise ParameterError(f"unsupported norm {norm!r}; use 'inf' (L-infinity) or 2 (L2)")


BACKENDS = ("native", "auto_lirpa")


def validate_inputs(x: torch.Tensor, eps: float | torch.Tensor) -> tuple[torch.Tensor, float]:
    """``(x detached, eps as a float)``, or ParameterError for a non-float ``x`` or a tensor ``eps``."""
    if isinstance(eps, torch.Tensor):
        if eps.numel() != 1:
            raise ParameterError("eps must be one number; bound each radius in its own call")
        eps = float(eps)
    if not isinstance(x, torch.Tensor) or x.dim() < 2 or not x.is_floating_point():
        raise ParameterError("x must be a floating-point tensor (batch, *input_shape)")
    return x.detach(), float(eps)


def compute_bounds(module: nn.Module, x: torch.Tensor, eps: float, *, norm: float | str = math.inf,
                   method: str | Method = "crown", C: torch.Tensor | None = None,
                   x_min: float | None = 0.0, x_max: float | None = 1.0,
                   options: dict[str, Any] | None = None, graph: Graph | None = None,
                   backend: str = "native") -> tuple[torch.Tensor, torch.Tensor]:
    """Sound bounds ``lb <= C[b] @ module(x') <= ub`` for every ``x'`` in the eps-ball around ``x[b]``.

    Threat model: ``||x' - x[b]||_p <= eps`` with ``p = inf`` (intersected with the pixel box
    ``[x_min, x_max]``; ``None`` for both disables the box) or ``p = 2`` (the box is ignored:
    the bound holds on the whole ball, sound but looser). Computed in ``x.dtype``.

    Paper: Xu et al., "Automatic Perturbation Analysis for Scalable Certified Robustness and
    Beyond", NeurIPS 2020 (auto_LiRPA); alpha-CROWN: Xu et al., ICLR 2021.

    Args:
        module: eval-mode network mapping ``x`` to logits ``(B, K)``, traceable by torch.fx.
        x: the centres, ``(B, *input_shape)``.
        eps: the radius (pixel units).
        norm: ``inf`` or ``2``.
        method: ``"ibp"``, ``"crown"``, ``"crown-ibp"`` or ``"alpha-crown"`` (any case; also
            auto_LiRPA's names ``"IBP"``, ``"CROWN"``, ``"alpha-CROWN"``, ``"CROWN-Optimized"``).
        C: spec matrix ``(B, S, K)``; None bounds the logits themselves.
        x_min, x_max: the valid pixel range (L-inf only).
        options: alpha-CROWN settings (:class:`AlphaOptions`: ``iterations``, ``lr``, ``lr_decay``,
            ``early_stop_patience``; auto_LiRPA's ``optimize_bound_args`` dict is accepted) and
            ``max_elements`` (memory cap of one backward pass, in numbers, all methods).
        graph: a graph already traced from ``module`` (skips tracing; native backend only).
        backend: ``"native"`` (this engine) or ``"auto_lirpa"`` (delegate to an installed
            auto_LiRPA, see :mod:`.auto_lirpa_backend`; ``graph`` is then unused).

    Returns:
        ``(lb, ub)``, each ``(B, S)`` (``(B, K)`` without ``C``), detached.

    Raises:
        UnsupportedOperatorError: the network has an operator without a relaxation here.
        ParameterError: invalid eps, norm, method, C, options or backend (also when
            ``backend="auto_lirpa"`` and auto_LiRPA does not import; the message names the fix).
    """
    if backend not in BACKENDS:
        raise ParameterError(f"unknown LiRPA backend {backend!r}; use one of {', '.join(map(repr, BACKENDS))}")
    if backend == "auto_lirpa":
        from .auto_lirpa_backend import compute_bounds_auto_lirpa

        return compute_bounds_auto_lirpa(module, x, eps, norm=norm, method=method, C=C, x_min=x_min,
                                         x_max=x_max, options=options)
    m = Method.parse(method)
    p = parse_norm(norm)
    x, eps = validate_inputs(x, eps)
    opts = AlphaOptions.parse(options)
    ptb = Perturbation(x, eps, p, x_min, x_max)
    g = graph if graph is not None else trace(module, x)
    n_out = g.nodes[g.output].shape[0]
    spec = spec_matrix(C, x, n_out)
    if m is Method.ALPHA_CROWN:
        lb, ub = alpha_crown_bounds(g, ptb, spec, opts)
    else:
        with torch.no_grad():
            if m is Method.IBP:
                lb, ub = ibp_bounds(g, ptb, spec)
            else:
                lb, ub = crown_bounds(g, ptb, spec, ibp_intermediate=m is Method.CROWN_IBP,
                                      max_elements=opts.max_elements)
    return lb.detach(), ub.detach()


def spec_matrix(C: torch.Tensor | None, x: torch.Tensor, n_out: int) -> torch.Tensor:
    """The specification ``(B, S, K)`` on ``x``'s device and dtype: ``C``, or the identity (bound the logits)."""
    batch = x.shape[0]
    if C is None:
        return torch.eye(n_out, dtype=x.dtype, device=x.device).expand(batch, n_out, n_out)
    if C.dim() != 3 or C.shape[0] != batch or C.shape[2] != n_out:
        raise ParameterError(f"C must have shape (batch={batch}, S, classes={n_out}), got {tuple(C.shape)}")
    return C.detach().to(dtype=x.dtype, device=x.device)
