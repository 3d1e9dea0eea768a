"""Stages ``counterfactual`` and ``causal`` end to end on tiny in-test models (labels = the model's predictions)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from robaudit.analysis.causal_evaluation import default_layers
from robaudit.data import Dataset
from robaudit.errors import ParameterError
from robaudit.model import InputSpec, TorchModelAdapter
from robaudit.stages.causal_attribution import CausalAttribution, CausalParams
from robaudit.stages.counterfactual_stability import CounterfactualParams, CounterfactualStability
from tests.analysis.test_causal import TokenNet

FACTORY = textwrap.dedent(
    """
    from torch import nn

    def tiny():
        return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1),
                             nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 4))
    """
)


def tiny(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1),
                         nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 4))


def setup(net: nn.Module, n: int = 24, size: int = 8) -> tuple[TorchModelAdapter, Dataset]:
    """The model and n images, balanced over its predicted classes where possible; labels = predictions."""
    spec = InputSpec((3, size, size), 4, (0.5,) * 3, (0.5,) * 3)
    model = TorchModelAdapter(net.eval(), spec, name="tiny")
    pool = torch.rand(40 * n, 3, size, size, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        pred = model.logits(pool).argmax(1)
    order = torch.argsort(torch.stack([(pred[:i] == pred[i]).sum() for i in range(len(pool))]), stable=True)[:n]
    x, y = pool[order], pred[order]
    return model, Dataset(x, y, tuple(f"s{i}" for i in range(n)), None, {"source": "test"})


def run(stage, model, data, seed: int = 0):
    out = stage.run_unit(model, data.select(data.ids), generator=torch.Generator().manual_seed(seed))
    return out, stage.summarize(out.arrays, data, out.counters)


CF_SMALL = {"max_images": 6, "k": 32, "cf_steps": 10, "cf_search_steps": 4, "trex_steps": 6, "trex_radius": 0.5,
            "proxy_models": 3, "figure_images": 2}


def test_counterfactual_stage_with_weight_noise_proxy() -> None:
    model, data = setup(tiny(0))
    out, res = run(CounterfactualStability(CounterfactualParams(**CF_SMALL)), model, data)
    m = res.metrics
    assert m["cf_validity"] == 1.0 and m["images_n"] == 6
    assert "cf_robust_validity.closest" not in m  # a proxy never masquerades as natural change
    assert 0 <= m["cf_robust_validity_proxy.closest"] <= 1 and m["cf_robust_validity_proxy.models_n"] == 3
    assert any("proxy, not naturally-occurring change" in w for w in res.warnings)
    a = out.arrays
    v = a["robust_valid"].astype(bool)
    # T-Rex CFs: valid on the audited model and within trex_radius of the closest CF
    assert v.all()
    assert m["stability.robust.mean"] >= m["stability.mean"] - 1e-6
    assert np.all(a["trex_steps"] <= 6)
    assert m["cf_cost_l2"] > 0 and np.isfinite(m["stability.se"])
    assert [f["type"] for f in res.figures] == ["images", "bars", "table"]
    json.dumps(res.figures)


def test_counterfactual_stage_siblings_identical_model_keeps_every_cf(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from safetensors.torch import save_file

    (tmp_path / "cfsib_factories.py").write_text(FACTORY)
    monkeypatch.syspath_prepend(str(tmp_path))
    same, other = tiny(0), tiny(1)
    for name, net in (("same", same), ("other", other)):
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(tmp_path / f"{name}.safetensors"))
    model, data = setup(tiny(0))
    sib = ({"source": str(tmp_path / "same.safetensors"), "factory": "cfsib_factories:tiny"},)
    _, res = run(CounterfactualStability(CounterfactualParams(**CF_SMALL, siblings=sib)), model, data)
    assert res.metrics["cf_robust_validity.closest"] == 1.0 and res.metrics["cf_robust_validity.robust"] == 1.0
    assert res.metrics["cf_robust_validity.models_n"] == 1 and not res.warnings
    sib = sib + ({"source": str(tmp_path / "other.safetensors"), "factory": "cfsib_factories:tiny"},)
    out, res = run(CounterfactualStability(CounterfactualParams(**CF_SMALL, siblings=sib)), model, data)
    assert out.arrays["change_closest"].shape[1] == 2
    assert res.metrics["cf_robust_validity.closest"] < 1.0  # a differently seeded model disagrees somewhere


def test_counterfactual_params_name_the_fix() -> None:
    with pytest.raises(ParameterError, match="source"):
        CounterfactualParams(siblings=({"factory": "x:y"},))
    with pytest.raises(ParameterError, match="sigma"):
        CounterfactualParams(sigma=0.0)
    with pytest.raises(ParameterError, match="form"):
        CounterfactualParams(form="exact")


CAUSAL_SMALL = {"k": 3, "n_per_class": 4, "expl_images": 6, "ig_steps": 4, "pgd_steps": 2, "random_repeats": 2,
                "ablation_k": 2, "graph_classes": 2, "figure_images": 2, "block": 2}


def test_causal_stage_on_tiny_cnn_is_deterministic_and_clean() -> None:
    net = tiny(3)
    model, data = setup(net, n=32)
    stage = CausalAttribution(CausalParams(**CAUSAL_SMALL))
    out1, res1 = run(stage, model, data)
    out2, res2 = run(stage, model, data)
    m = res1.metrics
    for key in ("causal_ablation_drop", "random_ablation_drop", "expl_stability.causal.spearman",
                "expl_stability.gradcam.iou", "expl_deletion_auc.ig", "expl_insertion_auc.saliency",
                "expl_stability.causal.pgd.spearman"):
        assert key in m
    assert json.dumps(res1.metrics, sort_keys=True, default=str) == json.dumps(res2.metrics, sort_keys=True,
                                                                               default=str)
    assert np.array_equal(out1.arrays["edges"], out2.arrays["edges"])
    assert [str(s) for s in out1.arrays["layer_names"]] == ["net.1", "net.3"]  # ReLU outputs after the convs
    assert 0 <= m["expl_deletion_auc.causal"] <= 1 and 0 <= m["causal_ablation_drop"] <= 1
    assert all(not mod._forward_hooks for mod in model.torch_module().modules())
    types = [f["type"] for f in res1.figures]
    assert m["causal_classes_n"] >= 2
    assert types.count("graph") == 2 and "images" in types
    json.dumps(res1.figures)


def test_default_layers_cnn_and_vit_names() -> None:
    assert default_layers(tiny(0), 2) == ["1", "3"]
    assert default_layers(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten()), 3) == ["0"]
    assert default_layers(TokenNet(), 3) == ["blocks.0.mlp"]
    with pytest.raises(ParameterError, match="layers"):
        default_layers(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)))


def test_causal_params_name_the_fix() -> None:
    with pytest.raises(ParameterError, match="baseline"):
        CausalParams(baseline="median")
    with pytest.raises(ParameterError, match="methods"):
        CausalParams(methods=("gradcam",))


def test_causal_stage_without_captum_skips_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    from robaudit.stage import Skip

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "captum" else real(name, *a))
    model, data = setup(tiny(0))
    with pytest.raises(Skip, match="pip install captum"):
        CausalAttribution(CausalParams(**CAUSAL_SMALL)).check(model, data)
    CausalAttribution(CausalParams(**{**CAUSAL_SMALL, "methods": ("causal",)})).check(model, data)  # no baselines
