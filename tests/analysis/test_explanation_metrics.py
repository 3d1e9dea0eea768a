"""Explanation similarity and faithfulness measures; captum baselines on a tiny CNN and a token net."""

from __future__ import annotations

import math

import pytest
import torch

from robaudit.analysis.attribution_baselines import gradcam, integrated_gradients, saliency
from robaudit.analysis.causal import activation
from robaudit.analysis.explanation_metrics import deletion_insertion_auc, gaussian_blur, spearman, topk_iou
from tests.analysis.test_causal import TokenNet, gap_net, images


def test_spearman_and_iou_known_values() -> None:
    a = torch.arange(100.0).view(1, 10, 10)
    assert spearman(a, a ** 3 + 1).item() == pytest.approx(1.0)
    assert spearman(a, -a).item() == pytest.approx(-1.0)
    assert math.isnan(spearman(a, torch.zeros_like(a)).item())
    assert topk_iou(a, a).item() == 1.0
    assert topk_iou(a, -a).item() == 0.0
    assert math.isnan(topk_iou(a, torch.zeros_like(a)).item())
    b = a.clone()
    b[0, 9, 5:] = -1  # the top 5 of the 10 top pixels move out of b's top 10
    assert topk_iou(a, b).item() == pytest.approx(5 / 15)


def test_deletion_insertion_exact_on_a_half_image_model() -> None:
    """p_y = mean of the left half: deleting the left half first gives AUC 0.25, right first 0.75."""
    def logits_fn(z: torch.Tensor) -> torch.Tensor:
        p = z[:, :, :, :4].mean((1, 2, 3)).clamp(1e-9, 1 - 1e-9)
        return torch.stack([torch.log(p), torch.log1p(-p)], dim=1)

    x = torch.ones(2, 1, 8, 8, dtype=torch.float64)
    left = torch.zeros(8, 8, dtype=torch.float64)
    left[:, :4] = 1
    maps = torch.stack([left, 1 - left])
    d, i = deletion_insertion_auc(logits_fn, x, maps, torch.zeros(2, dtype=torch.long), block=4,
                                  blurred=torch.zeros_like(x))
    assert d.tolist() == pytest.approx([0.25, 0.75], abs=1e-6)
    assert i.tolist() == pytest.approx([0.75, 0.25], abs=1e-6)
    # two steps (0, 2, 4 blocks): the curve is sampled at 0, 0.5, 1 of the blocks
    d, i = deletion_insertion_auc(logits_fn, x, maps, torch.zeros(2, dtype=torch.long), block=4,
                                  blurred=torch.zeros_like(x), steps=2)
    assert d.tolist() == pytest.approx([0.25, 0.75], abs=1e-6)
    x3 = torch.ones(1, 1, 12, 12, dtype=torch.float64)  # 9 blocks of 4x4 ~ unequal steps still span [0, 1]
    d, i = deletion_insertion_auc(logits_fn, x3, torch.rand(1, 12, 12, dtype=torch.float64),
                                  torch.zeros(1, dtype=torch.long), block=4, blurred=torch.zeros_like(x3), steps=4)
    assert 0 <= d.item() <= 1 and 0 <= i.item() <= 1


def test_blur_preserves_constants_and_smooths() -> None:
    x = torch.full((1, 3, 16, 16), 0.3, dtype=torch.float64)
    assert torch.allclose(gaussian_blur(x, 2.0), x)
    noise = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert gaussian_blur(noise, 2.0).std() < 0.5 * noise.std()


def test_baselines_shapes_and_gradcam_on_gap_net_is_cam() -> None:
    net, x = gap_net(), images(4, 6)
    y = torch.tensor([0, 1, 2, 3])
    # for a GAP + linear head, Grad-CAM weights are W[y, c] / (H W): the map is CAM / (H W)
    cam = torch.einsum("nc,nchw->nhw", net[4].weight.detach()[y], activation(net, "1", x)).clamp_min(0) / 36
    assert torch.allclose(gradcam(net, "1", x, y), cam, atol=1e-10)
    for m in (integrated_gradients(net, x, y, steps=8), saliency(net, x, y)):
        assert m.shape == (4, 6, 6) and (m >= 0).all() and m.abs().sum() > 0
    assert all(not mod._forward_hooks for mod in net.modules())


def test_token_gradcam_runs_on_token_layers() -> None:
    net = TokenNet().double().eval().requires_grad_(False)  # adapters freeze weights
    x = images(3, 4)
    m = gradcam(net, "blocks.0.mlp", x, torch.tensor([0, 1, 2]))
    assert m.shape == (3, 4, 4) and torch.isfinite(m).all()
    assert all(not mod._forward_hooks for mod in net.modules())
