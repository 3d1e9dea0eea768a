"""Line charts (optional log axes, CI bands, legend) and bar charts (error bars) as inline SVG.

Guarantee: a point whose x or y is null/non-finite (or non-positive on a log axis) is not
drawn and breaks the line there; a CI band is drawn only over points where both bounds are
finite. All labels are escaped (see robaudit.reports.svg).
"""

from __future__ import annotations

from typing import Any

from markupsafe import Markup
from robaudit.reports.svg import (
    AXIS,
    PALETTE,
    Scale,
    axes,
    esc,
    extent,
    fig_id,
    num,
    placeholder,
    svg_open,
    text,
    text_width,
)

WIDTH, HEIGHT = 540.0, 300.0


def _legend(names: list[str], y0: float, width: float) -> tuple[str, float]:
    """Legend rows under the plot; returns (markup, height used)."""
    out: list[str] = []
    x, y = 56.0, y0
    for i, name in enumerate(names):
        w = 22 + text_width(name) + 18
        if x + w > width and x > 56:
            x, y = 56.0, y + 18
        colour = PALETTE[i % len(PALETTE)]
        out.append(f'<rect x="{x:.1f}" y="{y - 5:.1f}" width="14" height="4" rx="1" fill="{colour}"/>')
        out.append(text(x + 20, y, name, fill="#2b3440"))
        x += w
    return "".join(out), (y - y0) + 18 if names else 0.0


def _points(xs: list[Any], ys: list[Any], x_log: bool, y_log: bool) -> list[tuple[float, float] | None]:
    out: list[tuple[float, float] | None] = []
    for xv, yv in zip(xs, ys):
        x, y = num(xv), num(yv)
        ok = x is not None and y is not None and (x > 0 or not x_log) and (y > 0 or not y_log)
        out.append((x, y) if ok else None)  # type: ignore[arg-type]
    return out


def line_svg(fig: dict[str, Any]) -> Markup:
    series = [s for s in fig.get("series") or [] if isinstance(s, dict)]
    x_log, y_log = bool(fig.get("x_log")), bool(fig.get("y_log"))
    all_x: list[float | None] = []
    all_y: list[float | None] = []
    for s in series:
        finite = [p for p in _points(s.get("x") or [], s.get("y") or [], x_log, y_log) if p]
        all_x += [p[0] for p in finite]
        all_y += [p[1] for p in finite]
        for key in ("low", "high"):
            all_y += [num(v) for v in s.get(key) or []]
    x_ext, y_ext = extent(all_x, x_log), extent(all_y, y_log)
    y_range = fig.get("y_range")
    if isinstance(y_range, list) and len(y_range) == 2 and None not in map(num, y_range):
        y_ext = (float(y_range[0]), float(y_range[1]))
        if y_log and min(y_ext) <= 0:
            y_ext = extent(all_y, True)
    if x_ext is None or y_ext is None:
        return placeholder(fig, "no finite data points to plot")
    left, top, right, bottom = 64.0, 14.0, WIDTH - 18, HEIGHT - 50
    xs = Scale(*x_ext, left, right, log=x_log)
    ys = Scale(*y_ext, bottom, top, log=y_log)
    legend, legend_h = _legend([str(s.get("name", "")) for s in series], HEIGHT + 4, WIDTH)
    parts = [svg_open(WIDTH, HEIGHT + legend_h + 4, str(fig.get("title", ""))),
             axes(xs, ys, x_label=str(fig.get("x_label", "")), y_label=str(fig.get("y_label", "")),
                  left=left, top=top, right=right, bottom=bottom)]
    clip = fig_id(fig, "clip")
    parts.append(f'<defs><clipPath id="{clip}"><rect x="{left}" y="{top - 2}" width="{right - left}" '
                 f'height="{bottom - top + 4}"/></clipPath></defs><g clip-path="url(#{clip})">')
    for i, s in enumerate(series):
        colour = PALETTE[i % len(PALETTE)]
        parts.append(_band(s, xs, ys, x_log, y_log, colour))
        pts = _points(s.get("x") or [], s.get("y") or [], x_log, y_log)
        for run in _runs(pts):
            path = " ".join(f"{xs(x):.1f},{ys(y):.1f}" for x, y in run)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2" '
                         'stroke-linejoin="round"/>')
        for p in pts:
            if p:
                parts.append(f'<circle cx="{xs(p[0]):.1f}" cy="{ys(p[1]):.1f}" r="2.6" fill="{colour}">'
                             f'<title>{esc(s.get("name", ""))}: ({p[0]:.4g}, {p[1]:.4g})</title></circle>')
    parts.append("</g>")
    parts.append(legend)
    parts.append("</svg>")
    return Markup("".join(parts))


def _runs(pts: list[tuple[float, float] | None]) -> list[list[tuple[float, float]]]:
    runs: list[list[tuple[float, float]]] = [[]]
    for p in pts:
        if p is None:
            runs.append([])
        else:
            runs[-1].append(p)
    return [r for r in runs if len(r) >= 2]


def _band(s: dict[str, Any], xs: Scale, ys: Scale, x_log: bool, y_log: bool, colour: str) -> str:
    low, high, xv = s.get("low"), s.get("high"), s.get("x") or []
    if not isinstance(low, list) or not isinstance(high, list):
        return ""
    out: list[str] = []
    run: list[tuple[float, float, float]] = []
    for x, lo, hi in list(zip(xv, low, high)) + [(None, None, None)]:
        fx, flo, fhi = num(x), num(lo), num(hi)
        ok = fx is not None and flo is not None and fhi is not None and (fx > 0 or not x_log) \
            and ((flo > 0 and fhi > 0) or not y_log)
        if ok:
            run.append((fx, flo, fhi))  # type: ignore[arg-type]
            continue
        if len(run) >= 2:
            upper = [f"{xs(x):.1f},{ys(h):.1f}" for x, _, h in run]
            lower = [f"{xs(x):.1f},{ys(lo):.1f}" for x, lo, _ in reversed(run)]
            out.append(f'<polygon points="{" ".join(upper + lower)}" fill="{colour}" fill-opacity="0.16" '
                       'stroke="none"/>')
        run = []
    return "".join(out)


def bars_svg(fig: dict[str, Any]) -> Markup:
    labels = [str(v) for v in fig.get("labels") or []]
    values = [num(v) for v in fig.get("values") or []]
    low = [num(v) for v in fig.get("low") or []] or [None] * len(values)
    high = [num(v) for v in fig.get("high") or []] or [None] * len(values)
    if not values or all(v is None for v in values):
        return placeholder(fig, "no finite values to plot")
    finite = [v for v in values + low + high if v is not None]
    lo, hi = min(0.0, *finite), max(0.0, *finite)
    if hi == lo:
        hi = lo + 1.0
    n = len(values)
    longest = max((len(s) for s in labels), default=0)
    rotate = n * max(longest, 3) * 6.5 > (WIDTH - 90)
    label_h = min(90.0, 8 + text_width("x" * longest) * 0.7) if rotate else 20.0
    left, top, right, bottom = 64.0, 14.0, WIDTH - 18, HEIGHT - 30 - label_h
    ys = Scale(lo, hi, bottom, top)
    xs = Scale(0, 1, left, right)
    parts = [svg_open(WIDTH, HEIGHT, str(fig.get("title", ""))),
             axes(xs, ys, x_label="", y_label=str(fig.get("y_label", "")), left=left, top=top,
                  right=right, bottom=bottom, x_ticks=False)]
    slot = (right - left) / n
    bar_w = min(48.0, slot * 0.62)
    zero = ys(0.0)
    for i, v in enumerate(values):
        cx = left + slot * (i + 0.5)
        label = labels[i] if i < len(labels) else str(i)
        if v is not None:
            y0, y1 = sorted((ys(v), zero))
            colour = PALETTE[0] if v >= 0 else PALETTE[1]
            parts.append(f'<rect x="{cx - bar_w / 2:.1f}" y="{y0:.1f}" width="{bar_w:.1f}" '
                         f'height="{max(y1 - y0, 0.5):.1f}" rx="2" fill="{colour}" fill-opacity="0.85">'
                         f'<title>{esc(label)}: {v:.4g}</title></rect>')
        lo_i, hi_i = (low[i] if i < len(low) else None), (high[i] if i < len(high) else None)
        if lo_i is not None and hi_i is not None:
            ya, yb = ys(lo_i), ys(hi_i)
            parts.append(f'<path d="M{cx:.1f},{ya:.1f}V{yb:.1f}M{cx - 5:.1f},{ya:.1f}H{cx + 5:.1f}'
                         f'M{cx - 5:.1f},{yb:.1f}H{cx + 5:.1f}" stroke="#1f2933" stroke-width="1.4" '
                         f'fill="none"><title>{esc(label)}: [{lo_i:.4g}, {hi_i:.4g}]</title></path>')
        if rotate:
            parts.append(text(cx + 3, bottom + 12, label, anchor="end", rotate=-40, fill=AXIS))
        else:
            parts.append(text(cx, bottom + 15, label, anchor="middle", fill=AXIS))
    parts.append("</svg>")
    return Markup("".join(parts))
