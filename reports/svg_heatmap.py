"""Heatmaps as inline SVG: a viridis colour scale with a colour bar, row/column labels and
per-cell annotations.

Guarantee: the colour of a cell is a monotone function of its value on [vmin, vmax] (given
in the spec, else the data range); values outside are clipped to the ends of the scale;
null or non-finite cells are drawn hatched grey and annotated with an em dash, never as a
colour that could be read as a value.
"""

from __future__ import annotations

from typing import Any

from markupsafe import Markup
from robaudit.reports.svg import esc, fig_id, num, placeholder, svg_open, text, text_width, tick_label

#: viridis sampled at 9 points (matplotlib's colormap, CC0).
VIRIDIS = (
    (68, 1, 84), (71, 44, 122), (59, 81, 139), (44, 113, 142), (33, 144, 141),
    (39, 173, 129), (92, 200, 99), (170, 220, 50), (253, 231, 37),
)


def colour(t: float) -> tuple[int, int, int]:
    """Viridis colour for t in [0, 1] (clipped), linear between the samples."""
    t = min(max(t, 0.0), 1.0) * (len(VIRIDIS) - 1)
    i = min(int(t), len(VIRIDIS) - 2)
    f = t - i
    a, b = VIRIDIS[i], VIRIDIS[i + 1]
    return tuple(round(a[k] + (b[k] - a[k]) * f) for k in range(3))  # type: ignore[return-value]


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def _ink(rgb: tuple[int, int, int]) -> str:
    lum = 0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2]
    return "#111111" if lum > 140 else "#ffffff"


def heatmap_svg(fig: dict[str, Any]) -> Markup:
    rows = [[num(v) for v in r] if isinstance(r, list) else [] for r in fig.get("values") or []]
    n_rows = len(rows)
    n_cols = max((len(r) for r in rows), default=0)
    if n_rows == 0 or n_cols == 0:
        return placeholder(fig, "empty heatmap")
    row_labels = [str(v) for v in fig.get("row_labels") or []]
    col_labels = [str(v) for v in fig.get("col_labels") or []]
    finite = [v for r in rows for v in r if v is not None]
    vmin = num(fig.get("vmin"))
    vmax = num(fig.get("vmax"))
    if vmin is None:
        vmin = min(finite) if finite else 0.0
    if vmax is None:
        vmax = max(finite) if finite else 1.0
    span = (vmax - vmin) or 1.0

    cell = max(12.0, min(46.0, 520.0 / n_cols, 420.0 / n_rows))
    left = 10 + max((text_width(s) for s in row_labels), default=0.0)
    col_w = max((text_width(s) for s in col_labels), default=0.0)
    rotate_cols = col_w > cell - 4
    top = 12 + (min(col_w, 110.0) * 0.75 if rotate_cols else 16.0)
    width = left + cell * n_cols + 90
    height = top + cell * n_rows + 16
    annotate = bool(fig.get("annotate", True)) and cell >= 24

    parts = [svg_open(width, height, str(fig.get("title", "")))]
    hatch = fig_id(fig, "hatch")
    parts.append(f'<defs><pattern id="{hatch}" width="6" height="6" patternUnits="userSpaceOnUse" '
                 'patternTransform="rotate(45)"><rect width="6" height="6" fill="#eceff3"/>'
                 '<line x1="0" y1="0" x2="0" y2="6" stroke="#c3c9d2" stroke-width="2"/></pattern></defs>')
    for j in range(n_cols):
        label = col_labels[j] if j < len(col_labels) else str(j)
        cx = left + cell * (j + 0.5)
        if rotate_cols:
            parts.append(text(cx, top - 6, label, rotate=-45))
        else:
            parts.append(text(cx, top - 6, label, anchor="middle"))
    for i, row in enumerate(rows):
        y = top + cell * i
        label = row_labels[i] if i < len(row_labels) else str(i)
        parts.append(text(left - 6, y + cell / 2 + 4, label, anchor="end"))
        for j in range(n_cols):
            v = row[j] if j < len(row) else None
            x = left + cell * j
            who = f"{label} / {col_labels[j] if j < len(col_labels) else j}"
            if v is None:
                parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{cell:.1f}" height="{cell:.1f}" '
                             f'fill="url(#{hatch})" stroke="#fff"><title>{esc(who)}: missing</title></rect>')
                if annotate:
                    parts.append(text(x + cell / 2, y + cell / 2 + 4, "\u2014", anchor="middle", fill="#5b6675"))
                continue
            rgb = colour((v - vmin) / span)
            parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{cell:.1f}" height="{cell:.1f}" '
                         f'fill="{_hex(rgb)}" stroke="#fff" stroke-width="0.5">'
                         f'<title>{esc(who)}: {v:.4g}</title></rect>')
            if annotate:
                parts.append(text(x + cell / 2, y + cell / 2 + 4, _short(v), anchor="middle",
                                  size=10 if cell < 34 else 11, fill=_ink(rgb)))
    parts.append(_colour_bar(left + cell * n_cols + 16, top, cell * n_rows, vmin, vmax,
                             str(fig.get("value_label", ""))))
    parts.append("</svg>")
    return Markup("".join(parts))


def _short(v: float) -> str:
    if v == int(v) and abs(v) < 1e5:
        return str(int(v))
    if abs(v) >= 1e4 or abs(v) < 1e-2:
        return f"{v:.0e}"
    return f"{v:.2f}" if abs(v) < 10 else f"{v:.3g}"


def _colour_bar(x: float, y: float, h: float, vmin: float, vmax: float, label: str) -> str:
    h = max(h, 60.0)
    steps = 24
    out = []
    for k in range(steps):
        t = 1 - (k + 0.5) / steps
        out.append(f'<rect x="{x:.1f}" y="{y + h * k / steps:.1f}" width="12" height="{h / steps + 0.6:.1f}" '
                   f'fill="{_hex(colour(t))}"/>')
    out.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="12" height="{h:.1f}" fill="none" stroke="#c3c9d2"/>')
    out.append(text(x + 16, y + 9, tick_label(vmax)))
    out.append(text(x + 16, y + h, tick_label(vmin)))
    if label:
        out.append(text(x + 52, y + h / 2, label, anchor="middle", rotate=90, fill="#2b3440"))
    return "".join(out)
