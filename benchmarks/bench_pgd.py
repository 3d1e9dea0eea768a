"""Benchmark: robaudit PGD vs torchattacks PGD vs the raw floor, on CPU (not a test).

PGD L-inf, eps 8/255, alpha 2/255, 10 steps, random start, batch 32 of 32x32 RGB images,
on randomly initialised timm resnet18 and vit_tiny (patch 4). Labels are the model's own
clean predictions, so every sample starts correctly classified.

Floor: 10 forward + input-gradient backward passes of the same batch (no projection, no
bookkeeping): the cost any 10-step PGD must pay. robaudit's early stop can make it *faster*
than the floor (fooled samples leave the batch), so it is timed both with early stop (the
default) and without it (pure per-step overhead).

Usage: ``python benchmarks/bench_pgd.py [--threads 2] [--repeats 3]``. Prints images/s
(median of the repeats) and the ratios robaudit / torchattacks and robaudit / floor.
Targets: robaudit >= torchattacks and >= 0.85 of the floor.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from robaudit.attacks.pgd import PGD
from torch import nn

EPS, ALPHA, STEPS, BATCH = 8 / 255, 2 / 255, 10, 32


def make_models() -> dict[str, nn.Module]:
    import timm

    torch.manual_seed(0)  # benchmark script: weights only need to be fixed
    models = {
        "resnet18": timm.create_model("resnet18", num_classes=10),
        "vit_tiny": timm.create_model("vit_tiny_patch16_224", num_classes=10, img_size=32, patch_size=4),
    }
    for m in models.values():
        m.eval()
        for p in m.parameters():
            p.requires_grad_(False)
    return models


def floor(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    xa = x.clone()
    for _ in range(STEPS):
        xa.requires_grad_(True)
        loss = F.cross_entropy(model(xa), y)
        torch.autograd.grad(loss, [xa])
        xa = xa.detach()


def timed(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import torchattacks

    g = torch.Generator().manual_seed(0)
    x = torch.rand((BATCH, 3, 32, 32), generator=g)
    print(f"torch {torch.__version__}, threads {args.threads}, batch {BATCH}, {STEPS} steps, "
          f"median of {args.repeats}")
    result = {"threads": args.threads, "repeats": args.repeats, "batch": BATCH, "steps": STEPS, "models": {}}
    for name, model in make_models().items():
        result["models"][name] = bench_model(name, model, x, args.repeats, torchattacks)
    print("RESULT_JSON " + json.dumps(result))  # machine-readable line for benchmarks/run_all.py


def bench_model(name: str, model: nn.Module, x: torch.Tensor, repeats: int, torchattacks: object) -> dict:
    with torch.no_grad():
        y = model(x).argmax(1)
    ours = PGD("linf", EPS, alpha=ALPHA, steps=STEPS)
    ours_full = PGD("linf", EPS, alpha=ALPHA, steps=STEPS, early_stop=False)
    theirs = torchattacks.PGD(model, eps=EPS, alpha=ALPHA, steps=STEPS, random_start=True)  # type: ignore[attr-defined]
    t = {
        "floor": timed(lambda: floor(model, x, y), repeats),
        "torchattacks": timed(lambda: theirs(x, y), repeats),
        "robaudit": timed(lambda: ours.perturb(model, x, y, generator=torch.Generator().manual_seed(1)), repeats),
        "robaudit(no early stop)": timed(
            lambda: ours_full.perturb(model, x, y, generator=torch.Generator().manual_seed(1)), repeats),
    }
    ips = {k: BATCH / v for k, v in t.items()}
    with torch.no_grad():
        x_adv = ours.perturb(model, x, y, generator=torch.Generator().manual_seed(1))
        fooled = int((model(x_adv).argmax(1) != y).sum())
    print(f"\n{name}: " + ", ".join(f"{k} {v:.1f} img/s" for k, v in ips.items()))
    print(f"  robaudit passes: {ours.last_counts}  fooled {fooled}/{BATCH}")
    for k in ("robaudit", "robaudit(no early stop)"):
        print(f"  {k}: / torchattacks = {ips[k] / ips['torchattacks']:.3f}, / floor = {ips[k] / ips['floor']:.3f}")
    return {"img_per_s": ips, "fooled": fooled}

if __name__ == "__main__":
    main()
