"""Randomized smoothing: Monte-Carlo PREDICT and CERTIFY (Cohen et al. 2019).

Guarantee: for the smoothed classifier ``g(x) = argmax_c P(f(x + eta) = c)``,
``eta ~ N(0, sigma^2 I)`` in pixel space, :func:`certify` returns ``(c, R)`` such that, with
probability at least ``1 - alpha`` over its own noise draws, ``g(x + delta) = c`` for every
``||delta||_2 < R`` (or it returns ``(ABSTAIN, 0.0)``). :func:`predict` returns a class other
than ``g(x)`` with probability at most ``alpha``. Nothing is said about ``f`` itself, and radii
are in pixel units at the model's input resolution (not comparable across resolutions).

Paper: Cohen, Rosenfeld & Kolter, "Certified Adversarial Robustness via Randomized Smoothing",
ICML 2019, https://arxiv.org/abs/1902.02918 (reference code ``locuslab/smoothing``,
``code/core.py``). Differences from the reference: an explicit ``torch.Generator`` (never the
global RNG), ``scipy.stats.binomtest`` (``binom_test`` is gone), an optional denoiser applied to
the noisy input (denoised smoothing, Salman et al. 2020; rRCM), and models given as a robaudit
``ModelAdapter``, an ``nn.Module`` taking [0, 1] inputs, or any callable returning logits.

The noisy input ``x + eta`` is never clipped to [0, 1] (clipping breaks the Gaussian
assumption); the n0 selection draws and the n estimation draws are fresh, independent noise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Union

import numpy as np
import torch
from scipy.stats import binomtest, norm
from torch import nn

from robaudit.model import ModelAdapter

from .clopper_pearson import lower_bound

ABSTAIN = -1

Classifier = Union[ModelAdapter, nn.Module, Callable[[torch.Tensor], torch.Tensor]]  # noqa: UP007 (runtime alias, py3.10)
Denoiser = Callable[[torch.Tensor], torch.Tensor]


class GaussianSampler:
    """Counts ``argmax f(denoise(x + eta))`` over fresh Gaussian draws, in batches.

    Every call of :meth:`counts` draws new noise from ``generator`` (device: the generator's
    device; pass a CUDA generator when the model is on a GPU). Per batch: one ``randn`` into a
    preallocated buffer, one fused ``x + sigma * eta``, one forward pass, one ``scatter_add_`` of the
    argmax into a histogram on the model's device (no host round-trip per batch; the histogram is
    copied to the host once per call). The last batch of a call is partial (exactly ``num``
    samples are drawn).

    Args:
        model: a ModelAdapter (``logits`` is used), an eval-mode ``nn.Module`` taking [0, 1]
            inputs, or a callable returning logits ``(N, K)``.
        x: one image ``(C, H, W)`` in [0, 1].
        sigma: noise standard deviation in pixel units (> 0).
        batch_size: samples per forward pass.
        generator: the only source of randomness.
        denoiser: optional callable applied to the noisy batch before the classifier.

    Raises:
        ValueError: bad shapes, ``sigma <= 0``, ``batch_size < 1`` or an nn.Module in train mode.
    """

    def __init__(self, model: Classifier, x: torch.Tensor, *, sigma: float, batch_size: int,
                 generator: torch.Generator, denoiser: Denoiser | None = None) -> None:
        if x.ndim != 3:
            raise ValueError(f"x must be one image (C, H, W), got shape {tuple(x.shape)}; pass x[i], not a batch")
        if not sigma > 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self._forward, self._model_device = _resolve(model)
        self._device = generator.device
        self._x = x.detach().to(self._device, torch.float32).unsqueeze(0)
        self._sigma = float(sigma)
        self._generator = generator
        self._denoiser = denoiser
        self._buffer = torch.empty((batch_size, *x.shape), dtype=torch.float32, device=self._device)
        self.num_classes: int | None = _num_classes(model)
        self.samples_drawn = 0  #: total noise samples drawn by this sampler

    @property
    def batch_size(self) -> int:
        return int(self._buffer.shape[0])

    def counts(self, num: int) -> np.ndarray:
        """Class histogram (int64, length K) of ``num`` fresh noisy samples."""
        if num < 0:
            raise ValueError(f"num must be >= 0, got {num}")
        total: torch.Tensor | None = None
        remaining = num
        with torch.no_grad():
            while remaining > 0:
                m = min(remaining, self.batch_size)
                buf = self._buffer[:m]
                torch.randn(buf.shape, generator=self._generator, out=buf)
                torch.add(self._x, buf, alpha=self._sigma, out=buf)
                batch = buf if self._model_device == self._device else buf.to(self._model_device)
                if self._denoiser is not None:
                    batch = self._denoiser(batch)
                logits = self._forward(batch)
                if total is None:  # shapes are host metadata: no device sync here
                    self.num_classes = max(self.num_classes or 0, int(logits.shape[1]))
                    total = torch.zeros(self.num_classes, dtype=torch.int64, device=logits.device)
                pred = logits.argmax(1)
                total.scatter_add_(0, pred, torch.ones_like(pred))  # bincount syncs on CUDA (min/max .item())
                remaining -= m
        self.samples_drawn += num
        if total is None:
            return np.zeros(self.num_classes or 0, dtype=np.int64)
        return total.cpu().numpy().astype(np.int64)


@dataclass(frozen=True)
class Certificate:
    """The full outcome of one CERTIFY call (``counts`` is the histogram of the n estimation draws)."""

    prediction: int
    radius: float
    p_lower: float
    n_a: int
    counts: np.ndarray
    samples: int  #: n0 + n

    def as_tuple(self) -> tuple[int, float]:
        return self.prediction, self.radius


def certify(model: Classifier, x: torch.Tensor, *, sigma: float, n0: int, n: int, alpha: float,
            batch_size: int, generator: torch.Generator,
            denoiser: Denoiser | None = None) -> tuple[int, float]:
    """CERTIFY: the smoothed prediction at ``x`` and a certified L2 radius, or ``(ABSTAIN, 0.0)``.

    Selects the top class from ``n0`` draws, estimates its probability from ``n`` fresh draws,
    takes the one-sided Clopper-Pearson lower bound ``pA`` at level ``alpha`` and returns
    ``sigma * Phi^-1(pA)`` (ABSTAIN when ``pA < 1/2``). The radius never exceeds
    ``sigma * Phi^-1(alpha^(1/n))``.

    Args:
        model: classifier (see :class:`GaussianSampler`).
        x: one image (C, H, W) in [0, 1].
        sigma: noise level in pixel units.
        n0: selection samples; n: estimation samples; alpha: failure probability.
        batch_size: samples per forward pass; generator: source of all noise.
        denoiser: optional callable applied to the noisy input (denoised smoothing).

    Returns:
        ``(class, radius)`` or ``(ABSTAIN, 0.0)``.

    Raises:
        ValueError: ``n0 < 1``, ``n < 1``, ``alpha`` outside (0, 1), or a sampler error.
    """
    return certify_detailed(model, x, sigma=sigma, n0=n0, n=n, alpha=alpha, batch_size=batch_size,
                            generator=generator, denoiser=denoiser).as_tuple()


def certify_detailed(model: Classifier, x: torch.Tensor, *, sigma: float, n0: int, n: int, alpha: float,
                     batch_size: int, generator: torch.Generator,
                     denoiser: Denoiser | None = None) -> Certificate:
    """:func:`certify`, also returning ``pA``, ``nA`` and the estimation histogram."""
    _check_budget(n0=n0, n=n, alpha=alpha)
    sampler = GaussianSampler(model, x, sigma=sigma, batch_size=batch_size, generator=generator,
                              denoiser=denoiser)
    c_hat = int(np.argmax(sampler.counts(n0)))
    counts = sampler.counts(n)
    n_a = int(counts[c_hat])
    p_lower = lower_bound(n_a, n, alpha)
    if p_lower < 0.5:
        return Certificate(ABSTAIN, 0.0, p_lower, n_a, counts, n0 + n)
    return Certificate(c_hat, float(sigma * norm.ppf(p_lower)), p_lower, n_a, counts, n0 + n)


def predict(model: Classifier, x: torch.Tensor, *, sigma: float, n: int, alpha: float,
            batch_size: int, generator: torch.Generator, denoiser: Denoiser | None = None) -> int:
    """PREDICT: the smoothed prediction at ``x`` or ABSTAIN.

    Counts ``n`` draws; with top counts ``nA >= nB``, abstains unless the two-sided binomial
    test of ``nA ~ Bin(nA + nB, 1/2)`` has p-value ``<= alpha``. The returned class differs from
    ``g(x)`` with probability at most ``alpha``.
    """
    _check_budget(n0=1, n=n, alpha=alpha)
    sampler = GaussianSampler(model, x, sigma=sigma, batch_size=batch_size, generator=generator,
                              denoiser=denoiser)
    return predict_from_counts(sampler.counts(n), alpha)


def predict_from_counts(counts: np.ndarray, alpha: float) -> int:
    """PREDICT's decision rule on a histogram of a FIXED number of iid noisy draws.

    Valid for any histogram of ``n`` iid draws fixed in advance (e.g. CERTIFY's estimation draws),
    never for a sample size chosen by looking at the data.
    """
    counts = np.asarray(counts)
    order = np.argsort(-counts, kind="stable")
    n_a = int(counts[order[0]])
    n_b = int(counts[order[1]]) if len(order) > 1 else 0
    if n_a + n_b == 0 or binomtest(n_a, n_a + n_b, 0.5).pvalue > alpha:
        return ABSTAIN
    return int(order[0])


def _check_budget(*, n0: int, n: int, alpha: float) -> None:
    if n0 < 1 or n < 1:
        raise ValueError(f"n0 and n must be >= 1, got n0={n0}, n={n}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")


def _resolve(model: Classifier) -> tuple[Callable[[torch.Tensor], torch.Tensor], torch.device]:
    """The logits function and the device its inputs must live on."""
    if isinstance(model, ModelAdapter):
        device = getattr(model, "device", None)
        return model.logits, torch.device(device) if device is not None else torch.device("cpu")
    if isinstance(model, nn.Module):
        training = [name or type(model).__name__ for name, m in model.named_modules() if m.training]
        if training:
            raise ValueError(
                f"the model has modules in training mode ({training[0]!r}); call model.eval() "
                "before smoothing (dropout/batch-norm would change the base classifier)"
            )
        param = next(iter(model.parameters()), None)
        return model, param.device if param is not None else torch.device("cpu")
    if callable(model):
        return model, torch.device("cpu")
    raise TypeError(f"model must be a ModelAdapter, an nn.Module or a callable, got {type(model).__name__}")


def _num_classes(model: Classifier) -> int | None:
    spec = getattr(model, "spec", None)
    return int(spec.num_classes) if spec is not None else None
