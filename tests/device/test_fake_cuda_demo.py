"""Every stage of the demo audit on a fake CUDA device (CPU emulation): no device mix-ups, same results.

The runner puts the model and each work unit's batch on the audit device and hands stages CPU
generators; a stage that creates host tensors and mixes them with device tensors, or calls
``.numpy()`` on a device tensor, works on a CPU-only CI machine and crashes on a GPU. This test
runs ``Stage.check`` and the first work unit of every (model, variant, stage) of
``examples/demo.toml`` twice - plainly and under :class:`FakeCuda` - and requires no
:class:`DeviceMix` and bit-identical unit arrays.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from robaudit.certify import certified_accuracy

from robaudit.config import load_config
from robaudit.model_setup import load_audit_models
from robaudit.seeding import make_generator
from robaudit.stage_factory import create_stages
from robaudit.unit_exec import UnitExecutor
from robaudit.work_plan import StageJob, plan_jobs, precheck
from tests.device.fake_cuda import FakeCuda

DEMO = Path(__file__).resolve().parents[2] / "examples" / "demo.toml"
N = 16  # audited samples per stage (the first unit of each stage)
CUDA = torch.device("cuda", 0)


@pytest.fixture(scope="module")
def demo_jobs() -> dict[str, StageJob]:
    torch.set_num_threads(1)
    cfg = load_config(DEMO)
    stages = create_stages(cfg)
    models = load_audit_models(cfg)
    for am in models:
        am.data = am.data.head(N)
    jobs = plan_jobs(stages, models, precheck(stages, models), cfg.unit_size)
    return {f"{j.model}/{j.variant}/{j.cs.config.id}": j for j in jobs if j.units}


def _job_ids() -> list[str]:
    cfg = load_config(DEMO)
    ids = []
    for m in cfg.models:
        variants = ["baseline"] + [v.name for v in cfg.variants if v.models is None or m.display_name in v.models]
        for v in variants:
            for s in cfg.stages:
                if (s.models is None or m.display_name in s.models) and (s.variants is None or v in s.variants):
                    ids.append(f"{m.display_name}/{v}/{s.id}")
    return ids


def _device_tensors(job: StageJob) -> list[torch.Tensor]:
    module = job.adapter.torch_module()  # type: ignore[union-attr]
    return [*module.parameters(), *module.buffers()]


@pytest.mark.slow
@pytest.mark.parametrize("key", _job_ids())
def test_stage_runs_on_fake_cuda_with_identical_results(demo_jobs: dict[str, StageJob], key: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    if key not in demo_jobs:
        pytest.skip(f"{key} does not run on the demo (skipped stage)")
    job = demo_jobs[key]
    sid, stage = job.cs.config.id, job.cs.stage
    unit_key, ids = job.units[0]
    fake = FakeCuda()
    # smoothing draws its noise with a generator on the model's device, which cannot be faked: it gets a
    # CPU generator here, and its sampler must then move each noisy batch to the model (one copy per batch)
    monkeypatch.setattr(certified_accuracy, "make_generator", lambda seed, device="cpu": make_generator(seed))
    plain, _, _ = UnitExecutor(torch.device("cpu"), 0).run(sid, stage, job.adapter, job.data.select(ids), unit_key)
    for t in _device_tensors(job):
        fake.mark(t)
    with fake:
        assert job.adapter.device == CUDA  # type: ignore[union-attr]
        stage.check(job.adapter, job.data)  # CPU data, model "on the GPU"
        got, _, _ = UnitExecutor(CUDA, 0).run(sid, stage, job.adapter, job.data.select(ids), unit_key)
    assert got.keys() == plain.keys()
    for name in plain:
        if name.startswith("seconds") or "time" in name:  # wall-clock measurements
            continue
        np.testing.assert_array_equal(got[name], plain[name], err_msg=f"{key}: array {name!r}")
