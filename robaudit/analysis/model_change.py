"""Model change for counterfactual robust validity: user-supplied siblings, or a labelled weight-noise proxy.

Guarantee: sibling checkpoints are loaded with the audited model's input spec (shape,
classes, mean/std), so they see the same [0, 1] images. Without siblings, robaudit
simulates change by N copies of the torch module with Gaussian weight noise of relative
scale s (per tensor: sd = s * RMS of that tensor) [robaudit choice]. That proxy is NOT a
naturally-occurring model change (retraining, fine-tuning): results from it are labelled
"proxy, not naturally-occurring change" and carry ``_proxy`` in their metric names.

Paper: Hamman et al., ICML 2023 evaluate robust validity on 50 models retrained from fresh
initialisations (METHODS §6.3, §6.5).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from robaudit.errors import ParameterError
from robaudit.model import ModelAdapter

PROXY_LABEL = "proxy, not naturally-occurring change"
SIBLING_KEYS = frozenset({"source", "factory", "factory_kwargs", "name", "kind", "arch"})

LogitsFn = Callable[[torch.Tensor], torch.Tensor]


def check_siblings(siblings: Sequence[Mapping[str, Any]]) -> None:
    """Raise ParameterError naming the fix for a malformed ``siblings`` list."""
    for i, s in enumerate(siblings):
        if not isinstance(s, Mapping) or "source" not in s:
            raise ParameterError(f"siblings[{i}] must be a table with a 'source' path (and usually a 'factory' "
                                 "'module:function'), e.g. {source = 'models/seed1.safetensors', factory = ...}")
        unknown = sorted(set(s) - SIBLING_KEYS)
        if unknown:
            raise ParameterError(f"siblings[{i}] has unknown key {unknown[0]!r}; known: {sorted(SIBLING_KEYS)}")


def load_siblings(model: ModelAdapter, siblings: Sequence[Mapping[str, Any]]) -> list[tuple[str, LogitsFn]]:
    """Load each sibling with :func:`robaudit.loaders.load_model` and the audited model's spec,
    on the audited model's device (``model.device``)."""
    from robaudit.loaders import load_model

    spec = model.spec
    out: list[tuple[str, LogitsFn]] = []
    for i, s in enumerate(siblings):
        kwargs = {k: s[k] for k in ("factory", "factory_kwargs", "kind", "arch") if k in s}
        sib = load_model(s["source"], name=s.get("name"), shape=list(spec.shape), num_classes=spec.num_classes,
                         mean=tuple(spec.mean), std=tuple(spec.std), **kwargs)
        sib = sib.to(model.device)
        out.append((str(s.get("name") or f"sibling{i}:{s['source']}"), sib.logits))
    return out


def weight_noise_models(module: nn.Module, *, n: int, scale: float,
                        generator: torch.Generator) -> list[tuple[str, LogitsFn]]:
    """``n`` deep copies of ``module`` with Gaussian weight noise of relative scale ``scale`` (proxy)."""
    if n < 1 or not scale > 0:
        raise ParameterError(f"the weight-noise proxy needs proxy_models >= 1 and proxy_scale > 0, got {n}, {scale}")
    out: list[tuple[str, LogitsFn]] = []
    for i in range(n):
        m = copy.deepcopy(module).eval()
        with torch.no_grad():
            for p in m.parameters():
                if not p.is_floating_point() or p.numel() == 0:
                    continue
                rms = p.detach().pow(2).mean().sqrt()
                noise = torch.randn(p.shape, generator=generator, dtype=p.dtype, device=generator.device)
                p.add_(noise.to(p.device) * scale * rms)
        out.append((f"proxy{i}", m))
    return out


@torch.no_grad()
def still_valid(models: Sequence[tuple[str, LogitsFn]], x: torch.Tensor, target: torch.Tensor,
                batch_size: int = 256) -> torch.Tensor:
    """(N, M) bool: whether model m still predicts ``target`` on CF n."""
    cols = []
    for _, f in models:
        pred = torch.cat([f(x[i : i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])
        cols.append(pred.cpu() == target.cpu())
    return torch.stack(cols, dim=1) if cols else torch.zeros(len(x), 0, dtype=torch.bool)
