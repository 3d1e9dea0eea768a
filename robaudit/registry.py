"""Explicit, queryable registries of stages and defenses. Names are config keys.

Built-ins are listed here as lazy ``"module:attr"`` references, so importing the
registry imports no method code. Third-party stages may come from the entry-point
group ``robaudit.stages`` (defenses: ``robaudit.defenses``); an entry point is
loaded only when a config names it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from robaudit.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Name -> lazily imported object. Duplicate names are errors."""

    def __init__(self, what: str, entry_point_group: str) -> None:
        self._what = what
        self._group = entry_point_group
        self._refs: dict[str, str | T] = {}

    def register(self, name: str, target: str | T) -> None:
        if name in self._refs:
            raise ValueError(f"duplicate {self._what} name {name!r}")
        self._refs[name] = target

    def unregister(self, name: str) -> None:
        self._refs.pop(name, None)

    def names(self) -> list[str]:
        return sorted(self._refs)

    def __contains__(self, name: str) -> bool:
        return name in self._refs or self._entry_point(name) is not None

    def get(self, name: str, path: str = "") -> T:
        ref = self._refs.get(name)
        if ref is None:
            ep = self._entry_point(name)
            if ep is None:
                raise ConfigError(
                    f"unknown {self._what} {name!r}; known: {', '.join(self.names())} "
                    f"(or install a plugin that provides it under the entry point group {self._group!r})",
                    path,
                )
            return ep.load()  # type: ignore[no-any-return]
        if isinstance(ref, str):
            module, _, attr = ref.partition(":")
            obj = getattr(importlib.import_module(module), attr)
            self._refs[name] = obj
            return obj  # type: ignore[no-any-return]
        return ref

    def items(self) -> Iterator[tuple[str, T]]:
        for name in self.names():
            yield name, self.get(name)

    def _entry_point(self, name: str) -> Any:
        from importlib.metadata import entry_points

        for ep in entry_points(group=self._group):
            if ep.name == name:
                return ep
        return None


STAGES: Registry[Any] = Registry("stage", "robaudit.stages")
DEFENSES: Registry[Callable[..., Any]] = Registry("defense", "robaudit.defenses")

# Built-in stages. Capability issues add their stages here.
for _name, _ref in {
    "clean_accuracy": "robaudit.stages.clean_accuracy:CleanAccuracy",
    "robust_accuracy": "robaudit.attacks.stages.robust_accuracy:RobustAccuracy",
    "eps_sweep": "robaudit.attacks.stages.eps_sweep:EpsSweep",
    "corruptions": "robaudit.attacks.stages.corruption_accuracy:CorruptionAccuracy",
    "fourier": "robaudit.attacks.stages.fourier_sensitivity:FourierSensitivity",
    "patch_corruption": "robaudit.attacks.stages.patch_corruption:PatchCorruption",
    "patch_attack": "robaudit.attacks.stages.patch_attack:PatchAttackStage",
    "attention": "robaudit.stages.attention_analysis:AttentionAnalysis",
    "temperature_defense": "robaudit.stages.temperature_defense:TemperatureDefense",
    "smoothing": "robaudit.certify.certified_accuracy:CertifiedAccuracy",
    "lirpa": "robaudit.certify.verified_accuracy:VerifiedAccuracy",
    "realistic_patch": "robaudit.attacks.stages.realistic_patch:RealisticPatch",
    "counterfactual": "robaudit.stages.counterfactual_stability:CounterfactualStability",
    "causal": "robaudit.stages.causal_attribution:CausalAttribution",
}.items():
    STAGES.register(_name, _ref)

# Built-in defenses: functions ModelAdapter -> ModelAdapter returning a copy.
for _name, _ref in {
    "attention_temperature": "robaudit.defenses.attention_temperature:attention_temperature",
}.items():
    DEFENSES.register(_name, _ref)
