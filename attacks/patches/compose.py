"""Alpha compositing of a relit, warped patch onto an image.

Guarantee: out = I (1 - a_w) + a_w P'_w with a_w in [0, 1]; wherever the warped patch
mask is zero the output equals the input exactly (bitwise), and inside a fully covered
region it equals the relit patch.

Paper: Hingun et al., REAP (ICCV 2023), ``reap_object.apply_objects`` (METHODS.md §2.3d):
relight the patch (not the image), warp RGBA = [P' m, m] with zero padding, clamp, blend.
The warped colour is the premultiplied C_w = warp(P' m); robaudit un-premultiplies
P'_w = C_w / a_w, so the blend reduces to I (1 - a_w) + C_w and anti-aliased borders are
not darkened twice.
"""

from __future__ import annotations

import torch
from robaudit.attacks.patches.lighting import relight
from robaudit.attacks.patches.render import Interpolation, warp


def composite(image: torch.Tensor, color: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """out = image (1 - alpha) + alpha color, with alpha clamped to [0, 1]."""
    a = alpha.clamp(0.0, 1.0)
    return image * (1.0 - a) + a * color


def render_patch(image: torch.Tensor, patch: torch.Tensor, h: torch.Tensor, *,
                 patch_mask: torch.Tensor | None = None, a: torch.Tensor | float | None = None,
                 b: torch.Tensor | float | None = None,
                 interpolation: Interpolation | str = Interpolation.BILINEAR) -> tuple[torch.Tensor, torch.Tensor]:
    """Relight ``patch``, warp it with ``h`` into ``image`` and alpha-composite it.

    Args:
        image: (B, C, H, W) images in [0, 1].
        patch: (B, C, h, w) or (1, C, h, w) patch canvases in [0, 1] (broadcast over B).
        h: (B, 3, 3) or (3, 3) forward maps patch canvas -> image coordinates.
        patch_mask: optional (B|1, 1, h, w) patch shape on its canvas (default: the whole canvas).
        a, b: relight coefficients broadcasting against the patch; ``None`` = no relighting.
        interpolation: warp interpolation.

    Returns:
        (out, alpha): composited images (B, C, H, W) and the warped alpha (B, 1, H, W).
    """
    bsz = image.shape[0]
    p = patch.expand(bsz, *patch.shape[1:]) if patch.shape[0] == 1 else patch
    if a is not None or b is not None:
        p = relight(p, 1.0 if a is None else a, 0.0 if b is None else b)
    m = (torch.ones_like(p[:, :1]) if patch_mask is None
         else patch_mask.to(p.device, p.dtype).expand(bsz, 1, *p.shape[2:]))
    rgba = torch.cat([p * m, m], dim=1)
    w = warp(rgba, h, tuple(image.shape[-2:]), interpolation)
    alpha = w[:, -1:].clamp(0.0, 1.0)
    premult = w[:, :-1].clamp(min=0.0)
    color = (premult / alpha.clamp_min(1e-12)).clamp(0.0, 1.0)
    color = torch.where(alpha > 0, color, torch.zeros_like(color))
    return composite(image, color, alpha), alpha
