"""Figures for "why this prediction?": Grad-CAM overlays, channel contributions, receptive fields,
one convolution worked by hand, and the depth profile.

Each function takes what :mod:`vizlib.explain` returns and gives a ``go.Figure``
the caller may still change (as ``px.imshow`` does). Pictures go to the browser
as PNG images (a Grad-CAM overlay is two PNG layers: the input as the model sees
it, and the colour-mapped map with an opacity); exact values travel only where
hover needs them, at the map's own resolution (a 7x7 map is 49 numbers, not a
224x224 float heatmap). Titles and axis labels say what is shown in words a
newcomer reads in seconds.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import numpy as np
import plotly.graph_objects as go
from PIL import Image

from vizlib.errors import InputError
from vizlib.figures import plotly_scale, safe_text, chart_title, colormap_lut, png_data_uri

#: Colour scale of class activation maps (Grad-CAM papers use jet; turbo is its perceptually better cousin).
CAM_COLORMAP = "turbo"
#: Default opacity of the map over the image.
CAM_OPACITY = 0.5
#: Largest hover grid sent per overlay (cells per side); bigger maps are averaged down in blocks.
MAX_HOVER_CELLS = 112
#: Colours: positive and negative contributions, the receptive-field box.
POSITIVE = "#d62728"
NEGATIVE = "#4c78a8"
BOX_COLOUR = "#ff2b2b"


# --------------------------------------------------------------------------- shared pieces


def _rgb_image(image: Any, size: Optional[tuple[int, int]] = None) -> np.ndarray:
    """A PIL image or array (H, W) / (H, W, 1|3), 0..255 -> uint8 RGB (H, W, 3), resized to ``size`` (h, w)."""
    if isinstance(image, Image.Image):
        pil = image.convert("RGB")
    else:
        arr = np.asarray(image)
        if arr.ndim == 4 and arr.shape[0] == 1:
            arr = arr[0]
        if arr.ndim == 3 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] != 3):
            raise InputError(f"Expected an image (H, W) or (H, W, 3), got shape {arr.shape}.")
        arr = np.clip(np.rint(np.nan_to_num(arr.astype(np.float32))), 0, 255).astype(np.uint8)
        pil = Image.fromarray(arr).convert("RGB")
    if size is not None and pil.size != (size[1], size[0]):
        pil = pil.resize((size[1], size[0]), Image.BILINEAR)
    return np.asarray(pil, dtype=np.uint8)


def _colour_map(values: np.ndarray, colormap: str) -> np.ndarray:
    idx = np.clip(np.rint(np.nan_to_num(values) * 255), 0, 255).astype(np.uint8)
    return colormap_lut(colormap)[idx]


def _block_mean(arr: np.ndarray, limit: int) -> tuple[np.ndarray, int]:
    """Average ``arr`` (h, w) in f x f blocks so neither side exceeds ``limit``; returns (array, f)."""
    h, w = arr.shape
    f = max(1, math.ceil(max(h, w) / limit))
    if f == 1:
        return arr, 1
    hh, ww = math.ceil(h / f) * f, math.ceil(w / f) * f
    pad = np.full((hh, ww), np.nan, dtype=np.float32)
    pad[:h, :w] = arr
    return np.nanmean(pad.reshape(hh // f, f, ww // f, f), axis=(1, 3)), f


def _colorbar_trace(colormap: str, title: str, lo: float = 0.0, hi: float = 1.0, **bar: Any) -> go.Scatter:
    return go.Scatter(
        x=[None], y=[None], mode="markers", hoverinfo="skip", showlegend=False, name="scale",
        marker=dict(colorscale=plotly_scale(colormap), cmin=lo, cmax=hi, color=[lo], showscale=True,
                    colorbar=dict(title=dict(text=title, side="right"), thickness=12, len=0.9, **bar)),
    )


def _image_axes(h: int, w: int) -> tuple[dict, dict]:
    x = dict(visible=False, range=[-0.5, w - 0.5], constrain="domain", showgrid=False)
    y = dict(visible=False, range=[h - 0.5, -0.5], scaleanchor="x", constrain="domain", showgrid=False)
    return x, y


def _add_overlay(fig: go.Figure, base: np.ndarray, cam: np.ndarray, layer_cam: Optional[np.ndarray], *,
                 opacity: float, colormap: str, hover_label: str, layer: Optional[str],
                 row: Optional[int] = None, col: Optional[int] = None) -> None:
    """Base image + colour-mapped map (two PNG layers) + an invisible hover grid of the map's values."""
    h, w = cam.shape
    where = dict(row=row, col=col) if row is not None else {}
    fig.add_trace(go.Image(source=png_data_uri(base), hoverinfo="skip", name="input"), **where)
    fig.add_trace(go.Image(source=png_data_uri(_colour_map(cam, colormap)), opacity=float(opacity),
                           hoverinfo="skip", name="map"), **where)
    values = np.asarray(layer_cam if layer_cam is not None else cam, dtype=np.float32)
    values, f = _block_mean(values, MAX_HOVER_CELLS)
    lh, lw = (layer_cam.shape if layer_cam is not None else cam.shape)
    sy, sx = h / lh * f, w / lw * f  # input pixels per hover cell
    rows, cols = values.shape
    cell = "cell" if f == 1 else f"cells (averaged {f}x{f})"
    where_txt = f" of {safe_text(layer)}" if layer else ""
    fig.add_trace(go.Heatmap(
        z=values, x0=sx / 2 - 0.5, dx=sx, y0=sy / 2 - 0.5, dy=sy, opacity=0.0, showscale=False,
        zmin=0.0, zmax=1.0, colorscale=plotly_scale(colormap), name="values",
        customdata=np.stack(np.meshgrid(np.arange(rows) * f, np.arange(cols) * f, indexing="ij"), axis=-1),
        hovertemplate=(f"{cell} row %{{customdata[0]}}, column %{{customdata[1]}}{where_txt}"
                       f"<br>{safe_text(hover_label)} %{{z:.2f}}<extra></extra>"),
    ), **where)


def _cam_title(class_name: Optional[str], method: str, layer: Optional[str]) -> str:
    what = f"“{class_name}”" if class_name else "the class"
    at = f" · {method} at {layer}" if layer else f" · {method}"
    return f"Where the model looked for {what}{at}"


# --------------------------------------------------------------------------- Grad-CAM


def gradcam_overlay(image: Any, cam: np.ndarray, *, layer_cam: Optional[np.ndarray] = None,
                    opacity: float = CAM_OPACITY, colormap: str = CAM_COLORMAP, class_name: Optional[str] = None,
                    method: str = "Grad-CAM", layer: Optional[str] = None, title: Optional[str] = None,
                    height: Optional[int] = None, width_hint: int = 420) -> go.Figure:
    """A class activation map over the input as the model sees it.

    ``image`` is the model's view of the input (PIL image or uint8 array, e.g.
    :func:`vizlib.explain.model_view_array`); ``cam`` the map at the same size
    (:func:`vizlib.gradcam`). The map is a PNG layer at ``opacity`` over the
    image; hovering shows the map's value per cell of ``layer`` (pass
    ``layer_cam``, the map at the layer's own resolution, for exact cells).
    """
    cam = np.asarray(cam, dtype=np.float32)
    if cam.ndim != 2:
        raise InputError(f"Expected one 2D map, got shape {cam.shape}.")
    if not 0.0 <= float(opacity) <= 1.0:
        raise InputError(f"Opacity must be between 0 and 1, not {opacity}.")
    h, w = cam.shape
    base = _rgb_image(image, (h, w))
    title = title if title is not None else _cam_title(class_name, method, layer)
    title_layout, top, _ = chart_title(title, width_hint)
    fig = go.Figure()
    _add_overlay(fig, base, cam, layer_cam, opacity=opacity, colormap=colormap, hover_label=method, layer=layer)
    fig.add_trace(_colorbar_trace(colormap, f"{method} (0 = none, 1 = strongest)"))
    xa, ya = _image_axes(h, w)
    fig.update_layout(
        title=title_layout, height=height or int(min(640, max(240, (top or 8) + 24 + width_hint * h / w * 0.85))),
        margin=dict(l=0, r=0, t=top or 8, b=0), plot_bgcolor="white", paper_bgcolor="white",
        xaxis=xa, yaxis=ya, dragmode=False, hovermode="closest",
    )
    return fig


def gradcam_pair(image: Any, cams: Sequence[np.ndarray], titles: Sequence[str], *,
                 layer_cams: Optional[Sequence[Optional[np.ndarray]]] = None, opacity: float = CAM_OPACITY,
                 colormap: str = CAM_COLORMAP, method: str = "Grad-CAM", layer: Optional[str] = None,
                 title: Optional[str] = None, height: Optional[int] = None, width_hint: int = 720) -> go.Figure:
    """Two (or more) maps of the same image side by side, e.g. trained vs untrained weights.

    The untrained copy is the sanity check for any saliency map: if the two look
    alike, the map shows the architecture (or the image's edges), not what the
    training taught the model.
    """
    from plotly.subplots import make_subplots

    if len(cams) == 0 or len(cams) != len(titles):
        raise InputError(f"{len(cams)} maps but {len(titles)} titles.")
    layer_cams = list(layer_cams) if layer_cams is not None else [None] * len(cams)
    n = len(cams)
    h, w = np.asarray(cams[0]).shape
    base = _rgb_image(image, (h, w))
    fig = make_subplots(rows=1, cols=n, subplot_titles=[safe_text(t) for t in titles], horizontal_spacing=0.02)
    for i, (cam, lc) in enumerate(zip(cams, layer_cams)):
        _add_overlay(fig, base, np.asarray(cam, dtype=np.float32), lc, opacity=opacity, colormap=colormap,
                     hover_label=f"{titles[i]}: {method}", layer=layer, row=1, col=i + 1)
    fig.add_trace(_colorbar_trace(colormap, f"{method} (relative)"))
    title = title if title is not None else f"{method}{' at ' + layer if layer else ''}: " + " vs ".join(titles)
    title_layout, top, _ = chart_title(title, width_hint)
    for i in range(n):
        xa, ya = _image_axes(h, w)
        ya["scaleanchor"] = f"x{i + 1 if i else ''}"
        fig.update_layout({f"xaxis{i + 1 if i else ''}": xa, f"yaxis{i + 1 if i else ''}": ya})
    fig.update_layout(
        title=title_layout, height=height or int(min(560, max(240, (top or 8) + 40 + width_hint / n * h / w * 0.85))),
        margin=dict(l=0, r=0, t=(top or 8) + 22, b=0), plot_bgcolor="white", paper_bgcolor="white",
        dragmode=False, hovermode="closest",
    )
    return fig


def gradcam_png(image: Any, cam: np.ndarray, *, opacity: float = CAM_OPACITY, colormap: str = CAM_COLORMAP,
                class_name: Optional[str] = None, method: str = "Grad-CAM", layer: Optional[str] = None,
                title: Optional[str] = None) -> bytes:
    """A class activation map over the input, as a PNG for slides: the model's view blended with the
    colour-mapped map, enlarged to a projector's width, with its title and colour bar
    (:func:`vizlib.export.slide_png`). Arguments as :func:`gradcam_overlay`."""
    from vizlib.export import ColourBar, slide_png

    cam = np.asarray(cam, dtype=np.float32)
    if cam.ndim != 2:
        raise InputError(f"Expected one 2D map, got shape {cam.shape}.")
    if not 0.0 <= float(opacity) <= 1.0:
        raise InputError(f"Opacity must be between 0 and 1, not {opacity}.")
    base = _rgb_image(image, cam.shape)
    blended = (1 - opacity) * base.astype(np.float32) + opacity * _colour_map(cam, colormap).astype(np.float32)
    rgb = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
    title = title if title is not None else _cam_title(class_name, method, layer)
    bar = ColourBar(colormap, 0.0, 1.0, f"{method} (0 = none, 1 = strongest)")
    return slide_png(rgb, title=title, colour_bar=bar, smooth=True)


# --------------------------------------------------------------------------- channel contributions


def contributions_bar(contributions: Sequence[dict], *, n: int = 15, class_name: Optional[str] = None,
                      layer: Optional[str] = None, highlight: Optional[int] = None, title: Optional[str] = None,
                      height: Optional[int] = None, width_hint: int = 420) -> go.Figure:
    """The channels that carried the decision: top ``n`` by contribution, largest on top.

    ``contributions`` is :func:`vizlib.explain.channel_contributions`' ranked list.
    Each bar's ``customdata`` is its channel index, so a click can inspect it.
    """
    rows = list(contributions)[: max(1, int(n))]
    if not rows:
        raise InputError("No channel contributions to show.")
    rows = rows[::-1]
    values = [float(r["contribution"]) for r in rows]
    labels = [f"channel {int(r['channel'])}" for r in rows]
    colours = [POSITIVE if v >= 0 else NEGATIVE for v in values]
    line_w = [3 if highlight is not None and int(r["channel"]) == int(highlight) else 0 for r in rows]
    hover = [
        f"channel {int(r['channel'])}<br>contribution {float(r['contribution']):.3g} "
        f"({100 * float(r.get('share', 0.0)):.1f}% of all)<br>mean activation {float(r.get('mean_activation', 0)):.3g}"
        f" · mean gradient {float(r.get('mean_gradient', 0)):.3g}"
        for r in rows
    ]
    fig = go.Figure(go.Bar(
        x=values, y=labels, orientation="h", marker=dict(color=colours, line=dict(color="black", width=line_w)),
        customdata=[int(r["channel"]) for r in rows], hovertext=hover, hovertemplate="%{hovertext}<extra></extra>",
        name="contribution",
    ))
    # the class by its first name: ImageNet's "fox squirrel, eastern fox squirrel, Sciurus niger" ran
    # past a half-width column (the Grad-CAM beside it names the class in full)
    what = _short_class(class_name) if class_name else "the class"
    title = title if title is not None else (
        f"Channels{' of ' + layer if layer else ''} that carried {what}: top {len(rows)}")
    title_layout, top, _ = chart_title(title, width_hint)
    axis_title = axis_title_lines("contribution: mean of gradient × activation", width_hint)
    lines = axis_title.count("<br>") + 1
    fig.update_layout(
        title=title_layout, height=height or (66 + 18 * lines + (top or 8) + 22 * len(rows)),
        margin=dict(l=10, r=10, t=top or 8, b=36 + 18 * lines), plot_bgcolor="white", showlegend=False,
        xaxis=dict(title=dict(text=axis_title, font=dict(size=AXIS_TITLE_FONT_PX)),
                   zeroline=True, zerolinecolor="#888", showgrid=True, gridcolor="#eee"),
        yaxis=dict(automargin=True, type="category"), clickmode="event+select", dragmode=False,
    )
    return fig


#: Axis titles: font size, and the room they lose to the y axis's labels (Plotly centres an axis title on
#: the plot area, which the labels push right).
AXIS_TITLE_FONT_PX = 13
_AXIS_LABELS_PX = 80


def _short_class(class_name: Optional[str]) -> str:
    """A class name for an axis title: ImageNet's "fox squirrel, eastern fox squirrel, Sciurus niger"
    as its first name (the chart's title names it in full)."""
    if not class_name:
        return "class"
    return f"“{safe_text(class_name.split(',')[0].strip() or class_name)}”"


def axis_title_lines(text: str, width_hint: int) -> str:
    """An axis title wrapped with ``<br>`` to fit a chart ``width_hint`` px wide (or a phone's, if narrower).

    Plotly never wraps an axis title: a long one is cut at the chart's edge.
    """
    from vizlib.figures import NARROWEST_PLOT_PX, fit_title

    width = min(int(width_hint), NARROWEST_PLOT_PX) - _AXIS_LABELS_PX
    wrapped, _ = fit_title(text, width, font_px=AXIS_TITLE_FONT_PX, max_lines=6)
    return wrapped


# --------------------------------------------------------------------------- receptive field


def receptive_field_figure(image: Any, box: Sequence[int], *, layer: Optional[str] = None,
                           row: Optional[int] = None, col: Optional[int] = None,
                           size: Optional[int] = None, title: Optional[str] = None,
                           height: Optional[int] = None, width_hint: int = 420) -> go.Figure:
    """The input region one cell of a map sees, drawn as a box on the input as the model sees it.

    ``box`` is ``(top, left, bottom, right)`` from :func:`vizlib.receptive_field`
    (bottom/right exclusive); ``size`` the theoretical field on one side (which
    may be larger than the image: the rest is padding).
    """
    base = _rgb_image(image)
    h, w = base.shape[:2]
    top_, left, bottom, right = (int(v) for v in box)
    if not (0 <= top_ <= bottom <= h and 0 <= left <= right <= w):
        raise InputError(f"Box {tuple(box)} is outside the {h} x {w} image.")
    fig = go.Figure(go.Image(source=png_data_uri(base), hoverinfo="skip", name="input"))
    rh, rw = bottom - top_, right - left
    whole = rh == h and rw == w
    # Dim outside the box, then outline it: the region reads at a glance on any image.
    shade = "rgba(0,0,0,0.45)"
    dim = dict(type="rect", fillcolor=shade, line=dict(width=0))
    shapes = [
        dict(dim, x0=-0.5, x1=w - 0.5, y0=-0.5, y1=top_ - 0.5),
        dict(dim, x0=-0.5, x1=w - 0.5, y0=bottom - 0.5, y1=h - 0.5),
        dict(dim, x0=-0.5, x1=left - 0.5, y0=top_ - 0.5, y1=bottom - 0.5),
        dict(dim, x0=right - 0.5, x1=w - 0.5, y0=top_ - 0.5, y1=bottom - 0.5),
        dict(type="rect", x0=left - 0.5, x1=right - 0.5, y0=top_ - 0.5, y1=bottom - 0.5,
             line=dict(color=BOX_COLOUR, width=3)),
    ]
    fig.add_trace(go.Scatter(
        x=[left - 0.5, right - 0.5, right - 0.5, left - 0.5], y=[top_ - 0.5, top_ - 0.5, bottom - 0.5, bottom - 0.5],
        mode="markers", marker=dict(size=8, color="rgba(0,0,0,0)"), showlegend=False, name="corners",
        hovertemplate=f"input rows {top_}–{bottom - 1}, columns {left}–{right - 1}<extra></extra>",
    ))
    cell = f"cell (row {row}, column {col})" if row is not None and col is not None else "This cell"
    where = f" of {layer}" if layer else ""
    if title is None:
        if whole:
            title = f"{cell}{where} sees the whole {h} × {w} image"
        else:
            title = f"What {cell}{where} sees: {rh} × {rw} input pixels"
        if size is not None and size > max(rh, rw):
            title += f" (its field is {size} px; the rest falls on padding)"
    title_layout, top, _ = chart_title(title, width_hint)
    xa, ya = _image_axes(h, w)
    fig.update_layout(
        title=title_layout, shapes=shapes, xaxis=xa, yaxis=ya, dragmode=False, hovermode="closest",
        height=height or int(min(640, max(240, (top or 8) + width_hint * h / w * 0.85))),
        margin=dict(l=0, r=0, t=top or 8, b=0), plot_bgcolor="white", paper_bgcolor="white",
    )
    return fig


# --------------------------------------------------------------------------- one convolution by hand


def _fmt(v: float, decimals: Optional[int] = 2) -> str:
    """``v`` with ``decimals`` decimals ("-0.00" written "0.00"); ``None``: 3 significant digits, for
    values too small for decimals (a dead channel's weights of 1e-34)."""
    if decimals is None:
        return "0" if v == 0 else f"{v:.3g}"
    text = f"{v:.{int(decimals)}f}"
    return text[1:] if text.startswith("-") and not any(ch in "123456789" for ch in text) else text


def cell_decimals(values: np.ndarray, digits: int = 2, most: int = 6) -> Optional[int]:
    """Decimals that show the largest of ``values`` with ``digits`` significant digits (at least 2);
    None when that would take more than ``most`` (write them as 1.2e-34 instead)."""
    big = float(np.max(np.abs(values))) if np.size(values) else 0.0
    if not np.isfinite(big) or big == 0.0:
        return 2
    d = digits - 1 - math.floor(math.log10(big))
    return None if d > most else int(max(2, d))


def sum_decimals(terms: Sequence[float], total: float, digits: int = 3, most: int = 9) -> Optional[int]:
    """Decimals at which a written sum is visibly right: the total shows ``digits`` significant
    digits and the terms, rounded as written, add up to the total as written (None: too small for
    decimals, write significant digits).

    "0.00 + bias 0.00 = -0.004753" reads as a wrong sum; "-0.00480 + bias 0.00005 = -0.00475" doesn't.
    """
    values = [float(t) for t in terms] + [float(total)]
    d = cell_decimals(np.asarray(values), digits=digits, most=most)
    while d is not None and d <= most:
        shown = sum(round(t, d) for t in terms)
        if round(shown, d) == round(float(total), d):
            return d
        d += 1
    return None


#: Width the worked sum under the arithmetic figure is wrapped for (the figure sits in about half a page).
ARITH_TEXT_PX = 540


def conv_arithmetic_figure(arith: dict, *, max_channels: int = 3, title: Optional[str] = None,
                           channel_names: Optional[Sequence[str]] = None, width_hint: int = 760) -> go.Figure:
    """How one output value of a convolution is computed, for a teacher in front of a room.

    One row per input channel: the input patch the kernel covers, the kernel's
    weights, and their products (each cell written out); under them the sum
    per channel, the bias, the total (the value before the activation) and the
    value after it, checked against what the model computed.
    ``arith`` is :func:`vizlib.explain.conv_arithmetic`'s result.
    """
    from plotly.subplots import make_subplots

    from vizlib.arguments import require_result

    require_result(arith, ("patch", "kernel", "products", "bias", "pre_activation", "value"),
                   "vizlib.conv_arithmetic", "arith")
    patch = np.asarray(arith["patch"], dtype=np.float32)
    kernel = np.asarray(arith["kernel"], dtype=np.float32)
    products = np.asarray(arith["products"], dtype=np.float32)
    kh, kw, cin = patch.shape
    shown = min(cin, max(1, int(max_channels)))
    if channel_names is None:
        order = str(arith.get("channel_order", "RGB" if cin == 3 else ""))
        named = {"RGB": ["red", "green", "blue"], "BGR": ["blue", "green", "red"]}.get(order)
        channel_names = (["grey channel"] if cin == 1 else named if named and cin == 3
                         else [f"input channel {c}" for c in arith.get("input_channels", range(cin))])
    col_titles = ["input patch (what the kernel covers)", "kernel weights", "patch × weights"]
    fig = make_subplots(rows=shown, cols=3, horizontal_spacing=0.06, vertical_spacing=0.08 if shown > 1 else 0.0,
                        subplot_titles=[f"{t} · {channel_names[r]}" if cin > 1 else t
                                        for r in range(shown) for t in col_titles])
    text_size = 13 if max(kh, kw) <= 3 else 10 if max(kh, kw) <= 5 else 8
    wmax = float(np.abs(kernel[:, :, :shown]).max()) or 1.0
    pmax = float(np.abs(products[:, :, :shown]).max()) or 1.0
    lo, hi = float(patch[:, :, :shown].min()), float(patch[:, :, :shown].max())
    rows_in, cols_in = arith.get("input_rows", []), arith.get("input_cols", [])
    for r in range(shown):
        for c, (z, scale, zmin, zmax, name) in enumerate([
            (patch[:, :, r], "gray", lo, hi if hi > lo else lo + 1, "input"),
            (kernel[:, :, r], "rdbu", -wmax, wmax, "weight"),
            (products[:, :, r], "rdbu", -pmax, pmax, "product"),
        ]):
            places = cell_decimals(z)  # 0.0012, not 0.00, when a whole panel is small
            text = [[_fmt(float(v), places) for v in line] for line in z]
            longest = max((len(t) for line in text for t in line), default=1)
            size = text_size if longest <= 5 else max(7, int(text_size * 5 / longest))
            hover = [[f"{name} {float(z[i, j]):.4g}<br>input row {rows_in[i] if i < len(rows_in) else '?'}, "
                      f"column {cols_in[j] if j < len(cols_in) else '?'}" for j in range(kw)] for i in range(kh)]
            fig.add_trace(go.Heatmap(
                z=z, colorscale=plotly_scale(scale), zmin=zmin, zmax=zmax, showscale=False, text=text,
                texttemplate="%{text}", textfont=dict(size=size), hovertext=hover,
                hovertemplate="%{hovertext}<extra></extra>", xgap=1, ygap=1, name=name,
            ), row=r + 1, col=c + 1)
    for i in range(1, 3 * shown + 1):
        suffix = "" if i == 1 else str(i)
        fig.update_layout({f"xaxis{suffix}": dict(visible=False, constrain="domain"),
                           f"yaxis{suffix}": dict(visible=False, autorange="reversed", scaleanchor=f"x{suffix}",
                                                  constrain="domain")})
    sums = [float(v) for v in np.asarray(arith.get("per_input_channel", products.sum(axis=(0, 1))))]
    pre, post, act = float(arith["pre_activation"]), float(arith["value"]), str(arith.get("activation", ""))
    terms = sums[:shown] + ([sum(sums[shown:])] if cin > shown else []) + [float(arith["bias"])]
    d = sum_decimals(terms, pre)
    parts = " + ".join(f"{_fmt(s, d)} ({channel_names[i] if i < len(channel_names) else i})"
                       for i, s in enumerate(sums[:shown]))
    if cin > shown:
        parts += f" + {_fmt(sum(sums[shown:]), d)} ({cin - shown} more channels)"
    line1 = f"sum of products: {parts} + bias {_fmt(float(arith['bias']), d)} = <b>{_fmt(pre, d)}</b>"
    if act in ("", "linear"):
        follow = list(arith.get("followed_by") or [])
        after = f" ({', '.join(follow)} follow as separate layers)" if follow else ""
        line2 = f"no activation inside this layer{after}: the output is <b>{post:.4g}</b>"
    else:
        line2 = f"{act}({_fmt(pre, d)}) = <b>{post:.4g}</b>"
    line2 += f"  ·  the model computed {float(arith.get('model_value', post)):.4g}"
    source = arith.get("input_source")
    if cin == 1 and channel_names and channel_names[0] == "grey channel":
        source = ((f"{source} · " if source else "")
                  + "grey channel: this model takes greyscale images, one channel of brightness")
    if title is None:
        title = (f"How one value of {arith.get('layer', 'the layer')} is made: channel {arith.get('channel')}, "
                 f"row {arith.get('row')}, column {arith.get('col')}")
    title_layout, top, _ = chart_title(title, width_hint)
    cell_px = 30 if max(kh, kw) <= 3 else 26 if max(kh, kw) <= 5 else 20
    panel = max(110, cell_px * kh)
    fig.update_annotations(font_size=11)  # the panel titles
    # Plotly never wraps an annotation: each line is wrapped for the chart (a half-width column cut them)
    from vizlib.figures import fit_title

    room = min(int(width_hint), ARITH_TEXT_PX)
    lines = [fit_title(t, room, font_px=13, max_lines=8)[0] for t in (safe_text(line1), safe_text(line2))]
    if source:
        lines.append(f"<span style='color:#666'>{fit_title(safe_text(source), room, font_px=13, max_lines=8)[0]}"
                     "</span>")
    text = "<br>".join(lines)
    n_lines = text.count("<br>") + 1
    fig.add_annotation(text=text, xref="paper", yref="paper",
                       x=0, y=0, yshift=-12, xanchor="left", yanchor="top", showarrow=False, align="left",
                       font=dict(size=13))
    fig.update_layout(
        title=title_layout, height=(top or 8) + 40 + shown * (panel + 30) + 18 * n_lines,
        margin=dict(l=6, r=6, t=(top or 8) + 18, b=30 + 18 * n_lines), plot_bgcolor="white",
        paper_bgcolor="white", dragmode=False,
    )
    return fig


# --------------------------------------------------------------------------- depth profile


def depth_profile_figure(profile: Sequence[dict], *, input_size: Optional[int] = None, title: Optional[str] = None,
                         highlight: Optional[str] = None, height: Optional[int] = None,
                         width_hint: int = 760) -> go.Figure:
    """What each layer sees, over the whole depth: one chart, four panels, layers in forward order.

    1. map size (cells on a side) shrinking and the receptive field (input pixels)
       growing, on a log scale, against the input size;
    2. channels;
    3. for this image: share of dead channels (all zero) and of zero activations;
    4. mean activation.
    ``profile`` is :func:`vizlib.depth_profile`'s list. Every point's
    ``customdata`` is its layer name, so a click can open it in the explorer.
    """
    from plotly.subplots import make_subplots

    rows = list(profile)
    if not rows:
        raise InputError("No layers to profile.")
    x = list(range(len(rows)))
    names = [r["name"] for r in rows]
    hover = [f"#{r['index']} {safe_text(r['name'])} ({r['kind']}, {r['height']}×{r['width']}×{r['channels']})"
             for r in rows]
    fig = make_subplots(rows=4, cols=1, shared_xaxes=True, vertical_spacing=0.05, row_heights=[0.34, 0.2, 0.26, 0.2],
                        subplot_titles=["Map height (cells) and receptive field (input pixels), log scale", "Channels",
                                        "For this image: dead channels and zero activations", "Mean activation"])
    common = dict(x=x, customdata=names, hovertext=hover, mode="lines+markers", marker=dict(size=4))
    rf = [r.get("receptive_field") for r in rows]
    fig.add_trace(go.Scatter(y=[r["height"] for r in rows], name="map height (cells)", line=dict(color="#4c78a8"),
                             hovertemplate="%{hovertext}<br>map height %{y} cells<extra></extra>", **common),
                  row=1, col=1)
    fig.add_trace(go.Scatter(y=rf, name="receptive field (input pixels)", line=dict(color="#f58518"),
                             hovertemplate="%{hovertext}<br>receptive field %{y} px<extra></extra>", **common),
                  row=1, col=1)
    fig.add_trace(go.Scatter(y=[r["channels"] for r in rows], name="channels", line=dict(color="#54a24b"),
                             hovertemplate="%{hovertext}<br>%{y} channels<extra></extra>", **common), row=2, col=1)
    fig.add_trace(go.Scatter(y=[r["dead_fraction"] for r in rows], name="dead channels (all zero)",
                             line=dict(color="#e45756"),
                             hovertemplate="%{hovertext}<br>%{y:.0%} of channels dead<extra></extra>", **common),
                  row=3, col=1)
    fig.add_trace(go.Scatter(y=[r.get("sparsity", 0.0) for r in rows], name="zero activations (sparsity)",
                             line=dict(color="#b279a2", dash="dot"),
                             hovertemplate="%{hovertext}<br>%{y:.0%} of activations zero<extra></extra>", **common),
                  row=3, col=1)
    fig.add_trace(go.Scatter(y=[r.get("mean", 0.0) for r in rows], name="mean activation",
                             line=dict(color="#72b7b2"),
                             hovertemplate="%{hovertext}<br>mean %{y:.3g}<extra></extra>", **common), row=4, col=1)
    if input_size:
        fig.add_trace(go.Scatter(x=[x[0], x[-1]], y=[float(input_size)] * 2, mode="lines", name="input size",
                                 line=dict(color="#888", dash="dash", width=1),
                                 hovertemplate=f"the input is {int(input_size)} px<extra></extra>"), row=1, col=1)
    if highlight is not None and highlight in names:
        fig.add_vline(x=names.index(highlight), line=dict(color=BOX_COLOUR, width=2))
    fig.update_yaxes(type="log", dtick=1, title_text="pixels / cells", row=1, col=1)
    fig.update_yaxes(title_text="channels", row=2, col=1, rangemode="tozero")
    fig.update_yaxes(title_text="share", tickformat=".0%", range=[0, 1.02], row=3, col=1)
    fig.update_yaxes(title_text="mean", row=4, col=1)
    few = len(rows) <= 40
    fig.update_xaxes(showgrid=False)
    fig.update_xaxes(title_text="layer, input → output" + ("" if few else " (forward order; hover for names)"),
                     row=4, col=1,
                     **(dict(tickmode="array", tickvals=x, ticktext=[safe_text(n) for n in names], tickangle=-60)
                        if few else {}))
    title_layout, top, _ = chart_title(title or "Depth profile: what each layer sees, from input to output",
                                         width_hint)
    fig.update_layout(
        title=title_layout, height=height or (760 + (160 if few else 0)), plot_bgcolor="white",
        margin=dict(l=10, r=10, t=(top or 8) + 24, b=(150 if few else 60) + 50), hovermode="closest",
        clickmode="event+select",
        legend=dict(orientation="h", yref="container", yanchor="bottom", y=0, x=0, xanchor="left",
                    font=dict(size=11)),
        dragmode=False,
    )
    return fig


#: (key, label, colour, panel) of the series drawn by :func:`depth_profile_png`.
_PNG_SERIES = (
    ("height", "map height (cells)", (31, 119, 180), 0),
    ("receptive_field", "receptive field (input pixels)", (255, 127, 14), 0),
    ("channels", "channels", (44, 160, 44), 1),
    ("dead_fraction", "dead channels (share)", (214, 39, 40), 2),
    ("sparsity", "zero activations (share)", (148, 103, 189), 2),
)


def depth_profile_png(profile: Sequence[dict], *, title: str = "", width: int = 960) -> bytes:
    """The depth profile as a PNG for slides: map size and receptive field (log scale), channels,
    and the shares of dead channels and zero activations, layers in forward order."""
    from PIL import ImageDraw

    from vizlib.export import slide_font, slide_png

    rows = list(profile)
    if not rows:
        raise InputError("The depth profile is empty: this model has no layers with 2D maps.")
    panel_h, left, right, top_pad, gap = 170, 70, 20, 28, 40
    height = 3 * panel_h + 2 * gap + 60
    img = Image.new("RGB", (int(width), height), "white")
    draw = ImageDraw.Draw(img)
    font, small = slide_font(14), slide_font(11)
    n = len(rows)
    xs = [left + (width - left - right) * (i / max(n - 1, 1)) for i in range(n)]
    titles = ("map height and receptive field (log scale)", "channels", "for this image: share that is zero")
    for panel in range(3):
        y0 = 10 + panel * (panel_h + gap)
        y1 = y0 + panel_h
        draw.rectangle((left, y0 + top_pad, width - right, y1), outline=(200, 200, 200))
        draw.text((left, y0 + 4), titles[panel], fill="black", font=font)
        series = [s for s in _PNG_SERIES if s[3] == panel]
        values = [[r.get(key) for r in rows] for key, *_ in series]
        finite = [float(v) for vs in values for v in vs if v is not None and np.isfinite(float(v)) and
                  (panel != 0 or float(v) > 0)]
        if not finite:
            continue
        log = panel == 0
        lo, hi = (0.0, 1.0) if panel == 2 else (min(finite), max(finite))
        if log:
            lo, hi = math.log10(lo), math.log10(hi)
        if hi - lo < 1e-9:
            lo, hi = lo - 0.5, hi + 0.5

        def y_of(v: float) -> float:
            v = math.log10(v) if log else v
            return y1 - 4 - (panel_h - top_pad - 8) * (v - lo) / (hi - lo)

        for label_v in ((10 ** lo, 10 ** hi) if log else (lo, hi)):
            draw.text((4, y_of(label_v) - 6), f"{label_v:.3g}", fill=(90, 90, 90), font=small)
        for (key, label, colour, _), vs in zip(series, values):
            pts = [(x, y_of(float(v))) for x, v in zip(xs, vs)
                   if v is not None and np.isfinite(float(v)) and (not log or float(v) > 0)]
            if len(pts) > 1:
                draw.line(pts, fill=colour, width=2)
            for x, y in pts:
                draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=colour)
        lx = width - right - 230
        for k, (key, label, colour, _) in enumerate(series):
            ly = y0 + top_pad + 6 + 16 * k
            draw.line((lx, ly + 6, lx + 18, ly + 6), fill=colour, width=3)
            draw.text((lx + 24, ly), label, fill="black", font=small)
    draw.text((left, height - 40), f"layers in forward order: {rows[0]['name']} ... {rows[-1]['name']} "
                                    f"({n} layers with 2D maps)", fill="black", font=font)
    return slide_png(img, title=title or "Depth profile: what each layer sees, from input to output")
