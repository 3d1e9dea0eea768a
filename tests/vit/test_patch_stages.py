from __future__ import annotations

import numpy as np
import pytest
import torch
from robaudit.attacks.stages.patch_attack import PatchAttackParams, PatchAttackStage
from robaudit.attacks.stages.patch_corruption import PatchCorruption, PatchCorruptionParams
from torch import nn

from robaudit.data import Dataset
from robaudit.errors import ParameterError
from robaudit.model import InputSpec, TorchModelAdapter


class _BlockReader(nn.Module):
    """Class 1 iff the mean of pixels [6:10, 6:10] exceeds 0.3: the logit reads one fixed block."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = x[:, :, 6:10, 6:10].mean((1, 2, 3))
        return torch.stack([torch.zeros_like(v), 20 * (v - 0.3)], dim=1)


class _DeviationReader(nn.Module):
    """Class 1 iff the block [6:10, 6:10] deviates from 0.25 by more than 0.03 on average."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = (x[:, :, 6:10, 6:10] - 0.25).abs().mean((1, 2, 3))
        return torch.stack([torch.zeros_like(v), 20 * (v - 0.03)], dim=1)


def _toy() -> TorchModelAdapter:
    return TorchModelAdapter(_BlockReader(), InputSpec((3, 32, 32), 2), name="toy", pixel_space=True)


def _toy_data(n: int, value: float = 0.1) -> Dataset:
    x = torch.full((n, 3, 32, 32), value)
    return Dataset(x, torch.zeros(n, dtype=torch.long), tuple(f"t{i}" for i in range(n)), None, {})


OVERLAP = {9, 10, 17, 18}  # grid cells (1,1), (1,2), (2,1), (2,2) cover the block [6:10, 6:10]


def test_patch_corruption_identity_and_k0_give_zero_fr(vit, self_labelled, run_stage) -> None:
    data = self_labelled(vit, 12)
    out = run_stage(PatchCorruption(PatchCorruptionParams(corruptions=("identity",), ks=(0, 1, 4))), vit, data)
    assert out.metrics["clean_accuracy"] == 1.0 and out.metrics["clean_correct_n"] == 12
    for k in (0, 1, 4):
        assert out.metrics[f"patch_corrupt_fr.k{k}.identity"] == 0.0
        assert out.metrics[f"patch_corrupt_acc.k{k}"] == 1.0
        assert out.metrics[f"patch_corrupt_fr.k{k}.n"] == 12
    noisy = run_stage(PatchCorruption(PatchCorruptionParams(ks=(0, 64))), vit, data)
    assert noisy.metrics["patch_corrupt_fr.k0"] == 0.0
    assert noisy.metrics["patch_corrupt_fr.k64"] > 0.0  # the whole image corrupted flips something
    lo, hi = noisy.metrics["patch_corrupt_fr.k64.ci_low"], noisy.metrics["patch_corrupt_fr.k64.ci_high"]
    assert lo <= noisy.metrics["patch_corrupt_fr.k64"] <= hi


def test_patch_corruption_toy_flips_only_when_patch_touches_block() -> None:
    stage = PatchCorruption(PatchCorruptionParams(corruptions=("gaussian_noise",), ks=(1, 3), draws=4))
    data = _toy_data(40, 0.25)
    model = TorchModelAdapter(_DeviationReader(), InputSpec((3, 32, 32), 2), name="dev", pixel_space=True)
    stage.check(model, data)
    unit = stage.run_unit(model, data.select(data.ids), generator=torch.Generator().manual_seed(0))
    for k in (1, 3):
        pred, pos = unit.arrays[f"pred.gaussian_noise.k{k}"], unit.arrays[f"positions.gaussian_noise.k{k}"]
        touches = np.isin(pos, list(OVERLAP)).any(-1)
        assert not pred[~touches].any()  # FR is exactly 0 where no patch overlaps the block
        assert pred[touches].all()  # noise on (part of) the block always flips it
    out = stage.summarize({k: np.asarray(v) for k, v in unit.arrays.items()}, data, unit.counters)
    assert 0 < out.metrics["patch_corrupt_fr.k1"] <= out.metrics["patch_corrupt_fr.k3"]
    pos = unit.arrays["positions.gaussian_noise.k1"]
    assert out.metrics["patch_corrupt_fr.k1"] == pytest.approx(np.isin(pos, list(OVERLAP)).mean())


def test_patch_attack_stage_success_map_on_toy(run_stage) -> None:
    stage = PatchAttackStage(PatchAttackParams(positions=0, steps=40, alpha=0.05))
    out = run_stage(stage, _toy(), _toy_data(3))
    m = out.metrics
    assert m["adv_patch_fr_pos"] == pytest.approx(4 / 64) and m["adv_patch_fr_pos.n"] == 3 * 64
    assert m["adv_patch_fr_any"] == 1.0 and m["adv_patch_size"] == 4
    assert list(m)[:2] == ["adv_patch_fr_any", "adv_patch_fr_any.ci_low"]  # headline first
    heat = next(f for f in out.figures if f["type"] == "heatmap")
    values = np.array(heat["values"], dtype=float)
    expected = np.zeros((8, 8))
    expected[1:3, 1:3] = 1.0
    np.testing.assert_array_equal(values, expected)
    assert out.budget["pairs_evaluated"] == 192 and out.budget["steps"] == 40
    assert m["adv_patch_steps_median"] >= 0


def test_patch_attack_stage_on_vit_subset(vit, self_labelled, run_stage) -> None:
    out = run_stage(PatchAttackStage(PatchAttackStage.Params(**PatchAttackStage.profiles["quick"])), vit,
                    self_labelled(vit, 8))
    assert out.metrics["adv_patch_fr_pos.n"] == 8 * 3
    assert 0 <= out.metrics["adv_patch_fr_pos"] <= out.metrics["adv_patch_fr_any"] <= 1
    assert out.budget["positions_per_image"] == 3 and out.budget["grid"] == [8, 8]


def test_bad_patch_parameters(vit, self_labelled) -> None:
    data = self_labelled(vit, 2)
    with pytest.raises(ParameterError, match="does not divide"):
        PatchCorruption(PatchCorruptionParams(patch_size=5)).check(vit, data)
    with pytest.raises(ParameterError, match="does not divide"):
        PatchAttackStage(PatchAttackParams(patch_size=7)).check(vit, data)
    with pytest.raises(ParameterError, match="fit"):
        PatchCorruption(PatchCorruptionParams(ks=(65,))).check(vit, data)
    with pytest.raises(ParameterError):
        PatchCorruptionParams(severity=6)
    with pytest.raises(ParameterError):
        PatchAttackParams(alpha=0.0)
