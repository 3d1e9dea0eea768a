"""CROWN and CROWN-IBP: backward linear relaxation with per-layer intermediate bounds.

Guarantee: ``lb[b, s] <= C[b, s] . f(x)`` for every ``x`` in the perturbation set.

* CROWN (Zhang et al., NeurIPS 2018; auto_LiRPA ``method='backward'``): every activation
  input gets its bounds from its own backward pass to the input. Only neurons that the
  interval bound does not already prove stable are bounded (all neurons for Sigmoid/Tanh),
  and the CROWN bounds are intersected with the interval bounds; nodes that are an affine
  function of the input through at most one mixing layer are bounded exactly by IBP.
* CROWN-IBP (Zhang et al., ICLR 2020): intermediate bounds by IBP, one backward pass for ``C``.

Optional ``alphas`` (alpha-CROWN) replace the ReLU lower slopes; ``rows`` fixes which neurons
of each intermediate node are bounded and ``reference`` bounds are intersected (both used by
the optimiser so the variables keep their meaning across iterations).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .backward import backward_bound, node_bounds, plan_rows
from .graph import Graph
from .ibp import ibp_step
from .ops.activations import LeakyReLUOp
from .ops.base import ActivationOp, Interval
from .perturbation import Perturbation

AllAlphas = dict[int, dict[int, torch.Tensor]]  # start node -> activation node -> slopes (B, S, *shape)


@dataclass
class CrownResult:
    lower: torch.Tensor  #: (B, S) lower bounds of the spec rows
    bounds: dict[int, Interval]  #: pre-activation bounds used
    rows: dict[int, torch.Tensor]  #: neurons bounded by a backward pass, per intermediate node
    fixed: dict[int, Interval]  #: intervals of nodes affine in the input (depth <= 1): exact, reusable


def needs_rows(graph: Graph, index: int, interval: Interval) -> torch.Tensor:
    """(B, N) mask of neurons of pre-activation ``index`` that need a backward pass."""
    lo, u = interval
    users = [graph.nodes[i].op for i in graph.nodes[index].users]
    acts = [op for op in users if isinstance(op, ActivationOp)]
    if all(isinstance(op, LeakyReLUOp) for op in acts):
        mask = (lo < 0) & (u > 0)
    else:
        mask = torch.ones_like(lo, dtype=torch.bool)
    return mask.reshape(mask.shape[0], -1)


def crown(graph: Graph, ptb: Perturbation, C: torch.Tensor, *, ibp_intermediate: bool = False,
          alphas: AllAlphas | None = None, rows: dict[int, torch.Tensor] | None = None,
          reference: dict[int, Interval] | None = None, fixed: dict[int, Interval] | None = None,
          max_elements: int = 2**24) -> CrownResult:
    """Lower bounds of ``C[b] @ f(x)``; see the module docstring.

    ``fixed`` intervals (from an earlier result on the same input set) are reused as they are.
    """
    intervals: dict[int, Interval] = {0: ptb.box()}
    exact: dict[int, Interval] = {}
    bounds: dict[int, Interval] = {}
    used_rows: dict[int, torch.Tensor] = {}
    preacts = set(graph.preactivations)
    for node in graph.nodes[1 : graph.output]:
        if fixed is not None and node.index in fixed:
            interval = fixed[node.index]
        else:
            interval = ibp_step(graph, node, intervals, ptb, max_elements)
        if graph.depth[node.index] <= 1:
            exact[node.index] = interval
        if node.index in preacts:
            if reference is not None and node.index in reference:
                ref_l, ref_u = reference[node.index]
                interval = (torch.maximum(interval[0], ref_l), torch.minimum(interval[1], ref_u))
            if not ibp_intermediate and graph.depth[node.index] > 1:
                r = rows[node.index] if rows is not None else plan_rows(needs_rows(graph, node.index, interval))
                used_rows[node.index] = r
                if r.shape[1]:
                    start_alphas = alphas.get(node.index) if alphas else None
                    lo, u = node_bounds(graph, node.index, r, bounds, ptb, alphas=start_alphas,
                                       max_elements=max_elements)
                    interval = (torch.maximum(lo, interval[0]), torch.minimum(u, interval[1]))
            bounds[node.index] = interval
        intervals[node.index] = interval
    final_alphas = alphas.get(graph.output) if alphas else None
    lower = backward_bound(graph, graph.output, C, bounds, ptb, final_alphas)
    return CrownResult(lower, bounds, used_rows, exact)


def estimate_cost(graph: Graph, ptb: Perturbation, n_spec: int, *, ibp_intermediate: bool = False) -> float:
    """Numbers written into ``A`` matrices by one CROWN (or CROWN-IBP) run: a time/memory proxy.

    Uses the rows the interval bounds leave unstable (an upper estimate of CROWN's), so it is
    cheap (one IBP pass) and lets callers fall back to CROWN-IBP or IBP before committing.
    """
    from .ibp import interval_pass

    batch = ptb.x0.shape[0]
    with torch.no_grad():
        intervals = interval_pass(graph, ptb)
    total = 0.0
    if not ibp_intermediate:
        for index in graph.preactivations:
            if graph.depth[index] <= 1:
                continue
            rows = int(needs_rows(graph, index, intervals[index]).sum(1).max())
            total += 2.0 * rows * batch * sum(graph.nodes[i].numel for i in graph.ancestors(index))
    total += 2.0 * n_spec * batch * sum(graph.nodes[i].numel for i in graph.ancestors(graph.output))
    return total


def crown_bounds(graph: Graph, ptb: Perturbation, C: torch.Tensor, *, ibp_intermediate: bool = False,
                 max_elements: int = 2**24) -> Interval:
    """``(lb, ub)`` of ``C[b] @ f(x)`` from one pass with the stacked spec ``[C; -C]``."""
    s = C.shape[1]
    res = crown(graph, ptb, torch.cat([C, -C], 1), ibp_intermediate=ibp_intermediate, max_elements=max_elements)
    return res.lower[:, :s], -res.lower[:, s:]
