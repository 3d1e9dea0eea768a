"""Layered DAGs (e.g. the causal graph of kept channels) as inline SVG.

Layout: one column per layer, left to right, nodes spread evenly down each column; an edge
is a curve from its source's right side to its destination's left side whose width grows
with |weight| (relative to the largest |weight|) and whose colour shows the sign (blue
positive, vermillion negative). Edges naming an unknown node are skipped and counted in the
figure's footnote rather than drawn to a wrong place.
"""

from __future__ import annotations

from typing import Any

from markupsafe import Markup
from robaudit.reports.svg import PALETTE, esc, num, placeholder, svg_open, text, text_width

NODE_W, NODE_H, GAP_Y = 112.0, 26.0, 14.0


def graph_svg(fig: dict[str, Any]) -> Markup:
    layers = [[n for n in layer if isinstance(n, dict)] for layer in fig.get("layers") or []
              if isinstance(layer, list)]
    layers = [layer for layer in layers if layer]
    if not layers:
        return placeholder(fig, "empty graph")
    tallest = max(len(layer) for layer in layers)
    col_gap = max(90.0, min(200.0, 640.0 / max(len(layers) - 1, 1) - NODE_W))
    width = 20 + len(layers) * NODE_W + (len(layers) - 1) * col_gap + 20
    height = 36 + tallest * (NODE_H + GAP_Y) + 10
    pos: dict[str, tuple[float, float]] = {}
    node_parts: list[str] = []
    weights = [abs(w) for layer in layers for n in layer if (w := num(n.get("weight"))) is not None]
    wmax = max(weights, default=0.0) or 1.0
    for li, layer in enumerate(layers):
        x = 20 + li * (NODE_W + col_gap)
        span = len(layer) * (NODE_H + GAP_Y) - GAP_Y
        y0 = 30 + (tallest * (NODE_H + GAP_Y) - GAP_Y - span) / 2
        for ni, node in enumerate(layer):
            y = y0 + ni * (NODE_H + GAP_Y)
            nid = str(node.get("id", f"{li}:{ni}"))
            pos[nid] = (x, y)
            label = str(node.get("label", nid))
            w = num(node.get("weight"))
            strength = abs(w) / wmax if w is not None else 0.0
            fill_op = 0.10 + 0.45 * strength
            tip = f"{label}" + (f" (weight {w:.4g})" if w is not None else "")
            shown = label if text_width(label, 10.5) <= NODE_W - 10 else label[: int((NODE_W - 16) / 6.1)] + "\u2026"
            node_parts.append(
                f'<g><title>{esc(tip)}</title><rect x="{x:.1f}" y="{y:.1f}" width="{NODE_W}" height="{NODE_H}" '
                f'rx="6" fill="{PALETTE[0]}" fill-opacity="{fill_op:.2f}" stroke="{PALETTE[0]}"/>'
                + text(x + NODE_W / 2, y + NODE_H / 2 + 4, shown, anchor="middle", size=10.5, fill="#1f2933")
                + "</g>"
            )
        node_parts.append(text(x + NODE_W / 2, 16, f"layer {li}", anchor="middle", size=10))
    edges = [e for e in fig.get("edges") or [] if isinstance(e, dict)]
    ew = [abs(w) for e in edges if (w := num(e.get("weight"))) is not None]
    emax = max(ew, default=0.0) or 1.0
    edge_parts: list[str] = []
    skipped = 0
    for e in edges:
        src, dst = str(e.get("src")), str(e.get("dst"))
        if src not in pos or dst not in pos:
            skipped += 1
            continue
        (x0, y0), (x1, y1) = pos[src], pos[dst]
        x0, y0, x1, y1 = x0 + NODE_W, y0 + NODE_H / 2, x1, y1 + NODE_H / 2
        w = num(e.get("weight"))
        sw = 0.8 + 5.2 * (abs(w) / emax if w is not None else 0.0)
        colour = PALETTE[1] if (w is not None and w < 0) else PALETTE[0]
        mid = (x0 + x1) / 2
        tip = f"{src} \u2192 {dst}" + (f": {w:.4g}" if w is not None else "")
        edge_parts.append(
            f'<path d="M{x0:.1f},{y0:.1f} C{mid:.1f},{y0:.1f} {mid:.1f},{y1:.1f} {x1:.1f},{y1:.1f}" '
            f'fill="none" stroke="{colour}" stroke-opacity="0.55" stroke-width="{sw:.2f}">'
            f'<title>{esc(tip)}</title></path>'
        )
    note = ""
    if skipped:
        note = text(20, height + 8, f"{skipped} edge(s) naming unknown nodes not drawn", size=10, fill=PALETTE[1])
        height += 16
    return Markup(svg_open(width, height, str(fig.get("title", ""))) + "".join(edge_parts)
                  + "".join(node_parts) + note + "</svg>")
