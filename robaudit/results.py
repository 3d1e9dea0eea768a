"""Frozen, JSON-native result records. ``results.json`` is the single source of truth.

Nothing here holds a model or a tensor; the report renderers import only this module.
"""

from __future__ import annotations

import enum
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SCHEMA_VERSION = "1.0"


class StageStatus(str, enum.Enum):
    OK = "OK"
    ERROR = "ERROR"  #: the stage raised: the audit is broken, never a pass
    SKIPPED = "SKIPPED"  #: not applicable (missing capability, bad fit); never a pass


class Verdict(str, enum.Enum):
    PASS = "PASS"
    WARN = "WARN"  #: only warn-severity gates failed
    FAIL = "FAIL"  #: a fail-severity gate failed
    ERROR = "ERROR"  #: a stage errored


@dataclass(frozen=True)
class StageResult:
    """One stage run on one model variant.

    ``metrics`` maps stable dotted names (``accuracy``, ``accuracy.ci_low``) to floats;
    gates address them as ``<stage id>.<metric>``. ``figures`` are JSON-native plot specs
    (see robaudit.figures) rendered by reports/.
    """

    id: str
    stage: str
    model: str
    variant: str
    status: StageStatus
    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    duration_s: float = 0.0
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    figures: list[dict[str, Any]] = field(default_factory=list)
    budget: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    @property
    def key(self) -> str:
        return f"{self.model}/{self.variant}/{self.id}"


@dataclass(frozen=True)
class GateResult:
    """One gate evaluated on one (model, variant)."""

    name: str
    metric: str
    op: str
    threshold: float
    model: str
    variant: str
    severity: str
    passed: bool
    value: float | None
    message: str
    baseline_value: float | None = None


@dataclass(frozen=True)
class ModelRecord:
    name: str
    fingerprint: str
    spec: dict[str, Any]
    capabilities: list[str]
    provenance: dict[str, Any]
    variants: list[str]


@dataclass(frozen=True)
class AuditResult:
    """The whole audit: provenance, every stage result, gates and the verdict."""

    schema_version: str
    robaudit_version: str
    created: str
    config: dict[str, Any]
    models: list[ModelRecord]
    data: dict[str, Any]
    environment: dict[str, Any]
    stages: list[StageResult]
    gates: list[GateResult]
    verdict: Verdict
    exit_code: int
    timings: dict[str, float] = field(default_factory=dict)

    def stage(self, model: str, variant: str, stage_id: str) -> StageResult | None:
        for s in self.stages:
            if (s.model, s.variant, s.id) == (model, variant, stage_id):
                return s
        return None

    def to_json(self) -> dict[str, Any]:
        return _clean(asdict(self))

    def write(self, path: str | Path) -> None:
        text = json.dumps(self.to_json(), indent=1, sort_keys=False, allow_nan=False)
        tmp = Path(str(path) + ".tmp")
        tmp.write_text(text + "\n", encoding="utf-8")
        tmp.replace(path)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AuditResult:
        data = _restore_nan(data)
        return cls(
            schema_version=data["schema_version"],
            robaudit_version=data["robaudit_version"],
            created=data["created"],
            config=data["config"],
            models=[ModelRecord(**m) for m in data["models"]],
            data=data["data"],
            environment=data["environment"],
            stages=[
                StageResult(**{**s, "status": StageStatus(s["status"])}) for s in data["stages"]
            ],
            gates=[GateResult(**g) for g in data["gates"]],
            verdict=Verdict(data["verdict"]),
            exit_code=int(data["exit_code"]),
            timings=data.get("timings", {}),
        )

    @classmethod
    def read(cls, path: str | Path) -> AuditResult:
        from robaudit.errors import DataError

        try:
            raw = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise DataError(f"cannot read results file {path}: {err}") from err
        if not isinstance(raw, dict) or raw.get("schema_version", "").split(".")[0] != SCHEMA_VERSION.split(".")[0]:
            raise DataError(
                f"{path} is not a robaudit results.json of schema {SCHEMA_VERSION} "
                "(re-run the audit with this robaudit version)"
            )
        try:
            return cls.from_json(raw)
        except (KeyError, TypeError, ValueError) as err:
            raise DataError(f"{path} is not a valid robaudit results.json: {err}") from err


NAN_TOKEN = "NaN"


def _clean(value: Any) -> Any:
    """Enums to values; non-finite floats to the string tokens 'NaN', 'Infinity', '-Infinity'."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, float):
        if math.isnan(value):
            return NAN_TOKEN
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return value
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _restore_nan(value: Any) -> Any:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k in ("metrics",) and isinstance(v, dict):
                out[k] = {mk: _to_float(mv) for mk, mv in v.items()}
            elif k in ("value", "baseline_value") and isinstance(v, str):
                out[k] = _to_float(v)
            else:
                out[k] = _restore_nan(v)
        return out
    if isinstance(value, list):
        return [_restore_nan(v) for v in value]
    return value


def _to_float(v: Any) -> Any:
    if v == NAN_TOKEN:
        return float("nan")
    if v == "Infinity":
        return float("inf")
    if v == "-Infinity":
        return float("-inf")
    return v
