"""ONNX classifiers: onnxruntime for logits, a checked torch twin for gradients and LiRPA.

Guarantee: :class:`OnnxModelAdapter` computes logits with onnxruntime (CPUExecutionProvider) on
``(x - mean) / std`` for pixel-space inputs ``x`` in [0, 1]. Its torch twin (onnx2torch plus
:mod:`robaudit.loaders.onnx_converters`) is only used, and GRADIENTS / TORCH_MODULE are only
advertised, while every comparison with onnxruntime so far agreed within the tolerance
(max abs logit difference, default 1e-4); otherwise the adapter stays black-box and records why.
Tools: onnxruntime; onnx2torch 1.5.15 (ENOT-AutoDL).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from robaudit.errors import CapabilityError, ModelLoadError
from robaudit.loaders.onnx_file import OnnxFile, metadata, read_onnx
from robaudit.loaders.onnx_spec import GraphIO, graph_io, resolve_spec
from robaudit.model import Capability, InputSpec, ModelAdapter, PixelSpaceModel, check_contract

__all__ = ["OnnxModelAdapter", "load_onnx"]

_LOG = logging.getLogger(__name__)
_ORT_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16}
_STATUS_RANK = {"ok": 0, "mismatch": 1, "failed": 2}


class OnnxModelAdapter(ModelAdapter):
    """An ONNX classifier behind the :class:`~robaudit.model.ModelAdapter` contract.

    Build it with :func:`load_onnx`. ``provenance`` holds the twin status
    (``twin``, ``twin_max_abs_diff``, ``twin_reason``, ``twin_checked_n``), worst over all checks.
    """

    def __init__(self, file: OnnxFile, spec: InputSpec, io: GraphIO, *, name: str, twin: bool = True) -> None:
        import onnx
        import onnxruntime as ort

        self.name = name
        self.spec = spec
        self.fingerprint = file.fingerprint
        self._io = io
        self._static_batch = io.input_dims[0]
        options = ort.SessionOptions()
        options.log_severity_level = 3
        proto = file.model.SerializeToString() if file.model.ByteSize() < 2**31 - 1 else str(file.path)
        try:
            self._session = ort.InferenceSession(proto, options, providers=["CPUExecutionProvider"])
        except Exception as err:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise ModelLoadError(
                f"onnxruntime cannot load {file.path}: {type(err).__name__}: {str(err)[:300]}; "
                "re-export the model with an opset onnxruntime supports (e.g. opset 17-20)"
            ) from err
        ort_input = self._session.get_inputs()[0]
        if ort_input.type not in _ORT_TYPES:
            raise ModelLoadError(
                f"{file.path}: input {ort_input.name!r} has type {ort_input.type}; robaudit feeds float "
                "images: re-export with a float32 input"
            )
        self._input_dtype = _ORT_TYPES[ort_input.type]
        self.provenance: dict[str, Any] = {
            "source": "onnx",
            "path": str(file.path),
            "external_data": list(file.external_files),
            "opset": {o.domain or "ai.onnx": int(o.version) for o in file.model.opset_import},
            "producer": f"{file.model.producer_name} {file.model.producer_version}".strip(),
            "ir_version": int(file.model.ir_version),
            "input_name": io.input_name,
            "output_name": io.output_name,
            "runtime": f"onnxruntime {ort.__version__} (CPUExecutionProvider)",
            "onnx_version": onnx.__version__,
        }
        self._twin: nn.Module | None = None
        self._twin_record: dict[str, Any] | None = None
        if twin:
            self._build_twin(file.model)
        else:
            self._set_record(
                {
                    "twin": "failed",
                    "twin_max_abs_diff": float("inf"),
                    "twin_reason": "twin not built (load_onnx(twin=False))",
                    "twin_checked_n": 0,
                }
            )

    # -- twin -------------------------------------------------------------------------------
    def _build_twin(self, model: Any) -> None:
        from robaudit.loaders.onnx_twin import TwinBuildError, build_twin

        try:
            net = build_twin(model)
        except TwinBuildError as err:
            _LOG.warning("no torch twin for %s: %s", self.name, err)
            self._set_record(
                {
                    "twin": "failed",
                    "twin_max_abs_diff": float("inf"),
                    "twin_reason": str(err),
                    "twin_checked_n": 0,
                }
            )
            return
        self._twin = PixelSpaceModel(net, self.spec.mean, self.spec.std).eval()
        for p in self._twin.parameters():
            p.requires_grad_(False)
        import onnx2torch

        self.provenance["twin_converter"] = (
            f"onnx2torch {getattr(onnx2torch, '__version__', '?')} + robaudit extensions"
        )
        gen = torch.Generator().manual_seed(0)
        probe = torch.rand((max(2, self._static_batch or 2), *self.spec.shape), generator=gen)
        self.verify_twin(probe)
        self.provenance["twin_load_check"] = dict(self._twin_record or {})

    def verify_twin(self, x: torch.Tensor, tol: float = 1e-4) -> dict[str, Any]:
        """Compare twin and onnxruntime logits on ``x`` (pixel space) and record the outcome.

        The recorded status is the worst over all checks (a mismatch is never forgotten);
        GRADIENTS and TORCH_MODULE are advertised only while it is ``"ok"``.

        Returns:
            This check's ``{"twin", "twin_max_abs_diff", "twin_reason", "twin_checked_n"}``.
        """
        from robaudit.loaders.onnx_twin import compare_twin

        if self._twin is None:
            result = dict(self._twin_record or {})
            result["twin_checked_n"] = int(len(x))
            return result
        result = compare_twin(self._twin, self._run_ort, x.detach().float(), tol=tol)
        self._set_record(result)
        return result

    def _set_record(self, result: dict[str, Any]) -> None:
        old = self._twin_record
        if old is None or _STATUS_RANK[result["twin"]] > _STATUS_RANK[old["twin"]]:
            merged = dict(result)
        else:
            merged = dict(old)
        if old is not None:
            merged["twin_max_abs_diff"] = max(old["twin_max_abs_diff"], result["twin_max_abs_diff"])
            merged["twin_checked_n"] = old["twin_checked_n"] + result["twin_checked_n"]
            if merged["twin"] == "ok":
                merged["twin_reason"] = result["twin_reason"]
        self._twin_record = merged
        self.provenance.update(merged)
        caps = {Capability.GRADIENTS, Capability.TORCH_MODULE} if self._twin_usable else set()
        self.capabilities = frozenset(caps)

    @property
    def _twin_usable(self) -> bool:
        return self._twin is not None and self._twin_record is not None and self._twin_record["twin"] == "ok"

    # -- inference --------------------------------------------------------------------------
    def _run_ort(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.spec.mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(self.spec.std, dtype=torch.float32).view(1, -1, 1, 1)
        z = ((x.detach().float().cpu() - mean) / std).numpy().astype(self._input_dtype, copy=False)
        step = self._static_batch or max(len(z), 1)
        outs = []
        for start in range(0, len(z), step):
            chunk = z[start : start + step]
            short = step - len(chunk) if self._static_batch else 0
            if short:  # a fixed batch dim: pad with copies of the last row, then drop them
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], short, axis=0)])
            (out,) = self._session.run([self._io.output_name], {self._io.input_name: chunk})
            outs.append(out[: len(out) - short] if short else out)
        if not outs:
            return torch.empty((0, self.spec.num_classes), device=x.device)
        return torch.from_numpy(np.concatenate(outs).astype(np.float32, copy=False)).to(x.device)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, num_classes)``; through the twin when gradients are wanted and it agrees."""
        if self._twin_usable and torch.is_grad_enabled() and x.requires_grad:
            assert self._twin is not None
            return self._twin(x)
        return self._run_ort(x)

    @property
    def device(self) -> torch.device:
        """The twin's device; onnxruntime always runs on CPU and returns logits on the input's device."""
        for t in (self._twin.parameters() if self._twin is not None else ()):
            return t.device
        return torch.device("cpu")

    def to(self, device: torch.device | str) -> OnnxModelAdapter:
        if self._twin is not None:
            self._twin.to(device)
        return self

    def torch_module(self) -> nn.Module:
        """The verified twin taking [0, 1] inputs (eval mode, frozen), or CapabilityError."""
        if not self._twin_usable:
            reason = (self._twin_record or {}).get("twin_reason", "not built")
            raise CapabilityError(
                f"model {self.name!r} (ONNX) has no usable torch twin: {reason}; gradient and LiRPA "
                "methods are not applicable (black-box methods still run)"
            )
        assert self._twin is not None
        return self._twin


def load_onnx(
    path: str | Path,
    *,
    name: str | None = None,
    shape: Sequence[int] | None = None,
    num_classes: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    class_names: Sequence[str] | None = None,
    twin: bool = True,
) -> OnnxModelAdapter:
    """Load an ONNX classifier, resolve its input contract and check it.

    The graph is fed ``(x - mean) / std``: give ``mean=[0]*C, std=[1]*C`` when it takes [0, 1]
    pixels. Missing arguments come from the file (static dims; ``metadata_props`` keys
    ``robaudit.mean``, ``robaudit.std``, ``robaudit.class_names``, see
    :func:`robaudit.loaders.onnx_file.save_onnx_metadata`).

    Args:
        path: the .onnx file (external data files beside it).
        name: display name (default: the file stem).
        shape, num_classes, mean, std, class_names: the input contract (see above).
        twin: build and verify the torch twin (default true).

    Returns:
        An :class:`OnnxModelAdapter` whose contract was checked on a random batch.

    Raises:
        ModelLoadError: a missing/corrupt/non-ONNX file, missing external data, several inputs
            or outputs, a non-2-D output, or an unresolvable input contract; each names the fix.
    """
    file = read_onnx(path)
    where = str(file.path)
    io = graph_io(file.model, where)
    spec = resolve_spec(
        io, metadata(file.model), where,
        shape=shape, num_classes=num_classes, mean=mean, std=std, class_names=class_names,
    )  # fmt: skip
    adapter = OnnxModelAdapter(file, spec, io, name=name or file.path.stem, twin=twin)
    adapter.provenance.update(check_contract(adapter))
    return adapter
