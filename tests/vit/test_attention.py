from __future__ import annotations

import pytest
import torch
from torch import nn

from robaudit.analysis.attention import (
    AttentionRecorder,
    cls_rollout_grid,
    patch_rollout,
    rollout,
    rollout_step,
    timm_attention_modules,
)
from robaudit.errors import CapabilityError, ParameterError


def _reference_attention(module: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """softmax(q k^T / sqrt(d)) recomputed from each block's own qkv projection (and q/k norms)."""
    out: list[torch.Tensor] = []

    def hook(attn: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        t = inputs[0]
        b, n, _ = t.shape
        qkv = attn.qkv(t).reshape(b, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
        q, k = attn.q_norm(qkv[0]), attn.k_norm(qkv[1])
        out.append(torch.softmax(q @ k.transpose(-2, -1) / attn.head_dim**0.5, dim=-1))

    handles = [m.register_forward_pre_hook(hook) for _, m in timm_attention_modules(module)]
    with torch.no_grad():
        module(x)
    for h in handles:
        h.remove()
    return out


@pytest.mark.parametrize("qk_norm", [False, True])
def test_maps_equal_recomputed_softmax(images: torch.Tensor, qk_norm: bool, make_tiny_vit) -> None:
    net = make_tiny_vit(3, qk_norm=qk_norm)
    ref = _reference_attention(net, images)
    maps = AttentionRecorder(net)(images)
    assert maps.attn.shape == (4, 3, 3, 65, 65)
    for layer, a in enumerate(ref):
        torch.testing.assert_close(maps.attn[:, layer], a, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(maps.logits, net(images), atol=1e-4, rtol=1e-4)


class _CountingWrapper(nn.Module):
    calls = 0

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        type(self).calls += 1
        return self.net(x)


def test_one_forward_pass_and_user_model_untouched(images: torch.Tensor, make_tiny_vit) -> None:
    net = _CountingWrapper(make_tiny_vit(0))
    fused_before = [m.fused_attn for _, m in timm_attention_modules(net)]
    rec = AttentionRecorder(net)
    _CountingWrapper.calls = 0
    rec(images)
    assert _CountingWrapper.calls == 1
    assert [m.fused_attn for _, m in timm_attention_modules(net)] == fused_before
    assert all(not m.attn_drop._forward_hooks for _, m in timm_attention_modules(net))


def test_no_attention_raises() -> None:
    with pytest.raises(CapabilityError, match="no timm attention"):
        AttentionRecorder(nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10)))


@pytest.mark.parametrize("fusion", ["mean", "max", "min"])
def test_rollout_rows_sum_to_one(images: torch.Tensor, fusion: str, make_tiny_vit) -> None:
    maps = AttentionRecorder(make_tiny_vit(1))(images)
    for layer in range(maps.attn.shape[1]):
        a_hat = rollout_step(maps.attn[:, layer], fusion, 0.9)
        assert (a_hat >= 0).all()
        torch.testing.assert_close(a_hat.sum(-1), torch.ones(4, 65, dtype=a_hat.dtype), atol=1e-6, rtol=0)
    r = rollout(maps.attn, fusion, 0.9)
    torch.testing.assert_close(r.sum(-1), torch.ones(4, 65), atol=1e-5, rtol=0)


def test_rollout_row_normalisation_is_rowwise() -> None:
    # A non-symmetric attention: Gu's a / a.sum(-1) (no keepdim) would give rows not summing to 1.
    attn = torch.softmax(torch.randn(1, 2, 5, 5, generator=torch.Generator().manual_seed(0)) * 3, -1)
    a_hat = rollout_step(attn, "mean", 0.0)
    fused = attn.mean(1)[0]
    expected = (fused + torch.eye(5)) / 2
    torch.testing.assert_close(a_hat[0], expected / expected.sum(-1, keepdim=True))


def test_discard_keeps_cls_to_cls_and_drops_lowest() -> None:
    values = torch.randperm(16, generator=torch.Generator().manual_seed(0)).float() + 1.0
    values[0] = 0.5  # CLS->CLS is the smallest entry but must survive the discard
    fused = values.view(4, 4) / values.view(4, 4).sum(-1, keepdim=True)
    a_hat = rollout_step(fused.view(1, 1, 4, 4), "mean", 0.5)
    flat = fused.flatten().clone()
    order = sorted(range(16), key=lambda i: float(flat[i]))[:8]
    for i in order:
        if i != 0:
            flat[i] = 0.0
    expected = (flat.view(4, 4) + torch.eye(4)) / 2
    torch.testing.assert_close(a_hat[0], expected / expected.sum(-1, keepdim=True))
    assert a_hat[0, 0, 0] > 0.5


def test_uniform_attention_gives_uniform_rollout() -> None:
    n, layers, grid = 1 + 16, 4, (4, 4)
    attn = torch.full((2, layers, 3, n, n), 1.0 / n)
    r = rollout(attn, "mean", discard_ratio=0.0)
    cls_map = cls_rollout_grid(r, 1, grid)
    torch.testing.assert_close(cls_map, torch.full_like(cls_map, float(cls_map[0, 0, 0])))
    assert patch_rollout(r, 1).shape == (2, 16, 16)
    # and with a non-uniform attention the map is not uniform (the test can fail)
    attn[:, :, :, 0, 5] += 1.0
    attn = attn / attn.sum(-1, keepdim=True)
    cls_map = cls_rollout_grid(rollout(attn, "mean", 0.0), 1, grid)
    assert cls_map.flatten(1).argmax(1).tolist() == [4, 4]  # token 5 = patch 4


def test_distilled_deit_strips_two_prefix_tokens(images: torch.Tensor, make_tiny_vit) -> None:
    net = make_tiny_vit(0, distilled=True, depth=2)
    rec = AttentionRecorder(net)
    assert rec.num_prefix_tokens == 2 and rec.grid == (8, 8)
    maps = rec(images)
    assert maps.attn.shape[-1] == 66
    r = rollout(maps.attn)
    grid = cls_rollout_grid(r, maps.num_prefix_tokens, maps.grid)
    torch.testing.assert_close(grid.flatten(1), r[:, 0, 2:])
    assert patch_rollout(r, 2).shape == (4, 64, 64)
    with pytest.raises(ParameterError, match="prefix"):
        cls_rollout_grid(r, 1, maps.grid)


def test_bad_rollout_params() -> None:
    attn = torch.full((1, 1, 3, 3), 1 / 3)
    with pytest.raises(ParameterError):
        rollout_step(attn, "median", 0.9)
    with pytest.raises(ParameterError):
        rollout_step(attn, "mean", 1.0)
