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
from robaudit.device import describe, resolve_device
from robaudit.errors import CapabilityError, RobauditError
from robaudit.gates import evaluate_gates, verdict_of
from robaudit.model_setup import load_audit_models
from robaudit.results import SCHEMA_VERSION, AuditResult, ModelRecord, StageResult, StageStatus
from robaudit.run_store import RunStore
from robaudit.seeding import derive_seed
from robaudit.sharding import RankContext, barrier, compute_shard, open_main_store
from robaudit.stage import Skip
from robaudit.stage_factory import create_stages
from robaudit.unit_exec import OOM_COUNTER, UnitExecutor
from robaudit.work_plan import StageJob, plan_jobs, precheck, unit_tasks

log = logging.getLogger(__name__)


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
    device: str = "auto"  # cpu | cuda | cuda:N | auto
    ranks: RankContext = field(default_factory=RankContext)  # torchrun position (sharding)


def run_audit(cfg: AuditConfig, out_dir: Path, options: AuditOptions | None = None) -> AuditResult | None:
    """Run every configured stage on every model variant and evaluate the gates.

    Under torchrun (``options.ranks.world_size > 1``) every rank computes its share of the work
    units (see robaudit.sharding); rank 0 returns the result, the other ranks return None.

    Raises:
        RobauditError: config, model, data or device problems (before any stage runs).
        KeyboardInterrupt: propagated; finished units stay in the run store for --resume.
    """
    options = options or AuditOptions()
    ranks = options.ranks
    t_start = time.perf_counter()
    stages = create_stages(cfg)
    device = resolve_device(options.device, ranks.local_rank)
    audit_models = load_audit_models(cfg, device)
    jobs = plan_jobs(stages, audit_models, precheck(stages, audit_models), cfg.unit_size)
    fingerprint = _store_fingerprint(cfg, audit_models, device)
    executor = UnitExecutor(device, cfg.seed)
    barrier(ranks)  # setup_s includes waiting for the slowest rank's start-up; run_s starts together
    t_run = time.perf_counter()
    store = (open_main_store(out_dir, fingerprint, resume=options.resume, world_size=ranks.world_size)
             if ranks.is_main else None)
    try:
        if ranks.sharded:
            compute_shard(unit_tasks(jobs, executor), ranks, out_dir, fingerprint, resume=options.resume,
                          main_store=store, fail_fast=options.fail_fast,
                          on_start=lambda n: options.progress.stage(f"rank {ranks.rank}: work units", n),
                          on_unit=lambda key: _unit_done(options, key))
        t_sharded = time.perf_counter()
        if store is None:
            return None
        results = [_run_stage(job, store, executor, options) for job in jobs]
        t_done = time.perf_counter()
    finally:
        if store is not None:
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
        environment=environment(device, ranks.world_size),
        stages=results,
        gates=gates,
        verdict=verdict,
        exit_code=code,
        timings={"total_s": round(time.perf_counter() - t_start, 3),
                 "setup_s": round(t_run - t_start, 3),  # models, data, checks (every rank pays it)
                 "run_s": round(t_done - t_run, 3),  # work units (sharded) and summaries
                 **({"sharded_units_s": round(t_sharded - t_run, 3)} if ranks.sharded else {})},
    )


def _unit_done(options: AuditOptions, key: str) -> None:
    options.progress.advance()
    if options.on_unit:
        options.on_unit(key)


def _run_stage(job: StageJob, store: RunStore, executor: UnitExecutor, options: AuditOptions) -> StageResult:
    cs, sid = job.cs, job.cs.config.id
    stage = cs.stage
    seed = derive_seed(executor.root_seed, sid)
    base = dict(id=sid, stage=cs.config.stage, model=job.model, variant=job.variant,
                params=stage.params_json(), seed=seed)
    t0 = time.perf_counter()
    if isinstance(job.adapter, CapabilityError):
        return StageResult(**base, status=StageStatus.SKIPPED, notes=[f"variant not available: {job.adapter}"])
    if job.skip is not None:
        return StageResult(**base, status=StageStatus.SKIPPED, notes=[job.skip])
    try:
        arrays, counters, unit_time = _run_units(job, store, executor, options)
        t_summary = time.perf_counter()
        out = stage.summarize(arrays, job.data, counters)
    except Skip as skip:
        return StageResult(**base, status=StageStatus.SKIPPED, notes=[str(skip)],
                           duration_s=round(time.perf_counter() - t0, 3))
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as err:  # noqa: BLE001 - a broken stage is a record, not a crash
        if options.fail_fast:
            raise
        log.exception("stage %s failed on %s/%s", sid, job.model, job.variant)
        detail = "".join(traceback.format_exception(type(err), err, err.__traceback__)[-6:])
        message = str(err) if isinstance(err, RobauditError) else f"{type(err).__name__}: {err}"
        return StageResult(**base, status=StageStatus.ERROR, error=f"{message}\n{detail}",
                           duration_s=round(time.perf_counter() - t0, 3))
    duration = unit_time + (time.perf_counter() - t_summary)
    budget = {"samples_audited": len(job.data), **out.budget, **{f"total_{k}": v for k, v in counters.items()}}
    notes = list(out.notes)
    if counters.get(OOM_COUNTER):
        notes.append(f"ran out of memory {int(counters[OOM_COUNTER])} time(s) on {executor.device}; "
                     "retried with a halved batch size or unit each time (same generator state)")
    return StageResult(**base, status=StageStatus.OK, metrics={k: float(v) for k, v in out.metrics.items()},
                       notes=notes, warnings=list(out.warnings), figures=list(out.figures),
                       budget=_jsonable(budget), duration_s=round(duration, 3))


def _run_units(job: StageJob, store: RunStore, executor: UnitExecutor,
               options: AuditOptions) -> tuple[dict[str, np.ndarray], dict[str, float], float]:
    sid = job.cs.config.id
    assert not isinstance(job.adapter, CapabilityError)
    options.progress.stage(f"{job.model}/{job.variant}/{sid}", len(job.units))
    parts: list[dict[str, np.ndarray]] = []
    counters: dict[str, float] = {}
    total_time = 0.0
    for key, ids in job.units:
        cached = store.get(job.model, job.variant, sid, key)
        if cached is None:
            arrays, unit_counters, duration = executor.run(sid, job.cs.stage, job.adapter, job.data.select(ids), key)
            store.put(job.model, job.variant, sid, key, arrays, unit_counters, duration)
            if options.on_unit:
                options.on_unit(f"{job.model}/{job.variant}/{sid}/{key}")
        else:
            arrays, unit_counters, duration = cached
        parts.append(arrays)
        total_time += duration
        for k, v in unit_counters.items():
            counters[k] = counters.get(k, 0.0) + float(v)
        options.progress.advance()
    merged = parts[0] if len(parts) == 1 else {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return merged, counters, total_time


def _store_fingerprint(cfg: AuditConfig, models: list[Any], device: torch.device) -> str:
    text = json.dumps({
        "config": cfg.to_json(),
        "device": device.type,  # CPU and CUDA round differently: never mix their units
        "models": [(m.name, m.adapter.fingerprint) for m in models],
        "data": [m.data.ids_hash for m in models],
        "version": robaudit.__version__,
    }, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def environment(device: torch.device | None = None, world_size: int = 1) -> dict[str, Any]:
    import importlib.metadata as md

    versions = {}
    for pkg in ("torch", "torchvision", "timm", "onnx", "onnxruntime", "onnx2torch", "numpy", "scipy"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    return {"python": platform.python_version(), "platform": platform.platform(), "packages": versions,
            "torch_threads": torch.get_num_threads(),
            "device": describe(device) if device is not None else "cpu", "world_size": world_size}


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=lambda o: o.item() if hasattr(o, "item") else str(o)))
