"""render_summary: verdict line, GFM gate table, stage list; inert and link-free."""

from __future__ import annotations

import dataclasses
import re

from robaudit.reports.markdown import md_text, render_summary

from robaudit.results import AuditResult


def _cells(row: str) -> list[str]:
    return re.split(r"(?<!\\)\|", row.strip())[1:-1]


def test_verdict_gate_table_and_stage_list(audit: AuditResult) -> None:
    text = render_summary(audit)
    lines = text.splitlines()
    assert lines[0].endswith("robaudit verdict: **ERROR** (exit code 3)")
    rows = [ln for ln in lines if ln.startswith("| ")]
    assert len(rows) == 2 + len(audit.gates)
    assert all(len(_cells(r)) == 10 for r in rows)
    assert "**FAIL**" in rows[3] and "**WARN**" in rows[4] and "**PASS**" in rows[2]
    stage_lines = [ln for ln in lines if ln.startswith("- ") and "\u00b7" in ln and ": " in ln]
    assert len([ln for ln in stage_lines if ("OK \u00b7" in ln or "SKIPPED" in ln or "ERROR \u00b7" in ln)]) == 16
    assert any("accuracy = 0.97 \\[0.93, 0.99\\] \\(n=100\\)" in ln for ln in lines)
    assert "### Validity warnings" in text


def test_hostile_strings_are_inert(audit: AuditResult) -> None:
    evil = "a|b](http://x.test/p.png) ![i](//x) <img src=x> www.x.test me@x.test `c` *e*"
    models = [dataclasses.replace(m, name=evil) for m in audit.models]
    gates = [dataclasses.replace(g, model=evil, name=evil) for g in audit.gates]
    text = render_summary(dataclasses.replace(audit, models=models, gates=gates))
    assert "<" not in text.replace("&lt;", "")
    assert "](" not in text and "http://" not in text and "www.x" not in text and "@" not in text
    rows = [ln for ln in text.splitlines() if ln.startswith("| ")]
    assert all(len(_cells(r)) == 10 for r in rows)
    assert "\x1b" not in text and "\x00" not in text  # the ERROR stage's ANSI/NUL bytes are dropped


def test_md_text_escapes_markdown_and_html() -> None:
    assert md_text("a_b*c|d") == "a\\_b\\*c\\|d"
    assert md_text("x<y>&z") == "x&lt;y&gt;&amp;z"
    assert md_text("two\nlines") == "two lines"
