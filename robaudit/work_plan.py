"""Plan an audit's work: which (model, variant, stage) runs, which is skipped and why, and its work units.

Everything here is decided before any work starts and is identical on every torchrun rank:
skip reasons (missing capabilities, ``Stage.check``), parameter fit (a ConfigError, exit 2,
before anything runs), and the work units - fixed chunks of the ordered sample ids, keyed by a
hash of their ids, whatever the sharding.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from robaudit.data import Dataset
from robaudit.errors import CapabilityError, ConfigError, ParameterError
from robaudit.model import ModelAdapter
from robaudit.sharding import UnitTask
from robaudit.stage import Skip
from robaudit.stage_factory import ConfiguredStage
from robaudit.unit_exec import UnitExecutor


@dataclass
class StageJob:
    """One stage on one model variant, with its work units ``(unit key, sample ids)``."""

    cs: ConfiguredStage
    model: str
    variant: str
    adapter: ModelAdapter | CapabilityError
    data: Dataset
    skip: str | None
    units: list[tuple[str, tuple[str, ...]]]


def precheck(stages: list[ConfiguredStage], models: list[Any]) -> dict[tuple[str, str, str], str]:
    """Skip reasons per (model, variant, stage id), decided before any work starts.

    Raises ConfigError (exit 2) for parameters that cannot fit a model (e.g. a patch size that
    does not divide the image), so a bad config never fails half-way through an audit.
    """
    skips: dict[tuple[str, str, str], str] = {}
    for am in models:
        for variant_name, variant in am.variants.items():
            for i, cs in enumerate(stages):
                if not applies(cs, am.name, variant_name) or isinstance(variant, CapabilityError):
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


def applies(cs: ConfiguredStage, model: str, variant: str) -> bool:
    c = cs.config
    return (c.models is None or model in c.models) and (c.variants is None or variant in c.variants)


def plan_jobs(stages: list[ConfiguredStage], models: list[Any], skips: dict[tuple[str, str, str], str],
          unit_size: int | None) -> list[StageJob]:
    """Every (model, variant, stage) in report order, with its work units (none if it will not run).

    Units are fixed chunks of the ordered sample ids, keyed by a hash of their ids: the same
    on every rank and every run, whatever the sharding.
    """
    jobs = []
    for am in models:
        for variant_name, variant in am.variants.items():
            for cs in stages:
                if not applies(cs, am.name, variant_name):
                    continue
                data = am.data if cs.config.n is None else am.data.head(cs.config.n)
                skip = skips.get((am.name, variant_name, cs.config.id))
                size = type(cs.stage).unit_size
                if size is not None and unit_size is not None:
                    size = unit_size
                chunks = [data.ids] if size is None else [data.ids[i : i + size] for i in range(0, len(data), size)]
                runs = skip is None and not isinstance(variant, CapabilityError)
                units = [(unit_key(ids), tuple(ids)) for ids in chunks] if runs else []
                jobs.append(StageJob(cs, am.name, variant_name, variant, data, skip, units))
    return jobs


def unit_key(ids: tuple[str, ...]) -> str:
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()[:20]


def unit_tasks(jobs: list[StageJob], executor: UnitExecutor) -> list[UnitTask]:
    tasks = []
    for job in jobs:
        sid = job.cs.config.id
        for key, ids in job.units:
            def compute(job: StageJob = job, key: str = key, ids: tuple[str, ...] = ids) -> Any:
                assert not isinstance(job.adapter, CapabilityError)
                return executor.run(job.cs.config.id, job.cs.stage, job.adapter, job.data.select(ids), key)

            tasks.append(UnitTask((job.model, job.variant, sid, key), (job.model, job.variant, sid), compute))
    return tasks
