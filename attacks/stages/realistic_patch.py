"""Stage ``realistic_patch``: does an adversarial patch survive realistic rendering?

Threat model: a white-box attacker prints one unconstrained patch (side ``patch_fraction``
of the image side) on a planar object in the scene. The audit measures its attack success
rate (ASR = clean-correct and patched-wrong / clean-correct, vs ground truth) when it is
pasted digitally (axis-aligned, no lighting) and when it is rendered realistically (random
pose of the object plane + relighting fitted to the object's pixels), plus the ablations
geometric-only and lighting-only; once for a patch optimised digitally and once for a
patch re-optimised with EOT under the realistic transformations.

Paper: Hingun, Sitawarin, Li & Wagner, "REAP: A Large-Scale Realistic Adversarial Patch
Benchmark" (ICCV 2023), METHODS.md §2. Classifiers have no keypoints, so the object is a
synthetic centred square (labelled "synthetic", not REAP). Expected: ASR_synthetic >=
ASR_realistic for the digital patch, with a smaller gap for the EOT patch.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch
from robaudit.attacks.patches.eot_patch import EOTPatch
from robaudit.attacks.patches.evaluation import headline_first
from robaudit.attacks.patches.realistic_patch_report import figures_for, metrics_for
from robaudit.attacks.patches.synthetic_scene import (
    PatchLocation,
    Rendering,
    SceneDraw,
    SceneSpec,
    SyntheticScene,
)

from robaudit.data import Batch, Dataset
from robaudit.errors import ParameterError
from robaudit.model import Capability, ModelAdapter
from robaudit.stage import Skip, Stage, StageKind, StageOutput, UnitOutput

PATCHES = ("digital", "eot")


@dataclass(frozen=True)
class RealisticPatchParams:
    """Patch geometry (fractions of the image side), optimiser budget and transformation ranges."""

    mode: str = "universal"
    object_fraction: float = SceneSpec.object_fraction
    patch_fraction: float = SceneSpec.patch_fraction
    location: str = SceneSpec.location.value
    steps: int = 300
    lr: float = 0.01
    eot_samples: int = 4
    tv_weight: float = 1e-5
    train_fraction: float = 0.5
    rotation_deg: float = SceneSpec.rotation_deg
    translate: float = SceneSpec.translate
    scale_low: float = SceneSpec.scale_low
    scale_high: float = SceneSpec.scale_high
    perspective: float = SceneSpec.perspective
    relight_percentile: float = SceneSpec.relight_percentile
    light_a_jitter: float = SceneSpec.light_a_jitter
    light_b_jitter: float = SceneSpec.light_b_jitter
    batch_size: int = 128
    examples: int = 4

    def __post_init__(self) -> None:
        if self.mode not in ("universal", "per_image"):
            raise ParameterError(f"mode must be 'universal' or 'per_image', got {self.mode!r}")
        if self.location not in [loc.value for loc in PatchLocation]:
            raise ParameterError(f"location must be one of center/bottom/top/random, got {self.location!r}")
        if not 0 < self.patch_fraction <= self.object_fraction <= 1:
            raise ParameterError("need 0 < patch_fraction <= object_fraction <= 1 (fractions of the image side), "
                                 f"got {self.patch_fraction} and {self.object_fraction}")
        for name in ("steps", "eot_samples", "batch_size"):
            if getattr(self, name) < 1:
                raise ParameterError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.tv_weight < 0:
            raise ParameterError(f"lr must be > 0 and tv_weight >= 0 (defaults 0.01, 1e-5), got {self.lr}, "
                                 f"{self.tv_weight}")
        if not 0 < self.train_fraction < 1:
            raise ParameterError(f"train_fraction must be in (0, 1) (universal patch attacker share), "
                                 f"got {self.train_fraction}")
        if not (0 <= self.rotation_deg <= 90 and 0 <= self.translate <= 0.5 and 0 <= self.perspective <= 0.25):
            raise ParameterError("need rotation_deg in [0, 90], translate in [0, 0.5], perspective in [0, 0.25]")
        if not 0 < self.scale_low <= self.scale_high:
            raise ParameterError(f"need 0 < scale_low <= scale_high, got {self.scale_low}, {self.scale_high}")
        if not 0 <= self.relight_percentile <= 1:
            raise ParameterError(f"relight_percentile must be in [0, 1] (REAP: 0.2), got {self.relight_percentile}")
        if not (0 <= self.light_a_jitter < 1 and 0 <= self.light_b_jitter <= 0.5):
            raise ParameterError("need light_a_jitter in [0, 1) and light_b_jitter in [0, 0.5]")
        if self.examples < 0:
            raise ParameterError(f"examples must be >= 0, got {self.examples}")


def scene_for(p: RealisticPatchParams, hw: tuple[int, int]) -> SyntheticScene:
    shared = {f.name: getattr(p, f.name) for f in fields(SceneSpec) if f.name not in ("image_hw", "location")}
    return SyntheticScene(SceneSpec(image_hw=(int(hw[0]), int(hw[1])), location=PatchLocation(p.location), **shared))


def patched_predictions(model: ModelAdapter, scene: SyntheticScene, x: torch.Tensor, patch: torch.Tensor,
                        draw: SceneDraw, rendering: Rendering, batch_size: int) -> torch.Tensor:
    """Top-1 predictions of ``x`` with ``patch`` ((1|n, C, s, s)) rendered under ``rendering``."""
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            sl = slice(i, i + batch_size)
            pb = patch if patch.shape[0] == 1 else patch[sl]
            d = SceneDraw(draw.quad[sl], draw.offset[sl], draw.light[sl])
            out.append(model.logits(scene.render(x[sl], pb, d, rendering)).argmax(1).cpu())
    return torch.cat(out)


class RealisticPatch(Stage):
    """ASR of an adversarial patch under digital vs realistic (geometric + lighting) rendering."""

    name = "realistic_patch"
    kind = StageKind.PATCH
    requires = frozenset({Capability.GRADIENTS})
    Params = RealisticPatchParams
    unit_size = None  # a universal patch is optimised on part of the set and evaluated on the rest
    profiles = {
        "quick": {"steps": 50, "lr": 0.1, "eot_samples": 1, "batch_size": 32, "examples": 3},
        "standard": {"steps": 500, "lr": 0.03, "eot_samples": 4, "batch_size": 64},
        "full": {"steps": 1000, "eot_samples": 8},
    }
    description = ("Synthetic-object realistic patch rendering after Hingun et al. (ICCV'23): the same patch "
                   "pasted digitally vs warped + relit; EOT re-optimisation.")
    metric_docs = {
        "asr_synthetic": "digitally optimised patch, digital paste: clean-correct & patched-wrong / clean-correct",
        "asr_realistic": "digitally optimised patch, random object pose + percentile relight",
        "asr_gap": "asr_synthetic - asr_realistic (digitally optimised patch)",
        "asr_ablation.geometric": "digitally optimised patch, pose only (no relight)",
        "asr_ablation.lighting": "digitally optimised patch, relight only (axis-aligned)",
        "eot.asr_realistic": "EOT-optimised patch under realistic rendering (eot.* = the EOT patch)",
        "clean_accuracy": "top-1 accuracy on the evaluation images",
    }

    def check(self, model: ModelAdapter, data: Dataset) -> None:
        if self.params.mode == "universal" and len(data) < 2:
            raise Skip("a universal patch needs >= 2 images (attacker images + evaluation images)")
        h, w = data.x.shape[2:]
        if scene_for(self.params, (h, w)).spec.patch_side < 1:
            raise Skip("the image is too small for the requested patch")

    def run_unit(self, model: ModelAdapter, batch: Batch, *, generator: torch.Generator) -> UnitOutput:
        p = self.params
        x, y = batch.x, batch.y
        n = len(batch)
        scene = scene_for(p, tuple(x.shape[2:]))
        universal = p.mode == "universal"
        clean = model.predict(x, batch_size=p.batch_size).cpu()
        draw = scene.draw(n, generator)  # one evaluation scene per image, shared by every rendering and patch
        evaluate = np.ones(n, dtype=bool)
        train = torch.arange(n)
        if universal:
            perm = torch.randperm(n, generator=generator, device=generator.device)
            n_train = min(n - 1, max(1, int(round(p.train_fraction * n))))
            train = perm[:n_train].sort().values
            evaluate[train.numpy()] = False
        train_draw = SceneDraw(draw.quad[train], draw.offset[train], draw.light[train])
        arrays: dict[str, np.ndarray] = {"label": y.cpu().numpy(), "clean_pred": clean.numpy(), "evaluate": evaluate,
                                         "quad": draw.quad.numpy(), "offset": draw.offset.numpy()}
        counters = {"forward": float(n), "backward": 0.0}
        for tag, rendering in (("digital", Rendering.DIGITAL), ("eot", Rendering.REALISTIC)):
            attack = EOTPatch(scene, steps=p.steps, lr=p.lr, eot_samples=p.eot_samples, tv_weight=p.tv_weight,
                              universal=universal, rendering=rendering, batch_size=p.batch_size)
            res = attack.perturb(model, x[train], y[train], generator=generator, draw=train_draw)
            counters["forward"] += res.forward_samples
            counters["backward"] += res.backward_samples
            arrays[f"patch_{tag}"] = res.patch.cpu().numpy()
            arrays[f"loss_{tag}"] = res.loss_history.numpy()
            for r in Rendering:
                pred = patched_predictions(model, scene, x, res.patch, draw, r, p.batch_size)
                arrays[f"pred_{tag}_{r.value}"] = pred.numpy()
                counters["forward"] += n
        return UnitOutput(arrays=arrays, counters=counters)

    def summarize(self, arrays: dict[str, np.ndarray], data: Dataset, counters: dict[str, float]) -> StageOutput:
        p = self.params
        scene = scene_for(p, tuple(data.x.shape[2:]))
        metrics = metrics_for(arrays)
        figs = figures_for(arrays, data, scene, p.examples)
        ev = arrays["evaluate"]
        s, side = scene.spec.patch_side, scene.spec.object_side
        split = (f"universal patch: optimised on {int((~ev).sum())} attacker images (chosen by the seed), ASR on "
                 f"the other {int(ev.sum())}" if p.mode == "universal" else
                 "per-image patches: each optimised and evaluated on its own image")
        notes = [
            "Object geometry is synthetic (no keypoint annotations): a centred square of side "
            f"{side} px carries a {s}x{s} px patch ({p.location}); rendering follows Hingun et al.'s pipeline "
            "(homography warp + percentile relight + alpha composite). Label: synthetic, not the REAP benchmark.",
            "asr_* metrics use the DIGITALLY optimised patch (no EOT); eot.asr_* use the patch re-optimised with "
            f"EOT under the realistic transformations ({p.eot_samples} samples per image per step).",
            "Each evaluation image gets one random object pose shared by every rendering and both patches "
            "(paired comparison); lighting uses that image's 20/80-percentile relight without jitter.",
            split + ".",
        ]
        budget = {"steps_per_patch": p.steps, "lr": p.lr, "eot_samples": p.eot_samples, "tv_weight": p.tv_weight,
                  "patch_side_px": s, "object_side_px": side, "mode": p.mode,
                  "attacker_images": int((~ev).sum()) if p.mode == "universal" else int(len(ev)),
                  "evaluation_images": int(ev.sum()), "optimiser": "Adam on z, P = (tanh z + 1) / 2",
                  "transforms": {"rotation_deg": p.rotation_deg, "translate": p.translate,
                                 "scale": [p.scale_low, p.scale_high], "perspective": p.perspective,
                                 "light_a_jitter": p.light_a_jitter, "light_b_jitter": p.light_b_jitter,
                                 "relight_percentile": p.relight_percentile}}
        warnings = []
        if metrics.get("clean_correct_n", 0) == 0:
            warnings.append("no evaluation image is classified correctly: ASR is undefined")
        metrics = headline_first(metrics, ["asr_realistic", "asr_synthetic", "asr_gap"])
        return StageOutput(metrics=metrics, figures=figs, notes=notes, warnings=warnings, budget=budget)
