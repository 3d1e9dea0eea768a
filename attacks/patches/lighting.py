"""Relighting of a digital patch to match the lighting of the object it is printed on.

Guarantee: the relit patch is an affine, per-image (percentile) or per-channel
(polynomial, colour transfer) map P' = clamp(a P + b, 1e-6, 1 - 1e-6) whose coefficients
are fitted from the object's real pixels only (pixels where the object mask is >= 0.5);
with a > 0 it is monotone in P. Relighting is applied to the patch BEFORE the warp, so
alpha is never mixed into colour.

Paper: Hingun et al., REAP (ICCV 2023), lighting transform (METHODS.md §2.3c):
``percentile`` (default, p = 0.2, degree 1: a = q_{1-p} - q_p, b = q_p over all object
pixels with channels flattened together, nan-percentile), ``polynomial`` (per-channel
degree-1 fit of real object pixels against synthetic ones after dropping the fraction p
with the largest residuals) and ``color_transfer`` (Reinhard mean/std matching; robaudit
applies it per RGB channel rather than in a Lab-like space [robaudit choice]).
"""

from __future__ import annotations

import enum

import torch

EPS = 1e-6


class RelightMethod(str, enum.Enum):
    PERCENTILE = "percentile"
    POLYNOMIAL = "polynomial"
    COLOR_TRANSFER = "color_transfer"


def relight(patch: torch.Tensor, a: torch.Tensor | float, b: torch.Tensor | float) -> torch.Tensor:
    """P' = clamp(a P + b, 1e-6, 1 - 1e-6); ``a``, ``b`` broadcast against ``patch`` (B, C, h, w)."""
    return (patch * a + b).clamp(EPS, 1.0 - EPS)


def _object_values(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, C*H*W) float64 with NaN outside the object mask (mask (B, 1|C, H, W) >= 0.5)."""
    inside = (mask >= 0.5).expand_as(image)
    vals = torch.where(inside, image.detach().to(torch.float64), torch.full_like(image, float("nan"), dtype=torch.float64))
    flat = vals.reshape(len(image), -1)
    if bool(torch.isnan(flat).all(dim=1).any()):
        raise ValueError("an object mask selects no pixels; the object must cover at least one pixel "
                         "(increase object_fraction)")
    return flat


def percentile_coefficients(image: torch.Tensor, mask: torch.Tensor, percentile: float = 0.2
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """REAP's default relighting: a = q_hi - q_lo, b = q_lo over the object pixels of each image.

    Args:
        image: (B, C, H, W) real images in [0, 1].
        mask: (B, 1, H, W) object masks (pixels >= 0.5 are the object).
        percentile: p; the pair (min(p, 1-p), 1 - min(p, 1-p)) is used.

    Returns:
        a, b: (B, 1, 1, 1) float tensors in the image dtype.
    """
    if not 0.0 <= percentile <= 1.0:
        raise ValueError(f"percentile must be in [0, 1], got {percentile}")
    p = min(percentile, 1.0 - percentile)
    flat = _object_values(image, mask)
    q = torch.nanquantile(flat, torch.tensor([p, 1.0 - p], dtype=torch.float64, device=flat.device), dim=1)  # (2, B)
    a, b = (q[1] - q[0]), q[0]
    shape = (len(image), 1, 1, 1)
    return a.reshape(shape).to(image.dtype), b.reshape(shape).to(image.dtype)


def polynomial_coefficients(image: torch.Tensor, synthetic: torch.Tensor, mask: torch.Tensor,
                            drop: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel degree-1 least-squares fit real ~ a * synthetic + b over object pixels.

    Fit once, drop the fraction ``drop`` of pixels with the largest absolute residuals, refit.

    Returns:
        a, b: (B, C, 1, 1).
    """
    if not 0.0 <= drop < 1.0:
        raise ValueError(f"drop must be in [0, 1), got {drop}")
    bsz, c = image.shape[:2]
    a = torch.ones(bsz, c, dtype=torch.float64)
    b = torch.zeros(bsz, c, dtype=torch.float64)
    inside = (mask >= 0.5).expand_as(image)
    for i in range(bsz):
        for ch in range(c):
            m = inside[i, ch]
            if not bool(m.any()):
                raise ValueError("an object mask selects no pixels; the object must cover at least one pixel")
            # fitted on the CPU: lstsq's gelsd driver does not exist on CUDA
            x = synthetic[i, ch][m].detach().to("cpu", torch.float64)
            y = image[i, ch][m].detach().to("cpu", torch.float64)
            coef = _linfit(x, y)
            if drop > 0 and len(x) > 2:
                res = (y - (coef[0] * x + coef[1])).abs()
                keep = res.argsort()[: max(2, int(round(len(x) * (1.0 - drop))))]
                coef = _linfit(x[keep], y[keep])
            a[i, ch], b[i, ch] = coef[0], coef[1]
    return (a.reshape(bsz, c, 1, 1).to(image.device, image.dtype),
            b.reshape(bsz, c, 1, 1).to(image.device, image.dtype))


def _linfit(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    design = torch.stack([x, torch.ones_like(x)], dim=1)
    sol = torch.linalg.lstsq(design, y.unsqueeze(1), driver="gelsd").solution.squeeze(1)
    return sol


def color_transfer_coefficients(image: torch.Tensor, synthetic: torch.Tensor, mask: torch.Tensor
                                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Reinhard-style per-channel matching: a = std_real / std_syn, b = mean_real - mean_syn * a.

    Returns:
        a, b: (B, C, 1, 1); a = 1 where the synthetic channel is constant.
    """
    inside = (mask >= 0.5).expand_as(image)
    w = inside.to(torch.float64)
    n = w.sum(dim=(2, 3))
    if bool((n == 0).any()):
        raise ValueError("an object mask selects no pixels; the object must cover at least one pixel")

    def stats(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = t.detach().to(torch.float64)
        mean = (t * w).sum(dim=(2, 3)) / n
        var = (((t - mean[..., None, None]) ** 2) * w).sum(dim=(2, 3)) / n
        return mean, var.sqrt()

    m_real, s_real = stats(image)
    m_syn, s_syn = stats(synthetic)
    a = torch.where(s_syn > 1e-12, s_real / s_syn.clamp_min(1e-12), torch.ones_like(s_syn))
    b = m_real - m_syn * a
    shape = (*a.shape, 1, 1)
    return a.reshape(shape).to(image.dtype), b.reshape(shape).to(image.dtype)
