"""The layer graph as pictures: a Plotly figure to explore, and SVG / PNG files from the same scene.

One scene (boxes, labels, edge polylines, in pixels) is computed from the
graph and its layout; :func:`graph_figure` draws it with Plotly (zoom, pan,
hover, click), :func:`graph_svg` writes it as SVG text and :func:`graph_png`
paints it with Pillow. So the exports show exactly the boxes on screen, and
need no browser (Plotly's own image export needs kaleido and a Chrome).
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import plotly.graph_objects as go

from vizlib.errors import InputError
from vizlib.graph.structure import GraphLayout, LayerGraph, collapse, graph_layout, layer_graph

#: Pixels per layout unit across and per layer down; the box inside.
UNIT_X, UNIT_Y = 172, 62
BOX_W, BOX_H = 152, 40
MARGIN = 24
FONT_PX = 11
#: What nodes can be coloured by: the depth profile's columns (vizlib.depth_profile), or the layer type.
COLOR_BY = {
    "type": None,
    "output size": "height",
    "receptive field": "receptive_field",
    "dead channels": "dead_fraction",
    "mean activation": "mean",
}
COLOR_TITLES = {"output size": "map height (px)", "receptive field": "receptive field (px)",
                "dead channels": "dead channels (share)", "mean activation": "mean activation"}
#: Fill colours by layer family (light, so the dark labels read on every one).
FAMILY_COLOURS = {
    "input": (221, 221, 221), "conv": (174, 199, 232), "norm": (255, 221, 153), "activation": (199, 233, 192),
    "pool": (253, 208, 162), "merge": (244, 166, 166), "dense": (212, 185, 218), "block": (158, 202, 225),
    "stage": (107, 174, 214),
    "model": (188, 189, 220), "other": (238, 238, 238),
}
NO_VALUE = (235, 235, 235)
EDGE_COLOUR = (140, 140, 140)
HIGHLIGHT = (255, 43, 43)


def family(kind: str, group: str = "") -> str:
    """The family a layer kind belongs to, for colouring by type."""
    if group:
        return group
    if kind == "InputLayer":
        return "input"
    if "Conv" in kind:
        return "conv"
    if "Normalization" in kind:
        return "norm"
    if kind in ("Activation", "ReLU", "LeakyReLU", "PReLU", "ELU", "Softmax", "ThresholdedReLU"):
        return "activation"
    if "Pool" in kind:
        return "pool"
    from vizlib.graph.structure import MERGE_KINDS

    if kind in MERGE_KINDS:
        return "merge"
    if kind in ("Dense", "EinsumDense"):
        return "dense"
    return "other"


@dataclass(frozen=True)
class Scene:
    """Everything to draw, in pixels (y down): one box per node, one polyline per edge."""

    boxes: tuple  # (x0, y0, x1, y1) per node
    fills: tuple  # (r, g, b) per node
    lines: tuple  # (first line, second line) per node
    routes: tuple  # ((x, y), ...) per edge, from the source box's bottom to the target box's top
    size: tuple  # (width, height)
    values: tuple  # the colouring value per node (None: none)
    lo: float = 0.0
    hi: float = 1.0


def _short(text: str, n: int = 24) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def node_values(graph: LayerGraph, color_by: str, profile: Optional[Sequence[Mapping]]) -> list:
    """The quantity ``color_by`` for each node from the depth profile (None where the profile has none)."""
    if color_by not in COLOR_BY:
        raise InputError(f"Colour by one of: {', '.join(COLOR_BY)} (not {color_by!r}).")
    column = COLOR_BY[color_by]
    if column is None:
        return [None] * len(graph.nodes)
    if profile is None:
        raise InputError(f"Colouring by {color_by} needs the depth profile of an image: "
                         "pass profile=vizlib.depth_profile(model, image).")
    by_name = {str(r.get("name")): r.get(column) for r in profile}
    out = []
    for nd in graph.nodes:
        v = by_name.get(nd.opens or nd.name)
        out.append(float(v) if v is not None and np.isfinite(float(v)) else None)
    return out


def scene(graph: LayerGraph, layout: Optional[GraphLayout] = None, *, color_by: str = "type",
          profile: Optional[Sequence[Mapping]] = None, colormap: str = "viridis") -> Scene:
    """Boxes, colours, labels and edge routes in pixels: what every renderer draws."""
    from vizlib.figures import colormap_lut

    layout = layout or graph_layout(graph)
    values = node_values(graph, color_by, profile)
    known = [v for v in values if v is not None]
    lo, hi = (min(known), max(known)) if known else (0.0, 1.0)
    lut = colormap_lut(colormap) if COLOR_BY[color_by] else None
    boxes, fills, lines = [], [], []
    for nd, x, y, v in zip(graph.nodes, layout.x, layout.y, values):
        cx, cy = MARGIN + BOX_W / 2 + x * UNIT_X, MARGIN + BOX_H / 2 + y * UNIT_Y
        boxes.append((cx - BOX_W / 2, cy - BOX_H / 2, cx + BOX_W / 2, cy + BOX_H / 2))
        if lut is None:
            fills.append(FAMILY_COLOURS[family(nd.kind, nd.group)])
        elif v is None:
            fills.append(NO_VALUE)
        else:
            t = 0.0 if hi <= lo else (v - lo) / (hi - lo)
            fills.append(tuple(int(c) for c in lut[int(round(t * 255))]))
        if nd.group == "block":
            lines.append((_short("▣ " + nd.name.split("/")[-1]), f"{len(nd.members)} layers · {nd.shape_text}"))
        elif nd.group == "stage":
            lines.append((_short(f"▣ {nd.name.split('/')[-1]} ×{nd.kind.split()[0]}"),
                          f"{nd.kind} · {nd.shape_text}"))
        elif nd.group == "model":
            lines.append((_short("▣ " + nd.name.split("/")[-1]), f"{nd.kind} · {nd.shape_text}"))
        else:
            lines.append((_short(nd.kind), nd.shape_text))
    routes = []
    for (a, b), pts in zip(graph.edges, layout.routes):
        px = [(MARGIN + BOX_W / 2 + x * UNIT_X, MARGIN + BOX_H / 2 + y * UNIT_Y) for x, y in pts]
        px[0] = (px[0][0], boxes[a][3])
        px[-1] = (px[-1][0], boxes[b][1])
        routes.append(tuple(px))
    width = int(MARGIN * 2 + BOX_W + layout.width * UNIT_X)
    height = int(MARGIN * 2 + BOX_H + max(layout.y, default=0) * UNIT_Y)
    return Scene(boxes=tuple(boxes), fills=tuple(fills), lines=tuple(lines), routes=tuple(routes),
                 size=(width, height), values=tuple(values), lo=float(lo), hi=float(hi))


def _text_colour(rgb: Sequence[int]) -> tuple[int, int, int]:
    luma = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    return (20, 20, 20) if luma > 140 else (255, 255, 255)


def _rgb(c: Sequence[int]) -> str:
    return f"rgb({int(c[0])},{int(c[1])},{int(c[2])})"


def _prepare(model_or_graph: Any, collapse_nested: Any, collapse_blocks: Any,
             layout: Optional[GraphLayout]) -> tuple[LayerGraph, GraphLayout]:
    """``collapse_blocks``: True / block names, or ``"stages"`` (runs of alike blocks as one box each)."""
    graph = model_or_graph if isinstance(model_or_graph, LayerGraph) else layer_graph(model_or_graph)
    if collapse_nested or collapse_blocks:
        stages = collapse_blocks == "stages"
        graph = collapse(graph, nested=collapse_nested, blocks=True if stages else collapse_blocks, stages=stages)
        layout = None
    return graph, layout or graph_layout(graph)


def _hover(graph: LayerGraph, values: Sequence, color_by: str) -> list[str]:
    out = []
    for nd, v in zip(graph.nodes, values):
        head = f"<b>{html.escape(nd.name)}</b><br>{html.escape(nd.kind)} · output {nd.shape_text}"
        if nd.group:
            what = {"model": "nested model", "block": "block", "stage": f"stage of {nd.kind}"}[nd.group]
            head += f"<br>{what} of {len(nd.members)} layers (collapsed)"
        if COLOR_BY.get(color_by) and v is not None:
            head += f"<br>{color_by}: {v:.4g}"
        if nd.opens:
            head += "<br><i>click: open in the Layer explorer</i>"
        out.append(head)
    return out


def graph_figure(model_or_graph: Any, *, collapse_nested: Any = False, collapse_blocks: Any = False,
                 color_by: str = "type", profile: Optional[Sequence[Mapping]] = None, colormap: str = "viridis",
                 highlight: Optional[str] = None, title: Optional[str] = None, height: int = 720,
                 width_hint: int = 1000, layout: Optional[GraphLayout] = None) -> go.Figure:
    """The model's layer graph as an explorable Plotly figure: input on top, one box per layer.

    ``model_or_graph``: a model (anything :func:`vizlib.load_model` takes) or a
    :class:`LayerGraph` (then ``layout`` may be its cached :func:`graph_layout`).
    Boxes show the layer type and output shape and are coloured by ``color_by``:
    ``"type"`` (layer family), or a column of ``profile`` (from
    :func:`vizlib.depth_profile` for one image): ``"output size"``,
    ``"receptive field"``, ``"dead channels"``, ``"mean activation"``. Hover
    names the layer; a click selects a point whose ``customdata`` is
    ``[layer to open, node name]``. ``collapse_nested`` / ``collapse_blocks``:
    see :func:`vizlib.graph.collapse`; ``collapse_blocks="stages"`` draws each
    run of alike blocks (ResNet's and DenseNet's stages) as one box. ``highlight`` (a node or layer name) is
    outlined and the view starts on it; otherwise it starts at the input.
    Scroll to zoom, drag to pan, double-click for the whole graph.
    """
    graph, layout = _prepare(model_or_graph, collapse_nested, collapse_blocks, layout)
    sc = scene(graph, layout, color_by=color_by, profile=profile, colormap=colormap)
    fig = go.Figure()
    ex: list = []
    ey: list = []
    for pts in sc.routes:
        ex.extend([p[0] for p in pts] + [None])
        ey.extend([p[1] for p in pts] + [None])
    fig.add_trace(go.Scatter(x=ex, y=ey, mode="lines", hoverinfo="skip", showlegend=False, name="edges",
                             line=dict(color=_rgb(EDGE_COLOUR), width=1.2)))
    fig.add_trace(go.Scatter(x=[r[-1][0] for r in sc.routes], y=[r[-1][1] - 3 for r in sc.routes],
                             mode="markers", hoverinfo="skip", showlegend=False, name="arrows",
                             marker=dict(symbol="triangle-down", size=7, color=_rgb(EDGE_COLOUR))))
    by_fill: dict = {}
    for box, fill in zip(sc.boxes, sc.fills):
        xs, ys = by_fill.setdefault(fill, ([], []))
        x0, y0, x1, y1 = box
        xs.extend([x0, x1, x1, x0, x0, None])
        ys.extend([y0, y0, y1, y1, y0, None])
    for fill, (xs, ys) in by_fill.items():
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", fill="toself", fillcolor=_rgb(fill), hoverinfo="skip",
                                 line=dict(color="rgb(90,90,90)", width=0.8), showlegend=False, name="boxes"))
    cx = [(b[0] + b[2]) / 2 for b in sc.boxes]
    cy = [(b[1] + b[3]) / 2 for b in sc.boxes]
    texts = [f"{html.escape(a)}<br>{html.escape(b)}" for a, b in sc.lines]
    fig.add_trace(go.Scatter(x=cx, y=cy, mode="text", text=texts, hoverinfo="skip", showlegend=False,
                             name="labels", textfont=dict(size=FONT_PX, color=[_rgb(_text_colour(f))
                                                                                for f in sc.fills])))
    fig.add_trace(go.Scatter(
        x=cx, y=cy, mode="markers", name="layers", showlegend=False,
        customdata=[[nd.opens, nd.name] for nd in graph.nodes],
        hovertext=_hover(graph, sc.values, color_by), hovertemplate="%{hovertext}<extra></extra>",
        marker=dict(symbol="square", size=30, color="rgba(0,0,0,0)"),
        selected=dict(marker=dict(opacity=0)), unselected=dict(marker=dict(opacity=0)),
    ))
    if COLOR_BY[color_by]:
        from vizlib.figures import plotly_scale

        fig.add_trace(go.Scatter(
            x=[None], y=[None], mode="markers", hoverinfo="skip", showlegend=False, name="scale",
            marker=dict(colorscale=plotly_scale(colormap), cmin=sc.lo, cmax=sc.hi, color=[sc.lo], showscale=True,
                        colorbar=dict(title=dict(text=COLOR_TITLES[color_by], side="right"), thickness=12,
                                      len=0.6))))
    else:  # a legend of the families on screen
        for fam in dict.fromkeys(family(nd.kind, nd.group) for nd in graph.nodes):
            fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=fam, hoverinfo="skip",
                                     marker=dict(symbol="square", size=12, color=_rgb(FAMILY_COLOURS[fam]),
                                                 line=dict(color="rgb(90,90,90)", width=1))))
    width, total_h = sc.size
    shapes = []
    focus_y = 0.0
    focus_x = width / 2
    if highlight:
        from vizlib.graph.structure import search

        i = search(graph, highlight)
        if i is not None:
            x0, y0, x1, y1 = sc.boxes[i]
            shapes.append(dict(type="rect", x0=x0 - 4, y0=y0 - 4, x1=x1 + 4, y1=y1 + 4, xref="x", yref="y",
                               line=dict(color=_rgb(HIGHLIGHT), width=3)))
            focus_y, focus_x = (y0 + y1) / 2 - height / 2, (x0 + x1) / 2
    view_w = max(width, min(width_hint, 3 * width))
    x_lo = min(max(focus_x - view_w / 2, 0), max(width - view_w, 0)) if width > view_w else (width - view_w) / 2
    y_lo = min(max(focus_y, 0), max(total_h - height, 0))
    fig.update_layout(
        # The title on top, the legend on its own line below it, then the plot: never on each other.
        title=dict(text=html.escape(title), x=0, xanchor="left", yref="container", y=1 - 8 / height,
                   yanchor="top", font=dict(size=14)) if title else None,
        height=height, margin=dict(l=0, r=0, t=(62 if title else 34), b=0), hovermode="closest",
        dragmode="pan", plot_bgcolor="white", paper_bgcolor="white", shapes=shapes, clickmode="event+select",
        legend=dict(orientation="h", yref="container", yanchor="top", y=1 - (32 if title else 6) / height, x=0,
                    xanchor="left", font=dict(size=11)),
        xaxis=dict(visible=False, range=[x_lo, x_lo + view_w]),
        yaxis=dict(visible=False, range=[y_lo + height, y_lo], scaleanchor="x", scaleratio=1),
    )
    return fig


# --------------------------------------------------------------------------- files


def _export_scene(model_or_graph: Any, collapse_nested: Any, collapse_blocks: Any, layout: Optional[GraphLayout],
                  color_by: str, profile: Optional[Sequence[Mapping]], colormap: str) -> tuple[LayerGraph, Scene]:
    graph, layout = _prepare(model_or_graph, collapse_nested, collapse_blocks, layout)
    return graph, scene(graph, layout, color_by=color_by, profile=profile, colormap=colormap)


TITLE_H = 28


def graph_svg(model_or_graph: Any, *, collapse_nested: Any = False, collapse_blocks: Any = False,
              color_by: str = "type", profile: Optional[Sequence[Mapping]] = None, colormap: str = "viridis",
              title: str = "", layout: Optional[GraphLayout] = None) -> str:
    """The layer graph as an SVG document (same boxes and colours as :func:`graph_figure`), for slides."""
    graph, sc = _export_scene(model_or_graph, collapse_nested, collapse_blocks, layout, color_by, profile, colormap)
    w, h = sc.size
    top = TITLE_H if title else 0
    hexc = "#{:02x}{:02x}{:02x}".format
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h + top}" viewBox="0 0 {w} {h + top}" '
           f'font-family="Helvetica, Arial, sans-serif" font-size="{FONT_PX}">',
           f'<rect width="{w}" height="{h + top}" fill="#ffffff"/>']
    if title:
        out.append(f'<text x="{MARGIN}" y="19" font-size="14" font-weight="bold">{html.escape(title)}</text>')
    out.append(f'<g transform="translate(0,{top})">')
    out.append(f'<g fill="none" stroke="{hexc(*EDGE_COLOUR)}" stroke-width="1.2">')
    for pts in sc.routes:
        out.append('<polyline points="' + " ".join(f"{x:.1f},{y:.1f}" for x, y in pts) + '"/>')
    out.append("</g>")
    out.append(f'<g fill="{hexc(*EDGE_COLOUR)}">')
    for pts in sc.routes:
        x, y = pts[-1]
        out.append(f'<polygon points="{x - 4:.1f},{y - 7:.1f} {x + 4:.1f},{y - 7:.1f} {x:.1f},{y:.1f}"/>')
    out.append("</g>")
    for nd, (x0, y0, x1, y1), fill, (a, b) in zip(graph.nodes, sc.boxes, sc.fills, sc.lines):
        tc = hexc(*_text_colour(fill))
        out.append(f'<g><title>{html.escape(nd.name)}</title>'
                   f'<rect x="{x0:.1f}" y="{y0:.1f}" width="{x1 - x0:.1f}" height="{y1 - y0:.1f}" rx="5" '
                   f'fill="{hexc(*fill)}" stroke="#5a5a5a" stroke-width="0.8"/>'
                   f'<text x="{(x0 + x1) / 2:.1f}" y="{y0 + 16:.1f}" text-anchor="middle" fill="{tc}">'
                   f'{html.escape(a)}</text>'
                   f'<text x="{(x0 + x1) / 2:.1f}" y="{y0 + 31:.1f}" text-anchor="middle" fill="{tc}">'
                   f'{html.escape(b)}</text></g>')
    out.append("</g></svg>")
    return "\n".join(out)


#: A PNG holds at most this many pixels; a bigger graph is scaled down (collapse blocks to keep labels legible).
MAX_PNG_PIXELS = 40_000_000
#: Characters Pillow's bundled font lacks, in the PNG only.
_PNG_TEXT = str.maketrans({"×": "x", "▣": None})


def graph_png(model_or_graph: Any, *, collapse_nested: Any = False, collapse_blocks: Any = False,
              color_by: str = "type", profile: Optional[Sequence[Mapping]] = None, colormap: str = "viridis",
              title: str = "", layout: Optional[GraphLayout] = None) -> bytes:
    """The layer graph as a PNG for slides: painted by Pillow from the same scene as :func:`graph_svg`,
    titled (and with its colour bar) by the project's one PNG renderer, :func:`vizlib.export.slide_png`."""
    from PIL import Image, ImageDraw

    from vizlib.export import BAR_AREA_PX, SLIDE_MARGIN, ColourBar, slide_font, slide_png

    graph, sc = _export_scene(model_or_graph, collapse_nested, collapse_blocks, layout, color_by, profile, colormap)
    w, h = sc.size
    s = min(1.0, math.sqrt(MAX_PNG_PIXELS / max(w * h, 1)))
    img = Image.new("RGB", (max(1, int(w * s)), max(1, int(h * s))), "white")
    draw = ImageDraw.Draw(img)
    font = slide_font(max(4, round(FONT_PX * s)))

    def p(x: float, y: float) -> tuple[float, float]:
        return x * s, y * s

    for pts in sc.routes:
        draw.line([p(x, y) for x, y in pts], fill=EDGE_COLOUR, width=max(1, round(1.2 * s)))
        x, y = pts[-1]
        draw.polygon([p(x - 4, y - 7), p(x + 4, y - 7), p(x, y)], fill=EDGE_COLOUR)
    for (x0, y0, x1, y1), fill, (a, b) in zip(sc.boxes, sc.fills, sc.lines):
        draw.rounded_rectangle([p(x0, y0), p(x1, y1)], radius=5 * s, fill=fill, outline=(90, 90, 90), width=1)
        tc = _text_colour(fill)
        draw.text(p((x0 + x1) / 2, y0 + 12), a.translate(_PNG_TEXT).strip(), fill=tc, font=font, anchor="mm")
        draw.text(p((x0 + x1) / 2, y0 + 27), b.translate(_PNG_TEXT), fill=tc, font=font, anchor="mm")
    bar = (ColourBar(colormap, sc.lo, sc.hi, COLOR_TITLES[color_by]) if COLOR_BY[color_by] else None)
    width = img.width + 2 * SLIDE_MARGIN + (BAR_AREA_PX if bar else 0)
    return slide_png(img, title=title or graph.title, colour_bar=bar, min_width=width)
