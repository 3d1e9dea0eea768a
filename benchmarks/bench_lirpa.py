"""Time and peak memory of the native LiRPA engine on the auto_LiRPA reference networks.

Each (net, eps, method) runs in its own subprocess so ``ru_maxrss`` (peak resident memory)
belongs to that run alone; the table shows the peak above the process's state just before the
call (imports, weights, data loaded), wall time, CPU time, and auto_LiRPA's own float32 time
for the same case from the fixture manifest (hardware unknown: a rough reference only).

Usage::

    python benchmarks/bench_lirpa.py [--nets cnn_relu,cnn_bn] [--methods CROWN,alpha-CROWN] [--threads 1]

Needs ``../shared/lirpa_reference`` (or ``$ROBAUDIT_SHARED/lirpa_reference``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path


def _ref_dir() -> Path:
    env = os.environ.get("ROBAUDIT_SHARED")
    base = Path(env) if env else Path(__file__).resolve().parents[1] / ".." / "shared"
    path = (base / "lirpa_reference").resolve()
    if not (path / "manifest.json").is_file():
        sys.exit(f"reference fixtures not found at {path}; set ROBAUDIT_SHARED")
    return path


def run_one(case_id: str, threads: int) -> dict:
    """Bound one manifest case in this process; returns timings and memory."""
    import importlib.util
    import math

    import numpy as np
    import torch
    from robaudit.certify.lirpa import compute_bounds

    torch.set_num_threads(threads)
    ref = _ref_dir()
    man = json.loads((ref / "manifest.json").read_text())
    case = next(c for c in man["cases"] if c["id"] == case_id)
    spec = importlib.util.spec_from_file_location("lirpa_reference_nets", ref / "nets.py")
    nets = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(nets)  # type: ignore[union-attr]
    meta = man["nets"][case["net"]]
    net = nets.build(meta["arch"])
    net.load_state_dict(torch.load(ref / meta["weights"], weights_only=True))
    net.eval()
    data = np.load(ref / meta["npz"])
    x = torch.from_numpy(data["x"])
    C = torch.from_numpy(data[case["C_key"]]) if case["C_key"] else None
    norm = math.inf if case["norm"] == "inf" else 2.0
    import torch.optim  # noqa: F401 - import cost is not part of the bound computation

    compute_bounds(net, x[:1], 0.0, method="ibp", x_min=None, x_max=None)  # warm up tracing
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    wall, cpu = time.perf_counter(), time.process_time()
    lb, ub = compute_bounds(net, x, case["eps"], norm=norm, method=case["method"], C=C, x_min=None, x_max=None,
                            options=case["options"] or None)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    width = float((ub - lb).double().mean())
    ref_width = float((data[case["ub_key"]] - data[case["lb_key"]]).mean())
    return {"id": case_id, "wall_s": wall, "cpu_s": cpu, "peak_mib": (peak - before) / 1024,
            "auto_lirpa_s": case["timing_s"].get("float32"), "width": width, "ref_width": ref_width}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", default="cnn_relu,cnn_bn")
    parser.add_argument("--methods", default="CROWN,alpha-CROWN")
    parser.add_argument("--spec", default="margin")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one, args.threads)))
        return
    man = json.loads((_ref_dir() / "manifest.json").read_text())
    wanted = [c["id"] for c in man["cases"] if c["net"] in args.nets.split(",")
              and c["method"] in args.methods.split(",") and c["spec"] == args.spec]
    print(f"{'case':42s} {'wall s':>8s} {'cpu s':>8s} {'peak MiB':>9s} {'auto_LiRPA s':>12s} "
          f"{'mean width':>11s} {'ref width':>10s}")
    rows = []
    for case_id in wanted:
        out = subprocess.run([sys.executable, __file__, "--one", case_id, "--threads", str(args.threads)],
                             capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        ref_t = f"{r['auto_lirpa_s']:.2f}" if r["auto_lirpa_s"] is not None else "-"
        print(f"{r['id']:42s} {r['wall_s']:8.2f} {r['cpu_s']:8.2f} {r['peak_mib']:9.1f} {ref_t:>12s} "
              f"{r['width']:11.4f} {r['ref_width']:10.4f}", flush=True)
        rows.append(r)
    print("RESULT_JSON " + json.dumps({"threads": args.threads, "cases": rows}))  # for benchmarks/run_all.py


if __name__ == "__main__":
    main()
