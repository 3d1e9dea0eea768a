"""Render an AuditResult as a one-screen plain-text summary for the CLI.

Guarantee: plain printable text only (no colour codes; control characters from the result,
such as ANSI escapes in an error message, are replaced by ``?`` so a results file cannot drive
the terminal), no line longer than ``width``: the verdict and exit code, the gate table, and
one line per stage run with its status and headline metric (the stage's first metric, with CI
and n; the reason for SKIPPED/ERROR). Failed gates are listed first so they survive truncation.
"""

from __future__ import annotations

import re
from typing import Any

from robaudit.reports.tabulate import format_value, gate_outcome, headline

from robaudit.results import AuditResult

_CONTROL = re.compile(r"\x1b\[[0-9;]*[A-Za-z]|[\x00-\x1f\x7f-\x9f]")


def clean(value: Any) -> str:
    """One line of printable text: control characters become '?', whitespace runs one space."""
    return _CONTROL.sub("?", " ".join(str(value).split()))


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(width - 1, 0)] + "\u2026"


def _table(rows: list[list[str]], width: int, flex: tuple[int, ...]) -> list[str]:
    """Left-aligned columns; the widest of the ``flex`` columns shrinks until the table fits."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    while sum(widths) + 2 * (len(widths) - 1) > width:
        col = max(flex, key=lambda i: widths[i])
        if widths[col] <= 8:
            break
        widths[col] -= 1
    lines = []
    for r in rows:
        cells = [_fit(c, w).ljust(w) for c, w in zip(r, widths)]
        lines.append(_fit("  ".join(cells).rstrip(), width))
    return lines


def render_terminal(result: AuditResult, width: int = 100) -> str:
    """A plain-text summary of ``result`` that fits ``width`` columns.

    Args:
        result: the audit result.
        width: terminal width in characters (at least 40 is used).

    Returns:
        The summary, lines joined by newlines, ending in a newline.
    """
    width = max(int(width), 40)
    failed = sum(1 for g in result.gates if not g.passed)
    models = ", ".join(clean(m.name) for m in result.models)
    lines = [
        _fit(f"robaudit verdict: {result.verdict.value}  (exit code {result.exit_code})", width),
        _fit(f"models: {models}  |  {len(result.gates)} gates, {failed} failed  |  "
             f"{len(result.stages)} stage runs", width),
        "",
    ]
    if result.gates:
        gates = sorted(result.gates, key=lambda g: (g.passed, str(g.severity).lower() == "warn"))
        rows = [["result", "gate", "model/variant", "metric", "value", "threshold"]]
        for g in gates:
            rows.append([gate_outcome(g.passed, g.severity), clean(g.name),
                         clean(f"{g.model}/{g.variant}"), clean(g.metric), format_value(g.value),
                         clean(f"{g.op} {format_value(g.threshold)}")])
        lines += _table(rows, width, flex=(1, 2, 3))
    else:
        lines.append("no gates configured")
    lines.append("")
    rows = [["status", "stage", "model/variant", "headline"]]
    for s in result.stages:
        rows.append([s.status.value, clean(s.id), clean(f"{s.model}/{s.variant}"), clean(headline(s))])
    lines += _table(rows, width, flex=(2, 3))
    warnings = sum(len(s.warnings) for s in result.stages)
    if warnings:
        lines += ["", _fit(f"{warnings} validity warning(s): see the report's 'Validity warnings' box", width)]
    return "\n".join(lines) + "\n"
