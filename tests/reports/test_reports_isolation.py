"""reports/ must render results.json without torch or a model (DESIGN.md "The report")."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import robaudit.reports

REPORTS = Path(robaudit.reports.__file__).resolve().parent
ALLOWED_THIRD_PARTY = {"jinja2", "markupsafe", "jsonschema"}
MODULES = ["html", "svg", "svg_charts", "svg_heatmap", "svg_graph", "inspector", "junit", "markdown",
           "schema", "terminal", "tabulate"]


def test_importing_and_rendering_does_not_import_torch_or_numpy() -> None:
    code = (
        "import json, sys\n"
        + "".join(f"import robaudit.reports.{m}\n" for m in MODULES)
        + "from robaudit.results import AuditResult, ModelRecord, StageResult, StageStatus, Verdict\n"
        "r = AuditResult('1.0', '0.1.0', 'now', {}, [ModelRecord('m', 'f', {}, [], {}, ['baseline'])], {}, {},\n"
        "    [StageResult('s', 's', 'm', 'baseline', StageStatus.OK, {'a': 1.0},\n"
        "     figures=[{'type': 'line', 'title': 't', 'series': [{'name': 'n', 'x': [1, 2], 'y': [1, 2]}]}])],\n"
        "    [], Verdict.PASS, 0)\n"
        "robaudit.reports.html.render_html(r); robaudit.reports.junit.render_junit(r)\n"
        "robaudit.reports.markdown.render_summary(r); robaudit.reports.terminal.render_terminal(r, 80)\n"
        "robaudit.reports.schema.validate(json.loads(json.dumps(r.to_json())))\n"
        "bad = sorted(m for m in ('torch', 'numpy', 'PIL', 'matplotlib') if m in sys.modules)\n"
        "print('HEAVY', bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stdout, out.stdout


def test_reports_sources_import_only_results_stdlib_and_template_libraries() -> None:
    stdlib = set(sys.stdlib_module_names)
    for path in sorted(REPORTS.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                ok = (top in stdlib or top in ALLOWED_THIRD_PARTY or name == "robaudit.results"
                      or name.startswith("robaudit.reports") or top == "__future__")
                assert ok, f"{path.name} imports {name}: reports/ may import only robaudit.results"


def test_templates_are_packaged_as_j2_and_no_template_references_the_network() -> None:
    templates = sorted(p.name for p in (REPORTS / "templates").iterdir())
    assert {"report.html.j2", "figures.html.j2", "style.css.j2", "inspector.js.j2"} <= set(templates)
    assert all(name.endswith(".j2") for name in templates), templates
    for p in (REPORTS / "templates").iterdir():
        text = p.read_text(encoding="utf-8")
        for bad in ("http://", "https://", "url(", "@import", "//cdn", "fetch(", "XMLHttpRequest"):
            assert bad not in text, f"{p.name} contains {bad!r}"
