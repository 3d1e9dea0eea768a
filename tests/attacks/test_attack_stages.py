"""The robust_accuracy and eps_sweep stages on the in-process digits CNN."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from robaudit.attacks.stages.eps_sweep import EpsSweep, eps_key
from robaudit.attacks.stages.robust_accuracy import RobustAccuracy

from robaudit.data import Dataset
from robaudit.errors import ParameterError
from robaudit.model import ModelAdapter
from robaudit.seeding import derive_seed, make_generator
from robaudit.stage import Skip, Stage, StageOutput
from tests.attacks._digits_cnn import digits_adapter, single_thread


@pytest.fixture(scope="module")
def setup() -> Iterator[tuple[ModelAdapter, Dataset]]:
    with single_thread():
        model, x, y = digits_adapter()
        n = 96
        data = Dataset(x[:n], y[:n], tuple(f"d{i}" for i in range(n)), None, {"kind": "test"})
        yield model, data


def run_stage(stage: Stage, model: ModelAdapter, data: Dataset, seed: int = 0) -> tuple[StageOutput, dict]:
    """What the runner does: fixed units, one derived generator each, concatenate, summarize."""
    stage.check(model, data)
    size = stage.unit_size or len(data)
    parts: list[dict[str, np.ndarray]] = []
    counters: dict[str, float] = {}
    for u, batch in enumerate(data.batches(size)):
        out = stage.run_unit(model, batch, generator=make_generator(derive_seed(seed, stage.name, u)))
        parts.append(out.arrays)
        for k, v in out.counters.items():
            counters[k] = counters.get(k, 0.0) + v
    arrays = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return stage.summarize(arrays, data, counters), arrays


def _params(stage_cls: type, profile: str, **over: object) -> object:
    return stage_cls.Params(**{**stage_cls.profiles[profile], **over})


@pytest.mark.parametrize("mode", ["cascade", "independent"])
def test_robust_accuracy_worst_case(setup, mode: str) -> None:  # type: ignore[no-untyped-def]
    model, data = setup
    stage = RobustAccuracy(_params(RobustAccuracy, "quick", eps=0.1, mode=mode, square_queries=50,
                                         attacks=("fgsm", "pgd", "apgd-ce", "apgd-dlr", "square")))
    out, arrays = run_stage(stage, model, data)
    m = out.metrics
    assert 0.9 < m["clean_accuracy"] <= 1.0 and m["clean_accuracy.n"] == 96
    per = [m[f"robust_accuracy.{a}"] for a in stage.params.attacks]
    assert m["robust_accuracy"] <= min(per) + 1e-12
    assert m["robust_accuracy"] < m["clean_accuracy"] - 0.2
    assert m["robust_accuracy.ci_low"] <= m["robust_accuracy"] <= m["robust_accuracy.ci_high"]
    robust, correct = arrays["robust"], arrays["clean_correct"]
    assert not np.any(robust & ~correct)  # clean-wrong samples are never robust
    assert np.all((arrays["broken_by"] >= 0) == (correct & ~robust))
    if mode == "cascade":
        assert per == sorted(per, reverse=True)  # cumulative
        assert per[-1] == pytest.approx(m["robust_accuracy"])
        assert per[0] > per[-1]  # each attack's value is a snapshot, not the final worst case (aliasing bug)
    assert out.budget["forward"] > 0 and out.budget["backward"] > 0 and m["passes.backward"] > 0
    assert {f["type"] for f in out.figures} == {"bars", "images"}
    # the examples really are adversarial and within budget (thumbnails are exact for 8x8)
    i = int(np.nonzero(arrays["broken_by"] >= 0)[0][0])
    adv = torch.from_numpy(arrays["adv_thumb"][i:i + 1].astype(np.float32) / 255)
    assert float((adv - data.x[i:i + 1]).abs().max()) <= 0.1 + 1 / 255


def test_robust_accuracy_is_reproducible(setup) -> None:  # type: ignore[no-untyped-def]
    model, data = setup
    params = _params(RobustAccuracy, "quick", eps=0.1, attacks=["pgd", "square"], square_queries=30)
    a, arr_a = run_stage(RobustAccuracy(params), model, data, seed=5)
    b, arr_b = run_stage(RobustAccuracy(params), model, data, seed=5)
    np.testing.assert_equal(a.metrics, b.metrics)  # nan-aware
    for key in arr_a:
        np.testing.assert_array_equal(arr_a[key], arr_b[key])
    _, arr_c = run_stage(RobustAccuracy(params), model, data, seed=6)
    assert not np.array_equal(arr_c["adv_thumb"], arr_a["adv_thumb"])  # the seed matters


class _ScoresOnly(ModelAdapter):
    """An ONNX-like adapter: logits under no_grad only, no GRADIENTS capability."""

    def __init__(self, inner: ModelAdapter) -> None:
        self._inner = inner
        self.name, self.spec, self.fingerprint, self.provenance = "scores", inner.spec, "x", {}
        self.capabilities = frozenset()

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self._inner.logits(x)


def test_without_gradients_only_square_runs(setup) -> None:  # type: ignore[no-untyped-def]
    model, data = setup
    blind = _ScoresOnly(model)
    stage = RobustAccuracy(_params(RobustAccuracy, "quick", eps=0.1, square_queries=50))
    out, arrays = run_stage(stage, blind, data)
    assert "robust.square" in arrays and "robust.pgd" not in arrays
    assert any("only black-box" in n for n in out.notes) and out.warnings
    assert out.metrics["robust_accuracy"] < out.metrics["clean_accuracy"]
    assert out.metrics["passes.backward"] == 0
    with pytest.raises(Skip, match="square"):
        RobustAccuracy(RobustAccuracy.Params(attacks=("pgd",))).check(blind, data)
    with pytest.raises(Skip):
        EpsSweep(EpsSweep.Params()).check(blind, data)


@pytest.mark.parametrize("bad", [
    {"attacks": ["pgd", "cw"]}, {"attacks": []}, {"eps": -1.0}, {"steps": 0}, {"norm": "l1"},
    {"mode": "both"}, {"alpha": 0.0}, {"square_queries": 0},
])
def test_robust_accuracy_bad_params(bad: dict) -> None:
    with pytest.raises(ParameterError):
        RobustAccuracy.Params(**bad)


@pytest.mark.parametrize("bad", [{"eps": [8.0]}, {"eps": []}, {"attacks": ["apgd-ce"]}, {"pgd_steps": 0},
                                 {"max_error": 0.0}])
def test_eps_sweep_bad_params(bad: dict) -> None:
    with pytest.raises(ParameterError):
        EpsSweep.Params(**bad)


def test_eps_sweep_curve_and_fit(setup) -> None:  # type: ignore[no-untyped-def]
    model, data = setup
    grid = (0.0, 0.01, 0.02, 0.04, 0.08, 0.16)
    stage = EpsSweep(_params(EpsSweep, "quick", eps=grid, bootstrap=50, min_errors=2))
    out, arrays = run_stage(stage, model, data)
    m = out.metrics
    for name in ("fgsm", "pgd"):
        errs = [m[f"adv_error.{name}.{eps_key(e)}"] for e in grid]
        assert errs[0] == 0.0  # E(0) = 0
        assert errs[-1] > 0.5
        if name == "pgd":
            assert all(b >= a - 0.03 for a, b in zip(errs, errs[1:])), errs
    assert m["adv_error.pgd.e20p4"] >= m["adv_error.fgsm.e20p4"] - 0.03
    beta = m.get("powerlaw.pgd.beta")
    assert beta is not None and beta > 0 and m["powerlaw.pgd.points"] >= 3
    assert m["powerlaw.pgd.beta.ci_low"] <= beta <= m["powerlaw.pgd.beta.ci_high"]
    assert m["logit_gap.median"] > 0
    first = arrays["first_error_eps.pgd"][arrays["clean_correct"].astype(bool)]
    assert np.all((first > 0) | np.isinf(first))
    chart = out.figures[0]
    assert chart["type"] == "line" and chart["x_log"] and chart["y_log"]
    assert dataclasses.asdict(stage.params)["eps"] == grid


def test_eps_sweep_reports_undefined_beta(setup) -> None:  # type: ignore[no-untyped-def]
    model, data = setup
    stage = EpsSweep(_params(EpsSweep, "quick", eps=(0.3, 0.5), attacks=["fgsm"]))
    out, _ = run_stage(stage, model, data)
    assert "powerlaw.fgsm.beta" not in out.metrics and out.metrics["powerlaw.fgsm.points"] < 3
    assert any("beta undefined" in n for n in out.notes)
