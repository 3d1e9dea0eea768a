"""PyTorch model sources: factory + weights, TorchScript, torch.export, timm/torchvision, pickles.

Safety: checkpoints are read with ``torch.load(weights_only=True)`` or safetensors. A file that
would need full unpickling (a pickled ``nn.Module``) is refused unless ``allow_unsafe_pickle``;
the refusal happens before any object in the file is constructed.
"""

from __future__ import annotations

import hashlib
import importlib
import pickle
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robaudit.errors import ModelLoadError, UnsafeModelError
from robaudit.loaders.input_spec import timm_hints
from robaudit.model import fingerprint_module, set_eval

UNSAFE_MESSAGE = (
    "{path} is a fully pickled PyTorch model. Loading it would execute arbitrary code stored in the "
    "file, so robaudit refuses by default (nothing in the file was executed). Safe alternatives: save "
    "the weights with torch.save(model.state_dict(), 'weights.pt') or safetensors and load them with "
    "model.factory = 'your_package.module:build_model'; or export with torch.jit.save / torch.export.save "
    "/ torch.onnx.export. If you trust the file's author, pass --allow-unsafe-pickle "
    "(config: model.allow_unsafe_pickle = true)."
)


@dataclass
class LoadedTorch:
    module: nn.Module
    fingerprint: str
    default_name: str
    hints: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)


def load_torch_source(
    source: nn.Module | str,
    *,
    kind: str,
    factory: str | None,
    factory_kwargs: dict[str, Any] | None,
    arch: str | None,
    allow_unsafe_pickle: bool,
    num_classes: int | None,
) -> LoadedTorch:
    """Load a torch-based source (see robaudit.loaders for the kinds)."""
    if isinstance(source, nn.Module):
        return LoadedTorch(source.eval(), fingerprint_module(source), type(source).__name__,
                           hints=timm_hints(source), provenance={"kind": "module"})
    kwargs = dict(factory_kwargs or {})
    if source.startswith(("timm:", "torchvision:")) and arch is None:
        arch, source = source, ""
    if kind == "auto":
        kind = _detect_kind(source, factory, arch)
    if kind in ("timm", "torchvision") and arch is None:
        arch = f"{kind}:{source}"
        source = ""
    if kind in ("timm", "torchvision"):
        return _load_arch(arch or "", source, kwargs, num_classes)
    path = _existing(source)
    if kind == "factory":
        if not factory:
            raise ModelLoadError(
                f"{path} holds weights only; say which architecture they belong to with "
                "model.factory = 'package.module:function' (or --factory), or model.arch = 'timm:NAME'"
            )
        module = _call_factory(factory, kwargs)
        _load_state_dict(module, path)
        return LoadedTorch(module.eval(), _file_sha256(path), path.stem,
                           hints=timm_hints(module),
                           provenance={"kind": "factory", "factory": factory, "weights": str(path)})
    if kind == "torchscript":
        try:
            module = torch.jit.load(str(path), map_location="cpu")
        except Exception as err:  # noqa: BLE001
            raise ModelLoadError(f"cannot load TorchScript archive {path}: {err}") from err
        return LoadedTorch(module.eval(), _file_sha256(path), path.stem, provenance={"kind": "torchscript", "path": str(path)})
    if kind == "export":
        try:
            program = torch.export.load(str(path))
            module = program.module()
        except Exception as err:  # noqa: BLE001
            raise ModelLoadError(f"cannot load torch.export archive {path}: {err}") from err
        set_eval(module)
        return LoadedTorch(module, _file_sha256(path), path.stem, provenance={"kind": "export", "path": str(path)})
    if kind == "pickle":
        return _load_pickled(path, allow_unsafe_pickle)
    raise ModelLoadError(f"model kind {kind!r} is not a torch source")


def _detect_kind(source: str, factory: str | None, arch: str | None) -> str:
    if arch:
        return arch.split(":", 1)[0] if ":" in arch else "timm"
    path = _existing(source)
    if path.suffix == ".pt2":
        return "export"
    if path.suffix == ".safetensors":
        return "factory"
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
        if any(n.endswith("constants.pkl") or "/code/" in n for n in names):
            return "torchscript"
        if any(n.endswith("serialized_exported_program.json") or "/models/" in n for n in names):
            return "export"
    if factory:
        return "factory"
    # A plain checkpoint without a factory: either a state dict (needs a factory) or a pickled module.
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        return "pickle"
    except Exception as err:  # noqa: BLE001
        raise ModelLoadError(f"cannot read {path} as a PyTorch file: {type(err).__name__}: {err}") from err
    if isinstance(obj, nn.Module):
        return "pickle"
    raise ModelLoadError(
        f"{path} holds weights only; say which architecture they belong to with "
        "model.factory = 'package.module:function' (or --factory), or model.arch = 'timm:NAME'"
    )


def _load_pickled(path: Path, allow: bool) -> LoadedTorch:
    if not allow:
        raise UnsafeModelError(UNSAFE_MESSAGE.format(path=path))
    try:
        module = torch.load(str(path), map_location="cpu", weights_only=False)  # explicit unsafe opt-in
    except Exception as err:  # noqa: BLE001
        raise ModelLoadError(f"cannot unpickle {path}: {type(err).__name__}: {err}") from err
    if not isinstance(module, nn.Module):
        raise ModelLoadError(f"{path} unpickled to {type(module).__name__}, not an nn.Module")
    return LoadedTorch(module.eval(), _file_sha256(path), path.stem,
                       provenance={"kind": "pickle", "path": str(path), "unsafe_pickle": True})


def _load_arch(arch: str, weights: str, kwargs: dict[str, Any], num_classes: int | None) -> LoadedTorch:
    family, _, name = arch.partition(":")
    if num_classes is not None:
        kwargs.setdefault("num_classes", num_classes)
    try:
        if family == "timm":
            import timm

            if not timm.is_model(name):
                raise ModelLoadError(f"unknown timm architecture {name!r}; see timm.list_models()")
            module = timm.create_model(name, pretrained=False, **kwargs)
        elif family == "torchvision":
            import torchvision

            module = torchvision.models.get_model(name, weights=None, **kwargs)
        else:
            raise ModelLoadError(f"model.arch must start with 'timm:' or 'torchvision:', got {arch!r}")
    except ModelLoadError:
        raise
    except Exception as err:  # noqa: BLE001
        raise ModelLoadError(f"cannot build {arch} with {kwargs}: {type(err).__name__}: {err}") from err
    if not weights:
        raise ModelLoadError(
            f"{arch}: give a local checkpoint (model.source / MODEL path); robaudit never downloads weights"
        )
    path = _existing(weights)
    _load_state_dict(module, path)
    hints = timm_hints(module) if family == "timm" else {
        "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
    return LoadedTorch(module.eval(), _file_sha256(path), name, hints=hints,
                       provenance={"kind": family, "arch": name, "weights": str(path)})


def _load_state_dict(module: nn.Module, path: Path) -> None:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception as err:  # noqa: BLE001
            raise ModelLoadError(f"cannot read safetensors file {path}: {err}") from err
    else:
        try:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as err:
            raise UnsafeModelError(UNSAFE_MESSAGE.format(path=path)) from err
        except Exception as err:  # noqa: BLE001
            raise ModelLoadError(f"cannot read checkpoint {path}: {type(err).__name__}: {err}") from err
        for key in ("state_dict", "model", "model_state_dict"):
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict):
        raise ModelLoadError(f"{path} does not contain a state dict")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        raise ModelLoadError(
            f"the weights in {path} do not fit the architecture: {' '.join(first[:3])[:600]} "
            "(check model.factory / model.arch and its arguments, e.g. num_classes)"
        ) from err


def _call_factory(spec: str, kwargs: dict[str, Any]) -> nn.Module:
    mod_name, sep, fn_name = spec.partition(":")
    if not sep or not mod_name or not fn_name:
        raise ModelLoadError(f"model.factory must look like 'package.module:function', got {spec!r}")
    try:
        if mod_name.endswith(".py"):
            module_obj = _import_file(Path(mod_name))
        else:
            if "" not in sys.path and "." not in sys.path:
                sys.path.insert(0, "")  # allow factories in the working directory (like python -m)
            module_obj = importlib.import_module(mod_name)
        fn = getattr(module_obj, fn_name)
    except (ImportError, AttributeError, FileNotFoundError) as err:
        raise ModelLoadError(
            f"cannot import factory {spec!r}: {err}. Make sure the module is importable "
            "(run from its directory or install it)"
        ) from err
    module = fn(**kwargs)
    if not isinstance(module, nn.Module):
        raise ModelLoadError(f"factory {spec!r} returned {type(module).__name__}, not an nn.Module")
    return module


def _import_file(path: Path) -> Any:
    """Import a factory module from a ``.py`` path (the user's own code, as with ``python file.py``)."""
    import importlib.util

    if not path.is_file():
        raise FileNotFoundError(f"factory file {path} not found")
    name = f"robaudit_factory_{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _existing(source: str) -> Path:
    path = Path(source)
    if not source or not path.is_file():
        raise ModelLoadError(f"model file {source!r} not found; check the path (relative to the working directory)")
    return path


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
