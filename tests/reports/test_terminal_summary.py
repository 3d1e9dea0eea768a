"""render_terminal: one screen of plain text within the width, failures first."""

from __future__ import annotations

import dataclasses

import pytest
from robaudit.reports.terminal import render_terminal

from robaudit.results import AuditResult


@pytest.mark.parametrize("width", [40, 80, 120])
def test_fits_width_and_lists_gates_and_one_line_per_stage(audit: AuditResult, width: int) -> None:
    text = render_terminal(audit, width)
    lines = text.splitlines()
    assert all(len(ln) <= width for ln in lines), max(lines, key=len)
    assert lines[0].startswith("robaudit verdict: ERROR") and "exit code 3" in text
    gate_rows = [ln for ln in lines if ln.split(" ")[0] in ("PASS", "FAIL", "WARN")]
    assert [r.split(" ")[0] for r in gate_rows] == ["FAIL", "FAIL", "WARN", "PASS"]
    stage_rows = [ln for ln in lines if ln.split(" ")[0] in ("OK", "SKIPPED", "ERROR")]
    assert len(stage_rows) == len(audit.stages)
    assert all(c.isprintable() for c in text.replace("\n", ""))


def test_headline_metric_with_ci_and_reasons(audit: AuditResult) -> None:
    text = render_terminal(audit, 160)
    assert "accuracy = 0.97 [0.93, 0.99] (n=100)" in text
    assert "skipped: model has no ATTENTION capability" in text
    assert "error: RuntimeError: CROWN ran out of memory" in text
    assert "2 validity warning(s)" in text


def test_no_gates(audit: AuditResult) -> None:
    assert "no gates configured" in render_terminal(dataclasses.replace(audit, gates=[]), 80)
