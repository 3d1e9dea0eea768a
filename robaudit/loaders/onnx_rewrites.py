"""Function-preserving rewrites of an ONNX graph before onnx2torch converts it.

Guarantee: every rewrite here leaves the function the graph computes unchanged, exactly (no
numerical change); it only moves the graph into a form onnx2torch 1.5.15's existing converters
accept, where registering a converter cannot help because the key is already taken by
onnx2torch (``add_converter`` refuses to replace a registered key). The input proto is never
modified; onnxruntime keeps running the original graph.
"""

from __future__ import annotations

from typing import Any

__all__ = ["fold_identity_initializers", "prepare_for_onnx2torch", "relax_reshape_allowzero"]


def _copy(model: Any) -> Any:
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out


def fold_identity_initializers(model: Any) -> Any:
    """``Identity(initializer)`` nodes become initializers themselves.

    The TorchScript exporter deduplicates equal weight tensors (e.g. the zero-initialised last
    BatchNorm of every timm ResNet block, folded into its Conv) and recreates the copies with
    Identity nodes; onnx2torch's Conv/Gemm converters read weights only from initializers and
    fail with a KeyError. Identity copies its input, so this is exact. Identity nodes that
    produce a graph output are kept.
    """
    names = {t.name for t in model.graph.initializer}
    outputs = {o.name for o in model.graph.output}

    def foldable(node: Any) -> bool:
        return (
            node.op_type == "Identity" and node.domain in ("", "ai.onnx")
            and node.input[0] in names and node.output[0] not in outputs
        )  # fmt: skip

    if not any(foldable(n) for n in model.graph.node):
        return model
    out = _copy(model)
    by_name = {t.name: t for t in model.graph.initializer}
    keep = []
    for node in out.graph.node:
        if foldable(node):
            tensor = out.graph.initializer.add()
            tensor.CopyFrom(by_name[node.input[0]])
            tensor.name = node.output[0]
        else:
            keep.append(node)
    del out.graph.node[:]
    out.graph.node.extend(keep)
    return out


def _constant_ints(graph: Any, name: str) -> list[int] | None:
    from onnx import numpy_helper

    for tensor in graph.initializer:
        if tensor.name == name:
            return [int(v) for v in numpy_helper.to_array(tensor).reshape(-1)]
    for node in graph.node:
        if node.op_type == "Constant" and name in node.output:
            for attr in node.attribute:
                if attr.name == "value":
                    return [int(v) for v in numpy_helper.to_array(attr.t).reshape(-1)]
                if attr.name == "value_ints":
                    return [int(v) for v in attr.ints]
    return None


def relax_reshape_allowzero(model: Any) -> Any:
    """``Reshape(allowzero=1)`` with a constant shape free of zeros gets ``allowzero=0``.

    ``allowzero`` only changes what a 0 in the target shape means (literal zero vs. copy the
    input dim), so without zeros both settings are the same function. The dynamo exporter
    writes allowzero=1 on every Reshape; onnx2torch's Reshape-5/13/14 converters reject it.
    """
    targets = []
    for index, node in enumerate(model.graph.node):
        if node.op_type != "Reshape" or node.domain not in ("", "ai.onnx"):
            continue
        allowzero = [a for a in node.attribute if a.name == "allowzero" and a.i == 1]
        shape = _constant_ints(model.graph, node.input[1]) if len(node.input) > 1 else None
        if allowzero and shape is not None and 0 not in shape:
            targets.append(index)
    if not targets:
        return model
    out = _copy(model)
    for index in targets:
        for attr in out.graph.node[index].attribute:
            if attr.name == "allowzero":
                attr.i = 0
    return out


def prepare_for_onnx2torch(model: Any) -> Any:
    """All rewrites above, in order; returns ``model`` itself when none applies."""
    return relax_reshape_allowzero(fold_identity_initializers(model))
