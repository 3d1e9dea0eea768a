"""The CROWN backward pass: a linear lower bound of ``A . node`` concretised over the input set.

Walks the ancestors of a start node in reverse topological order, summing the ``A``
matrices that reach a node along every path (residual connections) before stepping through
it, so the input is concretised once (Zhang et al. 2018; Xu et al. 2020, Alg. 1).
Upper bounds are lower bounds of ``-A``.
"""

from __future__ import annotations

import math

import torch

from .graph import Graph
from .ops.base import ActivationOp, AffineOp, Interval
from .perturbation import Perturbation

Alphas = dict[int, torch.Tensor]  # activation node -> lower slopes (B, S, *shape)


def backward_bound(graph: Graph, start: int, A: torch.Tensor, pre_bounds: dict[int, Interval],
                   ptb: Perturbation, alphas: Alphas | None = None) -> torch.Tensor:
    """Lower bound ``(B, S)`` of ``A[b, s] . node_start(x)`` over the perturbation set."""
    pending: dict[int, torch.Tensor] = {start: A}
    bias = A.new_zeros(A.shape[:2])
    for index in reversed(graph.ancestors(start)):
        A_here = pending.pop(index, None)
        if A_here is None:
            continue
        node = graph.nodes[index]
        if node.op is None:
            bias = bias + ptb.concretize(A_here)
            continue
        if isinstance(node.op, ActivationOp):
            lo, u = pre_bounds[node.inputs[0]]
            alpha = alphas.get(index) if alphas else None
            A_in, b = node.op.backward_relaxed(A_here, lo, u, alpha)
            outs = [A_in]
        else:
            assert isinstance(node.op, AffineOp)
            outs, b = node.op.backward(A_here)
        bias = bias + b
        for i, A_i in zip(node.inputs, outs):
            pending[i] = pending[i] + A_i if i in pending else A_i
    return bias


def plan_rows(mask: torch.Tensor) -> torch.Tensor:
    """Flat neuron indices ``(B, U)`` of the True entries of ``mask`` (B, N); padding = N."""
    n = mask.shape[1]
    counts = mask.sum(1)
    u = int(counts.max()) if mask.numel() else 0
    order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)[:, :u]
    valid = torch.arange(u, device=mask.device).unsqueeze(0) < counts.unsqueeze(1)
    return torch.where(valid, order, torch.full_like(order, n))


def chunk_rows(graph: Graph, index: int, batch: int, max_elements: int) -> int:
    """Rows per backward pass so that no ``A`` exceeds about ``max_elements`` numbers."""
    widest = max(graph.nodes[i].numel for i in graph.ancestors(index))
    return max(1, max_elements // (2 * batch * widest))


def node_bounds(graph: Graph, index: int, rows: torch.Tensor, pre_bounds: dict[int, Interval],
                ptb: Perturbation, *, alphas: Alphas | None = None, max_elements: int = 2**24) -> Interval:
    """CROWN bounds of the neurons ``rows`` (B, U) of node ``index``; others get -inf / +inf.

    ``alphas`` hold slopes for ``2U`` rows: the ``U`` lower-bound rows, then the ``U`` upper rows.
    """
    node = graph.nodes[index]
    batch, n_rows = rows.shape
    n = node.numel
    dtype = ptb.x0.dtype
    chunk = chunk_rows(graph, index, batch, max_elements)
    lows, ups = [], []
    for s in range(0, n_rows, chunk):
        part = rows[:, s : s + chunk]
        c = part.shape[1]
        eye = torch.zeros((batch, c, n + 1), dtype=dtype, device=ptb.x0.device)
        eye.scatter_(2, part.unsqueeze(-1), 1.0)
        eye = eye[..., :n]
        A = torch.cat([eye, -eye], 1).reshape(batch, 2 * c, *node.shape)
        part_alphas = None
        if alphas:
            part_alphas = {k: torch.cat([a[:, s : s + c], a[:, n_rows + s : n_rows + s + c]], 1)
                           for k, a in alphas.items()}
        lb = backward_bound(graph, index, A, pre_bounds, ptb, part_alphas)
        lows.append(lb[:, :c])
        ups.append(-lb[:, c:])
    low = torch.cat(lows, 1) if lows else ptb.x0.new_zeros((batch, 0))
    up = torch.cat(ups, 1) if ups else ptb.x0.new_zeros((batch, 0))
    full_l = torch.full((batch, n + 1), -math.inf, dtype=dtype, device=low.device).scatter(1, rows, low)
    full_u = torch.full((batch, n + 1), math.inf, dtype=dtype, device=low.device).scatter(1, rows, up)
    return full_l[:, :n].reshape(batch, *node.shape), full_u[:, :n].reshape(batch, *node.shape)
