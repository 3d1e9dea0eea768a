from __future__ import annotations

import pytest
import torch
from robaudit.attacks.patches.masks import (
    positions_to_mask,
    random_patch_masks,
    resolve_patch_size,
    token_patch_size,
)
from robaudit.attacks.patches.natural import corrupt_image, paste
from robaudit.attacks.patches.patch_attack import PatchAttack
from torch import nn

from robaudit.errors import ParameterError
from robaudit.model import InputSpec, TorchModelAdapter


def test_patch_size_resolution(make_tiny_vit) -> None:
    vit = make_tiny_vit(0, depth=1)
    assert token_patch_size(vit) == 4
    assert resolve_patch_size(vit, (32, 32)) == 4
    assert resolve_patch_size(vit, (32, 32), 8) == 8
    cnn = nn.Sequential(nn.Conv2d(3, 4, 3))
    assert token_patch_size(cnn) is None
    assert resolve_patch_size(cnn, (32, 32)) == 4  # default 8x8 grid
    with pytest.raises(ParameterError, match="does not divide"):
        resolve_patch_size(cnn, (32, 32), 5)
    with pytest.raises(ParameterError, match="patch_size"):
        resolve_patch_size(cnn, (30, 30))


def test_mask_exactness_and_positions() -> None:
    g = torch.Generator().manual_seed(0)
    mask, pos = random_patch_masks(6, 3, (32, 32), 4, g)
    assert mask.shape == (6, 1, 32, 32) and pos.shape == (6, 3)
    assert (mask.sum((1, 2, 3)) == 3 * 16).all()
    for i in range(6):
        assert len(set(pos[i].tolist())) == 3  # distinct cells
        for p in pos[i].tolist():
            r, c = divmod(p, 8)
            assert (mask[i, 0, 4 * r : 4 * r + 4, 4 * c : 4 * c + 4] == 1).all()
    single = positions_to_mask(torch.tensor([[9]]), (8, 8), 4)
    assert single[0, 0, 4:8, 4:8].sum() == 16 and single.sum() == 16
    assert positions_to_mask(torch.empty((2, 0), dtype=torch.long), (8, 8), 4).sum() == 0
    with pytest.raises(ParameterError):
        random_patch_masks(1, 65, (32, 32), 4, g)


def test_natural_patch_only_changes_patch_pixels() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.rand((5, 3, 32, 32), generator=g)
    mask, _ = random_patch_masks(5, 2, (32, 32), 4, g)
    xc = corrupt_image(x, "gaussian_noise", 5, torch.Generator().manual_seed(1))
    xt = paste(x, xc, mask)
    outside = ~mask.bool().expand_as(x)
    assert torch.equal(xt[outside], x[outside])  # bit-identical outside the patches
    assert torch.equal(xt[~outside], xc[~outside])
    assert (xt[~outside] != x[~outside]).float().mean() > 0.9  # noise really changed the patch
    assert ((xc * 255 - (xc * 255).round()).abs() < 1e-4).all()  # uint8 round trip
    assert torch.equal(corrupt_image(x, "identity", 5, g), x)
    with pytest.raises(ParameterError):
        corrupt_image(x, "gaussian_noise", 6, g)


class _BlockReader(nn.Module):
    """Logit 1 - logit 0 = 20 * (mean of pixels [6:10, 6:10] - 0.3): reads one fixed pixel block."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = x[:, :, 6:10, 6:10].mean((1, 2, 3))
        return torch.stack([torch.zeros_like(v), 20 * (v - 0.3)], dim=1)


def _toy() -> TorchModelAdapter:
    return TorchModelAdapter(_BlockReader(), InputSpec((3, 32, 32), 2), name="toy", pixel_space=True)


def test_toy_attack_succeeds_only_on_overlapping_positions() -> None:
    model = _toy()
    x = torch.full((3, 3, 32, 32), 0.2)
    y0 = model.predict(x)
    assert (y0 == 0).all()
    positions = torch.arange(64).repeat(3)
    image_index = torch.arange(3).repeat_interleave(64)
    attack = PatchAttack(4, steps=60, alpha=0.05, batch_size=50)
    res = attack.perturb(model, x, y0, image_index, positions, generator=torch.Generator().manual_seed(0))
    success_map = res.success.view(3, 8, 8)
    expected = torch.zeros(8, 8, dtype=torch.bool)
    expected[1:3, 1:3] = True  # the block [6:10, 6:10] overlaps cells (1,1), (1,2), (2,1), (2,2)
    assert torch.equal(success_map, expected.expand(3, 8, 8))
    assert res.unverified == 0 and (res.patches >= 0).all() and (res.patches <= 1).all()
    assert (res.steps[res.success] >= 0).all() and (res.steps[~res.success] == -1).all()
    # re-verify independently
    adv = attack.patched_images(x, image_index, positions, res.patches)
    assert torch.equal(model.predict(adv) != 0, res.success)
    changed = (adv != x[image_index]).flatten(1).sum(1)
    assert (changed <= 3 * 16).all()  # only the patch pixels can differ


def test_attack_zero_steps_random_start_only_and_no_budget_without_success() -> None:
    model = _toy()
    x = torch.full((1, 3, 32, 32), 0.2)
    res = PatchAttack(4, steps=0).perturb(model, x, model.predict(x), torch.zeros(64, dtype=torch.long),
                                          torch.arange(64), generator=torch.Generator().manual_seed(0))
    assert res.backward_samples == 0
    assert not res.success[:9].any()  # (0, 0) etc. do not touch the block


def test_attack_on_vit_is_batched_and_verified(vit: TorchModelAdapter, images: torch.Tensor) -> None:
    y0 = vit.predict(images)
    positions = torch.tensor([0, 9, 27, 63] * 4)
    image_index = torch.arange(4).repeat_interleave(4)
    res = PatchAttack(4, steps=30, alpha=0.1).perturb(vit, images, y0, image_index, positions,
                                                       generator=torch.Generator().manual_seed(0))
    assert res.success.any()
    adv = PatchAttack(4).patched_images(images, image_index, positions, res.patches)
    assert torch.equal(vit.predict(adv) != y0[image_index], res.success)
    assert res.forward_samples <= 16 * 31 + 16


def test_attack_bad_params() -> None:
    with pytest.raises(ParameterError):
        PatchAttack(4, alpha=0)
    with pytest.raises(ParameterError, match="divide"):
        PatchAttack(5).perturb(_toy(), torch.zeros(1, 3, 32, 32), torch.zeros(1, dtype=torch.long),
                               torch.zeros(1, dtype=torch.long), torch.zeros(1, dtype=torch.long),
                               generator=torch.Generator())
