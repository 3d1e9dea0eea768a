"""Fourier-basis perturbations and the Fourier heat map (Yin et al., NeurIPS 2019).

Threat model: a fixed-norm, single-frequency additive perturbation ``v * U_ij``
(no optimisation), measuring which spatial frequencies a classifier is
sensitive to. "A Fourier Perspective on Model Robustness in Computer Vision",
https://arxiv.org/abs/1906.08988; official code google-research
``frequency_analysis/freq_heatmap.py``.

Conventions (as the official code): positions ``(i, j)`` index the *centred*
spectrum (low frequencies in the middle, frequency ``(i - H//2, j - W//2)``).
``U_ij = sqrt(HW) * Re(ifft2(ifftshift(F)))`` with ``F[i, j] = 0.5 + 0.5i`` and
``F[sym(i, j)] = 0.5 - 0.5i`` (``F = 1`` at self-symmetric positions), which in
closed form is ``(cos t - sin t) / sqrt(HW)`` with ``t = 2 pi (ki n / H + kj m / W)``;
``||U|| = 1``. ``U_sym(ij)`` is the quadrature partner of ``U_ij`` (same
frequency, phase shifted), so robaudit evaluates one position per symmetric pair
(the first in raster order) and mirrors the result [robaudit choice, METHODS §8.2].

Perturbed images: ``clip(x + v * r_bc * U_ij, 0, 1)`` with independent random
signs ``r`` per image and channel (``rand_flip``) and the same ``U`` on every channel.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch


def symmetric_position(h: int, w: int, i: np.ndarray, j: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The conjugate-symmetric partner of centred position (i, j): the official ``_get_symmetric_pos``."""
    si = np.mod(h - i, h) if h % 2 == 0 else h - 1 - i
    sj = np.mod(w - j, w) if w % 2 == 0 else w - 1 - j
    return si, sj


def canonical_index(h: int, w: int) -> np.ndarray:
    """(H, W) array: the raster index of the pair representative each position mirrors."""
    i, j = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    si, sj = symmetric_position(h, w, i, j)
    return np.minimum(i * w + j, si * w + sj)


def fourier_basis(h: int, w: int, positions: np.ndarray, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Unit-norm basis images ``(K, H, W)`` for centred ``positions`` (K, 2)."""
    pos = np.asarray(positions, dtype=np.int64).reshape(-1, 2)
    ki = (pos[:, 0] - h // 2).astype(np.float64)
    kj = (pos[:, 1] - w // 2).astype(np.float64)
    n = np.arange(h, dtype=np.float64)
    m = np.arange(w, dtype=np.float64)
    theta = 2 * np.pi * (ki[:, None, None] * n[None, :, None] / h + kj[:, None, None] * m[None, None, :] / w)
    si, sj = symmetric_position(h, w, pos[:, 0], pos[:, 1])
    selfsym = ((si == pos[:, 0]) & (sj == pos[:, 1]))[:, None, None]
    basis = np.where(selfsym, np.cos(theta), np.cos(theta) - np.sin(theta)) / math.sqrt(h * w)
    return torch.as_tensor(basis, dtype=dtype)


@dataclass(frozen=True)
class EvaluationGrid:
    """Which centred positions are evaluated and how much of the spectrum each stands for.

    ``positions`` (K, 2) are pair representatives; ``weight`` (H, W) is the
    sampling weight of every evaluated position after mirroring (1 inside the
    dense window, ``stride**2`` for strided samples, 0 where not evaluated);
    ``slot`` (H, W) maps each position to its column in the per-position results
    (-1 where not evaluated).
    """

    height: int
    width: int
    positions: np.ndarray
    weight: np.ndarray
    slot: np.ndarray


def evaluation_grid(h: int, w: int, window: int | None, stride: int) -> EvaluationGrid:
    """Dense centred ``(2 window + 1)^2`` window plus every ``stride``-th frequency elsewhere.

    ``window=None`` evaluates the whole spectrum.
    """
    ci, cj = h // 2, w // 2
    i, j = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    if window is None:
        dense = np.ones((h, w), dtype=bool)
    else:
        dense = (np.abs(i - ci) <= window) & (np.abs(j - cj) <= window)
    strided = ((i - ci) % stride == 0) & ((j - cj) % stride == 0) & ~dense
    weight = np.where(dense, 1.0, np.where(strided, float(stride) ** 2, 0.0))
    canon = canonical_index(h, w)
    # a pair is evaluated if either member is selected; both members then carry the result
    selected = np.zeros(h * w, dtype=bool)
    selected[canon[weight > 0]] = True
    reps = np.flatnonzero(selected)
    slot_of = -np.ones(h * w, dtype=np.int64)
    slot_of[reps] = np.arange(len(reps))
    slot = slot_of[canon]
    weight = np.where(slot >= 0, np.maximum(weight, weight.reshape(-1)[canon]), 0.0)
    positions = np.stack([reps // w, reps % w], axis=1)
    return EvaluationGrid(h, w, positions, weight, slot)


def band_masks(h: int, w: int) -> dict[str, np.ndarray]:
    """Radial bands of the centred spectrum: low ``r <= S/8``, mid ``S/8 < r <= S/4``, high ``r > S/4``.

    ``r`` is the Euclidean distance from the centre in frequency-index units and
    ``S = min(H, W)`` [robaudit choice, METHODS §8.2].
    """
    i, j = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    r = np.hypot(i - h // 2, j - w // 2)
    s = min(h, w)
    return {"low": r <= s / 8, "mid": (r > s / 8) & (r <= s / 4), "high": r > s / 4}


def mirror(values: np.ndarray, grid: EvaluationGrid) -> np.ndarray:
    """Per-position results ``(..., K)`` -> maps ``(..., H, W)``, NaN where not evaluated."""
    values = np.asarray(values, dtype=np.float64)
    padded = np.concatenate([values, np.full(values.shape[:-1] + (1,), np.nan)], axis=-1)
    return padded[..., grid.slot]


@torch.no_grad()
def fourier_errors(
    logits: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    positions: np.ndarray,
    *,
    norm: float,
    generator: torch.Generator,
    rand_flip: bool = True,
    clip: bool = True,
    batch_size: int = 256,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Misclassification and logit change of every image under every basis perturbation.

    Args:
        logits: the model, images in [0, 1] -> logits.
        x: images (N, C, H, W) in [0, 1]; y: labels (N,).
        positions: centred positions (K, 2).
        norm: ``v``, the L2 norm of the perturbation in [0, 1] pixel units.
        generator: source of the random signs (drawn per position chunk, in order).
        rand_flip: independent random sign per image and channel.
        clip: clip perturbed images to [0, 1].
        batch_size: images per forward pass.

    Returns:
        ``wrong`` (N, K) bool and ``change`` (N, K) float: ``||logits(x~) - logits(x)||_2``.
    """
    n, c, h, w = x.shape
    k_total = len(positions)
    clean = logits(x).float()
    wrong = torch.zeros((n, k_total), dtype=torch.bool)
    change = torch.zeros((n, k_total), dtype=torch.float32)
    chunk = max(1, batch_size // max(n, 1))
    for start in range(0, k_total, chunk):
        pos = positions[start : start + chunk]
        basis = fourier_basis(h, w, pos).to(x.device, x.dtype)  # (k, H, W)
        k = basis.shape[0]
        if rand_flip:
            signs = torch.randint(0, 2, (k, n, c), generator=generator, device=generator.device) * 2 - 1
            signs = signs.to(x.device, x.dtype)
        else:
            signs = torch.ones((k, n, c), dtype=x.dtype, device=x.device)
        pert = x[None] + norm * signs[..., None, None] * basis[:, None, None]
        if clip:
            pert = pert.clamp(0, 1)
        out = logits(pert.reshape(k * n, c, h, w)).float().reshape(k, n, -1)
        wrong[:, start : start + k] = (out.argmax(-1) != y.to(out.device)[None]).T.cpu()
        change[:, start : start + k] = (out - clean[None]).norm(dim=-1).T.cpu()
    return wrong, change
