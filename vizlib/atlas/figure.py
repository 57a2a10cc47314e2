"""The top-k crops of one channel as one mosaic figure, like the dashboard's other grids.

One PNG goes to the browser (not k images); an invisible layer of points on
top names each cell on hover (rank, image, value) and carries its rank as
``customdata`` for click-to-open.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import numpy as np
import plotly.graph_objects as go
from PIL import Image

from vizlib.figures import GAP_PX, LABEL_HALO, cell_origin, png_data_uri

#: Side of one cell of the mosaic, in pixels.
CELL_PX = 80


def _cell(image: Optional[Image.Image], side: int) -> np.ndarray:
    cell = np.full((side, side, 3), 235, dtype=np.uint8)
    if image is None:
        return cell
    im = image.convert("RGB")
    w, h = im.size
    f = side / max(w, h)
    size = (max(1, round(w * f)), max(1, round(h * f)))
    im = im.resize(size, Image.NEAREST if f >= 2 else Image.BILINEAR)
    y0, x0 = (side - size[1]) // 2, (side - size[0]) // 2
    cell[y0:y0 + size[1], x0:x0 + size[0]] = np.asarray(im)
    return cell


def crops_mosaic(crops: Sequence[Optional[Image.Image]], n: int, *, cols: Optional[int] = None,
                 cell_px: int = CELL_PX) -> tuple[np.ndarray, dict]:
    """The first ``n`` crops as one RGB mosaic, plus its geometry (as :func:`vizlib.figures.mosaic`'s)."""
    cols = int(cols) if cols else max(1, math.ceil(math.sqrt(n)))
    cols = max(1, min(cols, n))
    nrows = math.ceil(n / cols)
    side = int(cell_px)
    height_px = nrows * side + (nrows + 1) * GAP_PX
    width_px = cols * side + (cols + 1) * GAP_PX
    canvas = np.full((height_px, width_px, 3), 255, dtype=np.uint8)
    for i in range(n):
        y0, x0 = cell_origin(i, cols, (side, side))
        canvas[y0:y0 + side, x0:x0 + side] = _cell(crops[i] if i < len(crops) else None, side)
    return canvas, {"rows": nrows, "cols": cols, "cell": (side, side), "size": (height_px, width_px)}


def top_png(crops: Sequence[Optional[Image.Image]], rows: Sequence[dict], *, title: str,
            cols: Optional[int] = None, cell_px: int = 2 * CELL_PX) -> bytes:
    """The top-k crops as a PNG for slides: each labelled with its rank and value, under its title."""
    from vizlib.errors import InputError
    from vizlib.export import annotated_png

    if not rows:
        raise InputError("No images for this channel, so there is nothing to export.")
    canvas, geo = crops_mosaic(crops, len(rows), cols=cols, cell_px=cell_px)
    names = [f"#{int(r['rank']) + 1}  {float(r['value']):.3g}" for r in rows]
    return annotated_png(canvas, geo, names, title, "gray", colorbar=False)


def top_mosaic(crops: Sequence[Optional[Image.Image]], rows: Sequence[dict], *, cols: Optional[int] = None,
               title: Optional[str] = None, cell_px: int = CELL_PX, highlight: Optional[int] = None,
               height: Optional[int] = None) -> go.Figure:
    """The crops of :meth:`vizlib.atlas.Atlas.top`'s rows, highest first, each labelled with its value."""
    n = len(rows)
    if n == 0:
        fig = go.Figure()
        fig.update_layout(height=80, margin=dict(l=0, r=0, t=30 if title else 0, b=0),
                          title=dict(text=title, x=0) if title else None,
                          xaxis=dict(visible=False), yaxis=dict(visible=False),
                          annotations=[dict(text="No images for this channel.", showarrow=False, x=0.5, y=0.5,
                                            xref="paper", yref="paper")])
        return fig
    canvas, geo = crops_mosaic(crops, n, cols=cols, cell_px=cell_px)
    cols, side = geo["cols"], int(cell_px)
    height_px, width_px = geo["size"]
    origins = [cell_origin(i, cols, (side, side)) for i in range(n)]
    xs = [x0 + side / 2 for _, x0 in origins]
    ys = [y0 + side / 2 for y0, _ in origins]
    fig = go.Figure()
    fig.add_trace(go.Image(source=png_data_uri(canvas), hoverinfo="skip", name="crops"))
    hover = [f"#{r['rank'] + 1} {r['path']}<br>max {r['value']:.4g} at row {r['row']}, col {r['col']}"
             f"<br>mean {r['mean']:.3g}" for r in rows]
    fig.add_trace(go.Scatter(
        x=xs, y=ys, mode="markers", customdata=[int(r["rank"]) for r in rows], hovertext=hover,
        hovertemplate="%{hovertext}<extra></extra>", name="cells", showlegend=False,
        marker=dict(size=side * 0.6, color="rgba(0,0,0,0)", symbol="square"),
        selected=dict(marker=dict(opacity=0)), unselected=dict(marker=dict(opacity=0)),
    ))
    fig.add_trace(go.Scatter(
        x=[x - side / 2 + 3 for x in xs], y=[y - side / 2 + 2 for y in ys], mode="text",
        text=[f"{r['value']:.3g}" for r in rows], textposition="bottom right", hoverinfo="skip",
        name="values", showlegend=False, textfont=dict(size=11, color="white", shadow=LABEL_HALO),
    ))
    shapes = []
    if highlight is not None and 0 <= highlight < n:
        y0, x0 = cell_origin(int(highlight), cols, (side, side))
        shapes.append(dict(type="rect", x0=x0 - 1.5, y0=y0 - 1.5, x1=x0 + side + 1.5, y1=y0 + side + 1.5,
                           line=dict(color="#ff2b2b", width=3)))
    fig.update_layout(
        title=dict(text=title, x=0, xanchor="left", font=dict(size=14)) if title else None,
        height=height or int(min(900, max(160, (40 if title else 8) + 420 * height_px / max(width_px, 1)))),
        margin=dict(l=0, r=0, t=40 if title else 8, b=0), hovermode="closest", hoverdistance=-1, dragmode=False,
        plot_bgcolor="white", paper_bgcolor="white", shapes=shapes, clickmode="event+select",
        xaxis=dict(visible=False, range=[0, width_px], constrain="domain", constraintoward="left"),
        yaxis=dict(visible=False, range=[height_px, 0], scaleanchor="x", constrain="domain", constraintoward="top"),
    )
    return fig


def atlas_figure(atlas: Any, layer: str, channel: int, **kwargs: Any) -> go.Figure:
    """``top_mosaic`` of an atlas's layer and channel (a notebook one-liner)."""
    kwargs.setdefault("title", f"{layer} · channel {channel}: top {atlas.top_k} of "
                               f"{atlas.manifest['counts'].get('decoded', atlas.manifest['images']['count'])} images")
    return top_mosaic(atlas.crops(layer, channel), atlas.top(layer, channel), **kwargs)
