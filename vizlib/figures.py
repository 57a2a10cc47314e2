"""Arrays -> Plotly figures: channel grids, one channel in detail, one channel across images.

Overviews go to the browser as ONE colour-mapped PNG mosaic per grid (a few
hundred kB however many channels), with a light invisible layer of points on
top so hovering a cell names its channel and clicking it can select it. Exact
float values with hover go out only for the single map being inspected
(:func:`channel_detail`). Every function returns a ``go.Figure`` the caller may
still change, in the manner of ``px.imshow``.
"""

from __future__ import annotations

import base64
import io
import math
from functools import lru_cache
from typing import Optional, Sequence

import numpy as np
import plotly.graph_objects as go
from PIL import Image

from vizlib.errors import InputError

#: Colormaps offered by the dashboard (Plotly names); any Plotly colorscale name works.
COLORMAPS = ("viridis", "magma", "inferno", "plasma", "cividis", "gray", "turbo", "rdbu_r")
DEFAULT_COLORMAP = "viridis"
#: Cell size limits in the mosaic, in pixels: small maps are enlarged (nearest
#: neighbour, so 4x4 maps stay visibly 4x4), big ones reduced (area average).
MIN_CELL_PX = 48
MAX_CELL_PX = 96
GAP_PX = 2
MOSAIC_WIDTH_PX = 720
BACKGROUND = (255, 255, 255)
MAX_LABELLED_CELLS = 100


@lru_cache(maxsize=32)
def colormap_lut(name: str) -> np.ndarray:
    """A (256, 3) uint8 lookup table for a Plotly colorscale name (e.g. ``"viridis"``)."""
    import plotly.colors as pc

    try:
        scale = pc.get_colorscale(name)
    except Exception as exc:  # plotly raises PlotlyError for unknown names
        raise InputError(f"Unknown colormap '{name}'. Try one of: {', '.join(COLORMAPS)}.") from exc
    colors = pc.sample_colorscale(scale, list(np.linspace(0.0, 1.0, 256)), colortype="rgb")
    lut = np.array([pc.unlabel_rgb(c) for c in colors], dtype=np.float64)
    return np.clip(np.rint(lut), 0, 255).astype(np.uint8)


def _plotly_scale(name: str) -> list:
    import plotly.colors as pc

    return pc.get_colorscale(name)


def _as_maps(maps: np.ndarray) -> np.ndarray:
    arr = np.asarray(maps)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3:
        raise InputError(f"Expected one image's maps, shape (H, W, C); got {arr.shape}.")
    return np.nan_to_num(arr.astype(np.float32, copy=False), nan=0.0, posinf=0.0, neginf=0.0)


def _normalise(stack: np.ndarray, scale: str) -> tuple[np.ndarray, float, float]:
    """(K, H, W) floats -> (K, H, W) uint8 indices into the LUT, plus the shared range."""
    lo, hi = float(stack.min()), float(stack.max())
    if scale == "shared":
        span = hi - lo
        norm = (stack - lo) / span if span > 0 else np.zeros_like(stack)
    elif scale in ("channel", "per-channel", "per_channel"):
        mins = stack.min(axis=(1, 2), keepdims=True)
        spans = stack.max(axis=(1, 2), keepdims=True) - mins
        norm = np.divide(stack - mins, spans, out=np.zeros_like(stack), where=spans > 0)
    else:
        raise InputError(f"Colour scale must be 'shared' or 'channel', not '{scale}'.")
    return np.clip(np.rint(norm * 255.0), 0, 255).astype(np.uint8), lo, hi


def _cell_size(h: int, w: int, cell_px: Optional[int]) -> tuple[int, int]:
    if cell_px:
        target = int(cell_px)
    else:
        side = max(h, w)
        if side < MIN_CELL_PX:
            target = side * math.ceil(MIN_CELL_PX / side)
        else:
            target = min(side, MAX_CELL_PX)
    f = target / max(h, w)
    return max(1, round(h * f)), max(1, round(w * f))


def _budget_cell(h: int, w: int, cols: int) -> Optional[int]:
    """Cap the mosaic at about MOSAIC_WIDTH_PX wide: a wider one is only downscaled by the browser."""
    natural = _cell_size(h, w, None)[1]
    budget = max(8, (MOSAIC_WIDTH_PX - (cols + 1) * GAP_PX) // cols)
    if natural <= budget:
        return None
    side = max(h, w)
    if side <= budget:  # an enlarged small map: keep whole-number enlargement so cells stay crisp
        return side * max(1, budget // side)
    return budget


def _resize_index(idx: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    h, w = idx.shape
    th, tw = size
    if (th, tw) == (h, w):
        return idx
    if th % h == 0 and tw % w == 0:
        return np.repeat(np.repeat(idx, th // h, axis=0), tw // w, axis=1)
    resample = Image.NEAREST if th > h else Image.BOX
    return np.asarray(Image.fromarray(idx, mode="L").resize((tw, th), resample))


def mosaic(stack: np.ndarray, *, cols: Optional[int] = None, scale: str = "shared",
           colormap: str = DEFAULT_COLORMAP, cell_px: Optional[int] = None,
           ) -> tuple[np.ndarray, dict]:
    """(K, H, W) maps -> one RGB uint8 mosaic image, plus its geometry and value range."""
    stack = np.asarray(stack, dtype=np.float32)
    k, h, w = stack.shape
    if k == 0:
        raise InputError("No channels to show.")
    cols = int(cols) if cols else max(1, math.ceil(math.sqrt(k)))
    cols = max(1, min(cols, k))
    rows = math.ceil(k / cols)
    idx, lo, hi = _normalise(stack, scale)
    ch, cw = _cell_size(h, w, cell_px or _budget_cell(h, w, cols))
    lut = colormap_lut(colormap)
    height = rows * ch + (rows + 1) * GAP_PX
    width = cols * cw + (cols + 1) * GAP_PX
    canvas = np.empty((height, width, 3), dtype=np.uint8)
    canvas[:] = BACKGROUND
    for i in range(k):
        r, c = divmod(i, cols)
        y0, x0 = GAP_PX + r * (ch + GAP_PX), GAP_PX + c * (cw + GAP_PX)
        canvas[y0:y0 + ch, x0:x0 + cw] = lut[_resize_index(idx[i], (ch, cw))]
    geometry = {"rows": rows, "cols": cols, "cell": (ch, cw), "size": (height, width), "lo": lo, "hi": hi}
    return canvas, geometry


def png_data_uri(rgb: np.ndarray) -> str:
    """An RGB array as a ``data:image/png;base64,...`` URI (what the browser receives)."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(rgb)).decode("ascii")


def png_bytes(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    # Level 1: about 2.5x faster to encode than the default 6 for ~10 % more bytes (benchmarks/).
    Image.fromarray(np.ascontiguousarray(rgb), mode="RGB").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _mosaic_figure(canvas: np.ndarray, geo: dict, labels: Sequence[str], hover: Sequence[str],
                   keys: Sequence[int], *, title: Optional[str], colormap: str, colorbar: bool,
                   colorbar_title: str, highlight: Optional[int], height: Optional[int],
                   label_cells: bool, width_hint: int = 420) -> go.Figure:
    height_px, width_px = geo["size"]
    ch, cw = geo["cell"]
    cols = geo["cols"]
    fig = go.Figure()
    fig.add_trace(go.Image(source=png_data_uri(canvas), hoverinfo="skip", name="maps"))
    xs, ys = [], []
    for i in range(len(keys)):
        r, c = divmod(i, cols)
        xs.append(GAP_PX + c * (cw + GAP_PX) + cw / 2)
        ys.append(GAP_PX + r * (ch + GAP_PX) + ch / 2)
    fig.add_trace(go.Scatter(
        x=xs, y=ys, mode="markers", customdata=list(keys), hovertext=list(hover),
        hovertemplate="%{hovertext}<extra></extra>", name="cells", showlegend=False,
        marker=dict(size=max(6, min(ch, cw) * 0.6), color="rgba(0,0,0,0)", symbol="square"),
        selected=dict(marker=dict(opacity=0)), unselected=dict(marker=dict(opacity=0)),
    ))
    if label_cells:
        # One text trace, not one annotation per cell: a fraction of the cost to build and draw.
        lx = [GAP_PX + (i % cols) * (cw + GAP_PX) + 3 for i in range(len(labels))]
        ly = [GAP_PX + (i // cols) * (ch + GAP_PX) + 2 for i in range(len(labels))]
        fig.add_trace(go.Scatter(
            x=lx, y=ly, mode="text", text=list(labels), textposition="bottom right", hoverinfo="skip",
            name="labels", showlegend=False,
            textfont=dict(size=11 if cw >= 40 else 8, color="white", shadow="0px 0px 2px black"),
        ))
    if colorbar:
        fig.add_trace(go.Scatter(
            x=[None], y=[None], mode="markers", hoverinfo="skip", showlegend=False, name="scale",
            marker=dict(colorscale=_plotly_scale(colormap), cmin=geo["lo"], cmax=geo["hi"], color=[geo["lo"]],
                        showscale=True, colorbar=dict(title=dict(text=colorbar_title, side="right"),
                                                      thickness=12, len=0.9)),
        ))
    shapes = []
    if highlight is not None and highlight in keys:
        i = list(keys).index(highlight)
        r, c = divmod(i, cols)
        x0, y0 = GAP_PX + c * (cw + GAP_PX), GAP_PX + r * (ch + GAP_PX)
        shapes.append(dict(type="rect", x0=x0 - 1.5, y0=y0 - 1.5, x1=x0 + cw + 1.5, y1=y0 + ch + 1.5,
                           xref="x", yref="y", line=dict(color="#ff2b2b", width=3)))
    if height is None:  # fit the mosaic to the width it will likely get, so no band stays blank
        height = int(min(900, max(160, (40 if title else 8) + width_hint * height_px / max(width_px, 1))))
    fig.update_layout(
        title=dict(text=title, x=0, xanchor="left", font=dict(size=14)) if title else None,
        shapes=shapes, height=height,
        margin=dict(l=0, r=0, t=40 if title else 8, b=0), hovermode="closest", hoverdistance=-1,
        dragmode=False, plot_bgcolor="white", paper_bgcolor="white",
        xaxis=dict(visible=False, range=[0, width_px], constrain="domain", constraintoward="left"),
        yaxis=dict(visible=False, range=[height_px, 0], scaleanchor="x", constrain="domain",
                   constraintoward="top"),
        clickmode="event+select",
    )
    return fig


def channel_grid(maps: np.ndarray, channels: Optional[Sequence[int]] = None, *, max_channels: int = 49,
                 colormap: str = DEFAULT_COLORMAP, scale: str = "shared", cols: Optional[int] = None,
                 title: Optional[str] = None, highlight: Optional[int] = None,
                 cell_px: Optional[int] = None, height: Optional[int] = None,
                 labels: Optional[Sequence[str]] = None, width_hint: int = 420) -> go.Figure:
    """A grid of one image's channel maps (H, W, C) as one colour-mapped image.

    ``channels`` picks which (default: the first ``max_channels``, as in the
    Keras tutorial's 7x7 grid). ``scale="shared"`` puts all maps on one colour
    scale (with a colour bar), ``"channel"`` stretches each map to its own range.
    ``width_hint`` is the plot width (px) the figure will likely get, to size its
    height without blank bands. Hovering a cell names the channel with its mean and max; the cells' points
    carry the channel number as ``customdata`` for click-to-select. ``labels``
    names channels (e.g. the class each of a classifier's last maps stands for).
    """
    arr = _as_maps(maps)
    c = arr.shape[-1]
    chosen = list(range(min(c, max_channels))) if channels is None else [int(i) for i in channels]
    if not chosen:
        raise InputError("No channels chosen.")
    bad = [i for i in chosen if not 0 <= i < c]
    if bad:
        raise InputError(f"Channel {bad[0]} is out of range: this layer has channels 0 to {c - 1}.")
    stack = np.moveaxis(arr[:, :, chosen], -1, 0)
    canvas, geo = mosaic(stack, cols=cols, scale=scale, colormap=colormap, cell_px=cell_px)
    means, maxes = stack.mean(axis=(1, 2)), stack.max(axis=(1, 2))
    names = [f"{ch} {labels[ch]}" if labels is not None and ch < len(labels) else str(ch) for ch in chosen]
    hover = [f"channel {n}<br>mean {m:.3g} · max {x:.3g}" for n, m, x in zip(names, means, maxes)]
    return _mosaic_figure(
        canvas, geo, names, hover, chosen, title=title, colormap=colormap,
        colorbar=scale == "shared", colorbar_title="activation", highlight=highlight, height=height,
        label_cells=len(chosen) <= MAX_LABELLED_CELLS, width_hint=width_hint,
    )


def channel_detail(map2d: np.ndarray, *, title: Optional[str] = None, colormap: str = DEFAULT_COLORMAP,
                   zmin: Optional[float] = None, zmax: Optional[float] = None,
                   height: Optional[int] = None) -> go.Figure:
    """One channel's map as a heatmap with exact values: hover shows row, column and activation."""
    arr = np.asarray(map2d, dtype=np.float32)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[:, :, 0]
    if arr.ndim != 2:
        raise InputError(f"Expected one 2D map, got shape {arr.shape}.")
    arr = np.nan_to_num(arr)
    h, w = arr.shape
    fig = go.Figure(go.Heatmap(
        z=arr, colorscale=_plotly_scale(colormap), zmin=zmin, zmax=zmax,
        hovertemplate="row %{y}, column %{x}<br>activation %{z:.4g}<extra></extra>",
        colorbar=dict(title=dict(text="activation", side="right"), thickness=12),
        xgap=0, ygap=0,
    ))
    if height is None:
        height = int(min(640, max(260, 80 + 420 * h / max(w, 1))))
    fig.update_layout(
        title=dict(text=title, x=0, xanchor="left", font=dict(size=14)) if title else None,
        height=height, margin=dict(l=40, r=10, t=40 if title else 10, b=30),
        xaxis=dict(title="column", constrain="domain", showgrid=False),
        yaxis=dict(title="row", autorange="reversed", scaleanchor="x", constrain="domain", showgrid=False),
        plot_bgcolor="white",
    )
    return fig


def across_images(maps: np.ndarray, titles: Optional[Sequence[str]] = None, *,
                  colormap: str = DEFAULT_COLORMAP, cols: Optional[int] = None,
                  title: Optional[str] = None, highlight: Optional[int] = None,
                  height: Optional[int] = None, width_hint: int = 560) -> go.Figure:
    """One channel's map for many images (N, H, W) on one shared colour scale, titled by image."""
    arr = np.asarray(maps, dtype=np.float32)
    if arr.ndim == 4 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 3 or len(arr) == 0:
        raise InputError(f"Expected maps of shape (N, H, W), got {arr.shape}.")
    arr = np.nan_to_num(arr)
    n = len(arr)
    titles = list(titles) if titles is not None else [f"image {i}" for i in range(n)]
    if len(titles) != n:
        raise InputError(f"{n} maps but {len(titles)} titles.")
    canvas, geo = mosaic(arr, cols=cols, scale="shared", colormap=colormap)
    means, maxes = arr.mean(axis=(1, 2)), arr.max(axis=(1, 2))
    short = [t if len(t) <= 18 else t[:16] + "…" for t in titles]
    hover = [f"{t}<br>mean {m:.3g} · max {x:.3g}" for t, m, x in zip(titles, means, maxes)]
    return _mosaic_figure(
        canvas, geo, short, hover, list(range(n)), title=title, colormap=colormap, colorbar=True,
        colorbar_title="activation", highlight=highlight, height=height,
        label_cells=n <= MAX_LABELLED_CELLS, width_hint=width_hint,
    )


def prediction_bars(predictions: Sequence[tuple[str, float]], *, title: Optional[str] = None,
                    height: Optional[int] = None) -> go.Figure:
    """Top-k predictions as horizontal bars, most likely on top."""
    names = [p[0] for p in predictions][::-1]
    probs = [float(p[1]) for p in predictions][::-1]
    top = max(probs, default=0.0)
    # Near-uniform scores (an untrained model) would be invisible on a 0-100 % axis: zoom in.
    x_range = [0, 1] if top >= 0.5 else [0, max(top * 1.25, 1e-4)]
    fig = go.Figure(go.Bar(
        x=probs, y=names, orientation="h", text=[f"{p:.2%}" if p < 0.01 else f"{p:.1%}" for p in probs],
        textposition="auto",
        hovertemplate="%{y}: %{x:.2%}<extra></extra>", marker_color="#4c78a8",
    ))
    fig.update_layout(
        title=dict(text=title, x=0, font=dict(size=14)) if title else None,
        height=height or (60 + 32 * max(1, len(names))), margin=dict(l=10, r=10, t=36 if title else 6, b=6),
        xaxis=dict(range=x_range, tickformat=".0%" if top >= 0.5 else ".2%", showgrid=True),
        yaxis=dict(automargin=True),
        plot_bgcolor="white",
    )
    return fig
