"""ImageNet-C noise corruptions: gaussian_noise, shot_noise, impulse_noise.

Per-pixel operations, so nothing depends on resolution and nothing is scaled.
Random draws come from ``generator`` (on its own device) and are moved to the
image's device, so results do not depend on where ``x`` lives.

Each function takes ``x`` (N, C, H, W) in [0, 1] (already quantised to k/255)
and returns the corrupted float image before the final uint8 truncation.
"""

from __future__ import annotations

import torch
from robaudit.attacks.corruptions import params as P


def _rand(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return torch.rand(x.shape, generator=generator, device=generator.device).to(x.device, x.dtype)


def gaussian_noise(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """``clip(x + N(0, c^2))`` with c = 0.08 .. 0.38, independent per pixel and channel."""
    c = P.GAUSSIAN_NOISE[severity - 1]
    noise = torch.randn(x.shape, generator=generator, device=generator.device).to(x.device, x.dtype)
    return (x + c * noise).clamp(0, 1)


def shot_noise(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """``Poisson(c * x) / c`` with c = 60 .. 3 photons at white."""
    c = float(P.SHOT_NOISE[severity - 1])
    rates = (x * c).to(generator.device, torch.float32)
    counts = torch.poisson(rates, generator=generator)
    return (counts / c).to(x.device, x.dtype).clamp(0, 1)


def impulse_noise(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """skimage's ``random_noise(mode='s&p', amount=c)``.

    Each value (pixel and channel independently) is replaced with probability
    ``c`` by salt (1) or pepper (0), half each (one uniform draw decides both).
    """
    c = P.IMPULSE_NOISE[severity - 1]
    u = _rand(x, generator)
    out = torch.where(u <= c / 2, torch.ones_like(x), x)  # salt: flipped (u <= c) and salted (half)
    return torch.where((u > c / 2) & (u <= c), torch.zeros_like(x), out)
