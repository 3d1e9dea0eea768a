"""Run every benchmark script and write benchmarks/RESULTS.md (machine, versions, ratios, targets).

Each ``benchmarks/bench_*.py`` runs as its own subprocess with a timeout and prints, last, one line
``RESULT_JSON {...}``; this script parses that line, derives the ratios against the reference tool
and against the raw forward/backward floor, compares them with the targets and writes a Markdown
report (PASS/MISS per target). A script without a RESULT_JSON line, or one that failed or timed
out, is reported as such with the tail of its output. Unknown ``bench_*.py`` files are run with no
arguments and reported verbatim.

Usage (repository root)::

    python benchmarks/run_all.py [--quick] [--only NAME [NAME ...]] [--out benchmarks/RESULTS.md]

``--quick`` uses small budgets (minutes in total) whose numbers are indicative only. The raw
results also go to RESULTS.json next to the Markdown file; with ``--only``, the benchmarks not re-run
are taken from that file (same mode only), so one benchmark can be re-measured on its own.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _results import (  # noqa: E402
    EVALUATORS,
    BenchResult,
    merge_results,
    parse_result_json,
    render_results,
    result_from_json,
)

#: name -> (script, quick args, full args, quick timeout s, full timeout s)
SPECS: dict[str, tuple[str, list[str], list[str], int, int]] = {
    "pgd": ("bench_pgd.py", ["--repeats", "1"], ["--repeats", "5"], 1200, 3600),
    "corruptions": ("bench_corruptions.py", ["--sizes", "32"], [], 900, 3600),
    "smoothing": ("bench_smoothing.py",
                  ["--images", "20", "--sequential-images", "20", "--agree-images", "10", "--agree-n", "10000",
                   "--replicates", "50", "--rounds", "3"],
                  [], 900, 7200),
    "patch_attack": ("bench_patch_attack.py", ["--pairs", "64", "--steps", "5"], [], 600, 1800),
    "lirpa": ("bench_lirpa.py", ["--nets", "cnn_relu"], [], 900, 3600),
    "scaling": ("bench_scaling.py", ["--ns", "100", "200", "400", "800"],
                ["--ns", "100", "200", "400", "800", "1400", "--repeats", "3"], 1200, 3600),
    "ranks": ("bench_ranks.py", ["--ranks", "1", "2", "--n", "400"], ["--ranks", "1", "2", "--n", "1400"], 900, 3600),
}


def discover() -> dict[str, tuple[str, list[str], list[str], int, int]]:
    """SPECS plus any other ``bench_*.py`` (run without arguments, reported verbatim)."""
    specs = dict(SPECS)
    known = {s[0] for s in SPECS.values()}
    for path in sorted(HERE.glob("bench_*.py")):
        if path.name not in known:
            specs[path.stem.removeprefix("bench_")] = (path.name, [], [], 900, 3600)
    return specs


def run_one(name: str, script: str, args: list[str], timeout: int) -> BenchResult:
    """Run one script; never raises for the script's own failure."""
    cmd = [sys.executable, str(HERE / script), *args]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=HERE.parent)
        out, code, error = proc.stdout, proc.returncode, None
        if code != 0:
            error = f"exit status {code}: {proc.stderr.strip()[-500:]}"
    except subprocess.TimeoutExpired as err:
        out = err.stdout.decode() if isinstance(err.stdout, bytes) else (err.stdout or "")
        code, error = None, f"timed out after {timeout} s"
    seconds = time.perf_counter() - t0
    data = parse_result_json(out)
    if data is None and error is None:
        error = "no RESULT_JSON line in the output"
    return BenchResult(name=name, command=" ".join(["python", f"benchmarks/{script}", *args]), seconds=seconds,
                       returncode=code, data=data, error=error, tail=out.strip().splitlines()[-15:])


def machine_info() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    ram = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram = f"{int(line.split()[1]) / 1024 ** 2:.1f} GiB"
                break
    except (OSError, ValueError):
        pass
    try:
        load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        load = "unknown"
    return {"cpu": cpu, "cores": str(os.cpu_count()), "ram": ram, "load": load}


def versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"python": sys.version.split()[0]}
    for pkg in ("torch", "timm", "onnxruntime", "numpy", "robaudit", "torchattacks", "imagecorruptions"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small budgets (indicative numbers, minutes in total)")
    ap.add_argument("--only", nargs="+", metavar="NAME", help="run only these benchmarks (names: see --list)")
    ap.add_argument("--list", action="store_true", help="list benchmark names and exit")
    ap.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    args = ap.parse_args(argv)
    specs = discover()
    if args.list:
        print("\n".join(specs))
        return 0
    names = args.only or list(specs)
    unknown = [n for n in names if n not in specs]
    if unknown:
        ap.error(f"unknown benchmark(s) {unknown}; known: {list(specs)}")
    load_before = machine_info()["load"]
    results = []
    for name in names:
        script, quick_args, full_args, quick_t, full_t = specs[name]
        print(f"[run_all] {name}: {script} ...", flush=True)
        res = run_one(name, script, quick_args if args.quick else full_args, quick_t if args.quick else full_t)
        if res.data is not None and name in EVALUATORS:
            res.rows = EVALUATORS[name](res.data)
        print(f"[run_all] {name}: {res.seconds:.0f} s" + (f" ({res.error})" if res.error else ""), flush=True)
        results.append(res)
    machine = machine_info()
    machine["load"] = f"before: {load_before}; after: {machine['load']}"
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    raw_path = args.out.with_suffix(".json")
    notes = []
    if args.only and raw_path.is_file():
        old = json.loads(raw_path.read_text(encoding="utf-8"))
        if old.get("quick") == args.quick:
            kept = [result_from_json(r) for r in old["results"] if r["name"] not in names]
            results = merge_results(kept, results, list(specs))
            if kept:
                notes.append(f"Re-run now: {', '.join(names)}. Taken from the run of {old['date']} (load "
                             f"{old['machine'].get('load', '?')}): {', '.join(r.name for r in kept)}.")
    raw_path.write_text(json.dumps({"quick": args.quick, "date": date, "machine": machine, "versions": versions(),
                                    "results": [asdict(r) for r in results]}, indent=1), encoding="utf-8")
    text = render_results(results, machine, versions(), quick=args.quick, date=date, notes=notes)
    args.out.write_text(text, encoding="utf-8")
    print(f"[run_all] wrote {args.out} and {raw_path}")
    return 0 if all(r.error is None for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
