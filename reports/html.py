"""Render an AuditResult as one self-contained HTML report.

Guarantee: the page makes no network request (inline CSS, inline SVG plots, images as
``data:`` URIs, and a Content-Security-Policy of ``default-src 'none'`` that allows only
inline styles, ``data:`` images and the one inline script, pinned by its sha256); every string
from the result (model and class names, config values, notes, metric names, figure labels)
is HTML-escaped by Jinja2 autoescaping (set explicitly: ``select_autoescape`` does not match
``.j2``); rendering reads only the result, so ``robaudit report results.json`` reproduces it.

Layout (DESIGN.md "The report"): verdict and gate table, provenance, validity warnings,
one section per stage id comparing every model/variant, each with its figures.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import struct
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup
from robaudit.reports import inspector, svg, tabulate

from robaudit.results import AuditResult, StageResult

TEMPLATES = Path(__file__).resolve().parent / "templates"
SVG_TYPES = ("line", "heatmap", "bars", "graph")
_B64 = re.compile(r"[A-Za-z0-9+/]*={0,2}")
FIGURE_TYPES = (*SVG_TYPES, "table", "images", inspector.FIGURE_TYPE)


@lru_cache(maxsize=1)
def environment() -> Environment:
    """The Jinja2 environment of all report templates (autoescape on, strict undefined)."""
    env = Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["fmt"] = tabulate.format_value
    env.filters["pretty_json"] = pretty_json
    env.filters["compact"] = compact
    env.filters["preview"] = preview
    env.globals["outcome"] = tabulate.gate_outcome
    return env


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)


def compact(value: Any) -> str:
    """A config/param value in one line: strings as-is, everything else as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return tabulate.format_value(value)
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def preview(value: Any, limit: int = 160) -> str | None:
    """A one-line summary of a value too long to show inline (None when it fits)."""
    text = compact(value)
    if len(text) <= limit:
        return None
    if isinstance(value, (list, tuple)):
        head = ", ".join(compact(v) for v in value[:3])
        return f"list of {len(value)} items: {head[:100]}, …"
    if isinstance(value, dict):
        return f"{len(value)} entries: {', '.join(str(k) for k in list(value)[:6])[:100]}, …"
    return text[:limit] + "…"


def _slug(text: str, used: set[str]) -> str:
    base = "stage-" + (re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-").lower() or "x")
    slug, k = base, 2
    while slug in used:
        slug, k = f"{base}-{k}", k + 1
    used.add(slug)
    return slug


def png_size(b64: Any) -> tuple[int, int] | None:
    """(width, height) of a base64 PNG from its IHDR chunk; None when it is not base64 PNG."""
    if not isinstance(b64, str) or len(b64) < 32 or not _B64.fullmatch(b64):
        return None
    head = base64.b64decode(b64[:32])
    if head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    w, h = struct.unpack(">II", head[16:24])
    return (w, h) if 0 < w <= 16384 and 0 < h <= 16384 else None


def _figure(fig: Any, fid: str) -> dict[str, Any]:
    """A figure spec plus what the template needs: its kind, SVG markup or problems."""
    if not isinstance(fig, dict):
        return {"id": fid, "kind": "invalid", "spec": {}, "problems": ["figure is not an object"]}
    kind = fig.get("type")
    out: dict[str, Any] = {"id": fid, "kind": kind, "spec": fig, "problems": [], "svg": None}
    if kind in SVG_TYPES:
        out["svg"] = svg.render_svg(fig)
    elif kind == inspector.FIGURE_TYPE:
        out["problems"] = inspector.check_inspector(fig)
        if not out["problems"]:
            out["json"] = inspector.script_json(fig)
    elif kind == "images":
        out["rows"] = [
            {"label": str(row.get("label", "")),
             "images": [{"label": str(im.get("label", "")), "png": im.get("png"),
                         "size": png_size(im.get("png"))}
                        for im in row.get("images") or [] if isinstance(im, dict)]}
            for row in fig.get("rows") or [] if isinstance(row, dict)
        ]
        out["scale"] = fig.get("scale") if isinstance(fig.get("scale"), int) and fig["scale"] > 0 else 4
    elif kind != "table":
        out["kind"] = "unknown"
        out["problems"] = [f"unknown figure type {kind!r}; this robaudit renders {list(FIGURE_TYPES)}"]
    return out


def _columns(results: list[StageResult], attr: str) -> dict[str, Any]:
    """Key/value rows of ``params`` or ``budget`` across results, collapsed when all agree."""
    dicts = [getattr(r, attr) or {} for r in results]
    keys: dict[str, None] = {}
    for d in dicts:
        for k in d:
            keys.setdefault(str(k), None)
    same = all(d == dicts[0] for d in dicts)
    rows = [(k, [d.get(k) for d in (dicts[:1] if same else dicts)]) for k in keys]
    return {"same": same, "rows": rows}


def _stage_sections(result: AuditResult) -> list[dict[str, Any]]:
    groups: dict[str, list[StageResult]] = {}
    for s in result.stages:
        groups.setdefault(s.id, []).append(s)
    used: set[str] = set()
    sections = []
    for sid, results in groups.items():
        anchor = _slug(sid, used)
        names = tabulate.metric_names(results)
        n_figs = max((len(r.figures) for r in results), default=0)
        figure_rows = [
            [(r, _figure(r.figures[i], f"{anchor}-f{i}-{j}")) for j, r in enumerate(results) if i < len(r.figures)]
            for i in range(n_figs)
        ]
        statuses = {r.status.value for r in results}
        sections.append({
            "id": sid, "anchor": anchor, "stage": results[0].stage, "results": results,
            "metrics": [(name, [tabulate.metric_cell(r, name) for r in results]) for name in names],
            "params": _columns(results, "params"), "budget": _columns(results, "budget"),
            "figure_rows": figure_rows, "reasons": [tabulate.status_reason(r) for r in results],
            "worst": "ERROR" if "ERROR" in statuses else ("SKIPPED" if "SKIPPED" in statuses else "OK"),
        })
    return sections


def _warnings(result: AuditResult) -> list[dict[str, str]]:
    out = []
    for s in result.stages:
        for w in s.warnings:
            out.append({"where": f"{s.model} / {s.variant} \u00b7 {s.id}", "text": str(w)})
    return out


@lru_cache(maxsize=1)
def inspector_js() -> str:
    return environment().get_template("inspector.js.j2").render()


def render_html(result: AuditResult) -> str:
    """The report as one HTML document (UTF-8 text).

    Args:
        result: the audit result (e.g. ``AuditResult.read("results.json")``).

    Returns:
        The complete HTML page; write it with ``encoding="utf-8"``.
    """
    sections = _stage_sections(result)
    has_inspector = any(
        f["kind"] == inspector.FIGURE_TYPE and not f["problems"]
        for sec in sections for row in sec["figure_rows"] for _, f in row
    )
    js = inspector_js() if has_inspector else ""
    digest = base64.b64encode(hashlib.sha256(js.encode("utf-8")).digest()).decode("ascii")
    script_src = f"'sha256-{digest}'" if js else "'none'"
    csp = (f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src {script_src}; "
           "base-uri 'none'; form-action 'none'")
    template = environment().get_template("report.html.j2")
    return template.render(
        r=result,
        verdict=result.verdict.value,
        sections=sections,
        warnings=_warnings(result),
        failed_gates=sum(1 for g in result.gates if not g.passed),
        csp=csp,
        inspector_js=Markup(js),
        css=Markup(environment().get_template("style.css.j2").render()),
    )
