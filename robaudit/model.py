"""The model contract: every audited classifier is a :class:`ModelAdapter`.

Inputs are float32 NCHW images in [0, 1]. Normalisation (mean/std) lives inside
the adapter, so every epsilon and radius robaudit reports is in pixel space.
"""

from __future__ import annotations

import enum
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from robaudit.errors import CapabilityError, ModelLoadError


class Capability(str, enum.Enum):
    """What an adapter can do; stages declare the capabilities they require."""

    GRADIENTS = "gradients"  #: logits() is differentiable w.r.t. the input
    TORCH_MODULE = "torch_module"  #: torch_module() returns an nn.Module (LiRPA, hooks)
    ATTENTION = "attention"  #: a timm ViT-family model whose attention can be read


@dataclass(frozen=True)
class InputSpec:
    """The input contract of a model: shape (C, H, W), classes and normalisation."""

    shape: tuple[int, int, int]
    num_classes: int
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    class_names: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if len(self.shape) != 3 or any(int(s) <= 0 for s in self.shape):
            raise ModelLoadError(
                f"input shape must be (C, H, W) with positive sizes, got {self.shape}; "
                "set model.input.shape = [C, H, W] in the config"
            )
        channels = self.shape[0]
        for name in ("mean", "std"):
            value = getattr(self, name)
            if len(value) == 1 and channels != 1:
                object.__setattr__(self, name, tuple(value) * channels)
            elif len(value) != channels:
                raise ModelLoadError(
                    f"input {name} has {len(value)} values but the model has {channels} channels; "
                    f"give one {name} value per channel"
                )
        if any(s <= 0 for s in self.std):
            raise ModelLoadError(f"input std must be positive, got {self.std}")
        if self.num_classes < 2:
            raise ModelLoadError(f"num_classes must be >= 2, got {self.num_classes}")
        if self.class_names is not None and len(self.class_names) != self.num_classes:
            raise ModelLoadError(
                f"{len(self.class_names)} class names given for {self.num_classes} classes; "
                "give exactly one name per class or none"
            )

    def class_name(self, index: int) -> str:
        return self.class_names[index] if self.class_names else str(index)

    def to_json(self) -> dict[str, Any]:
        return {
            "shape": list(self.shape),
            "num_classes": self.num_classes,
            "mean": list(self.mean),
            "std": list(self.std),
            "class_names": list(self.class_names) if self.class_names else None,
        }


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel, as the first layer of the wrapped network."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class PixelSpaceModel(nn.Module):
    """``net(normalize(x))``: an nn.Module that takes [0, 1] images."""

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))


class ModelAdapter(ABC):
    """One audited classifier, backend hidden (PyTorch module or ONNX file).

    Attributes:
        name: display name (user-provided; escaped wherever rendered).
        spec: the input contract.
        capabilities: what this adapter supports (see :class:`Capability`).
        fingerprint: sha256 of the weights or the model file.
        provenance: JSON-native facts about the load (source kind, paths, converter checks).
    """

    name: str
    spec: InputSpec
    capabilities: frozenset[Capability]
    fingerprint: str
    provenance: dict[str, Any]

    @abstractmethod
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, num_classes)`` for images ``x`` in [0, 1]."""

    def torch_module(self) -> nn.Module:
        """An eval-mode nn.Module taking [0, 1] inputs, or CapabilityError."""
        raise CapabilityError(
            f"model {self.name!r} has no torch module: gradient-based and LiRPA methods need a "
            "PyTorch model or an ONNX model whose torch twin could be built"
        )

    @torch.no_grad()
    def predict(self, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Top-1 labels for ``x`` (no gradients), batched."""
        out = [self.logits(x[i : i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)]
        return torch.cat(out) if out else torch.empty(0, dtype=torch.long)

    def has(self, capability: Capability) -> bool:
        return capability in self.capabilities

    @property
    def device(self) -> torch.device:
        """Where :meth:`logits` wants its inputs (outputs come back on the input's device)."""
        return torch.device("cpu")

    def to(self, device: torch.device | str) -> ModelAdapter:
        """Move the torch parts of this adapter to ``device`` in place; returns ``self``.

        Adapters without torch parts (onnxruntime sessions) accept inputs on any device.
        """
        return self

    def with_module(self, module: nn.Module, name: str, note: str) -> ModelAdapter:
        """A copy of this adapter running ``module`` (a defended copy of torch_module())."""
        return TorchModelAdapter(
            module,
            self.spec,
            name=name,
            fingerprint=self.fingerprint,
            provenance={**self.provenance, "defense": note},
            pixel_space=True,
        )


class TorchModelAdapter(ModelAdapter):
    """Adapter over an in-memory PyTorch classifier.

    Args:
        module: the network. Unless ``pixel_space`` is true it expects normalised
            inputs and is wrapped in :class:`PixelSpaceModel`.
        spec: input contract.
        name: display name.
        fingerprint: sha256 identifying the weights (computed if empty).
        provenance: facts about where the model came from.
        pixel_space: ``module`` already takes [0, 1] inputs.
    """

    def __init__(
        self,
        module: nn.Module,
        spec: InputSpec,
        *,
        name: str = "model",
        fingerprint: str = "",
        provenance: dict[str, Any] | None = None,
        pixel_space: bool = False,
    ) -> None:
        set_eval(module)
        self._module = module if pixel_space else PixelSpaceModel(module, spec.mean, spec.std)
        set_eval(self._module)
        for p in self._module.parameters():
            p.requires_grad_(False)
        self.name = name
        self.spec = spec
        self.fingerprint = fingerprint or fingerprint_module(self._module)
        self.provenance = dict(provenance or {})
        caps = {Capability.GRADIENTS, Capability.TORCH_MODULE}
        if _has_timm_attention(self._module):
            caps.add(Capability.ATTENTION)
        self.capabilities = frozenset(caps)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self._module(x)

    def torch_module(self) -> nn.Module:
        return self._module

    @property
    def device(self) -> torch.device:
        for t in self._module.parameters():
            return t.device
        for t in self._module.buffers():
            return t.device
        return torch.device("cpu")

    def to(self, device: torch.device | str) -> TorchModelAdapter:
        self._module.to(device)
        return self


def set_eval(module: nn.Module) -> None:
    """``module.eval()``, also for torch.export modules that refuse ``.eval()``."""
    try:
        module.eval()
    except (NotImplementedError, RuntimeError):
        for m in module.modules():
            m.training = False


def fingerprint_module(module: nn.Module) -> str:
    """sha256 over the state dict (names, dtypes, shapes and bytes), in key order."""
    import hashlib

    h = hashlib.sha256()
    for key, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(key.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _has_timm_attention(module: nn.Module) -> bool:
    import sys

    layers = sys.modules.get("timm.layers")  # a model built from timm classes has imported them
    if layers is None:  # importing timm costs seconds per process: not for a model without it
        return False
    return any(isinstance(m, layers.Attention) for m in module.modules())


def check_contract(model: ModelAdapter, *, batch: torch.Tensor | None = None) -> dict[str, Any]:
    """Run the model once and verify the contract; returns facts for provenance.

    Checks: output shape ``(N, num_classes)``, finite logits, eval mode (torch modules),
    deterministic output on a repeat call. Raises ModelLoadError naming the fix.
    """
    c, h, w = model.spec.shape
    if batch is None:
        gen = torch.Generator().manual_seed(0)
        batch = torch.rand((2, c, h, w), generator=gen)
    if tuple(batch.shape[1:]) != (c, h, w):
        raise ModelLoadError(
            f"the data has images of shape {tuple(batch.shape[1:])} but model {model.name!r} "
            f"expects {(c, h, w)}; set model.input.shape or resize the data (data.resize = true)"
        )
    if model.has(Capability.TORCH_MODULE):
        module = model.torch_module()
        training = [n for n, m in module.named_modules() if m.training]
        if training:
            raise ModelLoadError(
                f"model {model.name!r} has modules in training mode ({training[0]!r}); call .eval()"
            )
    try:
        with torch.no_grad():
            out = model.logits(batch)
    except Exception as err:  # noqa: BLE001 - any failure here is a contract failure
        raise ModelLoadError(
            f"model {model.name!r} failed on a batch of shape {tuple(batch.shape)}: "
            f"{type(err).__name__}: {err}. Check model.input.shape (C, H, W) and the architecture"
        ) from err
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != batch.shape[0]:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelLoadError(
            f"model {model.name!r} returned {shape} for a batch of {batch.shape[0]}; a classifier "
            "must return logits of shape (N, num_classes) (return a single tensor, not a tuple/dict)"
        )
    if out.shape[1] != model.spec.num_classes:
        raise ModelLoadError(
            f"model {model.name!r} returns {out.shape[1]} logits but num_classes is "
            f"{model.spec.num_classes}; set model.input.num_classes = {out.shape[1]} "
            "or check the checkpoint"
        )
    if not torch.isfinite(out).all():
        raise ModelLoadError(
            f"model {model.name!r} returned non-finite logits (NaN/inf) on valid [0, 1] inputs; "
            "check the weights and the normalisation (model.input.mean/std)"
        )
    return {"contract_checked": True, "logit_range": [float(out.min()), float(out.max())]}

