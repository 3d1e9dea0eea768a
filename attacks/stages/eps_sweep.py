"""Stage ``eps_sweep``: adversarial error E(eps) for FGSM and PGD and its power-law fit."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from robaudit.attacks.base import check_eps, check_positive_int
from robaudit.attacks.fgsm import FGSM
from robaudit.attacks.pgd import PGD
from robaudit.attacks.powerlaw import bootstrap_beta, fit_power_law

from robaudit import figures
from robaudit.data import Batch, Dataset
from robaudit.errors import ParameterError
from robaudit.model import Capability, ModelAdapter
from robaudit.stage import Skip, Stage, StageKind, StageOutput, UnitOutput
from robaudit.stats import rate_metrics

SWEEP_ATTACKS = ("fgsm", "pgd")
GRID_255 = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)


def eps_key(eps: float) -> str:
    """Metric key of a budget in /255 units: 8/255 -> ``e8``, 0.25/255 -> ``e0p25``."""
    return "e" + f"{eps * 255:.4g}".replace(".", "p")


@dataclass(frozen=True)
class EpsSweepParams:
    eps: tuple[float, ...] = tuple(e / 255 for e in GRID_255)
    attacks: tuple[str, ...] = SWEEP_ATTACKS
    pgd_steps: int = 10
    pgd_restarts: int = 1
    bootstrap: int = 200
    bootstrap_seed: int = 0
    max_error: float = 0.5
    min_errors: int = 5

    def __post_init__(self) -> None:
        grid = tuple(sorted({check_eps(e) for e in self.eps}))
        if not grid:
            raise ParameterError("eps is empty; give a grid such as [1/255, 2/255, 4/255, 8/255]")
        if grid[-1] > 1.0:
            raise ParameterError(f"eps {grid[-1]} > 1: give budgets in pixel units (8/255 = 0.0314), not /255")
        object.__setattr__(self, "eps", grid)
        names = (self.attacks,) if isinstance(self.attacks, str) else tuple(self.attacks)
        bad = [a for a in names if a not in SWEEP_ATTACKS]
        if bad or not names:
            raise ParameterError(f"eps_sweep attacks must be a non-empty subset of {SWEEP_ATTACKS}, got {names}")
        object.__setattr__(self, "attacks", tuple(dict.fromkeys(names)))
        check_positive_int("pgd_steps", self.pgd_steps)
        check_positive_int("pgd_restarts", self.pgd_restarts)
        if int(self.bootstrap) < 0 or int(self.min_errors) < 1 or not 0 < self.max_error <= 1:
            raise ParameterError("need bootstrap >= 0, min_errors >= 1 and 0 < max_error <= 1")


class EpsSweep(Stage):
    """Adversarial error vs L-inf budget and the small-eps power law ``E = A eps^beta``.

    Threat model: L-inf ball of each grid radius in pixel space, white box.

    Method (METHODS §5, Cubuk et al.): for each attack and eps, E(eps) = #(clean-correct and
    adversarially wrong) / #clean-correct (Clopper-Pearson CI). FGSM is one signed step;
    PGD uses a random start, ``pgd_steps`` steps of ``2.5 eps / steps``. Each (attack, eps)
    is an independent run on all clean-correct samples (no reuse across eps, so FGSM
    non-monotonicity, a gradient-masking symptom, stays visible). The fit uses the window
    ``0 < E <= max_error`` with >= ``min_errors`` errors (WLS in log-log, delta-method
    weights); beta's 95% CI is a bootstrap over images; fewer than 3 points: "beta undefined".
    Also reported: the clean top-1 minus top-2 logit gap (median, density near 0, histogram).
    """

    name = "eps_sweep"
    kind = StageKind.ATTACK
    requires = frozenset({Capability.GRADIENTS})
    Params = EpsSweepParams
    unit_size = 64
    profiles = {
        "quick": {"eps": tuple(e / 255 for e in (1.0, 2.0, 4.0, 8.0, 16.0)), "pgd_steps": 5, "bootstrap": 100},
        "standard": {"eps": tuple(e / 255 for e in GRID_255), "pgd_steps": 10, "bootstrap": 200},
        "full": {"eps": tuple(e / 255 for e in (*GRID_255, 32.0)), "pgd_steps": 20, "bootstrap": 1000},
    }
    description = "Adversarial error E(eps) for FGSM and PGD on a log grid, with a power-law fit."
    metric_docs = {
        "adv_error.<attack>.e<eps*255>": "clean-correct samples misclassified under <attack> at eps / clean-correct",
        "powerlaw.<attack>.beta": "fitted exponent of E = A eps^beta (absent when undefined), ci_low/ci_high bootstrap",
        "powerlaw.<attack>.points": "eps points inside the fit window",
        "logit_gap.median": "median clean top-1 minus top-2 logit gap (clean-correct samples)",
    }

    def check(self, model: ModelAdapter, data: Dataset) -> None:
        if not model.has(Capability.GRADIENTS):
            raise Skip(f"model {model.name!r} has no gradients; FGSM/PGD sweeps need a PyTorch model")

    def run_unit(self, model: ModelAdapter, batch: Batch, *, generator: torch.Generator) -> UnitOutput:
        p = self.params
        x, y = batch.x.float(), batch.y.long()
        with torch.no_grad():
            z = model.logits(x)
        correct = z.argmax(1) == y
        top2 = z.topk(2, dim=1).values
        gap = (top2[:, 0] - top2[:, 1]).cpu().numpy()
        counters = {"forward": float(len(x)), "backward": 0.0}
        seeds = torch.randint(0, 2**62, (len(p.attacks), len(p.eps)), generator=generator,
                              device=generator.device).tolist()
        idx = correct.nonzero()[:, 0]
        idx_np, correct_np = idx.cpu().numpy(), correct.cpu().numpy()
        arrays: dict[str, np.ndarray] = {"clean_correct": correct_np, "logit_gap": gap}
        for a, name in enumerate(p.attacks):
            wrong = np.zeros((len(x), len(p.eps)), dtype=bool)
            for j, eps in enumerate(p.eps):
                if len(idx) == 0:
                    break
                attack = FGSM("linf", eps) if name == "fgsm" else PGD(
                    "linf", eps, steps=p.pgd_steps, restarts=p.pgd_restarts)
                g = torch.Generator(device=generator.device).manual_seed(int(seeds[a][j]))
                xa = attack.perturb(model, x[idx], y[idx], generator=g)
                with torch.no_grad():
                    wrong[idx_np, j] = (model.logits(xa).argmax(1) != y[idx]).cpu().numpy()
                counters["forward"] += attack.last_counts["forward"] + len(idx)
                counters["backward"] += attack.last_counts["backward"]
            arrays[f"wrong.{name}"] = wrong
            first = np.where(wrong.any(1), np.asarray(p.eps)[wrong.argmax(1)], np.inf)
            arrays[f"first_error_eps.{name}"] = np.where(correct_np, first, np.nan)
        return UnitOutput(arrays=arrays, counters=counters)

    def summarize(self, arrays: dict[str, np.ndarray], data: Dataset, counters: dict[str, float]) -> StageOutput:
        p = self.params
        correct = arrays["clean_correct"].astype(bool)
        n_c = int(correct.sum())
        eps = np.asarray(p.eps)
        metrics: dict[str, float] = {"clean_correct_n": float(n_c)}
        metrics.update(rate_metrics("clean_accuracy", n_c, len(correct)))
        lines, notes, warnings, rows = [], [], [], []
        errs: dict[str, np.ndarray] = {}
        for name in p.attacks:
            wrong = arrays[f"wrong.{name}"].astype(bool)[correct]
            k = wrong.sum(0)
            errs[name] = k / max(n_c, 1)
            lo, hi = [], []
            for j, e in enumerate(eps):
                r = rate_metrics(f"adv_error.{name}.{eps_key(e)}", int(k[j]), n_c)
                metrics.update(r)
                lo.append(r[f"adv_error.{name}.{eps_key(e)}.ci_low"])
                hi.append(r[f"adv_error.{name}.{eps_key(e)}.ci_high"])
            pos = eps > 0
            lines.append(figures.series(name, (eps[pos] * 255).tolist(), _log_safe(errs[name][pos]),
                                        low=_log_safe(np.asarray(lo)[pos]), high=_log_safe(np.asarray(hi)[pos])))
            fit = fit_power_law(eps, k, n_c, max_error=p.max_error, min_errors=p.min_errors)
            key = f"powerlaw.{name}"
            metrics[f"{key}.points"] = float(fit.points)
            if fit.defined:
                b_lo, b_hi, _ = bootstrap_beta(eps, wrong, resamples=p.bootstrap, seed=p.bootstrap_seed,
                                               max_error=p.max_error, min_errors=p.min_errors)
                metrics.update({f"{key}.beta": fit.beta, f"{key}.beta.ci_low": b_lo, f"{key}.beta.ci_high": b_hi,
                                f"{key}.A": fit.a, f"{key}.r2": fit.r2})
                xs = eps[np.asarray(fit.used)]
                lines.append(figures.series(f"{name} fit (beta={fit.beta:.2f})", xs * 255, fit.a * xs ** fit.beta))
            else:
                notes.append(f"beta undefined for {name}: {fit.points} eps point(s) in the window "
                             f"0 < E <= {p.max_error} with >= {p.min_errors} errors (need 3)")
            rows.append([name, fit.beta, metrics.get(f"{key}.beta.ci_low"), metrics.get(f"{key}.beta.ci_high"),
                         fit.a, fit.r2, fit.points])
            if name == "fgsm" and np.any(np.diff(errs[name]) < -2.0 / max(n_c, 1)):
                warnings.append("FGSM error decreases with eps: a gradient-masking or label-leaking symptom")
        if "fgsm" in errs and "pgd" in errs and np.any(errs["fgsm"] > errs["pgd"] + 0.05):
            warnings.append("FGSM beats PGD by > 5 points at some eps: PGD may be too weak (more steps?)")
        gaps = arrays["logit_gap"][correct]
        figs = [figures.line_chart("Adversarial error vs eps (L-inf)", "eps (x 1/255)", "adversarial error",
                                   lines, x_log=True, y_log=True,
                                   caption=f"clean-correct n = {n_c}; PGD {p.pgd_steps} steps, step 2.5 eps/steps")]
        figs.append(figures.table("Power-law fits", ["attack", "beta", "ci_low", "ci_high", "A", "R^2", "points"],
                                  rows, caption="log E = log A + beta log eps (eps in pixel units)"))
        if len(gaps):
            med = float(np.median(gaps))
            h = 0.1 * med if med > 0 else 1e-3
            metrics["logit_gap.median"] = med
            metrics["logit_gap.density_near_0"] = float(np.mean(gaps < h) / h)
            counts, edges = np.histogram(gaps, bins=20)
            figs.append(figures.bar_chart("Clean logit gap (top-1 minus top-2)", [f"{v:.2g}" for v in edges[:-1]],
                                          counts.astype(float).tolist(), y_label="samples",
                                          caption="density_near_0 = fraction with gap < 0.1 median / (0.1 median)"))
        budget: dict[str, Any] = {"norm": "linf", "eps": list(eps), "eps_255": [float(e * 255) for e in eps],
                                  "attacks": list(p.attacks), "pgd_steps": p.pgd_steps,
                                  "pgd_alpha": "2.5*eps/steps", "pgd_restarts": p.pgd_restarts,
                                  "bootstrap": p.bootstrap, **{k: float(v) for k, v in counters.items()}}
        return StageOutput(metrics=metrics, figures=figs, notes=notes, warnings=warnings, budget=budget)


def _log_safe(v: np.ndarray) -> list[float]:
    """Zeros cannot be drawn on a log axis: map them to nan (rendered as gaps)."""
    out = np.asarray(v, dtype=np.float64).copy()
    out[out <= 0] = np.nan
    return [float(e) for e in out]
