"""Inline SVG for the plot figure types of robaudit.figures (line, heatmap, bars, graph).

Guarantee: the output is a self-contained ``<svg>`` element with no external reference
(no fonts, images or links), and every string taken from the figure spec (titles, labels,
series names) is XML-escaped, so a figure cannot inject markup into the report. Values that
are missing, null or non-finite are skipped, never plotted as zero. Pure Python, no matplotlib.

``render_svg(fig)`` dispatches on ``fig["type"]``; the per-type drawing lives in
svg_charts (line, bars), svg_heatmap and svg_graph.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from typing import Any

from markupsafe import Markup, escape

#: Okabe-Ito, colour-blind safe; series i uses PALETTE[i % len(PALETTE)].
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#7F7F7F", "#000000")
AXIS = "#5b6675"
GRID = "#e3e7ee"
FONT = 11.0


def esc(value: Any) -> str:
    """XML-escape any value for SVG text or an attribute."""
    return str(escape(str(value)))


def num(value: Any) -> float | None:
    """A finite float, or None for null, 'NaN'/'Infinity' tokens, non-numbers and non-finite."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    v = float(value)
    return v if math.isfinite(v) else None


def fig_id(fig: dict[str, Any], prefix: str) -> str:
    """A deterministic id for SVG defs (clip paths, patterns), unique per figure content."""
    digest = hashlib.sha1(json.dumps(fig, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return f"{prefix}-{digest}"


def text_width(text: str, size: float = FONT) -> float:
    """Approximate rendered width of ``text`` in px (system sans-serif)."""
    return 0.58 * size * len(str(text))


def svg_open(width: float, height: float, title: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="plot" role="img" width="{width:.0f}" '
        f'height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" '
        f'font-family="system-ui, -apple-system, Segoe UI, Roboto, Helvetica, Arial, sans-serif" '
        f'font-size="{FONT:.0f}"><title>{esc(title)}</title>'
    )


def text(x: float, y: float, content: Any, *, anchor: str = "start", size: float = FONT,
         fill: str = AXIS, weight: str = "normal", rotate: float = 0.0, baseline: str = "auto") -> str:
    rot = f' transform="rotate({rotate:.0f} {x:.1f} {y:.1f})"' if rotate else ""
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{size:.0f}" fill="{fill}" '
        f'font-weight="{weight}" dominant-baseline="{baseline}"{rot}>{esc(content)}</text>'
    )


class Scale:
    """Maps data to pixels on one axis, linear or log10."""

    def __init__(self, lo: float, hi: float, p0: float, p1: float, log: bool = False) -> None:
        if log:
            lo, hi = math.log10(lo), math.log10(hi)
        if hi <= lo:
            pad = abs(lo) * 0.05 or 0.5
            lo, hi = lo - pad, hi + pad
        self.lo, self.hi, self.p0, self.p1, self.log = lo, hi, p0, p1, log

    def __call__(self, v: float) -> float:
        t = math.log10(v) if self.log else v
        return self.p0 + (t - self.lo) / (self.hi - self.lo) * (self.p1 - self.p0)

    def ticks(self) -> list[float]:
        if self.log:
            return log_ticks(10 ** self.lo, 10 ** self.hi)
        return nice_ticks(self.lo, self.hi)


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi] (1-2-5 steps)."""
    span = hi - lo
    if span <= 0:
        return [lo]
    raw = span / max(count, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.ceil(lo / step - 1e-9) * step
    out: list[float] = []
    v = start
    while v <= hi + step * 1e-9:
        out.append(round(v, 12))
        v += step
    return out


def log_ticks(lo: float, hi: float) -> list[float]:
    """Powers of ten within [lo, hi]; adds 2x and 5x when fewer than three decades."""
    e0, e1 = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    mults = (1, 2, 5) if e1 - e0 < 3 else (1,)
    out = [m * 10.0 ** e for e in range(e0, e1 + 1) for m in mults]
    ticks = [t for t in out if lo * (1 - 1e-9) <= t <= hi * (1 + 1e-9)]
    return ticks or [lo, hi]


def tick_label(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1e4 or abs(v) < 1e-3:
        mant, exp = f"{v:.0e}".split("e")
        return f"{mant}e{int(exp)}"
    return f"{v:.6g}"


def extent(values: Sequence[float | None], log: bool) -> tuple[float, float] | None:
    vals = [v for v in values if v is not None and (v > 0 or not log)]
    return (min(vals), max(vals)) if vals else None


def axes(xs: Scale, ys: Scale, *, x_label: str, y_label: str, left: float, top: float,
         right: float, bottom: float, x_ticks: bool = True) -> str:
    """Grid lines, tick labels, axis lines and axis titles for a plot area."""
    out: list[str] = []
    for t in ys.ticks():
        y = ys(t)
        out.append(f'<line x1="{left:.1f}" x2="{right:.1f}" y1="{y:.1f}" y2="{y:.1f}" stroke="{GRID}"/>')
        out.append(text(left - 6, y + 4, tick_label(t), anchor="end"))
    if x_ticks:
        for t in xs.ticks():
            x = xs(t)
            out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top:.1f}" y2="{bottom:.1f}" stroke="{GRID}"/>')
            out.append(text(x, bottom + 15, tick_label(t), anchor="middle"))
    out.append(f'<line x1="{left:.1f}" x2="{left:.1f}" y1="{top:.1f}" y2="{bottom:.1f}" stroke="{AXIS}"/>')
    out.append(f'<line x1="{left:.1f}" x2="{right:.1f}" y1="{bottom:.1f}" y2="{bottom:.1f}" stroke="{AXIS}"/>')
    if x_label:
        out.append(text((left + right) / 2, bottom + 32, x_label, anchor="middle", fill="#2b3440"))
    if y_label:
        cy = (top + bottom) / 2
        out.append(text(14, cy, y_label, anchor="middle", fill="#2b3440", rotate=-90))
    return "".join(out)


def placeholder(fig: dict[str, Any], reason: str) -> Markup:
    """A small framed message instead of a plot (bad or empty spec); never raises."""
    title = str(fig.get("title", "")) if isinstance(fig, dict) else ""
    return Markup(
        svg_open(420, 60, title)
        + '<rect x="0.5" y="0.5" width="419" height="59" rx="6" fill="#f6f7f9" stroke="#d5dae1"/>'
        + text(210, 34, reason, anchor="middle", fill="#5b6675")
        + "</svg>"
    )


def render_svg(fig: dict[str, Any]) -> Markup:
    """Inline SVG markup for a line, heatmap, bars or graph figure spec.

    Args:
        fig: a figure dict from robaudit.figures (after a results.json round trip).

    Returns:
        Safe ``Markup``; a framed notice when the spec is malformed or has no data.

    Raises:
        ValueError: for a figure type that is not drawn as SVG (table, images, ...).
    """
    from robaudit.reports import svg_charts, svg_graph, svg_heatmap

    drawers: dict[str, Callable[[dict[str, Any]], Markup]] = {
        "line": svg_charts.line_svg,
        "bars": svg_charts.bars_svg,
        "heatmap": svg_heatmap.heatmap_svg,
        "graph": svg_graph.graph_svg,
    }
    kind = fig.get("type")
    if kind not in drawers:
        raise ValueError(f"figure type {kind!r} is not an SVG plot; use one of {sorted(drawers)}")
    try:
        return drawers[kind](fig)
    except (KeyError, TypeError, ValueError, IndexError, ZeroDivisionError, OverflowError) as err:
        return placeholder(fig, f"cannot draw this {kind} figure: {type(err).__name__}")
