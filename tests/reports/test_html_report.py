"""render_html: layout, escaping, self-containment and per-stage comparison tables."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import html as htmllib
import json
import re
from collections.abc import Callable

import pytest
from robaudit.reports.html import environment, render_html

from robaudit.results import AuditResult, StageResult, StageStatus, Verdict

XSS = "<script>alert(1)</script>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"
Make = Callable[..., AuditResult]


@pytest.fixture(scope="module")
def page(audit: AuditResult) -> str:
    return render_html(audit)


def _section(page: str, anchor: str) -> str:
    start = page.index(f'<section id="{anchor}"')
    return page[start: page.index("</section>", start)]


def test_environment_autoescapes_j2_templates() -> None:
    env = environment()
    assert env.autoescape is True
    assert env.from_string("{{ x }}").render(x=XSS) == ESCAPED


def test_hostile_model_class_and_label_strings_appear_only_escaped(page: str) -> None:
    assert XSS not in page
    assert "alert(1)</script>" not in page.replace("alert(1)\\u003c/script", "")
    # model name (header, provenance, tables), class name (spec), gate name, figure labels
    assert page.count(ESCAPED) >= 10
    # the only <script> elements are the inspector's JSON data blocks and the widget code
    tags = re.findall(r"<script[^>]*>", page)
    assert set(tags) <= {"<script>", '<script type="application/json" class="inspector-data">'}, tags
    assert tags.count("<script>") == 1


def test_no_network_references_and_a_csp_pinning_the_only_script(page: str) -> None:
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page)
    assert "@import" not in page and "<link" not in page and "<iframe" not in page
    for m in re.finditer(r"url\(([^)]*)\)", page):
        assert m.group(1).startswith("#"), m.group(0)  # only in-document SVG references
    srcs = re.findall(r'<img[^>]*\ssrc="([^"]*)"', page)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    csp = htmllib.unescape(re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page).group(1))
    assert "default-src 'none'" in csp and "img-src data:" in csp
    script = re.search(r"<script>(.*?)</script>", page, re.S).group(1)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}';" in csp


def test_sections_in_order_with_table_of_contents(page: str) -> None:
    order = ["gates", "provenance", "warnings", "stage-clean", "stage-pgd", "stage-attention", "stage-lirpa"]
    positions = [page.index(f'<section id="{a}"') for a in order]
    assert positions == sorted(positions)
    assert page.index('id="verdict"') < positions[0]
    for a in order:
        assert f'href="#{a}"' in page


def test_header_shows_verdict_badge_and_exit_code(page: str, make_result: Make) -> None:
    assert re.search(r'class="verdict v-ERROR" id="verdict">ERROR<small>exit code 3</small>', page)
    passing = dataclasses.replace(make_result(), verdict=Verdict.PASS, exit_code=0)
    assert 'class="verdict v-PASS" id="verdict">PASS<small>exit code 0</small>' in render_html(passing)


def test_gate_table_rows_with_pass_fail_warn(page: str) -> None:
    gates = _section(page, "gates")
    rows = re.findall(r'<tr class="gate-(\w+)">', gates)
    assert rows == ["PASS", "FAIL", "WARN", "FAIL"]
    assert gates.count('<span class="badge b-FAIL">FAIL</span>') == 2
    assert '<span class="badge b-WARN">WARN</span>' in gates
    assert "<code>pgd.robust_accuracy</code>" in gates and "<code>&gt;=</code>" in gates
    assert '<td class="num">0.5</td>' in gates  # the baseline value


def test_provenance_shows_fingerprint_twin_diff_data_environment_and_config(page: str) -> None:
    prov = _section(page, "provenance")
    assert "sha256:" + "ab" * 32 in prov
    assert "onnx_twin_max_abs_diff" in prov and "3.200e-06" in prov
    assert "c0ffee" * 4 in prov and "subset_seed" in prov and "2.14.1" in prov
    assert "<details><summary>Resolved configuration</summary><pre>" in prov
    assert '&#34;seed&#34;: 1234' in prov or "&quot;seed&quot;: 1234" in prov


def test_validity_warnings_are_collected_from_all_stages(page: str) -> None:
    box = _section(page, "warnings")
    assert box.count("defense evaluated non-adaptively") == 2
    assert "digits_vit / temp_T2 \u00b7 pgd" in box


def test_stage_table_compares_models_and_variants_with_ci_and_n(page: str) -> None:
    sec = _section(page, "stage-clean")
    header = re.search(r"<thead>(.*?)</thead>", sec, re.S).group(1)
    assert header.count("<th") == 5  # metric + 2 models x 2 variants
    assert "digits_vit / temp_T2" in header
    assert '0.97 [0.93, 0.99]<span class="n">n=100</span>' in sec
    assert ">accuracy.ci_low<" not in sec and ">accuracy.n<" not in sec
    assert ">odd.n<" in sec  # a companion without its base metric stays visible
    pgd = _section(page, "stage-pgd")
    assert ">NaN<" in pgd and ">inf<" in pgd
    assert "forward_passes" in pgd and "1003" in pgd  # budgets differ per column
    assert "all models / variants" in sec  # identical params collapse into one column


def test_skipped_reason_and_error_text_are_shown(page: str) -> None:
    att = _section(page, "stage-attention")
    assert att.count("skipped:</strong> model has no ATTENTION capability") == 2
    lirpa = _section(page, "stage-lirpa")
    assert '<span class="badge b-ERROR">ERROR</span>' in lirpa
    assert re.search(r"<details><summary>error</summary><pre>Traceback.*CROWN ran out of memory "
                     + re.escape(ESCAPED), lirpa, re.S)


def test_every_figure_type_is_rendered(page: str) -> None:
    pgd = _section(page, "stage-pgd")
    assert pgd.count('<svg xmlns="http://www.w3.org/2000/svg" class="plot"') == 4 * 4  # line, heatmap, bars, graph
    assert pgd.count('<figure class="fig"') == 6 * 4
    assert 'width="32" height="32"' in pgd  # 8x8 PNG at scale 4
    assert "image-rendering: pixelated" in page
    att = _section(page, "stage-attention")
    assert att.count("data-inspector") == 2


def test_inspector_json_block_cannot_close_its_script_and_round_trips(page: str) -> None:
    blocks = re.findall(r'<script type="application/json" class="inspector-data">(.*?)</script>', page, re.S)
    assert len(blocks) == 2
    for block in blocks:
        assert "<" not in block and ">" not in block
        data = json.loads(block)
        assert data["images"][0]["label"] == f"sample 0 {XSS}"
        assert data["grid"] == 4 and len(data["images"][0]["views"]) == 4


def test_malformed_and_unknown_figures_are_reported_not_drawn(make_result: Make) -> None:
    result = make_result()
    bad = dict(result.stages[10].figures[0])
    assert bad["type"] == "attention_inspector"
    bad["heads"] = 3  # attn bytes no longer match (L, Hh, N, N)
    odd = StageResult(id="odd", stage="x", model="digits_vit", variant="baseline", status=StageStatus.OK,
                      figures=[bad, {"type": "pie", "title": "p"}])
    page = render_html(dataclasses.replace(result, stages=[*result.stages, odd]))
    sec = _section(page, "stage-odd")
    assert "This figure cannot be shown" in sec and "images[0].views[0].attn must be base64 of 1536" in sec
    assert "unknown figure type &#39;pie&#39;" in sec
    assert "data-inspector" not in sec


def test_rendering_is_deterministic_and_works_from_results_json(make_result: Make) -> None:
    result = make_result()
    again = AuditResult.from_json(json.loads(json.dumps(result.to_json())))
    assert render_html(result) == render_html(again)


def test_single_model_without_gates_or_figures(make_result: Make) -> None:
    result = make_result()
    one = dataclasses.replace(result, models=result.models[1:], gates=[],
                              stages=[dataclasses.replace(s, figures=[]) for s in result.stages
                                      if s.model == "digits_vit" and s.variant == "baseline"])
    page = render_html(one)
    assert "No gates were configured" in page
    assert "<script>" not in page and "script-src &#39;none&#39;" in page


def test_long_provenance_values_collapse_into_details(make_result: Make) -> None:
    result = make_result()
    ids = [f"digits:{i}" for i in range(300)]
    page = render_html(dataclasses.replace(result, data={**result.data, "ids": ids}))
    prov = _section(page, "provenance")
    assert "<details><summary>list of 300 items: digits:0, digits:1, digits:2, \u2026</summary><pre>" in prov
    assert "digits:299" in prov


def test_colliding_stage_ids_get_distinct_anchors_and_empty_audit_renders(make_result: Make) -> None:
    result = make_result()
    a = StageResult(id="a.b", stage="x", model="digits_vit", variant="baseline", status=StageStatus.OK)
    b = dataclasses.replace(a, id="a-b")
    page = render_html(dataclasses.replace(result, stages=[a, b]))
    assert '<section id="stage-a-b">' in page and '<section id="stage-a-b-2">' in page
    empty = render_html(dataclasses.replace(result, stages=[], gates=[]))
    assert 'id="provenance"' in empty and 'id="warnings"' not in empty
