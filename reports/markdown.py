"""Render an AuditResult as a GitHub-flavoured Markdown summary (e.g. ``$GITHUB_STEP_SUMMARY``).

Guarantee: the summary is link-free and inert: every string from the result is escaped so it
renders as literal text: HTML (``<script>``, ``<img>``) is entity-escaped, Markdown
punctuation (``| * _ [ ] ( ) ` # ! ~``) is backslash-escaped so a model name cannot break the
table or form a link or image, URL and e-mail autolinks are broken with entities, control
characters (ANSI colour codes) are dropped and newlines inside a cell become spaces. Content: a verdict
line with the exit code, the gate table, and one line per stage run with its status and
headline metric (see robaudit.reports.tabulate.headline).
"""

from __future__ import annotations

import re
from typing import Any

from robaudit.reports.tabulate import format_value, gate_outcome, headline

from robaudit.results import AuditResult, StageStatus

_ICON = {"PASS": "\u2705", "WARN": "\u26a0\ufe0f", "FAIL": "\u274c", "ERROR": "\U0001f6d1",
         "OK": "\u2705", "SKIPPED": "\u23ed\ufe0f"}
_CONTROL = re.compile(r"\x1b\[[0-9;]*[A-Za-z]|[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|~>-])")


def md_text(value: Any) -> str:
    """Escape a string for literal display in GitHub Markdown (also inside a table cell)."""
    s = _CONTROL.sub("", str(value))
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    s = _MD_SPECIAL.sub(r"\\\1", s)
    # no GFM autolinks: URLs (scheme://, www.) and e-mail addresses (also mailto:/xmpp:)
    s = s.replace("://", "&#58;//").replace("www.", "www&#46;").replace("@", "&#64;")
    return " ".join(s.split())


def render_summary(result: AuditResult) -> str:
    """The Markdown job summary of ``result``.

    Args:
        result: the audit result.

    Returns:
        GitHub-flavoured Markdown text ending in a newline.
    """
    verdict = result.verdict.value
    failed = sum(1 for g in result.gates if not g.passed)
    models = ", ".join(md_text(m.name) for m in result.models)
    out = [
        f"## {_ICON.get(verdict, '')} robaudit verdict: **{verdict}** (exit code {result.exit_code})",
        "",
        f"Models: {models} \u00b7 {len(result.gates)} gates, {failed} failed \u00b7 "
        f"{len(result.stages)} stage runs \u00b7 robaudit {md_text(result.robaudit_version)}",
        "",
        "### Gates",
        "",
    ]
    if result.gates:
        out.append("| result | gate | model | variant | metric | op | threshold | value | baseline | severity |")
        out.append("| --- | --- | --- | --- | --- | --- | ---: | ---: | ---: | --- |")
        for g in result.gates:
            o = gate_outcome(g.passed, g.severity)
            cells = [f"{_ICON[o]} **{o}**", md_text(g.name), md_text(g.model), md_text(g.variant),
                     md_text(g.metric), md_text(g.op), md_text(format_value(g.threshold)),
                     md_text(format_value(g.value)), md_text(format_value(g.baseline_value)),
                     md_text(g.severity)]
            out.append("| " + " | ".join(cells) + " |")
    else:
        out.append("No gates were configured.")
    out += ["", "### Stages", ""]
    for s in result.stages:
        icon = _ICON.get(s.status.value, "")
        line = (f"- {icon} **{md_text(s.id)}** \u00b7 {md_text(s.model)} / {md_text(s.variant)}: "
                f"{s.status.value} \u00b7 {md_text(headline(s))}")
        if s.warnings and s.status is StageStatus.OK:
            line += f" ({len(s.warnings)} validity warning{'s' if len(s.warnings) > 1 else ''})"
        out.append(line)
    warnings = [(s, w) for s in result.stages for w in s.warnings]
    if warnings:
        out += ["", "### Validity warnings", ""]
        out += [f"- {md_text(s.model)} / {md_text(s.variant)} \u00b7 {md_text(s.id)}: {md_text(w)}"
                for s, w in warnings]
    return "\n".join(out) + "\n"
