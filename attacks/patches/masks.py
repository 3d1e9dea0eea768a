"""Grid-aligned square patch masks.

Guarantee: a mask covers exactly the chosen s x s grid cells (same on all channels),
so a perturbation ``x + M * (x' - x)`` leaves every other pixel bit-identical.
Patches are aligned to the grid ``(H/s, W/s)``; for a timm ViT the default s is the
token size, so each patch is exactly one token (Gu, Tresp & Qin, ECCV 2022, §1.2 of
METHODS.md). Positions are flat grid indices ``row * Gw + col``.
"""

from __future__ import annotations

import torch
from torch import nn

from robaudit.errors import ParameterError

DEFAULT_GRID = 8  #: grid used for non-ViT models when no patch size is given


def token_patch_size(module: nn.Module) -> int | None:
    """The (square) token size of a timm ViT inside ``module``, or None if there is none."""
    for m in module.modules():
        pe = getattr(m, "patch_embed", None)
        size = getattr(pe, "patch_size", None) if pe is not None else None
        if size is not None:
            size = tuple(int(v) for v in size) if isinstance(size, (tuple, list)) else (int(size),) * 2
            if size[0] == size[1]:
                return size[0]
    return None


def resolve_patch_size(module: nn.Module | None, image_hw: tuple[int, int], patch_size: int = 0) -> int:
    """The patch side s: ``patch_size`` if > 0, else the ViT token size, else H / 8.

    Raises:
        ParameterError: s does not divide both H and W (or is not positive).
    """
    h, w = image_hw
    s = int(patch_size)
    source = "patch_size"
    if s <= 0:
        token = token_patch_size(module) if module is not None else None
        if token is not None:
            s, source = token, "the ViT token size"
        elif h % DEFAULT_GRID == 0 and w % DEFAULT_GRID == 0:
            s, source = h // DEFAULT_GRID, f"the default {DEFAULT_GRID}x{DEFAULT_GRID} grid"
        else:
            raise ParameterError(
                f"cannot choose a patch size for {h}x{w} images; set params.patch_size to a "
                "divisor of both the image height and width"
            )
    if s <= 0 or h % s or w % s:
        raise ParameterError(
            f"patch size {s} (from {source}) does not divide the {h}x{w} image; set "
            f"params.patch_size to a common divisor of {h} and {w} (e.g. {_divisor_hint(h, w)})"
        )
    return s


def grid_shape(image_hw: tuple[int, int], s: int) -> tuple[int, int]:
    """(Gh, Gw) = (H / s, W / s)."""
    return image_hw[0] // s, image_hw[1] // s


def random_positions(n: int, k: int, grid: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    """``k`` distinct flat grid positions per image, (n, k) long, drawn from ``generator``."""
    cells = grid[0] * grid[1]
    if not 0 <= k <= cells:
        raise ParameterError(f"cannot place {k} patches on a {grid[0]}x{grid[1]} grid; use k <= {cells}")
    scores = torch.rand((n, cells), generator=generator, device=generator.device)
    return scores.argsort(dim=1)[:, :k]


def positions_to_mask(positions: torch.Tensor, grid: tuple[int, int], s: int) -> torch.Tensor:
    """(n, 1, H, W) float {0, 1} mask with the s x s cells at ``positions`` (n, k) set to 1."""
    n = positions.shape[0]
    cells = torch.zeros((n, grid[0] * grid[1]), dtype=torch.float32, device=positions.device)
    if positions.numel():
        cells.scatter_(1, positions.long(), 1.0)
    cells = cells.view(n, 1, grid[0], grid[1])
    return cells.repeat_interleave(s, dim=2).repeat_interleave(s, dim=3)


def random_patch_masks(
    n: int, k: int, image_hw: tuple[int, int], s: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mask (n, 1, H, W), positions (n, k))`` with k random grid-aligned s x s patches per image."""
    grid = grid_shape(image_hw, s)
    positions = random_positions(n, k, grid, generator)
    return positions_to_mask(positions, grid, s), positions


def _divisor_hint(h: int, w: int) -> int:
    import math

    g = math.gcd(h, w)
    for d in range(max(1, g // 8), g + 1):
        if g % d == 0:
            return d
    return 1
