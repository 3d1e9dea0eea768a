"""Clean accuracy with a 95% CI, per-class accuracy and calibration (ECE, reliability diagram).

Threat model: none (the unperturbed evaluation set). The reference point for every other stage.
ECE follows Guo et al. 2017 (equal-width confidence bins, weighted |accuracy - confidence|).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from robaudit import figures
from robaudit.data import Batch, Dataset
from robaudit.errors import ParameterError
from robaudit.model import ModelAdapter
from robaudit.stage import Stage, StageKind, StageOutput, UnitOutput
from robaudit.stats import clopper_pearson, rate_metrics


@dataclass(frozen=True)
class CleanAccuracyParams:
    """``bins``: number of equal-width confidence bins for ECE and the reliability diagram."""

    bins: int = 15
    batch_size: int = 256

    def __post_init__(self) -> None:
        if self.bins < 2:
            raise ParameterError(f"bins must be >= 2, got {self.bins}")
        if self.batch_size < 1:
            raise ParameterError(f"batch_size must be >= 1, got {self.batch_size}")


class CleanAccuracy(Stage):
    """Top-1 accuracy, per-class accuracy and expected calibration error on clean inputs."""

    name = "clean_accuracy"
    kind = StageKind.ACCURACY
    Params = CleanAccuracyParams
    unit_size = 256
    description = "Top-1 accuracy on the clean audit set, per class, and calibration."
    metric_docs = {
        "accuracy": "top-1 accuracy vs ground truth (95% Clopper-Pearson CI)",
        "ece": "expected calibration error (equal-width bins)",
        "mean_confidence": "mean top-1 softmax probability",
        "nll": "mean negative log-likelihood of the true class",
        "per_class_accuracy.<k>": "accuracy on samples of class k",
    }

    def run_unit(self, model: ModelAdapter, batch: Batch, *, generator: torch.Generator) -> UnitOutput:
        probs = []
        with torch.no_grad():
            for i in range(0, len(batch), self.params.batch_size):
                probs.append(torch.softmax(model.logits(batch.x[i : i + self.params.batch_size]).float(), 1))
        p = torch.cat(probs)
        conf, pred = p.max(1)
        true_prob = p.gather(1, batch.y.view(-1, 1).to(p.device)).squeeze(1)
        # batch and logits may live on CUDA: numpy needs host tensors
        return UnitOutput(
            arrays={"pred": pred.cpu().numpy(), "label": batch.y.cpu().numpy(), "confidence": conf.cpu().numpy(),
                    "true_prob": true_prob.cpu().numpy()},
            counters={"forward": float(len(batch))},
        )

    def summarize(self, arrays: dict[str, np.ndarray], data: Dataset, counters: dict[str, float]) -> StageOutput:
        pred, label, conf = arrays["pred"], arrays["label"], arrays["confidence"]
        correct = pred == label
        n = len(label)
        metrics = rate_metrics("accuracy", int(correct.sum()), n)
        ece, bin_conf, bin_acc, bin_count = expected_calibration_error(conf, correct, self.params.bins)
        metrics["ece"] = ece
        metrics["mean_confidence"] = float(conf.mean())
        metrics["nll"] = float(-np.log(np.clip(arrays["true_prob"], 1e-12, 1.0)).mean())
        names = data.class_names
        rows, labels, accs, lows, highs = [], [], [], [], []
        for k in np.unique(label):
            mask = label == k
            kc, kn = int(correct[mask].sum()), int(mask.sum())
            lo, hi = clopper_pearson(kc, kn)
            metrics[f"per_class_accuracy.{int(k)}"] = kc / kn
            name = names[int(k)] if names and int(k) < len(names) else str(int(k))
            rows.append([name, kn, kc / kn, lo, hi])
            labels.append(name)
            accs.append(kc / kn)
            lows.append(lo)
            highs.append(hi)
        centers = (np.arange(self.params.bins) + 0.5) / self.params.bins
        used = bin_count > 0
        figs = [
            figures.line_chart(
                "Reliability diagram", "confidence", "accuracy",
                [figures.series("perfect calibration", [0, 1], [0, 1]),
                 figures.series("model", bin_conf[used], bin_acc[used])],
                y_range=(0.0, 1.0),
                caption=f"ECE = {ece:.4f} over {self.params.bins} equal-width bins; "
                        f"bins with samples: {int(used.sum())}. Bin centres: {', '.join(f'{c:.2f}' for c in centers[used][:6])}...",
            ),
            figures.bar_chart("Per-class accuracy", labels, accs, y_label="accuracy", low=lows, high=highs,
                              caption="95% Clopper-Pearson intervals"),
            figures.table("Per-class accuracy", ["class", "n", "accuracy", "ci_low", "ci_high"], rows),
        ]
        return StageOutput(metrics=metrics, figures=figs, budget={"samples": n, "ece_bins": self.params.bins})


def expected_calibration_error(
    confidence: np.ndarray, correct: np.ndarray, bins: int
) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """ECE plus per-bin mean confidence, accuracy and counts (equal-width bins on [0, 1])."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    count = np.bincount(index, minlength=bins).astype(np.float64)
    conf_sum = np.bincount(index, weights=confidence, minlength=bins)
    acc_sum = np.bincount(index, weights=correct.astype(np.float64), minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        bin_conf = np.where(count > 0, conf_sum / count, np.nan)
        bin_acc = np.where(count > 0, acc_sum / count, np.nan)
    used = count > 0
    ece = float(np.sum(count[used] * np.abs(bin_acc[used] - bin_conf[used])) / count.sum())
    return ece, bin_conf, bin_acc, count
