"""Stage ``patch_attack``: patch-wise adversarial attack success per grid position.

Threat model: white-box L0/patch attacker controlling all pixels of ONE s x s
grid-aligned patch (unbounded values in [0, 1]); s = the ViT token size by default.
Success = the prediction leaves the clean prediction; evaluated on clean-correct
images at every grid position (``positions = 0``) or a random subset per image.

Paper: Gu, Tresp & Qin, "Are Vision Transformers Robust to Patch Perturbations?"
(ECCV 2022), Algorithm B (METHODS.md §1.4). Expected: ViTs have higher adversarial
patch FR than comparable CNNs. The official code runs 10,000 steps at alpha 2/255;
robaudit uses a smaller, recorded budget with early stopping.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from robaudit.attacks.patches.evaluation import attack_positions, fooling_metrics, headline_first, predict
from robaudit.attacks.patches.masks import grid_shape, resolve_patch_size
from robaudit.attacks.patches.patch_attack import PatchAttack

from robaudit import figures
from robaudit.data import Batch, Dataset
from robaudit.errors import ParameterError
from robaudit.model import Capability, ModelAdapter
from robaudit.stage import Stage, StageKind, StageOutput, UnitOutput
from robaudit.stats import rate_metrics


@dataclass(frozen=True)
class PatchAttackParams:
    """``positions``: grid positions attacked per image (0 = all); ``steps``/``alpha``: signed-gradient budget."""

    patch_size: int = 0
    positions: int = 16
    steps: int = 200
    alpha: float = 4 / 255
    batch_size: int = 256

    def __post_init__(self) -> None:
        if self.patch_size < 0:
            raise ParameterError(f"patch_size must be >= 0 (0 = ViT token size), got {self.patch_size}")
        if self.positions < 0:
            raise ParameterError(f"positions must be >= 0 (0 = every grid position), got {self.positions}")
        if self.steps < 1:
            raise ParameterError(f"steps must be >= 1, got {self.steps}")
        if not 0 < self.alpha <= 1:
            raise ParameterError(f"alpha must be in (0, 1] (pixel units, 2/255 = 0.0078), got {self.alpha}")
        if self.batch_size < 1:
            raise ParameterError(f"batch_size must be >= 1, got {self.batch_size}")


def run_patch_attack(model: ModelAdapter, x: torch.Tensor, y: torch.Tensor, positions: torch.Tensor,
                     attack: PatchAttack, generator: torch.Generator, batch_size: int) -> dict[str, np.ndarray]:
    """Attack the clean-correct images of ``x`` at ``positions`` (n, P); per-sample arrays.

    Returns ``clean_pred``, ``success`` (n, P) int8 (-1 = not attacked), ``steps`` (n, P) (-1 = failed /
    not attacked) and the counters ``forward``/``backward``/``unverified`` as 0-d arrays under ``_``.
    """
    clean = predict(model, x, batch_size)
    eligible = (clean == y.cpu()).nonzero().flatten()
    n, per = positions.shape
    success = np.full((n, per), -1, dtype=np.int8)
    steps = np.full((n, per), -1, dtype=np.int64)
    counters = {"forward": float(n), "backward": 0.0, "unverified": 0.0}
    if len(eligible):
        image_index = eligible.repeat_interleave(per)
        flat_pos = positions[eligible].reshape(-1)
        res = attack.perturb(model, x, clean.to(x.device), image_index, flat_pos, generator=generator)
        success[eligible.numpy()] = res.success.view(-1, per).numpy().astype(np.int8)
        steps[eligible.numpy()] = res.steps.view(-1, per).numpy()
        counters["forward"] += res.forward_samples
        counters["backward"] += res.backward_samples
        counters["unverified"] += res.unverified
    return {"clean_pred": clean.numpy(), "success": success, "steps": steps, "_": counters}  # type: ignore[dict-item]


class PatchAttackStage(Stage):
    """Adversarial patch fooling rate per position (FR_pos), per image (FR_any) and steps to success."""

    name = "patch_attack"
    kind = StageKind.PATCH
    requires = frozenset({Capability.GRADIENTS})
    Params = PatchAttackParams
    unit_size = 64
    profiles = {
        "quick": {"positions": 3, "steps": 12, "alpha": 24 / 255},
        "standard": {"positions": 16, "steps": 200, "alpha": 4 / 255},
        "full": {"positions": 0, "steps": 1000, "alpha": 2 / 255},
    }
    description = "Gu et al. (ECCV'22): one grid patch replaced by an optimised unconstrained pattern."
    metric_docs = {
        "adv_patch_fr_pos": "fraction of attacked (clean-correct image, position) pairs fooled",
        "adv_patch_fr_any": "fraction of clean-correct images fooled at >= 1 evaluated position",
        "adv_patch_steps_median": "median signed-gradient steps to success (successful pairs)",
        "adv_patch_size": "patch side s in pixels",
        "clean_accuracy": "top-1 accuracy on the clean images",
    }

    def _geometry(self, model: ModelAdapter, hw: tuple[int, int]) -> tuple[int, tuple[int, int]]:
        module = model.torch_module() if model.has(Capability.TORCH_MODULE) else None
        s = resolve_patch_size(module, hw, self.params.patch_size)
        return s, grid_shape(hw, s)

    def check(self, model: ModelAdapter, data: Dataset) -> None:
        self._geometry(model, tuple(data.x.shape[2:]))

    def run_unit(self, model: ModelAdapter, batch: Batch, *, generator: torch.Generator) -> UnitOutput:
        p = self.params
        s, grid = self._geometry(model, tuple(batch.x.shape[2:]))
        positions = attack_positions(len(batch), p.positions, grid, generator)
        attack = PatchAttack(s, steps=p.steps, alpha=p.alpha, batch_size=p.batch_size)
        out = run_patch_attack(model, batch.x, batch.y, positions, attack, generator, p.batch_size)
        counters = out.pop("_")
        arrays = {**out, "label": batch.y.cpu().numpy(), "positions": positions.numpy(),
                  "geometry": np.tile(np.array([s, grid[0], grid[1]], dtype=np.int64), (len(batch), 1))}
        return UnitOutput(arrays=arrays, counters=counters)  # type: ignore[arg-type]

    def summarize(self, arrays: dict[str, np.ndarray], data: Dataset, counters: dict[str, float]) -> StageOutput:
        p = self.params
        label, clean, success = arrays["label"], arrays["clean_pred"], arrays["success"]
        s, gh, gw = (int(v) for v in arrays["geometry"][0])
        correct = clean == label
        attacked = success >= 0
        metrics = rate_metrics("clean_accuracy", int(correct.sum()), len(label))
        metrics["clean_correct_n"] = float(correct.sum())
        metrics.update(fooling_metrics("adv_patch_fr_pos", success == 1, attacked))
        any_hit = (success == 1).any(1)
        metrics.update(rate_metrics("adv_patch_fr_any", int(any_hit[correct].sum()), int(correct.sum())))
        hit_steps = arrays["steps"][success == 1]
        metrics["adv_patch_steps_median"] = float(np.median(hit_steps)) if hit_steps.size else float("nan")
        metrics["adv_patch_size"] = float(s)
        tries = np.bincount(arrays["positions"][attacked], minlength=gh * gw)
        hits = np.bincount(arrays["positions"][success == 1], minlength=gh * gw)
        with np.errstate(invalid="ignore", divide="ignore"):
            smap = np.where(tries > 0, hits / np.maximum(tries, 1), np.nan).reshape(gh, gw)
        figs = [figures.heatmap(
            f"Adversarial patch success map ({s}x{s} px patches, {gh}x{gw} grid)", smap,
            row_labels=[str(r) for r in range(gh)], col_labels=[str(c) for c in range(gw)],
            value_label="success rate", vmin=0.0, vmax=1.0,
            caption=f"fraction of attacked clean-correct images fooled with the patch at each grid cell "
                    f"({int(attacked.sum())} pairs; empty cells were not sampled)", annotate=gh * gw <= 64)]
        if hit_steps.size:
            edges = np.unique(np.linspace(0, p.steps + 1, min(10, p.steps + 1) + 1).astype(int))
            counts, _ = np.histogram(hit_steps, bins=edges)
            labels = [f"{a}-{b - 1}" for a, b in zip(edges[:-1], edges[1:])]
            figs.append(figures.bar_chart("Steps to success", labels, counts.tolist(), y_label="successful pairs",
                                          caption="signed-gradient steps before the pair was fooled"))
        warnings = []
        if counters.get("unverified", 0):
            warnings.append(f"{int(counters['unverified'])} attack successes were not confirmed by a fresh "
                            "forward pass (non-deterministic model?) and were counted as failures.")
        notes = [
            f"Budget: up to {p.steps} signed-gradient steps of alpha = {p.alpha:.4f}, random start, early stop "
            f"per pair; {'all' if p.positions == 0 else p.positions} positions per clean-correct image.",
            "FR_pos's interval treats (image, position) pairs as independent; they are clustered by image.",
        ]
        budget = {"steps": p.steps, "alpha": p.alpha, "positions_per_image": p.positions or gh * gw,
                  "pairs_evaluated": int(attacked.sum()), "images_attacked": int(correct.sum()),
                  "patch_size": s, "grid": [gh, gw]}
        metrics = headline_first(metrics, ["adv_patch_fr_any", "adv_patch_fr_pos"])
        return StageOutput(metrics=metrics, figures=figs, notes=notes, warnings=warnings, budget=budget)
