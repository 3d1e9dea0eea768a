"""Stage ``corruptions``: accuracy under the 15 ImageNet-C corruptions x 5 severities, and mCE.

Threat model: benign distribution shift (noise, blur, weather, digital artefacts); no
optimisation, logits only under ``no_grad``, so it runs on ONNX models too.

Paper: Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common
Corruptions and Perturbations" (ICLR 2019). Corruption error CE_c = sum_s E_cs / sum_s
E^ref_cs, mCE = mean_c CE_c, relative CE_c = sum_s (E_cs - E_clean) / sum_s (E^ref_cs -
E^ref_clean), each normalised by a reference model's errors supplied by the user (the
published AlexNet numbers are ImageNet-specific). The corruptions are robaudit's batched
port (robaudit.attacks.corruptions): Hendrycks' parameters, scaled with resolution, and
a procedural frost texture.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from robaudit.attacks.corruptions import CORRUPTIONS, SEVERITIES, corrupt

from robaudit import figures
from robaudit.data import Batch, Dataset
from robaudit.errors import ParameterError
from robaudit.model import ModelAdapter
from robaudit.seeding import derive_seed, make_generator
from robaudit.stage import Stage, StageKind, StageOutput, UnitOutput
from robaudit.stats import rate_metrics


@dataclass(frozen=True)
class CorruptionAccuracyParams:
    """``reference``: per-corruption errors (severities 1..5, in [0, 1]) of a reference model for mCE;
    ``reference_clean_error``: its clean error, for relative mCE."""

    corruptions: tuple[str, ...] = CORRUPTIONS
    severities: tuple[int, ...] = SEVERITIES
    reference: Mapping[str, tuple[float, ...]] | None = None
    reference_clean_error: float | None = None
    batch_size: int = 256
    example_severity: int = 3

    def __post_init__(self) -> None:
        object.__setattr__(self, "corruptions", tuple(self.corruptions))
        object.__setattr__(self, "severities", tuple(self.severities))
        unknown = [c for c in self.corruptions if c not in CORRUPTIONS]
        if not self.corruptions or unknown or len(set(self.corruptions)) != len(self.corruptions):
            raise ParameterError(
                f"corruptions must be distinct names from: {', '.join(CORRUPTIONS)}; got {list(self.corruptions)}"
            )
        if not self.severities or any(s not in SEVERITIES for s in self.severities) or len(
            set(self.severities)
        ) != len(self.severities):
            raise ParameterError(f"severities must be distinct integers in 1..5, got {list(self.severities)}")
        if self.example_severity not in SEVERITIES:
            raise ParameterError(f"example_severity must be in 1..5, got {self.example_severity}")
        if self.batch_size < 1:
            raise ParameterError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.reference is not None:
            ref = {str(k): tuple(float(v) for v in vals) for k, vals in dict(self.reference).items()}
            missing = [c for c in self.corruptions if c not in ref]
            if missing:
                raise ParameterError(
                    f"reference errors are missing for {', '.join(missing)}; give five errors (severities "
                    "1..5) per evaluated corruption, or drop 'reference'"
                )
            for c, vals in ref.items():
                if len(vals) != 5 or any(not 0 <= v <= 1 for v in vals):
                    raise ParameterError(f"reference.{c} must list 5 errors in [0, 1] (severities 1..5), got {vals}")
            object.__setattr__(self, "reference", ref)
        if self.reference_clean_error is not None:
            if self.reference is None or not 0 <= self.reference_clean_error <= 1:
                raise ParameterError("reference_clean_error must be in [0, 1] and needs 'reference' as well")


def _mean_ci(per_image: np.ndarray) -> tuple[float, float, float]:
    """Mean of per-image rates with a normal-approximation 95% interval over images, clipped to [0, 1]."""
    n = len(per_image)
    mean = float(per_image.mean()) if n else float("nan")
    half = 1.96 * float(per_image.std(ddof=1)) / math.sqrt(n) if n > 1 else float("nan")
    return mean, max(0.0, mean - half), min(1.0, mean + half)


class CorruptionAccuracy(Stage):
    """Accuracy per corruption and severity, mean corruption accuracy, relative robustness, mCE."""

    name = "corruptions"
    kind = StageKind.CORRUPTION
    Params = CorruptionAccuracyParams
    unit_size = 64
    profiles = {
        "quick": {"severities": (1, 3, 5)},
        "standard": {},
        "full": {},
    }
    description = "Hendrycks & Dietterich (ICLR'19): accuracy under 15 ImageNet-C corruptions x 5 severities."
    metric_docs = {
        "accuracy.<corruption>.s<k>": "accuracy vs ground truth at severity k (95% Clopper-Pearson CI)",
        "accuracy.<corruption>": "accuracy averaged over the evaluated severities (CI: normal approx. over images)",
        "mean_corruption_accuracy": "accuracy averaged over corruptions and severities (CI over images)",
        "clean_accuracy": "accuracy on the unmodified images",
        "relative_robustness": "mean_corruption_accuracy / clean_accuracy",
        "ce.<corruption>": "corruption error sum_s E_cs / sum_s E_ref_cs (needs 'reference')",
        "mce": "mean corruption error over corruptions (needs 'reference')",
        "relative_mce": "mean of sum_s (E_cs - E_clean) / sum_s (E_ref_cs - E_ref_clean) (needs both references)",
    }

    def _predict(self, model: ModelAdapter, x: torch.Tensor) -> np.ndarray:
        out = []
        with torch.no_grad():
            for i in range(0, len(x), self.params.batch_size):
                out.append(model.logits(x[i : i + self.params.batch_size]).argmax(1).cpu())
        return torch.cat(out).numpy()

    def run_unit(self, model: ModelAdapter, batch: Batch, *, generator: torch.Generator) -> UnitOutput:
        p = self.params
        n = len(batch)
        pred = np.zeros((n, len(p.corruptions), len(p.severities)), dtype=np.int64)
        for ci, name in enumerate(p.corruptions):
            for si, sev in enumerate(p.severities):
                pred[:, ci, si] = self._predict(model, corrupt(batch.x, name, sev, generator=generator))
        arrays = {"label": batch.y.cpu().numpy(), "clean_pred": self._predict(model, batch.x), "pred": pred}
        return UnitOutput(arrays=arrays, counters={"forward": float(n * (1 + pred.shape[1] * pred.shape[2]))})

    def summarize(self, arrays: dict[str, np.ndarray], data: Dataset, counters: dict[str, float]) -> StageOutput:
        p = self.params
        label, pred = arrays["label"], arrays["pred"]
        n = len(label)
        correct = pred == label[:, None, None]  # (n, C, S)
        clean_correct = arrays["clean_pred"] == label
        metrics: dict[str, float] = {}
        per_image = correct.mean(axis=(1, 2))
        mca, lo, hi = _mean_ci(per_image)
        metrics.update({"mean_corruption_accuracy": mca, "mean_corruption_accuracy.ci_low": lo,
                        "mean_corruption_accuracy.ci_high": hi, "mean_corruption_accuracy.n": float(n)})
        metrics.update(rate_metrics("clean_accuracy", int(clean_correct.sum()), n))
        clean_acc = metrics["clean_accuracy"]
        metrics["relative_robustness"] = mca / clean_acc if clean_acc > 0 else float("nan")
        acc = correct.mean(axis=0)  # (C, S)
        rows = []
        for ci, name in enumerate(p.corruptions):
            m, lo, hi = _mean_ci(correct[:, ci, :].mean(axis=1))
            metrics.update({f"accuracy.{name}": m, f"accuracy.{name}.ci_low": lo, f"accuracy.{name}.ci_high": hi,
                            f"accuracy.{name}.n": float(n)})
            for si, sev in enumerate(p.severities):
                r = rate_metrics(f"accuracy.{name}.s{sev}", int(correct[:, ci, si].sum()), n)
                metrics.update(r)
                rows.append([name, sev, n, r[f"accuracy.{name}.s{sev}"], r[f"accuracy.{name}.s{sev}.ci_low"],
                             r[f"accuracy.{name}.s{sev}.ci_high"]])
        warnings: list[str] = []
        metrics.update(self._mce(acc, 1.0 - clean_acc, warnings))
        head = ["mean_corruption_accuracy", "relative_robustness", "mce", "clean_accuracy"]
        metrics = {k: metrics[k] for k in head if k in metrics} | {k: v for k, v in metrics.items() if k not in head}
        figs = [
            figures.heatmap("Accuracy under corruption", acc, row_labels=p.corruptions,
                            col_labels=[f"s{s}" for s in p.severities], value_label="accuracy", vmin=0.0, vmax=1.0,
                            caption=f"n = {n} images per cell; clean accuracy {clean_acc:.3f}"),
            figures.bar_chart("Accuracy per corruption (mean over severities)", p.corruptions,
                              [metrics[f"accuracy.{c}"] for c in p.corruptions], y_label="accuracy",
                              low=[metrics[f"accuracy.{c}.ci_low"] for c in p.corruptions],
                              high=[metrics[f"accuracy.{c}.ci_high"] for c in p.corruptions]),
            self._examples(data),
            figures.table("Accuracy per corruption and severity",
                          ["corruption", "severity", "n", "accuracy", "ci_low", "ci_high"], rows),
        ]
        notes = [
            "Corruptions: robaudit's batched port of ImageNet-C (imagecorruptions 1.1.2 parameters); inputs "
            "quantised to uint8 and outputs truncated as in the reference. Pixel-size parameters are scaled by "
            f"min(H, W)/224 (images here are {data.x.shape[-2]}x{data.x.shape[-1]}), so numbers are comparable "
            "across resolutions only approximately and equal ImageNet-C's definition at 224 px.",
            "frost uses a procedural texture (the reference's photographs cannot be shipped): an approximation.",
            "Per-corruption and mean accuracies pool severities (and corruptions); their CIs are normal "
            "approximations over images, since one image's outcomes are correlated.",
        ]
        if p.reference is None:
            notes.append("No reference model errors given, so mCE is not reported (set params.reference).")
        budget = {"corruptions": list(p.corruptions), "severities": list(p.severities), "images": n,
                  "forward_passes": counters.get("forward", 0.0)}
        return StageOutput(metrics=metrics, figures=figs, notes=notes, warnings=warnings, budget=budget)

    def _mce(self, acc: np.ndarray, clean_error: float, warnings: list[str]) -> dict[str, float]:
        p = self.params
        if p.reference is None:
            return {}
        out: dict[str, float] = {}
        ces, rel = [], []
        for ci, name in enumerate(p.corruptions):
            ref = np.array([p.reference[name][s - 1] for s in p.severities])
            err = 1.0 - acc[ci]
            ce = float(err.sum() / ref.sum()) if ref.sum() > 0 else float("nan")
            out[f"ce.{name}"] = ce
            ces.append(ce)
            if p.reference_clean_error is not None:
                denom = float((ref - p.reference_clean_error).sum())
                if denom <= 0:
                    warnings.append(f"relative CE of {name} undefined: the reference's errors do not exceed "
                                    "its clean error")
                    rel.append(float("nan"))
                else:
                    rel.append(float((err - clean_error).sum() / denom))
                out[f"relative_ce.{name}"] = rel[-1]
        out["mce"] = float(np.mean(ces))
        if rel:
            out["relative_mce"] = float(np.mean(rel))
        return out

    def _examples(self, data: Dataset) -> dict[str, Any]:
        """One image under every corruption at ``example_severity`` (a fresh, illustrative draw)."""
        p = self.params
        x = data.x[:1].cpu().float()
        size: tuple[int, ...]
        if max(x.shape[-2:]) > 128:
            scale = 128 / max(x.shape[-2:])
            size = (max(8, round(x.shape[-2] * scale)), max(8, round(x.shape[-1] * scale)))
        else:
            size = tuple(x.shape[-2:])
        gen = make_generator(derive_seed(0, "corruption-examples"))
        cells = [figures.image_cell("clean", F.interpolate(x, size=size, mode="area")[0].numpy())]
        for name in p.corruptions:
            y = corrupt(x, name, p.example_severity, generator=gen)
            cells.append(figures.image_cell(name, F.interpolate(y, size=size, mode="area")[0].numpy()))
        return figures.image_grid(f"Example corruptions (severity {p.example_severity})",
                                  [{"label": data.ids[0], "images": cells}],
                                  caption="an illustrative draw on the first audited image, not the evaluated one")
