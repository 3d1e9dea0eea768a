"""Interval bound propagation (IBP): boxes pushed forward layer by layer.

Guarantee: each returned interval contains the node's value for every input in the set.
An affine layer maps a box by its center and ``|W|`` times its radius (Gowal et al. 2018;
auto_LiRPA ``interval_propagate``). Under L2 the first mixing affine layer is bounded
exactly (``W x0 + b +- eps ||W_i||_2``); with a spec ``C`` the spec is folded into a final
Linear layer (``C W``, ``C b``) before the interval step, as auto_LiRPA does.
"""

from __future__ import annotations

import torch

from .backward import backward_bound, node_bounds
from .graph import Graph, Node
from .ops.base import Interval, OpKind
from .ops.linear import LinearOp
from .perturbation import Perturbation


def ibp_step(graph: Graph, node: Node, intervals: dict[int, Interval], ptb: Perturbation,
             max_elements: int = 2**24) -> Interval:
    """The interval of ``node`` from its inputs' intervals (exact for the first L2 mixing layer)."""
    assert node.op is not None
    if (not ptb.is_linf and node.op.kind == OpKind.AFFINE and graph.depth[node.index] == 1
            and graph.depth[node.inputs[0]] == 0):
        batch = ptb.x0.shape[0]
        rows = torch.arange(node.numel, device=ptb.x0.device).expand(batch, -1)
        return node_bounds(graph, node.index, rows, {}, ptb, max_elements=max_elements)
    return node.op.ibp(*(intervals[i] for i in node.inputs))


def interval_pass(graph: Graph, ptb: Perturbation, upto: int | None = None) -> dict[int, Interval]:
    """IBP intervals of every node before ``upto`` (default: all nodes but the output)."""
    stop = graph.output if upto is None else upto
    intervals: dict[int, Interval] = {0: ptb.box()}
    for node in graph.nodes[1:stop]:
        intervals[node.index] = ibp_step(graph, node, intervals, ptb)
    return intervals


def ibp_bounds(graph: Graph, ptb: Perturbation, C: torch.Tensor) -> Interval:
    """IBP bounds ``(B, S)`` of ``C[b] @ logits``."""
    out = graph.nodes[graph.output]
    if graph.depth[graph.output] <= 1:  # an affine network: bound C.f exactly
        lb = backward_bound(graph, graph.output, C, {}, ptb)
        return lb, -backward_bound(graph, graph.output, -C, {}, ptb)
    intervals = interval_pass(graph, ptb)
    lo, u = intervals[out.inputs[0]]
    if isinstance(out.op, LinearOp) and len(out.shape) == 1:
        W, b = out.op.fold_spec(C)
        center = torch.bmm(W, ((u + lo) / 2).unsqueeze(-1)).squeeze(-1) + b
        radius = torch.bmm(W.abs(), ((u - lo) / 2).unsqueeze(-1)).squeeze(-1)
        return center - radius, center + radius
    assert out.op is not None
    lo, hi = out.op.ibp(*(intervals[i] for i in out.inputs))
    pos, neg = C.clamp(min=0), C.clamp(max=0)
    lb = (pos @ lo.unsqueeze(-1) + neg @ hi.unsqueeze(-1)).squeeze(-1)
    ub = (pos @ hi.unsqueeze(-1) + neg @ lo.unsqueeze(-1)).squeeze(-1)
    return lb, ub
