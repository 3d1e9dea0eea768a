"""Create configured stage instances: registry lookup, profile defaults, validated params."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from robaudit.config import AuditConfig, Profile, StageConfig
from robaudit.errors import ConfigError, ParameterError
from robaudit.registry import DEFENSES, STAGES
from robaudit.stage import Stage
from robaudit.typed_config import build


@dataclass(frozen=True)
class ConfiguredStage:
    config: StageConfig
    stage: Stage


def create_stage(cfg: StageConfig, profile: Profile, path: str) -> Stage:
    """Instantiate ``cfg.stage`` with its profile defaults overridden by ``cfg.params``."""
    cls = STAGES.get(cfg.stage, f"{path}.stage")
    overrides: dict[str, Any] = dict(cls.profiles.get(profile.value, {}))
    overrides.update(cfg.params)
    try:
        params = build(cls.Params, overrides, f"{path}.params")
    except ParameterError as err:
        raise ConfigError(str(err), f"{path}.params") from err
    return cls(params)  # type: ignore[no-any-return]


def create_stages(cfg: AuditConfig) -> list[ConfiguredStage]:
    """All configured stages, validated up front (so config errors come before any model loads)."""
    stages = [ConfiguredStage(s, create_stage(s, cfg.profile, f"stages[{i}]")) for i, s in enumerate(cfg.stages)]
    for i, v in enumerate(cfg.variants):
        DEFENSES.get(v.defense, f"variants[{i}].defense")
    return stages
