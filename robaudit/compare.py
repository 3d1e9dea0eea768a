"""``robaudit compare OLD.json NEW.json``: metric changes between two audits, with a regression gate."""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass

from robaudit.results import AuditResult, StageStatus

LOWER_IS_BETTER = ("error", "fooling_rate", "fr_", "_fr", "mce", "asr", "abstain", "ece", "nll", "time",
                   "gap", "queries", "forward", "backward", "samples.total", "samples.per_image")


@dataclass(frozen=True)
class MetricChange:
    model: str
    variant: str
    metric: str  # "<stage id>.<metric>"
    old: float | None
    new: float | None
    higher_is_better: bool
    regression: float | None  # positive = worse
    gated: bool
    passed: bool


def _headline(metric: str) -> bool:
    return not metric.endswith((".ci_low", ".ci_high", ".n"))


def higher_is_better(metric: str) -> bool:
    name = metric.lower()
    return not any(token in name for token in LOWER_IS_BETTER)


def compare_results(old: AuditResult, new: AuditResult, *, max_drop: float | None,
                    patterns: list[str] | None = None) -> list[MetricChange]:
    """Changes of every headline metric; those matching ``patterns`` (default: all) are gated by ``max_drop``."""
    def table(r: AuditResult) -> dict[tuple[str, str, str], float]:
        out = {}
        for s in r.stages:
            if s.status is StageStatus.OK:
                for m, v in s.metrics.items():
                    if _headline(m):
                        out[(s.model, s.variant, f"{s.id}.{m}")] = v
        return out

    a, b = table(old), table(new)
    changes = []
    for key in sorted(set(a) | set(b)):
        metric = key[2]
        hib = higher_is_better(metric.split(".", 1)[1])
        o, n = a.get(key), b.get(key)
        gated = max_drop is not None and (not patterns or any(fnmatch.fnmatch(metric, p) for p in patterns))
        reg = None
        if o is not None and n is not None and math.isfinite(o) and math.isfinite(n):
            reg = (o - n) if hib else (n - o)
        if gated:
            passed = reg is not None and reg <= (max_drop or 0.0) + 1e-12
        else:
            passed = True
        changes.append(MetricChange(key[0], key[1], metric, o, n, hib, reg, gated, passed))
    return changes


def _fmt(v: float | None) -> str:
    return "—" if v is None else ("nan" if not math.isfinite(v) else f"{v:.4g}")


def render_changes(changes: list[MetricChange], *, markdown: bool, only_changed: bool = False) -> str:
    rows = [c for c in changes if not only_changed or c.gated or c.old != c.new]
    header = ["model", "variant", "metric", "old", "new", "change", "gate"]
    body = []
    for c in rows:
        delta = "—" if c.old is None or c.new is None else f"{c.new - c.old:+.4g}"
        gate = ("PASS" if c.passed else "FAIL") if c.gated else ""
        body.append([c.model, c.variant, c.metric, _fmt(c.old), _fmt(c.new), delta, gate])
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in r) + " |" for r in body]
        return "\n".join(lines) + "\n"
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(header)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*header), fmt.format(*("-" * w for w in widths))] + [fmt.format(*r) for r in body]
    return "\n".join(lines) + "\n"
