"""Inline SVG figures: well-formed, escaped, and drawing what the spec says."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from robaudit.reports.svg import log_ticks, nice_ticks, render_svg
from robaudit.reports.svg_heatmap import VIRIDIS, colour

from robaudit import figures

NS = "{http://www.w3.org/2000/svg}"
XSS = "<script>alert(1)</script>"


def parse(fig: dict) -> ET.Element:
    return ET.fromstring(str(render_svg(fig)))


def texts(root: ET.Element) -> list[str]:
    return [t.text or "" for t in root.iter(f"{NS}text")]


def test_line_chart_breaks_at_missing_points_and_draws_ci_bands() -> None:
    fig = figures.line_chart(f"t {XSS}", "eps", "acc", [
        figures.series(XSS, [1e-3, 1e-2, 1e-1, 1.0], [0.9, 0.8, float("nan"), 0.5],
                       low=[0.85, 0.75, 0.6, 0.45], high=[0.95, 0.85, 0.7, 0.55]),
        figures.series("b", [1e-3, 1e-2], [0.7, 0.6])], x_log=True)
    root = parse(fig)
    lines = root.findall(f".//{NS}polyline")
    # series a: the NaN splits [p0, p1] | [p3] (a single point is not a line); series b: one line
    assert [len(p.get("points").split()) for p in lines] == [2, 2]
    assert len(root.findall(f".//{NS}polygon")) == 1  # one band, over all 4 points (bounds are finite)
    assert len(root.findall(f".//{NS}circle")) == 5
    assert XSS in texts(root)  # legend entry, escaped in the markup, text after parsing
    assert XSS not in str(render_svg(fig))
    assert {"0.001", "0.01", "0.1", "1"} <= set(texts(root))  # log axis ticks


def test_line_chart_log_axis_drops_non_positive_points_and_empty_data_is_a_notice() -> None:
    fig = figures.line_chart("t", "x", "y", [figures.series("s", [0.0, 1.0, 10.0], [0.5, 0.6, 0.7])], x_log=True)
    assert len(parse(fig).findall(f".//{NS}circle")) == 2
    empty = figures.line_chart("t", "x", "y", [figures.series("s", [1.0], [float("nan")])])
    assert "no finite data points" in "".join(texts(parse(empty)))


def test_point_positions_follow_the_scale() -> None:
    fig = figures.line_chart("t", "x", "y", [figures.series("s", [0, 1, 2], [0.0, 0.5, 1.0])], y_range=(0, 1))
    cy = [float(c.get("cy")) for c in parse(fig).iter(f"{NS}circle")]
    cx = [float(c.get("cx")) for c in parse(fig).iter(f"{NS}circle")]
    assert cy[0] > cy[1] > cy[2]  # y grows upwards
    assert math.isclose(cy[0] - cy[1], cy[1] - cy[2], abs_tol=0.2)
    assert math.isclose(cx[1] - cx[0], cx[2] - cx[1], abs_tol=0.2)


def test_heatmap_colours_are_monotone_and_missing_cells_hatched() -> None:
    values = np.array([[0.0, 0.5], [1.0, np.nan]])
    fig = figures.heatmap("h", values, row_labels=["r0", XSS], col_labels=["c0", "c1"], value_label="err",
                          vmin=0.0, vmax=1.0)
    root = parse(fig)
    cells = [r for r in root.iter(f"{NS}rect") if r.find(f"{NS}title") is not None]
    assert len(cells) == 4
    fills = [c.get("fill") for c in cells]
    assert fills[0] == "#{:02x}{:02x}{:02x}".format(*VIRIDIS[0])
    assert fills[2] == "#{:02x}{:02x}{:02x}".format(*VIRIDIS[-1])
    assert fills[3].startswith("url(#hatch-")
    assert {"0", "0.50", "1", "\u2014"} <= set(texts(root))  # annotations
    assert XSS in texts(root)
    lum = [sum(colour(t)) for t in np.linspace(0, 1, 11)]
    assert lum == sorted(lum)


def test_bars_have_one_rect_and_one_error_bar_each() -> None:
    fig = figures.bar_chart("b", ["a", "b", XSS], [0.2, -0.1, 0.4], y_label="v",
                            low=[0.1, -0.2, 0.3], high=[0.3, 0.0, 0.5])
    root = parse(fig)
    bars = [r for r in root.iter(f"{NS}rect") if r.find(f"{NS}title") is not None]
    assert len(bars) == 3
    assert len([p for p in root.iter(f"{NS}path")]) == 3
    heights = [float(b.get("height")) for b in bars]
    assert heights[2] == pytest.approx(2 * heights[0], rel=0.02)
    assert XSS in texts(root)


def test_graph_draws_layers_left_to_right_with_edge_width_by_weight() -> None:
    fig = figures.graph("g", [[{"id": "a", "label": "a", "weight": 1.0}, {"id": "b", "label": XSS, "weight": 0.1}],
                              [{"id": "y", "label": "y", "weight": 1.0}]],
                        [{"src": "a", "dst": "y", "weight": 2.0}, {"src": "b", "dst": "y", "weight": -0.5},
                         {"src": "zz", "dst": "y", "weight": 1.0}])
    root = parse(fig)
    edges = list(root.iter(f"{NS}path"))
    assert len(edges) == 2
    assert float(edges[0].get("stroke-width")) > float(edges[1].get("stroke-width"))
    assert edges[0].get("stroke") != edges[1].get("stroke")  # sign shown by colour
    xs = {r.get("x") for r in root.iter(f"{NS}rect")}
    assert len(xs) == 2  # two columns, one per layer
    assert any("1 edge(s) naming unknown nodes" in t for t in texts(root))
    assert any(XSS[:10] in t for t in texts(root))


def test_bad_specs_give_a_notice_and_non_svg_types_raise() -> None:
    bad = str(render_svg({"type": "line", "title": "t", "series": [{"x": "oops", "y": 3}]}))
    assert "cannot draw this line figure: TypeError" in bad
    assert "empty heatmap" in str(render_svg({"type": "heatmap", "values": []}))
    with pytest.raises(ValueError, match="not an SVG plot"):
        render_svg({"type": "table"})


def test_ticks() -> None:
    assert nice_ticks(0, 1) == [0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert log_ticks(1e-4, 1.0) == [1e-4, 1e-3, 1e-2, 1e-1, 1.0]
    assert log_ticks(0.01, 0.1) == [0.01, 0.02, 0.05, 0.1]
