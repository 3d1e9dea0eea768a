"""Pure helpers of benchmarks/run_all.py: parse RESULT_JSON lines, derive ratios, judge targets, render RESULTS.md.

No I/O and no timing here, so tests can feed fake results. A target is PASS only when its value
is a finite number that meets it; a missing or non-finite value is MISS, never PASS.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

PREFIX = "RESULT_JSON "


@dataclass
class Row:
    """One line of a benchmark's table: a measured value, its ratios and (optionally) a target."""

    quantity: str
    value: str
    vs_reference: float | None = None
    vs_floor: float | None = None
    target: str = ""
    passed: bool | None = None  #: None: no target (reported only)


@dataclass
class BenchResult:
    name: str
    command: str
    seconds: float
    returncode: int | None
    data: dict[str, Any] | None
    error: str | None = None
    tail: list[str] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)


def parse_result_json(stdout: str) -> dict[str, Any] | None:
    """The object on the last line starting with ``RESULT_JSON ``, or None."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(PREFIX):
            try:
                data = json.loads(line[len(PREFIX):])
            except json.JSONDecodeError:
                return None
            return data if isinstance(data, dict) else None
    return None


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not math.isfinite(a) or not math.isfinite(b) or b == 0:
        return None
    return a / b


def _at_least(value: float | None, bound: float) -> bool:
    return value is not None and math.isfinite(value) and value >= bound


def eval_pgd(d: dict[str, Any]) -> list[Row]:
    rows = []
    for model, m in d["models"].items():
        ips = m["img_per_s"]
        for key in ("robaudit", "robaudit(no early stop)"):
            vs_ref, vs_floor = _ratio(ips[key], ips["torchattacks"]), _ratio(ips[key], ips["floor"])
            rows.append(Row(f"PGD-10 {model}, {key} (img/s)", f"{ips[key]:.1f}", vs_ref, vs_floor,
                            ">= 1.0x torchattacks and >= 0.85x floor",
                            _at_least(vs_ref, 1.0) and _at_least(vs_floor, 0.85)))
        rows.append(Row(f"PGD-10 {model}, torchattacks / floor (img/s)",
                        f"{ips['torchattacks']:.1f} / {ips['floor']:.1f}", None,
                        _ratio(ips["torchattacks"], ips["floor"])))
    return rows


def eval_corruptions(d: dict[str, Any]) -> list[Row]:
    rows = []
    for size, s in d["sizes"].items():
        speedup = _ratio(s["imagecorruptions_s"], s["robaudit_s"])
        rows.append(Row(f"15 corruptions x 5 severities, {s['images']} images at {size}px (s)",
                        f"{s['robaudit_s']:.2f} (imagecorruptions {s['imagecorruptions_s']:.2f})", speedup, None,
                        ">= 10x imagecorruptions", _at_least(speedup, 10.0)))
        slow = sorted(s.get("per_corruption", {}).items(),
                      key=lambda kv: _ratio(kv[1]["imagecorruptions_s"], kv[1]["robaudit_s"]) or 0.0)[:3]
        if slow:
            rows.append(Row(f"slowest speed-ups at {size}px", ", ".join(
                f"{k} {_ratio(v['imagecorruptions_s'], v['robaudit_s']) or float('nan'):.1f}x" for k, v in slow)))
    return rows


def eval_smoothing(d: dict[str, Any]) -> list[Row]:
    models = d.get("models")
    if models:  # one block of rows per model (--model-arch both)
        return [Row(f"[{arch}] {r.quantity}", r.value, r.vs_reference, r.vs_floor, r.target, r.passed)
                for arch, m in models.items() for r in _eval_smoothing_one({**m, "models": None})]
    return _eval_smoothing_one(d)


def _eval_smoothing_one(d: dict[str, Any]) -> list[Row]:
    vs_floor = _ratio(d["sampler_samples_per_s"], d["floor_samples_per_s"])
    where = f" on {d['device']}" if d.get("device") else ""
    rows = [Row(f"CERTIFY sampling{where} (noisy samples/s)", f"{d['sampler_samples_per_s']:,.0f}", None, vs_floor,
                ">= 0.9x floor", _at_least(vs_floor, 0.9))]
    if "sequential" in d:
        s = d["sequential"]
        saving = _ratio(float(s["fixed_samples"]), s["mean_samples"])
        rows.append(Row(f"sequential samples/image at r={d['radius']}, n={d['n']} ({s['images']} images)",
                        f"{s['mean_samples']:,.0f} vs {s['fixed_samples']:,}", saving, None,
                        ">= 5x fewer than fixed-n", _at_least(saving, 5.0)))
    if "agreement" in d:
        a = d["agreement"]
        frac = _ratio(float(a["agree"]), float(a["images"]))
        rows.append(Row(f"decision agreement, fixed-n vs sequential, n={a['n']}",
                        f"{a['agree']}/{a['images']}", frac, None, ">= 0.99", _at_least(frac, 0.99)))
    if "simulated" in d:
        s = d["simulated"]
        frac = _ratio(float(s["agree"]), float(s["replicates"]))
        rows.append(Row(f"simulated agreement at n={d['n']} (Bernoulli streams)", f"{s['agree']}/{s['replicates']}",
                        frac, None, ">= 0.99", _at_least(frac, 0.99)))
    return rows


def eval_patch(d: dict[str, Any]) -> list[Row]:
    vs_floor = _ratio(d["attack_pair_steps_per_s"], d["floor_pair_steps_per_s"])
    return [Row(f"patch attack, {d['pairs']} pairs x {d['steps']} steps (pair-steps/s)",
                f"{d['attack_pair_steps_per_s']:.1f}", None, vs_floor, ">= 0.85x floor (as PGD)",
                _at_least(vs_floor, 0.85))]


def eval_lirpa(d: dict[str, Any]) -> list[Row]:
    rows = []
    for c in d["cases"]:
        ref = c.get("auto_lirpa_s")
        rows.append(Row(f"{c['id']} (wall s / peak MiB; width / ref width)",
                        f"{c['wall_s']:.2f} / {c['peak_mib']:.0f}; {c['width']:.4f} / {c['ref_width']:.4f}",
                        _ratio(ref, c["wall_s"]), None, "report (auto_LiRPA time: other hardware)"))
    return rows


def eval_scaling(d: dict[str, Any]) -> list[Row]:
    rows = [Row(f"audit n={p['n']} (stages s / wall s / cpu s)",
                f"{p.get('stage_s', float('nan')):.1f} / {p['wall_s']:.1f} / {p['cpu_s']:.1f}") for p in d["points"]]
    for k, f in d["fits"].items():  # linearity is judged on the stages' own time (no start-up cost)
        judged = k == "stage"
        rows.append(Row(f"linear fit on {k} time", f"slope {f['slope'] * 1000:.1f} ms/sample, intercept "
                        f"{f['intercept']:.1f} s, R^2 {f['r2']:.4f}", None, None,
                        "R^2 >= 0.95 (linear cost)" if judged else "", _at_least(f["r2"], 0.95) if judged else None))
    return rows


def eval_ranks(d: dict[str, Any]) -> list[Row]:
    rows = [Row(f"single process, n={d['n']} ({d['cpus']} CPUs, {d['threads']} thread(s)/rank)",
                f"wall {d['single_wall_s']:.1f} s, run phase {d.get('single_run_s', float('nan')):.1f} s")]
    for r in d["rows"]:
        if "run_s" not in r:  # an older bench_ranks.py: whole-command wall time only
            rows.append(Row(f"torchrun N={r['ranks']} (wall s; results identical)", f"{r['wall_s']:.1f}; "
                            f"{r['identical']}", r.get("speedup"), None, "identical results", bool(r["identical"])))
            continue
        rows.append(Row(f"torchrun N={r['ranks']} (run phase s / wall s; results identical)",
                        f"{r['run_s']:.1f} / {r['wall_s']:.1f}; {r['identical']}", r["run_speedup"], None,
                        "identical results to one process", bool(r["identical"])))
    return rows


def eval_causal(d: dict[str, Any]) -> list[Row]:
    return [Row(f"channel effects at {name}: batched vs one forward per channel (s; max abs diff)",
                f"{v['batched_s']:.3f} vs {v['naive_s']:.3f}; {v['max_diff']:.1e}",
                _ratio(v["naive_s"], v["batched_s"]), None, "report (identical results required)",
                v["max_diff"] <= 1e-4)
            for name, v in d["layers"].items()]


EVALUATORS: dict[str, Callable[[dict[str, Any]], list[Row]]] = {
    "pgd": eval_pgd, "corruptions": eval_corruptions, "smoothing": eval_smoothing,
    "patch_attack": eval_patch, "lirpa": eval_lirpa, "scaling": eval_scaling, "causal": eval_causal,
    "ranks": eval_ranks,
}


def _fmt_ratio(r: float | None) -> str:
    return "-" if r is None else f"{r:.2f}x"


def _verdict(p: bool | None) -> str:
    return "-" if p is None else ("PASS" if p else "MISS")


def result_from_json(d: dict[str, Any]) -> BenchResult:
    """Inverse of ``dataclasses.asdict`` on a :class:`BenchResult`."""
    return BenchResult(**{**d, "rows": [Row(**r) for r in d.get("rows", [])]})


def merge_results(old: list[BenchResult], new: list[BenchResult], order: list[str]) -> list[BenchResult]:
    """``old`` with the benchmarks in ``new`` replaced (or added), sorted by ``order`` (unknown names last)."""
    by_name = {r.name: r for r in old}
    by_name.update({r.name: r for r in new})
    rank = {name: i for i, name in enumerate(order)}
    return sorted(by_name.values(), key=lambda r: (rank.get(r.name, len(rank)), r.name))


def render_results(results: list[BenchResult], machine: dict[str, str], versions: dict[str, str], *,
                   quick: bool, date: str, notes: list[str] | None = None) -> str:
    """The whole RESULTS.md text."""
    lines = ["# robaudit benchmark results", "",
             f"Generated by `python benchmarks/run_all.py{' --quick' if quick else ''}` on {date}.", ""]
    lines += [*(notes or []), ""] if notes else []
    if quick:
        lines += ["**Quick mode:** small budgets; the numbers are indicative only and must be re-measured with "
                  "`python benchmarks/run_all.py` on an idle machine.", ""]
    lines += ["## Machine", "", f"- CPU: {machine.get('cpu', 'unknown')}", f"- cores: {machine.get('cores', '?')}",
              f"- RAM: {machine.get('ram', 'unknown')}", f"- load average (1, 5, 15 min): {machine.get('load', '?')}",
              "", "## Versions", "", ", ".join(f"{k} {v}" for k, v in versions.items()), "", "## Summary", "",
              "| benchmark | time (s) | targets met | status |", "|---|---|---|---|"]
    for r in results:
        judged = [row.passed for row in r.rows if row.passed is not None]
        met = f"{sum(judged)}/{len(judged)}" if judged else "-"
        lines.append(f"| {r.name} | {r.seconds:.0f} | {met} | {'ok' if r.error is None else 'ERROR: ' + r.error} |")
    for r in results:
        lines += ["", f"## {r.name}", "", f"`{r.command}`", ""]
        if r.error:
            lines += [f"**{r.error}**", ""]
        if r.rows:
            lines += ["| quantity | median | vs reference | vs floor | target | verdict |", "|---|---|---|---|---|---|"]
            lines += [f"| {row.quantity} | {row.value} | {_fmt_ratio(row.vs_reference)} | {_fmt_ratio(row.vs_floor)} "
                      f"| {row.target or '-'} | {_verdict(row.passed)} |" for row in r.rows]
        elif r.tail:
            lines += ["Output (last lines):", "", "```", *r.tail, "```"]
    lines += ["", "Ratios: *vs reference* = robaudit speed / reference tool speed (corruptions: imagecorruptions; "
              "PGD: torchattacks; LiRPA: auto_LiRPA's recorded time, other hardware), or the measured fraction for "
              "agreement rows; *vs floor* = robaudit speed / the raw forward(+backward) passes the method cannot "
              "avoid. MISS means the target was not met on this run (or the value is missing).", "",
              "GPU measurements (sequential vs fixed-n CERTIFY at n = 100,000 on both demo models, the demo on "
              "CUDA, out-of-memory back-off, rank scaling on 16 cores) come from `benchmarks/gpu_check.py` on a "
              "lent H200 and are in `benchmarks/gpu/` (README.md there).", ""]
    return "\n".join(lines)
