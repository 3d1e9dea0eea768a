"""Batched image-filtering primitives the corruptions share, matching the reference libraries.

Each function reproduces the border handling and arithmetic of the routine the
ImageNet-C code calls (scipy.ndimage / skimage / OpenCV / numpy), so corruptions
built on them agree with the reference up to float rounding. All take and
return float tensors (N, C, H, W) on any device.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def border_index(n: int, pad: int, mode: str, device: torch.device) -> torch.Tensor:
    """Source indices for positions ``-pad .. n + pad - 1`` under a border ``mode``.

    ``mode``: ``"nearest"`` (edge replicate), ``"symmetric"`` (scipy's ``reflect``:
    edge repeated, ``d c b a | a b c d``) or ``"reflect101"`` (OpenCV's default and
    torch's ``reflect``: ``d c b | a b c d``).
    """
    i = torch.arange(-pad, n + pad, device=device)
    if mode == "nearest":
        return i.clamp(0, n - 1)
    if mode == "symmetric":
        j = i.remainder(2 * n)
        return torch.where(j < n, j, 2 * n - 1 - j)
    if mode == "reflect101":
        if n == 1:
            return torch.zeros_like(i)
        j = i.remainder(2 * n - 2)
        return torch.where(j < n, j, 2 * n - 2 - j)
    raise ValueError(f"unknown border mode {mode!r}")


def pad2d(x: torch.Tensor, pad_h: int, pad_w: int, mode: str) -> torch.Tensor:
    """Pad the last two axes by any amount (also more than the image size)."""
    rows = border_index(x.shape[-2], pad_h, mode, x.device)
    cols = border_index(x.shape[-1], pad_w, mode, x.device)
    return x.index_select(-2, rows).index_select(-1, cols)


def gaussian_kernel1d(sigma: float, truncate: float) -> torch.Tensor:
    """scipy.ndimage's 1-D Gaussian: radius ``int(truncate * sigma + 0.5)``, normalised."""
    radius = int(truncate * float(sigma) + 0.5)
    if sigma <= 0:
        return torch.ones(1, dtype=torch.float64)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / float(sigma)) ** 2)
    return k / k.sum()


def separable(x: torch.Tensor, k_h: torch.Tensor, k_w: torch.Tensor, mode: str) -> torch.Tensor:
    """Correlate every channel with ``k_h`` along H then ``k_w`` along W (odd kernel lengths)."""
    n, c, h, w = x.shape
    ph, pw = len(k_h) // 2, len(k_w) // 2
    y = pad2d(x.reshape(n * c, 1, h, w), ph, pw, mode)
    y = F.conv2d(y, k_h.to(x).view(1, 1, -1, 1))
    y = F.conv2d(y, k_w.to(x).view(1, 1, 1, -1))
    return y.reshape(n, c, h, w)


def gaussian_filter(x: torch.Tensor, sigma: tuple[float, float], mode: str, truncate: float = 4.0) -> torch.Tensor:
    """``skimage.filters.gaussian`` / ``scipy.ndimage.gaussian_filter`` over H and W only."""
    return separable(x, gaussian_kernel1d(sigma[0], truncate), gaussian_kernel1d(sigma[1], truncate), mode)


def filter2d(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """``cv2.filter2D`` (correlation, anchor at the centre, BORDER_REFLECT_101) per channel.

    Large kernels go through the FFT, as OpenCV's own implementation does.
    """
    n, c, h, w = x.shape
    kh, kw = kernel.shape
    y = pad2d(x.reshape(n * c, 1, h, w), kh // 2, kw // 2, "reflect101")
    if kh * kw <= 49:
        return F.conv2d(y, kernel.to(x).view(1, 1, kh, kw)).reshape(n, c, h, w)
    size = y.shape[-2:]
    k = torch.zeros(size, dtype=torch.float32, device=x.device)
    k[:kh, :kw] = kernel.to(x.device, torch.float32)
    out = fft_correlate(y.to(torch.float32), k)[..., :h, :w]
    return out.to(x.dtype).reshape(n, c, h, w)


def fft_correlate(y: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Circular cross-correlation ``sum_ab k[a, b] y[i + a, j + b]`` of same-size (broadcastable) arrays."""
    size = y.shape[-2:]
    return torch.fft.irfft2(torch.fft.rfft2(y) * torch.conj(torch.fft.rfft2(k)), s=size)


def shift_clamped(x: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """``out[n, :, h, w] = x[n, :, clamp(h - dy[n]), clamp(w - dx[n])]``: the reference ``shift``."""
    n, c, h, w = x.shape
    rows = (torch.arange(h, device=x.device)[None] - dy[:, None]).clamp(0, h - 1)
    cols = (torch.arange(w, device=x.device)[None] - dx[:, None]).clamp(0, w - 1)
    idx = (rows[:, :, None] * w + cols[:, None, :]).reshape(n, 1, h * w).expand(n, c, h * w)
    return x.reshape(n, c, h * w).gather(2, idx).reshape(n, c, h, w)


def motion_smear(x: torch.Tensor, radius: int, sigma: float, angles_deg: np.ndarray) -> torch.Tensor:
    """The reference ``_motion_blur``: a one-sided Gaussian-weighted smear along an angle per image.

    ``width = 2 * radius + 1`` shifted copies (edge-replicating ``shift``) weighted
    by ``exp(-i^2 / 2 sigma^2)`` (normalised); shifts are rounded exactly as the
    reference computes them (in float64) and stop once they leave the image. The
    sum of shifts is one FFT correlation per image with its own sparse kernel.
    """
    width = 2 * int(radius) + 1
    sig = max(float(sigma), 1e-12)
    i = np.arange(width, dtype=np.float64)
    kern = np.exp(-(i**2) / (2 * sig**2)) / (np.sqrt(2 * np.pi) * sig)
    kern = kern / kern.sum()
    rad = np.deg2rad(np.asarray(angles_deg, dtype=np.float64))
    p0, p1 = width * np.sin(rad), width * np.cos(rad)
    hyp = np.hypot(p0, p1)
    dys = -np.ceil(i[:, None] * p0[None] / hyp[None] - 0.5).astype(np.int64)  # (width, N)
    dxs = -np.ceil(i[:, None] * p1[None] / hyp[None] - 0.5).astype(np.int64)
    n, c, h, w = x.shape
    alive = np.cumprod((np.abs(dys) < h) & (np.abs(dxs) < w), axis=0).astype(bool)  # the reference breaks
    weights = kern[:, None] * alive
    pad = int(max(np.abs(dys[alive]).max(initial=0), np.abs(dxs[alive]).max(initial=0)))
    if pad == 0:
        return x * torch.as_tensor(weights.sum(0), dtype=x.dtype, device=x.device).view(n, 1, 1, 1)
    padded = pad2d(x.to(torch.float32), pad, pad, "nearest")
    kernel = np.zeros((n, padded.shape[-2], padded.shape[-1]), dtype=np.float64)
    img = np.broadcast_to(np.arange(n)[None], dys.shape)
    np.add.at(kernel, (img, pad - dys, pad - dxs), weights)  # out = sum w * padded[i + pad - dy, j + pad - dx]
    k = torch.as_tensor(kernel, dtype=torch.float32, device=x.device)[:, None]
    return fft_correlate(padded, k)[..., :h, :w].to(x.dtype)


def clipped_zoom(x: torch.Tensor, zoom: float) -> torch.Tensor:
    """The reference ``clipped_zoom``: centre crop ``ceil(H / z)``, scipy ``zoom(order=1)``, top-left H x W.

    Returns the full zoomed crop (at least H x W); callers crop ``[:H, :W]``.
    """
    h, w = x.shape[-2:]
    x = _zoom_axis(x, zoom, -2)
    x = _zoom_axis(x, zoom, -1)
    return x


def zoomed_view(x: torch.Tensor, zoom: float) -> torch.Tensor:
    """``clipped_zoom(x, zoom)[..., :H, :W]`` in one ``grid_sample`` pass (float32 coordinates)."""
    n, _, h, w = x.shape
    gy = _zoom_coords(h, zoom) * (2.0 / max(h - 1, 1)) - 1.0
    gx = _zoom_coords(w, zoom) * (2.0 / max(w - 1, 1)) - 1.0
    gy_t = torch.as_tensor(gy, dtype=x.dtype, device=x.device)
    gx_t = torch.as_tensor(gx, dtype=x.dtype, device=x.device)
    grid = torch.stack(torch.broadcast_tensors(gx_t[None, :], gy_t[:, None]), dim=-1)
    return F.grid_sample(x, grid[None].expand(n, h, w, 2), mode="bilinear", align_corners=True)


def _zoom_coords(n_in: int, zoom: float) -> np.ndarray:
    """Source coordinates of the first ``n_in`` outputs of the reference's centre crop + scipy zoom."""
    ch = int(math.ceil(n_in / float(zoom)))
    top = (n_in - ch) // 2
    n_out = int(round(ch * zoom))
    step = (ch - 1) / (n_out - 1) if n_out > 1 else 0.0
    return top + np.arange(n_in, dtype=np.float64) * step


def _zoom_axis(x: torch.Tensor, zoom: float, axis: int) -> torch.Tensor:
    n_in = x.shape[axis]
    ch = int(math.ceil(n_in / float(zoom)))
    top = (n_in - ch) // 2
    n_out = int(round(ch * zoom))
    step = (ch - 1) / (n_out - 1) if n_out > 1 else 0.0
    coord = np.arange(n_out, dtype=np.float64) * step
    lo = np.floor(coord).astype(np.int64).clip(0, ch - 1)
    hi = (lo + 1).clip(0, ch - 1)
    frac = torch.as_tensor(coord - lo, dtype=x.dtype, device=x.device)
    lo_t = torch.as_tensor(lo + top, device=x.device)
    hi_t = torch.as_tensor(hi + top, device=x.device)
    a, b = x.index_select(axis, lo_t), x.index_select(axis, hi_t)
    shape = [1] * x.dim()
    shape[axis] = n_out
    frac = frac.view(shape)
    return a + (b - a) * frac


def warp_bilinear_symmetric(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """``scipy.ndimage.map_coordinates(order=1, mode='reflect')`` per channel.

    ``rows``/``cols`` (N, H, W) are source coordinates; outside the image they are
    mirrored about the half-pixel edges (scipy's ``reflect``) before linear interpolation.
    """
    n, c, h, w = x.shape

    def mirror(v: torch.Tensor, size: int) -> torch.Tensor:
        period = 2.0 * size
        v = torch.remainder(v + 0.5, period)
        v = torch.where(v >= size, period - v, v)
        return (v - 0.5).clamp(0, size - 1)

    r, q = mirror(rows, h), mirror(cols, w)
    r0, q0 = r.floor().long(), q.floor().long()
    r1, q1 = (r0 + 1).clamp(max=h - 1), (q0 + 1).clamp(max=w - 1)
    fr, fq = (r - r0).unsqueeze(1), (q - q0).unsqueeze(1)
    flat = x.reshape(n, c, h * w)

    def take(ri: torch.Tensor, qi: torch.Tensor) -> torch.Tensor:
        idx = (ri * w + qi).reshape(n, 1, h * w).expand(n, c, h * w)
        return flat.gather(2, idx).reshape(n, c, h, w)

    top = take(r0, q0) * (1 - fq) + take(r0, q1) * fq
    bottom = take(r1, q0) * (1 - fq) + take(r1, q1) * fq
    return top * (1 - fr) + bottom * fr
