"""Write the audit outputs: results.json (source of truth) and its renderings."""

from __future__ import annotations

from pathlib import Path

from robaudit.results import AuditResult

OUTPUT_FILES = ("results.json", "report.html", "junit.xml", "summary.md")


def write_outputs(result: AuditResult, out_dir: Path, *, results_json: bool = True) -> dict[str, Path]:
    """Write results.json (unless re-rendering) and render report.html, junit.xml, summary.md from it."""
    from robaudit.reports.html import render_html
    from robaudit.reports.junit import render_junit
    from robaudit.reports.markdown import render_summary

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {name: out_dir / name for name in OUTPUT_FILES}
    if results_json:
        result.write(paths["results.json"])
    for name, text in (("report.html", render_html(result)), ("junit.xml", render_junit(result)),
                       ("summary.md", render_summary(result))):
        tmp = paths[name].with_suffix(paths[name].suffix + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(paths[name])
    return paths
