"""Turn stage metrics into display rows: values with their 95% CI and sample size.

Guarantee: every renderer (HTML, Markdown, terminal) shows a metric the same way, and a
metric's companions ``<m>.ci_low``, ``<m>.ci_high`` and ``<m>.n`` are folded into the row of
``<m>`` (robaudit.stats.rate_metrics writes them) instead of being shown as rows of their own.
A companion whose base metric is absent stays a row of its own, so nothing is ever hidden.

Pure stdlib; imports nothing but robaudit.results.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from robaudit.results import StageResult, StageStatus

COMPANIONS = (".ci_low", ".ci_high", ".n")


def as_float(value: Any) -> float | None:
    """A metric value as a float: numbers as they are, the 'NaN'/'Infinity' tokens decoded."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    if value == "NaN":
        return math.nan
    if value == "Infinity":
        return math.inf
    if value == "-Infinity":
        return -math.inf
    return None


def format_value(value: Any) -> str:
    """A number for people: integers without decimals, 4 significant digits otherwise.

    ``None`` (a missing value) is an em dash; non-finite values stay visible as NaN / inf.
    """
    if value is None:
        return "\u2014"
    if isinstance(value, str) and as_float(value) is None:
        return value
    v = as_float(value)
    if v is None:
        return str(value)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if v == int(v) and abs(v) < 1e15:
        return str(int(v))
    if v != 0 and (abs(v) >= 1e6 or abs(v) < 1e-3):
        return f"{v:.3e}"
    return f"{v:.4g}"


@dataclass(frozen=True)
class MetricCell:
    """One metric of one stage result: value with optional CI bounds and sample count."""

    value: float | None
    ci_low: float | None = None
    ci_high: float | None = None
    n: float | None = None

    @property
    def text(self) -> str:
        """``0.93 [0.90, 0.95]`` (CI when both bounds exist)."""
        out = format_value(self.value)
        if self.ci_low is not None and self.ci_high is not None:
            out += f" [{format_value(self.ci_low)}, {format_value(self.ci_high)}]"
        return out

    @property
    def n_text(self) -> str:
        return "" if self.n is None else f"n={format_value(self.n)}"


def metric_names(results: list[StageResult]) -> list[str]:
    """Base metric names over several results, first-seen order, companions folded away."""
    seen: dict[str, None] = {}
    for r in results:
        for name in r.metrics:
            seen.setdefault(name, None)
    names = list(seen)
    present = set(names)
    return [n for n in names if _base(n) not in present]


def _base(name: str) -> str | None:
    for suffix in COMPANIONS:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


def metric_cell(result: StageResult, name: str) -> MetricCell | None:
    """The cell for ``name`` in ``result`` (None when that result lacks the metric)."""
    metrics = result.metrics
    if name not in metrics:
        return None
    return MetricCell(
        value=as_float(metrics[name]),
        ci_low=as_float(metrics.get(f"{name}.ci_low")),
        ci_high=as_float(metrics.get(f"{name}.ci_high")),
        n=as_float(metrics.get(f"{name}.n")),
    )


def headline(result: StageResult) -> str:
    """One-line summary of a stage result: its first metric (the stage's headline) or status.

    Stages list their headline metric first; for SKIPPED/ERROR results the reason is shown.
    """
    if result.status is StageStatus.SKIPPED:
        return f"skipped: {_first_line(status_reason(result))}"
    if result.status is StageStatus.ERROR:
        return f"error: {_first_line(status_reason(result))}"
    names = metric_names([result])
    if not names:
        return "no metrics"
    cell = metric_cell(result, names[0])
    assert cell is not None
    extra = f" ({cell.n_text})" if cell.n_text else ""
    return f"{names[0]} = {cell.text}{extra}"


def status_reason(result: StageResult) -> str:
    """Why a stage was SKIPPED or ERRORed: its ``error`` text, else its first note."""
    if result.error:
        return str(result.error)
    if result.notes:
        return str(result.notes[0])
    return "no reason given" if result.status is StageStatus.SKIPPED else "no error text"


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
    return lines[-1] if lines and lines[0].startswith("Traceback") else (lines[0] if lines else "")


def gate_outcome(passed: bool, severity: str) -> str:
    """PASS, WARN (a failed warn-severity gate) or FAIL."""
    if passed:
        return "PASS"
    return "WARN" if str(severity).lower() == "warn" else "FAIL"
