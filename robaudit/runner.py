"""Run an audit: models x variants x stages over committed work units, then gates.

The runner is the only place that sequences work and touches the run store; stages stay
pure. Seeds are ``derive_seed(root, stage id, unit key)``: the same for every model and
variant, so baseline and defended copies (and CNN vs ViT) see the same random draws -
paired comparisons with less Monte-Carlo noise - and independent of sharding.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import platform
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

import robaudit
from robaudit.config import AuditConfig
from robaudit.data import Dataset
from robaudit.errors import CapabilityError, ConfigError, ParameterError, RobauditError
from robaudit.gates import evaluate_gates, verdict_of
from robaudit.model import ModelAdapter
from robaudit.model_setup import load_audit_models
from robaudit.results import SCHEMA_VERSION, AuditResult, ModelRecord, StageResult, StageStatus
from robaudit.run_store import RunStore
from robaudit.seeding import derive_seed, make_generator
from robaudit.stage import Skip, Stage
from robaudit.stage_factory import ConfiguredStage, create_stages

log = logging.getLogger(__name__)
DEFAULT_UNIT_SIZE = 64


class Progress(Protocol):
    def stage(self, label: str, total_units: int) -> None: ...
    def advance(self, n: int = 1) -> None: ...
    def close(self) -> None: ...


class _NoProgress:
    def stage(self, label: str, total_units: int) -> None:
        pass

    def advance(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass
class AuditOptions:
    resume: bool = False
    fail_fast: bool = False
    baseline: AuditResult | None = None
    progress: Progress = field(default_factory=_NoProgress)
    on_unit: Callable[[str], None] | None = None  # test hook: called after each committed unit


def run_audit(cfg: AuditConfig, out_dir: Path, options: AuditOptions | None = None) -> AuditResult:
    """Run every configured stage on every model variant and evaluate the gates.

    Raises:
        RobauditError: config, model or data problems (before any stage runs).
        KeyboardInterrupt: propagated; finished units stay in the run store for --resume.
    """
    options = options or AuditOptions()
    t_start = time.perf_counter()
    stages = create_stages(cfg)
    audit_models = load_audit_models(cfg)
    skips = _precheck(stages, audit_models)
    fingerprint = _store_fingerprint(cfg, audit_models)
    store = RunStore(out_dir, fingerprint, resume=options.resume)
    results: list[StageResult] = []
    try:
        for am in audit_models:
            for variant_name, variant in am.variants.items():
                for cs in stages:
                    if not _applies(cs, am.name, variant_name):
                        continue
                    data = am.data if cs.config.n is None else am.data.head(cs.config.n)
                    results.append(_run_stage(cs, am.name, variant_name, variant, data, cfg.seed,
                                              cfg.unit_size, store, options,
                                              skips.get((am.name, variant_name, cs.config.id))))
    finally:
        store.close()
    gates = evaluate_gates(cfg.gates, results, [am.name for am in audit_models], options.baseline)
    verdict, code = verdict_of(gates, results)
    data0 = audit_models[0].data
    return AuditResult(
        schema_version=SCHEMA_VERSION,
        robaudit_version=robaudit.__version__,
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        config=cfg.to_json(),
        models=[
            ModelRecord(name=am.name, fingerprint=am.adapter.fingerprint, spec=am.adapter.spec.to_json(),
                        capabilities=sorted(c.value for c in am.adapter.capabilities),
                        provenance=_jsonable(am.adapter.provenance), variants=list(am.variants))
            for am in audit_models
        ],
        data={**data0.source, "ids_hash": data0.ids_hash, "ids": list(data0.ids),
              "class_names": list(data0.class_names) if data0.class_names else None},
        environment=environment(),
        stages=results,
        gates=gates,
        verdict=verdict,
        exit_code=code,
        timings={"total_s": round(time.perf_counter() - t_start, 3)},
    )


def _precheck(stages: list[ConfiguredStage], models: list[Any]) -> dict[tuple[str, str, str], str]:
    """Skip reasons per (model, variant, stage id), decided before any work starts.

    Raises ConfigError (exit 2) for parameters that cannot fit a model (e.g. a patch size that
    does not divide the image), so a bad config never fails half-way through an audit.
    """
    skips: dict[tuple[str, str, str], str] = {}
    for am in models:
        for variant_name, variant in am.variants.items():
            for i, cs in enumerate(stages):
                if not _applies(cs, am.name, variant_name) or isinstance(variant, CapabilityError):
                    continue
                key = (am.name, variant_name, cs.config.id)
                missing = sorted(c.value for c in type(cs.stage).requires if not variant.has(c))
                if missing:
                    reason = variant.provenance.get("twin_reason") if "gradients" in missing else None
                    skips[key] = (f"requires {', '.join(missing)}, which model {am.name!r} lacks"
                                  + (f" ({reason})" if reason else ""))
                    continue
                try:
                    cs.stage.check(variant, am.data if cs.config.n is None else am.data.head(cs.config.n))
                except Skip as skip:
                    skips[key] = str(skip)
                except ParameterError as err:
                    raise ConfigError(f"{err} (model {am.name!r})", f"stages[{i}].params") from err
    return skips


def _applies(cs: ConfiguredStage, model: str, variant: str) -> bool:
    c = cs.config
    return (c.models is None or model in c.models) and (c.variants is None or variant in c.variants)


def _run_stage(cs: ConfiguredStage, model_name: str, variant_name: str, variant: ModelAdapter | CapabilityError,
               data: Dataset, root_seed: int, unit_size: int | None, store: RunStore,
               options: AuditOptions, skip_reason: str | None) -> StageResult:
    stage, sid = cs.stage, cs.config.id
    seed = derive_seed(root_seed, sid)
    base = dict(id=sid, stage=cs.config.stage, model=model_name, variant=variant_name,
                params=stage.params_json(), seed=seed)
    t0 = time.perf_counter()
    if isinstance(variant, CapabilityError):
        return StageResult(**base, status=StageStatus.SKIPPED, notes=[f"variant not available: {variant}"])
    if skip_reason is not None:
        return StageResult(**base, status=StageStatus.SKIPPED, notes=[skip_reason])
    try:
        arrays, counters, unit_time = _run_units(stage, sid, model_name, variant_name, variant, data,
                                                 root_seed, unit_size, store, options)
        t_summary = time.perf_counter()
        out = stage.summarize(arrays, data, counters)
    except Skip as skip:
        return StageResult(**base, status=StageStatus.SKIPPED, notes=[str(skip)],
                           duration_s=round(time.perf_counter() - t0, 3))
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as err:  # noqa: BLE001 - a broken stage is a record, not a crash
        if options.fail_fast:
            raise
        log.exception("stage %s failed on %s/%s", sid, model_name, variant_name)
        detail = "".join(traceback.format_exception(type(err), err, err.__traceback__)[-6:])
        message = str(err) if isinstance(err, RobauditError) else f"{type(err).__name__}: {err}"
        return StageResult(**base, status=StageStatus.ERROR, error=f"{message}\n{detail}",
                           duration_s=round(time.perf_counter() - t0, 3))
    duration = unit_time + (time.perf_counter() - t_summary)
    budget = {"samples_audited": len(data), **out.budget, **{f"total_{k}": v for k, v in counters.items()}}
    return StageResult(**base, status=StageStatus.OK, metrics={k: float(v) for k, v in out.metrics.items()},
                       notes=list(out.notes), warnings=list(out.warnings), figures=list(out.figures),
                       budget=_jsonable(budget), duration_s=round(duration, 3))


def _run_units(stage: Stage, sid: str, model_name: str, variant_name: str, model: ModelAdapter, data: Dataset,
               root_seed: int, unit_size: int | None, store: RunStore,
               options: AuditOptions) -> tuple[dict[str, np.ndarray], dict[str, float], float]:
    size = type(stage).unit_size
    if size is not None and unit_size is not None:
        size = unit_size
    units = [data.ids] if size is None else [data.ids[i : i + size] for i in range(0, len(data), size)]
    options.progress.stage(f"{model_name}/{variant_name}/{sid}", len(units))
    parts: list[dict[str, np.ndarray]] = []
    counters: dict[str, float] = {}
    total_time = 0.0
    for ids in units:
        key = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:20]
        cached = store.get(model_name, variant_name, sid, key)
        if cached is None:
            t0 = time.perf_counter()
            gen = make_generator(derive_seed(root_seed, sid, key))
            unit = stage.run_unit(model, data.select(ids), generator=gen)
            arrays = {k: np.asarray(v) for k, v in unit.arrays.items()}
            unit_counters, duration = dict(unit.counters), time.perf_counter() - t0
            store.put(model_name, variant_name, sid, key, arrays, unit_counters, duration)
            if options.on_unit:
                options.on_unit(f"{model_name}/{variant_name}/{sid}/{key}")
        else:
            arrays, unit_counters, duration = cached
        parts.append(arrays)
        total_time += duration
        for k, v in unit_counters.items():
            counters[k] = counters.get(k, 0.0) + float(v)
        options.progress.advance()
    merged = parts[0] if len(parts) == 1 else {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return merged, counters, total_time


def _store_fingerprint(cfg: AuditConfig, models: list[Any]) -> str:
    text = json.dumps({
        "config": cfg.to_json(),
        "models": [(m.name, m.adapter.fingerprint) for m in models],
        "data": [m.data.ids_hash for m in models],
        "version": robaudit.__version__,
    }, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def environment() -> dict[str, Any]:
    import importlib.metadata as md

    versions = {}
    for pkg in ("torch", "torchvision", "timm", "onnx", "onnxruntime", "onnx2torch", "numpy", "scipy"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    return {"python": platform.python_version(), "platform": platform.platform(), "packages": versions,
            "torch_threads": torch.get_num_threads(), "device": "cpu"}


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda o: o.item() if hasattr(o, "item") else str(o)))
