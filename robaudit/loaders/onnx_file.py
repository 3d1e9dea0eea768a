"""Reading an .onnx file safely: existence, parse, checker, external data, fingerprint.

Guarantee: :func:`read_onnx` either returns a parsed, checker-valid ``ModelProto`` with every
external tensor loaded plus a fingerprint covering every byte the model depends on (the .onnx
file and each external data file it references), or raises ModelLoadError naming the fix.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robaudit.errors import ModelLoadError

__all__ = ["OnnxFile", "metadata", "read_onnx", "save_onnx_metadata"]

_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_MAGIC = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")


@dataclass(frozen=True)
class OnnxFile:
    """A loaded ONNX model: the proto, its fingerprint and the external files it uses."""

    path: Path
    model: Any  # onnx.ModelProto with external data loaded
    fingerprint: str
    external_files: tuple[str, ...]


def _tensors(graph: Any) -> Iterator[Any]:
    """Every TensorProto in a graph: initializers, Constant attributes, nested subgraphs."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _tensors(attr.g)
            for sub in attr.graphs:
                yield from _tensors(sub)


def _external_locations(model: Any) -> list[str]:
    from onnx import TensorProto

    locations: set[str] = set()
    for tensor in _tensors(model.graph):
        if tensor.data_location == TensorProto.EXTERNAL:
            for entry in tensor.external_data:
                if entry.key == "location":
                    locations.add(entry.value)
    return sorted(locations)


def _parse_error(path: Path, head: bytes, err: Exception) -> ModelLoadError:
    if head.startswith(_ZIP_MAGIC) or head[:2] in _PICKLE_MAGIC:
        return ModelLoadError(
            f"{path} is not an ONNX model (it looks like a PyTorch checkpoint or zip archive); "
            "use a torch model loader for it, or export it with torch.onnx.export"
        )
    return ModelLoadError(
        f"{path} could not be parsed as an ONNX model ({type(err).__name__}: {err}); the file is "
        "truncated, corrupt or not ONNX: re-export it with torch.onnx.export or re-download it"
    )


def _read_proto(path: Path) -> tuple[Any, bytes]:
    import onnx

    data = path.read_bytes()
    try:
        model = onnx.load_model_from_string(data)
    except Exception as err:  # noqa: BLE001 - protobuf raises DecodeError, RuntimeError, ...
        raise _parse_error(path, data[:8], err) from err
    if model.ir_version <= 0 or not model.HasField("graph") or len(model.graph.output) == 0:
        raise ModelLoadError(
            f"{path} is not an ONNX model (no IR version or no graph outputs after parsing); "
            "give the .onnx file written by torch.onnx.export (or re-export it: it may be truncated)"
        )
    return model, data


def read_onnx(path: str | Path) -> OnnxFile:
    """Load ``path`` with its external data, run the ONNX checker and fingerprint it.

    Raises:
        ModelLoadError: missing file, truncated/corrupt file, not ONNX, missing external data
            file, or a graph the ONNX checker rejects; each message names the fix.
    """
    import onnx
    from onnx.external_data_helper import load_external_data_for_model

    path = Path(path)
    if not path.is_file():
        raise ModelLoadError(
            f"ONNX model file {path} does not exist; check model.path in the config "
            "(relative paths are relative to the config file)"
        )
    model, data = _read_proto(path)
    base = path.parent.resolve()
    digest = hashlib.sha256(data)
    locations = _external_locations(model)
    for location in locations:
        ext = (base / location).resolve()
        if base not in ext.parents:
            raise ModelLoadError(
                f"{path} references external data {location!r} outside its directory; "
                "re-save the model with its external data file beside the .onnx"
            )
        if not ext.is_file():
            raise ModelLoadError(
                f"{path} stores weights in the external data file {location!r}, which is missing "
                f"(looked for {ext}); copy that file next to the .onnx, or re-export with "
                "external_data=False"
            )
        digest.update(b"\0external:" + location.encode() + b"\0")
        digest.update(ext.read_bytes())
    try:
        if locations:
            load_external_data_for_model(model, str(base))
        if model.ByteSize() < 2**31 - 1:
            onnx.checker.check_model(model)
        else:
            onnx.checker.check_model(str(path))
    except Exception as err:  # noqa: BLE001 - the checker raises ValidationError and others
        raise ModelLoadError(
            f"{path} is not a valid ONNX model ({type(err).__name__}: {str(err).strip()[:300]}); "
            "the file may be truncated or corrupt: re-export it with torch.onnx.export"
        ) from err
    return OnnxFile(path=path, model=model, fingerprint=digest.hexdigest(), external_files=tuple(locations))


def metadata(model: Any) -> dict[str, str]:
    """The model's ``metadata_props`` as a dict."""
    return {p.key: p.value for p in model.metadata_props}


def save_onnx_metadata(
    path: str | Path,
    mean: Sequence[float],
    std: Sequence[float],
    class_names: Sequence[str] | None = None,
) -> None:
    """Store the input normalisation (and class names) in the model's ``metadata_props``.

    Writes keys ``robaudit.mean``, ``robaudit.std``, ``robaudit.class_names`` as JSON strings,
    which :func:`robaudit.loaders.onnx_model.load_onnx` reads when no explicit values are given.
    The .onnx file is rewritten in place; external data files are left untouched. This changes
    the model's fingerprint.
    """
    import onnx

    path = Path(path)
    model = onnx.load(str(path), load_external_data=False)
    values: dict[str, list[Any]] = {
        "robaudit.mean": [float(v) for v in mean],
        "robaudit.std": [float(v) for v in std],
    }
    if class_names is not None:
        values["robaudit.class_names"] = [str(c) for c in class_names]
    kept = [p for p in model.metadata_props if p.key not in values]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in values.items():
        model.metadata_props.add(key=key, value=json.dumps(value))
    onnx.save(model, str(path))
