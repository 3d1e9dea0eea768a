"""ImageNet-C blur corruptions: defocus_blur, glass_blur, motion_blur, zoom_blur.

Resolution (``s = min(H, W) / 224``, see params.py) [robaudit choice]:

- defocus_blur: below 224 px the 224-px reference kernel is resampled onto the
  smaller grid (bilinear splatting of its taps, see :func:`disk_kernel`), so the
  blur is the reference blur seen at the lower resolution; above 224 px the
  reference disk is drawn at radius x s (anti-alias sigma unscaled). Severity 1
  (a 3 px disk) is almost the identity at 32 px.
- glass_blur: Gaussian sigma x s. The local pixel shuffle keeps its expected
  squared displacement ``iterations x delta^2`` scaled by ``s^2``: delta is
  ``max(1, round(delta * s))`` and, where that overshoots, positions are
  shuffled with probability < 1. At 224 px it is exactly the reference loop.
- motion_blur: radius and sigma x s (radius rounded to whole pixels).
- zoom_blur: zoom factors are relative; nothing is scaled.

Each function takes ``x`` (N, C, H, W) in [0, 1] and returns the corrupted
float image before the final uint8 truncation.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from robaudit.attacks.corruptions import params as P
from robaudit.attacks.corruptions.filters import (
    filter2d,
    gaussian_filter,
    motion_smear,
    pad2d,
    zoomed_view,
)


def hendrycks_disk(radius: float, alias_blur: float) -> torch.Tensor:
    """The reference ``disk``: an integer-grid disk, normalised, then ``cv2.GaussianBlur(sigma=alias_blur)``."""
    half = max(8, int(math.ceil(radius)))
    ksize = 3 if radius <= 8 else 5
    grid = torch.arange(-half, half + 1, dtype=torch.float64)
    disk = (grid[:, None] ** 2 + grid[None, :] ** 2 <= radius**2).to(torch.float64)
    disk = disk / disk.sum()
    t = torch.arange(ksize, dtype=torch.float64) - (ksize - 1) / 2
    g = torch.exp(-(t**2) / (2 * alias_blur**2))
    g = g / g.sum()
    padded = pad2d(disk[None, None], ksize // 2, ksize // 2, "reflect101")[0, 0]
    out = torch.zeros_like(disk)
    for a in range(ksize):
        for b in range(ksize):
            out += g[a] * g[b] * padded[a : a + disk.shape[0], b : b + disk.shape[1]]
    return out


def disk_kernel(radius: float, alias_blur: float, scale: float) -> torch.Tensor:
    """Defocus kernel for an image ``scale`` times the 224-px reference size.

    ``scale >= 1``: the reference disk at radius ``radius * scale``. ``scale < 1``:
    the 224-px reference kernel resampled to the smaller grid (each kernel tap at
    offset ``a`` is splatted bilinearly to offset ``a * scale``), i.e. the blur a
    224-px image would get, seen at the lower resolution. Exactly the reference at 224 px.
    """
    if scale >= 1:
        return hendrycks_disk(radius * scale, alias_blur)
    big = hendrycks_disk(radius, alias_blur)
    half_big = big.shape[0] // 2
    half = int(math.ceil(half_big * scale)) + 1
    pos = torch.arange(-half_big, half_big + 1, dtype=torch.float64) * scale + half
    lo = pos.floor().long()
    frac = pos - lo
    splat = torch.zeros(2 * half + 1, big.shape[0], dtype=torch.float64)
    cols = torch.arange(big.shape[0])
    splat[lo, cols] += 1 - frac
    splat[(lo + 1).clamp(max=2 * half), cols] += frac
    small = splat @ big @ splat.T
    return small / small.sum()


def defocus_blur(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Convolution with an anti-aliased disk (``cv2.filter2D``, reflect-101 border)."""
    radius, alias = P.DEFOCUS_BLUR[severity - 1]
    s = P.resolution_scale(*x.shape[-2:])
    return filter2d(x, disk_kernel(radius, alias, s)).clamp(0, 1)


def glass_blur(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Gaussian blur, uint8 truncation, local pixel shuffle, Gaussian blur.

    The shuffle reproduces the reference's sequential loop *as it behaves* on RGB
    arrays: ``x[h, w], x[h', w'] = x[h', w'], x[h, w]`` copies ``x[h', w']`` into
    ``x[h, w]`` (numpy views), so it is a copy, not a swap, visited in reverse
    raster order; chains through already-visited pixels are resolved exactly by
    pointer jumping.
    """
    sigma, delta, iters = P.GLASS_BLUR[severity - 1]
    s = P.resolution_scale(*x.shape[-2:])
    sigma = sigma * s
    budget = iters * delta**2 * s**2
    d = max(1, int(round(delta * s)))
    its = max(1, int(math.ceil(budget / d**2 - 1e-9)))
    prob = min(1.0, budget / (its * d**2))
    y = torch.floor(gaussian_filter(x, (sigma, sigma), "nearest") * 255 + 1e-4) / 255
    n, _, h, w = x.shape
    for _ in range(its):
        dy = torch.randint(-d, d, (n, h, w), generator=generator, device=generator.device).to(x.device)
        dx = torch.randint(-d, d, (n, h, w), generator=generator, device=generator.device).to(x.device)
        if prob < 1.0:
            u = torch.rand((n, h, w), generator=generator, device=generator.device).to(x.device)
            active = u < prob
        else:
            active = torch.ones((n, h, w), dtype=torch.bool, device=x.device)
        y = local_shuffle(y, dy, dx, active, d)
    return gaussian_filter(y, (sigma, sigma), "nearest").clamp(0, 1)


def local_shuffle(
    x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, active: torch.Tensor, delta: int
) -> torch.Tensor:
    """One pass of the reference loop: for h = H-delta .. delta+1, w = W-delta .. delta+1
    (descending), ``x[h, w] <- x[h + dy, w + dx]`` (current values), where ``active``.
    """
    n, c, h, w = x.shape
    dev = x.device
    hh = torch.arange(h, device=dev).view(1, h, 1)
    ww = torch.arange(w, device=dev).view(1, 1, w)
    visited = (hh >= delta + 1) & (hh <= h - delta) & (ww >= delta + 1) & (ww <= w - delta) & active
    idx = (hh * w + ww).expand(n, h, w)
    src = ((hh + dy).clamp(0, h - 1) * w + (ww + dx).clamp(0, w - 1))
    src = torch.where(visited, src, idx).reshape(n, h * w)
    vis_flat = visited.reshape(n, h * w)
    idx = idx.reshape(n, h * w)
    # the source was already overwritten iff it was visited earlier (larger raster index)
    earlier = vis_flat.gather(1, src) & (src > idx) & vis_flat
    jump = torch.where(earlier, src, idx)
    while True:
        nxt = jump.gather(1, jump)
        if torch.equal(nxt, jump):
            break
        jump = nxt
    final_src = src.gather(1, jump)
    flat = x.reshape(n, c, h * w)
    return flat.gather(2, final_src[:, None, :].expand(n, c, h * w)).reshape(n, c, h, w)


def motion_blur(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """imagecorruptions' numpy motion blur (not Wand): angle ~ U(-45, 45) degrees per image."""
    radius, sigma = P.MOTION_BLUR[severity - 1]
    s = P.resolution_scale(*x.shape[-2:])
    angles = torch.rand(x.shape[0], generator=generator, device=generator.device, dtype=torch.float64)
    angles_np = (angles.cpu().numpy() * 90.0 - 45.0).astype(np.float64)
    return motion_smear(x, int(round(radius * s)), sigma * s, angles_np).clamp(0, 1)


def zoom_blur(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Mean of the image and its centre zooms by factors 1 .. 1.3 (scipy order-1 zoom)."""
    zooms = P.ZOOM_BLUR[severity - 1]
    out = torch.zeros_like(x)
    for z in zooms:
        out = out + zoomed_view(x, z)
    return ((x + out) / (len(zooms) + 1)).clamp(0, 1)
