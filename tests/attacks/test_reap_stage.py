"""The realistic_patch stage on a tiny random-init CNN: metrics, consistency, determinism, params."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np
import pytest
from robaudit.attacks.patches.realistic_patch_report import metrics_for
from robaudit.attacks.stages.realistic_patch import RealisticPatch, RealisticPatchParams

from robaudit.data import Dataset
from robaudit.errors import ParameterError
from robaudit.model import Capability
from robaudit.seeding import make_generator
from robaudit.stage import StageKind
from tests.attacks._digits_cnn import single_thread
from tests.attacks.test_reap_eot import images, tiny_model

RENDERINGS = ("digital", "geometric", "lighting", "realistic")


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


def _data(n: int = 24) -> tuple[object, Dataset]:
    model = tiny_model(seed=2)
    x = images(n, seed=3)
    y = model.predict(x).clone()
    y[::5] = (y[::5] + 1) % 5  # some clean-wrong images: they must not enter the ASR denominator
    return model, Dataset(x, y, tuple(f"s{i}" for i in range(n)), None, {"kind": "test"})


def _run(mode: str = "universal", seed: int = 0, **over: object) -> tuple[dict, dict, object]:
    model, data = _data()
    params = RealisticPatchParams(**{**RealisticPatch.profiles["quick"], "steps": 12, "patch_fraction": 0.375,
                                     "mode": mode, "batch_size": 16, **over})
    stage = RealisticPatch(params)
    stage.check(model, data)
    unit = stage.run_unit(model, data.select(data.ids), generator=make_generator(seed))
    out = stage.summarize({k: np.asarray(v) for k, v in unit.arrays.items()}, data, unit.counters)
    return out.metrics, unit.arrays, out


@pytest.mark.parametrize("mode", ["universal", "per_image"])
def test_metrics_are_consistent_with_the_arrays(mode: str) -> None:
    m, arrays, out = _run(mode)
    ev = arrays["evaluate"]
    assert ev.sum() == (12 if mode == "universal" else 24)
    correct = (arrays["clean_pred"] == arrays["label"]) & ev
    assert m["clean_correct_n"] == correct.sum() and 0 < correct.sum() < ev.sum()
    for prefix, tag in (("", "digital"), ("eot.", "eot")):
        for r, name in zip(RENDERINGS, ("asr_synthetic", "asr_ablation.geometric", "asr_ablation.lighting",
                                        "asr_realistic")):
            pred = arrays[f"pred_{tag}_{r}"]
            asr = m[prefix + name]
            assert 0.0 <= asr <= 1.0 and m[prefix + name + ".n"] == correct.sum()
            assert m[prefix + name + ".ci_low"] <= asr <= m[prefix + name + ".ci_high"]
            # ASR = 1 - patched accuracy on the clean-correct subset (METHODS §2.5 test 7)
            acc_cc = float((pred[correct] == arrays["label"][correct]).mean())
            assert asr == pytest.approx(1.0 - acc_cc)
            # ... and overall patched accuracy can only exceed clean_acc * (1 - ASR)
            assert m[f"{prefix}patched_accuracy.{r}"] >= m["clean_accuracy"] * (1 - asr) - 1e-12
        assert m[prefix + "asr_gap"] == pytest.approx(m[prefix + "asr_synthetic"] - m[prefix + "asr_realistic"])
        assert m[prefix + "asr_gap.ci_low"] <= m[prefix + "asr_gap"] <= m[prefix + "asr_gap.ci_high"]
    k = 1 if mode == "universal" else 24
    assert arrays["patch_digital"].shape == (k, 3, 6, 6) and arrays["patch_eot"].shape == (k, 3, 6, 6)
    assert list(m)[0] == "asr_realistic"
    titles = [f["title"] for f in out.figures]
    assert "Adversarial patches" in titles and "Attack success rate by rendering" in titles
    assert any(f["type"] == "images" and len(f["rows"]) == 6 for f in out.figures)  # 3 examples x 2 patches
    assert out.budget["steps_per_patch"] == 12 and out.budget["patch_side_px"] == 6
    assert any("synthetic" in n for n in out.notes) and not any("REAP benchmark)" in n for n in out.notes)


def test_attack_beats_a_random_patch_on_the_digital_rendering() -> None:
    """The digital patch must fool more than nothing on an easy random-init model, else the optimiser is inert."""
    m, arrays, _ = _run("per_image", steps=30)
    assert m["asr_synthetic"] > 0.3


def test_asr_counts_only_clean_correct_images() -> None:
    _, arrays, _ = _run()
    fake = dict(arrays)
    wrong = (arrays["clean_pred"] != arrays["label"]) & arrays["evaluate"]
    assert wrong.any()
    fake["pred_digital_digital"] = np.where(wrong, (arrays["label"] + 1) % 5, arrays["label"])
    m = metrics_for(fake)
    assert m["asr_synthetic"] == 0.0  # clean-wrong images that stay wrong are not successes
    fake["pred_digital_digital"] = (arrays["label"] + 1) % 5
    assert metrics_for(fake)["asr_synthetic"] == 1.0


def test_deterministic_under_the_unit_generator() -> None:
    m1, a1, _ = _run(seed=5)
    m2, a2, _ = _run(seed=5)
    m3, a3, _ = _run(seed=6)
    assert m1 == pytest.approx(m2, nan_ok=True)
    assert np.array_equal(a1["patch_eot"], a2["patch_eot"]) and np.array_equal(a1["quad"], a2["quad"])
    assert not np.array_equal(a1["patch_eot"], a3["patch_eot"])


def test_stage_declaration_and_param_validation() -> None:
    assert RealisticPatch.name == "realistic_patch" and RealisticPatch.kind is StageKind.PATCH
    assert Capability.GRADIENTS in RealisticPatch.requires
    for prof in ("quick", "standard", "full"):
        RealisticPatchParams(**RealisticPatch.profiles[prof])
    d = RealisticPatchParams()
    assert (d.lr, d.tv_weight, d.relight_percentile, d.rotation_deg) == (0.01, 1e-5, 0.2, 15.0)
    for bad in ({"mode": "both"}, {"patch_fraction": 0.9}, {"steps": 0}, {"lr": 0.0}, {"location": "left"},
                {"train_fraction": 1.0}, {"scale_low": 1.2, "scale_high": 1.0}, {"relight_percentile": 1.5}):
        with pytest.raises(ParameterError):
            dataclasses.replace(d, **bad)
