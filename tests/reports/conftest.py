"""Synthetic AuditResult fixtures for the renderer tests.

``build_result()`` (the fixture ``make_result`` returns it; ``audit`` is one module-scoped
result) builds an audit of two models (digits_cnn, digits_vit) x two variants (baseline, temp_T2) with every figure type, an attention inspector, a SKIPPED and an ERROR
stage, passed / failed / warn gates, CI companions, NaN/inf metrics and validity warnings.
Keyword arguments override the hostile strings used for model and class names.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from robaudit import figures
from robaudit.results import (
    AuditResult,
    GateResult,
    ModelRecord,
    StageResult,
    StageStatus,
    Verdict,
)

XSS = "<script>alert(1)</script>"


def q8(a: np.ndarray) -> str:
    """Row-quantise non-negative attention to uint8 (the inspector's documented encoder)."""
    m = a.max(axis=-1, keepdims=True)
    m[m == 0] = 1
    return base64.b64encode(np.rint(a / m * 255).astype(np.uint8).tobytes()).decode()


def inspector_figure(grid: int = 4, layers: int = 2, heads: int = 2, seed: int = 0) -> dict[str, Any]:
    """An attention_inspector figure whose maps depend on the query patch and the view."""
    rng = np.random.default_rng(seed)
    n = grid * grid
    rc = np.array([(t // grid, t % grid) for t in range(n)], dtype=float)
    dist = ((rc[:, None, :] - rc[None, :, :]) ** 2).sum(-1)

    def view(name: str, version: str, temp: float, shift: int, patch: list[list[int]]) -> dict[str, Any]:
        attn = np.empty((layers, heads, n, n))
        for layer in range(layers):
            for h in range(heads):
                width = 0.5 + layer + h
                att = np.exp(-dist / width) + 0.05 * rng.random((n, n))
                attn[layer, h] = np.roll(att, shift, axis=1)
        roll = np.exp(-dist / 3.0)
        roll = np.roll(roll, shift, axis=1) + 0.01
        img = np.zeros((grid * 4, grid * 4, 3))
        img[..., (shift % 3)] = np.linspace(0, 1, grid * 4)[None, :]
        return {"name": name, "version": version, "temperature": temp, "png": figures.encode_png(img),
                "attn": q8(attn), "rollout": q8(roll), "patch": patch}

    images = []
    for i in range(2):
        images.append({"id": f"s{i}", "label": f"sample {i} {XSS}", "views": [
            view("clean, T=1", "clean", 1.0, 0, []),
            view("corrupted, T=1", "corrupted", 1.0, 3, [[1, 1]]),
            view("adversarial, T=1", "adversarial", 1.0, 5, [[2, 2], [2, 3]]),
            view("adversarial, T=2", "adversarial", 2.0, 7, [[2, 2], [2, 3]]),
        ]})
    return {"type": "attention_inspector", "title": f"Attention {XSS}", "caption": "patch attention",
            "grid": grid, "image_size": [grid * 4, grid * 4], "layers": layers, "heads": heads,
            "images": images}


def _figures(tag: int) -> list[dict[str, Any]]:
    eps = [0.001, 0.003, 0.01, 0.03, 0.1]
    acc = [0.95 - 0.2 * k - 0.02 * tag for k in range(5)]
    line = figures.line_chart(
        f"Accuracy vs epsilon {XSS}", "epsilon", "accuracy",
        [figures.series(f"PGD {XSS}", eps, acc, low=[a - 0.05 for a in acc], high=[a + 0.04 for a in acc]),
         figures.series("FGSM", eps, [a + 0.05 for a in acc[:-1]] + [float("nan")])],
        x_log=True, y_range=(0.0, 1.0), caption="log x axis, 95% CI bands")
    heat = figures.heatmap(
        "Fourier error", np.arange(12, dtype=float).reshape(3, 4) / 11 + 0.01 * tag,
        row_labels=["low", "mid", XSS], col_labels=["a", "b", "c", "d"], value_label="error", vmin=0, vmax=1)
    bars = figures.bar_chart("Flip rate by corruption", ["gaussian_noise", "fog", "contrast"],
                             [0.2, 0.5 + 0.1 * tag, 0.1], y_label="flip rate",
                             low=[0.1, 0.4, 0.05], high=[0.3, 0.7, 0.2])
    tab = figures.table("Per-class accuracy", ["class", "accuracy", "n"],
                        [[XSS, 0.91, 50], ["seven", float("nan"), 0], ["eight", 0.5, 12]])
    img = np.linspace(0, 1, 8 * 8 * 3).reshape(8, 8, 3)
    grid = figures.image_grid("Counterfactuals", [
        {"label": "original", "images": [figures.image_cell(f"label {XSS}", img),
                                         figures.image_cell("three", img[::-1])]},
        {"label": "counterfactual", "images": [figures.image_cell("eight", img[:, ::-1])]}], scale=4)
    dag = figures.graph("Causal graph", [
        [{"id": "c1", "label": "conv1:3", "weight": 0.4}, {"id": "c2", "label": "conv1:7", "weight": -0.2}],
        [{"id": "d1", "label": "conv2:1", "weight": 0.9}],
        [{"id": "y", "label": f"y={XSS}", "weight": 1.0}]],
        [{"src": "c1", "dst": "d1", "weight": 0.8}, {"src": "c2", "dst": "d1", "weight": -0.3},
         {"src": "d1", "dst": "y", "weight": 1.2}])
    return [line, heat, bars, tab, grid, dag]


def _stage(model: str, variant: str, tag: int, **kw: Any) -> list[StageResult]:
    base = 0.97 - 0.03 * tag
    clean = StageResult(
        id="clean", stage="clean_accuracy", model=model, variant=variant, status=StageStatus.OK,
        metrics={"accuracy": base, "accuracy.ci_low": base - 0.04, "accuracy.ci_high": base + 0.02,
                 "accuracy.n": 100.0, "loss": 0.12 + tag, "odd.n": 3.0},
        params={"batch_size": 64}, seed=11 + tag, duration_s=0.42,
        notes=[f"note for {model}"], budget={"samples": 100})
    pgd = StageResult(
        id="pgd", stage="robust_accuracy", model=model, variant=variant, status=StageStatus.OK,
        metrics={"robust_accuracy": base - 0.4, "robust_accuracy.ci_low": base - 0.5,
                 "robust_accuracy.ci_high": base - 0.3, "robust_accuracy.n": 100.0,
                 "attack_steps": 10.0, "nan_metric": float("nan"), "inf_metric": float("inf")},
        params={"eps": 0.03, "steps": 10 + tag, "norm": "linf"}, seed=7, duration_s=3.5,
        warnings=(["defense evaluated non-adaptively: attack did not see the temperature"]
                  if variant != "baseline" else []),
        figures=_figures(tag), budget={"forward_passes": 1000 + tag, "gradient_steps": 1000})
    out = [clean, pgd]
    if model == "digits_vit":
        out.append(StageResult(
            id="attention", stage="vit_attention", model=model, variant=variant, status=StageStatus.OK,
            metrics={"attn_share_delta_adv": 0.12 + 0.01 * tag}, figures=[inspector_figure(seed=tag)]))
    else:
        out.append(StageResult(
            id="attention", stage="vit_attention", model=model, variant=variant, status=StageStatus.SKIPPED,
            error="model has no ATTENTION capability (not a ViT); use a timm ViT to enable this stage"))
    out.append(StageResult(
        id="lirpa", stage="lirpa", model=model, variant=variant,
        status=StageStatus.ERROR if tag == 0 else StageStatus.OK,
        metrics={} if tag == 0 else {"verified_accuracy": 0.3},
        error=("Traceback (most recent call last):\n  File \"x.py\", line 1\nRuntimeError: CROWN ran out of "
               f"memory {XSS}\x1b[31m\x00") if tag == 0 else None))
    return out


def build_result(model_names: tuple[str, str] = (f"digits_cnn {XSS}", "digits_vit"),
             class_name: str = XSS) -> AuditResult:
    variants = ["baseline", "temp_T2"]
    models = [
        ModelRecord(name=name, fingerprint=f"sha256:{'ab' * 32}",
                    spec={"shape": [3, 32, 32], "num_classes": 10, "mean": [0.5] * 3, "std": [0.25] * 3,
                          "class_names": [class_name] + [str(k) for k in range(1, 10)]},
                    capabilities=["GRADIENTS", "TORCH_MODULE"] + (["ATTENTION"] if "vit" in name else []),
                    provenance={"kind": "onnx", "path": f"/models/{name}.onnx",
                                "onnx_twin_max_abs_diff": 3.2e-6},
                    variants=variants)
        for name in model_names
    ]
    stages: list[StageResult] = []
    for i, m in enumerate(model_names):
        for j, v in enumerate(variants):
            stages += _stage(m, v, tag=2 * i + j)
    gates = [
        GateResult(name="clean-acc", metric="clean.accuracy", op=">=", threshold=0.9, model=model_names[0],
                   variant="baseline", severity="fail", passed=True, value=0.97, message="0.97 >= 0.9"),
        GateResult(name=f"robust {XSS}", metric="pgd.robust_accuracy", op=">=", threshold=0.6,
                   model=model_names[1], variant="temp_T2", severity="fail", passed=False, value=0.48,
                   message="0.48 < 0.6", baseline_value=0.5),
        GateResult(name="loss-warn", metric="clean.loss", op="<=", threshold=0.5, model=model_names[1],
                   variant="baseline", severity="warn", passed=False, value=2.12, message="2.12 > 0.5"),
        GateResult(name="lirpa", metric="lirpa.verified_accuracy", op=">=", threshold=0.1,
                   model=model_names[0], variant="baseline", severity="fail", passed=False, value=None,
                   message="stage lirpa ERROR: never passes"),
    ]
    return AuditResult(
        schema_version="1.0", robaudit_version="0.1.0", created="2026-11-27T19:00:00Z",
        config={"seed": 1234, "profile": "quick", "note": XSS, "stages": {"pgd": {"eps": 0.03}}},
        models=models,
        data={"source": "digits", "n": 100, "ids_hash": "c0ffee" * 4, "subset_seed": 1234},
        environment={"python": "3.11.9", "torch": "2.14.1", "onnxruntime": "1.20"},
        stages=stages, gates=gates, verdict=Verdict.ERROR, exit_code=3,
        timings={"total": 12.5, "pgd": 8.25})


@pytest.fixture
def make_result() -> Callable[..., AuditResult]:
    """The factory ``build_result(model_names=..., class_name=...)``."""
    return build_result


@pytest.fixture(scope="module")
def audit() -> AuditResult:
    """The default synthetic audit (build a fresh one with make_result to modify it)."""
    return build_result()


@pytest.fixture(scope="session")
def xss() -> str:
    return XSS
