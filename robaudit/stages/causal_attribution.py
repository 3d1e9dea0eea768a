"""Stage ``causal``: class-specific causal graphs of hidden channels and causal explanation maps.

Threat model: interpretability audit, not an attack score. Channels of chosen hidden layers
are intervened on (set to a baseline) to measure their average causal effect on each class
logit; kept channels and path effects form a class-specific causal graph; a CAM-style map
over the causal channels of the last layer is compared with Grad-CAM, Integrated Gradients
and saliency for stability (Gaussian noise, and a prediction-preserving L-inf PGD
perturbation, eps 2/255) and faithfulness (deletion / insertion AUC, and the accuracy drop
when the top-k causal channels are ablated vs k random ones).

Paper: Ahmad, Bereux, Baret, Hashemi, Lecue, "Causal Analysis for Robust Interpretability of
Neural Networks" (arXiv 2305.08950). No official code or full text was available: the
algorithm is robaudit's operationalisation (METHODS §7.2); all effects are in logit space, and
the "mean" baseline is the mean activation over ALL analysed clean-correct images (every
class), so a class's effects are not measured against that class's own prototype.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from robaudit.analysis.causal import activation, baseline_value, channel_effects
from robaudit.analysis.causal_evaluation import (
    ablation_accuracy,
    causal_weights,
    default_layers,
    method_maps,
    patch_size,
)
from robaudit.analysis.causal_graph import build_causal_graph
from robaudit.analysis.causal_report import causal_figures
from robaudit.analysis.explanation_metrics import deletion_insertion_auc, spearman, topk_iou
from robaudit.data import Batch, Dataset
from robaudit.errors import ParameterError
from robaudit.model import Capability, ModelAdapter
from robaudit.stage import Skip, Stage, StageKind, StageOutput, UnitOutput

METHOD_NAMES = ("causal", "gradcam", "ig", "saliency")


@dataclass(frozen=True)
class CausalParams:
    """Layers, node/edge selection, images per class, stability/faithfulness protocol."""

    layers: tuple[str, ...] = ()
    auto_layers: int = 3
    map_layer: str | None = None
    k: int = 16
    baseline: str = "mean"
    n_per_class: int = 50
    edge_threshold: float = 0.05
    methods: tuple[str, ...] = METHOD_NAMES
    expl_images: int = 64
    noise_sigma: float = 0.02
    pgd_eps: float = 2 / 255
    pgd_steps: int = 10
    ig_steps: int = 50
    block: int | None = None
    blur_sigma: float = 5.0
    deletion_steps: int | None = 16
    ablation_k: int = 8
    random_repeats: int = 5
    graph_classes: int = 3
    figure_images: int = 3
    max_batch: int = 1024

    def __post_init__(self) -> None:
        if self.baseline not in ("mean", "zero", "0"):
            raise ParameterError(f"baseline must be 'mean' or 'zero', got {self.baseline!r}")
        if min(self.auto_layers, self.k, self.n_per_class, self.ablation_k, self.random_repeats) < 1:
            raise ParameterError("auto_layers, k, n_per_class, ablation_k and random_repeats must be >= 1")
        bad = [m for m in self.methods if m not in METHOD_NAMES]
        if bad or "causal" not in self.methods:
            raise ParameterError(f"methods must include 'causal' and be among {list(METHOD_NAMES)}, got "
                                 f"{list(self.methods)}")
        if not 0 <= self.edge_threshold <= 1 or self.noise_sigma < 0 or self.pgd_eps < 0:
            raise ParameterError("need 0 <= edge_threshold <= 1, noise_sigma >= 0 and pgd_eps >= 0")
        if self.deletion_steps is not None and self.deletion_steps < 1:
            raise ParameterError("deletion_steps must be >= 1 (or unset to evaluate after every block)")
        if self.expl_images < 0 or self.pgd_steps < 1 or self.ig_steps < 2 or (self.block is not None
                                                                               and self.block < 1):
            raise ParameterError("need expl_images >= 0, pgd_steps >= 1, ig_steps >= 2 and block >= 1")


class CausalAttribution(Stage):
    """Causal channel graph per class + stability/faithfulness of causal maps vs attribution baselines."""

    name = "causal"
    kind = StageKind.EXPLAIN
    requires = frozenset({Capability.TORCH_MODULE})
    Params = CausalParams
    unit_size = None  # per-class image sets span the whole audit set
    profiles = {
        "quick": {"auto_layers": 2, "k": 6, "n_per_class": 4, "expl_images": 12, "ig_steps": 16,
                  "pgd_steps": 5, "random_repeats": 3, "graph_classes": 2, "figure_images": 2, "deletion_steps": 8},
        "standard": {"k": 16, "n_per_class": 20, "expl_images": 48},
        "full": {"k": 16, "n_per_class": 50, "expl_images": 200, "random_repeats": 10, "deletion_steps": None},
    }
    description = "Causal path interventions on hidden channels (METHODS §7): graph, maps, stability, faithfulness."
    metric_docs = {
        "causal_ablation_drop": "accuracy drop (clean-correct images of each class) when the top-k causal channels "
                                "of the last layer are set to their baseline",
        "random_ablation_drop": "same for k random channels of that layer (mean over repeats)",
        "expl_stability.<method>.<spearman|iou>": "similarity of maps of x and x + N(0, noise_sigma^2)",
        "expl_stability.<method>.pgd.<spearman|iou>": "same under a prediction-preserving L-inf PGD perturbation",
        "expl_deletion_auc.<method>": "deletion AUC of p_y (lower = more faithful)",
        "causal_ablation_prob_drop": "drop of the mean true-class probability under the top-k causal ablation "
                                     "(random_ablation_prob_drop: k random channels)",
        "expl_insertion_auc.<method>": "insertion AUC of p_y (higher = more faithful)",
    }

    def check(self, model: ModelAdapter, data: Dataset) -> None:
        if not model.has(Capability.TORCH_MODULE):
            raise Skip("no torch module (needed for hooks on hidden layers)")
        import importlib.util

        baselines = [m for m in self.params.methods if m != "causal"]
        if baselines and importlib.util.find_spec("captum") is None:
            raise Skip(f"the attribution baselines {baselines} need captum, which is not installed: "
                       "pip install captum (a robaudit dependency), or set params.methods = [\"causal\"]")

    def run_unit(self, model: ModelAdapter, batch: Batch, *, generator: torch.Generator) -> UnitOutput:
        p = self.params
        module = model.torch_module()
        layers = list(p.layers) or default_layers(module, p.auto_layers)
        with torch.no_grad():
            pred = torch.cat([model.logits(batch.x[i : i + 256]).argmax(1) for i in range(0, len(batch), 256)])
        ok = (pred.cpu() == batch.y.cpu())
        classes = sorted({int(c) for c in batch.y[ok].tolist()})
        if not classes:
            raise Skip("no clean-correct image to analyse")
        sets = {y: (ok & (batch.y.cpu() == y)).nonzero().flatten()[: p.n_per_class] for y in classes}
        nc = model.spec.num_classes
        every = torch.cat(list(sets.values()))
        bases = [baseline_value(activation(module, layer, batch.x[every]), p.baseline) for layer in layers]
        aces: list[torch.Tensor | None] = [None] * len(layers)
        edges, arrays = [], {}
        abl = np.full((nc, 5), np.nan)  # acc top-k, acc random, p_y clean, p_y top-k, p_y random
        for y in classes:
            xy = batch.x[sets[y]]
            eff = [channel_effects(module, layer, xy, y, baseline=b, max_batch=p.max_batch)
                   for layer, b in zip(layers, bases)]
            for li, e in enumerate(eff):
                table = aces[li]
                if table is None:
                    table = aces[li] = torch.full((nc, len(e)), float("nan"))
                table[y] = e.cpu()
            g = build_causal_graph(module, layers, xy, y, k=p.k, baseline=bases, max_batch=p.max_batch,
                                   edge_threshold=p.edge_threshold, effects=eff)
            edges += [(y, li, u, v, pe) for li, u, v, pe in g.edges]
            c_last = len(eff[-1])
            kk = min(p.ablation_k, c_last)
            rand = [torch.randperm(c_last, generator=generator)[:kk].tolist() for _ in range(p.random_repeats)]
            acc, prob = ablation_accuracy(module, layers[-1], xy, batch.y[sets[y]],
                                          [[], torch.sort(-eff[-1], stable=True).indices[:kk].tolist(), *rand],
                                          baseline=bases[-1], max_batch=p.max_batch)
            abl[y] = [float(acc[1]), float(acc[2:].mean()), float(prob[0]), float(prob[1]), float(prob[2:].mean())]
        done = [a for a in aces if a is not None]
        for li, a in enumerate(done):
            arrays[f"ace_{li}"] = a.numpy()
        arrays["edges"] = np.array(edges, dtype=np.float64).reshape(-1, 5)
        arrays["ablation_acc"] = abl
        arrays["class_n"] = np.array([len(sets.get(y, [])) for y in range(nc)])
        mi = self._map_layer(module, layers, batch.x[:1])
        arrays["map_layer"] = np.array([layers[mi]])
        arrays.update(self._explanations(model, module, layers[mi], batch, ok, done[mi], generator))
        arrays["layer_names"] = np.array(layers)
        return UnitOutput(arrays=arrays, counters={"classes": float(len(classes))})

    def _map_layer(self, module: torch.nn.Module, layers: list[str], x: torch.Tensor) -> int:
        """Index of the layer whose causal channels make the maps (and where Grad-CAM is taken).

        Default: the last chosen layer; for token layers (ViT) the penultimate one, because in a
        class-token ViT the last block's patch tokens never reach the head (their maps are 0).
        """
        p = self.params
        if p.map_layer is not None:
            if p.map_layer not in layers:
                raise ParameterError(f"map_layer {p.map_layer!r} must be one of the analysed layers {layers}")
            return layers.index(p.map_layer)
        if len(layers) >= 2 and activation(module, layers[-1], x).dim() == 3:
            return len(layers) - 2
        return len(layers) - 1

    def _explanations(self, model: ModelAdapter, module: torch.nn.Module, layer: str, batch: Batch,
                      ok: torch.Tensor, ace_last: torch.Tensor, generator: torch.Generator) -> dict[str, np.ndarray]:
        from robaudit.attacks.pgd import PGD

        p = self.params
        idx = ok.nonzero().flatten()[: p.expl_images]
        if len(idx) == 0:
            return {}
        x, y = batch.x[idx], batch.y[idx].to(batch.x.device)
        w = causal_weights(torch.nan_to_num(ace_last, nan=0.0), p.k)
        noisy = (x + p.noise_sigma * torch.randn(x.shape, generator=generator, device=generator.device).to(x.device)
                 ).clamp(0, 1)
        adv = PGD("linf", p.pgd_eps, steps=p.pgd_steps).perturb(model, x, y, generator=generator)
        with torch.no_grad():
            kept = (model.logits(adv).argmax(1) == y).cpu()
        block = p.block or patch_size(module) or 7
        out: dict[str, np.ndarray] = {"expl_index": idx.numpy(), "pgd_kept": kept.numpy()}
        for m in p.methods:
            maps = method_maps(m, module, layer, x, y, w, ig_steps=p.ig_steps)
            out[f"map_{m}"] = maps[: p.figure_images].cpu().numpy()
            m_noise = method_maps(m, module, layer, noisy, y, w, ig_steps=p.ig_steps)
            out[f"rho_noise_{m}"] = spearman(maps, m_noise).numpy()
            out[f"iou_noise_{m}"] = topk_iou(maps, m_noise).numpy()
            if kept.any():
                m_adv = method_maps(m, module, layer, adv[kept], y[kept], w, ig_steps=p.ig_steps)
                out[f"rho_pgd_{m}"] = spearman(maps[kept], m_adv).numpy()
                out[f"iou_pgd_{m}"] = topk_iou(maps[kept], m_adv).numpy()
            d, i = deletion_insertion_auc(model.logits, x, maps, y, block=block, sigma=p.blur_sigma,
                                          max_batch=p.max_batch, steps=p.deletion_steps)
            out[f"del_{m}"], out[f"ins_{m}"] = d.numpy(), i.numpy()
        return out

    def summarize(self, arrays: dict[str, np.ndarray], data: Dataset, counters: dict[str, float]) -> StageOutput:
        p = self.params
        layers = [str(s) for s in arrays["layer_names"]]
        abl = arrays["ablation_acc"]
        has = ~np.isnan(abl[:, 0])
        wts = arrays["class_n"][has].astype(np.float64)
        acc_c = float(np.average(abl[has, 0], weights=wts))
        acc_r = float(np.average(abl[has, 1], weights=wts))
        metrics: dict[str, float] = {  # the first metric is the report headline
            "causal_ablation_drop": 1.0 - acc_c, "random_ablation_drop": 1.0 - acc_r,
            "causal_ablation_acc": acc_c, "random_ablation_acc": acc_r,
            "causal_ablation_ratio": (1.0 - acc_c) / (1.0 - acc_r) if acc_r < 1 else float("nan"),
            "causal_images_n": float(wts.sum()), "causal_classes_n": float(has.sum()),
        }
        p_clean, p_top, p_rand = (float(np.average(abl[has, j], weights=wts)) for j in (2, 3, 4))
        metrics["causal_ablation_prob_drop"] = p_clean - p_top
        metrics["random_ablation_prob_drop"] = p_clean - p_rand
        for li in range(len(layers)):
            ace = arrays[f"ace_{li}"][has]
            metrics[f"causal_max_ace.l{li}"] = float(np.nanmax(ace))
        metrics["causal_edges_n"] = float(len(arrays["edges"]))
        for m in p.methods:
            for kind, key in (("spearman", "rho"), ("iou", "iou")):
                metrics[f"expl_stability.{m}.{kind}"] = _nanmean(arrays.get(f"{key}_noise_{m}"))
                metrics[f"expl_stability.{m}.pgd.{kind}"] = _nanmean(arrays.get(f"{key}_pgd_{m}"))
            metrics[f"expl_deletion_auc.{m}"] = _nanmean(arrays.get(f"del_{m}"))
            metrics[f"expl_insertion_auc.{m}"] = _nanmean(arrays.get(f"ins_{m}"))
        n_expl = len(arrays.get("expl_index", []))
        metrics["expl_images_n"] = float(n_expl)
        metrics["expl_pgd_kept_n"] = float(np.sum(arrays.get("pgd_kept", [])))
        notes = [f"layers: {', '.join(layers)}; baseline: {p.baseline} (over all analysed images); top-{p.k} channels per layer; effects in "
                 f"logit space; ablation: top-{p.ablation_k} causal vs {p.ablation_k} random channels of the last "
                 f"layer ({p.random_repeats} random draws); explanation maps and Grad-CAM at "
                 f"{arrays['map_layer'][0]}",
                 "METHODS §7 is robaudit's operationalisation: no official code or full text of the paper was "
                 "available."]
        warnings = []
        if metrics["causal_ablation_prob_drop"] <= metrics["random_ablation_prob_drop"]:
            warnings.append("ablating the top causal channels hurt accuracy no more than random channels: the causal "
                            "ranking is not faithful on this model/layer")
        figs = causal_figures(arrays, data, metrics, p, layers, np.nonzero(has)[0][: p.graph_classes],
                              (acc_c, acc_r, p_clean, p_top, p_rand))
        return StageOutput(metrics=metrics, figures=figs, notes=notes, warnings=warnings,
                           budget={"n_per_class": p.n_per_class, "expl_images": n_expl, "k": p.k})


def _nanmean(v: np.ndarray | None) -> float:
    if v is None:
        return float("nan")
    v = np.asarray(v, dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if len(v) else float("nan")
