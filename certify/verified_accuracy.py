"""Stage ``lirpa``: verified accuracy vs epsilon by LiRPA bounds, with PGD as the upper reference.

Guarantee: a sample counted as *verified* at ``eps`` is classified correctly and every margin
``f_y - f_j`` (``j != y``) has a provably positive lower bound on the whole L-inf ball of radius
``eps`` intersected with the pixel box [0, 1] (or the whole L2 ball, box ignored), pixel units
at the model's input resolution. Bounds come from robaudit's native LiRPA engine
(:func:`robaudit.certify.lirpa.compute_bounds`), or with ``backend="auto_lirpa"`` from an installed
auto_LiRPA (the stage is SKIPPED, with the fix, when it does not import); *falsified* means
misclassified clean or an adversarial example found by PGD (Madry et al. 2018) inside the same
set; else *unknown*.

Paper: Xu et al., "Automatic Perturbation Analysis for Scalable Certified Robustness and
Beyond", NeurIPS 2020 (IBP, CROWN, CROWN-IBP); alpha-CROWN: Xu et al., ICLR 2021.

Metric names (``k`` indexes ``params.eps``; the "Epsilon grid" table maps ``e<k>`` to eps;
method names ``ibp``, ``crown``, ``crown_ibp``, ``alpha_crown``):
``clean_accuracy``, ``verified_accuracy.<method>.e<k>``, ``pgd_accuracy.e<k>`` (rates with
``.ci_low``/``.ci_high``/``.n``), ``bound_gap.<method>.e<k>`` (mean ub - lb of the true-class
logit), ``status.{verified,falsified,unknown}.e<k>``, ``epsilon.e<k>``,
``time_per_sample.<method>`` (seconds, mean over eps), ``soundness_violations``.

When CROWN or alpha-CROWN would exceed ``max_crown_elements`` (an estimate of the numbers in
its backward passes), the unit falls back to CROWN-IBP, or IBP; the notes say where. The cost is
estimated on the native trace; with auto_LiRPA on a model the native engine cannot trace (e.g.
MaxPool), no cap applies and the notes say so.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from robaudit import figures
from robaudit.data import Batch, Dataset
from robaudit.errors import ParameterError
from robaudit.model import Capability, ModelAdapter
from robaudit.stage import Skip, Stage, StageKind, StageOutput, UnitOutput
from robaudit.stats import rate_metrics

from .lirpa import Method, UnsupportedOperatorError, compute_bounds, parse_norm, trace
from .lirpa.auto_lirpa_backend import AutoLirpaUnavailableError, auto_lirpa_version, import_auto_lirpa
from .lirpa.compute import BACKENDS
from .lirpa.crown import estimate_cost
from .lirpa.perturbation import Perturbation

_FALLBACK = {Method.ALPHA_CROWN: Method.CROWN_IBP, Method.CROWN: Method.CROWN_IBP, Method.CROWN_IBP: Method.IBP}


@dataclass(frozen=True)
class VerifiedAccuracyParams:
    """``eps``: radii in pixel units (8/255 = 0.0314); ``norm``: "inf" or "2"; ``methods``: any of
    ibp, crown-ibp, crown, alpha-crown; ``attack_steps``/``attack_restarts``: PGD budget;
    ``alpha_iterations``/``alpha_lr``: alpha-CROWN optimiser; ``max_crown_elements``: per-unit cost
    cap before falling back (numbers written into backward matrices); ``backend``: "native" or
    "auto_lirpa" (an installed auto_LiRPA computes the bounds)."""

    eps: tuple[float, ...] = (1 / 255, 2 / 255, 4 / 255)
    norm: str = "inf"
    methods: tuple[str, ...] = ("ibp", "crown")
    attack_steps: int = 20
    attack_restarts: int = 1
    alpha_iterations: int = 20
    alpha_lr: float = 0.5
    max_crown_elements: float = 2e9
    backend: str = "native"

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ParameterError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if not self.eps or any(not (e >= 0) for e in self.eps):
            raise ParameterError(f"eps must be a non-empty list of radii >= 0, got {self.eps}")
        object.__setattr__(self, "eps", tuple(float(e) for e in self.eps))
        parse_norm(self.norm)
        methods = tuple(Method.parse(m).value for m in self.methods)
        if not methods or len(set(methods)) != len(methods):
            raise ParameterError(f"methods must be a non-empty list without repeats, got {self.methods}")
        object.__setattr__(self, "methods", methods)
        if self.attack_steps < 1 or self.attack_restarts < 1:
            raise ParameterError("attack_steps and attack_restarts must be >= 1")
        if self.alpha_iterations < 0 or self.alpha_lr <= 0 or self.max_crown_elements <= 0:
            raise ParameterError("alpha_iterations must be >= 0, alpha_lr > 0 and max_crown_elements > 0")


class VerifiedAccuracy(Stage):
    """Verified accuracy (IBP / CROWN-IBP / CROWN / alpha-CROWN) and PGD accuracy per epsilon."""

    name = "lirpa"
    kind = StageKind.CERTIFY
    requires = frozenset({Capability.TORCH_MODULE})
    Params = VerifiedAccuracyParams
    unit_size = 16
    profiles = {
        "quick": {"eps": (1 / 255, 2 / 255), "methods": ("ibp", "crown"), "attack_steps": 10,
                  "max_crown_elements": 5e7},
        "standard": {"eps": (1 / 255, 2 / 255, 4 / 255, 8 / 255),
                     "methods": ("ibp", "crown-ibp", "crown", "alpha-crown"), "attack_steps": 20},
        "full": {"eps": (0.5 / 255, 1 / 255, 2 / 255, 4 / 255, 8 / 255, 16 / 255),
                 "methods": ("ibp", "crown-ibp", "crown", "alpha-crown"), "attack_steps": 50,
                 "attack_restarts": 3, "alpha_iterations": 50, "alpha_lr": 0.1, "max_crown_elements": 2e10},
    }
    description = "Verified accuracy vs epsilon from LiRPA bounds (IBP, CROWN-IBP, CROWN, alpha-CROWN), with PGD."
    metric_docs = {
        "verified_accuracy.<method>.e<k>": "fraction correct with all margin lower bounds > 0 at eps_k",
        "pgd_accuracy.e<k>": "fraction correct and not broken by PGD at eps_k (upper reference)",
        "bound_gap.<method>.e<k>": "mean (ub - lb) of the true-class logit at eps_k",
        "status.<verified|falsified|unknown>.e<k>": "fraction of samples per verification status",
        "time_per_sample.<method>": "mean seconds per sample and eps",
        "soundness_violations": "samples both verified and falsified (must be 0)",
    }

    def check(self, model: ModelAdapter, data: Dataset) -> None:
        if self.params.backend == "auto_lirpa":
            try:
                import_auto_lirpa()
            except AutoLirpaUnavailableError as err:
                raise Skip(str(err)) from err
            try:  # converts (and caches) the network once
                compute_bounds(model.torch_module(), data.x[:1].float().to(model.device), 0.0, method="ibp",
                               backend="auto_lirpa")
            except UnsupportedOperatorError as err:
                raise Skip(f"auto_LiRPA cannot bound this model: {err}") from err
            return
        try:
            trace(model.torch_module(), data.x[:1].float().to(model.device))
        except UnsupportedOperatorError as err:
            raise Skip(f"LiRPA cannot bound this model: {err}") from err

    def run_unit(self, model: ModelAdapter, batch: Batch, *, generator: torch.Generator) -> UnitOutput:
        p = self.params
        module = model.torch_module()
        x, y = batch.x.float(), batch.y.long()
        n, n_eps = len(batch), len(p.eps)
        norm = parse_norm(p.norm)
        counters: dict[str, float] = {}
        try:
            graph = trace(module, x)
        except UnsupportedOperatorError as err:
            if p.backend == "native":
                raise Skip(f"LiRPA cannot bound this model: {err}") from err
            graph, counters["uncapped_samples"] = None, float(n)  # auto_LiRPA may still bound it
        with torch.no_grad():
            logits = module(x)
        k = logits.shape[1]
        correct = (logits.argmax(1) == y).cpu().numpy()
        C = _margin_spec(y, k)
        arrays: dict[str, np.ndarray] = {"clean_correct": correct, "pgd_robust": np.zeros((n, n_eps), bool)}
        options = {"iterations": p.alpha_iterations, "lr": p.alpha_lr}
        for method in p.methods:
            key = Method(method).metric_name
            arrays[f"verified.{key}"] = np.zeros((n, n_eps), bool)
            arrays[f"gap.{key}"] = np.zeros((n, n_eps))
            arrays[f"seconds.{key}"] = np.zeros((n, n_eps))
            arrays[f"fallback.{key}"] = np.zeros((n, n_eps), np.int8)
        for j, eps in enumerate(p.eps):
            x_min, x_max = (0.0, 1.0) if norm == float("inf") else (None, None)
            broken = _pgd_falsified(module, x, y, eps, norm, p.attack_steps, p.attack_restarts, generator)
            arrays["pgd_robust"][:, j] = correct & ~broken
            counters["pgd_forward"] = counters.get("pgd_forward", 0.0) + n * p.attack_steps * p.attack_restarts
            ptb = Perturbation(x, eps, norm, x_min, x_max)
            for method in p.methods:
                m = Method(method)
                key = m.metric_name
                used = self._affordable(m, graph, ptb, C.shape[1])
                start = time.perf_counter()
                lb, ub = compute_bounds(module, x, eps, norm=norm, method=used, C=C, x_min=x_min, x_max=x_max,
                                        options=options, graph=graph, backend=p.backend)
                arrays[f"seconds.{key}"][:, j] = (time.perf_counter() - start) / n
                arrays[f"verified.{key}"][:, j] = correct & (lb[:, : k - 1] > 0).all(1).cpu().numpy()
                arrays[f"gap.{key}"][:, j] = (ub[:, k - 1] - lb[:, k - 1]).cpu().numpy()
                arrays[f"fallback.{key}"][:, j] = list(Method).index(used) if used is not m else -1
        return UnitOutput(arrays=arrays, counters=counters)

    def _affordable(self, method: Method, graph: object, ptb: Perturbation, n_spec: int) -> Method:
        """``method``, or the cheaper fallback when its estimated cost exceeds the cap (no graph: no cap)."""
        while graph is not None and method in (Method.CROWN, Method.ALPHA_CROWN, Method.CROWN_IBP):
            cost = estimate_cost(graph, ptb, n_spec, ibp_intermediate=method is Method.CROWN_IBP)  # type: ignore[arg-type]
            if method is Method.ALPHA_CROWN:
                cost *= 3.0 * max(1, self.params.alpha_iterations)
            if cost <= self.params.max_crown_elements:
                return method
            method = _FALLBACK[method]
        return method

    def summarize(self, arrays: dict[str, np.ndarray], data: Dataset, counters: dict[str, float]) -> StageOutput:
        p = self.params
        correct = arrays["clean_correct"].astype(bool)
        n = len(correct)
        metrics = rate_metrics("clean_accuracy", int(correct.sum()), n)
        notes, warnings = [], []
        if p.backend == "auto_lirpa":
            notes.append(f"bounds computed by auto_LiRPA {auto_lirpa_version() or '(not importable now)'} "
                         "(backend='auto_lirpa'), not by robaudit's native engine")
        if counters.get("uncapped_samples"):
            notes.append(f"{int(counters['uncapped_samples'])}/{n} samples: the native engine cannot trace this "
                         "model, so max_crown_elements was not applied (no fallback; auto_LiRPA bounded it)")
        any_verified = np.zeros((n, len(p.eps)), bool)
        lines, rows = [], []
        for method in p.methods:
            m = Method(method)
            key = m.metric_name
            verified = arrays[f"verified.{key}"].astype(bool)
            any_verified |= verified
            accs = []
            for j, eps in enumerate(p.eps):
                metrics.update(rate_metrics(f"verified_accuracy.{key}.e{j}", int(verified[:, j].sum()), n))
                metrics[f"bound_gap.{key}.e{j}"] = float(np.mean(arrays[f"gap.{key}"][:, j]))
                accs.append(metrics[f"verified_accuracy.{key}.e{j}"])
                fb = arrays[f"fallback.{key}"][:, j]
                if (fb >= 0).any():
                    used = sorted({list(Method)[int(i)].value for i in fb[fb >= 0]})
                    notes.append(f"{m.value} at e{j} (eps={eps:.6g}) fell back to {', '.join(used)} for "
                                 f"{int((fb >= 0).sum())}/{n} samples: estimated cost above "
                                 f"max_crown_elements={p.max_crown_elements:.3g}")
            metrics[f"time_per_sample.{key}"] = float(np.mean(arrays[f"seconds.{key}"]))
            lines.append(figures.series(m.value, p.eps, accs,
                                        low=[metrics[f"verified_accuracy.{key}.e{j}.ci_low"] for j in range(len(p.eps))],
                                        high=[metrics[f"verified_accuracy.{key}.e{j}.ci_high"] for j in range(len(p.eps))]))
        pgd = arrays["pgd_robust"].astype(bool)
        violations = int((any_verified & ~pgd).sum())
        metrics["soundness_violations"] = float(violations)
        if violations:
            warnings.append(f"{violations} (sample, eps) pairs are both verified and broken by PGD: the bound "
                            "engine is unsound on this model; do not trust the verified accuracies")
        for j, eps in enumerate(p.eps):
            metrics.update(rate_metrics(f"pgd_accuracy.e{j}", int(pgd[:, j].sum()), n))
            metrics[f"epsilon.e{j}"] = eps
            falsified = ~pgd[:, j]
            unknown = ~any_verified[:, j] & ~falsified
            for status, mask in (("verified", any_verified[:, j]), ("falsified", falsified), ("unknown", unknown)):
                metrics[f"status.{status}.e{j}"] = float(mask.mean()) if n else float("nan")
            rows.append([f"e{j}", eps, eps * 255, metrics["clean_accuracy"], metrics[f"pgd_accuracy.e{j}"],
                         *(metrics[f"verified_accuracy.{Method(m).metric_name}.e{j}"] for m in p.methods),
                         int(any_verified[:, j].sum()), int(falsified.sum()), int(unknown.sum())])
        lines.append(figures.series("PGD (upper reference)", p.eps, [metrics[f"pgd_accuracy.e{j}"] for j in range(len(p.eps))]))
        lines.append(figures.series("clean", p.eps, [metrics["clean_accuracy"]] * len(p.eps)))
        norm_txt = "L-inf" if parse_norm(p.norm) == float("inf") else "L2"
        figs = [
            figures.line_chart(f"Verified accuracy vs {norm_txt} epsilon", "epsilon (pixel units, [0, 1] scale)",
                               "accuracy", lines, y_range=(0.0, 1.0),
                               caption=f"n = {n}; verified <= PGD <= clean must hold; bands: 95% Clopper-Pearson. "
                                       f"PGD: {p.attack_steps} steps x {p.attack_restarts} restarts."),
            figures.table("Epsilon grid and verification status",
                          ["key", "eps", "eps x 255", "clean", "pgd",
                           *(f"verified {Method(m).value}" for m in p.methods), "verified n", "falsified n", "unknown n"],
                          rows, caption="metric suffix e<k> refers to the eps in this table"),
        ]
        budget = {"samples": n, "eps": list(p.eps), "norm": p.norm, "methods": list(p.methods), "backend": p.backend,
                  "attack_steps": p.attack_steps, "attack_restarts": p.attack_restarts,
                  "pgd_forward_passes": counters.get("pgd_forward", 0.0)}
        if Method.ALPHA_CROWN.value in p.methods:
            budget.update(alpha_iterations=p.alpha_iterations, alpha_lr=p.alpha_lr)
        return StageOutput(metrics=metrics, figures=figs, notes=notes, warnings=warnings, budget=budget)


def _margin_spec(y: torch.Tensor, k: int) -> torch.Tensor:
    """(B, K, K): rows ``e_y - e_j`` for ``j != y`` (increasing j), then ``e_y`` (for bound_gap)."""
    eye = torch.eye(k, device=y.device)
    rows = []
    for label in y.tolist():
        others = [j for j in range(k) if j != label]
        rows.append(torch.cat([eye[label] - eye[others], eye[label : label + 1]]))
    return torch.stack(rows)


def _pgd_falsified(module: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, norm: float,
                   steps: int, restarts: int, generator: torch.Generator) -> np.ndarray:
    """True where PGD (margin loss, random start) finds a misclassified point in the eps-set."""
    broken = torch.zeros(len(x), dtype=torch.bool, device=x.device)
    if eps == 0:
        return broken.cpu().numpy()
    step = 2.5 * eps / steps
    for _ in range(restarts):
        # drawn on the generator's device (CPU: the same draws on every device), then moved
        delta = ((torch.rand(x.shape, generator=generator, device=generator.device) * 2 - 1) * eps).to(x.device)
        if norm != float("inf"):
            delta = delta * (eps / delta.flatten(1).norm(dim=1).clamp(min=1e-12)).view(-1, *[1] * (x.dim() - 1))
        for _ in range(steps + 1):
            adv = (x + delta).clamp(0, 1).requires_grad_(True)
            out = module(adv)
            true = out.gather(1, y.view(-1, 1)).squeeze(1)
            other = out.scatter(1, y.view(-1, 1), float("-inf")).max(1).values
            broken |= (other >= true).detach()
            grad, = torch.autograd.grad((other - true).sum(), adv)
            with torch.no_grad():
                if norm == float("inf"):
                    delta = (delta + step * grad.sign()).clamp(-eps, eps)
                else:
                    g = grad / grad.flatten(1).norm(dim=1).clamp(min=1e-12).view(-1, *[1] * (x.dim() - 1))
                    delta = delta + step * g
                    scale = (eps / delta.flatten(1).norm(dim=1).clamp(min=1e-12)).clamp(max=1.0)
                    delta = delta * scale.view(-1, *[1] * (x.dim() - 1))
                delta = (x + delta).clamp(0, 1) - x
    return broken.cpu().numpy()
