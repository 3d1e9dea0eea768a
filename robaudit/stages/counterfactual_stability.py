"""Stage ``counterfactual``: how robust are an image classifier's counterfactual explanations?

Threat model: explanation robustness, not an attack score. For clean-correct images, a
minimal-L2 targeted counterfactual x' (to the runner-up class, or a configured class) is
the "closest CF"; T-Rex:I moves it towards higher Stability (the "robust CF"). Both are
checked for validity under model change: user-supplied sibling checkpoints (naturally-
occurring change) or, without siblings, a weight-noise ensemble labelled as a proxy.

Paper: Hamman, Noorani, Mishra, Magazzeni, Dutta, "Robust Counterfactual Explanations for
Neural Networks With Probabilistic Guarantees", ICML 2023 (METHODS §6; the official code
cannot run as published, this is robaudit's torch re-implementation, METHODS §6.5).
Stability here is the relaxed form of the official code (or the Lipschitz form with
``form = "lipschitz"``), m = softmax probability of the CF class, sigma in pixel units, the
same noise draws (common random numbers) for closest and robust CFs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from robaudit import figures
from robaudit.analysis.counterfactual import (
    StabilityForm,
    TargetProb,
    closest_counterfactual,
    draw_noise,
    runner_up,
    stability_terms,
)
from robaudit.analysis.model_change import (
    PROXY_LABEL,
    check_siblings,
    load_siblings,
    still_valid,
    weight_noise_models,
)
from robaudit.analysis.trex import trex_search
from robaudit.data import Batch, Dataset
from robaudit.errors import ParameterError
from robaudit.model import Capability, ModelAdapter
from robaudit.stage import Skip, Stage, StageKind, StageOutput, UnitOutput
from robaudit.stats import rate_metrics


@dataclass(frozen=True)
class CounterfactualParams:
    """Images, CF target, Stability estimator, T-Rex search and model-change settings."""

    max_images: int = 32
    target: int | None = None
    sigma: float = 0.05
    k: int = 256
    tau: float = 0.75
    form: str = "relaxed"
    cf_steps: int = 20
    cf_search_steps: int = 6
    cf_init_radius: float = 0.5
    cf_max_radius: float = 16.0
    trex: bool = True
    trex_steps: int = 20
    trex_step_size: float = 0.05
    trex_radius: float = 1.0
    siblings: tuple[dict[str, Any], ...] = ()
    proxy_models: int = 8
    proxy_scale: float = 0.05
    figure_images: int = 4
    batch_size: int = 1024

    def __post_init__(self) -> None:
        if self.max_images < 1 or self.k < 2 or self.batch_size < 1:
            raise ParameterError("need max_images >= 1, k >= 2 (e.g. 256) and batch_size >= 1")
        if not self.sigma > 0 or not 0 < self.tau <= 1:
            raise ParameterError(f"need sigma > 0 (e.g. 0.05) and 0 < tau <= 1 (e.g. 0.75), got {self.sigma}, "
                                 f"{self.tau}")
        StabilityForm.parse(self.form)
        if self.cf_steps < 1 or self.cf_search_steps < 0 or not 0 < self.cf_init_radius <= self.cf_max_radius:
            raise ParameterError("need cf_steps >= 1, cf_search_steps >= 0, 0 < cf_init_radius <= cf_max_radius")
        if self.trex_steps < 0 or not self.trex_step_size > 0 or self.trex_radius < 0:
            raise ParameterError("need trex_steps >= 0, trex_step_size > 0 and trex_radius >= 0")
        if self.target is not None and self.target < 0:
            raise ParameterError(f"target must be a class index >= 0 (or unset for the runner-up), got {self.target}")
        check_siblings(self.siblings)
        if not self.siblings and (self.proxy_models < 1 or not self.proxy_scale > 0):
            raise ParameterError("without siblings, need proxy_models >= 1 and proxy_scale > 0 (e.g. 8 and 0.05)")
        if self.figure_images < 0:
            raise ParameterError("figure_images must be >= 0")


class CounterfactualStability(Stage):
    """Closest vs T-Rex counterfactuals: cost, Stability and validity under model change."""

    name = "counterfactual"
    kind = StageKind.EXPLAIN
    requires = frozenset({Capability.GRADIENTS})
    Params = CounterfactualParams
    unit_size = None  # model change (sibling loading) and figures need the images together
    profiles = {
        "quick": {"max_images": 8, "k": 32, "cf_steps": 8, "cf_search_steps": 4, "trex_steps": 6,
                  "proxy_models": 4},
        "standard": {"max_images": 32, "k": 256},
        "full": {"max_images": 128, "k": 1000, "cf_steps": 40, "cf_search_steps": 8, "proxy_models": 16},
    }
    description = "Hamman et al. (ICML'23): counterfactual Stability, T-Rex:I and robust validity."
    metric_docs = {
        "cf_validity": "fraction of clean-correct images with a valid closest CF (target class reached)",
        "cf_cost_l2": "mean ||x' - x||_2 of valid closest CFs (pixel units); .robust: of T-Rex CFs",
        "stability.mean": "mean Stability R^ of closest CFs (.se: mean MC standard error); .robust: T-Rex CFs",
        "stability.input.mean": "mean Stability of the inputs' own predicted class (prediction stability)",
        "stability_pass_rate": "fraction of T-Rex CFs with R^ >= tau (.closest: of closest CFs)",
        "cf_robust_validity.<closest|robust>": "mean over sibling models of the fraction of CFs still valid",
        "cf_robust_validity_proxy.<closest|robust>": f"same under the weight-noise ensemble ({PROXY_LABEL})",
    }

    def run_unit(self, model: ModelAdapter, batch: Batch, *, generator: torch.Generator) -> UnitOutput:
        p = self.params
        logits_fn = model.logits
        with torch.no_grad():
            clean = torch.cat([logits_fn(batch.x[i : i + p.batch_size]) for i in range(0, len(batch), p.batch_size)])
        pred = clean.argmax(1).cpu()
        ok = pred == batch.y.cpu()
        if p.target is not None:
            if p.target >= model.spec.num_classes:
                raise ParameterError(f"target {p.target} is not a class of this model "
                                     f"({model.spec.num_classes} classes)")
            ok &= pred != p.target
        chosen = ok.nonzero().flatten()[: p.max_images]
        if len(chosen) == 0:
            raise Skip("no clean-correct image (of a class other than the CF target) to explain")
        x = batch.x[chosen]
        target = runner_up(clean[chosen]).cpu() if p.target is None else torch.full((len(chosen),), p.target)
        cf = closest_counterfactual(logits_fn, x, target, steps=p.cf_steps, init_radius=p.cf_init_radius,
                                    max_radius=p.cf_max_radius, search_steps=p.cf_search_steps,
                                    batch_size=p.batch_size)
        noise = draw_noise(x[:1], sigma=p.sigma, k=p.k, generator=generator)  # common random numbers
        prob = TargetProb(logits_fn, target)

        def stab(z: torch.Tensor, f: TargetProb) -> tuple[np.ndarray, np.ndarray]:
            with torch.no_grad():
                t = stability_terms(f, z, sigma=p.sigma, k=p.k, generator=generator, form=p.form,
                                    batch_size=p.batch_size, noise=noise)
            return t.mean(1).cpu().numpy(), (t.std(1) / np.sqrt(p.k)).cpu().numpy()

        s_close, se_close = stab(cf.x, prob)
        s_input, _ = stab(x, TargetProb(logits_fn, pred[chosen]))
        fwd, bwd = float(len(batch) + cf.forward + 2 * len(x) * (p.k + 1)), float(cf.backward)
        x_rob = cf.x.clone()
        steps = np.zeros(len(x))
        if p.trex and cf.valid.any():
            v = cf.valid.nonzero().flatten().cpu()  # indexes CPU (target, steps) and device tensors
            res = trex_search(logits_fn, cf.x[v], target[v], generator=generator, tau=p.tau, sigma=p.sigma, k=p.k,
                              step_size=p.trex_step_size, radius=p.trex_radius, max_steps=p.trex_steps,
                              form=p.form, batch_size=p.batch_size)
            x_rob[v] = res.x
            steps[v.numpy()] = res.steps.numpy()
            fwd, bwd = fwd + res.forward, bwd + res.backward
        s_rob, se_rob = stab(x_rob, prob)
        with torch.no_grad():
            rob_valid = (torch.cat([logits_fn(x_rob[i : i + p.batch_size]).argmax(1)
                                    for i in range(0, len(x), p.batch_size)]).cpu() == target) & cf.valid.cpu()
        if p.siblings:
            models = load_siblings(model, p.siblings)
        else:
            models = weight_noise_models(model.torch_module(), n=p.proxy_models, scale=p.proxy_scale,
                                         generator=generator)
        nf = min(p.figure_images, len(x))
        arrays = {
            "sample_index": chosen.numpy(), "target": target.numpy(), "valid": cf.valid.cpu().numpy(),
            "cost": cf.cost.cpu().numpy(), "stab_closest": s_close, "se_closest": se_close,
            "stab_input": s_input, "robust_valid": rob_valid.numpy(), "stab_robust": s_rob, "se_robust": se_rob,
            "cost_robust": (x_rob - x).flatten(1).norm(dim=1).cpu().numpy(), "trex_steps": steps,
            "change_closest": still_valid(models, cf.x, target, p.batch_size).numpy(),
            "change_robust": still_valid(models, x_rob, target, p.batch_size).numpy(),
            "proxy": np.array([0 if p.siblings else 1]),
            "fig_x": x[:nf].cpu().numpy(), "fig_cf": cf.x[:nf].cpu().numpy(), "fig_robust": x_rob[:nf].cpu().numpy(),
        }
        fwd += 2 * len(x) * len(models)
        return UnitOutput(arrays=arrays, counters={"forward": fwd, "backward": bwd, "models": float(len(models))})

    def summarize(self, arrays: dict[str, np.ndarray], data: Dataset, counters: dict[str, float]) -> StageOutput:
        p = self.params
        valid = arrays["valid"].astype(bool)
        rvalid = arrays["robust_valid"].astype(bool)
        n, nv = len(valid), int(valid.sum())
        proxy = bool(arrays["proxy"][0])
        metrics: dict[str, float] = dict(rate_metrics("cf_validity", nv, n))  # first = the report headline
        metrics["images_n"] = float(n)
        metrics["cf_cost_l2"] = _mean(arrays["cost"][valid])
        metrics["cf_cost_l2.median"] = float(np.median(arrays["cost"][valid])) if nv else float("nan")
        metrics["cf_cost_l2.robust"] = _mean(arrays["cost_robust"][rvalid])
        metrics["stability.mean"] = _mean(arrays["stab_closest"][valid])
        metrics["stability.se"] = _mean(arrays["se_closest"][valid])
        metrics["stability.robust.mean"] = _mean(arrays["stab_robust"][rvalid])
        metrics["stability.robust.se"] = _mean(arrays["se_robust"][rvalid])
        metrics["stability.input.mean"] = _mean(arrays["stab_input"])
        metrics.update(rate_metrics("stability_pass_rate", int((arrays["stab_robust"][rvalid] >= p.tau).sum()),
                                    int(rvalid.sum())))
        metrics.update(rate_metrics("stability_pass_rate.closest",
                                    int((arrays["stab_closest"][valid] >= p.tau).sum()), nv))
        metrics.update(rate_metrics("trex_validity", int(rvalid.sum()), nv))
        metrics["trex_steps.mean"] = _mean(arrays["trex_steps"][valid])
        name = "cf_robust_validity_proxy" if proxy else "cf_robust_validity"
        m_models = arrays["change_closest"].shape[1]
        rv_close = _mean(arrays["change_closest"][valid].mean(1)) if nv and m_models else float("nan")
        rv_rob = _mean(arrays["change_robust"][rvalid].mean(1)) if rvalid.any() and m_models else float("nan")
        metrics[f"{name}.closest"] = rv_close
        metrics[f"{name}.robust"] = rv_rob
        metrics[f"{name}.models_n"] = float(m_models)
        change = (f"{m_models} weight-noise copies (relative scale {p.proxy_scale}): {PROXY_LABEL}" if proxy
                  else f"{m_models} user-supplied sibling models")
        notes = [f"Stability: {p.form} form, sigma={p.sigma}, K={p.k}, tau={p.tau}; CF target = "
                 f"{'runner-up class' if p.target is None else f'class {p.target}'}; model change: {change}.",
                 "No numeric probability of invalidation is shown: the bound's constant is unverified (METHODS §6.1)."]
        warnings = [f"cf_robust_validity_proxy.* use a weight-noise ensemble ({PROXY_LABEL}); supply sibling "
                    "checkpoints (params.siblings) to measure naturally-occurring change."] if proxy else []
        figs = [self._examples(arrays, data), _histogram(arrays, valid, rvalid, p.tau),
                figures.table(f"Validity under model change ({'proxy' if proxy else 'siblings'})",
                              ["CF", "n", "valid on audited model", "still valid (mean over models)", "mean L2 cost",
                               "mean Stability"],
                              [["closest", nv, metrics["cf_validity"], rv_close, metrics["cf_cost_l2"],
                                metrics["stability.mean"]],
                               ["robust (T-Rex:I)", int(rvalid.sum()), metrics["trex_validity"], rv_rob,
                                metrics["cf_cost_l2.robust"], metrics["stability.robust.mean"]]],
                              caption=change)]
        budget = {"images": n, "k": p.k, "models": m_models, "forward": counters.get("forward", 0.0),
                  "backward": counters.get("backward", 0.0)}
        return StageOutput(metrics=metrics, figures=figs, notes=notes, warnings=warnings, budget=budget)

    def _examples(self, arrays: dict[str, np.ndarray], data: Dataset) -> dict[str, Any]:
        names = data.class_names
        rows = []
        for i in range(arrays["fig_x"].shape[0]):
            x, cf, rob = arrays["fig_x"][i], arrays["fig_cf"][i], arrays["fig_robust"][i]
            t = int(arrays["target"][i])
            y = int(data.y[int(arrays["sample_index"][i])])
            label = f"{names[y] if names else y} -> {names[t] if names else t}"
            rows.append({"label": label, "images": [
                figures.image_cell("original", x),
                figures.image_cell(f"closest CF (L2 {arrays['cost'][i]:.2f})", cf),
                figures.image_cell("difference x5", _amplified(cf - x)),
                figures.image_cell(f"T-Rex CF (R^ {arrays['stab_robust'][i]:.2f})", rob),
                figures.image_cell("difference x5", _amplified(rob - x))]})
        return figures.image_grid("Counterfactual examples", rows,
                                  caption="difference images: 0.5 + 5 (x' - x), clipped to [0, 1]")


def _amplified(d: np.ndarray) -> np.ndarray:
    return np.clip(0.5 + 5.0 * d, 0.0, 1.0)


def _mean(v: np.ndarray) -> float:
    v = np.asarray(v, dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if len(v) else float("nan")


def _histogram(arrays: dict[str, np.ndarray], valid: np.ndarray, rvalid: np.ndarray, tau: float) -> dict[str, Any]:
    edges = np.linspace(0.0, 1.0, 11)
    c, _ = np.histogram(np.clip(arrays["stab_closest"][valid], 0, 1), bins=edges)
    r, _ = np.histogram(np.clip(arrays["stab_robust"][rvalid], 0, 1), bins=edges)
    labels = [f"{a:.1f}-{b:.1f} {kind}" for a, b in zip(edges[:-1], edges[1:]) for kind in ("closest", "robust")]
    values = [float(v) for pair in zip(c, r) for v in pair]
    return figures.bar_chart("Stability distribution (closest vs T-Rex CFs)", labels, values, y_label="CFs",
                             caption=f"R^ binned in [0, 1]; pass threshold tau = {tau}")
