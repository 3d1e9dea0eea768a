"""The audit config: TOML (or JSON) -> a frozen, validated :class:`AuditConfig`.

Unknown keys are errors naming their key path (``stages[2].params.epz``). Relative paths
are resolved against the config file's directory. Example::

    seed = 0
    profile = "quick"
    [[models]]
    name = "cnn"
    source = "models/digits_cnn.safetensors"
    factory = "demo_models.py:make_cnn"
    input = { shape = [3, 32, 32], num_classes = 10, mean = [0.5, 0.5, 0.5], std = [0.5, 0.5, 0.5] }
    [data]
    source = "digits"
    n = 200
    [[stages]]
    id = "clean"
    stage = "clean_accuracy"
    [[gates]]
    metric = "clean.accuracy"
    op = ">="
    threshold = 0.9
"""

from __future__ import annotations

import enum
import json
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from robaudit.errors import ConfigError
from robaudit.typed_config import build


class Profile(str, enum.Enum):
    QUICK = "quick"
    STANDARD = "standard"
    FULL = "full"


class Severity(str, enum.Enum):
    FAIL = "fail"
    WARN = "warn"


OPS = (">=", ">", "<=", "<", "==")
NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


@dataclass(frozen=True)
class InputConfig:
    shape: tuple[int, int, int] | None = None
    num_classes: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    class_names: tuple[str, ...] | None = None


@dataclass(frozen=True)
class ModelConfig:
    source: str
    name: str | None = None
    kind: str = "auto"
    factory: str | None = None
    factory_kwargs: dict[str, Any] = field(default_factory=dict)
    arch: str | None = None
    input: InputConfig = field(default_factory=InputConfig)
    allow_unsafe_pickle: bool = False

    @property
    def display_name(self) -> str:
        if self.name:
            return self.name
        src = self.source or self.arch or "model"
        return Path(src.split(":")[-1]).stem or "model"


@dataclass(frozen=True)
class DataConfig:
    source: str = "digits"
    n: int | None = None
    seed: int = 0
    resize: bool = False
    split: str = "test"
    root: str | None = None


@dataclass(frozen=True)
class VariantConfig:
    name: str
    defense: str
    params: dict[str, Any] = field(default_factory=dict)
    models: tuple[str, ...] | None = None  #: apply to these models only (default: all)


@dataclass(frozen=True)
class StageConfig:
    id: str
    stage: str
    params: dict[str, Any] = field(default_factory=dict)
    models: tuple[str, ...] | None = None
    variants: tuple[str, ...] | None = None
    n: int | None = None  #: run on the first n audited samples only (expensive stages)

    def __post_init__(self) -> None:
        if self.n is not None and self.n < 1:
            raise ConfigError(f"n must be a positive number of samples, got {self.n}")


@dataclass(frozen=True)
class GateConfig:
    metric: str
    op: str = ">="
    threshold: float | None = None
    name: str | None = None
    model: str | None = None
    variant: str = "baseline"
    severity: Severity = Severity.FAIL
    max_drop: float | None = None

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ConfigError(f"op must be one of {', '.join(OPS)}, got {self.op!r}")
        if self.threshold is None and self.max_drop is None:
            raise ConfigError("a gate needs a threshold, a max_drop (against --baseline), or both")
        if "." not in self.metric:
            raise ConfigError(
                f"metric {self.metric!r} must be '<stage id>.<metric name>', e.g. 'clean.accuracy'"
            )

    @property
    def label(self) -> str:
        return self.name or f"{self.metric} {self.op} {self.threshold}"


@dataclass(frozen=True)
class AuditConfig:
    models: tuple[ModelConfig, ...]
    data: DataConfig = field(default_factory=DataConfig)
    seed: int = 0
    profile: Profile = Profile.QUICK
    unit_size: int | None = None
    variants: tuple[VariantConfig, ...] = ()
    stages: tuple[StageConfig, ...] = ()
    gates: tuple[GateConfig, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self), default=_enum_value))

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> AuditConfig:
        return parse_config(data, base_dir=None)


def _enum_value(obj: Any) -> Any:
    if isinstance(obj, enum.Enum):
        return obj.value
    raise TypeError(type(obj).__name__)


def load_config(path: str | Path, *, profile: str | None = None) -> AuditConfig:
    """Read and validate a TOML or JSON config file; ``profile`` overrides the file's."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".json":
            raw = json.loads(text)
        else:
            import tomllib

            raw = tomllib.loads(text)
    except (ValueError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'TOML'}: {err}") from err
    cfg = parse_config(raw, base_dir=path.parent)
    return replace(cfg, profile=Profile(profile)) if profile else cfg


def parse_config(raw: dict[str, Any], *, base_dir: Path | None) -> AuditConfig:
    """Validate a config mapping. A single ``[model]`` table is accepted for ``[[models]]``."""
    raw = dict(raw)
    if "model" in raw:
        if "models" in raw:
            raise ConfigError("give either [model] or [[models]], not both", "model")
        raw["models"] = [raw.pop("model")]
    if not raw.get("models"):
        raise ConfigError("the config needs at least one model ([model] or [[models]])", "models")
    cfg = build(AuditConfig, raw, "")
    if base_dir is not None:
        cfg = _resolve_paths(cfg, base_dir)
    _check_names(cfg)
    return cfg


def _resolve_paths(cfg: AuditConfig, base: Path) -> AuditConfig:
    def resolve(p: str | None) -> str | None:
        if not p or p.startswith(("timm:", "torchvision:")) or p == "digits":
            return p
        return str(p) if Path(p).is_absolute() else str(base / p)

    def resolve_factory(f: str | None) -> str | None:
        if f and f.split(":", 1)[0].endswith(".py"):
            mod, _, fn = f.partition(":")
            return f"{resolve(mod)}:{fn}"
        return f

    models = tuple(replace(m, source=resolve(m.source) or "", factory=resolve_factory(m.factory)) for m in cfg.models)

    def resolve_params(params: dict[str, Any]) -> dict[str, Any]:
        # model-like entries inside stage params (e.g. counterfactual siblings) follow the same rules
        out = dict(params)
        if isinstance(out.get("siblings"), list):
            out["siblings"] = [
                {**s, "source": resolve(s.get("source")), "factory": resolve_factory(s.get("factory"))}
                if isinstance(s, dict) else s
                for s in out["siblings"]
            ]
        return out

    stages = tuple(replace(s, params=resolve_params(s.params)) for s in cfg.stages)
    data = cfg.data
    if not data.source.startswith("torchvision:"):
        data = replace(data, source=resolve(data.source) or data.source)
    data = replace(data, root=resolve(data.root))
    return replace(cfg, models=models, data=data, stages=stages)


def _check_names(cfg: AuditConfig) -> None:
    seen: set[str] = set()
    for i, m in enumerate(cfg.models):
        name = m.display_name
        if name in seen:
            raise ConfigError(f"duplicate model name {name!r}; give each model a distinct name", f"models[{i}].name")
        seen.add(name)
    variants = {"baseline"}
    for i, v in enumerate(cfg.variants):
        if not NAME_RE.match(v.name) or v.name in variants:
            raise ConfigError(f"variant names must be unique identifiers (not 'baseline'), got {v.name!r}",
                              f"variants[{i}].name")
        variants.add(v.name)
        for m in v.models or ():
            if m not in seen:
                raise ConfigError(f"unknown model {m!r}; defined: {sorted(seen)}", f"variants[{i}].models")
    ids: set[str] = set()
    for i, s in enumerate(cfg.stages):
        if not NAME_RE.match(s.id) or "." in s.id or s.id in ids:
            raise ConfigError(f"stage ids must be unique identifiers without dots, got {s.id!r}", f"stages[{i}].id")
        ids.add(s.id)
        for v in s.variants or ():
            if v not in variants:
                raise ConfigError(f"unknown variant {v!r}; defined: {sorted(variants)}", f"stages[{i}].variants")
        for m in s.models or ():
            if m not in seen:
                raise ConfigError(f"unknown model {m!r}; defined: {sorted(seen)}", f"stages[{i}].models")
    for i, g in enumerate(cfg.gates):
        if g.metric.split(".", 1)[0] not in ids:
            raise ConfigError(
                f"gate metric {g.metric!r} names no stage id; stage ids: {sorted(ids)}", f"gates[{i}].metric"
            )
        if g.variant not in variants:
            raise ConfigError(f"unknown variant {g.variant!r}; defined: {sorted(variants)}", f"gates[{i}].variant")
        if g.model is not None and g.model not in seen:
            raise ConfigError(f"unknown model {g.model!r}; defined: {sorted(seen)}", f"gates[{i}].model")
