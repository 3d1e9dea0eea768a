"""Metrics and figures of the ``realistic_patch`` stage, computed from its per-sample arrays only.

Conventions (METHODS.md §0.2, §2.3f, §9): ASR = #(clean-correct and patched-wrong) /
#clean-correct on the evaluation images, vs ground truth, with a 95% Clopper-Pearson
interval and its n; patched accuracy is vs ground truth on all evaluation images.
``asr_gap`` is paired (same images): its interval is a normal approximation on the
per-image differences. Metric names: ``asr_synthetic`` (digital paste), ``asr_realistic`` (pose + relight),
``asr_ablation.geometric``, ``asr_ablation.lighting``, ``asr_gap`` for the digitally
optimised patch; the same under ``eot.`` for the EOT-optimised patch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from robaudit.attacks.patches.synthetic_scene import Rendering, SceneDraw, SyntheticScene

from robaudit import figures
from robaudit.data import Dataset
from robaudit.stats import rate_metrics

ASR_NAMES = {Rendering.DIGITAL: "asr_synthetic", Rendering.REALISTIC: "asr_realistic",
             Rendering.GEOMETRIC: "asr_ablation.geometric", Rendering.LIGHTING: "asr_ablation.lighting"}
PATCH_PREFIX = {"digital": "", "eot": "eot."}


def metrics_for(arrays: dict[str, np.ndarray]) -> dict[str, float]:
    """All stage metrics from the arrays written by ``RealisticPatch.run_unit``."""
    ev = arrays["evaluate"].astype(bool)
    label, clean = arrays["label"][ev], arrays["clean_pred"][ev]
    correct = clean == label
    n_cc = int(correct.sum())
    metrics = rate_metrics("clean_accuracy", int(correct.sum()), len(label))
    metrics["clean_correct_n"] = float(n_cc)
    for tag, prefix in PATCH_PREFIX.items():
        for r, name in ASR_NAMES.items():
            pred = arrays[f"pred_{tag}_{r.value}"][ev]
            wrong = pred != label
            metrics.update(rate_metrics(prefix + name, int((wrong & correct).sum()), n_cc))
            metrics.update(rate_metrics(f"{prefix}patched_accuracy.{r.value}", int((~wrong).sum()), len(label)))
        metrics.update(_paired_gap(prefix + "asr_gap", arrays[f"pred_{tag}_digital"][ev] != label,
                                   arrays[f"pred_{tag}_realistic"][ev] != label, correct))
    return metrics


def _paired_gap(name: str, fooled_a: np.ndarray, fooled_b: np.ndarray, correct: np.ndarray) -> dict[str, float]:
    """ASR_a - ASR_b on the same clean-correct images, with a paired normal-approximation 95% interval."""
    d = fooled_a[correct].astype(np.float64) - fooled_b[correct].astype(np.float64)
    n = len(d)
    if n == 0:
        return {name: float("nan"), f"{name}.ci_low": float("nan"), f"{name}.ci_high": float("nan"), f"{name}.n": 0.0}
    mean = float(d.mean())
    half = 1.96 * float(d.std(ddof=1)) / np.sqrt(n) if n > 1 else float("nan")
    return {name: mean, f"{name}.ci_low": mean - half, f"{name}.ci_high": mean + half, f"{name}.n": float(n)}


def _draw(arrays: dict[str, np.ndarray], idx: np.ndarray) -> SceneDraw:
    quad = torch.from_numpy(arrays["quad"][idx])
    return SceneDraw(quad, torch.from_numpy(arrays["offset"][idx]), torch.zeros(len(idx), 2, dtype=torch.float64))


def figures_for(arrays: dict[str, np.ndarray], data: Dataset, scene: SyntheticScene, examples: int
                ) -> list[dict[str, Any]]:
    """The patches, example renderings (re-rendered from the stored scenes), ASR bars with CIs."""
    metrics = metrics_for(arrays)
    figs: list[dict[str, Any]] = []
    patch_cells = []
    for tag, title in (("digital", "digitally optimised"), ("eot", "EOT optimised")):
        patch = arrays[f"patch_{tag}"]
        for i in range(min(len(patch), 4)):
            patch_cells.append(figures.image_cell(f"{title} #{i}" if len(patch) > 1 else title, patch[i]))
    figs.append(figures.image_grid("Adversarial patches", [{"label": "patch", "images": patch_cells}],
                                   caption="patch canvases before relighting and warping", scale=8))
    labels, values, low, high = [], [], [], []
    for tag, prefix in PATCH_PREFIX.items():
        for r, name in ASR_NAMES.items():
            key = prefix + name
            labels.append(f"{tag} patch / {r.value}")
            values.append(metrics[key])
            low.append(metrics[key + ".ci_low"])
            high.append(metrics[key + ".ci_high"])
    figs.append(figures.bar_chart(
        "Attack success rate by rendering", labels, values, y_label="ASR (clean-correct subset)", low=low, high=high,
        caption=f"n = {int(metrics['clean_correct_n'])} clean-correct evaluation images; 95% Clopper-Pearson "
                "intervals; 'digital patch' = optimised on digital pastes, 'eot patch' = re-optimised with EOT"))
    ev_idx = np.flatnonzero(arrays["evaluate"])[:examples]
    if len(ev_idx):
        x = data.x[torch.from_numpy(ev_idx)].to(torch.float32)
        rows = []
        for tag in PATCH_PREFIX:
            patch = torch.from_numpy(arrays[f"patch_{tag}"])
            pb = patch if patch.shape[0] == 1 else patch[torch.from_numpy(ev_idx)]
            for j, i in enumerate(ev_idx):
                cells = [figures.image_cell(f"clean (pred {int(arrays['clean_pred'][i])})", x[j].numpy())]
                for r in Rendering:
                    img = scene.render(x[j:j + 1], pb[j:j + 1] if pb.shape[0] > 1 else pb,
                                       _draw(arrays, np.array([i])), r)[0]
                    cells.append(figures.image_cell(f"{r.value} (pred {int(arrays[f'pred_{tag}_{r.value}'][i])})",
                                                    img.numpy()))
                rows.append({"label": f"{tag} patch, sample {data.ids[i]}", "images": cells})
        figs.append(figures.image_grid("Patch renderings (synthetic object)", rows,
                                       caption="clean, then digital paste, pose only, relight only, pose + relight "
                                               "(each evaluation image keeps one random pose for all renderings)"))
    return figs
