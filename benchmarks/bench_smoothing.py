"""Benchmark: randomized-smoothing sampling throughput and sequential vs fixed-n CERTIFY.

Prints
  1. CERTIFY sampling throughput (noisy samples/s through robaudit's GaussianSampler) vs the raw
     batched forward-pass floor of the same model and batch (argmax of logits on a ready batch),
     as a ratio (target >= 0.9);
  2. at one radius r: mean samples per image of sequential certification (budget n) vs fixed-n
     CERTIFY (n0 + n, n = 100,000 by default) as a ratio (target >= 5x);
  3. the fraction of images on which fixed-n CERTIFY and sequential certification (same budget
     ``--agree-n``, default n) decide "certified at r" the same way (target >= 99%), measured on
     ``--agree-images`` images, plus a simulation of both rules at budget n on Bernoulli streams at
     each of those images' estimated p_A (cheap where fixed-n at n = 100,000 is not).

Model: the demo CNN (examples/demo_models.py ``make_cnn`` + examples/models/digits_cnn.safetensors,
mean = std = 0.5) when its weights exist; otherwise the same architecture trained here for a few
epochs on the digits train split with Gaussian noise augmentation at sigma. Data: the digits
test split at 32x32 RGB. Usage (repository root):

    .venv/bin/python benchmarks/bench_smoothing.py --images 100 --n 100000
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from robaudit.certify.sequential import Decision, certify_sequential  # noqa: E402
from robaudit.certify.smoothing import ABSTAIN, GaussianSampler, certify_detailed  # noqa: E402

from examples.demo_models import MEAN, STD, make_cnn  # noqa: E402
from robaudit.data import load_dataset  # noqa: E402
from robaudit.model import InputSpec, TorchModelAdapter  # noqa: E402
from robaudit.seeding import derive_seed, make_generator  # noqa: E402

SHAPE = (3, 32, 32)


def load_model(kind: str, sigma: float, seed: int) -> tuple[TorchModelAdapter, str]:
    weights = ROOT / "examples" / "models" / "digits_cnn.safetensors"
    spec = InputSpec(SHAPE, 10, MEAN, STD)
    if kind in ("auto", "demo") and weights.exists():
        from safetensors.torch import load_file

        net = make_cnn()
        net.load_state_dict(load_file(str(weights)), strict=True)
        return TorchModelAdapter(net.eval(), spec, name="digits_cnn"), f"demo CNN ({weights.name})"
    if kind == "demo":
        raise SystemExit(f"{weights} is missing; run examples/train_demo_models.py or use --model fallback")
    net = make_cnn()
    cache = Path(tempfile.gettempdir()) / f"robaudit_bench_fallback_cnn_sigma{sigma}_seed{seed}.pt"
    if cache.exists():
        net.load_state_dict(torch.load(cache, weights_only=True))
        return TorchModelAdapter(net.eval(), spec, name="fallback_cnn"), f"fallback CNN (cached {cache})"
    torch.manual_seed(seed)
    train = load_dataset("digits", shape=SHAPE, num_classes=10, split="train")
    x, y = (train.x - 0.5) / 0.5, train.y
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for _ in range(8):
        perm = torch.randperm(len(y), generator=gen)
        for i in range(0, len(y), 64):
            idx = perm[i : i + 64]
            noisy = x[idx] + (sigma / 0.5) * torch.randn(x[idx].shape, generator=gen)  # pixel sigma -> normalised
            loss = torch.nn.functional.cross_entropy(net(noisy), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    torch.save(net.state_dict(), cache)
    return (TorchModelAdapter(net.eval(), spec, name="fallback_cnn"),
            f"fallback CNN (make_cnn architecture, trained here with noise sigma={sigma}, "
            f"{time.perf_counter() - start:.0f}s)")


def throughput(model: TorchModelAdapter, x: torch.Tensor, *, sigma: float, batch: int, batches: int,
               rounds: int) -> tuple[float, float]:
    """Median samples/s of (raw forward + argmax on a ready batch) and of the sampler, interleaved."""
    gen = torch.Generator().manual_seed(0)
    ready = x.unsqueeze(0) + sigma * torch.randn((batch, *x.shape), generator=gen)
    sampler = GaussianSampler(model, x, sigma=sigma, batch_size=batch, generator=gen)
    with torch.no_grad():
        model.logits(ready).argmax(1)
    sampler.counts(batch)
    floor, ours = [], []
    for _ in range(rounds):
        t = time.perf_counter()
        with torch.no_grad():
            for _ in range(batches):
                torch.bincount(model.logits(ready).argmax(1), minlength=10)
        floor.append(batch * batches / (time.perf_counter() - t))
        t = time.perf_counter()
        sampler.counts(batch * batches)
        ours.append(batch * batches / (time.perf_counter() - t))
    return statistics.median(floor), statistics.median(ours)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=["auto", "demo", "fallback"], default="auto")
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--n0", type=int, default=100)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--alpha", type=float, default=0.001)
    ap.add_argument("--sigma", type=float, default=0.25)
    ap.add_argument("--radius", type=float, default=0.25)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--throughput-batch", type=int, default=500)
    ap.add_argument("--throughput-batches", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-sequential", action="store_true")
    ap.add_argument("--sequential-images", type=int, default=None, help="images for the samples ratio (default all)")
    ap.add_argument("--agree-images", type=int, default=100, help="images for the fixed-n vs sequential run")
    ap.add_argument("--agree-n", type=int, default=0, help="budget of that run (default: --n)")
    ap.add_argument("--replicates", type=int, default=200, help="simulated replicates per image (0: off)")
    args = ap.parse_args(argv)

    model, desc = load_model(args.model, args.sigma, args.seed)
    data = load_dataset("digits", shape=SHAPE, num_classes=10, n=args.images, seed=args.seed, split="test")
    print(f"model: {desc}; torch threads: {torch.get_num_threads()}")

    floor, ours = throughput(model, data.x[0], sigma=args.sigma, batch=args.throughput_batch,
                             batches=args.throughput_batches, rounds=args.rounds)
    print(f"[throughput] batch {args.throughput_batch}: raw forward floor {floor:,.0f} samples/s, "
          f"CERTIFY sampler {ours:,.0f} samples/s, ratio {ours / floor:.3f} (target >= 0.9)")
    result: dict = {"model": desc, "threads": torch.get_num_threads(), "n": args.n, "n0": args.n0,
                    "radius": args.radius, "sigma": args.sigma, "alpha": args.alpha,
                    "floor_samples_per_s": floor, "sampler_samples_per_s": ours}
    if args.skip_sequential:
        print("RESULT_JSON " + json.dumps(result))  # machine-readable line for benchmarks/run_all.py
        return 0

    seq_samples, seq_cert_acc, undecided = [], 0, 0
    start = time.perf_counter()
    for x, y, sid in list(zip(data.x, data.y.tolist(), data.ids))[: args.sequential_images]:
        seq = certify_sequential(model, x, sigma=args.sigma, radii=[args.radius], n0=args.n0, n_max=args.n,
                                 alpha=args.alpha, batch_size=args.batch,
                                 generator=make_generator(derive_seed(args.seed, "sequential", sid)))
        seq_samples.append(seq.samples)
        seq_cert_acc += seq.decisions[0] is Decision.CERTIFIED and seq.prediction == y
        undecided += seq.decisions[0] is Decision.UNDECIDED
    k = len(seq_samples)
    fixed_cost = args.n0 + args.n
    if k:
        print(f"[sequential] r = {args.radius}, sigma = {args.sigma}, alpha = {args.alpha}, n_max = {args.n}, "
              f"{k} images: {np.mean(seq_samples):,.0f} samples/image (median {np.median(seq_samples):,.0f}, "
              f"max {max(seq_samples):,}) vs fixed-n CERTIFY {fixed_cost:,}: ratio {fixed_cost / np.mean(seq_samples):.1f}x "
              f"(target >= 5x); certified accuracy at r {seq_cert_acc / k:.3f}; undecided {undecided}; "
              f"{time.perf_counter() - start:.0f}s")
        result["sequential"] = {"images": k, "mean_samples": float(np.mean(seq_samples)),
                                "median_samples": float(np.median(seq_samples)), "fixed_samples": fixed_cost,
                                "certified_accuracy": seq_cert_acc / k, "undecided": undecided}

    # decision agreement, apples to apples at budget agree_n, on the first agree_images images
    n_agree = args.agree_n or args.n
    agree, p_hats = [], []
    for x, sid in list(zip(data.x, data.ids))[: args.agree_images]:
        fixed = certify_detailed(model, x, sigma=args.sigma, n0=args.n0, n=n_agree, alpha=args.alpha,
                                 batch_size=args.batch, generator=make_generator(derive_seed(args.seed, "fixed", sid)))
        seq = certify_sequential(model, x, sigma=args.sigma, radii=[args.radius], n0=args.n0, n_max=n_agree,
                                 alpha=args.alpha, batch_size=args.batch,
                                 generator=make_generator(derive_seed(args.seed, "sequential", sid)))
        fixed_ok = fixed.prediction != ABSTAIN and fixed.radius >= args.radius
        seq_ok = seq.decisions[0] is Decision.CERTIFIED
        agree.append(fixed_ok == seq_ok and (not fixed_ok or fixed.prediction == seq.prediction))
        p_hats.append(fixed.n_a / n_agree)
        if not agree[-1]:
            print(f"  disagreement on {sid}: fixed ({fixed.prediction}, R={fixed.radius:.4f}, "
                  f"pA_lower={fixed.p_lower:.5f}) vs sequential {seq.decisions[0].name} after {seq.samples}")
    if agree:
        print(f"[agreement] fixed-n CERTIFY (n = {n_agree}) vs sequential (n_max = {n_agree}) on {len(agree)} "
              f"images: {sum(agree)}/{len(agree)} = {np.mean(agree):.3f} (target >= 0.99); "
              f"estimated p_A: min {min(p_hats):.4f}, median {np.median(p_hats):.4f}")
        result["agreement"] = {"images": len(agree), "n": n_agree, "agree": int(sum(agree))}
    if args.replicates and p_hats:
        result["simulated"] = simulate(p_hats, args)
    print("RESULT_JSON " + json.dumps(result))  # machine-readable line for benchmarks/run_all.py
    return 0


def simulate(p_hats: list[float], args: argparse.Namespace) -> dict:
    """Agreement of the two decision rules on Bernoulli streams at each image's estimated p_A."""
    from robaudit.certify.clopper_pearson import lower_bound
    from robaudit.certify.sequential import SequentialTest
    from scipy.stats import norm

    rng = np.random.default_rng(args.seed)
    p0 = float(norm.cdf(args.radius / args.sigma))
    agree = total = 0
    used = []
    for p in p_hats:
        for _ in range(args.replicates):
            fixed_ok = lower_bound(int(rng.binomial(args.n, p)), args.n, args.alpha) >= p0
            test = SequentialTest([p0], alpha=args.alpha, n_max=args.n)
            m = 128
            while not test.done:
                m = min(m, args.n - test.t)
                test.update(int(rng.binomial(m, p)), m)
                m = min(2 * m, args.batch)
            agree += fixed_ok == (test.decisions[0] is Decision.CERTIFIED)
            used.append(args.n0 + test.t)
            total += 1
    print(f"[simulated] {args.replicates} Bernoulli replicates per image at its estimated p_A (nA/n of the "
          f"agreement run), n = {args.n}: agreement {agree}/{total} = {agree / total:.4f}; samples ratio "
          f"{(args.n0 + args.n) / np.mean(used):.1f}x")
    return {"replicates": total, "agree": agree, "samples_ratio": float((args.n0 + args.n) / np.mean(used))}


if __name__ == "__main__":
    raise SystemExit(main())
