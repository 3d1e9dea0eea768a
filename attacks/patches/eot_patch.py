"""Adversarial patch optimised in expectation over realistic transformations (EOT).

Threat model: a white-box attacker prints one unconstrained patch (values in [0, 1]) on
the planar object in the scene; it is seen through an unknown pose (rotation, translation,
scale, perspective) and lighting. ``universal`` optimises one patch for all images,
otherwise one patch per image. The attacker maximises the true-class cross-entropy
(untargeted, robaudit's classifier version) averaged over sampled transformations.

Paper: Hingun et al., REAP (ICCV 2023), RP2 attack (METHODS.md §2.3e): P = (tanh z + 1)/2
with z ~ U(-1, 1), Adam (lr 0.01), loss = -CE(f(render(P)), y) + lambda TV(P), lambda = 1e-5,
TV = mean|P[:, 1:] - P[:, :-1]| + mean|P[..., 1:] - P[..., :-1]|. With ``rendering =
digital`` (and no transformation sampling) it is the plain digital patch attack whose
patch the audit then evaluates under realistic rendering.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from robaudit.attacks.patches.synthetic_scene import PatchLocation, Rendering, SceneDraw, SyntheticScene

from robaudit.model import ModelAdapter


@dataclass(frozen=True)
class EOTPatchResult:
    """``patch`` (K, C, s, s) in [0, 1] (K = 1 when universal), per-step mean loss, pass counts."""

    patch: torch.Tensor
    loss_history: torch.Tensor
    forward_samples: int
    backward_samples: int


def total_variation(p: torch.Tensor) -> torch.Tensor:
    """REAP's TV: mean |vertical differences| + mean |horizontal differences| (per call, scalar)."""
    return (p[..., 1:, :] - p[..., :-1, :]).abs().mean() + (p[..., :, 1:] - p[..., :, :-1]).abs().mean()


class EOTPatch:
    """RP2-style patch optimiser over a synthetic scene.

    Args:
        scene: the synthetic object geometry and transformation distribution.
        steps: Adam steps.
        lr: Adam learning rate on z.
        eot_samples: transformations sampled per image per step (ignored for ``digital``).
        tv_weight: lambda of the TV term.
        universal: one patch for all images (True) or one per image.
        rendering: the rendering the patch is optimised under (``realistic`` = full EOT).
        batch_size: images per step for a universal patch (random minibatch; all if larger).
    """

    def __init__(self, scene: SyntheticScene, *, steps: int = 300, lr: float = 0.01, eot_samples: int = 1,
                 tv_weight: float = 1e-5, universal: bool = True, rendering: Rendering | str = Rendering.REALISTIC,
                 batch_size: int = 128) -> None:
        if steps < 1 or eot_samples < 1 or batch_size < 1:
            raise ValueError("steps, eot_samples and batch_size must be >= 1")
        if lr <= 0 or tv_weight < 0:
            raise ValueError("lr must be > 0 and tv_weight >= 0")
        self.scene, self.steps, self.lr = scene, steps, lr
        self.rendering = Rendering(rendering)
        self.eot_samples = 1 if self.rendering is Rendering.DIGITAL else eot_samples
        self.tv_weight, self.universal, self.batch_size = tv_weight, universal, batch_size

    def perturb(self, model: ModelAdapter, x: torch.Tensor, y: torch.Tensor, *, generator: torch.Generator,
                draw: SceneDraw | None = None) -> EOTPatchResult:
        """Optimise the patch(es) against ``model`` on images ``x`` with true labels ``y``.

        Args:
            model: adapter with gradients (logits differentiable w.r.t. the input).
            x: (n, C, H, W) attacker images in [0, 1].
            y: (n,) true labels.
            generator: the only source of randomness (init, minibatches, transformations).
            draw: fixed per-image scene (patch locations) for the digital rendering; drawn
                from ``generator`` when omitted. Transform-sampling renderings redraw every step.

        Returns:
            :class:`EOTPatchResult`.
        """
        n, c = x.shape[:2]
        s = self.scene.spec.patch_side
        k = 1 if self.universal else n
        z = (torch.rand(k, c, s, s, generator=generator, dtype=x.dtype, device=generator.device) * 2.0
             - 1.0).to(x.device)
        z.requires_grad_(True)
        opt = torch.optim.Adam([z], lr=self.lr)
        fixed = draw if draw is not None else self.scene.draw(n, generator)
        history = torch.empty(self.steps, dtype=torch.float64, device=x.device)  # no host sync per step
        fwd = 0
        for t in range(self.steps):
            if self.universal and n > self.batch_size:
                idx = torch.randperm(n, generator=generator, device=generator.device)[: self.batch_size]
            else:
                idx = torch.arange(n)
            e = self.eot_samples
            xb = x[idx].repeat_interleave(e, 0)
            yb = y[idx].repeat_interleave(e, 0).to(x.device)
            if self.rendering is Rendering.DIGITAL:
                d = _select(fixed, idx)
            else:
                d = self.scene.draw(len(xb), generator)
                if self.scene.spec.location is not PatchLocation.RANDOM:
                    d = SceneDraw(d.quad, _select(fixed, idx).repeat(e).offset, d.light)
            patch = (torch.tanh(z) + 1.0) / 2.0
            pb = patch if self.universal else patch[idx].repeat_interleave(e, 0)
            out = self.scene.render(xb, pb, d, self.rendering, jitter_light=self.rendering.lighting)
            ce = F.cross_entropy(model.logits(out), yb)
            loss = -ce + self.tv_weight * total_variation(patch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            history[t] = loss.detach()
            fwd += len(xb)
        with torch.no_grad():
            final = ((torch.tanh(z) + 1.0) / 2.0).detach()
        return EOTPatchResult(patch=final, loss_history=history.cpu(), forward_samples=fwd, backward_samples=fwd)


def _select(draw: SceneDraw, idx: torch.Tensor) -> SceneDraw:
    return SceneDraw(draw.quad[idx], draw.offset[idx], draw.light[idx])
