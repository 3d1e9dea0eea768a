"""Benchmark: randomized-smoothing sampling throughput and sequential vs fixed-n CERTIFY.

Prints, per model (``--model-arch cnn|vit|both``):
  1. CERTIFY sampling throughput (noisy samples/s through robaudit's GaussianSampler) vs the raw
     batched forward-pass floor of the same model and batch (argmax + class count on a ready
     batch), as a ratio (target >= 0.9); on CUDA also the number of host syncs in one sampler
     call of several batches (expected 1: the final histogram copy);
  2. at one radius r: mean samples per image of sequential certification (budget n) vs fixed-n
     CERTIFY (n0 + n, n = 100,000 by default) as a ratio (target >= 5x);
  3. on ``--agree-images`` images, fixed-n CERTIFY and sequential certification at the same budget
     ``--agree-n`` (default n): how often they decide "certified at r" the same way (target >= 99%;
     with a 95% Clopper-Pearson interval), the images where they disagree with their p_A estimates
     (nA/n of the fixed-n run), mean samples/image of both and their ratio, wall time of both;
  4. a simulation of both rules at budget n on Bernoulli streams at each of those images' estimated
     p_A (``--replicates`` per image; cheap where fixed-n at n = 100,000 is not).

Models: the demo CNN (examples/demo_models.py ``make_cnn`` + examples/models/digits_cnn.safetensors;
without those weights and with ``--model auto|fallback``, the same architecture trained here for a
few epochs with Gaussian noise augmentation) and the demo ViT (``make_vit`` +
digits_vit.safetensors, required), both with mean = std = 0.5 inside the adapter, as in
examples/demo.toml. Data: the digits test split at 32x32 RGB (359 images).

Device (``--device``): model, noise and class counts live on it. Every generator is an explicit
``torch.Generator`` on the model's device, seeded with ``derive_seed(seed, "fixed"|"sequential",
image id)``, so the sampler never copies noise across devices; a CUDA generator (Philox) draws
other numbers than a CPU one (Mersenne Twister) from the same seed, so CPU and CUDA runs agree in
distribution, not bit for bit. ``--time-budget-s`` stops taking new images once spent (shared
between the models: each gets the time left divided by the models left) and reports how many were
done. ``--json-out PATH`` writes everything, with per-image records, after each model.

Usage (repository root): ``.venv/bin/python benchmarks/bench_smoothing.py --images 100 --n 100000``;
the GPU run (whole test split, both models, n = 100,000; a few minutes on one H100/H200)::

    python3 benchmarks/bench_smoothing.py --device cuda --model-arch both --images 359 --agree-images 359 \
        --n 100000 --fixed-batch 10000 --throughput-batch 10000 --throughput-batches 10 --replicates 50 \
        --time-budget-s 300 --json-out $OUT/smoothing.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from robaudit.certify.sequential import Decision, certify_sequential  # noqa: E402
from robaudit.certify.smoothing import ABSTAIN, GaussianSampler, certify_detailed  # noqa: E402

from examples.demo_models import MEAN, STD, make_cnn, make_vit  # noqa: E402
from robaudit.data import load_dataset  # noqa: E402
from robaudit.model import InputSpec, TorchModelAdapter  # noqa: E402
from robaudit.seeding import derive_seed, make_generator  # noqa: E402
from robaudit.stats import clopper_pearson  # noqa: E402

SHAPE = (3, 32, 32)
ARCHS = {"cnn": ("digits_cnn", make_cnn), "vit": ("digits_vit", make_vit)}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: torch sees no CUDA device (use --device cpu or auto)")
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def load_model(arch: str, kind: str, sigma: float, seed: int, device: torch.device) -> tuple[TorchModelAdapter, str]:
    name, factory = ARCHS[arch]
    weights = ROOT / "examples" / "models" / f"{name}.safetensors"
    spec = InputSpec(SHAPE, 10, MEAN, STD)
    if weights.exists() and (kind in ("auto", "demo") or arch == "vit"):
        from safetensors.torch import load_file

        net = factory()
        net.load_state_dict(load_file(str(weights)), strict=True)
        desc = f"demo {dict(cnn='CNN', vit='ViT')[arch]} ({weights.name})"
    elif kind == "demo" or arch == "vit":
        raise SystemExit(f"{weights} is missing; run examples/train_demo_models.py"
                         + (" or use --model fallback" if arch == "cnn" else ""))
    else:
        net, desc = fallback_cnn(sigma, seed)
        name = "fallback_cnn"
    adapter = TorchModelAdapter(net.eval(), spec, name=name)
    adapter.torch_module().to(device)  # the wrapper (normalisation buffers included) moves in place
    return adapter, desc


def fallback_cnn(sigma: float, seed: int) -> tuple[torch.nn.Module, str]:
    net = make_cnn()
    cache = Path(tempfile.gettempdir()) / f"robaudit_bench_fallback_cnn_sigma{sigma}_seed{seed}.pt"
    if cache.exists():
        net.load_state_dict(torch.load(cache, weights_only=True))
        return net, f"fallback CNN (cached {cache})"
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
    return net, (f"fallback CNN (make_cnn architecture, trained here with noise sigma={sigma}, "
                 f"{time.perf_counter() - start:.0f}s)")


def throughput(model: TorchModelAdapter, x: torch.Tensor, *, sigma: float, batch: int, batches: int,
               rounds: int) -> tuple[float, float, int | None]:
    """Median samples/s of (raw forward + argmax + class count on a ready batch) and of the sampler,
    interleaved; on CUDA also the host syncs of one sampler call of ``batches`` batches."""
    device = model.device
    gen = make_generator(0, device)
    ready = x.to(device).unsqueeze(0) + sigma * torch.randn((batch, *x.shape), generator=gen, device=device)
    sampler = GaussianSampler(model, x, sigma=sigma, batch_size=batch, generator=gen)

    def floor_pass() -> None:
        pred = model.logits(ready).argmax(1)
        torch.zeros(10, dtype=torch.int64, device=device).scatter_add_(0, pred, torch.ones_like(pred))

    with torch.no_grad():
        floor_pass()
    sampler.counts(batch)
    sync(device)
    floor, ours = [], []
    for _ in range(rounds):
        t = time.perf_counter()
        with torch.no_grad():
            for _ in range(batches):
                floor_pass()
        sync(device)
        floor.append(batch * batches / (time.perf_counter() - t))
        t = time.perf_counter()
        sampler.counts(batch * batches)  # ends with a host copy of the histogram
        ours.append(batch * batches / (time.perf_counter() - t))
    syncs = None
    if device.type == "cuda":
        torch.cuda.set_sync_debug_mode("warn")
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                sampler.counts(batch * batches)
        finally:
            torch.cuda.set_sync_debug_mode(0)
        syncs = sum("synchroniz" in str(w.message) for w in caught)
    return statistics.median(floor), statistics.median(ours), syncs


def run_model(arch: str, args: argparse.Namespace, device: torch.device, data, deadline: float) -> dict:
    """Every measurement on one model; images are taken while ``time.perf_counter() < deadline``."""
    t_model = time.perf_counter()
    model, desc = load_model(arch, args.model, args.sigma, args.seed, device)
    print(f"== {arch}: {desc} on {device}; torch threads: {torch.get_num_threads()}", flush=True)
    floor, ours, syncs = throughput(model, data.x[0], sigma=args.sigma, batch=args.throughput_batch,
                                    batches=args.throughput_batches, rounds=args.rounds)
    print(f"[throughput] batch {args.throughput_batch}: raw forward floor {floor:,.0f} samples/s, "
          f"CERTIFY sampler {ours:,.0f} samples/s, ratio {ours / floor:.3f} (target >= 0.9)"
          + (f"; host syncs in one sampler call of {args.throughput_batches} batches: {syncs} (expected 1)"
             if syncs is not None else ""), flush=True)
    n_agree = args.agree_n or args.n
    fixed_batch = args.fixed_batch or args.batch
    entry: dict = {"model": desc, "arch": arch, "device": str(device), "threads": torch.get_num_threads(),
                   "n": args.n, "n0": args.n0, "radius": args.radius, "sigma": args.sigma, "alpha": args.alpha,
                   "batch": args.batch, "fixed_batch": fixed_batch,
                   "floor_samples_per_s": floor, "sampler_samples_per_s": ours}
    if syncs is not None:
        entry["host_syncs_per_sampler_call"] = syncs
    if args.skip_sequential:
        entry["wall_s"] = time.perf_counter() - t_model
        return entry

    def gen(kind: str, sid: str) -> torch.Generator:
        return make_generator(derive_seed(args.seed, kind, sid), device)

    cache: dict[tuple[str, int], tuple] = {}

    def sequential(x: torch.Tensor, sid: str, n_max: int) -> tuple:
        if (sid, n_max) not in cache:  # same seed, same budget: the same run (reused, not redrawn)
            t = time.perf_counter()
            cert = certify_sequential(model, x, sigma=args.sigma, radii=[args.radius], n0=args.n0, n_max=n_max,
                                      alpha=args.alpha, batch_size=args.batch, generator=gen("sequential", sid))
            cache[sid, n_max] = (cert, time.perf_counter() - t)
        return cache[sid, n_max]

    items = list(zip(data.x, data.y.tolist(), data.ids))
    seq_k = min(len(items), args.sequential_images if args.sequential_images is not None else len(items))
    agree_k = min(len(items), args.agree_images)
    seq_rows, agree_rows = [], []
    done = 0
    t_loop = time.perf_counter()
    for i, (x, y, sid) in enumerate(items[: max(seq_k, agree_k)]):
        if time.perf_counter() >= deadline:
            break
        if i < seq_k:
            cert, _ = sequential(x, sid, args.n)
            seq_rows.append({"id": sid, "label": y, "prediction": cert.prediction,
                             "decision": cert.decisions[0].name, "samples": cert.samples})
        if i < agree_k:
            t = time.perf_counter()
            fixed = certify_detailed(model, x, sigma=args.sigma, n0=args.n0, n=n_agree, alpha=args.alpha,
                                     batch_size=fixed_batch, generator=gen("fixed", sid))
            fixed_s = time.perf_counter() - t
            seq, seq_s = sequential(x, sid, n_agree)
            fixed_ok = fixed.prediction != ABSTAIN and fixed.radius >= args.radius
            seq_ok = seq.decisions[0] is Decision.CERTIFIED
            agree_rows.append({
                "id": sid, "label": y, "agree": fixed_ok == seq_ok and (not fixed_ok or fixed.prediction == seq.prediction),
                "fixed_prediction": fixed.prediction, "fixed_radius": fixed.radius, "fixed_certified": fixed_ok,
                "p_hat": fixed.n_a / n_agree, "p_lower": fixed.p_lower, "fixed_samples": fixed.samples,
                "fixed_s": fixed_s, "seq_prediction": seq.prediction, "seq_decision": seq.decisions[0].name,
                "seq_samples": seq.samples, "seq_s": seq_s})
            if not agree_rows[-1]["agree"]:
                print(f"  disagreement on {sid}: fixed ({fixed.prediction}, R={fixed.radius:.4f}, "
                      f"pA_hat={fixed.n_a / n_agree:.5f}, pA_lower={fixed.p_lower:.5f}) vs sequential "
                      f"({seq.prediction}) {seq.decisions[0].name} after {seq.samples}", flush=True)
        done += 1
    loop_s = time.perf_counter() - t_loop
    planned = max(seq_k, agree_k)
    entry.update(images_planned=planned, images_done=done, stopped_by_budget=done < planned, loop_s=loop_s)
    if done < planned:
        print(f"[budget] time budget spent: {done}/{planned} images done", flush=True)
    summarize(entry, seq_rows, agree_rows, args, n_agree, loop_s)
    if args.replicates and agree_rows:
        entry["simulated"] = simulate([r["p_hat"] for r in agree_rows], args, deadline)
    entry["per_image"] = {"sequential": seq_rows, "agreement": agree_rows}
    entry["wall_s"] = time.perf_counter() - t_model
    print(f"[wall] {arch}: {entry['wall_s']:.1f} s (images loop {loop_s:.1f} s)", flush=True)
    return entry


def summarize(entry: dict, seq_rows: list[dict], agree_rows: list[dict], args: argparse.Namespace,
              n_agree: int, loop_s: float) -> None:
    """Print the sequential and agreement lines and add their summaries to ``entry``."""
    if seq_rows:
        k, samples = len(seq_rows), [r["samples"] for r in seq_rows]
        fixed_cost = args.n0 + args.n
        cert_acc = sum(r["decision"] == "CERTIFIED" and r["prediction"] == r["label"] for r in seq_rows) / k
        undecided = sum(r["decision"] == "UNDECIDED" for r in seq_rows)
        print(f"[sequential] r = {args.radius}, sigma = {args.sigma}, alpha = {args.alpha}, n_max = {args.n}, "
              f"{k} images: {np.mean(samples):,.0f} samples/image (median {np.median(samples):,.0f}, max "
              f"{max(samples):,}) vs fixed-n CERTIFY {fixed_cost:,}: ratio {fixed_cost / np.mean(samples):.1f}x "
              f"(target >= 5x); certified accuracy at r {cert_acc:.3f}; undecided {undecided}", flush=True)
        entry["sequential"] = {"images": k, "mean_samples": float(np.mean(samples)),
                               "median_samples": float(np.median(samples)), "max_samples": int(max(samples)),
                               "fixed_samples": fixed_cost, "samples_ratio": fixed_cost / float(np.mean(samples)),
                               "certified_accuracy": cert_acc, "undecided": undecided}
    if not agree_rows:
        return
    k, agree = len(agree_rows), sum(r["agree"] for r in agree_rows)
    lo, hi = clopper_pearson(agree, k)
    fixed_mean = float(np.mean([r["fixed_samples"] for r in agree_rows]))
    seq_mean = float(np.mean([r["seq_samples"] for r in agree_rows]))
    fixed_s, seq_s = sum(r["fixed_s"] for r in agree_rows), sum(r["seq_s"] for r in agree_rows)
    decisions = {d.name: sum(r["seq_decision"] == d.name for r in agree_rows) for d in Decision}
    p_hats = [r["p_hat"] for r in agree_rows]
    disagree = [{key: r[key] for key in ("id", "label", "p_hat", "p_lower", "fixed_prediction", "fixed_radius",
                                         "seq_prediction", "seq_decision", "seq_samples")}
                for r in agree_rows if not r["agree"]]
    print(f"[agreement] fixed-n CERTIFY (n = {n_agree:,}) vs sequential (n_max = {n_agree:,}) on {k} images: "
          f"{agree}/{k} = {agree / k:.3f} (95% CI {lo:.3f}-{hi:.3f}; target >= 0.99); {len(disagree)} disagree"
          + (" (p_A hat: " + ", ".join(f"{d['id']} {d['p_hat']:.4f}" for d in disagree) + ")" if disagree else "")
          + f"; estimated p_A: min {min(p_hats):.4f}, median {np.median(p_hats):.4f}", flush=True)
    print(f"[agreement] samples/image: sequential {seq_mean:,.0f} vs fixed-n {fixed_mean:,.0f}, ratio "
          f"{fixed_mean / seq_mean:.1f}x (target >= 5x); wall: fixed-n {fixed_s:.1f} s, sequential {seq_s:.1f} s "
          f"({fixed_s / max(seq_s, 1e-9):.1f}x); certified at r: fixed-n "
          f"{sum(r['fixed_certified'] for r in agree_rows)}, sequential {decisions['CERTIFIED']} (not certified "
          f"{decisions['NOT_CERTIFIED']}, undecided {decisions['UNDECIDED']})", flush=True)
    entry["agreement"] = {"images": k, "n": n_agree, "agree": int(agree), "rate": agree / k, "ci95": [lo, hi],
                          "disagreements": disagree, "fixed_mean_samples": fixed_mean,
                          "sequential_mean_samples": seq_mean, "samples_ratio": fixed_mean / seq_mean,
                          "fixed_s": fixed_s, "sequential_s": seq_s,
                          "fixed_certified": int(sum(r["fixed_certified"] for r in agree_rows)),
                          "sequential_decisions": decisions}


def simulate(p_hats: list[float], args: argparse.Namespace, deadline: float) -> dict:
    """Agreement of the two decision rules on Bernoulli streams at each image's estimated p_A."""
    from robaudit.certify.clopper_pearson import lower_bound
    from robaudit.certify.sequential import SequentialTest
    from scipy.stats import norm

    rng = np.random.default_rng(args.seed)
    p0 = float(norm.cdf(args.radius / args.sigma))
    agree = total = images = 0
    used = []
    t0 = time.perf_counter()
    for p in p_hats:
        if time.perf_counter() >= deadline:
            break
        images += 1
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
    if not total:
        print("[simulated] skipped: time budget spent", flush=True)
        return {"replicates": 0, "agree": 0, "images": 0, "samples_ratio": float("nan")}
    ratio = float((args.n0 + args.n) / np.mean(used))
    print(f"[simulated] {args.replicates} Bernoulli replicates per image at its estimated p_A (nA/n of the "
          f"agreement run), {images}/{len(p_hats)} images, n = {args.n}: agreement {agree}/{total} = "
          f"{agree / total:.4f}; samples ratio {ratio:.1f}x; {time.perf_counter() - t0:.1f} s", flush=True)
    return {"replicates": total, "agree": agree, "images": images, "samples_ratio": ratio}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu")
    ap.add_argument("--model-arch", choices=["cnn", "vit", "both"], default="cnn")
    ap.add_argument("--model", choices=["auto", "demo", "fallback"], default="auto", help="CNN weights source")
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--n0", type=int, default=100)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--alpha", type=float, default=0.001)
    ap.add_argument("--sigma", type=float, default=0.25)
    ap.add_argument("--radius", type=float, default=0.25)
    ap.add_argument("--batch", type=int, default=1000, help="largest sequential batch (sets its check points)")
    ap.add_argument("--fixed-batch", type=int, default=0, help="fixed-n CERTIFY batch (default --batch)")
    ap.add_argument("--throughput-batch", type=int, default=500)
    ap.add_argument("--throughput-batches", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-sequential", action="store_true")
    ap.add_argument("--sequential-images", type=int, default=None, help="images for the samples ratio (default all)")
    ap.add_argument("--agree-images", type=int, default=100, help="images for the fixed-n vs sequential run")
    ap.add_argument("--agree-n", type=int, default=0, help="budget of that run (default: --n)")
    ap.add_argument("--replicates", type=int, default=200, help="simulated replicates per image (0: off)")
    ap.add_argument("--time-budget-s", type=float, default=0.0, help="stop taking new images after this (0: none)")
    ap.add_argument("--json-out", type=Path, default=None, help="write all results (per image too) here")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    device = resolve_device(args.device)
    archs = ["cnn", "vit"] if args.model_arch == "both" else [args.model_arch]
    data = load_dataset("digits", shape=SHAPE, num_classes=10, seed=args.seed, split="test",
                        n=max(args.images, args.agree_images, args.sequential_images or 0))
    end = start + args.time_budget_s if args.time_budget_s > 0 else float("inf")
    result: dict = {"device": str(device), "torch": torch.__version__, "time_budget_s": args.time_budget_s,
                    "argv": sys.argv[1:] if argv is None else argv, "models": {}}
    if device.type == "cuda":  # torch defaults unless changed: cuDNN convs may use TF32, matmuls fp32
        result.update(gpu=torch.cuda.get_device_name(device), cudnn_tf32=torch.backends.cudnn.allow_tf32,
                      matmul_tf32=torch.backends.cuda.matmul.allow_tf32)
    for i, arch in enumerate(archs):
        now = time.perf_counter()
        deadline = now + (end - now) / (len(archs) - i)  # this model's share of what is left
        result["models"][arch] = run_model(arch, args, device, data, deadline)
        result["total_wall_s"] = time.perf_counter() - start
        if args.json_out is not None:
            args.json_out.write_text(json.dumps(result, indent=1), encoding="utf-8")
    if len(archs) > 1:
        for arch, e in result["models"].items():
            a = e.get("agreement", {})
            print(f"[summary] {arch}: sampler {e['sampler_samples_per_s']:,.0f} samples/s; "
                  + (f"samples ratio {a['samples_ratio']:.1f}x, agreement {a['agree']}/{a['images']}, "
                     if a else "") + f"{e['images_done'] if 'images_done' in e else 0} images, {e['wall_s']:.1f} s")
    # machine-readable line for benchmarks/run_all.py: the first model's entry at top level (what
    # _results.eval_smoothing reads), every model under "models" (per-image records only in --json-out)
    first = {k: v for k, v in result["models"][archs[0]].items() if k != "per_image"}
    slim = {arch: {k: v for k, v in e.items() if k != "per_image"} for arch, e in result["models"].items()}
    print("RESULT_JSON " + json.dumps({**first, **{k: v for k, v in result.items() if k != "models"},
                                       "models": slim}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
