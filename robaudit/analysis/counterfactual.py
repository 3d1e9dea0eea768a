"""Counterfactual Stability (Monte-Carlo) and minimal-L2 targeted counterfactuals for image classifiers.

Guarantee (what the numbers mean): Stability R^(x') estimates how much probability mass
the model keeps on the counterfactual class in a Gaussian neighbourhood of x'. Hamman et
al. prove that a CF whose (Lipschitz-form) Stability exceeds tau > 0.5 is invalidated by a
naturally-occurring model change only with exponentially small probability; the constant
of that bound is unverified here (METHODS §6.1), so robaudit reports R^ and its Monte-Carlo
standard error, never a numeric "probability of invalidation".

Paper: Hamman, Noorani, Mishra, Magazzeni, Dutta, "Robust Counterfactual Explanations for
Neural Networks With Probabilistic Guarantees", ICML 2023 (official TF code
``consistency/attack_utils.py::gaussian_volume``; it cannot run as published, METHODS §6.6).

Operationalisation (METHODS §6.1, §6.5, [robaudit choice] where noted):

* ``prob_fn`` maps images (N, C, H, W) in [0, 1] to the target-class probability (N,).
* Relaxed form (the official code's): R^ = mean_i m(x'+eta_i) - mean_i |m(x'+eta_i) - m(x')|,
  eta_i ~ N(0, sigma^2 I). Noisy points are NOT clipped to [0, 1] (as in the official code).
* Lipschitz form: R_L = mean_i [m(x'+eta_i) - gamma^ ||eta_i||_2], gamma^ = the max pairwise
  ratio |m(a) - m(b)| / ||a - b||_2 over the K samples and x' itself (the official code's
  commented-out estimator).
* Standard error: sd of the K per-draw terms / sqrt(K) (for the Lipschitz form conditional
  on gamma^, which is itself estimated from the same draws).
* Common random numbers [robaudit choice, default on]: every sample of a batch uses the
  same K noise draws, so differences between inputs are not noise-draw artefacts.
* CF generator [robaudit choice, METHODS §6.5]: targeted L2 PGD (descending CE(target)) inside
  an L2 ball whose radius is first doubled until a valid CF appears, then bisected; the
  smallest-norm valid iterate ever seen is returned.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from robaudit.errors import ParameterError

ProbFn = Callable[[torch.Tensor], torch.Tensor]
LogitsFn = Callable[[torch.Tensor], torch.Tensor]


class StabilityForm(str, enum.Enum):
    RELAXED = "relaxed"
    LIPSCHITZ = "lipschitz"

    @classmethod
    def parse(cls, value: str | StabilityForm) -> StabilityForm:
        try:
            return cls(value)
        except ValueError:
            raise ParameterError(f"stability form must be one of {[f.value for f in cls]}, got {value!r}") from None


def _check(x: torch.Tensor, sigma: float, k: int) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() < 2:
        raise ParameterError("x must be a tensor of shape (N, C, H, W) (a batch of images)")
    if not sigma > 0 or not math.isfinite(sigma):
        raise ParameterError(f"sigma must be a finite number > 0 (e.g. 0.05), got {sigma}")
    if k < 2:
        raise ParameterError(f"k (Monte-Carlo samples) must be >= 2 (e.g. 256), got {k}")


def draw_noise(x: torch.Tensor, *, sigma: float, k: int, generator: torch.Generator,
               common: bool = True) -> torch.Tensor:
    """Gaussian noise ``(N, K, *x.shape[1:])`` with sd ``sigma``; identical across samples when ``common``."""
    shape = (1 if common else len(x), k, *x.shape[1:])
    eta = torch.randn(shape, generator=generator, device=generator.device, dtype=x.dtype).to(x.device) * sigma
    return eta.expand(len(x), *eta.shape[1:])


def _probs(prob_fn: ProbFn, x: torch.Tensor, eta: torch.Tensor, batch_size: int) -> torch.Tensor:
    """m(x_n + eta_{n,i}) as (N, K), evaluated in chunks of ``batch_size`` images."""
    n, k = eta.shape[:2]
    pts = (x.unsqueeze(1) + eta).reshape(n * k, *x.shape[1:])
    if isinstance(prob_fn, TargetProb):
        owners = torch.arange(n).repeat_interleave(k)
        out = torch.cat([prob_fn(pts[i : i + batch_size], owners[i : i + batch_size]).reshape(-1)
                         for i in range(0, n * k, batch_size)])
    else:
        out = torch.cat([prob_fn(pts[i : i + batch_size]).reshape(-1) for i in range(0, n * k, batch_size)])
    return out.reshape(n, k)


def stability_terms(prob_fn: ProbFn, x: torch.Tensor, *, sigma: float, k: int, generator: torch.Generator,
                    form: str | StabilityForm = StabilityForm.RELAXED, common: bool = True,
                    batch_size: int = 1024, noise: torch.Tensor | None = None) -> torch.Tensor:
    """Per-draw Stability terms ``(N, K)``; their mean over K is R^ (differentiable in ``x``).

    Args:
        prob_fn: images in [0, 1] (N, C, H, W) -> probability of the CF class (N,).
        x: the counterfactuals x' (N, C, H, W).
        sigma: noise sd in pixel units. k: Monte-Carlo samples per input.
        generator: the only source of randomness.
        form: ``"relaxed"`` (official code) or ``"lipschitz"``.
        common: share the K draws across the batch (common random numbers).
        batch_size: images per prob_fn call (the K samples are batched).
        noise: optional pre-drawn noise (N or 1, K, C, H, W) to reuse (overrides sigma draws).

    Returns:
        Tensor (N, K) of terms m(x'+eta_i) - |m(x'+eta_i) - m(x')| (relaxed) or
        m(x'+eta_i) - gamma^ ||eta_i|| (Lipschitz).

    Raises:
        ParameterError: sigma <= 0, k < 2, malformed x.
    """
    _check(x, sigma, k)
    form = StabilityForm.parse(form)
    eta = noise.expand(len(x), *noise.shape[1:]) if noise is not None else draw_noise(
        x, sigma=sigma, k=k, generator=generator, common=common)
    m = _probs(prob_fn, x, eta, batch_size)
    m0 = prob_fn(x).reshape(-1, 1)
    if form is StabilityForm.RELAXED:
        return m - (m - m0).abs()
    norms = eta.flatten(2).norm(dim=2)
    gamma = lipschitz_from_samples(x, eta, m, m0)
    return m - gamma.unsqueeze(1) * norms


def lipschitz_from_samples(x: torch.Tensor, eta: torch.Tensor, m: torch.Tensor, m0: torch.Tensor) -> torch.Tensor:
    """gamma^ per sample: max over pairs of {x', x'+eta_i} of |m(a) - m(b)| / ||a - b||_2."""
    n = len(x)
    pts = torch.cat([torch.zeros_like(eta[:, :1]), eta], dim=1).flatten(2)  # offsets from x'
    vals = torch.cat([m0.reshape(n, 1), m], dim=1)
    dist = torch.cdist(pts, pts)
    diff = (vals.unsqueeze(2) - vals.unsqueeze(1)).abs()
    eye = torch.eye(dist.shape[1], dtype=torch.bool, device=dist.device)
    ratio = torch.where(eye | (dist == 0), torch.zeros_like(diff), diff / dist.clamp_min(1e-12))
    return ratio.flatten(1).max(dim=1).values


def stability(prob_fn: ProbFn, x: torch.Tensor, *, sigma: float, k: int, generator: torch.Generator,
              form: str | StabilityForm = StabilityForm.RELAXED, common: bool = True,
              batch_size: int = 1024) -> torch.Tensor:
    """Monte-Carlo Stability R^ of each counterfactual in ``x`` (one value per sample, shape (N,)).

    See :func:`stability_terms` for the arguments; differentiable in ``x`` (T-Rex ascends it).
    """
    return stability_terms(prob_fn, x, sigma=sigma, k=k, generator=generator, form=form, common=common,
                           batch_size=batch_size).mean(dim=1)


def stability_with_se(prob_fn: ProbFn, x: torch.Tensor, *, sigma: float, k: int, generator: torch.Generator,
                      form: str | StabilityForm = StabilityForm.RELAXED, common: bool = True,
                      batch_size: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """(R^, its Monte-Carlo standard error sd(terms)/sqrt(K)), each of shape (N,), without gradients."""
    with torch.no_grad():
        t = stability_terms(prob_fn, x, sigma=sigma, k=k, generator=generator, form=form, common=common,
                            batch_size=batch_size)
    return t.mean(dim=1), t.std(dim=1, unbiased=True) / math.sqrt(k)


class TargetProb:
    """prob_fn with a per-sample target class: softmax(logits_fn(z))[target].

    Inside :func:`stability` the K noisy copies of sample n are told their owner n, so
    each is scored against its own target; called directly, row i uses ``target[i]``.
    """

    def __init__(self, logits_fn: LogitsFn, target: torch.Tensor) -> None:
        self.logits_fn = logits_fn
        self.target = target.long()

    def __call__(self, z: torch.Tensor, owners: torch.Tensor | None = None) -> torch.Tensor:
        p = F.softmax(self.logits_fn(z), dim=1)
        t = self.target.to(p.device)
        t = t[owners.to(p.device)] if owners is not None else t
        return p.gather(1, t.view(-1, 1)).squeeze(1)


@dataclass(frozen=True)
class Counterfactuals:
    """Minimal-L2 targeted counterfactuals: images, validity, L2 cost and the target class."""

    x: torch.Tensor
    valid: torch.Tensor
    cost: torch.Tensor
    target: torch.Tensor
    forward: int
    backward: int


def runner_up(logits: torch.Tensor) -> torch.Tensor:
    """The second most likely class of each row."""
    return logits.topk(2, dim=1).indices[:, 1]


def closest_counterfactual(logits_fn: LogitsFn, x: torch.Tensor, target: torch.Tensor, *, steps: int = 20,
                           init_radius: float = 0.5, max_radius: float = 16.0, search_steps: int = 6,
                           batch_size: int = 256) -> Counterfactuals:
    """Small targeted L2 counterfactual of each image: argmax logits_fn(x') == target, ||x' - x||_2 small.

    Algorithm [robaudit choice]: targeted L2 PGD from x (step 2.5 r / steps, clipped to
    [0, 1]) in a ball of radius r; r doubles from ``init_radius`` until a valid CF is found
    (up to ``max_radius``), then ``search_steps`` bisections shrink it. Deterministic.

    Returns:
        :class:`Counterfactuals`; images with no valid CF keep x (valid False, cost NaN).

    Raises:
        ParameterError: bad radii/steps or a target of the wrong shape.
    """
    if steps < 1 or search_steps < 0 or not 0 < init_radius <= max_radius:
        raise ParameterError("need steps >= 1, search_steps >= 0 and 0 < init_radius <= max_radius")
    target = target.to(x.device).long()
    if target.shape != x.shape[:1]:
        raise ParameterError(f"target must have shape ({len(x)},), got {tuple(target.shape)}")
    x = x.detach()
    n = len(x)
    best = x.clone()
    best_cost = torch.full((n,), math.inf, device=x.device)
    counts = [0, 0]

    def attack(radius: torch.Tensor) -> torch.Tensor:
        """PGD in balls of per-sample ``radius``; updates best; returns found-mask."""
        found = torch.zeros(n, dtype=torch.bool, device=x.device)
        z = x.clone()
        alpha = (2.5 * radius / steps).view(-1, *[1] * (x.dim() - 1))
        for _ in range(steps + 1):
            z.requires_grad_(True)
            logits = torch.cat([logits_fn(z[i : i + batch_size]) for i in range(0, n, batch_size)])
            counts[0] += n
            ok = logits.argmax(1) == target
            cost = (z.detach() - x).flatten(1).norm(dim=1)
            better = ok & (cost < best_cost)
            best[better] = z.detach()[better]
            best_cost[better] = cost[better]
            found |= ok
            loss = F.cross_entropy(logits, target, reduction="sum")
            (g,) = torch.autograd.grad(loss, z)
            counts[1] += n
            g = g / g.flatten(1).norm(dim=1).clamp_min(1e-12).view_as(alpha)
            z = z.detach() - alpha * g
            d = z - x
            scale = (radius / d.flatten(1).norm(dim=1).clamp_min(1e-12)).clamp(max=1.0)
            z = (x + d * scale.view_as(alpha)).clamp(0.0, 1.0)
        return found

    hi = torch.full((n,), float(init_radius), device=x.device)
    found = attack(hi)
    while (~found).any() and hi.max() < max_radius:
        hi = torch.where(found, hi, (hi * 2).clamp(max=max_radius))
        found |= attack(hi)
    lo = torch.zeros_like(hi)
    hi = torch.minimum(hi, best_cost.where(found, hi))
    for _ in range(search_steps):
        mid = (lo + hi) / 2
        ok = attack(mid.where(found, hi)) & found
        hi = torch.where(ok, torch.minimum(mid, best_cost), hi)
        lo = torch.where(ok | ~found, lo, mid)
    valid = torch.isfinite(best_cost)
    with torch.no_grad():
        final = torch.cat([logits_fn(best[i : i + batch_size]) for i in range(0, n, batch_size)]).argmax(1)
    counts[0] += n
    valid &= final == target
    cost = (best - x).flatten(1).norm(dim=1).where(valid, torch.full_like(best_cost, math.nan))
    return Counterfactuals(best.detach(), valid, cost, target, counts[0], counts[1])
