from __future__ import annotations

import pytest
import torch
from torch import nn

from robaudit.analysis.attention import AttentionRecorder, timm_attention_modules
from robaudit.defenses.attention_temperature import attention_temperature, attention_temperature_of
from robaudit.errors import CapabilityError, ParameterError
from robaudit.model import Capability, InputSpec, TorchModelAdapter


def test_t1_reproduces_logits(vit: TorchModelAdapter, images: torch.Tensor) -> None:
    defended = attention_temperature(vit, 1.0)
    torch.testing.assert_close(defended.logits(images), vit.logits(images), atol=1e-4, rtol=0)
    assert attention_temperature_of(defended) == pytest.approx(1.0)


def test_temperature_changes_logits_and_leaves_original(vit: TorchModelAdapter, images: torch.Tensor) -> None:
    before = vit.logits(images).clone()
    state = {k: v.clone() for k, v in vit.torch_module().state_dict().items()}
    layers = timm_attention_modules(vit.torch_module())
    scales, fused = [m.scale for _, m in layers], [m.fused_attn for _, m in layers]
    defended = attention_temperature(vit, 3.0)
    assert (defended.logits(images) - before).abs().max() > 1e-3
    assert attention_temperature_of(defended) == pytest.approx(3.0)
    assert defended.has(Capability.ATTENTION) and defended.name.endswith("(T=3)")
    assert defended.torch_module() is not vit.torch_module()
    torch.testing.assert_close(vit.logits(images), before, atol=0, rtol=0)
    assert [m.scale for _, m in layers] == scales and [m.fused_attn for _, m in layers] == fused
    for k, v in vit.torch_module().state_dict().items():
        assert torch.equal(v, state[k])


def test_large_temperature_flattens_attention(vit: TorchModelAdapter, images: torch.Tensor) -> None:
    n = 65
    base = AttentionRecorder(vit.torch_module())(images).attn
    flat = AttentionRecorder(attention_temperature(vit, 1e6).torch_module())(images).attn
    assert (base - 1.0 / n).abs().max() > 1e-2  # the undefended attention is not uniform
    torch.testing.assert_close(flat, torch.full_like(flat, 1.0 / n), atol=1e-5, rtol=0)
    mid = AttentionRecorder(attention_temperature(vit, 4.0).torch_module())(images).attn
    assert (mid - 1.0 / n).abs().max() < (base - 1.0 / n).abs().max()


@pytest.mark.parametrize("t", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_temperature(vit: TorchModelAdapter, t: float) -> None:
    with pytest.raises(ParameterError, match="temperature"):
        attention_temperature(vit, t)


def test_model_without_attention() -> None:
    cnn = TorchModelAdapter(nn.Sequential(nn.Conv2d(3, 4, 3, 2, 1), nn.Flatten(), nn.Linear(4 * 16 * 16, 10)),
                            InputSpec((3, 32, 32), 10), name="cnn")
    with pytest.raises(CapabilityError, match="no timm attention"):
        attention_temperature(cnn, 2.0)
