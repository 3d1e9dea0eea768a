"""alpha-CROWN: CROWN with the ReLU lower slopes optimised by projected gradient ascent.

Guarantee: any slope in ``[slope, 1]`` gives a sound relaxation, so every iterate is a
sound bound; the best value per element is kept and the first iterate is CROWN itself, so
the result is never looser than CROWN.

Paper: Xu et al., "Fast and Complete", ICLR 2021 (auto_LiRPA ``method='CROWN-Optimized'``).
As there: one slope per (activation neuron, start node, spec row, batch element), start
nodes including every intermediate pre-activation layer; intermediate bounds are recomputed
from their own slopes at every iteration (and intersected with the CROWN ones); lower and
upper bounds are optimised in two separate runs (loss ``-sum(lb)``, ``+sum(ub)``); Adam with
ExponentialLR decay; early stop after ``early_stop_patience`` iterations without improvement.

The slopes are used as they are in the relaxation and projected onto ``[slope, 1]`` *after*
each optimiser step through ``.data``: clamping inside the forward pass would freeze slopes
initialised exactly at 0 or 1 (``torch.clamp`` has zero gradient at its bounds since
torch 2.14). Sigmoid/Tanh keep their CROWN relaxation (no tangent-point optimisation).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch

from robaudit.errors import ParameterError

from .backward import plan_rows
from .crown import AllAlphas, CrownResult, crown, needs_rows
from .graph import Graph
from .ops.activations import LeakyReLUOp
from .ops.base import Interval
from .perturbation import Perturbation

_ALIASES = {"iteration": "iterations", "lr_alpha": "lr"}
_ACCEPTED_DEFAULTS = {"optimizer": "adam", "keep_best": True, "init_alpha": True, "loss_reduction": "sum"}
_IGNORED = {"fix_interm_bounds", "start_save_best", "seed", "enable_beta_crown"}


@dataclass(frozen=True)
class AlphaOptions:
    """Optimiser settings; defaults follow auto_LiRPA's ``default_optimize_bound_args``."""

    iterations: int = 20
    lr: float = 0.5
    lr_decay: float = 0.98
    early_stop_patience: int = 10
    max_elements: int = 2**24

    @classmethod
    def parse(cls, options: dict[str, Any] | None) -> AlphaOptions:
        """From our names or auto_LiRPA's (``{"optimize_bound_args": {"iteration": 50, "lr_alpha": 0.1}}``)."""
        flat: dict[str, Any] = {}
        for key, value in (options or {}).items():
            if key == "optimize_bound_args":
                flat.update(value)
            else:
                flat[key] = value
        known = {f.name for f in fields(cls)}
        kwargs: dict[str, Any] = {}
        for key, value in flat.items():
            name = _ALIASES.get(key, key)
            if name in known:
                kwargs[name] = value
            elif name in _ACCEPTED_DEFAULTS:
                if value != _ACCEPTED_DEFAULTS[name]:
                    raise ParameterError(f"option {key}={value!r} is not supported; only {_ACCEPTED_DEFAULTS[name]!r}")
            elif name not in _IGNORED:
                raise ParameterError(f"unknown LiRPA option {key!r}; known: {', '.join(sorted(known))}")
        opts = cls(**kwargs)
        if opts.iterations < 0 or opts.lr <= 0 or not 0 < opts.lr_decay <= 1 or opts.max_elements < 1:
            raise ParameterError(f"invalid alpha-CROWN options {opts}: need iterations >= 0, lr > 0, "
                                 "0 < lr_decay <= 1, max_elements >= 1")
        return opts


def _init_alphas(graph: Graph, init: CrownResult, n_spec: int) -> AllAlphas:
    starts = {i: 2 * r.shape[1] for i, r in init.rows.items() if r.shape[1]}
    starts[graph.output] = n_spec
    alphas: AllAlphas = {}
    for start, n_rows in starts.items():
        ancestors = set(graph.ancestors(start))
        for act in graph.activations():
            if act.index not in ancestors or act.index == start or not isinstance(act.op, LeakyReLUOp):
                continue
            lo, u = init.bounds[act.inputs[0]]
            if not bool(act.op.unstable(lo, u).any()):
                continue
            a0 = act.op.init_alpha(lo, u).unsqueeze(1)
            a0 = a0.expand(a0.shape[0], n_rows, *a0.shape[2:]).clone()
            alphas.setdefault(start, {})[act.index] = a0.requires_grad_(True)
    return alphas


def _op(graph: Graph, index: int) -> LeakyReLUOp:
    op = graph.nodes[index].op
    assert isinstance(op, LeakyReLUOp)
    return op


def optimize_lower(graph: Graph, ptb: Perturbation, C: torch.Tensor, opts: AlphaOptions) -> torch.Tensor:
    """The best lower bound ``(B, S)`` of ``C[b] @ f(x)`` found by the optimiser."""
    with torch.no_grad():
        init = crown(graph, ptb, C, max_elements=opts.max_elements)
    # Bounds only tighten from here (intersected with CROWN's), so neurons CROWN proves stable
    # stay stable: only the rows CROWN leaves unstable need a backward pass and slopes.
    init.rows = {i: plan_rows(needs_rows(graph, i, init.bounds[i])) for i in init.rows}
    alphas = _init_alphas(graph, init, C.shape[1])
    best = init.lower.clone()
    params = [a for group in alphas.values() for a in group.values()]
    if not params or opts.iterations == 0:
        return best
    ranges = [(a, _op(graph, i).alpha_bounds()) for group in alphas.values() for i, a in group.items()]
    optimizer = torch.optim.Adam(params, lr=opts.lr)
    schedule = torch.optim.lr_scheduler.ExponentialLR(optimizer, opts.lr_decay)
    best_total, stall = float(best.sum()), 0
    reference: dict[int, Interval] = init.bounds
    with torch.enable_grad():
        for _ in range(opts.iterations):
            lower = crown(graph, ptb, C, alphas=alphas, rows=init.rows, reference=reference, fixed=init.fixed,
                          max_elements=opts.max_elements).lower
            with torch.no_grad():
                best = torch.maximum(best, lower)
                total = float(lower.sum())
                if total > best_total:
                    best_total, stall = total, 0
                else:
                    stall += 1
            if stall >= opts.early_stop_patience:
                break
            optimizer.zero_grad(set_to_none=True)
            (-lower.sum()).backward()
            optimizer.step()
            schedule.step()
            with torch.no_grad():
                for a, (lo, hi) in ranges:
                    a.data.clamp_(lo, hi)
    return best.detach()


def alpha_crown_bounds(graph: Graph, ptb: Perturbation, C: torch.Tensor, opts: AlphaOptions) -> Interval:
    """``(lb, ub)`` of ``C[b] @ f(x)``: two separate optimisations (``C`` and ``-C``)."""
    lb = optimize_lower(graph, ptb, C, opts)
    ub = -optimize_lower(graph, ptb, -C, opts)
    return lb, ub
