"""Planar geometric transforms for realistic patch rendering: homographies and the inverse warp.

Guarantee: a pixel of the output takes the value of the source image at the preimage of
its centre under the transform (bilinear or nearest interpolation, zeros outside the
source), so a patch drawn on a plane lands where the 4 (or 3) keypoint correspondences
put it. Coordinates are continuous (x, y) = (column, row) with pixel corners at integers:
pixel (i, j) covers [j, j+1] x [i, i+1] and its centre is (j + 0.5, i + 0.5). A canvas of
size h x w therefore has corners (0, 0), (w, 0), (w, h), (0, h) (clockwise from top-left,
REAP's keypoint order).

Paper: Hingun, Sitawarin, Li & Wagner, "REAP: A Large-Scale Realistic Adversarial Patch
Benchmark" (ICCV 2023), geometric transform (METHODS.md §2.3b: perspective from 4 points,
affine from 3, translate_scale from bounding boxes). Kornia/OpenCV are unavailable, so the
warp is ``F.grid_sample`` driven by the INVERSE homography, with ``align_corners=False``
both when normalising and when sampling.
"""

from __future__ import annotations

import enum

import torch
import torch.nn.functional as F


class WarpMode(str, enum.Enum):
    """How the transform is fitted to the keypoints."""

    PERSPECTIVE = "perspective"  #: full homography from 4 point pairs (DLT)
    AFFINE = "affine"  #: affine map from the first 3 point pairs, padded to 3x3
    TRANSLATE_SCALE = "translate_scale"  #: axis-aligned bounding box of src onto that of tgt


class Interpolation(str, enum.Enum):
    BILINEAR = "bilinear"
    NEAREST = "nearest"


def _pairs(src: torch.Tensor, tgt: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    s = torch.as_tensor(src, dtype=torch.float64)
    t = torch.as_tensor(tgt, dtype=torch.float64)
    if s.shape != t.shape or s.shape[-1] != 2 or s.shape[-2] < k:
        raise ValueError(f"need src and tgt of equal shape (..., >= {k}, 2), got {tuple(s.shape)} and {tuple(t.shape)}")
    return s[..., :k, :], t[..., :k, :]


def _solve(a: torch.Tensor, rhs: torch.Tensor, what: str) -> torch.Tensor:
    sol, info = torch.linalg.solve_ex(a, rhs.unsqueeze(-1))
    if bool((info != 0).any()) or not bool(torch.isfinite(sol).all()):
        raise ValueError(f"degenerate keypoints for the {what} transform (collinear or repeated points); "
                         "give distinct, non-collinear corners")
    return sol.squeeze(-1)


def homography(src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    """The 3x3 homography H (float64) with H [x, y, 1]^T ~ [u, v, 1]^T for 4 point pairs.

    Direct linear transform with h33 = 1, solved in float64.

    Args:
        src: (..., 4, 2) source corners (x, y).
        tgt: (..., 4, 2) target keypoints (x, y), same order.

    Returns:
        (..., 3, 3) float64 tensor.

    Raises:
        ValueError: shapes differ or the points are degenerate.
    """
    s, t = _pairs(src, tgt, 4)
    x, y, u, v = s[..., 0], s[..., 1], t[..., 0], t[..., 1]
    one, zero = torch.ones_like(x), torch.zeros_like(x)
    rows_u = torch.stack([x, y, one, zero, zero, zero, -u * x, -u * y], dim=-1)
    rows_v = torch.stack([zero, zero, zero, x, y, one, -v * x, -v * y], dim=-1)
    a = torch.cat([rows_u, rows_v], dim=-2)  # (..., 8, 8)
    h = _solve(a, torch.cat([u, v], dim=-1), "perspective")
    return torch.cat([h, torch.ones_like(h[..., :1])], dim=-1).reshape(*h.shape[:-1], 3, 3)


def affine_matrix(src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    """The affine map of the first 3 point pairs, as a (..., 3, 3) float64 matrix (last row 0, 0, 1)."""
    s, t = _pairs(src, tgt, 3)
    ones = torch.ones_like(s[..., :1])
    m = torch.cat([s, ones], dim=-1)  # (..., 3, 3): rows [x, y, 1]
    coeff = torch.stack([_solve(m, t[..., 0], "affine"), _solve(m, t[..., 1], "affine")], dim=-2)
    last = torch.zeros_like(coeff[..., :1, :])
    last[..., 0, 2] = 1.0
    return torch.cat([coeff, last], dim=-2)


def translate_scale_matrix(src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    """Axis-aligned map of the bounding box of ``src`` onto the bounding box of ``tgt`` (..., 3, 3)."""
    s, t = _pairs(src, tgt, torch.as_tensor(src).shape[-2])
    s_lo, s_hi = s.amin(-2), s.amax(-2)
    t_lo, t_hi = t.amin(-2), t.amax(-2)
    if bool(((s_hi - s_lo) <= 0).any()):
        raise ValueError("degenerate source box for translate_scale: src points must span both axes")
    scale = (t_hi - t_lo) / (s_hi - s_lo)
    shift = t_lo - scale * s_lo
    out = torch.zeros(*scale.shape[:-1], 3, 3, dtype=torch.float64, device=scale.device)
    out[..., 0, 0], out[..., 1, 1], out[..., 2, 2] = scale[..., 0], scale[..., 1], 1.0
    out[..., 0, 2], out[..., 1, 2] = shift[..., 0], shift[..., 1]
    return out


def transform_matrix(src: torch.Tensor, tgt: torch.Tensor, mode: WarpMode | str = WarpMode.PERSPECTIVE) -> torch.Tensor:
    """Fit the transform of ``mode`` mapping ``src`` corners onto ``tgt`` keypoints (float64, (..., 3, 3))."""
    mode = WarpMode(mode)
    if mode is WarpMode.PERSPECTIVE:
        return homography(src, tgt)
    if mode is WarpMode.AFFINE:
        return affine_matrix(src, tgt)
    return translate_scale_matrix(src, tgt)


def translation(dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """(n, 3, 3) float64 translations by (dx, dy)."""
    dx = torch.as_tensor(dx, dtype=torch.float64).reshape(-1)
    dy = torch.as_tensor(dy, dtype=torch.float64).reshape(-1)
    out = torch.eye(3, dtype=torch.float64, device=dx.device).repeat(len(dx), 1, 1)
    out[:, 0, 2], out[:, 1, 2] = dx, dy
    return out


def map_points(h: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Apply (..., 3, 3) ``h`` to (..., k, 2) points (x, y); float64."""
    p = torch.as_tensor(points, dtype=torch.float64)
    hom = torch.cat([p, torch.ones_like(p[..., :1])], dim=-1) @ h.to(torch.float64).transpose(-1, -2)
    return hom[..., :2] / hom[..., 2:]


def warp(image: torch.Tensor, h: torch.Tensor, out_hw: tuple[int, int],
         interpolation: Interpolation | str = Interpolation.BILINEAR) -> torch.Tensor:
    """Warp source canvases ``image`` (B, C, h, w) into (B, C, H, W) outputs with forward maps ``h``.

    Each output pixel centre p is pulled back by H^-1 (computed in float64) and sampled with
    ``grid_sample(align_corners=False)``; preimages outside the canvas (or behind the
    camera) give zeros. Differentiable w.r.t. ``image``.

    Args:
        image: source canvas batch.
        h: (B, 3, 3) or (3, 3) forward transforms source -> output coordinates.
        out_hw: output (H, W).
        interpolation: ``bilinear`` (default) or ``nearest``.
    """
    b, _, sh, sw = image.shape
    hh = h.detach().to("cpu", torch.float64)  # geometry is not differentiated; solved on the CPU in float64
    if hh.dim() == 2:
        hh = hh.expand(b, 3, 3)
    inv = torch.linalg.inv(hh)
    out_h, out_w = int(out_hw[0]), int(out_hw[1])
    ys = torch.arange(out_h, dtype=torch.float64) + 0.5
    xs = torch.arange(out_w, dtype=torch.float64) + 0.5
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    pts = torch.stack([gx.reshape(-1), gy.reshape(-1), torch.ones(out_h * out_w, dtype=torch.float64)])
    src = inv @ pts  # (B, 3, N)
    wz = src[:, 2]
    valid = wz > 1e-12
    safe = torch.where(valid, wz, torch.ones_like(wz))
    nx = torch.where(valid, 2.0 * (src[:, 0] / safe) / sw - 1.0, torch.full_like(wz, -4.0))
    ny = torch.where(valid, 2.0 * (src[:, 1] / safe) / sh - 1.0, torch.full_like(wz, -4.0))
    grid = torch.stack([nx, ny], dim=-1).reshape(b, out_h, out_w, 2).clamp(-4.0, 4.0)
    return F.grid_sample(image, grid.to(device=image.device, dtype=image.dtype), mode=Interpolation(interpolation).value,
                         padding_mode="zeros", align_corners=False)
