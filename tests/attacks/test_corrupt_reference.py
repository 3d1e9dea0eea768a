"""robaudit's corruptions against the reference implementation, imagecorruptions 1.1.2 (test-only).

imagecorruptions is imported through tests/imagecorruptions_shim.py (it no longer imports as released). Comparisons run at 224 px, where robaudit's
resolution scaling is the identity. Mean absolute differences are in uint8 levels (0..255).
"""

from __future__ import annotations

import types
import warnings
from collections.abc import Iterator

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from robaudit.attacks.corruptions import corrupt
from robaudit.attacks.corruptions import params as P
from robaudit.attacks.corruptions.filters import (
    clipped_zoom,
    gaussian_filter,
    motion_smear,
    warp_bilinear_symmetric,
)

from tests.attacks._digits_cnn import single_thread
from tests.imagecorruptions_shim import load_imagecorruptions

pytest.importorskip("cv2")
pytest.importorskip("skimage")


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """One intra-op thread: faster than oversubscribing the shared CI cores."""
    with single_thread():
        yield


@pytest.fixture(scope="module")
def ic() -> types.ModuleType:
    return load_imagecorruptions()


@pytest.fixture(scope="module")
def photos() -> np.ndarray:
    """Two 224 x 224 uint8 RGB photographs (scikit-learn's offline samples)."""
    from sklearn.datasets import load_sample_image

    out = []
    for name in ("china.jpg", "flower.jpg"):
        a = torch.tensor(load_sample_image(name)).permute(2, 0, 1).float()
        h, w = a.shape[1:]
        s = min(h, w)
        a = a[:, (h - s) // 2 : (h + s) // 2, (w - s) // 2 : (w + s) // 2]
        a = F.interpolate(a[None], size=(224, 224), mode="area")[0]
        out.append(a.round().clamp(0, 255).permute(1, 2, 0).numpy().astype(np.uint8))
    return np.stack(out)


def ours(photos: np.ndarray, name: str, severity: int, seed: int = 0) -> np.ndarray:
    x = torch.tensor(photos).permute(0, 3, 1, 2).float() / 255
    y = corrupt(x, name, severity, generator=torch.Generator().manual_seed(seed))
    return (y.permute(0, 2, 3, 1).numpy() * 255).round()


def reference(ic: types.ModuleType, photos: np.ndarray, name: str, severity: int, seed: int = 0) -> np.ndarray:
    np.random.seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.stack([ic.corrupt(p, corruption_name=name, severity=severity) for p in photos]).astype(np.float64)


# Bounds on the mean |ours - reference| per pixel value (uint8 levels) and on the max.
# contrast / pixelate / jpeg: same arithmetic (Pillow's two rounded BOX passes, libjpeg with
# the same quantisation tables) -> identical. brightness: closed-form HSV scaling vs skimage's
# float round trip; zoom: float32 sampling coordinates; defocus: float32 FFT vs OpenCV; all
# three only flip the uint8 truncation of values within ~1e-5 of an integer (< 0.05 levels on
# average, never more than 1 level).
DETERMINISTIC = {
    "contrast": (0.01, 1),
    "pixelate": (0.01, 1),
    "jpeg_compression": (0.01, 1),
    "brightness": (0.05, 1),
    "zoom_blur": (0.05, 1),
    "defocus_blur": (0.05, 1),
}


@pytest.mark.parametrize("name", sorted(DETERMINISTIC))
def test_deterministic_corruptions_match(name: str, ic: types.ModuleType, photos: np.ndarray) -> None:
    mean_bound, max_bound = DETERMINISTIC[name]
    for sev in range(1, 6):
        diff = np.abs(ours(photos, name, sev) - reference(ic, photos, name, sev))
        print(f"{name} s{sev}: mean |diff| = {diff.mean():.4f}, max = {diff.max():.0f}")
        assert diff.mean() <= mean_bound and diff.max() <= max_bound, (name, sev, diff.mean(), diff.max())


@pytest.mark.parametrize("severity", [1, 3, 5])
def test_motion_blur_matches_for_the_same_angle(severity: int, ic: types.ModuleType, photos: np.ndarray) -> None:
    seed = 10 + severity
    np.random.seed(seed)
    angle = np.random.uniform(-45, 45)  # the reference's first draw
    ref = reference(ic, photos, "motion_blur", severity, seed=seed)[:1]
    radius, sigma = P.MOTION_BLUR[severity - 1]
    x = torch.tensor(photos[:1]).permute(0, 3, 1, 2).float() / 255
    y = torch.floor(motion_smear(x, radius, sigma, np.array([angle])).clamp(0, 1) * 255 + 1e-4)
    diff = np.abs(y.permute(0, 2, 3, 1).numpy() - ref)
    print(f"motion_blur s{severity} angle {angle:.2f}: mean |diff| = {diff.mean():.4f}, max = {diff.max():.0f}")
    assert diff.mean() <= 0.05 and diff.max() <= 1


@pytest.mark.parametrize("name", ["gaussian_noise", "shot_noise", "impulse_noise"])
def test_noise_statistics_match(name: str, ic: types.ModuleType, photos: np.ndarray) -> None:
    clean = photos.astype(np.float64)
    for sev in range(1, 6):
        d_ours = (ours(photos, name, sev, seed=sev) - clean).ravel()
        d_ref = (reference(ic, photos, name, sev, seed=sev) - clean).ravel()
        se = np.sqrt(d_ours.var() / d_ours.size + d_ref.var() / d_ref.size)
        print(
            f"{name} s{sev}: diff mean {d_ours.mean():.3f} vs {d_ref.mean():.3f} (se {se:.3f}), "
            f"std {d_ours.std():.3f} vs {d_ref.std():.3f}"
        )
        assert abs(d_ours.mean() - d_ref.mean()) <= 5 * se + 0.05
        assert abs(d_ours.std() / d_ref.std() - 1) <= 0.02


# Random corruptions whose fields cannot be replayed: compare the distortion they cause,
# mean |corrupted - clean|, averaged over seeds. Relative tolerances cover seed-to-seed
# spread (fog's fractal and snow's flakes vary most) and, for frost, the procedural
# texture (colour moments match the photographs; structure is an approximation).
RANDOM_FIDELITY = {"elastic_transform": (2, 0.08), "snow": (3, 0.15), "fog": (6, 0.20), "frost": (3, 0.30)}


@pytest.mark.parametrize("name", sorted(RANDOM_FIDELITY))
def test_random_corruptions_distort_like_the_reference(name: str, ic: types.ModuleType, photos: np.ndarray) -> None:
    seeds, tol = RANDOM_FIDELITY[name]
    clean = photos.astype(np.float64)
    for sev in (1, 3, 5):
        d_ours = np.mean([np.abs(ours(photos, name, sev, seed=s) - clean).mean() for s in range(seeds)])
        d_ref = np.mean([np.abs(reference(ic, photos, name, sev, seed=s) - clean).mean() for s in range(seeds)])
        print(f"{name} s{sev}: mean distortion {d_ours:.2f} vs reference {d_ref:.2f}")
        assert abs(d_ours / d_ref - 1) <= tol, (name, sev, d_ours, d_ref)


@pytest.mark.slow
def test_glass_blur_distorts_like_the_reference(ic: types.ModuleType, photos: np.ndarray) -> None:
    clean = photos.astype(np.float64)
    for sev in range(1, 6):
        d_ours = np.abs(ours(photos, "glass_blur", sev) - clean).mean()
        d_ref = np.abs(reference(ic, photos, "glass_blur", sev) - clean).mean()
        print(f"glass_blur s{sev}: mean distortion {d_ours:.2f} vs reference {d_ref:.2f}")
        assert abs(d_ours / d_ref - 1) <= 0.05


def test_filters_match_scipy() -> None:
    from scipy import ndimage

    rng = np.random.default_rng(0)
    img = rng.random((17, 23))
    t = torch.tensor(img)[None, None]
    for mode, scipy_mode in (("nearest", "nearest"), ("symmetric", "reflect")):
        for sigma, trunc in ((0.7, 4.0), (2.24, 3.0), (9.0, 4.0)):
            ref = ndimage.gaussian_filter(img, sigma, mode=scipy_mode, truncate=trunc)
            got = gaussian_filter(t, (sigma, sigma), mode, truncate=trunc)[0, 0].numpy()
            assert np.abs(ref - got).max() < 1e-6, (mode, sigma)
    rows = rng.uniform(-6, 23, size=(17, 23))
    cols = rng.uniform(-6, 29, size=(17, 23))
    ref = ndimage.map_coordinates(img, (rows.ravel(), cols.ravel()), order=1, mode="reflect").reshape(17, 23)
    got = warp_bilinear_symmetric(t, torch.tensor(rows)[None], torch.tensor(cols)[None])[0, 0].numpy()
    assert np.abs(ref - got).max() < 1e-9


def test_clipped_zoom_matches(ic: types.ModuleType) -> None:
    rng = np.random.default_rng(1)
    img = rng.random((37, 41, 1)).astype(np.float32)
    for z in (1.0, 1.07, 1.3, 2.5, 4.5):
        ref = ic.corruptions.clipped_zoom(img, z)
        got = clipped_zoom(torch.tensor(img).permute(2, 0, 1)[None], z)[0].permute(1, 2, 0).numpy()
        assert ref.shape == got.shape
        assert np.abs(ref - got).max() < 1e-5
