"""Synthetic planar objects for classifiers: where a patch lands and how it is lit.

Threat model: classifiers come without keypoint annotations, so the "object" carrying the
patch is a synthetic planar square centred in the image (side ``object_fraction`` of the
image side). The patch is a square of side ``patch_fraction`` of the image side placed in
the object's canonical frame (centre, bottom, top or a random location). Renderings:

* digital: the patch pasted axis-aligned at its canonical place (integer offsets, exact hard
  paste), no lighting;
* geometric: the object plane is jittered (rotation U(-r, r) deg, translation, scale,
  per-corner perspective jitter) and the patch rides on it through the homography
  canonical object -> jittered quad;
* lighting: the REAP percentile relight fitted to the object's real pixels;
* realistic: geometric + lighting.

Runs using this module are labelled "synthetic" (after the REAP rendering pipeline of
Hingun et al., ICCV 2023, METHODS.md §2.3, §2.5 last pitfall), never "REAP".
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import torch
from robaudit.attacks.patches.compose import render_patch
from robaudit.attacks.patches.lighting import percentile_coefficients
from robaudit.attacks.patches.render import Interpolation, homography, translation, warp


class PatchLocation(str, enum.Enum):
    CENTER = "center"
    BOTTOM = "bottom"
    TOP = "top"
    RANDOM = "random"


class Rendering(str, enum.Enum):
    DIGITAL = "digital"
    GEOMETRIC = "geometric"
    LIGHTING = "lighting"
    REALISTIC = "realistic"

    @property
    def geometric(self) -> bool:
        return self in (Rendering.GEOMETRIC, Rendering.REALISTIC)

    @property
    def lighting(self) -> bool:
        return self in (Rendering.LIGHTING, Rendering.REALISTIC)


@dataclass(frozen=True)
class SceneSpec:
    """Object/patch geometry and the transformation distribution (fractions of the image side)."""

    image_hw: tuple[int, int]
    object_fraction: float = 0.75
    patch_fraction: float = 0.25
    location: PatchLocation = PatchLocation.CENTER
    rotation_deg: float = 15.0
    translate: float = 0.05
    scale_low: float = 0.9
    scale_high: float = 1.1
    perspective: float = 0.06
    relight_percentile: float = 0.2
    light_a_jitter: float = 0.15
    light_b_jitter: float = 0.05

    @property
    def object_side(self) -> int:
        return max(1, int(round(self.object_fraction * min(self.image_hw))))

    @property
    def patch_side(self) -> int:
        return max(1, min(self.object_side, int(round(self.patch_fraction * min(self.image_hw)))))

    @property
    def object_origin(self) -> tuple[int, int]:
        """(x0, y0) integer top-left corner of the un-jittered object."""
        h, w = self.image_hw
        return ((w - self.object_side) // 2, (h - self.object_side) // 2)


@dataclass(frozen=True)
class SceneDraw:
    """One random scene per image: jittered object quad, patch offset, lighting jitter draws in [-1, 1]."""

    quad: torch.Tensor  # (n, 4, 2) float64 image coordinates, clockwise from top-left
    offset: torch.Tensor  # (n, 2) float64 patch top-left in the object's canonical frame
    light: torch.Tensor  # (n, 2) float64 uniform(-1, 1) draws for (a, b) jitter

    def __len__(self) -> int:
        return len(self.offset)

    def repeat(self, k: int) -> SceneDraw:
        return SceneDraw(self.quad.repeat_interleave(k, 0), self.offset.repeat_interleave(k, 0),
                         self.light.repeat_interleave(k, 0))


def _uniform(n: int, generator: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.rand(n, *shape, generator=generator, dtype=torch.float64, device=generator.device) * 2.0 - 1.0


class SyntheticScene:
    """Draws synthetic object scenes and renders a patch under one of the four renderings."""

    def __init__(self, spec: SceneSpec) -> None:
        self.spec = spec
        s = float(spec.object_side)
        self._canon = torch.tensor([[0.0, 0.0], [s, 0.0], [s, s], [0.0, s]], dtype=torch.float64)

    def base_quad(self, n: int) -> torch.Tensor:
        x0, y0 = self.spec.object_origin
        return (self._canon + torch.tensor([x0, y0], dtype=torch.float64)).expand(n, 4, 2).clone()

    def draw(self, n: int, generator: torch.Generator) -> SceneDraw:
        """Random object pose, patch location and lighting jitter for ``n`` images (all from ``generator``)."""
        sp = self.spec
        side, span = sp.object_side, sp.object_side - sp.patch_side
        if sp.location is PatchLocation.RANDOM:
            offset = torch.randint(0, span + 1, (n, 2), generator=generator, device=generator.device).to(
                torch.float64)
        else:
            oy = {PatchLocation.CENTER: span // 2, PatchLocation.BOTTOM: span, PatchLocation.TOP: 0}[sp.location]
            offset = torch.tensor([[span // 2, oy]], dtype=torch.float64).expand(n, 2).clone()
        theta = _uniform(n, generator) * math.radians(sp.rotation_deg)
        scale = sp.scale_low + (sp.scale_high - sp.scale_low) * (_uniform(n, generator) + 1.0) / 2.0
        shift = _uniform(n, generator, 2) * sp.translate * torch.tensor(sp.image_hw[::-1], dtype=torch.float64)
        jitter = _uniform(n, generator, 4, 2) * sp.perspective * side
        light = _uniform(n, generator, 2)
        centred = self._canon - side / 2.0
        cos, sin = torch.cos(theta)[:, None], torch.sin(theta)[:, None]
        rx = cos * centred[:, 0] - sin * centred[:, 1]
        ry = sin * centred[:, 0] + cos * centred[:, 1]
        x0, y0 = sp.object_origin
        centre = torch.tensor([x0 + side / 2.0, y0 + side / 2.0], dtype=torch.float64)
        quad = torch.stack([rx, ry], dim=-1) * scale[:, None, None] + centre + shift[:, None, :] + jitter
        return SceneDraw(quad=quad, offset=offset, light=light)

    def object_homography(self, draw: SceneDraw, geometric: bool) -> torch.Tensor:
        """(n, 3, 3) canonical object frame -> image (jittered quad when ``geometric``)."""
        quad = draw.quad if geometric else self.base_quad(len(draw))
        return homography(self._canon.expand(len(draw), 4, 2), quad)

    def patch_homography(self, draw: SceneDraw, geometric: bool) -> torch.Tensor:
        """(n, 3, 3) patch canvas -> image: object homography after the in-object offset."""
        return self.object_homography(draw, geometric) @ translation(draw.offset[:, 0], draw.offset[:, 1])

    def object_mask(self, draw: SceneDraw, geometric: bool, dtype: torch.dtype = torch.float32,
                    device: torch.device | str = "cpu") -> torch.Tensor:
        """(n, 1, H, W) soft mask of the object in the image."""
        side = self.spec.object_side
        ones = torch.ones(len(draw), 1, side, side, dtype=dtype, device=device)
        return warp(ones, self.object_homography(draw, geometric), self.spec.image_hw)

    def lighting(self, images: torch.Tensor, draw: SceneDraw, geometric: bool, jitter: bool
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Percentile relight (a, b) (n, 1, 1, 1) from each image's object pixels; jittered for EOT."""
        mask = self.object_mask(draw, geometric, images.dtype, images.device)
        a, b = percentile_coefficients(images, mask, self.spec.relight_percentile)
        if jitter:
            u = draw.light.to(device=images.device, dtype=images.dtype)
            a = a * (1.0 + self.spec.light_a_jitter * u[:, 0].reshape(-1, 1, 1, 1))
            b = b + self.spec.light_b_jitter * u[:, 1].reshape(-1, 1, 1, 1)
        return a, b

    def render(self, images: torch.Tensor, patch: torch.Tensor, draw: SceneDraw, rendering: Rendering | str, *,
               jitter_light: bool = False) -> torch.Tensor:
        """Images (n, C, H, W) with ``patch`` ((n|1, C, s, s)) rendered under ``rendering``."""
        r = Rendering(rendering)
        h = self.patch_homography(draw, r.geometric)
        a = b = None
        if r.lighting:
            a, b = self.lighting(images, draw, r.geometric, jitter_light)
        # off-plane poses need bilinear sampling; an axis-aligned integer paste is exact with nearest
        interp = Interpolation.BILINEAR if r.geometric else Interpolation.NEAREST
        out, _ = render_patch(images, patch, h, a=a, b=b, interpolation=interp)
        return out
