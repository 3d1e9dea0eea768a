"""The ``lirpa`` verified-accuracy stage on tiny in-repo models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from robaudit.certify.verified_accuracy import VerifiedAccuracy, VerifiedAccuracyParams
from torch import nn

from robaudit.data import Dataset
from robaudit.errors import ParameterError
from robaudit.model import InputSpec, TorchModelAdapter
from robaudit.seeding import make_generator
from robaudit.stage import Skip


def _model(maxpool: bool = False) -> TorchModelAdapter:
    torch.manual_seed(0)
    pool: nn.Module = nn.MaxPool2d(2) if maxpool else nn.AvgPool2d(2)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, 1, 1), nn.ReLU(), pool, nn.Flatten(), nn.Linear(64, 16), nn.ReLU(),
                        nn.Linear(16, 4))
    spec = InputSpec((3, 8, 8), 4, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    return TorchModelAdapter(net, spec, name="tiny")


def _data(model: TorchModelAdapter, n: int = 12) -> Dataset:
    g = torch.Generator().manual_seed(5)
    x = torch.rand((n, 3, 8, 8), generator=g)
    with torch.no_grad():
        y = model.logits(x).argmax(1)
    y[:2] = (y[:2] + 1) % 4  # two misclassified samples
    return Dataset(x, y, tuple(f"s{i}" for i in range(n)), None, {"kind": "test"})


def _run(stage: VerifiedAccuracy, model, data):
    stage.check(model, data)
    parts = []
    for i, batch in enumerate(data.batches(5)):
        parts.append(stage.run_unit(model, batch, generator=make_generator(i)))
    arrays = {k: np.concatenate([p.arrays[k] for p in parts]) for k in parts[0].arrays}
    counters: dict[str, float] = {}
    for p in parts:
        for k, v in p.counters.items():
            counters[k] = counters.get(k, 0.0) + v
    return stage.summarize(arrays, data, counters)


def test_stage_metrics_are_consistent():
    model = _model()
    data = _data(model)
    eps = (0.0, 0.002, 0.01, 0.05)
    params = VerifiedAccuracyParams(eps=eps, methods=("IBP", "crown", "crown_ibp", "alpha-CROWN"),
                                    attack_steps=5, alpha_iterations=3, alpha_lr=0.2)
    out = _run(VerifiedAccuracy(params), model, data)
    m = out.metrics
    assert m["clean_accuracy"] == pytest.approx(10 / 12)
    assert m["soundness_violations"] == 0
    for method in ("ibp", "crown", "crown_ibp", "alpha_crown"):
        # eps = 0: bounds are exact, so exactly the clean-correct samples verify
        assert m[f"verified_accuracy.{method}.e0"] == pytest.approx(m["clean_accuracy"])
        accs = [m[f"verified_accuracy.{method}.e{k}"] for k in range(len(eps))]
        assert all(a >= b for a, b in zip(accs, accs[1:])), f"{method} not monotone in eps: {accs}"
        for k in range(len(eps)):
            assert accs[k] <= m[f"pgd_accuracy.e{k}"] <= m["clean_accuracy"]
            assert m[f"bound_gap.{method}.e{k}"] >= 0
        assert m[f"verified_accuracy.{method}.e0.n"] == 12
        assert m[f"time_per_sample.{method}"] > 0
    for k in range(len(eps)):
        assert m[f"epsilon.e{k}"] == eps[k]
        total = m[f"status.verified.e{k}"] + m[f"status.falsified.e{k}"] + m[f"status.unknown.e{k}"]
        assert total == pytest.approx(1.0)
        assert m[f"verified_accuracy.alpha_crown.e{k}"] >= m[f"verified_accuracy.crown.e{k}"]
    assert m["verified_accuracy.crown.e3"] < m["clean_accuracy"], "eps=0.05 should not verify everything"
    chart, table = out.figures
    assert chart["type"] == "line" and len(chart["series"]) == 4 + 2
    assert table["type"] == "table" and [r[0] for r in table["rows"]] == ["e0", "e1", "e2", "e3"]
    assert out.budget["eps"] == list(eps) and not out.notes and not out.warnings


def test_l2_stage_runs():
    model = _model()
    data = _data(model, 6)
    out = _run(VerifiedAccuracy(VerifiedAccuracyParams(eps=(0.0, 0.1), norm="2", attack_steps=5)), model, data)
    assert out.metrics["verified_accuracy.crown.e0"] == pytest.approx(out.metrics["clean_accuracy"])
    assert out.metrics["verified_accuracy.crown.e1"] <= out.metrics["pgd_accuracy.e1"]


def test_fallback_when_crown_is_too_expensive():
    model = _model()
    data = _data(model, 6)
    params = VerifiedAccuracyParams(eps=(0.01,), methods=("ibp", "crown"), attack_steps=3, max_crown_elements=1)
    out = _run(VerifiedAccuracy(params), model, data)
    assert any("crown at e0" in note and "fell back to ibp" in note for note in out.notes), out.notes
    assert out.metrics["verified_accuracy.crown.e0"] == out.metrics["verified_accuracy.ibp.e0"]


def test_unsupported_model_is_skipped_with_reason():
    model = _model(maxpool=True)
    with pytest.raises(Skip, match="MaxPool2d"):
        VerifiedAccuracy(VerifiedAccuracyParams()).check(model, _data(_model(), 4))


@pytest.mark.parametrize("kwargs", [{"eps": ()}, {"eps": (-0.1,)}, {"methods": ("deeppoly",)}, {"norm": "1"},
                                    {"methods": ("crown", "CROWN")}, {"attack_steps": 0}])
def test_invalid_params(kwargs):
    with pytest.raises(ParameterError):
        VerifiedAccuracyParams(**kwargs)


def test_profiles_are_valid_params():
    for name, overrides in VerifiedAccuracy.profiles.items():
        params = VerifiedAccuracyParams(**overrides)
        assert params.methods[0] == "ibp", name
