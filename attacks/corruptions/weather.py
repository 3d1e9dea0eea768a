"""ImageNet-C weather corruptions: snow, frost, fog.

Resolution (``s = min(H, W) / 224``) [robaudit choice]:

- snow: the flake zoom factor is a flake size in pixels and is scaled
  (``max(1, zoom * s)``); the streak radius and sigma are scaled like motion_blur.
- frost: the reference crops photographs at native resolution; robaudit
  synthesises a texture whose features scale with the image (frost_texture.py,
  an approximation).
- fog: the plasma fractal is generated at the next power of two above the image
  size, as in the reference, so its structure is already relative to the image.

Each function takes ``x`` (N, C, H, W) in [0, 1] and returns the corrupted
float image before the final uint8 truncation.
"""

from __future__ import annotations

import torch
from robaudit.attacks.corruptions import params as P
from robaudit.attacks.corruptions.filters import clipped_zoom, motion_smear
from robaudit.attacks.corruptions.frost_texture import frost_texture

_LUMA = (0.299, 0.587, 0.114)  # cv2.COLOR_RGB2GRAY


def _gray(x: torch.Tensor) -> torch.Tensor:
    if x.shape[1] == 1:
        return x
    w = torch.tensor(_LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def snow(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Thresholded, zoomed Gaussian noise streaked by a motion blur, added twice (also rotated 180 deg)."""
    mean, std, zoom, thresh, radius, sigma, blend = P.SNOW[severity - 1]
    n, _, h, w = x.shape
    s = P.resolution_scale(h, w)
    zoom = max(1.0, zoom * s)
    layer = torch.randn((n, 1, h, w), generator=generator, device=generator.device, dtype=torch.float64)
    layer = (layer * std + mean).to(x.device, x.dtype)
    layer = clipped_zoom(layer, zoom)
    layer = torch.where(layer < thresh, torch.zeros_like(layer), layer).clamp(0, 1)
    angles = torch.rand(n, generator=generator, device=generator.device, dtype=torch.float64)
    layer = motion_smear(layer, int(round(radius * s)), sigma * s, angles.cpu().numpy() * 90.0 - 135.0)
    layer = torch.round(layer * 255) / 255
    layer = layer[..., :h, :w]
    x = blend * x + (1 - blend) * torch.maximum(x, _gray(x) * 1.5 + 0.5)
    return (x + layer + torch.flip(layer, dims=(-2, -1))).clamp(0, 1)


def frost(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """``c0 * x + c1 * frost_texture``; the texture is procedural (see frost_texture.py)."""
    c_img, c_frost = P.FROST[severity - 1]
    n, ch, h, w = x.shape
    tex = frost_texture(n, h, w, generator).to(x.device, x.dtype)
    if ch == 1:
        tex = _gray(tex)
    return (c_img * x + c_frost * tex).clamp(0, 1)


def fog(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Add a diamond-square plasma fractal, then rescale by ``max / (max + c)`` (per image)."""
    strength, decay = P.FOG[severity - 1]
    n, _, h, w = x.shape
    size = 1 << max(0, (max(h, w) - 1).bit_length())
    plasma = plasma_fractal(n, size, decay, generator)[:, None, :h, :w].to(x.device, x.dtype)
    max_val = x.amax(dim=(1, 2, 3), keepdim=True)
    y = x + strength * plasma
    return (y * max_val / (max_val + strength)).clamp(0, 1)


def plasma_fractal(n: int, size: int, decay: float, generator: torch.Generator) -> torch.Tensor:
    """Batched diamond-square height maps (n, size, size) in [0, 1] (reference ``plasma_fractal``)."""
    dev = generator.device
    maps = torch.zeros((n, size, size), dtype=torch.float64, device=dev)
    step = size
    wibble = 100.0

    def wibbled_mean(a: torch.Tensor) -> torch.Tensor:
        u = torch.rand(a.shape, generator=generator, device=dev, dtype=torch.float64)
        return a / 4 + wibble * (u * 2 * wibble - wibble)

    while step >= 2:
        half = step // 2
        corners = maps[:, 0:size:step, 0:size:step]
        acc = corners + torch.roll(corners, -1, dims=1)
        acc = acc + torch.roll(acc, -1, dims=2)
        maps[:, half:size:step, half:size:step] = wibbled_mean(acc)
        dr = maps[:, half:size:step, half:size:step]
        ul = maps[:, 0:size:step, 0:size:step]
        lt = dr + torch.roll(dr, 1, dims=1) + ul + torch.roll(ul, -1, dims=2)
        maps[:, 0:size:step, half:size:step] = wibbled_mean(lt)
        tt = dr + torch.roll(dr, 1, dims=2) + ul + torch.roll(ul, -1, dims=1)
        maps[:, half:size:step, 0:size:step] = wibbled_mean(tt)
        step //= 2
        wibble /= decay
    maps = maps - maps.amin(dim=(1, 2), keepdim=True)
    return maps / maps.amax(dim=(1, 2), keepdim=True).clamp_min(1e-12)
