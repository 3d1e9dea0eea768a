"""Benchmark: wall time of the quick-profile audit vs the number of torchrun ranks (and equality of results).

Runs ``torchrun --standalone --nproc-per-node N -m robaudit audit benchmarks/scaling.toml`` for each
N (the demo CNN; clean, robust and corruptions stages; ``[data] n`` rewritten to ``--n``), each
rank with ``--threads`` torch/OpenMP threads, and prints per N: the wall time of the command and
of its run phase (``timings.run_s``: the sharded work units plus rank 0's summaries; start-up,
imports and model/data loading are paid once per rank in parallel and do not shrink with N),
the speed-ups over N = 1 and the run-phase efficiency (speed-up / N), plus whether every metric equals the N = 1
run's exactly (sharding must not change results). A single-process ``robaudit audit`` (no
torchrun) runs first as the reference, which also shows torchrun's own start-up cost.
Rank counts above the machine's cores measure contention, not scaling: choose
``N * threads <= cores``.

Usage: ``python benchmarks/bench_ranks.py [--ranks 1 2] [--n 400] [--threads 1] [--device cpu]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scaling import config_text  # noqa: E402


def run(cmd: list[str], out: Path, threads: int) -> tuple[float, dict[str, dict[str, float]], float]:
    """(wall seconds, metrics per stage id, run-phase seconds) of one audit command.

    The run phase (results.json ``timings.run_s``) is what sharding divides: work units plus
    summaries, without process start-up, imports, model and data loading (paid by every rank).
    """
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    proc = subprocess.run([*cmd, "--out", str(out), "--quiet"], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    res = json.loads((out / "results.json").read_text(encoding="utf-8"))
    metrics = {s["id"]: s["metrics"] for s in res["stages"]}
    return wall, metrics, float(res["timings"]["run_s"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--n", type=int, default=400, help="audited samples (digits train split, at most 1400)")
    ap.add_argument("--threads", type=int, default=1, help="torch/OpenMP threads per rank")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="robaudit_ranks_") as tmp:
        cfg = Path(tmp) / "ranks.toml"
        cfg.write_text(config_text(args.n), encoding="utf-8")
        audit = ["-m", "robaudit", "audit", str(cfg), "--device", args.device]
        wall1, ref, run1 = run([sys.executable, *audit], Path(tmp) / "single", args.threads)
        print(f"single process (no torchrun): wall {wall1:7.2f} s, run phase {run1:7.2f} s", flush=True)
        for n in args.ranks:
            torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(n)]
            wall, metrics, run_s = run([*torchrun, *audit], Path(tmp) / f"ranks{n}", args.threads)
            rows.append({"ranks": n, "wall_s": wall, "run_s": run_s, "identical": metrics == ref})
            print(f"N = {n:2d}: wall {wall:7.2f} s, run phase {run_s:7.2f} s, "
                  f"results identical to the single process: {metrics == ref}", flush=True)
    base = next((r for r in rows if r["ranks"] == 1), {"wall_s": wall1, "run_s": run1})
    for r in rows:
        for k in ("wall", "run"):
            r[f"{k}_speedup"] = base[f"{k}_s"] / r[f"{k}_s"]
        r["run_efficiency"] = r["run_speedup"] / r["ranks"]
        print(f"N = {r['ranks']:2d}: speed-up over N = 1: run phase {r['run_speedup']:.2f}x "
              f"(efficiency {r['run_efficiency']:.2f}), whole command {r['wall_speedup']:.2f}x")
    print("RESULT_JSON " + json.dumps({"single_wall_s": wall1, "single_run_s": run1, "rows": rows, "n": args.n,
                                       "threads": args.threads,
                                       "device": args.device, "cpus": os.cpu_count()}))
    return 0 if all(r["identical"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
