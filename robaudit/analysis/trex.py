"""T-Rex:I - search for a counterfactual with high Stability near a base counterfactual.

Guarantee: the returned point is always a valid CF for the audited model m
(argmax m(z) == the CF class of the base CF) and lies within L2 distance ``radius`` of
the base CF x'_0 (and in [0, 1]). Whether its Stability reaches tau is reported per sample
(``reached``), never assumed.

Paper: Hamman, Noorani, Mishra, Magazzeni, Dutta, ICML 2023; official
``batch_trex_search`` / ``TreXSearch`` / ``IterativeSearch`` (METHODS §6.2), re-implemented in
torch with the official bugs fixed: the loop condition is per sample (the official one sums
the objective over the batch), the CF class is per sample (not hard-coded class 1).

Loop (per sample, while R^(z) < tau and step < max_steps; R^ is evaluated before the
update, as in the official code): g = grad_z R^(z) (noise resampled at every step, shared
across the batch), z <- z + step_size * g / ||g||_2, project onto ||z - x'_0||_2 <= radius,
clip to [0, 1]; if argmax m(z) == y' then stored <- z. The stored point is returned.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from robaudit.analysis.counterfactual import LogitsFn, StabilityForm, TargetProb, stability
from robaudit.errors import ParameterError


@dataclass(frozen=True)
class TRexResult:
    """T-Rex output: CF images, the steps each sample ran, whether R^ >= tau was observed."""

    x: torch.Tensor
    steps: torch.Tensor
    reached: torch.Tensor
    last_stability: torch.Tensor
    forward: int
    backward: int


def trex_search(logits_fn: LogitsFn, x_cf: torch.Tensor, target: torch.Tensor, *, generator: torch.Generator,
                tau: float = 0.75, sigma: float = 0.05, k: int = 256, step_size: float = 0.05,
                radius: float = 1.0, max_steps: int = 20, form: str | StabilityForm = StabilityForm.RELAXED,
                batch_size: int = 1024) -> TRexResult:
    """Gradient ascent on Stability R^ from the base CFs ``x_cf`` (T-Rex:I).

    Args:
        logits_fn: images in [0, 1] -> logits (differentiable).
        x_cf: base counterfactuals x'_0 (N, C, H, W); must be valid for ``target``.
        target: the CF class y' of each sample (N,).
        generator: the only source of randomness (noise draws).
        tau: Stability threshold; a sample stops once R^(z) >= tau.
        sigma, k, form: Stability estimator settings (see :func:`stability`).
        step_size: L2 length of each normalised ascent step (official eta = 0.01 on tabular data).
        radius: L2 projection radius around x'_0 (official eps = 1).
        max_steps: at most this many updates (official 20).
        batch_size: images per forward pass when evaluating the K noisy copies.

    Returns:
        :class:`TRexResult`; ``x`` equals ``x_cf`` for samples where no valid iterate was found.

    Raises:
        ParameterError: bad tau/step/radius/max_steps or shapes.
    """
    if not 0 < tau <= 1 or step_size <= 0 or radius < 0 or max_steps < 0:
        raise ParameterError("need 0 < tau <= 1, step_size > 0, radius >= 0 and max_steps >= 0")
    target = target.to(x_cf.device).long()
    if target.shape != x_cf.shape[:1]:
        raise ParameterError(f"target must have shape ({len(x_cf)},), got {tuple(target.shape)}")
    x0 = x_cf.detach()
    n = len(x0)
    view = (-1, *[1] * (x0.dim() - 1))
    z = x0.clone()
    stored = x0.clone()
    steps = torch.zeros(n, dtype=torch.long)
    reached = torch.zeros(n, dtype=torch.bool)
    last = torch.full((n,), float("nan"))
    active = torch.ones(n, dtype=torch.bool)
    fwd = bwd = 0
    for _ in range(max_steps + 1):
        idx = active.nonzero().flatten()
        if len(idx) == 0:
            break
        zi = z[idx].clone().requires_grad_(True)
        r = stability(TargetProb(logits_fn, target[idx]), zi, sigma=sigma, k=k, generator=generator, form=form,
                      batch_size=batch_size)
        fwd += len(idx) * (k + 1)
        last[idx] = r.detach().cpu()
        done = (r.detach() >= tau).cpu()
        reached[idx[done]] = True
        if int(steps[idx].max()) >= max_steps:
            active[idx] = False
            break
        go = idx[~done]
        active[idx[done]] = False
        if len(go) == 0:
            break
        (g,) = torch.autograd.grad(r.sum(), zi)
        bwd += len(idx) * (k + 1)
        g = g[~done.to(g.device)]
        g = g / g.flatten(1).norm(dim=1).clamp_min(1e-12).view(view)
        zn = z[go] + step_size * g
        d = zn - x0[go]
        scale = (radius / d.flatten(1).norm(dim=1).clamp_min(1e-12)).clamp(max=1.0)
        zn = (x0[go] + d * scale.view(view)).clamp(0.0, 1.0).detach()
        z[go] = zn
        steps[go] += 1
        with torch.no_grad():
            ok = logits_fn(zn).argmax(1) == target[go]
        fwd += len(go)
        stored[go[ok.cpu()]] = zn[ok]
    return TRexResult(stored, steps, reached, last, fwd, bwd)
