"""Fourier basis, evaluation grid and heat map (METHODS §8.4) and the ``fourier`` stage."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from robaudit.attacks.fourier import (
    band_masks,
    canonical_index,
    evaluation_grid,
    fourier_basis,
    fourier_errors,
    mirror,
    symmetric_position,
)
from robaudit.attacks.stages.fourier_sensitivity import FourierSensitivity

from robaudit.data import Dataset
from robaudit.errors import ParameterError
from robaudit.model import ModelAdapter
from robaudit.seeding import derive_seed, make_generator
from tests.attacks._digits_cnn import digits_adapter, single_thread

SHAPES = [(8, 8), (7, 9), (6, 5), (3, 3), (1, 4)]


def official_basis(h: int, w: int, i: int, j: int) -> np.ndarray:
    """freq_heatmap.py::_get_fourier_basis for one position, written with numpy's FFT."""
    f = np.zeros((h, w), dtype=np.complex128)
    si, sj = symmetric_position(h, w, np.array(i), np.array(j))
    if (int(si), int(sj)) == (i, j):
        f[i, j] = 1.0
    else:
        f[i, j] = 0.5 + 0.5j
        f[int(si), int(sj)] = 0.5 - 0.5j
    return np.sqrt(h * w) * np.real(np.fft.ifft2(np.fft.ifftshift(f)))


def canonical_positions(h: int, w: int) -> np.ndarray:
    reps = np.unique(canonical_index(h, w))
    return np.stack([reps // w, reps % w], axis=1)


@pytest.mark.parametrize("shape", SHAPES)
def test_basis_matches_the_official_construction(shape: tuple[int, int]) -> None:
    h, w = shape
    pos = np.array([(i, j) for i in range(h) for j in range(w)])
    ours = fourier_basis(h, w, pos, dtype=torch.float64).numpy()
    for k, (i, j) in enumerate(pos):
        assert np.allclose(ours[k], official_basis(h, w, i, j), atol=1e-12), (i, j)


@pytest.mark.parametrize("shape", SHAPES)
def test_basis_is_orthonormal_over_distinct_pairs(shape: tuple[int, int]) -> None:
    h, w = shape
    pos = canonical_positions(h, w)
    u = fourier_basis(h, w, pos, dtype=torch.float64).reshape(len(pos), -1)
    gram = u @ u.T
    assert torch.allclose(gram, torch.eye(len(pos), dtype=torch.float64), atol=1e-10)
    # one representative per pair: (HW + #self-symmetric) / 2 of them
    i, j = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    si, sj = symmetric_position(h, w, i, j)
    assert len(pos) == (h * w + int(((si == i) & (sj == j)).sum())) // 2


@pytest.mark.parametrize("shape", SHAPES)
def test_fft_support_is_the_pair(shape: tuple[int, int]) -> None:
    h, w = shape
    for i, j in canonical_positions(h, w):
        u = fourier_basis(h, w, np.array([[i, j]]), dtype=torch.float64)[0].numpy()
        spec = np.abs(np.fft.fftshift(np.fft.fft2(u)))
        si, sj = symmetric_position(h, w, np.array(i), np.array(j))
        support = {(int(a), int(b)) for a, b in zip(*np.nonzero(spec > 1e-9))}
        assert support <= {(int(i), int(j)), (int(si), int(sj))} and support


def test_grid_mirrors_and_weights() -> None:
    h = w = 224
    grid = evaluation_grid(h, w, window=31, stride=7)
    # sampling weights tile the spectrum: dense window (weight 1) + stride^2 per sparse sample
    assert abs(grid.weight.sum() / (h * w) - 1) < 0.05
    values = np.arange(len(grid.positions), dtype=float)
    heat = mirror(values, grid)
    i, j = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    si, sj = symmetric_position(h, w, i, j)
    both = ~np.isnan(heat) & ~np.isnan(heat[si, sj])
    assert np.array_equal(heat[both], heat[si, sj][both])  # point-symmetric
    assert not np.isnan(heat[h // 2 - 31 : h // 2 + 32, w // 2 - 31 : w // 2 + 32]).any()
    full = evaluation_grid(8, 8, window=None, stride=1)
    assert len(full.positions) == len(canonical_positions(8, 8)) and (full.weight == 1).all()


def test_bands_partition_the_spectrum() -> None:
    masks = band_masks(32, 32)
    total = masks["low"].astype(int) + masks["mid"] + masks["high"]
    assert (total == 1).all() and masks["low"][16, 16] and masks["high"][0, 0]


def test_linear_model_check() -> None:
    """freq_heatmap_test.py: logits = W flatten(x) on 3x3 inputs, no flips, no clipping."""
    g = torch.Generator().manual_seed(0)
    wmat = torch.randn(4, 9, generator=g, dtype=torch.float64)
    x = torch.rand(16, 1, 3, 3, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (16,), generator=g)

    def logits(t: torch.Tensor) -> torch.Tensor:
        return t.reshape(len(t), -1) @ wmat.T

    pos = canonical_positions(3, 3)
    v = 2.5
    wrong, change = fourier_errors(logits, x, y, pos, norm=v, generator=g, rand_flip=False, clip=False)
    basis = fourier_basis(3, 3, pos, dtype=torch.float64)
    expected_change = (v * basis.reshape(len(pos), 9) @ wmat.T).norm(dim=1)
    assert torch.allclose(change, expected_change[None].expand(16, -1).float(), rtol=1e-5)
    normalised = change.mean(0) / change.mean(0).max()
    assert torch.allclose(normalised, (expected_change / expected_change.max()).float(), rtol=1e-5)
    for k in range(len(pos)):
        direct = logits(x + v * basis[k]).argmax(1) != y
        assert torch.equal(wrong[:, k], direct)


@pytest.fixture(scope="module")
def setup() -> Iterator[tuple[ModelAdapter, Dataset]]:
    with single_thread():
        model, x, y = digits_adapter()
        n = 48
        yield model, Dataset(x[:n], y[:n], tuple(f"d{i}" for i in range(n)), None, {"kind": "test"})


def run(stage: FourierSensitivity, model: ModelAdapter, data: Dataset, seed: int = 0):  # type: ignore[no-untyped-def]
    parts, counters = [], 0.0
    for u, batch in enumerate(data.batches(stage.unit_size or len(data))):
        out = stage.run_unit(model, batch, generator=make_generator(derive_seed(seed, stage.name, u)))
        parts.append(out.arrays)
        counters += out.counters["forward"]
    arrays = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    return stage.summarize(arrays, data, {"forward": counters})


def test_stage_heat_map(setup) -> None:  # type: ignore[no-untyped-def]
    model, data = setup
    with single_thread():
        stage = FourierSensitivity(FourierSensitivity.Params())
        stage.unit_size = 32  # two units: exercises concatenation
        out = run(stage, model, data)
        again = run(stage, model, data)
    m = out.metrics
    for key in ("hf_index", "band_error.low", "band_error.mid", "band_error.high", "clean_error", "mean_error"):
        assert key in m and np.isfinite(m[key]), key
    assert m == again.metrics, "same seed, same result"
    assert m["hf_index"] == pytest.approx(m["band_error.high"] - m["band_error.low"])
    assert m["positions_evaluated"] == len(canonical_positions(8, 8))
    heat = np.array(out.figures[0]["values"], dtype=float)
    i, j = np.meshgrid(np.arange(8), np.arange(8), indexing="ij")
    si, sj = symmetric_position(8, 8, i, j)
    assert np.array_equal(heat, heat[si, sj])
    assert m["max_error"] > m["clean_error"], "a v = 4 perturbation of 8x8 digits must hurt somewhere"


def test_zero_norm_gives_the_clean_error_everywhere(setup) -> None:  # type: ignore[no-untyped-def]
    model, data = setup
    with single_thread():
        out = run(FourierSensitivity(FourierSensitivity.Params(norm=0.0)), model, data)
    heat = np.array(out.figures[0]["values"], dtype=float)
    assert np.allclose(heat, out.metrics["clean_error"])
    for band in ("low", "mid", "high"):
        assert out.metrics[f"band_error.{band}"] == pytest.approx(out.metrics["clean_error"])
    assert out.metrics["hf_index"] == pytest.approx(0.0)


def test_quick_profile_samples_fewer_positions(setup) -> None:  # type: ignore[no-untyped-def]
    params = FourierSensitivity.Params(**FourierSensitivity.profiles["quick"])
    assert params.resolve(32, 32) == (4.0, 2, 4)
    assert params.resolve(224, 224) == (15.7, 15, 14)
    assert dataclasses.replace(params, coarse=False).resolve(224, 224) == (15.7, 31, 7)


@pytest.mark.parametrize("bad", [{"norm": -1.0}, {"norm": float("nan")}, {"window": -2}, {"stride": 0},
                                 {"batch_size": 0}])
def test_bad_params(bad: dict) -> None:
    with pytest.raises(ParameterError):
        FourierSensitivity.Params(**bad)
