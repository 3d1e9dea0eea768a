"""Resolve a model's InputSpec from explicit values, hints (timm config, ONNX metadata) and defaults."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from robaudit.errors import ModelLoadError
from robaudit.model import InputSpec, set_eval


def resolve_spec(module: nn.Module, overrides: dict[str, Any], hints: dict[str, Any]) -> InputSpec:
    """Explicit ``overrides`` win over ``hints``; ``num_classes`` may be inferred by one forward pass.

    Raises ModelLoadError naming the missing field when the shape cannot be determined.
    """
    values = {k: v for k, v in hints.items() if v is not None}
    values.update({k: v for k, v in overrides.items() if v is not None})
    if "shape" not in values:
        raise ModelLoadError(
            "cannot tell the model's input shape; give it explicitly: model.input.shape = [C, H, W] "
            "in the config, or --input-shape C,H,W on the command line"
        )
    shape = tuple(int(s) for s in values["shape"])
    channels = shape[0] if len(shape) == 3 else 3
    mean = tuple(float(m) for m in values.get("mean", (0.0,) * channels))
    std = tuple(float(s) for s in values.get("std", (1.0,) * channels))
    num_classes = values.get("num_classes")
    if num_classes is None:
        num_classes = _infer_num_classes(module, shape)
    names = values.get("class_names")
    return InputSpec(
        shape=shape,  # type: ignore[arg-type]
        num_classes=int(num_classes),
        mean=mean,
        std=std,
        class_names=tuple(str(n) for n in names) if names else None,
    )


def _infer_num_classes(module: nn.Module, shape: tuple[int, ...]) -> int:
    try:
        with torch.no_grad():
            set_eval(module)
            out = module(torch.zeros((1, *shape)))
    except Exception as err:  # noqa: BLE001
        raise ModelLoadError(
            f"model failed on an input of shape {(1, *shape)} ({type(err).__name__}: {err}); "
            "check model.input.shape"
        ) from err
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        raise ModelLoadError(
            "the model does not return logits of shape (N, num_classes); a classifier must return one tensor"
        )
    return int(out.shape[1])


def timm_hints(model: nn.Module) -> dict[str, Any]:
    """Input hints from a timm model's pretrained config (input_size, mean, std, num_classes)."""
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
    hints: dict[str, Any] = {}
    if cfg.get("input_size"):
        hints["shape"] = tuple(cfg["input_size"])
    img_size = getattr(getattr(model, "patch_embed", None), "img_size", None)
    if img_size is not None and "shape" in hints:
        hints["shape"] = (hints["shape"][0], *tuple(img_size))
    for key in ("mean", "std"):
        if cfg.get(key):
            hints[key] = tuple(cfg[key])
    if getattr(model, "num_classes", None):
        hints["num_classes"] = int(model.num_classes)
    return hints
