"""Stage ``attention``: where a ViT's attention goes on clean, naturally corrupted and adversarial patches.

Threat model: analysis, not an attack score. One token-aligned patch per clean-correct
image is (a) replaced by its natural corruption and (b) replaced by a white-box adversarial
pattern (the patch attack, early-stopped). The attention rollout share rho on that patch is
compared with the clean image's: Gu et al. report that attention ignores naturally corrupted
patches (delta rho <= 0) but is drawn to adversarial ones (delta rho >> 0).

Paper: Gu, Tresp & Qin, "Are Vision Transformers Robust to Patch Perturbations?" (ECCV
2022), ``rollout_vis.py`` (METHODS.md §1.5); rollout: Abnar & Zuidema (2020). Views at
T != 1 use the attention-temperature defense, the adversarial patch re-optimised against it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from robaudit import figures
from robaudit.analysis.attention import HEAD_FUSIONS, AttentionRecorder, token_geometry
from robaudit.analysis.attention_inspector import (
    inspector_figure,
    inspector_view_arrays,
    layer_head_share,
    rollout_share,
    to_uint8_image,
)
from robaudit.attacks.patches.evaluation import headline_first, mean_ci, predict
from robaudit.attacks.patches.masks import positions_to_mask, random_positions
from robaudit.attacks.patches.natural import corrupt_image, paste
from robaudit.attacks.patches.patch_attack import PatchAttack
from robaudit.data import Batch, Dataset
from robaudit.defenses.attention_temperature import attention_temperature, attention_temperature_of
from robaudit.errors import CapabilityError, ParameterError
from robaudit.model import Capability, ModelAdapter
from robaudit.stage import Skip, Stage, StageKind, StageOutput, UnitOutput
from robaudit.stats import rate_metrics

VERSIONS = ("clean", "natural", "adv")


@dataclass(frozen=True)
class AttentionAnalysisParams:
    """Images, perturbations (natural corruption, adversarial budget), rollout and inspector options."""

    max_images: int = 64
    corruption: str = "gaussian_noise"
    severity: int = 5
    steps: int = 100
    alpha: float = 8 / 255
    head_fusion: str = "mean"
    discard_ratio: float = 0.9
    temperatures: tuple[float, ...] = (1.0, 2.0, 4.0)
    inspector_images: int = 4
    batch_size: int = 64

    def __post_init__(self) -> None:
        if self.max_images < 1:
            raise ParameterError(f"max_images must be >= 1, got {self.max_images}")
        if not 1 <= self.severity <= 5:
            raise ParameterError(f"severity must be in 1..5, got {self.severity}")
        if self.steps < 1 or not 0 < self.alpha <= 1:
            raise ParameterError(f"need steps >= 1 and alpha in (0, 1], got {self.steps}, {self.alpha}")
        if self.head_fusion not in HEAD_FUSIONS:
            raise ParameterError(f"head_fusion must be one of {list(HEAD_FUSIONS)}, got {self.head_fusion!r}")
        if not 0 <= self.discard_ratio < 1:
            raise ParameterError(f"discard_ratio must be in [0, 1), got {self.discard_ratio}")
        if not self.temperatures or any(not math.isfinite(t) or t <= 0 for t in self.temperatures):
            raise ParameterError(f"temperatures must be numbers > 0 (e.g. [1, 2, 4]), got {list(self.temperatures)}")
        if self.inspector_images < 0 or self.batch_size < 1:
            raise ParameterError("inspector_images must be >= 0 and batch_size >= 1")


class AttentionAnalysis(Stage):
    """Rollout attention share on perturbed patches (clean vs natural vs adversarial) + inspector."""

    name = "attention"
    kind = StageKind.ATTENTION
    requires = frozenset({Capability.ATTENTION, Capability.GRADIENTS})
    Params = AttentionAnalysisParams
    unit_size = None  # the inspector and the summaries need the selected images together
    profiles = {
        "quick": {"max_images": 24, "steps": 16, "alpha": 24 / 255, "temperatures": (1.0,), "inspector_images": 3},
        "standard": {"max_images": 64, "steps": 100, "alpha": 8 / 255, "temperatures": (1.0, 2.0, 4.0)},
        "full": {"max_images": 256, "steps": 500, "alpha": 4 / 255, "temperatures": (1.0, 2.0, 4.0)},
    }
    description = "Gu et al. (ECCV'22): attention rollout share on natural vs adversarial patches."
    metric_docs = {
        "attn_share_delta_natural": "mean rollout share on the patch, corrupted minus clean",
        "attn_share_delta_adv": "mean rollout share on the patch, adversarial minus clean (all attacked)",
        "attn_share_delta_adv.fooled": "same, over the images the adversarial patch fooled",
        "attn_share_<clean|natural|adv>": "mean rollout share rho on the patch token",
        "attn_share_uniform": "1 / number of patch tokens (share of a uniform map)",
        "attn_layer_share_delta_<natural|adv>.l<l>": "raw CLS attention share change in layer l (head mean)",
    }

    def check(self, model: ModelAdapter, data: Dataset) -> None:
        if not model.has(Capability.ATTENTION):
            raise Skip("model has no timm attention (a timm ViT/DeiT-family torch model is needed)")
        try:
            token_geometry(model.torch_module())
        except CapabilityError as err:
            raise Skip(f"model has no timm attention usable for rollout: {err}") from err

    def run_unit(self, model: ModelAdapter, batch: Batch, *, generator: torch.Generator) -> UnitOutput:
        p = self.params
        self.check(model, None)  # type: ignore[arg-type]
        prefix, grid, patch = token_geometry(model.torch_module())
        s = patch[0]
        clean = predict(model, batch.x, p.batch_size)
        chosen = (clean == batch.y.cpu()).nonzero().flatten()[: p.max_images]
        m = len(chosen)
        if m == 0:
            raise Skip("no clean-correct image to analyse")
        x, y0 = batch.x[chosen], clean[chosen].to(batch.x.device)
        pos = random_positions(m, 1, grid, generator)
        x_nat = paste(x, corrupt_image(x, p.corruption, p.severity, generator),
                      positions_to_mask(pos, grid, s).to(x.device))
        attack = PatchAttack(s, steps=p.steps, alpha=p.alpha, batch_size=p.batch_size)
        res = attack.perturb(model, x, y0, torch.arange(m), pos[:, 0], generator=generator)
        x_adv = attack.patched_images(x, torch.arange(m), pos[:, 0], res.patches)
        rec = AttentionRecorder(model.torch_module())
        arrays: dict[str, np.ndarray] = {"sample_index": chosen.numpy(), "position": pos[:, 0].numpy(),
                                         "adv_success": res.success.numpy(),
                                         "geometry": np.array([[prefix, grid[0], grid[1], s]] * m)}
        for version, xv in zip(VERSIONS, (x, x_nat, x_adv)):
            rhos, shares, preds = [], [], []
            for i in range(0, m, p.batch_size):
                maps = rec(xv[i : i + p.batch_size])
                rho, _ = rollout_share(maps, pos[i : i + p.batch_size], p.head_fusion, p.discard_ratio)
                rhos.append(rho.cpu())
                shares.append(layer_head_share(maps, pos[i : i + p.batch_size]).cpu())
                preds.append(maps.logits.argmax(1).cpu())
            arrays[f"rho_{version}"] = torch.cat(rhos).numpy()
            arrays[f"share_{version}"] = torch.cat(shares).numpy()
            arrays[f"pred_{version}"] = torch.cat(preds).numpy()
        arrays.update(self._inspector(model, x, x_nat, x_adv, y0, pos, s, generator))
        counters = {"forward": float(len(batch) + 3 * m + res.forward_samples),
                    "backward": float(res.backward_samples), "unverified": float(res.unverified)}
        return UnitOutput(arrays=arrays, counters=counters)

    def _inspector(self, model: ModelAdapter, x: torch.Tensor, x_nat: torch.Tensor, x_adv: torch.Tensor,
                   y0: torch.Tensor, pos: torch.Tensor, s: int, generator: torch.Generator) -> dict[str, np.ndarray]:
        p = self.params
        k = min(p.inspector_images, len(x))
        if k == 0:
            return {}
        attn, roll, img, version, temp = [], [], [], [], []
        for t in p.temperatures:
            variant = model if t == 1.0 else attention_temperature(model, t)
            adv = x_adv[:k]
            if t != 1.0:  # adaptive: re-optimise the patch against the temperature-scaled model
                attack = PatchAttack(s, steps=p.steps, alpha=p.alpha, batch_size=p.batch_size)
                res = attack.perturb(variant, x[:k], y0[:k], torch.arange(k), pos[:k, 0], generator=generator)
                adv = attack.patched_images(x[:k], torch.arange(k), pos[:k, 0], res.patches)
            rec = AttentionRecorder(variant.torch_module())
            for code, xv in enumerate((x[:k], x_nat[:k], adv)):
                a, r = inspector_view_arrays(rec(xv), p.head_fusion, p.discard_ratio)
                attn.append(a)
                roll.append(r)
                img.append(to_uint8_image(xv))
                version.append(np.full(k, code))
                temp.append(np.full(k, attention_temperature_of(variant)))  # effective T (variants may be defended)
        return {"insp_attn": np.stack(attn, 1), "insp_rollout": np.stack(roll, 1), "insp_img": np.stack(img, 1),
                "insp_version": np.stack(version, 1), "insp_temp": np.stack(temp, 1),
                "insp_pos": pos[:k, 0].numpy()}

    def summarize(self, arrays: dict[str, np.ndarray], data: Dataset, counters: dict[str, float]) -> StageOutput:
        p = self.params
        prefix, gh, gw, s = (int(v) for v in arrays["geometry"][0])
        rho = {v: arrays[f"rho_{v}"] for v in VERSIONS}
        fooled = arrays["adv_success"].astype(bool)
        m = len(fooled)
        metrics: dict[str, float] = {"images_n": float(m), "attn_share_uniform": 1.0 / (gh * gw)}
        for v in VERSIONS:
            metrics.update(mean_ci(f"attn_share_{v}", rho[v]))
        metrics.update(mean_ci("attn_share_delta_natural", rho["natural"] - rho["clean"]))
        metrics.update(mean_ci("attn_share_delta_adv", rho["adv"] - rho["clean"]))
        metrics.update(mean_ci("attn_share_delta_adv.fooled", (rho["adv"] - rho["clean"])[fooled]))
        metrics.update(rate_metrics("adv_patch_fooled", int(fooled.sum()), m))
        clean_pred = arrays["pred_clean"]
        metrics.update(rate_metrics("natural_patch_fooled", int((arrays["pred_natural"] != clean_pred).sum()), m))
        d_nat = arrays["share_natural"] - arrays["share_clean"]  # (m, L, H)
        d_adv = arrays["share_adv"] - arrays["share_clean"]
        for layer in range(d_adv.shape[1]):
            metrics[f"attn_layer_share_delta_natural.l{layer}"] = float(d_nat[:, layer].mean())
            metrics[f"attn_layer_share_delta_adv.l{layer}"] = float(d_adv[:, layer].mean())
        lo = [metrics[f"attn_share_{v}.ci_low"] for v in VERSIONS]
        hi = [metrics[f"attn_share_{v}.ci_high"] for v in VERSIONS]
        layers = [f"layer {i}" for i in range(d_adv.shape[1])]
        heads = [f"head {h}" for h in range(d_adv.shape[2])]
        figs = [
            figures.bar_chart("Rollout attention share on the perturbed patch",
                              ["clean", "natural corruption", "adversarial"],
                              [metrics[f"attn_share_{v}"] for v in VERSIONS], y_label="share rho",
                              low=lo, high=hi,
                              caption=f"uniform share = 1/{gh * gw} = {1 / (gh * gw):.4f}; n = {m} images; "
                                      f"95% normal intervals"),
            figures.heatmap("Change of CLS attention share on the patch: adversarial - clean",
                            d_adv.mean(0), row_labels=layers, col_labels=heads, value_label="delta share"),
            figures.heatmap("Change of CLS attention share on the patch: natural - clean",
                            d_nat.mean(0), row_labels=layers, col_labels=heads, value_label="delta share"),
        ]
        if "insp_attn" in arrays and gh == gw:
            idx = [int(arrays["sample_index"][i]) for i in range(arrays["insp_attn"].shape[0])]
            names = data.class_names
            labels = [names[int(data.y[i])] if names else str(int(data.y[i])) for i in idx]
            figs.append(inspector_figure(
                "Attention inspector", f"{s}x{s} px patch = one token; rollout: {p.head_fusion} fusion, discard "
                f"{p.discard_ratio}; adversarial views re-optimised at each temperature",
                gh, tuple(data.x.shape[2:]), arrays, [data.ids[i] for i in idx], labels))
        notes = [f"{m} clean-correct images, one random token-aligned patch each; natural: {p.corruption}@"
                 f"{p.severity}; adversarial: {p.steps} steps, alpha {p.alpha:.4f}, early stop (fooled "
                 f"{int(fooled.sum())}/{m}). Rollout strips {prefix} prefix token(s)."]
        warnings = []
        if counters.get("unverified", 0):
            warnings.append(f"{int(counters['unverified'])} adversarial successes were not re-verified")
        budget = {"images": m, "steps": p.steps, "alpha": p.alpha, "temperatures": list(p.temperatures),
                  "inspector_images": int(arrays["insp_attn"].shape[0]) if "insp_attn" in arrays else 0}
        metrics = headline_first(metrics, ["attn_share_delta_adv", "attn_share_delta_natural"])
        return StageOutput(metrics=metrics, figures=figs, notes=notes, warnings=warnings, budget=budget)
