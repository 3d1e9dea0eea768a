"""Default stage plans for ``robaudit audit MODEL --data DATA`` and the config it builds."""

from __future__ import annotations

from typing import Any

from robaudit.config import AuditConfig, parse_config
from robaudit.registry import STAGES

# (stage id, registered stage name, params) in report order; stages not (yet) registered are left out.
DEFAULT_PLAN: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("clean", "clean_accuracy", {}),
    ("robust", "robust_accuracy", {}),
    ("eps_sweep", "eps_sweep", {}),
    ("corruptions", "corruptions", {}),
    ("fourier", "fourier", {}),
    ("patch_corruption", "patch_corruption", {}),
    ("patch_attack", "patch_attack", {}),
    ("realistic_patch", "realistic_patch", {}),
    ("attention", "attention", {}),
    ("smoothing", "smoothing", {}),
    ("lirpa", "lirpa", {}),
    ("counterfactual", "counterfactual", {}),
    ("causal", "causal", {}),
)


def default_stages() -> list[dict[str, Any]]:
    return [{"id": sid, "stage": name, "params": dict(params)} for sid, name, params in DEFAULT_PLAN
            if name in STAGES.names()]


def config_from_args(model: dict[str, Any], data: dict[str, Any], *, seed: int, profile: str,
                     stages: list[str] | None, min_accuracy: float | None) -> AuditConfig:
    """A config for one model: the default plan (or the named stage ids), optional accuracy gate."""
    plan = default_stages()
    if stages:
        known = {s["id"]: s for s in plan} | {s["stage"]: s for s in plan}
        unknown = [s for s in stages if s not in known]
        if unknown:
            from robaudit.errors import ConfigError

            raise ConfigError(f"unknown stage {unknown[0]!r}; available: {', '.join(s['id'] for s in plan)}",
                              "--stages")
        plan = [known[s] for s in stages]
    gates = []
    if min_accuracy is not None:
        if not any(s["stage"] == "clean_accuracy" for s in plan):
            plan.insert(0, {"id": "clean", "stage": "clean_accuracy", "params": {}})
        clean_id = next(s["id"] for s in plan if s["stage"] == "clean_accuracy")
        gates.append({"metric": f"{clean_id}.accuracy", "op": ">=", "threshold": min_accuracy})
    raw = {"seed": seed, "profile": profile, "models": [model], "data": data, "stages": plan, "gates": gates}
    return parse_config(raw, base_dir=None)
