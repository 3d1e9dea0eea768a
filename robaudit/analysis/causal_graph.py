"""Class-specific causal explanatory graph over chosen hidden layers (METHODS §7.2 steps 1-3).

Guarantee: deterministic given the images, the model and the parameters (exact
interventions, ties broken by channel index); every node weight is an ACE and every edge
weight a path-specific effect computed by :mod:`robaudit.analysis.causal`.

Paper: Ahmad, Bereux, Baret, Hashemi, Lecue, "Causal Analysis for Robust Interpretability of
Neural Networks" (arXiv 2305.08950); the selection rules are [robaudit choice]: per layer,
the top-k channels with positive ACE; edges between consecutive chosen layers with
PE > 0 and PE >= edge_threshold * (largest PE of that layer pair); last-layer nodes link to
the class node with weight ACE.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from robaudit import figures
from robaudit.analysis.causal import channel_effects, path_effects
from robaudit.errors import ParameterError


@dataclass(frozen=True)
class CausalGraph:
    """Kept nodes per layer ``(channel, ACE)`` and edges ``(layer index, src, dst, PE)`` to the next layer."""

    class_index: int
    layers: tuple[str, ...]
    nodes: tuple[tuple[tuple[int, float], ...], ...]
    edges: tuple[tuple[int, int, int, float], ...]

    def to_json(self) -> dict[str, Any]:
        return {"class_index": self.class_index, "layers": list(self.layers),
                "nodes": [[list(n) for n in layer] for layer in self.nodes],
                "edges": [list(e) for e in self.edges]}

    def to_figure(self, title: str, class_name: str | None = None) -> dict[str, Any]:
        """The layered DAG as a :func:`robaudit.figures.graph` spec (the class node is the last layer)."""
        layers = [[{"id": f"{li}:{c}", "label": f"{name} #{c}", "weight": float(a)} for c, a in nodes]
                  for li, (name, nodes) in enumerate(zip(self.layers, self.nodes))]
        out_id = f"class:{self.class_index}"
        layers.append([{"id": out_id, "label": f"class {class_name or self.class_index}", "weight": 1.0}])
        edges = [{"src": f"{li}:{u}", "dst": f"{li + 1}:{v}", "weight": float(pe)} for li, u, v, pe in self.edges]
        last = len(self.layers) - 1
        edges += [{"src": f"{last}:{c}", "dst": out_id, "weight": float(a)} for c, a in self.nodes[last]]
        return figures.graph(title, layers, edges, caption="node weight = ACE (logit), edge weight = path effect")


def top_channels(ace: torch.Tensor, k: int) -> list[int]:
    """Indices of the (at most) k largest positive effects, ties broken by channel index."""
    order = torch.sort(-ace, stable=True).indices.tolist()
    return [c for c in order[:k] if float(ace[c]) > 0]


def build_causal_graph(module: nn.Module, layers: Sequence[str], x: torch.Tensor, y: int, *, k: int = 16,
                       baseline: str | Sequence[torch.Tensor] = "mean", space: str = "logit", edge_threshold: float = 0.05,
                       max_batch: int = 1024, effects: Sequence[torch.Tensor] | None = None) -> CausalGraph:
    """The causal graph of class ``y`` on images ``x`` (typically clean-correct images of class y).

    ``baseline`` is ``"mean"``/``"zero"`` or one explicit baseline tensor per layer.
    ``effects`` optionally supplies the per-layer ACE vectors already computed with the
    same images, baseline and space (they are not recomputed).

    Raises:
        ParameterError: no layers, k < 1, edge_threshold outside [0, 1], or as channel_effects.
    """
    if not layers or k < 1 or not 0 <= edge_threshold <= 1:
        raise ParameterError("need at least one layer, k >= 1 and 0 <= edge_threshold <= 1")
    kept: list[list[int]] = []
    nodes = []
    bases = [baseline] * len(layers) if isinstance(baseline, str) else list(baseline)
    if len(bases) != len(layers):
        raise ParameterError(f"need one baseline per layer ({len(layers)}), got {len(bases)}")
    if effects is not None and len(effects) != len(layers):
        raise ParameterError(f"effects must hold one ACE vector per layer ({len(layers)}), got {len(effects)}")
    for li, layer in enumerate(layers):
        ace = effects[li] if effects is not None else channel_effects(module, layer, x, y, baseline=bases[li],
                                                                      space=space, max_batch=max_batch)
        chans = top_channels(ace, k)
        kept.append(chans)
        nodes.append(tuple((c, round(float(ace[c]), 6)) for c in chans))
    edges = []
    for li in range(len(layers) - 1):
        if not kept[li] or not kept[li + 1]:
            continue
        pe = path_effects(module, layers[li], layers[li + 1], x, y, kept[li], kept[li + 1], baseline=bases[li],
                          space=space, max_batch=max_batch)
        top = float(pe.max())
        for i, u in enumerate(kept[li]):
            for j, v in enumerate(kept[li + 1]):
                val = float(pe[i, j])
                if val > 0 and val >= edge_threshold * top:
                    edges.append((li, u, v, round(val, 6)))
    return CausalGraph(int(y), tuple(str(n) for n in layers), tuple(nodes), tuple(edges))
