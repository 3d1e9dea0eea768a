"""render_junit: valid, escaped XML with one test case per gate and per broken or skipped stage."""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET

from robaudit.reports.junit import render_junit, xml_text

from robaudit.results import AuditResult

XSS = "<script>alert(1)</script>"


def test_one_case_per_gate_with_failures_and_warn_as_skipped(audit: AuditResult) -> None:
    text = render_junit(audit)
    assert text.startswith('<?xml version="1.0" encoding="UTF-8"?>')
    root = ET.fromstring(text.encode("utf-8"))
    gates = root.find("testsuite[@name='robaudit.gates']")
    cases = gates.findall("testcase")
    assert len(cases) == len(audit.gates) == 4
    assert [c.get("classname") for c in cases] == [f"{g.model}/{g.variant}" for g in audit.gates]
    assert cases[1].get("name") == f"robust {XSS} (pgd.robust_accuracy)"
    assert cases[0].find("failure") is None and cases[0].find("skipped") is None
    fail = cases[1].find("failure")
    assert fail is not None and "pgd.robust_accuracy = 0.48, required >= 0.6 (baseline 0.5)" == fail.get("message")
    assert cases[2].find("failure") is None and cases[2].find("skipped").get("message").startswith("WARN: clean.loss")
    assert cases[3].find("failure").text == "stage lirpa ERROR: never passes"
    props = {p.get("name"): p.get("value") for p in cases[1].find("properties")}
    assert props == {"metric": "pgd.robust_accuracy", "op": ">=", "threshold": "0.6", "value": "0.48",
                     "baseline": "0.5", "severity": "fail"}
    assert (gates.get("tests"), gates.get("failures"), gates.get("skipped")) == ("4", "2", "1")


def test_error_and_skipped_stages_become_cases_with_clean_text(audit: AuditResult) -> None:
    root = ET.fromstring(render_junit(audit).encode("utf-8"))
    stages = root.find("testsuite[@name='robaudit.stages']")
    errors = [c for c in stages.findall("testcase") if c.find("error") is not None]
    skipped = [c for c in stages.findall("testcase") if c.find("skipped") is not None]
    assert len(errors) == 1 and len(skipped) == 2
    err = errors[0].find("error")
    assert errors[0].get("name") == "stage lirpa"
    assert err.get("message").startswith("RuntimeError: CROWN ran out of memory")
    assert err.text.startswith("Traceback") and XSS in err.text
    assert "\x00" not in err.text and "\x1b" not in err.text and "\ufffd" in err.text
    assert (root.get("tests"), root.get("failures"), root.get("errors"), root.get("skipped")) == ("7", "2", "1", "3")


def test_all_passing_audit_has_no_failures(audit: AuditResult) -> None:
    ok = dataclasses.replace(audit, gates=[dataclasses.replace(g, passed=True) for g in audit.gates],
                             stages=[s for s in audit.stages if s.status.value == "OK"])
    root = ET.fromstring(render_junit(ok).encode("utf-8"))
    assert root.get("failures") == "0" and root.get("errors") == "0" and root.get("skipped") == "0"
    assert root.find(".//failure") is None and root.find(".//error") is None


def test_xml_text_removes_characters_xml_forbids() -> None:
    assert xml_text("a\x00b\x1bc\td\n\ud800") == "a\ufffdb\ufffdc\td\n\ufffd"
