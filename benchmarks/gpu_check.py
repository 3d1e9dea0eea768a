"""GPU check for a lent CUDA machine (optional; everything else is tested on CPU).

Steps, in priority order, each skipped when the remaining ``--budget-s`` is below its estimate:
  1. ``robaudit demo --device cuda``: every stage must be OK on CUDA (no device mix-ups); its
     metrics are compared with a CPU run's results.json (``--cpu-reference``), stage by stage.
  2. Out-of-memory back-off on real CUDA: a smoothing stage on the demo ViT with a batch size far
     above what a capped memory fraction holds must finish OK, report its retries, and certify
     like the same stage at a batch size that fits.
  3. Sequential vs fixed-n CERTIFY at n = 100,000 on both demo models (bench_smoothing.py).
  4. ``torchrun --nproc-per-node 2 ... --device cuda`` (both ranks on this GPU) vs one process.
  5. Rank scaling on this machine's CPU cores (bench_ranks.py).
Writes ``gpu_check.json`` (and the step logs) to ``--out``.

Usage (repository root, on the GPU machine):
    python3 benchmarks/gpu_check.py --out $OUT --cpu-reference .gpucheck/cpu_results.json
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
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent


class Budget:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


def sh(cmd: list[str], log: Path, timeout: float, env: dict[str, str] | None = None) -> tuple[int, float]:
    t0 = time.perf_counter()
    with open(log, "a", encoding="utf-8") as f:
        f.write(f"\n$ {' '.join(cmd)}\n")
        f.flush()
        try:
            code = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, timeout=max(timeout, 1),
                                  env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}, cwd=ROOT).returncode
        except subprocess.TimeoutExpired:
            code = 124
    return code, time.perf_counter() - t0


def metric_diffs(new: dict[str, Any], ref: dict[str, Any]) -> dict[str, Any]:
    """Per (model, variant, stage): status and the largest |metric difference| against the reference."""
    def index(res: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return {f"{s['model']}/{s['variant']}/{s['id']}": s for s in res["stages"]}

    a, b = index(new), index(ref)
    out = {}
    for key, s in a.items():
        r = b.get(key)
        common = sorted(set(s["metrics"]) & set(r["metrics"])) if r else []
        diffs = {m: abs(s["metrics"][m] - r["metrics"][m]) for m in common  # NaN/inf are strings in JSON
                 if isinstance(s["metrics"][m], (int, float)) and isinstance(r["metrics"][m], (int, float))
                 and not m.endswith((".n", ".ci_low", ".ci_high"))}
        worst = max(diffs, key=lambda m: diffs[m]) if diffs else None
        out[key] = {"status": s["status"], "error": (s.get("error") or "")[:600] or None,
                    "max_abs_diff": diffs[worst] if worst else None, "worst_metric": worst,
                    "duration_s": s["duration_s"]}
    return out


def step_demo(args: argparse.Namespace, log: Path) -> dict[str, Any]:
    out = Path(tempfile.mkdtemp(prefix="demo_cuda_"))
    code, wall = sh([sys.executable, "-m", "robaudit", "demo", "--device", "cuda", "--out", str(out), "-q"], log, 400)
    res = json.loads((out / "results.json").read_text()) if (out / "results.json").exists() else None
    if res is None:
        return {"exit_code": code, "wall_s": wall, "error": "no results.json"}
    (Path(args.out) / "demo_cuda_results.json").write_text(json.dumps(res), encoding="utf-8")
    ref = json.loads(Path(args.cpu_reference).read_text()) if args.cpu_reference else None
    stages = metric_diffs(res, ref) if ref else {f"{s['model']}/{s['variant']}/{s['id']}": s["status"]
                                                  for s in res["stages"]}
    return {"exit_code": code, "wall_s": wall, "verdict": res["verdict"], "device": res["environment"].get("device"),
            "not_ok": [k for k, v in stages.items() if (v["status"] if isinstance(v, dict) else v) != "OK"],
            "stages": stages}


def step_oom(args: argparse.Namespace, log: Path) -> dict[str, Any]:
    """In-process: cap this process's CUDA memory, then audit with a batch size that cannot fit."""
    import torch

    from robaudit.config import load_config
    from robaudit.runner import AuditOptions, run_audit

    torch.cuda.set_per_process_memory_fraction(args.memory_fraction)
    results = {}
    for label, batch in (("oversized", 400_000), ("fits", 5_000)):
        tmp = Path(tempfile.mkdtemp(prefix=f"oom_{label}_"))
        cfg = tmp / "oom.toml"
        cfg.write_text(f"""
seed = 0
[model]
name = "digits_vit"
source = "{ROOT}/examples/models/digits_vit.safetensors"
factory = "{ROOT}/examples/demo_models.py:make_vit"
input = {{ shape = [3, 32, 32], num_classes = 10, mean = [0.5], std = [0.5] }}
[data]
source = "digits"
split = "test"
n = 8
[[stages]]
id = "smoothing"
stage = "smoothing"
params = {{ n0 = 100, n = 400000, batch_size = {batch} }}
""")
        t0 = time.perf_counter()
        res = run_audit(load_config(cfg), tmp / "out", AuditOptions(device="cuda"))
        assert res is not None
        st = res.stages[0]
        results[label] = {"status": st.status.value, "error": (st.error or "")[:600] or None,
                          "metrics": st.metrics, "oom_retries": st.budget.get("total_oom_retries", 0),
                          "notes": [n for n in st.notes if "memory" in n], "wall_s": time.perf_counter() - t0,
                          "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30}
        torch.cuda.reset_peak_memory_stats()
    results["memory_fraction"] = args.memory_fraction
    return results


def render(out: Path) -> str:
    """GPU_RESULTS.md text from a finished check's files (gpu_check.json and the step logs)."""
    sys.path.insert(0, str(BENCH))
    from _results import EVALUATORS, parse_result_json

    report = json.loads((out / "gpu_check.json").read_text(encoding="utf-8"))
    lines = [f"# GPU check: {report.get('gpu')} (torch {report.get('torch')}, {report.get('cpus')} CPUs)", "",
             "Written by `benchmarks/gpu_check.py` on a lent GPU machine; CI never runs it.", ""]
    demo = report.get("demo_cuda", {})
    if "stages" in demo:
        bad = demo.get("not_ok") or []
        lines += [f"## `robaudit demo --device cuda`: exit {demo['exit_code']}, {demo['wall_s']:.0f} s, "
                  f"verdict {demo.get('verdict')}, stages not OK: {', '.join(bad) or 'none'}", "",
                  "| model/variant/stage | status | max abs metric diff vs CPU | worst metric | s |", "|---|---|---|---|---|"]
        for key, v in demo["stages"].items():
            if isinstance(v, dict):
                diff = "-" if v["max_abs_diff"] is None else f"{v['max_abs_diff']:.3g}"
                lines.append(f"| {key} | {v['status']} | {diff} | {v['worst_metric'] or '-'} | {v['duration_s']} |")
        lines.append("")
    else:
        lines += [f"## `robaudit demo --device cuda`: {json.dumps(demo)[:400]}", ""]
    oom = report.get("oom_backoff", {})
    if "oversized" in oom:
        lines += [f"## Out-of-memory back-off (memory fraction {oom['memory_fraction']})", "",
                  "| run | status | OOM retries | certified acc. r=0.25 | ACR | peak GiB | s |", "|---|---|---|---|---|---|---|"]
        for k in ("oversized", "fits"):
            v = oom[k]
            m = v.get("metrics", {})
            lines.append(f"| {k} | {v['status']} | {v['oom_retries']:.0f} | {m.get('certified_accuracy.r0_25')} | "
                         f"{m.get('acr', float('nan')):.4f} | {v['peak_mem_gib']:.2f} | {v['wall_s']:.1f} |")
        lines.append("")
    for name, log in (("smoothing", "smoothing.log"), ("ranks", "ranks_cpu.log"), ("ranks", "ranks_cuda.log")):
        path = out / log
        data = parse_result_json(path.read_text(encoding="utf-8")) if path.exists() else None
        if data is None:
            continue
        lines += [f"## {log.removesuffix('.log')}", "", "| quantity | value | ratio | target | |", "|---|---|---|---|---|"]
        for r in EVALUATORS[name](data):
            ratio = r.vs_reference if r.vs_reference is not None else r.vs_floor
            verdict = "" if r.passed is None else ("PASS" if r.passed else "MISS")
            lines.append(f"| {r.quantity} | {r.value} | {'-' if ratio is None else f'{ratio:.2f}x'} | {r.target} | "
                         f"{verdict} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--cpu-reference", help="results.json of `robaudit demo` on CPU")
    ap.add_argument("--budget-s", type=float, default=540)
    ap.add_argument("--memory-fraction", type=float, default=0.08)
    ap.add_argument("--smoothing-images", type=int, default=100)
    ap.add_argument("--smoothing-budget-s", type=float, default=180)
    ap.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--steps", nargs="+", help="run only these steps (demo_cuda oom_backoff smoothing_100k "
                    "torchrun_cuda ranks_cpu)")
    ap.add_argument("--render-only", action="store_true", help="only (re)write GPU_RESULTS.md from --out's files")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if args.render_only:
        print(render(out))
        return 0
    out.mkdir(parents=True, exist_ok=True)
    log = out / "gpu_check.log"
    budget = Budget(args.budget_s)
    import torch

    report: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.cuda.is_available(),
                              "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                              "cpus": os.cpu_count()}

    def save() -> None:
        (out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str), encoding="utf-8")

    steps = [("demo_cuda", 150, lambda: step_demo(args, log)),
             ("oom_backoff", 60, lambda: step_oom(args, log)),
             ("smoothing_100k", args.smoothing_budget_s + 40, lambda: {"exit_code": sh(
                 [sys.executable, str(BENCH / "bench_smoothing.py"), "--device", "cuda", "--model-arch", "both",
                  "--images", str(args.smoothing_images), "--agree-images", str(args.smoothing_images),
                  "--n", "100000", "--batch", "1000", "--fixed-batch", "10000", "--throughput-batch", "10000",
                  "--throughput-batches", "10", "--replicates", "50", "--time-budget-s", str(args.smoothing_budget_s),
                  "--json-out", str(out / "smoothing.json")], out / "smoothing.log", budget.left() - 5)}),
             ("torchrun_cuda", 40, lambda: {"exit_code": sh(
                 [sys.executable, str(BENCH / "bench_ranks.py"), "--ranks", "2", "--n", "200", "--device", "cuda"],
                 out / "ranks_cuda.log", budget.left() - 5)}),
             ("ranks_cpu", 90, lambda: {"exit_code": sh(
                 [sys.executable, str(BENCH / "bench_ranks.py"), "--ranks", *map(str, args.ranks), "--n", "800",
                  "--device", "cpu"], out / "ranks_cpu.log", budget.left() - 5)})]
    for name, estimate, fn in steps:
        if args.steps and name not in args.steps:
            continue
        if budget.left() < estimate:
            report[name] = {"skipped": f"{budget.left():.0f} s left, needs about {estimate} s"}
            save()
            continue
        t0 = time.perf_counter()
        try:
            report[name] = fn()
        except Exception as err:  # noqa: BLE001 - record and go on to the next check
            report[name] = {"error": f"{type(err).__name__}: {err}"}
        report[name]["step_s"] = round(time.perf_counter() - t0, 1)
        print(f"{name}: {json.dumps(report[name], default=str)[:1500]}", flush=True)
        save()
    (out / "GPU_RESULTS.md").write_text(render(out), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
