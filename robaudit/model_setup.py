"""Load the configured models, their data and their defended variants for an audit."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from robaudit.config import AuditConfig, ModelConfig
from robaudit.data import Dataset, load_dataset
from robaudit.errors import CapabilityError, ConfigError, ParameterError
from robaudit.loaders import load_model
from robaudit.model import ModelAdapter, check_contract
from robaudit.registry import DEFENSES

log = logging.getLogger(__name__)
TWIN_CHECK_SAMPLES = 64


@dataclass
class AuditModel:
    name: str
    adapter: ModelAdapter
    data: Dataset
    variants: dict[str, ModelAdapter | CapabilityError]


def load_configured_model(m: ModelConfig) -> ModelAdapter:
    return load_model(
        m.source or m.arch,
        name=m.display_name,
        kind=m.kind,
        factory=m.factory,
        factory_kwargs=m.factory_kwargs,
        arch=m.arch if m.source else None,
        shape=m.input.shape,
        num_classes=m.input.num_classes,
        mean=m.input.mean,
        std=m.input.std,
        class_names=m.input.class_names,
        allow_unsafe_pickle=m.allow_unsafe_pickle,
    )


def load_audit_models(cfg: AuditConfig, device: torch.device | None = None) -> list[AuditModel]:
    """Load every model, its data (at the model's input shape) and its variants.

    The contract and ONNX twin checks run on the CPU; then the model moves to ``device``
    (default CPU) before its defended variants are built, so they live there too. The data
    stays on the CPU: the runner moves each work unit's batch.
    """
    out = []
    cache: dict[tuple[object, ...], Dataset] = {}
    for m in cfg.models:
        adapter = load_configured_model(m)
        spec = adapter.spec
        key = (spec.shape, spec.num_classes)
        if key not in cache:
            d = cfg.data
            cache[key] = load_dataset(d.source, shape=spec.shape, num_classes=spec.num_classes, n=d.n,
                                      seed=d.seed, resize=d.resize, split=d.split, root=d.root)
        data = cache[key]
        adapter.provenance.update(check_contract(adapter, batch=data.x[:8]))
        verify = getattr(adapter, "verify_twin", None)
        if verify is not None:
            verify(data.x[:TWIN_CHECK_SAMPLES])
        if device is not None:
            adapter.to(device)
        out.append(AuditModel(adapter.name, adapter, data, build_variants(cfg, adapter)))
    return out


def build_variants(cfg: AuditConfig, adapter: ModelAdapter) -> dict[str, ModelAdapter | CapabilityError]:
    """Baseline plus one defended copy per configured variant (or the reason it cannot be built)."""
    variants: dict[str, ModelAdapter | CapabilityError] = {"baseline": adapter}
    for i, v in enumerate(cfg.variants):
        if v.models is not None and adapter.name not in v.models:
            continue
        defense = DEFENSES.get(v.defense, f"variants[{i}].defense")
        try:
            variants[v.name] = defense(adapter, **v.params)
        except CapabilityError as err:
            log.info("variant %s not available for %s: %s", v.name, adapter.name, err)
            variants[v.name] = err
        except ParameterError as err:
            raise ConfigError(str(err), f"variants[{i}].params") from err
        except TypeError as err:
            raise ConfigError(f"bad parameters for defense {v.defense!r}: {err}", f"variants[{i}].params") from err
    return variants
