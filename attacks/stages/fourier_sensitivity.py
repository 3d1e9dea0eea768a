"""Stage ``fourier``: the Fourier heat map of a classifier's error (Yin et al., NeurIPS 2019).

Threat model: benign single-frequency perturbations ``clip(x + v r U_ij)`` of fixed L2
norm v with random signs r per image and channel (METHODS §8); no optimisation, logits
only, so it runs on ONNX models too.

Paper: Yin, Gontijo Lopes, Shlens, Cubuk, Gilmer, "A Fourier Perspective on Model
Robustness in Computer Vision" (NeurIPS 2019); official ``frequency_analysis/freq_heatmap.py``.
Expected: naturally trained models resist the lowest frequencies and err at mid/high ones;
Gaussian-noise augmentation / adversarial training move the sensitivity to low frequencies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from robaudit.attacks.fourier import band_masks, evaluation_grid, fourier_errors, mirror

from robaudit import figures
from robaudit.data import Batch, Dataset
from robaudit.errors import ParameterError
from robaudit.model import ModelAdapter
from robaudit.stage import Stage, StageKind, StageOutput, UnitOutput
from robaudit.stats import rate_metrics

SMALL_IMAGE = 64  # at most this many pixels a side: the whole spectrum is evaluated by default


@dataclass(frozen=True)
class FourierSensitivityParams:
    """``norm`` v (None: 4.0 up to 64 px, 15.7 above, Yin et al.'s CIFAR / ImageNet values);
    ``window``: half-width of the dense centred window; ``stride``: spacing of the sparse samples
    outside it. Defaults: the whole spectrum up to 64 px, else window 31 / stride 7; with
    ``coarse`` (quick profile): window 2 / stride 4 up to 64 px, else window 15 / stride 14."""

    norm: float | None = None
    rand_flip: bool = True
    clip: bool = True
    window: int | None = None
    stride: int | None = None
    coarse: bool = False
    batch_size: int = 512

    def __post_init__(self) -> None:
        if self.norm is not None and not (math.isfinite(self.norm) and self.norm >= 0):
            raise ParameterError(f"norm must be a finite L2 norm >= 0 in [0, 1] pixel units, got {self.norm}")
        if self.window is not None and self.window < 0:
            raise ParameterError(f"window must be >= 0 (or omitted for the default), got {self.window}")
        if self.stride is not None and self.stride < 1:
            raise ParameterError(f"stride must be >= 1, got {self.stride}")
        if self.batch_size < 1:
            raise ParameterError(f"batch_size must be >= 1, got {self.batch_size}")

    def resolve(self, h: int, w: int) -> tuple[float, int | None, int]:
        """(v, window, stride) for an H x W image (window None: the whole spectrum)."""
        small = max(h, w) <= SMALL_IMAGE
        norm = self.norm if self.norm is not None else (4.0 if small else 15.7)
        window: int | None
        if self.coarse:
            window, stride = (2, 4) if small else (15, 14)
        else:
            window, stride = (None, 1) if small else (31, 7)
        if self.window is not None:
            window = self.window
        if self.stride is not None:
            stride = self.stride
        return norm, window, stride


class FourierSensitivity(Stage):
    """Error heat map over Fourier basis perturbations, radial band errors and a high-frequency index."""

    name = "fourier"
    kind = StageKind.CORRUPTION
    Params = FourierSensitivityParams
    unit_size = 64
    profiles = {
        "quick": {"coarse": True},
        "standard": {},
        "full": {},
    }
    description = "Yin et al. (NeurIPS'19): test error under each Fourier basis perturbation of norm v."
    metric_docs = {
        "clean_error": "error on unperturbed images (95% Clopper-Pearson CI)",
        "band_error.<low|mid|high>": "error averaged over a radial frequency band (r <= S/8, <= S/4, above); "
                                     "CI: normal approx. over images",
        "hf_index": "band_error.high - band_error.low (> 0.2: HF-sensitive)",
        "mean_error": "error averaged over the whole spectrum (sampling-weighted)",
        "max_error": "largest error at any evaluated frequency",
    }

    def run_unit(self, model: ModelAdapter, batch: Batch, *, generator: torch.Generator) -> UnitOutput:
        p = self.params
        h, w = batch.x.shape[-2:]
        norm, window, stride = p.resolve(h, w)
        grid = evaluation_grid(h, w, window, stride)
        wrong, change = fourier_errors(model.logits, batch.x, batch.y, grid.positions, norm=norm,
                                       generator=generator, rand_flip=p.rand_flip, clip=p.clip,
                                       batch_size=p.batch_size)
        with torch.no_grad():
            clean_wrong = (model.logits(batch.x).argmax(1).cpu() != batch.y.cpu()).numpy()
        n = len(batch)
        return UnitOutput(arrays={"wrong": wrong.cpu().numpy().astype(np.uint8), "logit_change": change.cpu().numpy(),
                                  "clean_wrong": clean_wrong},
                          counters={"forward": float(n * (1 + len(grid.positions)))})

    def summarize(self, arrays: dict[str, np.ndarray], data: Dataset, counters: dict[str, float]) -> StageOutput:
        p = self.params
        h, w = data.x.shape[-2:]
        norm, window, stride = p.resolve(h, w)
        grid = evaluation_grid(h, w, window, stride)
        wrong = arrays["wrong"].astype(np.float64)  # (n, K)
        n = wrong.shape[0]
        clean_wrong = arrays["clean_wrong"].astype(bool)
        metrics = rate_metrics("clean_error", int(clean_wrong.sum()), n)
        heat = mirror(wrong.mean(axis=0), grid)
        bands = band_masks(h, w)
        band_values = {}
        for band, mask in {**bands, "all": np.ones((h, w), dtype=bool)}.items():
            weights = np.zeros(len(grid.positions))
            sel = mask & (grid.slot >= 0)
            np.add.at(weights, grid.slot[sel], grid.weight[sel])
            if weights.sum() == 0:
                band_values[band] = float("nan")
                continue
            per_image = wrong @ weights / weights.sum()
            mean = float(per_image.mean())
            band_values[band] = mean
            if band == "all":
                metrics["mean_error"] = mean
                continue
            half = 1.96 * float(per_image.std(ddof=1)) / math.sqrt(n) if n > 1 else float("nan")
            metrics.update({f"band_error.{band}": mean, f"band_error.{band}.ci_low": max(0.0, mean - half),
                            f"band_error.{band}.ci_high": min(1.0, mean + half), f"band_error.{band}.n": float(n)})
        metrics["hf_index"] = band_values["high"] - band_values["low"]
        metrics["max_error"] = float(np.nanmax(heat))
        metrics["positions_evaluated"] = float(len(grid.positions))
        metrics["norm"] = float(norm)
        head = ["hf_index", "band_error.low", "band_error.mid", "band_error.high", "clean_error"]
        metrics = {k: metrics[k] for k in head} | {k: v for k, v in metrics.items() if k not in head}
        change = mirror(arrays["logit_change"].astype(np.float64).mean(axis=0), grid)
        figs = self._heatmaps(heat, change, window, stride, norm, n)
        figs.append(figures.bar_chart("Error per frequency band", ["low", "mid", "high"],
                                      [metrics[f"band_error.{b}"] for b in ("low", "mid", "high")],
                                      y_label="error", low=[metrics[f"band_error.{b}.ci_low"] for b in bands],
                                      high=[metrics[f"band_error.{b}.ci_high"] for b in bands],
                                      caption=f"clean error {metrics['clean_error']:.3f}"))
        sampled = "the whole spectrum" if window is None else (
            f"a dense centred {2 * window + 1}x{2 * window + 1} window plus every {stride}th frequency elsewhere "
            f"(band averages weight sparse samples by {stride}^2)")
        notes = [
            f"Perturbation clip(x + v r U_ij) with v = {norm} (L2, [0, 1] pixels), "
            f"{'random signs per image and channel' if p.rand_flip else 'no sign flips'}"
            f"{', clipped to [0, 1]' if p.clip else ''}; evaluated {sampled}; one frequency of each conjugate "
            "pair is evaluated and mirrored (its partner is the same frequency in quadrature phase).",
            "Bands: radius r from the spectrum centre in frequency-index units, S = min(H, W): low r <= S/8, "
            "mid S/8 < r <= S/4, high r > S/4.",
        ]
        budget = {"norm": norm, "positions": int(len(grid.positions)), "images": n, "window": window,
                  "stride": stride, "forward_passes": counters.get("forward", 0.0)}
        return StageOutput(metrics=metrics, figures=figs, notes=notes, budget=budget)

    def _heatmaps(self, heat: np.ndarray, change: np.ndarray, window: int | None, stride: int, norm: float,
                  n: int) -> list[dict]:
        h, w = heat.shape
        ci, cj = h // 2, w // 2
        cap = f"v = {norm}, n = {n} images; centre = lowest frequency"
        if window is None:
            rows, cols = np.arange(h), np.arange(w)
            views = [("Fourier heat map: error", heat, "error", cap),
                     ("Fourier heat map: mean logit change", change / max(np.nanmax(change), 1e-12),
                      "relative logit change", "mean ||logits(x~) - logits(x)||_2, normalised by its maximum")]
            return [figures.heatmap(t, v, row_labels=[str(i - ci) for i in rows],
                                    col_labels=[str(j - cj) for j in cols], value_label=lab, vmin=0.0,
                                    vmax=1.0, caption=c, annotate=False) for t, v, lab, c in views]
        r0, r1 = max(0, ci - window), min(h, ci + window + 1)
        c0, c1 = max(0, cj - window), min(w, cj + window + 1)
        dense = heat[r0:r1, c0:c1]
        rows = np.array([i for i in range(h) if (i - ci) % stride == 0])
        cols = np.array([j for j in range(w) if (j - cj) % stride == 0])
        sparse = heat[np.ix_(rows, cols)]
        return [
            figures.heatmap("Fourier heat map: error (centred window)", dense,
                            row_labels=[str(i - ci) for i in range(r0, r1)],
                            col_labels=[str(j - cj) for j in range(c0, c1)], value_label="error", vmin=0.0,
                            vmax=1.0, caption=cap, annotate=False),
            figures.heatmap(f"Fourier heat map: error (every {stride}th frequency)", sparse,
                            row_labels=[str(i - ci) for i in rows], col_labels=[str(j - cj) for j in cols],
                            value_label="error", vmin=0.0, vmax=1.0, caption=cap, annotate=False),
        ]
