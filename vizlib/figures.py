"""Arrays -> Plotly figures: channel grids, one channel in detail, one channel across images.

Overviews go to the browser as ONE colour-mapped PNG mosaic per grid (a few
hundred kB however many channels), with a light invisible layer of points on
top so hovering a cell names its channel and clicking it can select it. Exact
float values with hover go out only for the single map being inspected
(:func:`channel_detail`). Every function returns a ``go.Figure`` the caller may
still change, in the manner of ``px.imshow``.
"""

from __future__ import annotations

import html
import io
import math
import re
from functools import lru_cache
from typing import Callable, Optional, Sequence

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


def _rgb(color: str) -> tuple[int, int, int]:
    import plotly.colors as pc

    if color.startswith("#"):
        return tuple(int(v) for v in pc.hex_to_rgb(color))  # type: ignore[return-value]
    return tuple(int(round(float(v))) for v in pc.unlabel_rgb(color))[:3]  # type: ignore[return-value]


@lru_cache(maxsize=32)
def plotly_colorscale(name: str) -> tuple[tuple[float, str], ...]:
    """A Plotly colorscale name as ``((position, "rgb(r,g,b)"), ...)``: the stops that go to the browser.

    Never as hex. Streamlit's frontend (1.64, any ``theme``) rewrites every
    ``"#000001"`` to ``"#000040"`` in a chart's JSON text into colours of its own
    theme (they are placeholders of its Plotly template), so magma's and
    inferno's first stop ``#000004`` arrived as a light pink (``#ffabab``) and the
    colour bar began at the wrong end. ``rgb()`` stops mean the same colours and
    can't collide.
    """
    import plotly.colors as pc

    try:
        scale = pc.get_colorscale(name)
    except Exception as exc:  # plotly raises PlotlyError for unknown names
        raise InputError(f"Unknown colormap '{name}'. Try one of: {', '.join(COLORMAPS)}.") from exc
    return tuple((float(pos), "rgb({},{},{})".format(*_rgb(color))) for pos, color in scale)


def plotly_scale(name: str) -> list:
    """A named colormap as a Plotly colorscale ([[position, colour], ...]), for every figure module."""
    return [list(stop) for stop in plotly_colorscale(name)]


#: Streamlit's frontend replaces these strings anywhere in a chart's JSON (see plotly_colorscale).
_ST_PLACEHOLDER = re.compile(r"#(?=0000[0-4][0-9])")


def safe_text(text: str) -> str:
    """Text for a chart, with Streamlit's colour placeholders (``#000001``...) defused by a zero-width space."""
    return _ST_PLACEHOLDER.sub("#\u200b", text)


#: Chart titles: font size, and the plot width they must fit however wide the page is (a phone's).
TITLE_FONT_PX = 14
NARROWEST_PLOT_PX = 340
MAX_TITLE_LINES = 3
#: Estimated width of one title character in em: Streamlit draws chart titles bold in Source Sans;
#: on the wide side, so an estimate errs towards one line too many, never a cut-off title.
_TITLE_CHAR_EM = 0.55
#: Halo for cell labels: white text with a black outline reads on the darkest and the lightest
#: cells of every colormap (CSS text-shadow, which Plotly applies to SVG text).
LABEL_HALO = ("-1px -1px 1px black, 1px -1px 1px black, -1px 1px 1px black, 1px 1px 1px black, "
              "0px 0px 3px black")

_TAG = re.compile(r"<(/?)([a-zA-Z]+)[^>]*>|&(?:#\d+|#x[0-9a-fA-F]+|[a-zA-Z]+);|.", re.S)


def plain_text(text: str) -> str:
    """A chart title or label without its Plotly pseudo-HTML (``<b>``, ``<br>``, entities)."""
    text = re.sub(r"<br\s*/?>", " ", text, flags=re.I)
    return html.unescape(re.sub(r"<[^>]+>", "", text)).replace("\u200b", "")


def fit_title(title: str, width_px: int, *, font_px: int = TITLE_FONT_PX,
              max_lines: int = MAX_TITLE_LINES) -> tuple[str, bool]:
    """``title`` wrapped with ``<br>`` to fit ``width_px``; ``(text, abbreviated)``.

    Plotly never wraps a title: one longer than the plot is cut at the edge
    (ConvNeXt and Xception layer names ended mid-word). Lines break at `` · ``
    first, then at spaces, then inside long names after ``_``, ``/`` or ``-``;
    bold and italic tags are closed and reopened around each break. Past
    ``max_lines`` the rest is cut with "…" and ``abbreviated`` is True, so the
    caller can put the full title in the hover text.
    """
    max_chars = max(8, int(width_px / (font_px * _TITLE_CHAR_EM)))
    atoms: list[tuple[str, str]] = []  # ("open"|"close"|"br"|"char", text)
    for m in _TAG.finditer(title):
        tok = m.group(0)
        if m.group(2):
            name = m.group(2).lower()
            atoms.append(("br", tok) if name == "br" else ("close" if m.group(1) else "open", tok))
        else:
            atoms.append(("char", tok))
    if sum(kind == "char" for kind, _ in atoms) <= max_chars and not any(kind == "br" for kind, _ in atoms):
        return title, False

    def chars(a: int, b: int) -> int:
        return sum(1 for kind, _ in atoms[a:b] if kind == "char")

    def char_at(i: int) -> str:
        return atoms[i][1] if 0 <= i < len(atoms) and atoms[i][0] == "char" else ""

    spans: list[tuple[int, int]] = []  # each line: atoms[begin:end]
    start = 0
    while True:
        # `end`: the farthest index with at most max_chars characters in atoms[start:end]
        count, end = 0, start
        while end < len(atoms) and atoms[end][0] != "br":
            if atoms[end][0] == "char":
                if count == max_chars:
                    break
                count += 1
            end += 1
        if end >= len(atoms) or atoms[end][0] == "br":
            spans.append((start, end))
            if end >= len(atoms):
                break
            start = end + 1
            continue
        # Break before atom `cut`; every character stays (a line keeps its trailing space), so the
        # title reads the same, only wrapped.
        cut = None
        for priority, min_fill in ((3, 0.45), (2, 0.3), (1, 0.3)):
            for j in range(end, start, -1):
                prev, here = char_at(j - 1), char_at(j)
                if priority == 3 and here == " " and prev == "·":
                    found = j + 1  # "a · " | "b"
                elif priority == 2 and here == " ":
                    found = j + 1  # "a " | "b"
                elif priority == 1 and prev in ("_", "/", "-", ",", "."):
                    found = j  # "block_" | "2"
                else:
                    continue
                if chars(start, found) >= min_fill * max_chars:
                    cut = found
                break
            if cut:
                break
        if cut is None:
            cut = end  # no place to break: a hard break
        if char_at(cut) == "·" and char_at(cut + 1) == " ":  # no line starts with a separator: it hangs
            cut += 2
        spans.append((start, cut))
        start = cut
    # Emit the lines, closing and reopening open tags around each break.
    lines: list[str] = []
    stack: list[str] = []
    for begin, end in spans:
        line = "".join(stack)
        for kind, tok in atoms[begin:end]:
            if kind == "open":
                stack.append(tok)
            elif kind == "close" and stack:
                stack.pop()
            line += tok
        lines.append(line + "".join(_closing(t) for t in reversed(stack)))
    abbreviated = len(lines) > max_lines
    if abbreviated:
        lines = lines[:max_lines]
        lines[-1] = _trim_visible(lines[-1], max_chars - 1) + "…"
    return "<br>".join(lines), abbreviated


def wrap_plain(text: str, width_px: float, measure: Callable[[str], float]) -> list[str]:
    """Plain ``text`` as lines no wider than ``width_px`` by ``measure`` (e.g. a PIL font's ``getlength``).

    For titles drawn into PNGs: the whole text is kept (no "…"), breaking at
    `` · `` first, then spaces, then after ``_``, ``/`` or ``-`` inside long
    names, and anywhere only when a single piece is wider than a line.
    """
    lines: list[str] = []
    rest = re.sub(r"(?<=\d) ([x×]) (?=\d)", "\u00a0\\1\u00a0", " ".join(text.split()))  # "7 x 7" stays whole
    while rest:
        if measure(rest) <= width_px:
            lines.append(rest)
            break
        # the longest prefix that fits, by bisection on characters
        lo, hi = 1, len(rest)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if measure(rest[:mid]) <= width_px:
                lo = mid
            else:
                hi = mid - 1
        fit = rest[:lo]
        cut = None
        for pattern, min_fill in ((r" · ", 0.45), (r" ", 0.3), (r"(?<=[_/\-])", 0.3)):
            spots = [m.start() for m in re.finditer(pattern, rest[:lo + 1]) if m.start() > 0]
            spots = [i for i in spots if i <= len(fit)]
            if spots and spots[-1] >= min_fill * len(fit):
                cut = spots[-1]
                break
        if cut is None:
            cut = max(1, lo)
        head = rest[:cut].rstrip(" ")
        if rest[cut:cut + 3] == " · ":
            head, cut = head + " ·", cut + 3
        lines.append(head)
        rest = rest[cut:].lstrip(" ")
    return [line.replace("\u00a0", " ") for line in lines]


def _closing(open_tag: str) -> str:
    name = re.match(r"<([a-zA-Z]+)", open_tag)
    return f"</{name.group(1)}>" if name else ""


def _trim_visible(line: str, n: int) -> str:
    """The first ``n`` visible characters of a pseudo-HTML line, tags kept balanced."""
    out, stack, count = "", [], 0
    for m in _TAG.finditer(line):
        tok = m.group(0)
        if m.group(2):
            if m.group(1):
                if stack:
                    stack.pop()
                out += tok
            elif m.group(2).lower() != "br":
                stack.append(tok)
                out += tok
            continue
        if count >= n:
            continue
        out += tok
        count += 1
    return out + "".join(_closing(t) for t in reversed(stack))


def chart_title(title: Optional[str], width_px: int) -> tuple[Optional[dict], int, Optional[str]]:
    """(layout title, top margin in px, the full plain title when the shown one is abbreviated)."""
    if not title:
        return None, 0, None
    text, abbreviated = fit_title(safe_text(title), min(int(width_px), NARROWEST_PLOT_PX) - 4)  # - pad
    lines = text.count("<br>") + 1
    # Plotly.js (3.8, Streamlit's) draws a top-anchored title of several lines ~10 px higher than one
    # of one line (above the chart's top edge with the same pad): the pad makes up for it.
    # From the chart's own left edge (not the plot area's, which axis labels push right), so the
    # width it was wrapped for is the width it has.
    layout = dict(text=text, x=0, xanchor="left", xref="container", y=1, yref="container", yanchor="top",
                  pad=dict(t=10 if lines == 1 else 20, l=2), font=dict(size=TITLE_FONT_PX))
    return layout, 22 + 18 * lines, safe_text(plain_text(title)) if abbreviated else None


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
           background: tuple[int, int, int] = BACKGROUND) -> tuple[np.ndarray, dict]:
    """(K, H, W) maps -> one RGB uint8 mosaic image, plus its geometry and value range.

    ``background`` fills the gaps and the empty cells of the last row (white on a page; the live
    view's dark frame passes its own colour).
    """
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
    canvas[:] = background
    for i in range(k):
        y0, x0 = cell_origin(i, cols, (ch, cw))
        canvas[y0:y0 + ch, x0:x0 + cw] = lut[_resize_index(idx[i], (ch, cw))]
    geometry = {"rows": rows, "cols": cols, "cell": (ch, cw), "size": (height, width), "lo": lo, "hi": hi}
    return canvas, geometry


def png_data_uri(rgb: np.ndarray) -> str:
    """An RGB array as a ``data:image/png;base64,...`` URI (what the browser receives), by Plotly's own helper.

    Compression level 1: about 2.5x faster to encode than the default for ~10 % more bytes (benchmarks/).
    """
    from plotly.utils import image_array_to_data_uri

    return image_array_to_data_uri(np.ascontiguousarray(rgb, dtype=np.uint8), backend="pil", compression=1)


def cell_origin(i: int, cols: int, cell: tuple[int, int]) -> tuple[int, int]:
    """(y0, x0) of the ``i``-th cell's top-left pixel in a mosaic of ``cols`` columns of ``cell`` = (h, w)."""
    r, c = divmod(int(i), int(cols))
    ch, cw = cell
    return GAP_PX + r * (ch + GAP_PX), GAP_PX + c * (cw + GAP_PX)


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
    title_layout, top, full_title = chart_title(title, width_hint)
    hover = [safe_text(h) for h in hover]
    if full_title:  # the title is abbreviated on the chart: hovering any cell names it in full
        hover = [f"{full_title}<br>{h}" for h in hover]
    fig = go.Figure()
    fig.add_trace(go.Image(source=png_data_uri(canvas), hoverinfo="skip", name="maps"))
    origins = [cell_origin(i, cols, (ch, cw)) for i in range(len(keys))]
    xs = [x0 + cw / 2 for _, x0 in origins]
    ys = [y0 + ch / 2 for y0, _ in origins]
    fig.add_trace(go.Scatter(
        x=xs, y=ys, mode="markers", customdata=list(keys), hovertext=list(hover),
        hovertemplate="%{hovertext}<extra></extra>", name="cells", showlegend=False,
        marker=dict(size=max(6, min(ch, cw) * 0.6), color="rgba(0,0,0,0)", symbol="square"),
        selected=dict(marker=dict(opacity=0)), unselected=dict(marker=dict(opacity=0)),
    ))
    if label_cells:
        # One text trace, not one annotation per cell: a fraction of the cost to build and draw.
        corners = [cell_origin(i, cols, (ch, cw)) for i in range(len(labels))]
        lx = [x0 + 3 for _, x0 in corners]
        ly = [y0 + 2 for y0, _ in corners]
        fig.add_trace(go.Scatter(
            x=lx, y=ly, mode="text", text=[safe_text(t) for t in labels], textposition="bottom right",
            hoverinfo="skip", name="labels", showlegend=False,
            textfont=dict(size=11 if cw >= 40 else 8, color="white", shadow=LABEL_HALO),
        ))
    if colorbar:
        fig.add_trace(go.Scatter(
            x=[None], y=[None], mode="markers", hoverinfo="skip", showlegend=False, name="scale",
            marker=dict(colorscale=plotly_scale(colormap), cmin=geo["lo"], cmax=geo["hi"], color=[geo["lo"]],
                        showscale=True, colorbar=dict(title=dict(text=colorbar_title, side="right"),
                                                      thickness=12, len=0.9)),
        ))
    shapes = []
    if highlight is not None and highlight in keys:
        y0, x0 = cell_origin(list(keys).index(highlight), cols, (ch, cw))
        shapes.append(dict(type="rect", x0=x0 - 1.5, y0=y0 - 1.5, x1=x0 + cw + 1.5, y1=y0 + ch + 1.5,
                           xref="x", yref="y", line=dict(color="#ff2b2b", width=3)))
    if height is None:  # fit the mosaic to the width it will likely get, so no band stays blank
        height = int(min(900, max(160, (top or 8) + width_hint * height_px / max(width_px, 1))))
    fig.update_layout(
        title=title_layout, shapes=shapes, height=height,
        margin=dict(l=0, r=0, t=top or 8, b=0), hovermode="closest", hoverdistance=-1,
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


def _whole_ticks(n: int, target: int = 8) -> dict:
    """Axis ticks on whole rows / columns only (a 4x4 map has no row -0.5): at most ~``target`` of them."""
    step = 1
    for mult in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000):
        step = mult
        if n / mult <= target:
            break
    return dict(tickmode="linear", tick0=0, dtick=step, tickformat="d")


#: What a detail heatmap's frame takes: across, the row labels and title and the colour bar (px); down,
#: the column labels and title.
DETAIL_FRAME_PX = 96
DETAIL_AXIS_PX = 48
#: Largest map whose cells are clickable in :func:`channel_detail` (one invisible point per cell).
MAX_CLICKABLE_CELLS = 4096


def channel_detail(map2d: np.ndarray, *, title: Optional[str] = None, colormap: str = DEFAULT_COLORMAP,
                   zmin: Optional[float] = None, zmax: Optional[float] = None,
                   height: Optional[int] = None, width_hint: int = 420, clickable: bool = False) -> go.Figure:
    """One channel's map as a heatmap with exact values: hover shows row, column and activation.

    Rows and columns are ticked at whole numbers. A title too long for
    ``width_hint`` (the plot width it will likely get) wraps. ``clickable``
    puts an invisible point on every cell (maps up to
    :data:`MAX_CLICKABLE_CELLS`), whose ``customdata`` is ``[row, column,
    value]``, so a click (a selection event) names the cell.
    """
    arr = np.asarray(map2d, dtype=np.float32)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[:, :, 0]
    if arr.ndim != 2:
        raise InputError(f"Expected one 2D map, got shape {arr.shape}.")
    arr = np.nan_to_num(arr)
    h, w = arr.shape
    title_layout, top, full_title = chart_title(title, width_hint)
    hover = "row %{y}, column %{x}<br>activation %{z:.4g}<extra></extra>"
    points = clickable and h * w <= MAX_CLICKABLE_CELLS
    fig = go.Figure(go.Heatmap(
        z=arr, colorscale=plotly_scale(colormap), zmin=zmin, zmax=zmax,
        hovertemplate=f"{full_title}<br>{hover}" if full_title else hover,
        hoverinfo="skip" if points else None,
        colorbar=dict(title=dict(text="activation", side="right"), thickness=10, xpad=4, outlinewidth=0),
        xgap=0, ygap=0,
    ))
    if points:
        rows, cols = np.mgrid[0:h, 0:w]
        cell_hover = "row %{y}, column %{x}<br>activation %{customdata[2]:.4g}<extra></extra>"
        fig.add_trace(go.Scatter(
            x=cols.ravel(), y=rows.ravel(), mode="markers", name="cells", showlegend=False,
            customdata=np.stack([rows.ravel(), cols.ravel(), arr.ravel()], axis=1).tolist(),
            hovertemplate=f"{full_title}<br>{cell_hover}" if full_title else cell_hover,
            marker=dict(size=max(4, min(24, 380 // max(h, w))), color="rgba(0,0,0,0)", symbol="square"),
            selected=dict(marker=dict(opacity=0)), unselected=dict(marker=dict(opacity=0)),
        ))
    if height is None:
        # the map as wide as the plot gets (the chart less its axis labels and colour bar), no band below
        side = max(160, int(width_hint) - DETAIL_FRAME_PX)
        height = int(min(640, max(220, (top or 10) + DETAIL_AXIS_PX + side * h / max(w, 1))))
    fig.update_layout(
        title=title_layout,
        height=height, margin=dict(l=4, r=4, t=top or 10, b=4),
        # exact ranges: the clickable points' markers would pad an automatic range with white
        xaxis=dict(title=dict(text="column", standoff=4), range=[-0.5, w - 0.5], constrain="domain",
                   showgrid=False, zeroline=False, automargin=True, **_whole_ticks(w)),
        yaxis=dict(title=dict(text="row", standoff=4), range=[h - 0.5, -0.5], scaleanchor="x", constrain="domain",
                   constraintoward="top", showgrid=False, zeroline=False, automargin=True, **_whole_ticks(h)),
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


def percent_ticks(hi: float, target: int = 5) -> tuple[list[float], list[str]]:
    """Tick values over ``[0, hi]`` (a probability axis) and their labels, as many decimals as the step needs.

    A fixed format fails one end of the range: ``".0%"`` reads "0%" at every tick
    of an untrained model's ~0.2 % scores, ``".2%"`` clutters a 0-100 % axis.
    """
    hi = float(hi) if hi and hi > 0 else 1.0
    raw = hi / max(1, int(target))
    mag = 10.0 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw * 0.999)
    # decimals of the step in percent: 0.05 % needs 2, 2.5 % needs 1, 20 % none
    pct = step * 100
    decimals = 0
    while decimals < 12 and abs(round(pct, decimals) - pct) > pct * 1e-6:
        decimals += 1
    n = int(math.floor(hi / step + 1e-9))
    vals = [round(i * step, 15) for i in range(n + 1)]
    return vals, [f"{v * 100:.{decimals}f}%" if v else "0%" for v in vals]


def prediction_bars(predictions: Sequence[tuple[str, float]], *, title: Optional[str] = None,
                    height: Optional[int] = None) -> go.Figure:
    """Top-k predictions as horizontal bars, most likely on top.

    The axis fits the data: a confident model gets 0-100 %, near-uniform scores
    (an untrained model's ~0.1 %) a zoomed axis whose ticks read 0.05 %, 0.10 % ...
    Every bar's label stays readable when a selection dims the other bars.
    """
    names = [p[0] for p in predictions][::-1]
    probs = [float(p[1]) for p in predictions][::-1]
    best = max(probs, default=0.0)
    # Near-uniform scores (an untrained model) would be invisible on a 0-100 % axis: zoom in.
    x_max = 1.0 if best >= 0.5 else max(best * 1.25, 1e-4)
    tickvals, ticktext = percent_ticks(x_max)
    fig = go.Figure(go.Bar(
        x=probs, y=names, orientation="h", text=[f"{p:.2%}" if p < 0.01 else f"{p:.1%}" for p in probs],
        textposition="auto",
        hovertemplate="%{y}: %{x:.2%}<extra></extra>", marker_color="#4c78a8",
        # A bar a selection dims keeps a dark label: Plotly's default dims the label too (white at 20 %).
        selected=dict(marker=dict(opacity=1.0)),
        unselected=dict(marker=dict(opacity=0.35), textfont=dict(color="#262730")),
    ))
    title_layout, top, _ = chart_title(title, 420)
    fig.update_layout(
        title=title_layout,
        height=height or (60 + (top - 40 if top else 0) + 32 * max(1, len(names))),
        margin=dict(l=10, r=10, t=top - 4 if top else 6, b=6),
        xaxis=dict(range=[0, x_max], tickmode="array", tickvals=tickvals, ticktext=ticktext, showgrid=True),
        yaxis=dict(automargin=True),
        plot_bgcolor="white",
    )
    return fig
