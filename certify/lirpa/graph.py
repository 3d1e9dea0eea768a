"""Trace an ``nn.Module`` with torch.fx into a small DAG of bound-propagation ops.

The network is traced symbolically (``torch.fx``), then walked once on the concrete input
``x``: every tensor that depends on the input becomes a :class:`Node` holding an
:class:`~robaudit.certify.lirpa.ops.base.Op`; everything else (parameters, sizes, constants)
is evaluated and folded into the ops. Anything without a sound relaxation raises
:class:`UnsupportedOperatorError` naming the operator and the node.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx
from torch import nn

from robaudit.model import Normalize

from .convert import convert_call
from .errors import UnsupportedOperatorError
from .ops.base import ActivationOp, Op, OpKind


@dataclass
class Node:
    """One traced tensor. ``op`` is None for the input; ``shape`` excludes the batch axis."""

    index: int
    name: str
    op: Op | None
    inputs: tuple[int, ...]
    shape: tuple[int, ...]
    users: list[int] = field(default_factory=list)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass
class Graph:
    """Nodes in topological order; node 0 is the input, ``output`` the logits."""

    nodes: list[Node]
    output: int

    def __post_init__(self) -> None:
        for node in self.nodes:
            for i in node.inputs:
                self.nodes[i].users.append(node.index)
        self.depth = self._affine_depth()

    def ancestors(self, index: int) -> list[int]:
        """Indices of ``index`` and every node it depends on, in topological order."""
        seen, stack = {index}, [index]
        while stack:
            for i in self.nodes[stack.pop()].inputs:
                if i not in seen:
                    seen.add(i)
                    stack.append(i)
        return sorted(seen)

    @property
    def preactivations(self) -> list[int]:
        """Nodes feeding an activation: the ones that need intermediate bounds."""
        return sorted({n.inputs[0] for n in self.nodes if isinstance(n.op, ActivationOp)})

    def activations(self) -> list[Node]:
        return [n for n in self.nodes if isinstance(n.op, ActivationOp)]

    def _affine_depth(self) -> list[float]:
        """Mixing affine ops between the input and each node (inf past an activation or merge).

        A node of depth <= 1 is an affine function of the input whose interval bound is exact.
        """
        depth: list[float] = []
        for node in self.nodes:
            if node.op is None:
                depth.append(0)
            elif node.op.kind in (OpKind.SHAPE, OpKind.DIAGONAL):
                depth.append(depth[node.inputs[0]])
            elif node.op.kind == OpKind.AFFINE and len(node.inputs) == 1:
                depth.append(depth[node.inputs[0]] + 1)
            else:
                depth.append(math.inf)
        return depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values: list[torch.Tensor] = []
        for node in self.nodes:
            values.append(x if node.op is None else node.op.forward(*(values[i] for i in node.inputs)))
        return values[self.output]


class _Tracer(torch.fx.Tracer):
    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if isinstance(m, Normalize):
            return True
        return super().is_leaf_module(m, module_qualified_name)


def trace(module: nn.Module, x: torch.Tensor) -> Graph:
    """The op graph of ``module`` evaluated at the batch ``x`` (parameters cast to ``x.dtype``
    and moved to ``x.device``; the module itself is run on its own device).

    Raises:
        UnsupportedOperatorError: an operator has no relaxation here, or tracing failed.
    """
    if any(m.training for m in module.modules()):
        raise UnsupportedOperatorError(
            f"{type(module).__name__} is in training mode; call module.eval() before bounding it "
            "(BatchNorm and Dropout must use their inference behaviour)"
        )
    try:
        fx_graph = _Tracer().trace(module)
    except Exception as err:  # noqa: BLE001 - any tracing failure is reported the same way
        raise UnsupportedOperatorError(
            f"cannot trace {type(module).__name__} with torch.fx ({type(err).__name__}: {err}); "
            "LiRPA needs a network without data-dependent Python control flow"
        ) from err
    root = torch.fx.GraphModule(module, fx_graph)
    # The concrete walk runs in the module's own dtype and on its device; ops are built in
    # x.dtype on x.device (where the bounds are computed).
    floats = [t for t in (*module.parameters(), *module.buffers()) if t.is_floating_point()]
    x_call = x.detach().to(device=floats[0].device if floats else x.device,
                           dtype=floats[0].dtype if floats else x.dtype)
    nodes: list[Node] = []
    env: dict[str, Any] = {}  # fx name -> ("node", index, value) or ("const", value)
    output: int | None = None
    with torch.no_grad():
        for fx_node in fx_graph.nodes:
            if fx_node.op == "placeholder":
                if nodes:
                    raise UnsupportedOperatorError(
                        f"the network takes several inputs (node {fx_node.name}); LiRPA bounds one image input"
                    )
                nodes.append(Node(0, "input", None, (), tuple(x.shape[1:])))
                env[fx_node.name] = ("node", 0, x_call)
            elif fx_node.op == "get_attr":
                env[fx_node.name] = ("const", _fetch_attr(root, fx_node.target))
            elif fx_node.op == "output":
                result = _resolve(fx_node.args[0], env)
                if not (isinstance(result, tuple) and len(result) == 3 and result[0] == "node"):
                    raise UnsupportedOperatorError(
                        "the network output must be a single tensor that depends on the input "
                        f"(got {type(fx_node.args[0]).__name__})"
                    )
                output = result[1]
            else:
                env[fx_node.name] = convert_call(root, fx_node, env, nodes, x.dtype, x.device)
    assert output is not None
    out_shape = nodes[output].shape
    if len(out_shape) != 1:
        raise UnsupportedOperatorError(f"the network output must be (batch, classes), got (batch, *{out_shape})")
    return Graph(nodes, output)


def _fetch_attr(root: nn.Module, target: str) -> Any:
    obj: Any = root
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _resolve(arg: Any, env: dict[str, Any]) -> Any:
    if isinstance(arg, torch.fx.Node):
        return env[arg.name]
    return arg
