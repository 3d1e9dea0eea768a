"""Procedural frost texture: an approximation of ImageNet-C's frost photographs.

The reference ``frost`` corruption blends the image with a random crop of one of
five frost photographs shipped with imagecorruptions. robaudit cannot ship them,
so it synthesises a seeded texture instead [robaudit choice, an approximation]:

1. pick one of the five photographs' colour statistics (per-channel RGB mean and
   std, measured on the originals; params.FROST_STATS) uniformly, as the
   reference picks a photograph;
2. draw a grey texture = low-frequency 1/f (Brownian) clouds + "ridged" band-pass
   noise (``(1 - |b| / sd)^4``: thin bright crystal-like veins along the zero
   crossings of band-passed noise, feature size ~4-12 px at 224 px) + a little
   fine grain; standardise it per image;
3. colour it with the picked mean and std (channels fully correlated).

Textures are generated at 224-px scale (or at the image size if larger) and
area-downsampled to the image, so feature sizes are relative to the image
(a 32 px image sees the frost as a downscaled 224 px crop would look). The
first two moments per channel match the photographs at 224 px; the spatial
structure is only qualitatively similar, so frost accuracies are *not*
numerically comparable with published ImageNet-C frost numbers.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from robaudit.attacks.corruptions import params as P


def _filtered_noise(n: int, h: int, w: int, gain: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    white = torch.randn((n, h, w), generator=generator, device=generator.device, dtype=torch.float32)
    spec = torch.fft.rfft2(white) * gain
    field = torch.fft.irfft2(spec, s=(h, w))
    field = field - field.mean(dim=(1, 2), keepdim=True)
    return field / field.std(dim=(1, 2), keepdim=True).clamp_min(1e-12)


def frost_texture(n: int, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` RGB frost textures (n, 3, height, width) in [0, 1], on the generator's device.

    Like the reference, which crops five photographs, each call draws a pool of
    five large textures (1.5x the image) and gives every image a random crop of a
    random one; images of one batch therefore share texture, as ImageNet-C images do.
    """
    dev = generator.device
    grow = max(1.0, P.REFERENCE_SIZE / min(height, width))
    ph, pw = int(math.ceil(1.5 * height)), int(math.ceil(1.5 * width))
    h, w = int(round(ph * grow)), int(round(pw * grow))
    rel = min(height, width) * grow / P.REFERENCE_SIZE  # >= 1: features keep their size relative to the image
    k = len(P.FROST_STATS)
    fy = torch.fft.fftfreq(h, device=dev, dtype=torch.float32)[:, None]
    fx = torch.fft.rfftfreq(w, device=dev, dtype=torch.float32)[None, :]
    f = torch.sqrt(fy**2 + fx**2) * rel  # cycles per pixel at 224-px scale
    low_gain = 1.0 / (f + 1.0 / 150.0)
    low_gain[0, 0] = 0.0
    band_gain = torch.exp(-0.5 * (torch.log(f.clamp_min(1e-6) / 0.14) / 0.35) ** 2)
    fine_gain = (f > 0.25).to(torch.float32)
    clouds = _filtered_noise(k, h, w, low_gain, generator)
    veins = (1.0 - _filtered_noise(k, h, w, band_gain, generator).abs()).clamp_min(0) ** 4
    grain = _filtered_noise(k, h, w, fine_gain, generator)
    veins = (veins - veins.mean(dim=(1, 2), keepdim=True)) / veins.std(dim=(1, 2), keepdim=True).clamp_min(1e-12)
    grey = 0.55 * clouds + 1.0 * veins + 0.2 * grain
    grey = grey - grey.mean(dim=(1, 2), keepdim=True)
    grey = grey / grey.std(dim=(1, 2), keepdim=True).clamp_min(1e-12)
    means = torch.tensor([m for m, _ in P.FROST_STATS], dtype=torch.float32, device=dev)
    stds = torch.tensor([s for _, s in P.FROST_STATS], dtype=torch.float32, device=dev)
    pool = (means[:, :, None, None] + stds[:, :, None, None] * grey[:, None]).clamp(0, 255) / 255.0
    if (h, w) != (ph, pw):
        pool = F.interpolate(pool, size=(ph, pw), mode="area")
    pick = torch.randint(0, k, (n,), generator=generator, device=dev)
    top = torch.randint(0, ph - height + 1, (n,), generator=generator, device=dev)
    left = torch.randint(0, pw - width + 1, (n,), generator=generator, device=dev)
    rows = top[:, None] + torch.arange(height, device=dev)[None]
    cols = left[:, None] + torch.arange(width, device=dev)[None]
    flat = pool[pick].reshape(n, 3, ph * pw)
    idx = (rows[:, :, None] * pw + cols[:, None, :]).reshape(n, 1, height * width).expand(n, 3, height * width)
    return flat.gather(2, idx).reshape(n, 3, height, width)
