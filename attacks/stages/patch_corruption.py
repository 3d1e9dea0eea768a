"""Stage ``patch_corruption``: fooling rate when k grid patches get a natural corruption.

Threat model: benign; k grid-aligned s x s patches (s = the ViT token size by default)
at random positions are replaced by their ImageNet-C-corrupted pixels (whole image
corrupted, then pasted: x~ = x + M (x_c - x)); no optimisation, logits only.

Paper: Gu, Tresp & Qin, "Are Vision Transformers Robust to Patch Perturbations?"
(ECCV 2022), Algorithm A (METHODS.md §1.3). Expected: ViTs have lower natural-patch
FR than comparable CNNs; FR grows with k.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from robaudit.attacks.patches.evaluation import fooling_metrics, headline_first, predict
from robaudit.attacks.patches.masks import grid_shape, positions_to_mask, random_positions, resolve_patch_size
from robaudit.attacks.patches.natural import corrupt_image, paste

from robaudit import figures
from robaudit.data import Batch, Dataset
from robaudit.errors import ParameterError
from robaudit.model import Capability, ModelAdapter
from robaudit.stage import Stage, StageKind, StageOutput, UnitOutput
from robaudit.stats import rate_metrics


@dataclass(frozen=True)
class PatchCorruptionParams:
    """``ks``: patch counts; ``draws``: random position draws per image and k; ``patch_size`` 0 = auto."""

    corruptions: tuple[str, ...] = ("gaussian_noise",)
    severity: int = 5
    ks: tuple[int, ...] = (1, 2, 4, 8)
    draws: int = 1
    patch_size: int = 0
    batch_size: int = 256

    def __post_init__(self) -> None:
        if not self.corruptions:
            raise ParameterError("corruptions must name at least one corruption (e.g. ['gaussian_noise'])")
        if not 1 <= self.severity <= 5:
            raise ParameterError(f"severity must be in 1..5, got {self.severity}")
        if not self.ks or any(k < 0 for k in self.ks) or len(set(self.ks)) != len(self.ks):
            raise ParameterError(f"ks must be distinct patch counts >= 0 (e.g. [1, 2, 4]), got {list(self.ks)}")
        if self.draws < 1:
            raise ParameterError(f"draws must be >= 1, got {self.draws}")
        if self.patch_size < 0:
            raise ParameterError(f"patch_size must be >= 0 (0 = ViT token size), got {self.patch_size}")
        if self.batch_size < 1:
            raise ParameterError(f"batch_size must be >= 1, got {self.batch_size}")


def _module(model: ModelAdapter) -> torch.nn.Module | None:
    return model.torch_module() if model.has(Capability.TORCH_MODULE) else None


class PatchCorruption(Stage):
    """Natural patch corruption fooling rate and accuracy vs the number of patches k."""

    name = "patch_corruption"
    kind = StageKind.PATCH
    Params = PatchCorruptionParams
    unit_size = 64
    profiles = {
        "quick": {"ks": (1, 2, 4), "corruptions": ("gaussian_noise",), "draws": 1},
        "standard": {"ks": (1, 2, 4, 8, 16),
                     "corruptions": ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur",
                                     "contrast", "jpeg_compression"), "draws": 1},
        "full": {"ks": (1, 2, 4, 8, 16, 32),
                 "corruptions": ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur",
                                 "motion_blur", "zoom_blur", "snow", "frost", "fog", "brightness", "contrast",
                                 "elastic_transform", "pixelate", "jpeg_compression"), "draws": 2},
    }
    description = "Gu et al. (ECCV'22): k grid patches replaced by their ImageNet-C corruption."
    metric_docs = {
        "patch_corrupt_fr.k<k>": "fooling rate (clean-correct, vs clean prediction), pooled over corruptions",
        "patch_corrupt_fr.k<k>.<corruption>": "fooling rate for one corruption type",
        "patch_corrupt_acc.k<k>": "accuracy vs ground truth under k corrupted patches",
        "clean_accuracy": "top-1 accuracy on the clean images",
        "clean_correct_n": "size of the clean-correct subset (FR denominator, per draw)",
    }

    def _patch_size(self, model: ModelAdapter, hw: tuple[int, int]) -> int:
        s = resolve_patch_size(_module(model), hw, self.params.patch_size)
        cells = grid_shape(hw, s)[0] * grid_shape(hw, s)[1]
        if max(self.params.ks) > cells:
            raise ParameterError(f"k = {max(self.params.ks)} patches do not fit the {cells}-cell grid; "
                                 f"use ks <= {cells}")
        return s

    def check(self, model: ModelAdapter, data: Dataset) -> None:
        self._patch_size(model, tuple(data.x.shape[2:]))

    def run_unit(self, model: ModelAdapter, batch: Batch, *, generator: torch.Generator) -> UnitOutput:
        p = self.params
        hw = tuple(batch.x.shape[2:])
        s = self._patch_size(model, hw)
        grid = grid_shape(hw, s)
        n = len(batch)
        clean = predict(model, batch.x, p.batch_size)
        arrays: dict[str, np.ndarray] = {"clean_pred": clean.numpy(), "label": batch.y.cpu().numpy(),
                                         "patch_size": np.full(n, s, dtype=np.int64)}
        forward = n
        for name in p.corruptions:
            preds = {k: np.zeros((n, p.draws), dtype=np.int64) for k in p.ks}
            where = {k: np.zeros((n, p.draws, k), dtype=np.int64) for k in p.ks}
            for d in range(p.draws):
                x_c = corrupt_image(batch.x, name, p.severity, generator)
                for k in p.ks:
                    pos = random_positions(n, k, grid, generator)
                    x_t = paste(batch.x, x_c, positions_to_mask(pos, grid, s).to(batch.x.device))
                    preds[k][:, d] = predict(model, x_t, p.batch_size).numpy()
                    where[k][:, d] = pos.numpy()
                    forward += n
            for k in p.ks:
                arrays[f"pred.{name}.k{k}"] = preds[k]
                arrays[f"positions.{name}.k{k}"] = where[k]
        return UnitOutput(arrays=arrays, counters={"forward": float(forward)})

    def summarize(self, arrays: dict[str, np.ndarray], data: Dataset, counters: dict[str, float]) -> StageOutput:
        p = self.params
        clean, label = arrays["clean_pred"], arrays["label"]
        correct = clean == label
        metrics = rate_metrics("clean_accuracy", int(correct.sum()), len(label))
        metrics["clean_correct_n"] = float(correct.sum())
        lines_fr, lines_acc, rows = [], [], []
        pooled: dict[int, list[np.ndarray]] = {k: [] for k in p.ks}
        pooled_acc: dict[int, list[np.ndarray]] = {k: [] for k in p.ks}
        for name in p.corruptions:
            fr, lo, hi, acc = [], [], [], []
            for k in p.ks:
                pred = arrays[f"pred.{name}.k{k}"]
                flipped = pred != clean[:, None]
                m = fooling_metrics(f"patch_corrupt_fr.k{k}.{name}", flipped, correct[:, None])
                right = pred == label[:, None]
                a = rate_metrics(f"patch_corrupt_acc.k{k}.{name}", int(right.sum()), right.size)
                metrics.update(m)
                metrics.update(a)
                pooled[k].append(flipped[correct])
                pooled_acc[k].append(right)
                fr.append(m[f"patch_corrupt_fr.k{k}.{name}"])
                lo.append(m[f"patch_corrupt_fr.k{k}.{name}.ci_low"])
                hi.append(m[f"patch_corrupt_fr.k{k}.{name}.ci_high"])
                acc.append(a[f"patch_corrupt_acc.k{k}.{name}"])
                rows.append([name, k, int(m[f"patch_corrupt_fr.k{k}.{name}.n"]), fr[-1], lo[-1], hi[-1], acc[-1]])
            lines_fr.append(figures.series(name, list(p.ks), fr, low=lo, high=hi))
            lines_acc.append(figures.series(name, list(p.ks), acc))
        for k in p.ks:
            flips = np.concatenate([f.ravel() for f in pooled[k]])
            metrics.update(rate_metrics(f"patch_corrupt_fr.k{k}", int(flips.sum()), flips.size))
            right = np.concatenate([r.ravel() for r in pooled_acc[k]])
            metrics.update(rate_metrics(f"patch_corrupt_acc.k{k}", int(right.sum()), right.size))
        size = int(arrays["patch_size"][0])
        s_note = f"{size}x{size} px patches" + ("" if p.patch_size else " (auto: ViT token size, else H/8)")
        figs = [
            figures.line_chart("Natural patch corruption: fooling rate vs k", "patches k", "fooling rate",
                               lines_fr, y_range=(0.0, 1.0),
                               caption=f"severity {p.severity}; clean-correct images "
                                       f"(n = {int(correct.sum())}), {p.draws} position draw(s); 95% CP bands"),
            figures.line_chart("Natural patch corruption: accuracy vs k", "patches k", "accuracy", lines_acc,
                               y_range=(0.0, 1.0), caption="accuracy against the ground truth, all images"),
            figures.table("Natural patch corruption", ["corruption", "k", "n", "FR", "ci_low", "ci_high",
                                                       "accuracy"], rows),
        ]
        notes = [f"Gu et al. Algorithm A: whole image corrupted at severity {p.severity}, pasted into k random "
                 f"grid-aligned patches ({s_note}); FR vs the clean prediction on clean-correct images."]
        if p.draws > 1:
            notes.append("With several position draws per image the CIs treat draws as independent trials "
                         "(they are clustered by image, so the intervals are somewhat too narrow).")
        metrics = headline_first(metrics, [f"patch_corrupt_fr.k{p.ks[0]}"])
        return StageOutput(metrics=metrics, figures=figs, notes=notes,
                           budget={"corruptions": list(p.corruptions), "severity": p.severity, "ks": list(p.ks),
                                   "draws": p.draws, "patch_size": size,
                                   "images": len(label)})
