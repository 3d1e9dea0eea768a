"""Stage ``smoothing``: certified accuracy of the Gaussian-smoothed classifier vs L2 radius.

Guarantee: every certified radius holds for the smoothed classifier ``g`` (not the base model)
with probability ``>= 1 - alpha`` per image over the stage's own noise (Cohen et al. 2019);
radii are L2 in pixel units at the model's input resolution. Certified accuracy at ``r`` is the
fraction of images with ``prediction == label`` and certified radius ``>= r`` (abstentions count
as wrong), as in ``locuslab/smoothing`` ``analyze.py::ApproximateAccuracy``.

Paper: Cohen, Rosenfeld & Kolter, ICML 2019, https://arxiv.org/abs/1902.02918. The optional
sequential mode (``sequential = true``) replaces fixed-n CERTIFY by anytime-valid tests at
``sequential_radii`` (see :mod:`robaudit.certify.sequential`) and reports the samples saved.

Metric names (radius ``r`` written with at least two decimals, ``.`` -> ``_``: 0 -> ``r0_00``,
0.25 -> ``r0_25``, 1 -> ``r1_00``, 0.125 -> ``r0_125``):
``certified_accuracy.<r>`` (+ ``.ci_low``/``.ci_high``/``.n``), ``abstain_rate``, ``acr``,
``smoothed_clean_accuracy``, ``predict_abstain_rate``, ``max_certifiable_radius``,
``samples.total``, ``samples.per_image``; sequential mode adds ``sequential_abstain_rate.<r>``
(budget spent before a decision),
``samples.fixed_n_per_image`` and ``samples.savings_ratio`` and has no ``acr``/``abstain_rate``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import norm

from robaudit import figures
from robaudit.data import Batch, Dataset
from robaudit.errors import ParameterError
from robaudit.model import ModelAdapter
from robaudit.seeding import make_generator
from robaudit.stage import Stage, StageKind, StageOutput, UnitOutput
from robaudit.stats import clopper_pearson, rate_metrics

from .clopper_pearson import max_certifiable_radius
from .sequential import Decision, certify_sequential
from .smoothing import ABSTAIN, GaussianSampler, certify_detailed, predict_from_counts


def radius_key(r: float) -> str:
    """Stable metric suffix for radius ``r``: ``r0_25``; more decimals only when needed."""
    text = f"{r:.2f}"
    if abs(float(text) - r) > 1e-9:
        text = f"{r:.6f}".rstrip("0")
    return "r" + text.replace(".", "_")


def certified_count(prediction: np.ndarray, label: np.ndarray, radius: np.ndarray, r: float) -> int:
    """Images with ``prediction == label`` and ``radius >= r`` (ABSTAIN never equals a label)."""
    return int(((prediction == label) & (prediction != ABSTAIN) & (radius >= r)).sum())


def average_certified_radius(prediction: np.ndarray, label: np.ndarray, radius: np.ndarray) -> float:
    """Mean over images of the radius when correct, 0 otherwise."""
    return float(np.where((prediction == label) & (prediction != ABSTAIN), radius, 0.0).mean())


@dataclass(frozen=True)
class CertifiedAccuracyParams:
    """Parameters of the ``smoothing`` stage (one sigma per stage instance).

    ``radii``: table radii (default ``0 : radius_step : max_certifiable_radius``).
    ``n_predict``: PREDICT draws; ``None`` reuses CERTIFY's ``n`` estimation draws (fixed n, so
    PREDICT stays valid; no extra cost), ``0`` skips PREDICT, ``k`` draws ``k`` fresh samples.
    ``sequential``: decide "radius >= r" for ``sequential_radii`` with anytime-valid tests and a
    budget of ``n`` estimation draws per image instead of running fixed-n CERTIFY.
    """

    sigma: float = 0.25
    n0: int = 100
    n: int = 10_000
    alpha: float = 0.001
    batch_size: int = 1000
    radii: tuple[float, ...] | None = None
    radius_step: float = 0.25
    n_predict: int | None = None
    sequential: bool = False
    sequential_radii: tuple[float, ...] = (0.25, 0.5)

    def __post_init__(self) -> None:
        if not self.sigma > 0:
            raise ParameterError(f"sigma must be > 0 (pixel units, e.g. 0.25), got {self.sigma}")
        if self.n0 < 1 or self.n < 1:
            raise ParameterError(f"n0 and n must be >= 1 (e.g. n0 = 100, n = 10000), got {self.n0}, {self.n}")
        if not 0.0 < self.alpha < 1.0:
            raise ParameterError(f"alpha must lie in (0, 1) (e.g. 0.001), got {self.alpha}")
        if self.batch_size < 1:
            raise ParameterError(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.radius_step > 0:
            raise ParameterError(f"radius_step must be > 0, got {self.radius_step}")
        if self.n_predict is not None and self.n_predict < 0:
            raise ParameterError(f"n_predict must be >= 0 or omitted, got {self.n_predict}")
        for name in ("radii", "sequential_radii"):
            value = getattr(self, name)
            if value is None:
                continue
            value = tuple(sorted(float(r) for r in value))
            if not value or value[0] < 0:
                raise ParameterError(f"{name} must be a non-empty list of radii >= 0, got {list(value)}")
            object.__setattr__(self, name, value)


class CertifiedAccuracy(Stage):
    """Randomized-smoothing certification (CERTIFY + PREDICT) and certified accuracy vs radius."""

    name = "smoothing"
    kind = StageKind.CERTIFY
    Params = CertifiedAccuracyParams
    unit_size = 16
    profiles = {
        "quick": {"n0": 32, "n": 500, "batch_size": 500},
        "standard": {"n0": 100, "n": 10_000, "batch_size": 1000},
        "full": {"n0": 100, "n": 100_000, "batch_size": 1000},
    }
    description = "Certified L2 accuracy of the Gaussian-smoothed model (Cohen et al. 2019)."
    metric_docs = {
        "certified_accuracy.<r>": "fraction with smoothed prediction == label and certified radius >= r",
        "abstain_rate": "fraction of CERTIFY abstentions",
        "acr": "average certified radius (radius if correct, else 0)",
        "smoothed_clean_accuracy": "PREDICT accuracy (abstain = wrong)",
        "predict_abstain_rate": "fraction of PREDICT abstentions",
        "max_certifiable_radius": "sigma * Phi^-1(alpha^(1/n)): no radius can exceed it",
        "sequential_abstain_rate.<r>": "sequential mode: budget spent before a decision at r (abstain)",
        "samples.total": "noise samples (forward passes) spent",
        "samples.savings_ratio": "sequential mode: (n0 + n) / mean samples per image",
    }

    def run_unit(self, model: ModelAdapter, batch: Batch, *, generator: torch.Generator) -> UnitOutput:
        p = self.params
        device = torch.device(getattr(model, "device", None) or "cpu")
        out: dict[str, list[float]] = {"label": [], "prediction": [], "samples": [], "predict": []}
        seq_radii = p.sequential_radii if p.sequential else ()
        out.update({"radius": [], "p_lower": []} if not p.sequential else {})
        out.update({f"decision_{radius_key(r)}": [] for r in seq_radii})
        for x, y in zip(batch.x, batch.y.tolist()):
            seeds = torch.randint(0, 2**62, (2,), generator=generator).tolist()
            gen = make_generator(seeds[0], device)
            counts = None
            if p.sequential:
                cert = certify_sequential(model, x, sigma=p.sigma, radii=seq_radii, n0=p.n0, n_max=p.n,
                                          alpha=p.alpha, batch_size=p.batch_size, generator=gen)
                out["prediction"].append(cert.prediction)
                samples = cert.samples
                for r, d in zip(seq_radii, cert.decisions):
                    out[f"decision_{radius_key(r)}"].append(int(d))
            else:
                full = certify_detailed(model, x, sigma=p.sigma, n0=p.n0, n=p.n, alpha=p.alpha,
                                        batch_size=p.batch_size, generator=gen)
                out["prediction"].append(full.prediction)
                out["radius"].append(full.radius)
                out["p_lower"].append(full.p_lower)
                samples, counts = full.samples, full.counts
            if p.n_predict:
                sampler = GaussianSampler(model, x, sigma=p.sigma, batch_size=p.batch_size,
                                          generator=make_generator(seeds[1], device))
                counts = sampler.counts(p.n_predict)
                samples += p.n_predict
            out["predict"].append(predict_from_counts(counts, p.alpha) if counts is not None else ABSTAIN)
            out["samples"].append(samples)
            out["label"].append(int(y))
        arrays = {k: np.asarray(v, dtype=np.float64 if k in ("radius", "p_lower") else np.int64)
                  for k, v in out.items()}
        return UnitOutput(arrays=arrays, counters={"samples": float(arrays["samples"].sum())})

    def summarize(self, arrays: dict[str, np.ndarray], data: Dataset, counters: dict[str, float]) -> StageOutput:
        p = self.params
        label, pred, samples = arrays["label"], arrays["prediction"], arrays["samples"]
        n_img = len(label)
        r_max = max_certifiable_radius(p.sigma, p.n, p.alpha)
        metrics: dict[str, float] = {}  # certified accuracies go first (the first radius > 0 is the headline)
        extra: dict[str, float] = {"max_certifiable_radius": r_max}
        notes = [f"sigma = {p.sigma}, alpha = {p.alpha} per image; radii are L2 in pixel units at the "
                 f"model's input resolution; max certifiable radius with n = {p.n}: {r_max:.4f}."]
        warnings: list[str] = []
        if p.sequential:
            radii = list(p.sequential_radii)
            certified = {r: (arrays[f"decision_{radius_key(r)}"] == Decision.CERTIFIED) & (pred == label)
                         for r in radii}
            counts = [int(certified[r].sum()) for r in radii]
            for r in radii:
                undecided = int((arrays[f"decision_{radius_key(r)}"] == Decision.UNDECIDED).sum())
                extra.update(rate_metrics(f"sequential_abstain_rate.{radius_key(r)}", undecided, n_img))
            fixed = p.n0 + p.n + (p.n_predict or 0)
            extra["samples.fixed_n_per_image"] = float(fixed)
            extra["samples.savings_ratio"] = float(fixed / samples.mean()) if n_img else float("nan")
            notes.append("Sequential mode: anytime-valid conjugate-mixture tests per radius (error <= alpha "
                         f"per image and radius); budget n = {p.n} estimation draws; undecided = not certified.")
        else:
            radii = list(p.radii) if p.radii is not None else list(np.arange(0.0, r_max + 1e-12, p.radius_step))
            radius = arrays["radius"]
            counts = [certified_count(pred, label, radius, r) for r in radii]
            extra.update(rate_metrics("abstain_rate", int((pred == ABSTAIN).sum()), n_img))
            extra["acr"] = average_certified_radius(pred, label, radius) if n_img else float("nan")
        too_far = [r for r in radii if r > r_max]
        if too_far:
            warnings.append(f"radii {too_far} exceed the max certifiable radius {r_max:.4f} for n = {p.n}: "
                            "certified accuracy there is 0 by construction; raise n (or sigma)")
        order = sorted(range(len(radii)), key=lambda i: (radii[i] <= 0, i))
        for i in order:
            metrics.update(rate_metrics(f"certified_accuracy.{radius_key(radii[i])}", counts[i], n_img))
        metrics.update(extra)
        if p.n_predict != 0 and not (p.sequential and p.n_predict is None):
            predicted = arrays["predict"]
            metrics.update(rate_metrics("smoothed_clean_accuracy", int((predicted == label).sum()), n_img))
            metrics.update(rate_metrics("predict_abstain_rate", int((predicted == ABSTAIN).sum()), n_img))
            if p.n_predict is None:
                notes.append(f"PREDICT used CERTIFY's n = {p.n} estimation draws (a fixed sample size).")
        metrics["samples.total"] = float(samples.sum())
        metrics["samples.per_image"] = float(samples.mean()) if n_img else float("nan")
        figs = self._figures(arrays, radii, counts, n_img, r_max)
        budget = {"sigma": p.sigma, "n0": p.n0, "n": p.n, "alpha": p.alpha, "batch_size": p.batch_size,
                  "n_predict": p.n_predict, "sequential": p.sequential, "images": n_img,
                  "samples_total": int(samples.sum()), "max_certifiable_radius": r_max}
        return StageOutput(metrics=metrics, figures=figs, notes=notes, warnings=warnings, budget=budget)

    def _figures(self, arrays: dict[str, np.ndarray], radii: list[float], counts: list[int], n_img: int,
                 r_max: float) -> list[dict]:
        p = self.params
        if p.sequential or n_img == 0:
            xs, ks = radii, counts
        else:
            xs = list(np.linspace(0.0, max(r_max, max(radii, default=0.0)) * 1.05, 61))
            ks = [certified_count(arrays["prediction"], arrays["label"], arrays["radius"], r) for r in xs]
        ci = [clopper_pearson(k, n_img) for k in ks]
        acc = [k / n_img if n_img else float("nan") for k in ks]
        chart = figures.line_chart(
            f"Certified accuracy vs L2 radius (sigma = {p.sigma})", "L2 radius (pixel units)", "certified accuracy",
            [figures.series("certified accuracy", xs, acc, low=[c[0] for c in ci], high=[c[1] for c in ci]),
             figures.series(f"max certifiable radius {r_max:.3f}", [r_max, r_max], [0.0, 1.0])],
            y_range=(0.0, 1.0),
            caption=f"{n_img} images, n0 = {p.n0}, n = {p.n}, alpha = {p.alpha}; 95% Clopper-Pearson band. "
                    f"No radius beyond sigma * Phi^-1(alpha^(1/n)) = {r_max:.3f} is certifiable with this n "
                    f"(Phi^-1 at {norm.cdf(r_max / p.sigma):.6f}).",
        )
        rows = []
        for r, k in zip(radii, counts):
            lo, hi = clopper_pearson(k, n_img)
            rows.append([float(r), k / n_img if n_img else float("nan"), lo, hi, k, n_img])
        table = figures.table("Certified accuracy at chosen radii",
                              ["radius", "certified accuracy", "ci_low", "ci_high", "certified", "n"], rows,
                              caption="abstentions and misclassifications count as not certified")
        return [chart, table]
