"""Benchmark: batched channel interventions (robaudit) vs one hooked forward per channel (naive floor).

Run: ``.venv/bin/python benchmarks/bench_causal.py`` (from the repository root). Uses the shipped
demo CNN (examples/models/digits_cnn.safetensors) on 32x32 inputs; prints wall times, the
speed-up ratio and the max abs difference between the two results (must be ~0).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from robaudit.analysis.causal import activation, channel_effects  # noqa: E402
from robaudit.loaders import load_model  # noqa: E402


def naive(module: torch.nn.Module, layer: torch.nn.Module, x: torch.Tensor, y: int) -> torch.Tensor:
    """One forward pass per channel with a single-channel overwrite hook."""
    with torch.no_grad():
        clean = module(x)[:, y]
        b = activation(module, layer, x).mean(0)
        out = []
        for c in range(b.shape[0]):
            def hook(_m, _i, o, c=c):
                o = o.clone()
                o[:, c] = b[c]
                return o
            h = layer.register_forward_hook(hook)
            try:
                out.append((clean - module(x)[:, y]).mean())
            finally:
                h.remove()
    return torch.stack(out)


def main() -> None:
    torch.set_num_threads(1)
    model = load_model(ROOT / "examples/models/digits_cnn.safetensors", factory="examples.demo_models:make_cnn",
                       shape=(3, 32, 32), num_classes=10, mean=(0.5,) * 3, std=(0.5,) * 3)
    module = model.torch_module()
    x = torch.rand(16, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    channel_effects(module, "net.1", x, 3)  # warm-up
    naive(module, dict(module.named_modules())["net.1"], x, 3)
    results = {}
    for name in ("net.1", "net.3", "net.5"):
        layer = dict(module.named_modules())[name]
        t0 = time.perf_counter()
        a = channel_effects(module, name, x, 3)
        t1 = time.perf_counter()
        b = naive(module, layer, x, 3)
        t2 = time.perf_counter()
        print(f"{name}: {len(a)} channels x {len(x)} images | batched {t1 - t0:.3f}s | one-per-channel "
              f"{t2 - t1:.3f}s | ratio {(t2 - t1) / (t1 - t0):.2f}x | max |diff| {float((a - b).abs().max()):.2e}")
        results[name] = {"batched_s": t1 - t0, "naive_s": t2 - t1, "max_diff": float((a - b).abs().max())}
    print("RESULT_JSON " + json.dumps({"layers": results}))


if __name__ == "__main__":
    main()
