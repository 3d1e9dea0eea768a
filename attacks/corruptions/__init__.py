"""The 15 ImageNet-C common corruptions on batched torch tensors.

Threat model: natural, non-adversarial distribution shift. ``corrupt`` applies
one of Hendrycks & Dietterich's corruptions ("Benchmarking Neural Network
Robustness to Common Corruptions and Perturbations", ICLR 2019,
https://arxiv.org/abs/1903.12261) at severity 1..5 with the parameters of
``imagecorruptions`` 1.1.2, batched in torch on any device, deterministic under
an explicit generator.

uint8 semantics (as in the reference, which reads uint8 images and returns
``np.uint8(result)``): the input is quantised with ``round(255 x)``, the
corruption runs in float, and the output is clipped to [0, 1] and *truncated*
to ``floor(255 y) / 255`` (a 1e-4 guard absorbs float error). Truncation, not
rounding, is the reference's behaviour (mean shift -0.5/255). Glass blur's
intermediate uint8 truncation and snow's rounded snow layer are reproduced too.

Resolution: parameters measured in pixels are scaled by ``min(H, W) / 224``
(exactly Hendrycks' values at 224 px); the family modules document the choice
per corruption. Frost uses a procedural texture (frost_texture.py) because the
reference's photographs cannot be shipped: an approximation.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from robaudit.attacks.corruptions import blur, digital, noise, weather

from robaudit.errors import ParameterError

CorruptionFn = Callable[[torch.Tensor, int, torch.Generator], torch.Tensor]

_FUNCTIONS: dict[str, CorruptionFn] = {
    "gaussian_noise": noise.gaussian_noise,
    "shot_noise": noise.shot_noise,
    "impulse_noise": noise.impulse_noise,
    "defocus_blur": blur.defocus_blur,
    "glass_blur": blur.glass_blur,
    "motion_blur": blur.motion_blur,
    "zoom_blur": blur.zoom_blur,
    "snow": weather.snow,
    "frost": weather.frost,
    "fog": weather.fog,
    "brightness": digital.brightness,
    "contrast": digital.contrast,
    "elastic_transform": digital.elastic_transform,
    "pixelate": digital.pixelate,
    "jpeg_compression": digital.jpeg_compression,
}

#: The 15 ImageNet-C corruption names, in the benchmark's order (noise, blur, weather, digital).
CORRUPTIONS: tuple[str, ...] = tuple(_FUNCTIONS)
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)
MIN_SIDE = 8


def corrupt(x: torch.Tensor, name: str, severity: int, *, generator: torch.Generator) -> torch.Tensor:
    """Apply ImageNet-C corruption ``name`` at ``severity`` to a batch of images.

    Args:
        x: float images (N, C, H, W) in [0, 1], C = 1 or 3, H, W >= 8, any device.
        name: one of :data:`CORRUPTIONS`.
        severity: 1 (mild) .. 5 (severe).
        generator: the only source of randomness (draws happen on its device and
            are moved to ``x.device``, so a CPU generator gives the same images on
            every device, up to float rounding).

    Returns:
        A new float tensor like ``x`` with values in {0, 1/255, ..., 1}.

    Raises:
        ParameterError: unknown name, severity outside 1..5, or an unsupported image shape.
    """
    if name not in _FUNCTIONS:
        raise ParameterError(f"unknown corruption {name!r}; valid names: {', '.join(CORRUPTIONS)}")
    if isinstance(severity, bool) or not isinstance(severity, int) or severity not in SEVERITIES:
        raise ParameterError(f"corruption severity must be an integer in 1..5, got {severity!r}")
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or not x.is_floating_point():
        raise ParameterError("corrupt() needs a float tensor of shape (N, C, H, W) with values in [0, 1]")
    n, c, h, w = x.shape
    if c not in (1, 3):
        raise ParameterError(f"corruptions are defined for 1 (grey) or 3 (RGB) channels, got {c}")
    if min(h, w) < MIN_SIDE:
        raise ParameterError(f"images must be at least {MIN_SIDE} x {MIN_SIDE} pixels to corrupt, got {h} x {w}")
    if n == 0:
        return x.clone()
    with torch.no_grad():
        work = torch.round(x.detach().to(torch.float32).clamp(0, 1) * 255) / 255
        out = _FUNCTIONS[name](work, severity, generator)
        out = torch.floor(out.clamp(0, 1) * 255 + 1e-4) / 255
    return out.to(x.dtype)


__all__ = ["CORRUPTIONS", "SEVERITIES", "corrupt"]
