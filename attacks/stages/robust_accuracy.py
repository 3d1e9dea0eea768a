"""Stage ``robust_accuracy``: accuracy under an ensemble of attacks (worst case per sample)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from robaudit.attacks.base import (
    Norm,
    check_eps,
    check_positive,
    check_positive_int,
    logits_fn,
    per_sample_norm,
)
from robaudit.attacks.square import Square
from robaudit.attacks.stages._specs import BLACK_BOX, build_attack, normalize_name

from robaudit import figures
from robaudit.data import Batch, Dataset
from robaudit.errors import ParameterError
from robaudit.model import Capability, ModelAdapter
from robaudit.stage import Skip, Stage, StageKind, StageOutput, UnitOutput
from robaudit.stats import rate_metrics

THUMB = 64  #: example images are stored per sample as uint8 thumbnails of at most THUMB x THUMB


class Mode(str, enum.Enum):
    CASCADE = "cascade"  #: each attack only attacks samples no earlier attack broke (AutoAttack)
    INDEPENDENT = "independent"  #: each attack attacks every clean-correct sample


@dataclass(frozen=True)
class RobustAccuracyParams:
    attacks: tuple[str, ...] = ("fgsm", "pgd", "apgd-ce", "apgd-dlr", "square")
    norm: str = "linf"
    eps: float = 8 / 255
    steps: int = 50
    restarts: int = 1
    alpha: float | None = None
    square_queries: int = 1000
    square_p_init: float = 0.8
    mode: str = "independent"
    examples: int = 4

    def __post_init__(self) -> None:
        names = (self.attacks,) if isinstance(self.attacks, str) else tuple(self.attacks)
        if not names:
            raise ParameterError("attacks is empty; list at least one of fgsm, pgd, apgd-ce, apgd-dlr, square")
        object.__setattr__(self, "attacks", tuple(dict.fromkeys(normalize_name(a) for a in names)))
        object.__setattr__(self, "norm", Norm.parse(self.norm).value)
        object.__setattr__(self, "eps", check_eps(self.eps))
        check_positive_int("steps", self.steps)
        check_positive_int("restarts", self.restarts)
        check_positive_int("square_queries", self.square_queries)
        if self.alpha is not None:
            check_positive("alpha", self.alpha)
        if not 0 < self.square_p_init <= 1:
            raise ParameterError(f"square_p_init must be in (0, 1], got {self.square_p_init}")
        try:
            object.__setattr__(self, "mode", Mode(str(self.mode).lower()).value)
        except ValueError:
            raise ParameterError(f"mode must be 'cascade' or 'independent', got {self.mode!r}") from None
        if int(self.examples) < 0:
            raise ParameterError(f"examples must be >= 0, got {self.examples}")


class RobustAccuracy(Stage):
    """Accuracy under attack: a sample counts as robust only if every attack fails on it.

    Threat model: ``||x_adv - x|| <= eps`` (``norm``), x_adv in [0, 1]. The result is an
    *upper bound* on the true robust accuracy (attacks can miss adversarial examples).

    Method: clean-wrong samples are never attacked (they count as non-robust). In
    ``cascade`` mode (AutoAttack, Croce & Hein 2020) each attack only attacks samples no
    earlier attack broke; ``robust_accuracy.<attack>`` is then the cumulative accuracy after
    that attack. In ``independent`` mode each attack attacks every clean-correct sample and
    ``robust_accuracy.<attack>`` is that attack's own number; the headline is the per-sample
    worst case in both modes. Every adversarial example is re-checked by a separate forward
    pass (counted). Without GRADIENTS only black-box attacks (Square) run.

    Metrics: clean_accuracy, robust_accuracy, attack_success_rate (clean-correct
    denominator), robust_accuracy.<attack>, each with ci_low/ci_high/n; passes spent.
    """

    name = "robust_accuracy"
    kind = StageKind.ATTACK
    requires = frozenset()  # gradients are needed by white-box attacks only; see check()
    Params = RobustAccuracyParams
    unit_size = 64
    profiles = {
        "quick": {"attacks": ("fgsm", "pgd", "apgd-ce", "square"), "steps": 5, "square_queries": 50,
                  "mode": "cascade"},
        "standard": {"steps": 50, "square_queries": 1000, "mode": "independent"},
        "full": {"steps": 100, "restarts": 3, "square_queries": 5000, "mode": "independent"},
    }
    description = "Accuracy under FGSM/PGD/APGD-CE/APGD-DLR/Square within an eps-ball (worst case per sample)."
    metric_docs = {
        "robust_accuracy": "fraction of all samples correct under every attack (upper bound on true robustness)",
        "robust_accuracy.<attack>": "cascade: cumulative up to <attack>; independent: <attack> alone",
        "attack_success_rate": "clean-correct samples broken by at least one attack / clean-correct",
        "clean_accuracy": "top-1 accuracy without attack",
        "passes.forward": "forward passes spent (images), verification passes included",
        "square.queries_median_success": "median Square queries of the samples Square broke",
    }

    def _runnable(self, model: ModelAdapter) -> tuple[list[str], list[str]]:
        names = list(self.params.attacks)
        if model.has(Capability.GRADIENTS):
            return names, []
        return [a for a in names if a in BLACK_BOX], [a for a in names if a not in BLACK_BOX]

    def check(self, model: ModelAdapter, data: Dataset) -> None:
        run, _ = self._runnable(model)
        if not run:
            raise Skip(
                f"model {model.name!r} has no gradients and none of the requested attacks is black-box; "
                "add 'square' to attacks or provide a PyTorch model"
            )

    def run_unit(self, model: ModelAdapter, batch: Batch, *, generator: torch.Generator) -> UnitOutput:
        p = self.params
        run, _ = self._runnable(model)
        x, y = batch.x.float(), batch.y.long()
        f = logits_fn(model)
        with torch.no_grad():
            correct = f(x).argmax(1) == y
        counters: dict[str, float] = {"forward": float(len(x)), "backward": 0.0, "queries": float(len(x))}
        seeds = torch.randint(0, 2**62, (len(p.attacks),), generator=generator, device=generator.device).tolist()
        # per-sample bookkeeping lives on the batch's device (CPU or CUDA); arrays leave via .cpu()
        dev = x.device
        robust = correct.clone()
        broken_by = torch.full((len(x),), -1, dtype=torch.long, device=dev)
        adv_img, adv_norm = x.clone(), torch.zeros(len(x), device=dev)
        arrays: dict[str, np.ndarray] = {}
        square_q = torch.zeros(len(x), dtype=torch.long, device=dev)
        for j, name in enumerate(p.attacks):
            if name not in run:
                continue
            pool = robust if p.mode == Mode.CASCADE.value else correct
            idx = pool.nonzero()[:, 0]
            still = torch.zeros(len(x), dtype=torch.bool, device=dev)
            if len(idx):
                attack = build_attack(name, norm=p.norm, eps=p.eps, steps=p.steps, restarts=p.restarts,
                                      alpha=p.alpha, queries=p.square_queries, p_init=p.square_p_init)
                g = torch.Generator(device=generator.device).manual_seed(int(seeds[j]))
                xa = attack.perturb(model, x[idx], y[idx], generator=g)
                with torch.no_grad():
                    ok = f(xa).argmax(1) == y[idx]
                still[idx] = ok
                for key, val in attack.last_counts.items():
                    counters[f"{name}.{key}"] = counters.get(f"{name}.{key}", 0.0) + val
                    counters[key] += val
                counters["forward"] += len(idx)
                counters["queries"] += len(idx)
                if isinstance(attack, Square):
                    square_q[idx] = attack.last_queries.to(dev)
                first = ~ok & robust[idx]  # broken now and by no earlier attack
                new = idx[first]
                broken_by[new] = j
                adv_img[new] = xa[first]
                adv_norm[new] = per_sample_norm(adv_img[new] - x[new], Norm(p.norm))
                robust &= ~(correct & ~still & pool)
            # a snapshot: on the CPU .cpu().numpy() shares memory with ``robust``, which later attacks update
            snap = robust.clone() if p.mode == Mode.CASCADE.value else still & correct
            arrays[f"robust.{name}"] = snap.cpu().numpy()
        arrays.update({"clean_correct": correct.cpu().numpy(), "robust": robust.cpu().numpy(),
                       "broken_by": broken_by.cpu().numpy(), "adv_norm": adv_norm.cpu().numpy(),
                       "square_queries": square_q.cpu().numpy(), "adv_thumb": _thumb(adv_img)})
        return UnitOutput(arrays=arrays, counters=counters)

    def summarize(self, arrays: dict[str, np.ndarray], data: Dataset, counters: dict[str, float]) -> StageOutput:
        p = self.params
        correct = arrays["clean_correct"].astype(bool)
        robust = arrays["robust"].astype(bool)
        n, n_correct = len(correct), int(correct.sum())
        metrics: dict[str, float] = {}
        metrics.update(rate_metrics("clean_accuracy", n_correct, n))
        metrics.update(rate_metrics("robust_accuracy", int(robust.sum()), n))
        metrics.update(rate_metrics("attack_success_rate", int((correct & ~robust).sum()), n_correct))
        metrics["clean_correct_n"] = float(n_correct)
        ran = [a for a in p.attacks if f"robust.{a}" in arrays]
        labels, vals, lows, highs = [], [], [], []
        for name in ran:
            r = rate_metrics(f"robust_accuracy.{name}", int(arrays[f"robust.{name}"].astype(bool).sum()), n)
            metrics.update(r)
            labels.append(name)
            vals.append(r[f"robust_accuracy.{name}"])
            lows.append(r[f"robust_accuracy.{name}.ci_low"])
            highs.append(r[f"robust_accuracy.{name}.ci_high"])
        labels.append("worst case")
        vals.append(metrics["robust_accuracy"])
        lows.append(metrics["robust_accuracy.ci_low"])
        highs.append(metrics["robust_accuracy.ci_high"])
        for key in ("forward", "backward", "queries"):
            metrics[f"passes.{key}"] = float(counters.get(key, 0.0))
        notes, warnings = [self._mode_note()], []
        skipped = [a for a in p.attacks if a not in ran]
        if skipped:
            notes.append(f"the model has no gradients: ran only black-box attacks ({', '.join(ran)}); "
                         f"skipped {', '.join(skipped)}")
            warnings.append("white-box attacks were skipped, so robust_accuracy is a loose upper bound")
        if "square" in ran:
            q = arrays["square_queries"][correct & (arrays["broken_by"] == p.attacks.index("square"))]
            metrics["square.queries_median_success"] = float(np.median(q)) if len(q) else float("nan")
        cap = f"eps = {p.eps:.5g} ({p.eps * 255:.3g}/255), {p.norm}; n = {n}; CIs: 95% Clopper-Pearson."
        figs = [figures.bar_chart("Robust accuracy per attack", labels, vals, y_label="accuracy",
                                  low=lows, high=highs, caption=cap)]
        grid = self._examples(arrays, data)
        if grid is not None:
            figs.append(grid)
        budget: dict[str, Any] = {"norm": p.norm, "eps": p.eps, "eps_255": p.eps * 255, "steps": p.steps,
                                  "restarts": p.restarts, "alpha": p.alpha, "square_queries": p.square_queries,
                                  "mode": p.mode, "attacks": list(ran),
                                  **{k: float(v) for k, v in sorted(counters.items())}}
        return StageOutput(metrics=metrics, figures=figs, notes=notes, warnings=warnings, budget=budget)

    def _mode_note(self) -> str:
        if self.params.mode == Mode.CASCADE.value:
            return ("cascade: each attack ran only on samples still robust after the previous ones; "
                    "robust_accuracy.<attack> is cumulative up to that attack")
        return "independent: each attack ran on all clean-correct samples; robust_accuracy.<attack> is its own"

    def _examples(self, arrays: dict[str, np.ndarray], data: Dataset) -> dict[str, Any] | None:
        k = int(self.params.examples)
        broken = np.nonzero(arrays["broken_by"] >= 0)[0][:k]
        if k == 0 or len(broken) == 0 or len(data) != len(arrays["broken_by"]):
            return None
        rows = []
        for i in broken.tolist():
            clean = _thumb(data.x[i:i + 1].float())[0].astype(np.float32) / 255.0
            adv = arrays["adv_thumb"][i].astype(np.float32) / 255.0
            diff = adv - clean
            amp = 0.5 / max(float(np.abs(diff).max()), 1e-6)
            name = self.params.attacks[int(arrays["broken_by"][i])]
            rows.append({"label": f"{data.ids[i]} (by {name})", "images": [
                figures.image_cell("clean", clean), figures.image_cell("adversarial", adv),
                figures.image_cell(f"difference x{amp:.0f}", np.clip(0.5 + amp * diff, 0, 1))]})
        return figures.image_grid("Adversarial examples", rows,
                                  caption="difference = 0.5 + gain * (adv - clean), per-image gain")


def _thumb(x: torch.Tensor) -> np.ndarray:
    """uint8 ``(N, C, h, w)`` thumbnails with max side THUMB (exact for small images)."""
    h, w = x.shape[-2:]
    if max(h, w) > THUMB:
        scale = THUMB / max(h, w)
        x = F.interpolate(x, size=(max(1, int(h * scale)), max(1, int(w * scale))), mode="area")
    return (x.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).cpu().numpy()
