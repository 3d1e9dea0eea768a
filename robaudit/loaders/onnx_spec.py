"""The input contract of an ONNX classifier: one NCHW image input, one (N, classes) output.

Guarantee: :func:`resolve_spec` returns the :class:`~robaudit.model.InputSpec` the graph really
has. Order: explicit arguments, then what the file says (static input dims for C, H, W; static
output dim for num_classes; ``metadata_props`` keys ``robaudit.mean``, ``robaudit.std``,
``robaudit.class_names`` as JSON). An explicit value that contradicts a static dim of the graph,
a missing field, several inputs or outputs, or a non-2-D output is a ModelLoadError naming the fix.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from robaudit.errors import ModelLoadError
from robaudit.model import InputSpec

__all__ = ["GraphIO", "graph_io", "resolve_spec"]


@dataclass(frozen=True)
class GraphIO:
    """Name and dims (int when static, None when symbolic/unknown) of the one input and output."""

    input_name: str
    input_dims: tuple[int | None, ...]
    output_name: str
    output_dims: tuple[int | None, ...] | None  # None: rank unknown


def _dims(value_info: Any) -> tuple[int | None, ...] | None:
    tensor_type = value_info.type.tensor_type
    if not tensor_type.HasField("shape"):
        return None
    return tuple(
        d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tensor_type.shape.dim
    )


def graph_io(model: Any, where: str) -> GraphIO:
    """The graph's single image input and single logits output, or ModelLoadError."""
    initializers = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in initializers]
    if len(inputs) != 1:
        names = ", ".join(repr(i.name) for i in inputs) or "none"
        raise ModelLoadError(
            f"{where} has {len(inputs)} graph inputs ({names}); robaudit audits classifiers with one "
            "image input: re-export the model with a single NCHW image input"
        )
    outputs = list(model.graph.output)
    if len(outputs) != 1:
        names = ", ".join(repr(o.name) for o in outputs)
        raise ModelLoadError(
            f"{where} has {len(outputs)} graph outputs ({names}); re-export it so that it returns "
            "only the logits tensor of shape (N, num_classes)"
        )
    in_dims = _dims(inputs[0])
    if in_dims is None or len(in_dims) != 4:
        raise ModelLoadError(
            f"{where}: input {inputs[0].name!r} has rank {len(in_dims) if in_dims else 'unknown'}; "
            "robaudit needs a rank-4 NCHW image input: re-export with an input of shape (N, C, H, W)"
        )
    out_dims = _dims(outputs[0])
    if out_dims is not None and len(out_dims) != 2:
        raise ModelLoadError(
            f"{where}: output {outputs[0].name!r} has rank {len(out_dims)}; a classifier must "
            "return 2-D logits (N, num_classes): add a flatten/squeeze before export"
        )
    return GraphIO(inputs[0].name, in_dims, outputs[0].name, out_dims)


def _meta_list(meta: dict[str, str], key: str, where: str) -> list[Any] | None:
    if key not in meta:
        return None
    try:
        value = json.loads(meta[key])
    except json.JSONDecodeError as err:
        raise ModelLoadError(
            f"{where}: metadata {key!r} is not valid JSON ({err}); fix it with "
            "robaudit.loaders.onnx_file.save_onnx_metadata or give the value in the config"
        ) from err
    if not isinstance(value, list):
        raise ModelLoadError(f"{where}: metadata {key!r} must be a JSON list, got {meta[key]!r}")
    return value


def resolve_spec(
    io: GraphIO,
    meta: dict[str, str],
    where: str,
    *,
    shape: Sequence[int] | None = None,
    num_classes: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    class_names: Sequence[str] | None = None,
) -> InputSpec:
    """Merge explicit arguments with what the graph and its metadata say (see module doc)."""
    graph_chw = io.input_dims[1:]
    if shape is not None:
        shape = tuple(int(s) for s in shape)
        clash = [(i, g, s) for i, (g, s) in enumerate(zip(graph_chw, shape)) if g is not None and g != s]
        if len(shape) != 3 or clash:
            raise ModelLoadError(
                f"{where}: model.input.shape = {list(shape)} but the ONNX input is "
                f"{['N' if d is None else d for d in io.input_dims]} (N, C, H, W); "
                "set model.input.shape to the graph's [C, H, W]"
            )
    elif all(d is not None for d in graph_chw):
        shape = tuple(int(d) for d in graph_chw)  # type: ignore[arg-type]
    else:
        raise ModelLoadError(
            f"{where}: the input shape is not fixed in the ONNX graph (dims {list(io.input_dims)}); "
            "set model.input.shape = [C, H, W] in the config (load_onnx(shape=...))"
        )
    graph_classes = io.output_dims[1] if io.output_dims is not None else None
    if num_classes is not None:
        if graph_classes is not None and graph_classes != int(num_classes):
            raise ModelLoadError(
                f"{where}: model.input.num_classes = {num_classes} but the ONNX output has "
                f"{graph_classes} logits; set model.input.num_classes = {graph_classes}"
            )
    elif graph_classes is not None:
        num_classes = graph_classes
    else:
        raise ModelLoadError(
            f"{where}: the number of classes is not fixed in the ONNX output; set "
            "model.input.num_classes in the config (load_onnx(num_classes=...))"
        )
    resolved: dict[str, Any] = {}
    for field, given in (("mean", mean), ("std", std)):
        value = list(given) if given is not None else _meta_list(meta, f"robaudit.{field}", where)
        if value is None:
            raise ModelLoadError(
                f"{where}: input normalisation {field} is unknown; set model.input.{field} in the config "
                "(the ONNX graph is fed (x - mean) / std; use mean = [0, 0, 0], std = [1, 1, 1] if it "
                "takes [0, 1] pixels) or store it with robaudit.loaders.onnx_file.save_onnx_metadata"
            )
        resolved[field] = tuple(float(v) for v in value)
    names = list(class_names) if class_names is not None else _meta_list(meta, "robaudit.class_names", where)
    return InputSpec(
        shape=shape,  # type: ignore[arg-type]
        num_classes=int(num_classes),
        mean=resolved["mean"],
        std=resolved["std"],
        class_names=tuple(str(n) for n in names) if names is not None else None,
    )
