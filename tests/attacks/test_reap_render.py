"""Realistic patch rendering (METHODS.md §2.5): homography, warp, relight, compositing."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from robaudit.attacks.patches.compose import composite, render_patch
from robaudit.attacks.patches.lighting import (
    color_transfer_coefficients,
    percentile_coefficients,
    polynomial_coefficients,
    relight,
)
from robaudit.attacks.patches.render import (
    affine_matrix,
    homography,
    map_points,
    transform_matrix,
    translate_scale_matrix,
    translation,
    warp,
)

SQUARE = torch.tensor([[0.0, 0.0], [8.0, 0.0], [8.0, 8.0], [0.0, 8.0]])


def _quads(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.tensor([[6.0, 5.0], [24.0, 7.0], [26.0, 25.0], [5.0, 23.0]])
    return base + (torch.rand(n, 4, 2, generator=g) - 0.5) * 6.0


def test_homography_maps_each_corner_to_its_keypoint() -> None:
    tgt = _quads(16)
    h = homography(SQUARE.expand(16, 4, 2), tgt)
    assert h.dtype == torch.float64
    assert (map_points(h, SQUARE.expand(16, 4, 2)) - tgt).abs().max() < 1e-3
    # (x, y) order matters: swapping the coordinates of the keypoints must not fit
    assert (map_points(h, SQUARE.expand(16, 4, 2)) - tgt.flip(-1)).abs().max() > 1.0


def test_affine_and_translate_scale_modes() -> None:
    tgt = _quads(4)
    a = affine_matrix(SQUARE.expand(4, 4, 2), tgt)
    assert (map_points(a, SQUARE[:3].expand(4, 3, 2)) - tgt[:, :3]).abs().max() < 1e-9
    assert torch.allclose(a[:, 2], torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64).expand(4, 3))
    box = torch.tensor([[3.0, 4.0], [13.0, 4.0], [13.0, 24.0], [3.0, 24.0]])
    ts = translate_scale_matrix(SQUARE, box)
    assert (map_points(ts, SQUARE) - box).abs().max() < 1e-12
    assert torch.equal(transform_matrix(SQUARE, box, "translate_scale"), ts)
    with pytest.raises(ValueError, match="degenerate"):
        homography(SQUARE, torch.tensor([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0], [3.0, 3.0]]))


def test_warp_matches_closed_form_point_mapping() -> None:
    """Warp coordinate ramps: the value at each output pixel is its preimage, and H maps it back to the pixel."""
    sh, sw = 10, 12
    ys, xs = torch.meshgrid(torch.arange(sh) + 0.5, torch.arange(sw) + 0.5, indexing="ij")
    ramps = torch.stack([xs, ys]).to(torch.float64).unsqueeze(0)  # channel 0 = x centre, 1 = y centre
    src = torch.tensor([[0.0, 0.0], [sw, 0.0], [sw, sh], [0.0, sh]])
    tgt = torch.tensor([[4.0, 3.0], [27.0, 6.0], [25.0, 24.0], [3.0, 21.0]])
    h = homography(src, tgt)
    out = warp(ramps, h, (30, 32))[0]
    oy, ox = torch.meshgrid(torch.arange(30) + 0.5, torch.arange(32) + 0.5, indexing="ij")
    pre = map_points(torch.linalg.inv(h), torch.stack([ox, oy], -1).reshape(-1, 2)).reshape(30, 32, 2)
    interior = (pre[..., 0] > 0.5) & (pre[..., 0] < sw - 0.5) & (pre[..., 1] > 0.5) & (pre[..., 1] < sh - 0.5)
    assert interior.sum() > 100
    got = out.permute(1, 2, 0)[interior]
    assert (got - pre[interior]).abs().max() < 1e-4  # bilinear is exact on linear ramps
    back = map_points(h, got)  # forward map of the sampled preimage lands on the pixel centre
    centres = torch.stack([ox, oy], -1)[interior].to(torch.float64)
    assert (back - centres).abs().max() < 1e-3
    far = (pre[..., 0] < -1) | (pre[..., 0] > sw + 1) | (pre[..., 1] < -1) | (pre[..., 1] > sh + 1)
    assert far.any() and torch.all(out[:, far] == 0)


def test_identity_homography_and_relight_is_a_hard_paste_inside_the_mask() -> None:
    g = torch.Generator().manual_seed(1)
    image = torch.rand(2, 3, 16, 16, generator=g)
    patch = torch.rand(2, 3, 16, 16, generator=g) * 0.98 + 0.01
    yy, xx = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    mask = (((yy - 7.3) ** 2 + (xx - 8.1) ** 2) < 30).to(torch.float32).expand(2, 1, 16, 16)
    out, alpha = render_patch(image, patch, torch.eye(3), patch_mask=mask, a=1.0, b=0.0, interpolation="nearest")
    assert torch.equal(alpha, mask)
    assert torch.equal(out, torch.where(mask.bool(), patch, image))
    # integer translation = paste at the offset (nearest and bilinear)
    small = patch[:, :, :5, :4]
    for mode in ("nearest", "bilinear"):
        moved, _ = render_patch(image, small, translation(torch.tensor([6.0, 6.0]), torch.tensor([3.0, 3.0])),
                                interpolation=mode)
        expect = image.clone()
        expect[:, :, 3:8, 6:10] = small
        assert (moved - expect).abs().max() < 1e-6


def test_constant_patch_stays_constant_and_outside_is_untouched() -> None:
    g = torch.Generator().manual_seed(2)
    image = torch.rand(8, 3, 32, 32, generator=g)
    patch = torch.full((1, 3, 8, 8), 0.3)
    h = homography(SQUARE.expand(8, 4, 2), _quads(8, seed=3))
    a = torch.rand(8, 1, 1, 1, generator=g) * 0.8 + 0.2
    b = torch.rand(8, 1, 1, 1, generator=g) * 0.2
    out, alpha = render_patch(image, patch, h, a=a, b=b)
    assert alpha.min() >= 0 and alpha.max() <= 1
    interior = (alpha == 1).expand_as(out)
    assert interior.sum() > 8 * 3 * 50
    expect = (0.3 * a + b).expand_as(out)
    assert (out[interior] - expect[interior]).abs().max() < 1e-5
    outside = (alpha == 0).expand_as(out)
    assert outside.sum() > 8 * 3 * 500
    assert torch.equal(out[outside], image[outside])
    border = ((alpha > 0) & (alpha < 1)).expand_as(out)
    assert border.any()  # bilinear anti-aliasing: a blend of image and relit patch
    lo = torch.minimum(image, expect)[border]
    hi = torch.maximum(image, expect)[border]
    assert bool(((out[border] >= lo - 1e-6) & (out[border] <= hi + 1e-6)).all())


def test_composite_formula() -> None:
    i, c = torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4)
    al = torch.rand(2, 1, 4, 4)
    assert torch.allclose(composite(i, c, al), i * (1 - al) + al * c)
    assert torch.equal(composite(i, c, torch.full_like(al, 2.0)), c)


def test_relight_is_monotone_and_clamped() -> None:
    p = torch.linspace(0, 1, 101).reshape(1, 1, 1, 101)
    for a, b in [(0.4, 0.1), (1.5, -0.2), (1.0, 0.0)]:
        r = relight(p, a, b).flatten()
        assert bool((r[1:] >= r[:-1]).all())
        assert r.min() >= 1e-6 and r.max() <= 1 - 1e-6
    assert (relight(p, 0.4, 0.1) - (0.4 * p + 0.1)).abs().max() < 1e-6


def test_percentile_uses_only_masked_pixels() -> None:
    g = torch.Generator().manual_seed(4)
    image = torch.rand(3, 3, 20, 20, generator=g)
    mask = torch.zeros(3, 1, 20, 20)
    mask[:, :, 5:15, 4:12] = 1
    a, b = percentile_coefficients(image, mask, 0.2)
    vals = image[:, :, 5:15, 4:12].reshape(3, -1).numpy().astype(np.float64)
    q = np.quantile(vals, [0.2, 0.8], axis=1)
    assert np.allclose(a.flatten().numpy(), q[1] - q[0], atol=1e-6)
    assert np.allclose(b.flatten().numpy(), q[0], atol=1e-6)
    assert torch.equal(percentile_coefficients(image, mask, 0.8)[0], a)  # p -> min(p, 1 - p)
    changed = image.clone()
    changed[:, :, :5] = 1.0 - changed[:, :, :5]  # outside the mask only
    changed[:, :, :, 15:] = 0.0
    a2, b2 = percentile_coefficients(changed, mask, 0.2)
    assert torch.equal(a, a2) and torch.equal(b, b2)
    inside = image.clone()
    inside[:, :, 5:15, 4:12] *= 0.5
    a3, _ = percentile_coefficients(inside, mask, 0.2)
    assert not torch.allclose(a3, a)
    with pytest.raises(ValueError, match="no pixels"):
        percentile_coefficients(image, torch.zeros_like(mask), 0.2)


def test_polynomial_and_color_transfer_recover_an_affine_lighting() -> None:
    g = torch.Generator().manual_seed(5)
    syn = torch.rand(2, 3, 12, 12, generator=g)
    a_true = torch.tensor([0.5, 0.8, 1.2]).reshape(1, 3, 1, 1)
    b_true = torch.tensor([0.1, -0.05, 0.0]).reshape(1, 3, 1, 1)
    real = syn * a_true + b_true
    mask = torch.ones(2, 1, 12, 12)
    polluted = real.clone()
    polluted[:, :, :2, :3] = 5.0  # 6 / 144 outliers per channel: dropped by the residual trimming
    a, b = polynomial_coefficients(polluted, syn, mask, drop=0.2)
    assert torch.allclose(a, a_true.expand_as(a), atol=1e-4) and torch.allclose(b, b_true.expand_as(b), atol=1e-4)
    a, b = color_transfer_coefficients(real, syn, mask)
    assert torch.allclose(a, a_true.expand_as(a), atol=1e-4) and torch.allclose(b, b_true.expand_as(b), atol=1e-4)
