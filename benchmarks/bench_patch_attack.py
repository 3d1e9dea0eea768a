"""Patch-attack throughput: (position x step) pairs per second vs the raw forward+backward floor.

The floor is one plain forward + backward of the same model on batches of the same size,
with the input as the only leaf requiring gradients (what any patch attack must at least do
per step). Random-init demo-sized ViT (timm VisionTransformer, 32x32, 4x4 tokens, dim 64,
depth 4, 4 heads); alpha is set tiny so (almost) no pair stops early and every pair runs all
steps; the rate counts gradient pair-steps actually executed.

Usage: python benchmarks/bench_patch_attack.py [--threads N] [--pairs 256] [--steps 20]
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from robaudit.attacks.patches.patch_attack import PatchAttack
from timm.models.vision_transformer import VisionTransformer

from robaudit.model import InputSpec, TorchModelAdapter


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--pairs", type=int, default=256)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=256)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    net = VisionTransformer(img_size=32, patch_size=4, num_classes=10, embed_dim=64, depth=4, num_heads=4,
                            mlp_ratio=2.0).eval()
    model = TorchModelAdapter(net, InputSpec((3, 32, 32), 10), name="bench-vit")
    gen = torch.Generator().manual_seed(0)
    n_img = max(1, args.pairs // 64)
    x = torch.rand((n_img, 3, 32, 32), generator=gen)
    image_index = torch.arange(args.pairs) % n_img
    positions = torch.arange(args.pairs) % 64
    y0 = model.predict(x)

    # floor: forward + backward w.r.t. the input on batches of the same size, same number of steps
    xb = x[image_index].clone()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        for chunk in torch.arange(args.pairs).split(args.batch_size):
            xi = xb[chunk].clone().requires_grad_(True)
            loss = torch.nn.functional.cross_entropy(model.logits(xi), y0[image_index[chunk]], reduction="sum")
            torch.autograd.grad(loss, xi)
    floor = time.perf_counter() - t0
    floor_rate = args.pairs * args.steps / floor

    # the attack: alpha tiny so almost no pair succeeds early (all steps executed)
    attack = PatchAttack(4, steps=args.steps, alpha=1e-6, batch_size=args.batch_size)
    t0 = time.perf_counter()
    res = attack.perturb(model, x, y0, image_index, positions, generator=gen)
    took = time.perf_counter() - t0
    executed = res.backward_samples  # pair-steps with a gradient step
    rate = executed / took
    print(f"threads={args.threads} pairs={args.pairs} steps={args.steps} batch={args.batch_size}")
    print(f"floor  : {floor_rate:9.1f} pair-steps/s (plain forward+backward, {floor:.2f}s)")
    print(f"attack : {rate:9.1f} pair-steps/s ({executed} gradient pair-steps, {res.forward_samples} forward "
          f"samples incl. checks and re-verification, {took:.2f}s, {int(res.success.sum())} early successes)")
    print(f"ratio attack/floor: {rate / floor_rate:.2f}")
    print("RESULT_JSON " + json.dumps({  # machine-readable line for benchmarks/run_all.py
        "threads": args.threads, "pairs": args.pairs, "steps": args.steps, "batch": args.batch_size,
        "floor_pair_steps_per_s": floor_rate, "attack_pair_steps_per_s": rate, "executed": int(executed),
        "early_successes": int(res.success.sum())}))


if __name__ == "__main__":
    main()
