"""Shared loader for the auto_LiRPA reference fixtures (../shared/lirpa_reference).

The folder is located at ``$ROBAUDIT_SHARED/lirpa_reference`` or ``<repo>/../shared/lirpa_reference``;
tests skip with that reason when it is absent.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch


def reference_dir() -> Path | None:
    candidates = []
    if os.environ.get("ROBAUDIT_SHARED"):
        candidates.append(Path(os.environ["ROBAUDIT_SHARED"]) / "lirpa_reference")
    candidates.append(Path(__file__).resolve().parents[2] / ".." / "shared" / "lirpa_reference")
    for c in candidates:
        if (c / "manifest.json").is_file():
            return c.resolve()
    return None


REF = reference_dir()
SKIP_REASON = ("auto_LiRPA reference fixtures not found: set ROBAUDIT_SHARED or place shared/lirpa_reference "
               "next to the repository (../shared/lirpa_reference)")


@lru_cache(maxsize=1)
def manifest() -> dict[str, Any]:
    assert REF is not None
    return json.loads((REF / "manifest.json").read_text())


def cases() -> list[dict[str, Any]]:
    return manifest()["cases"] if REF is not None else []


@lru_cache(maxsize=1)
def nets_module() -> Any:
    assert REF is not None
    spec = importlib.util.spec_from_file_location("lirpa_reference_nets", REF / "nets.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


@cache
def load_net(net: str) -> tuple[torch.nn.Module, dict[str, np.ndarray]]:
    meta = manifest()["nets"][net]
    module = nets_module().build(meta["arch"])
    module.load_state_dict(torch.load(REF / meta["weights"], weights_only=True))
    module.eval()
    data = np.load(REF / meta["npz"])
    return module, {k: data[k] for k in data.files}


def norm_of(case: dict[str, Any]) -> float:
    return math.inf if case["norm"] == "inf" else 2.0


def crown_tol(case: dict[str, Any], ref_lb: np.ndarray, ref_ub: np.ndarray) -> np.ndarray:
    tol = manifest()["tolerances"]["CROWN"]
    scale = np.maximum(1.0, np.maximum(np.abs(ref_lb), np.abs(ref_ub)))
    out = tol["atol"] + tol["rtol"] * scale
    if case["smooth_activations"]:
        out = out + tol["width_rtol_smooth"] * (ref_ub - ref_lb)
    return out


def assert_sound(case: dict[str, Any], data: dict[str, np.ndarray], lb: np.ndarray, ub: np.ndarray) -> None:
    tol = manifest()["tolerances"]["soundness"]
    ref_lb, ref_ub = data[case["lb_key"]], data[case["ub_key"]]
    scale = np.maximum(1.0, np.maximum(np.abs(ref_lb), np.abs(ref_ub)))
    slack = tol["atol"] + tol["rtol"] * scale
    emp_min, emp_max = data[case["emp_min_key"]], data[case["emp_max_key"]]
    assert (lb <= emp_min + slack).all(), f"{case['id']}: lb above an attained value by {(lb - emp_min).max():.3g}"
    assert (ub >= emp_max - slack).all(), f"{case['id']}: ub below an attained value by {(emp_max - ub).max():.3g}"
