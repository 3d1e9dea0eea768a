"""ImageNet-C digital corruptions: brightness, contrast, elastic_transform, pixelate, jpeg_compression.

Resolution (``s = min(H, W) / 224``) [robaudit choice]:

- brightness, contrast: per pixel / per image; nothing to scale.
- elastic_transform: imagecorruptions 1.1.2 already makes the smoothing sigma
  (1% of the side) and the field amplitude (0.5% of H) relative, but its
  displacements in pixels come out independent of the image size; robaudit
  multiplies ``alpha`` by s so displacements are proportional to the image.
- pixelate: the down-sampling factor is relative; nothing to scale.
- jpeg_compression: quality is kept; 8 x 8 DCT blocks are a property of JPEG, so
  small images lose relatively more.

Each function takes ``x`` (N, C, H, W) in [0, 1] and returns the corrupted
float image before the final uint8 truncation.
"""

from __future__ import annotations

import numpy as np
import torch
from robaudit.attacks.corruptions import params as P
from robaudit.attacks.corruptions.filters import gaussian_filter, warp_bilinear_symmetric


def brightness(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Add c to the HSV value channel (clipped), keeping hue and saturation.

    HSV -> RGB is linear in V for fixed H and S, so this equals ``x * V' / V``
    (and grey ``V'`` where V = 0), the closed form of skimage's round trip.
    Greyscale images: ``clip(x + c)``.
    """
    c = P.BRIGHTNESS[severity - 1]
    if x.shape[1] == 1:
        return (x + c).clamp(0, 1)
    v = x.amax(dim=1, keepdim=True)
    v_new = (v + c).clamp(max=1.0)
    scaled = x * (v_new / v.clamp_min(1e-12))
    return torch.where(v > 0, scaled, v_new.expand_as(x)).clamp(0, 1)


def contrast(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Shrink deviations from each channel's spatial mean by c = 0.4 .. 0.05."""
    c = P.CONTRAST[severity - 1]
    means = x.to(torch.float64).mean(dim=(2, 3), keepdim=True).to(x.dtype)
    return ((x - means) * c + means).clamp(0, 1)


def elastic_transform(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Warp by a smoothed uniform random displacement field (bilinear, mirrored borders)."""
    n, _, h, w = x.shape
    alpha = P.ELASTIC_ALPHA[severity - 1] * P.resolution_scale(h, w)
    sigma = (0.01 * h, 0.01 * w)
    max_d = h * 0.005
    dev = generator.device

    def field() -> torch.Tensor:
        u = torch.rand((n, 1, h, w), generator=generator, device=dev, dtype=torch.float64) * 2 * max_d - max_d
        return gaussian_filter(u.to(torch.float32), sigma, "symmetric", truncate=3.0)[:, 0] * alpha

    dx = field()
    dy = field()
    rows = torch.arange(h, device=dev, dtype=torch.float32).view(1, h, 1) + dy
    cols = torch.arange(w, device=dev, dtype=torch.float32).view(1, 1, w) + dx
    return warp_bilinear_symmetric(x, rows.to(x.device, x.dtype), cols.to(x.device, x.dtype)).clamp(0, 1)


def _box_ranges(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Pillow's BOX filter: output o averages the inputs whose centres lie in ``(c - s/2, c + s/2]``."""
    scale = n_in / n_out
    centres = (np.arange(n_out) + 0.5) * scale
    offset = ((np.arange(n_in) + 0.5)[None, :] - centres[:, None]) / scale
    inside = (offset > -0.5) & (offset <= 0.5)
    start = inside.argmax(axis=1)
    return start, start + inside.sum(axis=1)


def _box_resample(u: torch.Tensor, axis: int, n_out: int) -> torch.Tensor:
    """Box-average uint8-valued ``u`` along ``axis`` to ``n_out`` samples, rounded half up (Pillow).

    Boxes hold at most a few pixels, so the float32 sums of integers <= 255 are exact.
    """
    start, stop = _box_ranges(u.shape[axis], n_out)
    members = np.zeros((n_out, u.shape[axis]), dtype=np.float32)
    for o, (a, b) in enumerate(zip(start, stop)):
        members[o, a:b] = 1.0
    sums = torch.movedim(torch.movedim(u, axis, -1) @ torch.from_numpy(members.T).to(u.device), -1, axis)
    shape = [1] * u.dim()
    shape[axis] = n_out
    count = torch.as_tensor(stop - start, dtype=torch.float64, device=u.device).view(shape)
    return torch.floor(sums.to(torch.float64) / count + 0.5).clamp(0, 255).to(torch.float32)


def _nearest_index(n_in: int, n_out: int) -> torch.Tensor:
    """Pillow's NEAREST source index ``floor((i + 0.5) * n_in / n_out)``."""
    return torch.from_numpy(np.floor((np.arange(n_out) + 0.5) * (n_in / n_out)).astype(np.int64)).clamp(0, n_in - 1)


def pixelate(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Pillow ``resize(BOX)`` to ``int(side * c)`` then ``resize(NEAREST)`` back.

    Pillow resamples uint8 images horizontally then vertically, rounding to uint8
    after each pass; both roundings are reproduced.
    """
    c = P.PIXELATE[severity - 1]
    n, ch, h, w = x.shape
    sh, sw = max(1, int(h * c)), max(1, int(w * c))
    u = torch.round(x.to(torch.float32) * 255)
    t = _box_resample(_box_resample(u, 3, sw), 2, sh)
    t = t.index_select(2, _nearest_index(sh, h).to(x.device)).index_select(3, _nearest_index(sw, w).to(x.device))
    return (t / 255).to(x.dtype)


def jpeg_compression(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """JPEG round trip at quality 25 .. 7 (libjpeg via torchvision, on the CPU, one image at a time).

    Encoding always happens on the CPU so results do not depend on the device
    (nvJPEG would differ). Greyscale images are encoded as greyscale.
    """
    from torchvision.io import decode_jpeg, encode_jpeg

    q = P.JPEG_QUALITY[severity - 1]
    u8 = torch.round(x.detach().clamp(0, 1) * 255).to(torch.uint8).cpu()
    encoded = encode_jpeg([img.contiguous() for img in u8], quality=q)
    decoded = decode_jpeg(encoded)
    return (torch.stack(list(decoded)).to(x.device, x.dtype) / 255).reshape(x.shape)
