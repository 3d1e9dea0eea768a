"""Converter extensions that let onnx2torch 1.5.15 read what current ``torch.onnx.export`` writes.

Guarantee: a registered extension either reproduces the ONNX operator version it is registered
for or raises ``NotImplementedError`` at conversion time naming the unsupported attribute, so the
torch twin is never silently different; the twin is still checked against onnxruntime on the
audit's own inputs (:meth:`robaudit.loaders.onnx_model.OnnxModelAdapter.verify_twin`).

How it works. onnx2torch looks converters up in a registry keyed by (domain, op type, the
``since_version`` of the op's schema at the model's opset). A model at opset 19 therefore asks for
``Reshape-19`` even though Reshape-19 only added float8 types, and conversion fails with
"Converter is not implemented". :func:`register` adds the missing keys through the public
``onnx2torch.node_converters.registry.add_converter(operation_type=..., version=...)``:

* where the newer version only widens the accepted types (or adds an attribute/input whose
  default keeps the old meaning), the extension **delegates** to onnx2torch's own converter for
  the older version, fetched with ``registry.get_converter``; a guard first rejects attribute
  values the old converter would mis-handle (e.g. Pad-19 ``mode='wrap'``, AveragePool-19
  ``dilations``);
* where the meaning changed (Reduce*-18 takes ``axes`` as an input, Split-18 gains
  ``num_outputs``) or the op is new to onnx2torch (Gelu-20, Size), a small module from
  :mod:`robaudit.loaders.onnx_converter_modules` implements it.

Two incompatibilities sit in keys onnx2torch already owns (``add_converter`` refuses to replace
them), so :mod:`robaudit.loaders.onnx_rewrites` fixes them with exact graph rewrites instead:
the dynamo exporter's ``Reshape(allowzero=1)`` at opset 18 (Reshape-14), and the TorchScript
exporter's ``Identity(initializer)`` weight copies that onnx2torch's Conv converter cannot read.

:func:`register` is idempotent: a key that is already registered (by an earlier call, or by a
newer onnx2torch that implements it natively) is left alone. Importing this module registers
nothing; :mod:`robaudit.loaders.onnx_twin` calls :func:`register` when it is imported.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from robaudit.loaders.onnx_converter_modules import (
    OnnxGelu,
    OnnxPadAxes,
    OnnxReduce18,
    OnnxReshapeAllowZero,
    OnnxSize,
    OnnxSplitEven,
)

__all__ = ["DELEGATED", "EXTENDED_OPS", "register"]

#: (op type, new since_version) -> (older version whose converter is reused, what changed)
DELEGATED: dict[tuple[str, int], tuple[int, str]] = {
    ("AveragePool", 19): (11, "adds dilations; delegated when all dilations are 1"),
    ("Cast", 19): (13, "adds float8 types and `saturate` (float8 only)"),
    ("Constant", 19): (13, "adds float8 types"),
    ("ConstantOfShape", 20): (9, "adds float8 types"),
    ("Equal", 19): (13, "adds string type"),
    ("GreaterOrEqual", 16): (12, "adds bfloat16"),
    ("LessOrEqual", 16): (12, "adds bfloat16"),
    ("Identity", 19): (16, "adds float8 types"),
    ("IsInf", 20): (10, "adds float16/bfloat16/float8 types"),
    ("IsNaN", 20): (13, "adds float8 types"),
    ("Reshape", 19): (14, "adds float8 types; allowzero=1 gets its own module"),
    ("Shape", 19): (15, "adds float8 types"),
    ("ScatterND", 18): (16, "adds reduction max/min; delegated for none/add/mul"),
    ("Pad", 18): (13, "adds the `axes` input; delegated when absent"),
    ("Pad", 19): (13, "adds mode 'wrap'; delegated when no axes and another mode"),
    ("Resize", 18): (13, "adds antialias/axes/keep_aspect_ratio_policy; delegated at defaults"),
    ("Resize", 19): (13, "adds half_pixel_symmetric; delegated for the other modes"),
    ("Split", 18): (13, "adds num_outputs; delegated when the `split` input is given"),
    ("ReduceMax", 20): (18, "adds bool type"),
    ("ReduceMin", 20): (18, "adds bool type"),
}

_REDUCE_OPS = (
    "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceMax",
    "ReduceMean", "ReduceMin", "ReduceProd", "ReduceSumSquare",
)  # fmt: skip
#: ops given new code: (op type, since_version) -> short description
NEW_CODE: dict[tuple[str, int], str] = {
    **{(op, 18): "axes moved from attribute to input" for op in _REDUCE_OPS},
    ("Gelu", 20): "new op (erf or tanh form)",
    ("Size", 1): "not in onnx2torch",
    ("Size", 13): "not in onnx2torch",
    ("Size", 19): "not in onnx2torch",
}
EXTENDED_OPS: tuple[str, ...] = tuple(sorted(f"{op}-{version}" for op, version in {**DELEGATED, **NEW_CODE}))


def _registry() -> Any:
    from onnx2torch.node_converters import registry

    return registry


def _result(module: Any, node: Any, inputs: tuple[str, ...] | None = None) -> Any:
    from onnx2torch.utils.common import OnnxMapping, OperationConverterResult

    mapping = OnnxMapping(inputs=node.input_values if inputs is None else inputs, outputs=node.output_values)
    return OperationConverterResult(torch_module=module, onnx_mapping=mapping)


def _const_ints(name: str, graph: Any, what: str) -> list[int]:
    from onnx2torch.utils.common import get_const_value

    try:
        value = get_const_value(name, graph)
    except KeyError as err:
        raise NotImplementedError(f"{what} must be a constant (initializer or Constant node)") from err
    return [int(v) for v in (value.tolist() if hasattr(value, "tolist") else value)]


def _input(node: Any, index: int) -> str:
    values = node.input_values
    return values[index] if len(values) > index else ""


def _guard(op: str, version: int, node: Any) -> None:
    """Reject attribute values the delegated (older) converter would treat differently."""
    attrs = node.attributes
    if op == "AveragePool" and any(d != 1 for d in attrs.get("dilations", [])):
        raise NotImplementedError(f"AveragePool-{version} with dilations {attrs['dilations']}")
    if op == "ScatterND" and attrs.get("reduction", "none") in ("max", "min"):
        raise NotImplementedError(f"ScatterND-{version} with reduction {attrs['reduction']!r}")
    if op == "Resize":
        if attrs.get("antialias", 0) != 0:
            raise NotImplementedError(f"Resize-{version} with antialias=1")
        if attrs.get("axes") is not None:
            raise NotImplementedError(f"Resize-{version} with the axes attribute")
        if attrs.get("keep_aspect_ratio_policy", "stretch") != "stretch":
            raise NotImplementedError(f"Resize-{version} with keep_aspect_ratio_policy")
        if attrs.get("coordinate_transformation_mode") == "half_pixel_symmetric":
            raise NotImplementedError(f"Resize-{version} with half_pixel_symmetric coordinates")


def _delegate(op: str, version: int, older: int) -> Callable[[Any, Any], Any]:
    def convert(node: Any, graph: Any) -> Any:
        if op == "Pad" and (len(node.input_values) > 3 or node.attributes.get("mode", "constant") == "wrap"):
            return _result(OnnxPadAxes(node.attributes.get("mode", "constant")), node)
        if op == "Reshape" and node.attributes.get("allowzero", 0) == 1:
            return _result(OnnxReshapeAllowZero(), node)
        if op == "Split" and not _input(node, 1):
            module = OnnxSplitEven(node.attributes["num_outputs"], node.attributes.get("axis", 0))
            return _result(module, node, inputs=(node.input_values[0],))
        _guard(op, version, node)
        return _registry().get_converter(operation_type=op, version=older)(node, graph)

    convert.__name__ = f"convert_{op}_{version}_via_{older}"
    return convert


def _reduce18(node: Any, graph: Any) -> Any:
    attrs = node.attributes
    axes_name = _input(node, 1)
    axes = _const_ints(axes_name, graph, f"{node.operation_type} axes") if axes_name else None
    module = OnnxReduce18(
        node.operation_type, axes, attrs.get("keepdims", 1), attrs.get("noop_with_empty_axes", 0)
    )
    return _result(module, node, inputs=(node.input_values[0],))


def _gelu20(node: Any, graph: Any) -> Any:
    del graph
    return _result(OnnxGelu(node.attributes.get("approximate", "none")), node)


def _size(node: Any, graph: Any) -> Any:
    del graph
    return _result(OnnxSize(), node)


def _converters() -> dict[tuple[str, int], Callable[[Any, Any], Any]]:
    table: dict[tuple[str, int], Callable[[Any, Any], Any]] = {}
    for (op, version), (older, _why) in DELEGATED.items():
        table[(op, version)] = _delegate(op, version, older)
    for op in _REDUCE_OPS:
        table[(op, 18)] = _reduce18
    table[("Gelu", 20)] = _gelu20
    for version in (1, 13, 19):
        table[("Size", version)] = _size
    return table


def _is_registered(op: str, version: int) -> bool:
    """Whether onnx2torch has a converter for exactly ``op``-``version`` (a since_version)."""
    try:
        _registry().get_converter(operation_type=op, version=version)
    except NotImplementedError:
        return False
    return True


def register() -> list[str]:
    """Register every extension not yet in onnx2torch's registry; returns the keys added.

    Idempotent: the second call adds nothing. Keys onnx2torch already implements are kept.
    Delegates look their older converter up at conversion time, so registration order is free.
    """
    registry = _registry()
    added: list[str] = []
    for (op, version), converter in _converters().items():
        if _is_registered(op, version):
            continue
        registry.add_converter(operation_type=op, version=version)(converter)
        added.append(f"{op}-{version}")
    return added
