"""Patch-wise adversarial attack: one grid patch replaced by an optimised pattern.

Threat model: white-box (gradients), L0/patch: the attacker fully controls the pixels
of ONE s x s grid-aligned patch (values anywhere in [0, 1], no epsilon bound) and
nothing else; success = the top-1 prediction differs from the clean prediction y0.

Paper: Gu, Tresp & Qin, "Are Vision Transformers Robust to Patch Perturbations?"
(ECCV 2022), official ``perturb.py::patch_attack``: random start delta ~ U[0, 1],
x~ = x * (1 - M) + delta * M, check success before every step (early stop per
(image, position) pair), else ascend the summed cross-entropy w.r.t. y0 with a
signed step of size alpha, clipped to [0, 1]. robaudit batches many (image,
position) pairs in one forward/backward, drops pairs as soon as they succeed, and
re-verifies every success with a fresh forward pass on the stored patch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from robaudit.attacks.patches.masks import positions_to_mask

from robaudit.errors import ParameterError
from robaudit.model import ModelAdapter


@dataclass(frozen=True)
class PatchAttackResult:
    """Outcome per (image, position) pair, in the order the pairs were given.

    Attributes:
        success: (M,) bool, verified by a fresh forward pass.
        steps: (M,) long, signed-gradient steps taken before the fooling check succeeded
            (0 = the random start already fooled); -1 where the attack failed.
        patches: (M, C, s, s) the successful patch, or the last iterate on failure.
        adv_pred: (M,) long top-1 prediction on the final patched image.
        forward_samples / backward_samples: images pushed through forward / backward passes.
        unverified: successes seen during the attack that a fresh forward pass did not confirm
            (dropped from ``success``; nonzero only with a non-deterministic model).
    """

    success: torch.Tensor
    steps: torch.Tensor
    patches: torch.Tensor
    adv_pred: torch.Tensor
    forward_samples: int
    backward_samples: int
    unverified: int


class PatchAttack:
    """Signed-gradient patch attack, early-stopped per (image, position) pair.

    Args:
        patch_size: side s of the square grid-aligned patch (must divide H and W).
        steps: maximum signed-gradient steps T per pair (the official code uses 10,000).
        alpha: step size in [0, 1] pixel units (official: 2/255).
        batch_size: (image, position) pairs per forward/backward pass.
    """

    def __init__(self, patch_size: int, steps: int = 200, alpha: float = 2 / 255, batch_size: int = 256) -> None:
        if patch_size <= 0:
            raise ParameterError(f"patch_size must be positive, got {patch_size}")
        if steps < 0:
            raise ParameterError(f"steps must be >= 0, got {steps}")
        if not 0 < alpha <= 1:
            raise ParameterError(f"alpha must be in (0, 1] (pixel units; 2/255 = 0.0078), got {alpha}")
        if batch_size <= 0:
            raise ParameterError(f"batch_size must be positive, got {batch_size}")
        self.patch_size = int(patch_size)
        self.steps = int(steps)
        self.alpha = float(alpha)
        self.batch_size = int(batch_size)

    def perturb(
        self,
        model: ModelAdapter,
        x: torch.Tensor,
        y0: torch.Tensor,
        image_index: torch.Tensor,
        positions: torch.Tensor,
        *,
        generator: torch.Generator,
    ) -> PatchAttackResult:
        """Attack every pair ``(image_index[i], positions[i])``.

        Args:
            model: adapter with GRADIENTS.
            x: (n, C, H, W) clean images in [0, 1].
            y0: (n,) reference labels (the clean predictions).
            image_index: (M,) long, which image each pair attacks.
            positions: (M,) long flat grid positions ``row * Gw + col``.
            generator: draws the random starts.

        Raises:
            ParameterError: the patch size does not divide the image, or a position is off the grid.
        """
        n, c, h, w = x.shape
        s = self.patch_size
        if h % s or w % s:
            raise ParameterError(f"patch size {s} does not divide the {h}x{w} image; choose a common divisor")
        grid = (h // s, w // s)
        image_index, positions = image_index.long().cpu(), positions.long().cpu()
        m = len(image_index)
        if positions.numel() and (positions.min() < 0 or positions.max() >= grid[0] * grid[1]):
            raise ParameterError(f"patch positions must lie in [0, {grid[0] * grid[1]})")
        device = x.device
        y0 = y0.to(device)  # indexed below with device indices; a CPU y0 would fail there on CUDA
        delta = torch.rand((m, c, s, s), generator=generator, device=generator.device).to(device)
        steps = torch.full((m,), -1, dtype=torch.long)
        found = torch.zeros(m, dtype=torch.bool)
        fwd = bwd = 0
        active = torch.arange(m)
        for t in range(self.steps + 1):
            if not len(active):
                break
            for chunk in active.split(self.batch_size):
                take_step = t < self.steps
                d = delta[chunk.to(device)].clone().requires_grad_(take_step)
                xt = self._apply(x[image_index[chunk].to(device)], d, positions[chunk], grid)
                with torch.set_grad_enabled(take_step):
                    logits = model.logits(xt)
                    ref = y0[image_index[chunk].to(device)]
                    fooled = (logits.argmax(1) != ref).cpu()
                    fwd += len(chunk)
                    found[chunk[fooled]] = True
                    steps[chunk[fooled]] = t
                    if take_step and not bool(fooled.all()):
                        keep = (~fooled).to(device)
                        loss = F.cross_entropy(logits[keep], ref[keep], reduction="sum")
                        (grad,) = torch.autograd.grad(loss, d)
                        bwd += int((~fooled).sum())  # host copy: no extra device sync
                        upd = (d.detach() + self.alpha * grad.sign()).clamp_(0.0, 1.0)
                        idx = chunk[~fooled].to(device)
                        delta[idx] = upd[keep]
            active = active[~found[active]]
        adv_pred = self._predict(model, x, image_index, positions, delta, grid)
        fwd += m
        verified = adv_pred.cpu() != y0[image_index.to(device)].cpu()
        success = found & verified
        steps[~success] = -1
        return PatchAttackResult(success, steps, delta.cpu(), adv_pred.cpu(), fwd, bwd,
                                 int((found & ~verified).sum()))

    def patched_images(
        self, x: torch.Tensor, image_index: torch.Tensor, positions: torch.Tensor, patches: torch.Tensor
    ) -> torch.Tensor:
        """The adversarial images (M, C, H, W) for stored ``patches`` (e.g. from a result)."""
        h, w = x.shape[2:]
        grid = (h // self.patch_size, w // self.patch_size)
        return self._apply(x[image_index.long().to(x.device)], patches.to(x.device), positions.long().cpu(), grid)

    @torch.no_grad()
    def _predict(self, model: ModelAdapter, x: torch.Tensor, image_index: torch.Tensor,
                 positions: torch.Tensor, delta: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        out = []
        for chunk in torch.arange(len(image_index)).split(self.batch_size):
            xt = self._apply(x[image_index[chunk].to(x.device)], delta[chunk.to(x.device)], positions[chunk], grid)
            out.append(model.logits(xt).argmax(1))
        return torch.cat(out) if out else torch.empty(0, dtype=torch.long)

    def _apply(self, images: torch.Tensor, patches: torch.Tensor, positions: torch.Tensor,
               grid: tuple[int, int]) -> torch.Tensor:
        """``images`` with the patch of pair i pasted at ``positions[i]`` (differentiable in patches)."""
        mask = positions_to_mask(positions.view(-1, 1), grid, self.patch_size).to(images.device)
        tiled = patches.repeat(1, 1, grid[0], grid[1])
        return torch.where(mask.bool().expand_as(images), tiled, images)
