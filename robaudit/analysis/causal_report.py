"""Figures of the ``causal`` stage: causal graphs, faithfulness, stability, ablation and explanation maps."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from robaudit import figures
from robaudit.analysis.causal_graph import CausalGraph, top_channels
from robaudit.data import Dataset


def causal_figures(arrays: dict[str, np.ndarray], data: Dataset, metrics: dict[str, float], p: Any,
                   layers: list[str], graph_classes: np.ndarray,
                   ablation: tuple[float, float, float, float, float]) -> list[dict[str, Any]]:
    """Figure specs from the stage's arrays and metrics; ``ablation`` is (acc top-k, acc random,
    p_y clean, p_y top-k ablated, p_y random ablated) of the last layer."""
    acc_c, acc_r, p_clean, p_top, p_rand = ablation
    n_expl = int(metrics["expl_images_n"])
    figs = [_graph(arrays, layers, data, cls, p.k) for cls in graph_classes]
    figs.append(figures.bar_chart(
        "Faithfulness: deletion (lower is better) and insertion (higher is better) AUC",
        [f"{m} {k}" for m in p.methods for k in ("deletion", "insertion")],
        [metrics[f"expl_{k}_auc.{m}"] for m in p.methods for k in ("deletion", "insertion")],
        y_label="AUC of p_y", caption=f"n = {n_expl} clean-correct images"))
    figs.append(figures.table(
        "Explanation stability (Spearman / top-10% IoU)", ["method", "noise rho", "noise IoU", "PGD rho", "PGD IoU"],
        [[m, metrics[f"expl_stability.{m}.spearman"], metrics[f"expl_stability.{m}.iou"],
          metrics[f"expl_stability.{m}.pgd.spearman"], metrics[f"expl_stability.{m}.pgd.iou"]]
         for m in p.methods],
        caption=f"noise sd {p.noise_sigma}; PGD L-inf eps {p.pgd_eps:.4f}, only images whose prediction "
                f"is unchanged (n = {int(metrics['expl_pgd_kept_n'])})"))
    figs.append(figures.table(
        "Channel ablation (last layer)", ["channels", "accuracy", "accuracy drop", "mean p_y drop"],
        [[f"top-{p.ablation_k} causal", acc_c, 1 - acc_c, p_clean - p_top],
         [f"{p.ablation_k} random", acc_r, 1 - acc_r, p_clean - p_rand]],
        caption="clean-correct images of each class; channels set to their baseline"))
    if "map_causal" in arrays:
        figs.append(_maps(arrays, data, p.methods))
    return figs


def _graph(arrays: dict[str, np.ndarray], layers: list[str], data: Dataset, cls: int, k: int) -> dict[str, Any]:
    nodes = []
    for li in range(len(layers)):
        ace = torch.from_numpy(arrays[f"ace_{li}"][cls])
        nodes.append(tuple((c, round(float(ace[c]), 6)) for c in top_channels(ace, k)))
    e = arrays["edges"]
    edges = tuple((int(r[1]), int(r[2]), int(r[3]), float(r[4])) for r in e[e[:, 0] == cls])
    name = data.class_names[cls] if data.class_names else str(cls)
    return CausalGraph(int(cls), tuple(layers), tuple(nodes), edges).to_figure(f"Causal graph: class {name}", name)


def _maps(arrays: dict[str, np.ndarray], data: Dataset, methods: tuple[str, ...]) -> dict[str, Any]:
    rows = []
    for i in range(arrays["map_causal"].shape[0]):
        j = int(arrays["expl_index"][i])
        cells = [figures.image_cell("image", data.x[j].numpy())]
        for m in methods:
            a = arrays[f"map_{m}"][i]
            cells.append(figures.image_cell(m, a / a.max() if a.max() > 0 else a))
        rows.append({"label": f"sample {data.ids[j]}", "images": cells})
    return figures.image_grid("Explanation maps (normalised to max 1)", rows)
