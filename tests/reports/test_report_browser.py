"""The HTML report in a real headless Chromium: no errors, no network, inert names, live inspector."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from robaudit.reports.html import render_html

from robaudit.results import AuditResult

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
XSS = "<script>alert(1)</script>"


def _chromium() -> str:
    if not Path(CHROMIUM).exists():
        if os.geteuid() != 0 or not shutil.which("apt-get"):
            pytest.skip(f"{CHROMIUM} is missing and installing it needs root: apt-get install -y chromium")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "install", "-y", "chromium"], env=env, capture_output=True, timeout=900)
        if not Path(CHROMIUM).exists():
            pytest.skip("apt-get install -y chromium did not provide /usr/bin/chromium")
    return CHROMIUM


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    path = _chromium()
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=path, args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def report(browser: Any, audit: AuditResult, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    path = tmp_path_factory.mktemp("report") / "report.html"
    path.write_text(render_html(audit), encoding="utf-8")
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    events: dict[str, list[str]] = {"console": [], "pageerror": [], "request": [], "dialog": []}
    page.on("console", lambda m: events["console"].append(f"{m.type}: {m.text}") if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: events["pageerror"].append(str(e)))
    page.on("request", lambda r: events["request"].append(r.url))

    def on_dialog(d: Any) -> None:
        events["dialog"].append(d.message)
        d.dismiss()

    page.on("dialog", on_dialog)
    url = path.as_uri()
    page.goto(url)
    page.wait_for_function("document.querySelectorAll('[data-inspector][data-query]').length === 2")
    yield {"page": page, "events": events, "url": url}
    page.close()


def _canvas(page: Any, root: str, cls: str) -> str:
    return page.eval_on_selector(f"{root} canvas.{cls}", "c => c.toDataURL()")


ROOT = "[data-inspector] >> nth=0"


def test_renders_without_console_or_page_errors_and_without_network(report: dict[str, Any]) -> None:
    ev = report["events"]
    assert ev["console"] == [] and ev["pageerror"] == []
    others = [u for u in ev["request"] if u != report["url"] and not u.startswith("data:")]
    assert others == [], others
    assert report["page"].evaluate("document.querySelectorAll('svg.plot').length") == 16


def test_script_in_names_shows_as_text_and_never_runs(report: dict[str, Any]) -> None:
    page = report["page"]
    assert report["events"]["dialog"] == []
    assert XSS in page.inner_text("header")
    assert XSS in page.inner_text("#gates")
    assert XSS in page.inner_text("#provenance")  # class name in the input spec
    assert page.evaluate("document.querySelectorAll('script').length") == 3  # 2 JSON blocks + the widget


def _inspector(page: Any) -> Any:
    return page.locator("[data-inspector]").first


def test_clicking_a_patch_changes_the_attention_and_rollout_maps(report: dict[str, Any]) -> None:
    page = report["page"]
    root = _inspector(page)
    attn0 = root.locator("canvas.insp-attn").evaluate("c => c.toDataURL()")
    roll0 = root.locator("canvas.insp-roll").evaluate("c => c.toDataURL()")
    q0 = root.get_attribute("data-query")
    grid = root.locator("canvas.insp-grid")
    box = grid.bounding_box()
    grid.click(position={"x": box["width"] / 8, "y": box["height"] / 8})  # patch (0, 0) of the 4x4 grid
    assert q0 != "0" and root.get_attribute("data-query") == "0"
    assert root.locator("canvas.insp-attn").evaluate("c => c.toDataURL()") != attn0
    assert root.locator("canvas.insp-roll").evaluate("c => c.toDataURL()") != roll0
    assert "row 0, col 0" in root.locator(".insp-status").inner_text()
    grid.press("ArrowRight")
    assert root.get_attribute("data-query") == "1"


def test_view_toggle_layer_and_head_change_the_map(report: dict[str, Any]) -> None:
    page = report["page"]
    root = _inspector(page)
    attn = root.locator("canvas.insp-attn")
    before = attn.evaluate("c => c.toDataURL()")
    buttons = root.locator("button.insp-view")
    assert buttons.count() == 4
    buttons.nth(2).click()
    assert buttons.nth(2).get_attribute("aria-pressed") == "true"
    assert buttons.nth(0).get_attribute("aria-pressed") == "false"
    after_view = attn.evaluate("c => c.toDataURL()")
    assert after_view != before
    root.locator("select.insp-head").select_option("0")
    after_head = attn.evaluate("c => c.toDataURL()")
    assert after_head != after_view
    root.locator("select.insp-layer").select_option("0")
    assert attn.evaluate("c => c.toDataURL()") != after_head
    root.locator("select.insp-image").select_option("1")
    assert root.get_attribute("data-view") == "2"  # the same view is kept for the next image
    assert report["events"]["console"] == [] and report["events"]["pageerror"] == []


def test_drawn_maps_match_the_data_of_the_clicked_query(report: dict[str, Any]) -> None:
    """Pixel colours equal viridis(mean-over-heads attention row) and viridis(rollout row)."""
    np = pytest.importorskip("numpy")
    from robaudit.reports.svg_heatmap import colour

    page = report["page"]
    root = page.locator("[data-inspector]").nth(1)  # untouched: clean view, last layer, mean head
    data = json.loads(root.locator("script.inspector-data").text_content())
    g, layers, heads = data["grid"], data["layers"], data["heads"]
    n = g * g
    grid = root.locator("canvas.insp-grid")
    box = grid.bounding_box()
    r, c = 3, 1
    grid.click(position={"x": box["width"] * (c + 0.5) / g, "y": box["height"] * (r + 0.5) / g})
    q = r * g + c
    assert root.get_attribute("data-query") == str(q)
    view = data["images"][0]["views"][0]
    attn = np.frombuffer(base64.b64decode(view["attn"]), np.uint8).reshape(layers, heads, n, n) / 255.0
    row = attn[layers - 1, :, q, :].mean(0)
    roll = np.frombuffer(base64.b64decode(view["rollout"]), np.uint8).reshape(n, n)[q] / 255.0
    for cls, expected in (("insp-attn", row / row.max()), ("insp-roll", roll)):
        pixels = root.locator(f"canvas.{cls}").evaluate(
            """(cv, g) => { const ctx = cv.getContext('2d'), out = [];
                 for (let k = 0; k < g * g; k++) {
                   const x = Math.floor(((k % g) + 0.5) * cv.width / g), y = Math.floor((Math.floor(k / g) + 0.5) * cv.height / g);
                   out.push(Array.from(ctx.getImageData(x, y, 1, 1).data)); }
                 return out; }""", g)
        for k in range(n):
            want = colour(float(expected[k]))
            got = pixels[k]
            assert abs(got[3] - 189) <= 2, (cls, k, got)
            assert max(abs(got[i] - want[i]) for i in range(3)) <= 3, (cls, k, got, want)
