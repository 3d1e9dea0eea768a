"""The ``corruptions`` stage: metrics, mCE arithmetic, logits-only models, parameters."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from robaudit.attacks.corruptions import CORRUPTIONS
from robaudit.attacks.stages.corruption_accuracy import CorruptionAccuracy

from robaudit.data import Dataset
from robaudit.errors import ParameterError
from robaudit.model import Capability, InputSpec, ModelAdapter
from robaudit.seeding import derive_seed, make_generator
from robaudit.stage import StageOutput
from tests.attacks._digits_cnn import digits_adapter, single_thread


@pytest.fixture(scope="module")
def setup() -> Iterator[tuple[ModelAdapter, Dataset]]:
    with single_thread():
        model, x, y = digits_adapter()
        n = 80
        yield model, Dataset(x[:n], y[:n], tuple(f"d{i}" for i in range(n)), None, {"kind": "test"})


def run(stage: CorruptionAccuracy, model: ModelAdapter, data: Dataset, seed: int = 0) -> tuple[StageOutput, dict]:
    """What the runner does: fixed units with derived generators, concatenate, summarize."""
    parts, forward = [], 0.0
    with single_thread():
        for u, batch in enumerate(data.batches(stage.unit_size or len(data))):
            out = stage.run_unit(model, batch, generator=make_generator(derive_seed(seed, stage.name, u)))
            parts.append(out.arrays)
            forward += out.counters["forward"]
        arrays = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        return stage.summarize(arrays, data, {"forward": forward}), arrays


class LogitsOnly(ModelAdapter):
    """An ONNX-like adapter: logits only, no gradients, no torch module."""

    def __init__(self, inner: ModelAdapter) -> None:
        self.inner, self.name, self.spec = inner, "logits-only", inner.spec
        self.capabilities, self.fingerprint, self.provenance = frozenset(), "x", {}

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.inner.logits(x).detach()


class Constant(ModelAdapter):
    """Always predicts class 3, whatever the input."""

    def __init__(self) -> None:
        self.name, self.spec = "constant", InputSpec((1, 8, 8), 10, (0.0,), (1.0,))
        self.capabilities, self.fingerprint, self.provenance = frozenset(), "c", {}

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(len(x), 10)
        out[:, 3] = 1.0
        return out


def test_quick_profile_metrics(setup) -> None:  # type: ignore[no-untyped-def]
    model, data = setup
    stage = CorruptionAccuracy(CorruptionAccuracy.Params(**CorruptionAccuracy.profiles["quick"]))
    stage.unit_size = 48  # two units of different sizes
    out, arrays = run(stage, LogitsOnly(model), data)
    m = out.metrics
    assert CorruptionAccuracy.requires == frozenset() and not LogitsOnly(model).has(Capability.GRADIENTS)
    assert arrays["pred"].shape == (80, 15, 3)
    for name in CORRUPTIONS:
        for s in (1, 3, 5):
            key = f"accuracy.{name}.s{s}"
            assert 0 <= m[key] <= 1 and m[f"{key}.ci_low"] <= m[key] <= m[f"{key}.ci_high"] and m[f"{key}.n"] == 80
    acc = np.array([[m[f"accuracy.{c}.s{s}"] for s in (1, 3, 5)] for c in CORRUPTIONS])
    assert m["mean_corruption_accuracy"] == pytest.approx(acc.mean())
    assert m["relative_robustness"] == pytest.approx(m["mean_corruption_accuracy"] / m["clean_accuracy"])
    assert m["clean_accuracy"] > 0.9
    # heavy noise must hurt a digits CNN; severity 5 no better than severity 1 on average
    assert m["accuracy.gaussian_noise.s5"] < m["clean_accuracy"] - 0.1
    assert acc[:, 2].mean() < acc[:, 0].mean()
    assert "mce" not in m
    kinds = [f["type"] for f in out.figures]
    assert kinds[:3] == ["heatmap", "bars", "images"]
    assert len(out.figures[2]["rows"][0]["images"]) == 16  # clean + 15 corruptions
    again, _ = run(stage, LogitsOnly(model), data)
    assert again.metrics == m, "same seed, same units: identical results"


def test_input_independent_model_scores_its_base_rate(setup) -> None:  # type: ignore[no-untyped-def]
    _, data = setup
    stage = CorruptionAccuracy(CorruptionAccuracy.Params(corruptions=("fog", "pixelate"), severities=(2, 4)))
    out, _ = run(stage, Constant(), data)
    base = float((data.y == 3).float().mean())
    for key in ("accuracy.fog.s2", "accuracy.pixelate.s4", "mean_corruption_accuracy", "clean_accuracy"):
        assert out.metrics[key] == pytest.approx(base)
    assert out.metrics["relative_robustness"] == pytest.approx(1.0)


def test_mce_arithmetic(setup) -> None:  # type: ignore[no-untyped-def]
    model, data = setup
    ref = {"gaussian_noise": [0.2, 0.3, 0.5, 0.7, 0.9], "contrast": [0.1, 0.2, 0.3, 0.5, 0.8]}
    params = CorruptionAccuracy.Params(corruptions=("gaussian_noise", "contrast"), severities=(1, 3, 5),
                                       reference=ref, reference_clean_error=0.05)
    out, arrays = run(CorruptionAccuracy(params), model, data)
    m = out.metrics
    err = 1 - (arrays["pred"] == arrays["label"][:, None, None]).mean(axis=0)  # (2, 3)
    clean_err = 1 - m["clean_accuracy"]
    ces, rel = [], []
    for ci, name in enumerate(("gaussian_noise", "contrast")):
        r = np.array(ref[name])[[0, 2, 4]]
        ces.append(err[ci].sum() / r.sum())
        rel.append((err[ci] - clean_err).sum() / (r - 0.05).sum())
        assert m[f"ce.{name}"] == pytest.approx(ces[-1])
    assert m["mce"] == pytest.approx(np.mean(ces))
    assert m["relative_mce"] == pytest.approx(np.mean(rel))


@pytest.mark.parametrize(
    "bad",
    [
        {"corruptions": ("fogg",)},
        {"corruptions": ()},
        {"corruptions": ("fog", "fog")},
        {"severities": (0, 3)},
        {"severities": (6,)},
        {"corruptions": ("fog", "snow"), "reference": {"fog": [0.1] * 5}},
        {"corruptions": ("fog",), "reference": {"fog": [0.1] * 4}},
        {"corruptions": ("fog",), "reference": {"fog": [0.1, 0.2, 0.3, 0.4, 1.5]}},
        {"reference_clean_error": 0.1},
        {"batch_size": 0},
    ],
)
def test_bad_params_name_the_fix(bad: dict) -> None:
    with pytest.raises(ParameterError):
        CorruptionAccuracy.Params(**bad)


def test_lists_from_toml_are_normalised() -> None:
    p = CorruptionAccuracy.Params(corruptions=["fog"], severities=[1, 2], reference={"fog": [0.1] * 5})
    assert p.corruptions == ("fog",) and p.severities == (1, 2) and p.reference == {"fog": (0.1,) * 5}
