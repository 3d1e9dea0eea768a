"""Hendrycks' ImageNet-C severity parameters and the resolution-scaling rule.

Values are those of ``imagecorruptions`` 1.1.2 (Michaelis et al.'s packaging of
Hendrycks & Dietterich's ``imagenet_c`` code, ICLR 2019,
https://arxiv.org/abs/1903.12261), indexed by severity 1..5.

Resolution scaling [robaudit choice]: parameters measured in *pixels* were tuned
for 224 px images. robaudit multiplies them by ``s = min(H, W) / 224`` (see
:func:`resolution_scale`), so a 32 px image gets a proportionally sized blur
instead of a 10 px disk that wipes it out. At 224 px, ``s = 1`` and every
corruption uses exactly Hendrycks' numbers. Which parameters scale is listed per
corruption in the family modules.
"""

from __future__ import annotations

import numpy as np

REFERENCE_SIZE = 224

GAUSSIAN_NOISE = (0.08, 0.12, 0.18, 0.26, 0.38)  # std in [0, 1] units
SHOT_NOISE = (60, 25, 12, 5, 3)  # Poisson photon count at white
IMPULSE_NOISE = (0.03, 0.06, 0.09, 0.17, 0.27)  # salt-and-pepper amount

DEFOCUS_BLUR = ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5))  # (disk radius px, alias sigma px)
GLASS_BLUR = ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2))  # (sigma px, max delta px, iterations)
MOTION_BLUR = ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15))  # (radius px, sigma px)
# zoom factors exactly as numpy's arange produces them in the reference code
ZOOM_BLUR = tuple(
    tuple(float(z) for z in np.arange(1, stop, step))
    for stop, step in ((1.11, 0.01), (1.16, 0.01), (1.21, 0.02), (1.26, 0.02), (1.31, 0.03))
)

# (mean, std, zoom, threshold, blur radius px, blur sigma px, image blend)
SNOW = (
    (0.1, 0.3, 3, 0.5, 10, 4, 0.8),
    (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
    (0.55, 0.3, 4, 0.9, 12, 8, 0.7),
    (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
    (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55),
)
FROST = ((1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75))  # (image weight, frost weight)
FOG = ((1.5, 2), (2.0, 2), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4))  # (fog strength, wibble decay)

BRIGHTNESS = (0.1, 0.2, 0.3, 0.4, 0.5)  # added to HSV value
CONTRAST = (0.4, 0.3, 0.2, 0.1, 0.05)  # factor on deviations from the channel mean
ELASTIC_ALPHA = tuple(250 * a for a in (0.05, 0.065, 0.085, 0.1, 0.12))  # displacement gain
PIXELATE = (0.6, 0.5, 0.4, 0.3, 0.25)  # down-sampling factor
JPEG_QUALITY = (25, 18, 15, 10, 7)

# Frost texture statistics (per-channel RGB mean and std, 0..255) measured on the
# five frost photographs imagecorruptions samples from (frost1..frost5; frost6 is
# never drawn). robaudit does not ship the photographs; see frost_texture.py.
FROST_STATS = (
    ((77.7, 149.1, 165.7), (26.9, 16.5, 15.3)),
    ((200.8, 205.4, 214.5), (21.4, 22.1, 22.6)),
    ((200.8, 205.4, 214.5), (21.4, 22.1, 22.6)),
    ((137.6, 152.8, 165.2), (28.5, 28.5, 29.9)),
    ((112.4, 123.4, 134.8), (44.4, 43.3, 41.7)),
)


def resolution_scale(height: int, width: int) -> float:
    """``min(H, W) / 224``: the factor applied to parameters measured in pixels."""
    return min(height, width) / REFERENCE_SIZE
