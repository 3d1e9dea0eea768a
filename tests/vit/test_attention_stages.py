from __future__ import annotations

import base64

import numpy as np
import pytest
import torch
from robaudit.reports.inspector import check_inspector
from torch import nn

from robaudit.analysis.attention import AttentionRecorder
from robaudit.analysis.attention_inspector import quantise_rows
from robaudit.errors import ParameterError
from robaudit.model import InputSpec, TorchModelAdapter
from robaudit.stage import Skip
from robaudit.stages.attention_analysis import AttentionAnalysis, AttentionAnalysisParams
from robaudit.stages.temperature_defense import TemperatureDefense, TemperatureDefenseParams


def _cnn() -> TorchModelAdapter:
    net = nn.Sequential(nn.Conv2d(3, 4, 3, 2, 1), nn.Flatten(), nn.Linear(4 * 16 * 16, 10))
    return TorchModelAdapter(net, InputSpec((3, 32, 32), 10), name="cnn")


def test_attention_stage_skips_models_without_attention(self_labelled) -> None:
    cnn = _cnn()
    data = self_labelled(cnn, 2)
    with pytest.raises(Skip, match="no timm attention"):
        AttentionAnalysis(AttentionAnalysisParams()).check(cnn, data)
    with pytest.raises(Skip, match="no timm attention"):
        TemperatureDefense(TemperatureDefenseParams()).check(cnn, data)


def test_attention_stage_metrics_and_inspector(vit, self_labelled, run_stage) -> None:
    data = self_labelled(vit, 10)
    params = AttentionAnalysisParams(**{**AttentionAnalysis.profiles["quick"], "temperatures": (1.0, 2.0),
                                        "inspector_images": 2, "steps": 8})
    stage = AttentionAnalysis(params)
    out = run_stage(stage, vit, data)
    m = out.metrics
    assert m["images_n"] == 10 and m["attn_share_uniform"] == pytest.approx(1 / 64)
    for v in ("clean", "natural", "adv"):
        assert 0 < m[f"attn_share_{v}"] < 1
    assert m["attn_share_delta_adv"] == pytest.approx(m["attn_share_adv"] - m["attn_share_clean"], abs=1e-9)
    assert {f"attn_layer_share_delta_adv.l{i}" for i in range(3)} <= set(m)
    fig = next(f for f in out.figures if f["type"] == "attention_inspector")
    assert check_inspector(fig) == []
    assert (fig["grid"], fig["layers"], fig["heads"], fig["image_size"]) == (8, 3, 3, [32, 32])
    views = fig["images"][0]["views"]
    assert [v["name"] for v in views] == ["clean, T=1", "corrupted, T=1", "adversarial, T=1",
                                          "clean, T=2", "corrupted, T=2", "adversarial, T=2"]
    assert views[0]["patch"] == [] and len(views[1]["patch"]) == 1
    # the clean T=1 view holds the model's own attention, prefix stripped, row-quantised
    x0 = data.x[:1]
    maps = AttentionRecorder(vit.torch_module())(x0)
    expected = quantise_rows(maps.attn[:, :, :, 1:, 1:])[0]
    got = np.frombuffer(base64.b64decode(views[0]["attn"]), dtype=np.uint8).reshape(expected.shape)
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1
    t2 = np.frombuffer(base64.b64decode(views[3]["attn"]), dtype=np.uint8).reshape(expected.shape)
    assert np.abs(t2.astype(int) - expected.astype(int)).max() > 10  # T = 2 really flattens attention


def test_temperature_defense_stage(vit, self_labelled, run_stage) -> None:
    data = self_labelled(vit, 8)
    params = TemperatureDefenseParams(temperatures=(1.0, 2.0), positions=2, steps=6, alpha=0.1)
    out = run_stage(TemperatureDefense(params), vit, data)
    m = out.metrics
    for t in ("t1_0", "t2_0"):
        for name in ("clean_accuracy", "patch_corrupt_fr", "adv_patch_fr", "adv_patch_fr_any"):
            assert f"{name}.{t}" in m and f"{name}.{t}.ci_low" in m
    assert m["clean_accuracy.t1_0"] == m["clean_accuracy.base"] == 1.0  # T = 1 is the undefended model
    assert m["adv_patch_fr.t1_0.n"] == 8 * 2
    assert m["temp_best_T"] in (1.0, 2.0)
    assert out.warnings == [] and out.budget["adaptive"] is True
    assert any(f["type"] == "line" for f in out.figures)


def test_temperature_defense_warns_on_non_adaptive_numbers(vit, self_labelled) -> None:
    stage = TemperatureDefense(TemperatureDefenseParams(temperatures=(1.0, 2.0), positions=1, steps=2))
    data = self_labelled(vit, 4)
    unit = stage.run_unit(vit, data.select(data.ids), generator=torch.Generator().manual_seed(0))
    arrays = {k: np.asarray(v) for k, v in unit.arrays.items()}
    assert stage.summarize(arrays, data, unit.counters).warnings == []
    arrays["attack_T.t2_0"] = np.ones(4)  # as if the T = 2 numbers came from a patch optimised at T = 1
    warnings = stage.summarize(arrays, data, unit.counters).warnings
    assert len(warnings) == 1 and "NON-ADAPTIVE" in warnings[0] and "t2_0" in warnings[0]


def test_temperature_params_validation() -> None:
    for bad in ((0.0,), (-1.0, 2.0), (), (1.0, 1.0)):
        with pytest.raises(ParameterError):
            TemperatureDefenseParams(temperatures=bad)
    with pytest.raises(ParameterError):
        AttentionAnalysisParams(temperatures=(0.0,))
    with pytest.raises(ParameterError):
        AttentionAnalysisParams(head_fusion="median")
