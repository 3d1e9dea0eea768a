"""The torch twin of an ONNX graph: onnx2torch plus robaudit's converter extensions.

Guarantee: :func:`build_twin` returns an eval-mode ``nn.Module`` computing the same function as
the ONNX graph (normalised input in, logits out) as far as onnx2torch's converters and
:mod:`robaudit.loaders.onnx_converters` are correct; it is never trusted unchecked: the adapter
compares it with onnxruntime on the audit's own inputs (:func:`compare_twin`) before gradients or
LiRPA use it. Tool: onnx2torch (ENOT-AutoDL, 1.5.15).

Importing this module registers the converter extensions (idempotently) and does nothing else.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from robaudit.loaders import onnx_converters
from robaudit.loaders.onnx_rewrites import prepare_for_onnx2torch

__all__ = ["TwinBuildError", "build_twin", "compare_twin", "unsupported_nodes"]

_LOG = logging.getLogger(__name__)
onnx_converters.register()


class TwinBuildError(Exception):
    """onnx2torch could not convert the graph; ``str(err)`` says which node and why."""


def unsupported_nodes(model: Any) -> list[str]:
    """``"node 'name' of type Op-V"`` for every node onnx2torch has no converter for."""
    from onnx import defs
    from onnx2torch.node_converters import registry

    opsets = {o.domain: o.version for o in model.opset_import}
    missing: list[str] = []
    for index, node in enumerate(model.graph.node):
        version = opsets.get(node.domain, 0)
        try:
            since = defs.get_schema(
                node.op_type, max_inclusive_version=version, domain=node.domain
            ).since_version
        except Exception:  # noqa: BLE001 - unknown op or domain: no schema, no converter
            since = version
        try:
            registry.get_converter(operation_type=node.op_type, version=version, domain=node.domain)
        except NotImplementedError:
            name = node.name or f"#{index}"
            domain = f"{node.domain}:" if node.domain else ""
            missing.append(f"node {name!r} of type {domain}{node.op_type}-{since}")
    return missing


def build_twin(model: Any) -> nn.Module:
    """Convert an ONNX ``ModelProto`` (external data already loaded) to an eval-mode torch module.

    Args:
        model: the loaded ``onnx.ModelProto``; passing the proto (not a path) keeps onnx2torch
            from writing shape-inference files next to the user's model.

    Returns:
        A ``torch.fx.GraphModule`` in eval mode with ``requires_grad`` off on all parameters.

    Raises:
        TwinBuildError: naming the first unsupported node(s), or the converter's own error.
    """
    model = prepare_for_onnx2torch(model)
    missing = unsupported_nodes(model)
    if missing:
        more = f" (and {len(missing) - 1} more: {'; '.join(missing[1:4])})" if len(missing) > 1 else ""
        raise TwinBuildError(f"onnx2torch cannot convert {missing[0]}{more}")
    from onnx2torch import convert

    try:
        twin = convert(model)
    except Exception as err:  # noqa: BLE001 - any converter failure leaves the model black-box
        raise TwinBuildError(f"onnx2torch failed: {type(err).__name__}: {err}") from err
    twin.eval()
    for p in twin.parameters():
        p.requires_grad_(False)
    return twin


def compare_twin(
    twin: Callable[[torch.Tensor], torch.Tensor],
    reference: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    *,
    tol: float = 1e-4,
    batch_size: int = 64,
) -> dict[str, Any]:
    """Run ``twin`` and ``reference`` on ``x`` (batched) and compare their logits.

    Returns:
        ``{"twin": "ok"|"failed"|"mismatch", "twin_max_abs_diff": float, "twin_reason": str,
        "twin_checked_n": int}``; ``twin_max_abs_diff`` is ``inf`` when the twin failed or
        returned a different shape or non-finite values where the reference did not.
    """
    worst = 0.0
    with torch.no_grad():
        for start in range(0, len(x), batch_size):
            chunk = x[start : start + batch_size]
            want = reference(chunk)
            try:
                got = twin(chunk)
            except Exception as err:  # noqa: BLE001 - a crashing twin is a recorded failure
                _LOG.warning("torch twin failed on the audit inputs: %s", err)
                return _record("failed", float("inf"), f"twin raised {type(err).__name__}: {err}", len(x))
            if not isinstance(got, torch.Tensor) or tuple(got.shape) != tuple(want.shape):
                shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
                return _record(
                    "failed", float("inf"), f"twin returned {shape}, expected {tuple(want.shape)}", len(x)
                )
            diff = (got.float() - want.float()).abs()
            both_nan = torch.isnan(got) & torch.isnan(want)
            diff = torch.where(both_nan, torch.zeros_like(diff), diff)
            worst = max(worst, float(diff.max()) if diff.numel() else 0.0)
            if worst != worst:  # NaN where the reference is finite
                worst = float("inf")
    if worst <= tol:
        return _record("ok", worst, f"max |twin - onnxruntime| = {worst:.3g} <= {tol:g}", len(x))
    return _record("mismatch", worst, f"max |twin - onnxruntime| = {worst:.3g} > tol {tol:g}", len(x))


def _record(status: str, diff: float, reason: str, n: int) -> dict[str, Any]:
    return {"twin": status, "twin_max_abs_diff": diff, "twin_reason": reason, "twin_checked_n": int(n)}
