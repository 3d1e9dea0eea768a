"""Benchmark: cost of a quick-profile audit vs the number of samples (should be linear).

Runs ``robaudit audit benchmarks/scaling.toml`` (demo CNN; clean, robust and corruptions stages;
quick profile) as a subprocess for each sample count, with ``[data] n`` rewritten, and fits
``time = intercept + slope * n`` by least squares on the wall time, on the child CPU time
(user + system) and on the stages' own time (sum of ``duration_s`` in results.json: no start-up,
report rendering or import cost; the linearity target is judged on it). Prints the slope (s/sample), the intercept (start-up: imports, model load) and
R^2 of each fit; R^2 close to 1 means linear cost. One untimed warm-up audit runs first (cold
file caches), the audits run with ``--threads`` torch threads (default 1: on a shared machine,
idle OpenMP threads spin and inflate CPU time), and repeats run in rounds over all n so a burst
of load does not hit one n only.

Usage: ``python benchmarks/bench_scaling.py [--ns 100 200 400 800] [--repeats 1] [--threads 1]``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = Path(__file__).resolve().parent / "scaling.toml"


def linear_fit(xs: list[float], ys: list[float]) -> dict[str, float]:
    """Least-squares ``y = intercept + slope * x``; returns slope, intercept and R^2."""
    if len(xs) != len(ys) or len(xs) < 2:
        raise ValueError("need at least two (x, y) points")
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        raise ValueError("x values must not all be equal")
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx
    intercept = my - slope * mx
    ss_res = sum((y - intercept - slope * x) ** 2 for x, y in zip(xs, ys))
    ss_tot = sum((y - my) ** 2 for y in ys)
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0
    return {"slope": slope, "intercept": intercept, "r2": r2}


def config_text(n: int) -> str:
    """The template with ``n`` samples and absolute paths (the copy lives in a temporary folder)."""
    text = TEMPLATE.read_text(encoding="utf-8")
    text, count = re.subn(r"(?m)^n = \d+$", f"n = {n}", text)
    if count != 1:
        raise RuntimeError(f"{TEMPLATE} must contain exactly one 'n = <int>' line under [data]")
    return text.replace('"../', f'"{ROOT.as_posix()}/')


def run_audit(n: int, workdir: Path, threads: int) -> tuple[float, float, float]:
    """Wall, child CPU and summed stage seconds of one ``robaudit audit`` with ``n`` samples."""
    cfg = workdir / f"scaling_n{n}.toml"
    cfg.write_text(config_text(n), encoding="utf-8")
    out = workdir / f"out_n{n}"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    proc = subprocess.run([sys.executable, "-m", "robaudit", "audit", str(cfg), "--out", str(out), "--quiet"],
                          capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode not in (0, 1):  # 1: a gate failed (none configured, but not a timing problem)
        raise RuntimeError(f"audit with n={n} exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    stages = json.loads((out / "results.json").read_text(encoding="utf-8"))["stages"]
    return wall, cpu, float(sum(st["duration_s"] or 0.0 for st in stages))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ns", type=int, nargs="+", default=[100, 200, 400, 800])
    ap.add_argument("--repeats", type=int, default=1, help="runs per n (median)")
    ap.add_argument("--threads", type=int, default=1, help="torch/OpenMP threads of each audit")
    ap.add_argument("--no-warmup", action="store_true", help="skip the untimed warm-up audit")
    args = ap.parse_args(argv)
    runs: dict[int, list[tuple[float, float, float]]] = {n: [] for n in args.ns}
    with tempfile.TemporaryDirectory(prefix="robaudit_scaling_") as tmp:
        if not args.no_warmup:
            (Path(tmp) / "warmup").mkdir()
            run_audit(min(args.ns), Path(tmp) / "warmup", args.threads)
        for i in range(args.repeats):
            for n in args.ns:
                workdir = Path(tmp) / f"n{n}_r{i}"
                workdir.mkdir()
                runs[n].append(run_audit(n, workdir, args.threads))
                wall, cpu, stage = runs[n][-1]
                print(f"n = {n:4d} (round {i + 1}): wall {wall:7.2f} s, cpu {cpu:7.2f} s, stages {stage:7.2f} s",
                      flush=True)
    points = [{"n": n, **{f"{k}_s": statistics.median(r[j] for r in runs[n])
                          for j, k in enumerate(("wall", "cpu", "stage"))}} for n in args.ns]
    ns = [float(p["n"]) for p in points]
    fits = {k: linear_fit(ns, [p[f"{k}_s"] for p in points]) for k in ("stage", "wall", "cpu")}
    for k, f in fits.items():
        print(f"{k:4s}: slope {f['slope'] * 1000:.1f} ms/sample, intercept {f['intercept']:.1f} s, R^2 {f['r2']:.4f}")
    print("RESULT_JSON " + json.dumps({"points": points, "fits": fits, "threads": args.threads,
                                       "repeats": args.repeats}))  # for benchmarks/run_all.py
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
