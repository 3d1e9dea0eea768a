"""EOT patch optimiser and synthetic scenes (METHODS.md §2.3e, §2.5): gradients, determinism, effect."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from robaudit.attacks.patches.eot_patch import EOTPatch, total_variation
from robaudit.attacks.patches.render import map_points
from robaudit.attacks.patches.synthetic_scene import PatchLocation, Rendering, SceneSpec, SyntheticScene
from torch import nn

from robaudit.model import InputSpec, TorchModelAdapter
from tests.attacks._digits_cnn import single_thread


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    with single_thread():
        yield


def tiny_model(seed: int = 0, classes: int = 5) -> TorchModelAdapter:
    torch.manual_seed(seed)  # test-only: a fixed random init
    net = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, classes))
    return TorchModelAdapter(net, InputSpec((3, 16, 16), classes, (0.5,) * 3, (0.5,) * 3))


def images(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 16, 16, generator=g) * 0.8 + 0.1


SPEC = SceneSpec(image_hw=(16, 16), object_fraction=0.75, patch_fraction=0.375)


def test_scene_geometry() -> None:
    scene = SyntheticScene(SPEC)
    assert SPEC.object_side == 12 and SPEC.patch_side == 6 and SPEC.object_origin == (2, 2)
    d = scene.draw(64, torch.Generator().manual_seed(0))
    canon = torch.tensor([[0.0, 0.0], [12.0, 0.0], [12.0, 12.0], [0.0, 12.0]], dtype=torch.float64)
    hobj = scene.object_homography(d, geometric=True)
    assert (map_points(hobj, canon.expand(64, 4, 2)) - d.quad).abs().max() < 1e-3
    # the patch centre stays inside the jittered object quad; quads rotate by at most ~15 deg + jitter
    centre = map_points(scene.patch_homography(d, True), torch.tensor([[[3.0, 3.0]]], dtype=torch.float64))
    assert bool(((centre > 0) & (centre < 16)).all())
    edge = d.quad[:, 1] - d.quad[:, 0]
    angle = torch.rad2deg(torch.atan2(edge[:, 1], edge[:, 0]))
    assert angle.abs().max() < 25 and angle.std() > 3
    digital = scene.patch_homography(d, geometric=False)
    assert torch.allclose(digital[0], torch.tensor([[1.0, 0, 5], [0, 1, 5], [0, 0, 1]], dtype=torch.float64))
    bottom = SyntheticScene(SceneSpec((16, 16), 0.75, 0.375, PatchLocation.BOTTOM)).draw(2, torch.Generator())
    assert bottom.offset[0].tolist() == [3.0, 6.0]


def test_renderings_differ_as_documented() -> None:
    scene = SyntheticScene(SPEC)
    x = images(6)
    p = torch.rand(1, 3, 6, 6, generator=torch.Generator().manual_seed(1))
    d = scene.draw(6, torch.Generator().manual_seed(2))
    out = {r: scene.render(x, p, d, r) for r in Rendering}
    assert torch.equal(out[Rendering.DIGITAL][:, :, 5:11, 5:11], p.expand(6, -1, -1, -1))
    untouched = torch.ones(16, 16, dtype=torch.bool)
    untouched[5:11, 5:11] = False
    assert torch.equal(out[Rendering.DIGITAL][:, :, untouched], x[:, :, untouched])
    a, b = scene.lighting(x, d, geometric=False, jitter=False)
    lit = (p * a + b).clamp(1e-6, 1 - 1e-6)
    assert (out[Rendering.LIGHTING][:, :, 5:11, 5:11] - lit).abs().max() < 1e-6
    assert not torch.allclose(out[Rendering.GEOMETRIC], out[Rendering.DIGITAL])
    assert not torch.allclose(out[Rendering.REALISTIC], out[Rendering.GEOMETRIC])


def test_gradients_wrt_z_are_finite_and_nonzero_through_warp_and_relight() -> None:
    model = tiny_model()
    scene = SyntheticScene(SPEC)
    x = images(4)
    y = model.predict(x)
    z = (torch.rand(1, 3, 6, 6, generator=torch.Generator().manual_seed(3)) * 2 - 1).requires_grad_(True)
    d = scene.draw(4, torch.Generator().manual_seed(4))
    for r in (Rendering.REALISTIC, Rendering.GEOMETRIC, Rendering.LIGHTING):
        z.grad = None
        patch = (torch.tanh(z) + 1) / 2
        loss = -F.cross_entropy(model.logits(scene.render(x, patch, d, r, jitter_light=True)), y)
        loss.backward()
        assert z.grad is not None and bool(torch.isfinite(z.grad).all())
        assert z.grad.abs().sum() > 0
        assert (z.grad != 0).float().mean() > 0.5, r  # most patch pixels reach the image


def test_tv_matches_definition() -> None:
    p = torch.tensor([[[[0.0, 1.0], [0.5, 0.5]]]])
    assert float(total_variation(p)) == pytest.approx((0.5 + 0.5) / 2 + (1.0 + 0.0) / 2)


def _attack(**kw: object) -> EOTPatch:
    args = {"steps": 25, "lr": 0.1, "eot_samples": 2, "universal": True, "rendering": "realistic"}
    args.update(kw)
    return EOTPatch(SyntheticScene(SPEC), **args)  # type: ignore[arg-type]


def test_determinism_under_a_generator() -> None:
    model, x = tiny_model(), images(8)
    y = model.predict(x)
    r1 = _attack().perturb(model, x, y, generator=torch.Generator().manual_seed(7))
    r2 = _attack().perturb(model, x, y, generator=torch.Generator().manual_seed(7))
    r3 = _attack().perturb(model, x, y, generator=torch.Generator().manual_seed(8))
    assert torch.equal(r1.patch, r2.patch) and torch.equal(r1.loss_history, r2.loss_history)
    assert not torch.equal(r1.patch, r3.patch)
    assert r1.patch.shape == (1, 3, 6, 6) and r1.patch.min() >= 0 and r1.patch.max() <= 1
    assert r1.forward_samples == 25 * 8 * 2


@pytest.mark.parametrize("universal", [True, False])
def test_optimiser_raises_the_loss_it_attacks(universal: bool) -> None:
    """The optimised patch has higher true-class CE than its random initial patch, in expectation."""
    model, x = tiny_model(seed=1), images(8, seed=1)
    y = model.predict(x)
    scene = SyntheticScene(SPEC)
    res = _attack(steps=40, universal=universal, eot_samples=1, rendering="digital").perturb(
        model, x, y, generator=torch.Generator().manual_seed(0))
    assert res.patch.shape[0] == (1 if universal else 8)
    init = (torch.tanh(torch.rand(res.patch.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1) + 1) / 2
    d = scene.draw(8, torch.Generator().manual_seed(0))
    with torch.no_grad():
        ce_init = F.cross_entropy(model.logits(scene.render(x, init, d, "digital")), y)
        ce_opt = F.cross_entropy(model.logits(scene.render(x, res.patch, d, "digital")), y)
    assert ce_opt > ce_init + 0.2
    assert res.loss_history[-5:].mean() < res.loss_history[:5].mean()


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        _attack(steps=0)
    with pytest.raises(ValueError):
        _attack(lr=0.0)
