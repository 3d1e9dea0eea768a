"""The ``smoothing`` stage: certified-accuracy arithmetic (regression fixture), metrics, modes."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from robaudit.certify.certified_accuracy import (
    CertifiedAccuracy,
    CertifiedAccuracyParams,
    average_certified_radius,
    certified_count,
    radius_key,
)
from robaudit.certify.clopper_pearson import max_certifiable_radius

from robaudit.data import Batch, Dataset
from robaudit.errors import ParameterError
from robaudit.model import InputSpec, TorchModelAdapter
from robaudit.stage import StageKind

sys.path.insert(0, str(Path(__file__).parent))
from _smoothing_models import Constant  # noqa: E402

# A synthetic per-image CERTIFY log (label, prediction, radius), ABSTAIN = -1, as in Cohen's
# data/certify logs; expected values computed by hand.
LOG = np.array([
    # label, predict, radius
    [1, 1, 0.80],
    [2, 2, 0.30],
    [3, -1, 0.00],  # abstain
    [4, 5, 1.20],  # wrong class with a large radius: never counts
    [0, 0, 0.25],  # exactly at r = 0.25: counts there (radius >= r)
    [6, 6, 0.00],  # correct with radius 0: counts at r = 0 only
    [7, 7, 1.10],
    [8, 8, 0.49],
    [9, -1, 0.00],  # abstain
    [1, 1, 0.51],
])
EXPECTED = {0.0: 0.7, 0.25: 0.6, 0.5: 0.3, 0.75: 0.2, 1.0: 0.1, 1.25: 0.0}


def test_approximate_accuracy_regression_fixture():
    label, pred, radius = LOG[:, 0].astype(int), LOG[:, 1].astype(int), LOG[:, 2]
    for r, acc in EXPECTED.items():
        assert certified_count(pred, label, radius, r) / len(LOG) == pytest.approx(acc)
    assert average_certified_radius(pred, label, radius) == pytest.approx(3.45 / 10)


def test_summarize_reports_the_fixture_numbers():
    stage = CertifiedAccuracy(CertifiedAccuracyParams(sigma=0.5, n=10_000, radii=list(EXPECTED)))
    arrays = {"label": LOG[:, 0].astype(np.int64), "prediction": LOG[:, 1].astype(np.int64),
              "radius": LOG[:, 2], "p_lower": np.zeros(10), "samples": np.full(10, 10_100),
              "predict": np.array([1, 2, 3, -1, 0, 6, 7, 8, -1, 0])}
    out = stage.summarize(arrays, _dataset(10), {})
    m = out.metrics
    for r, acc in EXPECTED.items():
        assert m[f"certified_accuracy.{radius_key(r)}"] == pytest.approx(acc)
        assert m[f"certified_accuracy.{radius_key(r)}.ci_low"] <= acc <= m[f"certified_accuracy.{radius_key(r)}.ci_high"]
        assert m[f"certified_accuracy.{radius_key(r)}.n"] == 10
    assert next(iter(m)) == "certified_accuracy.r0_25"  # the headline metric comes first
    assert m["acr"] == pytest.approx(0.345)
    assert m["abstain_rate"] == pytest.approx(0.2)
    assert m["smoothed_clean_accuracy"] == pytest.approx(0.7)
    assert m["predict_abstain_rate"] == pytest.approx(0.2)
    assert m["max_certifiable_radius"] == pytest.approx(max_certifiable_radius(0.5, 10_000, 0.001))
    assert m["samples.total"] == 101_000
    chart, table = out.figures
    assert chart["type"] == "line" and "max certifiable radius" in chart["series"][1]["name"]
    assert [row[1] for row in table["rows"]] == pytest.approx(list(EXPECTED.values()))


def test_radius_key_scheme():
    assert [radius_key(r) for r in (0, 0.25, 0.5, 1, 1.5, 0.125, 2.0)] == [
        "r0_00", "r0_25", "r0_50", "r1_00", "r1_50", "r0_125", "r2_00"]


def test_params_are_validated_and_normalised():
    p = CertifiedAccuracyParams(radii=[0.5, 0.0], sequential_radii=[1.0, 0.25])
    assert p.radii == (0.0, 0.5) and p.sequential_radii == (0.25, 1.0)
    for bad in ({"sigma": 0.0}, {"n": 0}, {"alpha": 1.0}, {"radii": [-0.1]}, {"batch_size": 0},
                {"sequential_radii": []}, {"n_predict": -1}):
        with pytest.raises(ParameterError):
            CertifiedAccuracyParams(**bad)
    assert CertifiedAccuracy.name == "smoothing" and CertifiedAccuracy.kind is StageKind.CERTIFY
    assert CertifiedAccuracy.requires == frozenset()
    for profile in ("quick", "standard", "full"):
        CertifiedAccuracyParams(**CertifiedAccuracy.profiles[profile])


def _dataset(n: int) -> Dataset:
    x = torch.rand(n, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([1, 1, 0, 1] * (n // 4) + [1] * (n % 4))
    return Dataset(x, y, tuple(f"s{i}" for i in range(n)), None, {"kind": "test"})


def _constant_model() -> TorchModelAdapter:
    return TorchModelAdapter(Constant(1, num_classes=3).eval(), InputSpec((1, 2, 2), 3, (0.0,), (1.0,)),
                             pixel_space=True)


def _run(params: CertifiedAccuracyParams, seed: int = 0):
    data = _dataset(4)
    stage = CertifiedAccuracy(params)
    batch = Batch(data.x, data.y, data.ids)
    unit = stage.run_unit(_constant_model(), batch, generator=torch.Generator().manual_seed(seed))
    return unit, stage.summarize(unit.arrays, data, unit.counters)


def test_fixed_mode_on_a_constant_model():
    params = CertifiedAccuracyParams(sigma=0.25, n0=10, n=200, alpha=0.01, batch_size=100)
    unit, out = _run(params)
    r_max = max_certifiable_radius(0.25, 200, 0.01)
    assert unit.arrays["radius"] == pytest.approx([r_max] * 4)
    assert list(unit.arrays["samples"]) == [210] * 4 and unit.counters["samples"] == 840
    m = out.metrics
    grid = np.arange(0.0, r_max + 1e-12, 0.25)
    assert {radius_key(r) for r in grid} == {k.split(".")[1] for k in m if k.startswith("certified_accuracy.")}
    assert all(m[f"certified_accuracy.{radius_key(r)}"] == 0.75 for r in grid)
    assert m["acr"] == pytest.approx(0.75 * r_max) and m["abstain_rate"] == 0.0
    assert m["smoothed_clean_accuracy"] == 0.75
    again, _ = _run(params)
    assert all(np.array_equal(unit.arrays[k], again.arrays[k]) for k in unit.arrays)


def test_sequential_mode_reports_decisions_and_savings():
    params = CertifiedAccuracyParams(sigma=0.25, n0=10, n=20_000, alpha=0.001, batch_size=1000,
                                     sequential=True, sequential_radii=[0.25, 5.0], n_predict=100)
    unit, out = _run(params)
    m = out.metrics
    assert m["certified_accuracy.r0_25"] == 0.75 and m["certified_accuracy.r5_00"] == 0.0
    assert m["sequential_abstain_rate.r5_00"] == 1.0 and m["sequential_abstain_rate.r0_25"] == 0.0
    assert m["samples.fixed_n_per_image"] == 10 + 20_000 + 100
    assert m["samples.savings_ratio"] > 20  # p_A = 1 decides within a few hundred draws
    assert m["smoothed_clean_accuracy"] == 0.75
    assert "acr" not in m and any("5.0" in w and "exceed" in w for w in out.warnings)
    assert set(unit.arrays) >= {"decision_r0_25", "decision_r5_00", "prediction", "samples", "label"}
