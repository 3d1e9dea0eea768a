"""Render an AuditResult as JUnit XML for CI test reporters (GitLab, Jenkins, GitHub actions).

Guarantee: the output is well-formed XML 1.0 (built with ElementTree, so every string is
escaped, and characters XML 1.0 forbids, e.g. NUL or ANSI escape bytes in a traceback, are
replaced by U+FFFD); a CI reporter shows a failure exactly where the audit's exit code says
something blocks shipping:

* one ``<testcase>`` per gate: ``classname = "<model>/<variant>"``, ``name = "<gate> (<metric>)"``;
  a failed gate of severity ``fail`` gets ``<failure>``; a failed gate of severity ``warn``
  gets ``<skipped message="WARN: ...">`` (it does not fail the build, matching exit code 0,
  yet stays visible) and a ``severity`` property; a passed gate has no child but properties;
* one ``<testcase>`` with ``<error>`` per ERROR stage (``name = "stage <id>"``), carrying the
  error text, because an audit that broke must never look green;
* one ``<testcase>`` with ``<skipped>`` per SKIPPED stage, with the reason.

Every test case carries ``<properties>`` (metric, op, threshold, value, baseline, severity).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

from robaudit.reports.tabulate import format_value, status_reason

from robaudit.results import AuditResult, GateResult, StageStatus

_INVALID_XML = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_text(value: Any) -> str:
    """``str(value)`` with the characters XML 1.0 forbids replaced by U+FFFD."""
    return _INVALID_XML.sub("\ufffd", str(value))


def _props(case: ET.Element, items: dict[str, Any]) -> None:
    props = ET.SubElement(case, "properties")
    for k, v in items.items():
        ET.SubElement(props, "property", name=xml_text(k), value=xml_text(v))


def _gate_case(suite: ET.Element, g: GateResult) -> str:
    case = ET.SubElement(suite, "testcase", classname=xml_text(f"{g.model}/{g.variant}"),
                         name=xml_text(f"{g.name} ({g.metric})"), time="0")
    _props(case, {"metric": g.metric, "op": g.op, "threshold": format_value(g.threshold),
                  "value": format_value(g.value), "baseline": format_value(g.baseline_value),
                  "severity": g.severity})
    summary = (f"{g.metric} = {format_value(g.value)}, required {g.op} {format_value(g.threshold)}"
               + (f" (baseline {format_value(g.baseline_value)})" if g.baseline_value is not None else ""))
    if g.passed:
        return "pass"
    if str(g.severity).lower() == "warn":
        ET.SubElement(case, "skipped", message=xml_text(f"WARN: {summary}"))
        return "warn"
    failure = ET.SubElement(case, "failure", message=xml_text(summary), type="GateFailed")
    failure.text = xml_text(g.message or summary)
    return "fail"


def render_junit(result: AuditResult) -> str:
    """JUnit XML text (UTF-8 declared) of the gates and broken/skipped stages of ``result``.

    Args:
        result: the audit result.

    Returns:
        The XML document as a string; write it with ``encoding="utf-8"``.
    """
    root = ET.Element("testsuites", name="robaudit")
    gates = ET.SubElement(root, "testsuite", name="robaudit.gates")
    counts = {"pass": 0, "fail": 0, "warn": 0}
    for g in result.gates:
        counts[_gate_case(gates, g)] += 1
    gates.set("tests", str(len(result.gates)))
    gates.set("failures", str(counts["fail"]))
    gates.set("errors", "0")
    gates.set("skipped", str(counts["warn"]))

    stages = ET.SubElement(root, "testsuite", name="robaudit.stages")
    errors = skipped = 0
    duration = 0.0
    for s in result.stages:
        if s.status is StageStatus.OK:
            continue
        case = ET.SubElement(stages, "testcase", classname=xml_text(f"{s.model}/{s.variant}"),
                             name=xml_text(f"stage {s.id}"), time=f"{max(s.duration_s, 0.0):.3f}")
        duration += max(s.duration_s, 0.0)
        _props(case, {"stage": s.stage, "status": s.status.value})
        reason = status_reason(s)
        first = next((ln.strip() for ln in reversed(reason.splitlines()) if ln.strip()), reason)
        if s.status is StageStatus.ERROR:
            errors += 1
            err = ET.SubElement(case, "error", message=xml_text(first[:500]), type="StageError")
            err.text = xml_text(reason)
        else:
            skipped += 1
            ET.SubElement(case, "skipped", message=xml_text(reason[:500]))
    stages.set("tests", str(errors + skipped))
    stages.set("failures", "0")
    stages.set("errors", str(errors))
    stages.set("skipped", str(skipped))
    stages.set("time", f"{duration:.3f}")

    root.set("tests", str(len(result.gates) + errors + skipped))
    root.set("failures", str(counts["fail"]))
    root.set("errors", str(errors))
    root.set("skipped", str(counts["warn"] + skipped))
    ET.indent(root)
    body = ET.tostring(root, encoding="unicode")
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + body + "\n"
