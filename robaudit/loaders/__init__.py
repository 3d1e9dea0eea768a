"""``load_model``: every supported model source -> a contract-checked ModelAdapter.

Sources (``kind`` is detected from the source unless given):

==============  ===========================================================================
kind            source
==============  ===========================================================================
module          an in-memory ``nn.Module`` (expects normalised inputs unless mean=0, std=1)
factory         ``factory="pkg.module:function"`` + a state dict (``.pt``/``.pth``) or ``.safetensors``
torchscript     a TorchScript archive (``torch.jit.save``)
export          a ``torch.export`` archive (``.pt2``)
timm            ``arch="timm:NAME"`` (or ``source="timm:NAME"``) + a local checkpoint
torchvision     ``arch="torchvision:NAME"`` + a local checkpoint
onnx            an ``.onnx`` file (onnxruntime; a torch twin provides gradients)
pickle          a fully pickled ``nn.Module``; refused unless ``allow_unsafe_pickle=True``
==============  ===========================================================================

No source is ever downloaded, and nothing is unpickled unless explicitly allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from robaudit.errors import ModelLoadError
from robaudit.loaders.input_spec import resolve_spec
from robaudit.loaders.torch_loaders import load_torch_source
from robaudit.model import ModelAdapter, TorchModelAdapter, check_contract

KINDS = ("auto", "module", "factory", "torchscript", "export", "timm", "torchvision", "onnx", "pickle")


def load_model(
    source: Any,
    *,
    name: str | None = None,
    kind: str = "auto",
    factory: str | None = None,
    factory_kwargs: dict[str, Any] | None = None,
    arch: str | None = None,
    shape: tuple[int, int, int] | list[int] | None = None,
    num_classes: int | None = None,
    mean: tuple[float, ...] | list[float] | None = None,
    std: tuple[float, ...] | list[float] | None = None,
    class_names: tuple[str, ...] | list[str] | None = None,
    allow_unsafe_pickle: bool = False,
    check: bool = True,
) -> ModelAdapter:
    """Load ``source`` as a :class:`ModelAdapter` and check the model contract.

    Args:
        source: a path, an architecture spec (``"timm:resnet18"``), or an ``nn.Module``.
        name: display name (defaults to the file stem or the class name).
        kind: one of ``KINDS``; ``auto`` detects it from the source.
        factory: ``"module:function"`` returning the architecture for a state dict.
        factory_kwargs: keyword arguments for the factory / timm / torchvision constructor.
        arch: ``"timm:NAME"`` or ``"torchvision:NAME"`` for a checkpoint of a known architecture.
        shape, num_classes, mean, std, class_names: the input spec; missing fields come
            from timm's pretrained config or the ONNX metadata where available.
        allow_unsafe_pickle: allow unpickling a fully pickled model (executes code from the file).
        check: run the contract check (output shape, finite logits, eval mode).

    Raises:
        ModelLoadError: the model cannot be loaded or violates the contract (exit code 2).
        UnsafeModelError: the file needs unpickling and ``allow_unsafe_pickle`` is false.
    """
    if kind not in KINDS:
        raise ModelLoadError(f"unknown model kind {kind!r}; use one of {', '.join(KINDS)}")
    overrides = {"shape": shape, "num_classes": num_classes, "mean": mean, "std": std, "class_names": class_names}
    if isinstance(source, (str, Path)) and (kind == "onnx" or (kind == "auto" and str(source).endswith(".onnx"))):
        from robaudit.loaders.onnx_model import load_onnx

        path = Path(source)
        adapter: ModelAdapter = load_onnx(path, name=name or path.stem, **overrides)
    else:
        if isinstance(source, nn.Module):
            loaded = load_torch_source(source, kind="module", factory=None, factory_kwargs=None, arch=None,
                                       allow_unsafe_pickle=False, num_classes=num_classes)
            default_name = type(source).__name__
        else:
            loaded = load_torch_source(str(source), kind=kind, factory=factory, factory_kwargs=factory_kwargs,
                                       arch=arch, allow_unsafe_pickle=allow_unsafe_pickle, num_classes=num_classes)
            default_name = loaded.default_name
        spec = resolve_spec(loaded.module, overrides, loaded.hints)
        adapter = TorchModelAdapter(
            loaded.module,
            spec,
            name=name or default_name,
            fingerprint=loaded.fingerprint,
            provenance=loaded.provenance,
        )
    if check:
        adapter.provenance.update(check_contract(adapter))
    return adapter


__all__ = ["KINDS", "load_model"]
