"""Natural patch corruption: paste an ImageNet-C corrupted version into k grid patches.

Threat model: a benign, naturally occurring corruption (noise, blur, weather...) that
hits only a few patches of the image; no optimisation. The whole image is corrupted
(via the corruption suite's uint8 round trip) and the corrupted pixels are pasted into
the patches: ``x~ = x + M * (x_c - x)``; pixels outside the patches are bit-identical.
Blur-type corruptions therefore use context from outside the patch, as in the paper.

Paper: Gu, Tresp & Qin, "Are Vision Transformers Robust to Patch Perturbations?"
(ECCV 2022), official ``perturb.py::patch_corrupt``.
"""

from __future__ import annotations

import torch

from robaudit.errors import ParameterError

IDENTITY = "identity"  #: a null corruption (x_c = x), a sanity control with FR 0 by construction

# ImageNet-C gaussian_noise std per severity (corruptions.py), used only until the suite lands.
_GAUSSIAN_STD = (0.08, 0.12, 0.18, 0.26, 0.38)


def corrupt_image(x: torch.Tensor, name: str, severity: int, generator: torch.Generator) -> torch.Tensor:
    """The whole-image corruption ``x_c`` of ``x`` (N, C, H, W) in [0, 1].

    Uses ``robaudit.attacks.corruptions.corrupt`` when available; otherwise a local
    gaussian_noise implementation (ImageNet-C stds, uint8 round trip). ``identity``
    returns ``x`` unchanged.

    Raises:
        ParameterError: unknown corruption or severity outside 1..5.
    """
    if name == IDENTITY:
        return x.clone()
    try:
        from robaudit.attacks.corruptions import corrupt
    except ImportError:
        corrupt = None
    if corrupt is not None:
        return corrupt(x, name, severity, generator=generator)
    if name != "gaussian_noise":
        raise ParameterError(
            f"corruption {name!r} needs the corruption suite (robaudit.attacks.corruptions), "
            "which is not installed; use 'gaussian_noise' or 'identity'"
        )
    if not 1 <= int(severity) <= 5:
        raise ParameterError(f"severity must be in 1..5, got {severity}")
    x8 = torch.round(x.clamp(0, 1) * 255) / 255
    # drawn on the generator's (CPU) device so the noise is identical on every device, then moved
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=generator.device)
    noise = noise * _GAUSSIAN_STD[int(severity) - 1]
    return torch.round((x8 + noise.to(x.device)).clamp(0, 1) * 255) / 255


def paste(x: torch.Tensor, x_c: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x`` with the pixels under ``mask`` (N, 1, H, W) taken from ``x_c``; others bit-identical."""
    return torch.where(mask.bool().expand_as(x), x_c, x)
