"""Kernels as pictures: a convolution's weights drawn as small images, trained beside untrained.

The weights are read where the model lives (the op ``graph.kernels``), so an
uploaded model in its own process shows its kernels like any other.

The scaling, stated once and used by every picture here (:func:`kernel_pixels`):
symmetric around 0, one scale for the whole layer::

    pixel = round(128 + 127 * w / max|w|)        # max over all of the layer's kernels

so 128 (mid grey) is a weight of 0, 255 is +max|w| and 1 is -max|w|; in an RGB
kernel each colour channel is scaled so (a kernel that is bright red adds red).
"""

from __future__ import annotations

import html
import math
from typing import Any, Optional

import numpy as np
import plotly.graph_objects as go

from vizlib.errors import InputError
from vizlib.ops import op

MODES = ("auto", "rgb", "grey", "grid", "norms")
MODE_TITLES = {
    "rgb": "one RGB image per output channel",
    "grey": "one grey image per output channel",
    "grid": "rows: output channels, columns: input channels",
    "norms": "kernel norms: rows output channels, columns input channels",
}
GAP_PX = 2
PAIR_GAP_PX = 28
MAX_GRID = 16  # rows and columns of the per-input-channel grid
MAX_CHANNELS = 64


@op("graph.kernels")
def _kernels_op(m: Any, batch: Any, *, layer: Optional[str] = None) -> dict:
    """The weights of one convolution layer as (kh, kw, c_in, c_out), and what its inputs are."""
    import keras
    from keras import tree

    from vizlib.explain import input_channel_order
    from vizlib.graph.structure import tensor_graph
    from vizlib.layers import first_conv, find_layer, trace

    km = m.model
    tr = trace(km)
    g = tensor_graph(km)
    name = first_conv(m).name if layer in (None, "") else str(layer)
    info = find_layer(km, name)
    layer_obj = g.op.get(id(tree.flatten(tr.outputs[name])[0]))
    if isinstance(layer_obj, keras.layers.SeparableConv2D):
        w, kind = layer_obj.depthwise_kernel, "depthwise"  # (kh, kw, c_in, multiplier): one kernel per input
    elif isinstance(layer_obj, keras.layers.DepthwiseConv2D):
        w, kind = layer_obj.kernel, "depthwise"
    elif isinstance(layer_obj, keras.layers.Conv2DTranspose):
        w, kind = np.swapaxes(np.asarray(layer_obj.kernel), 2, 3), "conv"  # stored (kh, kw, out, in)
    elif isinstance(layer_obj, keras.layers.Conv2D):
        w, kind = layer_obj.kernel, "conv"
    else:
        raise InputError(f"Layer '{name}' is a {info.kind}, not a convolution, so it has no kernels to draw. "
                         "Pick a Conv2D, DepthwiseConv2D or SeparableConv2D layer.")
    w = np.asarray(keras.ops.convert_to_numpy(w), dtype=np.float32)
    if kind == "depthwise":  # (kh, kw, c_in, mult) -> one single-input kernel per output channel
        kh, kw, cin, mult = w.shape
        w = w.reshape(kh, kw, 1, cin * mult)
    in_ids = g.inputs.get(id(tree.flatten(tr.outputs[name])[0]), [])
    image_input = bool(in_ids) and name == first_conv(m).name and w.shape[2] == m.channels
    return {"layer": name, "kind": info.kind, "weights": w, "depthwise": kind == "depthwise",
            "image_input": image_input,
            "channel_order": input_channel_order(m, w.shape[2]) if image_input else ""}


def kernels(model: Any, layer: Optional[str] = None) -> dict:
    """The kernels of ``layer`` (default: the first convolution) of any model, uploaded ones included.

    Returns ``{"layer", "kind", "weights": float32 (kh, kw, c_in, c_out), "depthwise",
    "image_input", "channel_order", "scale"}``: ``image_input`` when the layer
    reads the image itself (its input channels are the image's colours, in
    ``channel_order``: "RGB", or "BGR" for models fed 'caffe'-style); for a
    depthwise layer every output channel has one input channel (``c_in`` = 1);
    ``scale`` is max|w| over the layer, the scale of :func:`kernel_pixels`.
    """
    from vizlib.contract import as_model

    r = dict(as_model(model).run("graph.kernels", layer=layer))
    w = np.asarray(r["weights"], dtype=np.float32)
    if w.ndim != 4:
        raise InputError("The model sent kernels the dashboard can't read.")
    r["weights"] = w
    r["scale"] = float(np.max(np.abs(w))) if w.size else 0.0
    return r


def kernel_pixels(weights: np.ndarray, scale: Optional[float] = None) -> np.ndarray:
    """Weights -> uint8 pixels on one scale symmetric around 0: ``round(128 + 127 * w / scale)``.

    ``scale`` defaults to max|w| of ``weights`` (pass the layer's when drawing
    part of it). A weight of 0 is 128; all-zero weights are all 128.
    """
    w = np.asarray(weights, dtype=np.float64)
    s = float(np.max(np.abs(w))) if scale is None and w.size else float(scale or 0.0)
    if s <= 0 or not math.isfinite(s):
        return np.full(w.shape, 128, dtype=np.uint8)
    return np.clip(np.rint(128 + 127 * w / s), 1, 255).astype(np.uint8)


def resolve_mode(k: dict, mode: str = "auto") -> str:
    """Which picture ``mode`` means for these kernels (``auto``: RGB / grey images for the image's own
    channels and depthwise kernels, else the per-input-channel grid)."""
    if mode not in MODES:
        raise InputError(f"Kernel pictures: use one of {', '.join(MODES)} (not {mode!r}).")
    cin = k["weights"].shape[2]
    if mode == "auto":
        if k.get("image_input") and cin == 3:
            return "rgb"
        return "grey" if cin == 1 else "grid"
    if mode == "rgb" and cin != 3:
        raise InputError(f"Layer '{k['layer']}' has {cin} input channels; RGB pictures need 3. "
                         "Use the per-input-channel grid or the kernel norms.")
    if mode == "grey" and cin != 1:
        raise InputError(f"Layer '{k['layer']}' has {cin} input channels; use the grid or the norms.")
    return mode


def _cell_px(kh: int, kw: int, target: int) -> int:
    return max(1, int(round(target / max(kh, kw))))


def kernel_canvas(k: dict, mode: str = "auto", *, max_channels: int = MAX_CHANNELS, cell_px: int = 40,
                  colormap: str = "viridis") -> tuple[np.ndarray, dict]:
    """The kernels as one RGB uint8 mosaic, plus where each cell sits (``geo["cells"]``: (y0, x0, h, w,
    output channel)) and what the picture shows (``geo["mode"]``, ``geo["shown"]``, ``geo["scale"]``)."""
    from vizlib.figures import colormap_lut

    mode = resolve_mode(k, mode)
    w = np.asarray(k["weights"], dtype=np.float32)
    kh, kw, cin, cout = w.shape
    scale = float(np.max(np.abs(w))) if w.size else 0.0
    if mode in ("rgb", "grey"):
        n = min(cout, int(max_channels))
        px = kernel_pixels(w[..., :n], scale)  # (kh, kw, cin, n)
        if mode == "rgb" and k.get("channel_order") == "BGR":
            px = px[:, :, ::-1, :]
        cols = max(1, min(n, 16 if n > 64 else 8))
        rows = math.ceil(n / cols)
        c = _cell_px(kh, kw, cell_px)
        ch, cw = kh * c, kw * c
        canvas = np.full((rows * (ch + GAP_PX) + GAP_PX, cols * (cw + GAP_PX) + GAP_PX, 3), 255, np.uint8)
        cells = []
        for o in range(n):
            r, q = divmod(o, cols)
            y0, x0 = GAP_PX + r * (ch + GAP_PX), GAP_PX + q * (cw + GAP_PX)
            img = px[:, :, :, o] if mode == "rgb" else np.repeat(px[:, :, :1, o], 3, axis=2)
            canvas[y0:y0 + ch, x0:x0 + cw] = np.kron(img, np.ones((c, c, 1), np.uint8))
            cells.append((y0, x0, ch, cw, o))
        return canvas, {"mode": mode, "cells": cells, "shown": (n, cin), "scale": scale, "cols": cols}
    n_out, n_in = min(cout, MAX_GRID), min(cin, MAX_GRID)
    if mode == "grid":
        c = _cell_px(kh, kw, min(cell_px, 24))
        ch, cw = kh * c, kw * c
        px = kernel_pixels(w[:, :, :n_in, :n_out], scale)
        canvas = np.full((n_out * (ch + GAP_PX) + GAP_PX, n_in * (cw + GAP_PX) + GAP_PX, 3), 255, np.uint8)
        cells = []
        for o in range(n_out):
            for i in range(n_in):
                y0, x0 = GAP_PX + o * (ch + GAP_PX), GAP_PX + i * (cw + GAP_PX)
                canvas[y0:y0 + ch, x0:x0 + cw] = np.kron(px[:, :, i, o], np.ones((c, c), np.uint8))[..., None]
                cells.append((y0, x0, ch, cw, o))
        return canvas, {"mode": mode, "cells": cells, "shown": (n_out, n_in), "scale": scale, "cols": n_in}
    norms = np.sqrt((w.astype(np.float64) ** 2).sum(axis=(0, 1))).T  # (cout, cin)
    n_out, n_in = min(cout, 64), min(cin, 64)
    norms = norms[:n_out, :n_in]
    top = float(norms.max()) if norms.size else 0.0
    idx = np.zeros_like(norms, dtype=np.uint8) if top <= 0 else np.clip(np.rint(norms / top * 255), 0, 255).astype(
        np.uint8)
    c = max(4, min(16, 640 // max(n_in, 1)))
    canvas = np.kron(colormap_lut(colormap)[idx], np.ones((c, c, 1), np.uint8))
    cells = [(o * c, 0, c, n_in * c, o) for o in range(n_out)]
    return canvas, {"mode": mode, "cells": cells, "shown": (n_out, n_in), "scale": top, "cols": n_in,
                    "colormap": colormap}


def kernel_caption(k: dict, mode: str) -> str:
    """What the picture shows and how weights map to pixels, in one sentence for a caption."""
    w = k["weights"]
    kh, kw, cin, cout = w.shape
    if mode == "norms":
        return (f"{k['layer']}: the L2 norm of each {kh}x{kw} kernel slice, one row per output channel "
                f"and one column per input channel (up to 64 each); bright = large weights.")
    lead = {
        "rgb": f"each {kh}x{kw} kernel as an RGB image of its weights on the red, green and blue input"
               + (" (this model reads BGR; shown as RGB)" if k.get("channel_order") == "BGR" else ""),
        "grey": f"each {kh}x{kw} kernel as a grey image" + (" (depthwise: one input channel each)"
                                                           if k.get("depthwise") else ""),
        "grid": f"one {kh}x{kw} kernel slice per cell, rows = output channels, columns = input channels "
                f"(the first {min(cout, MAX_GRID)} x {min(cin, MAX_GRID)})",
    }[mode]
    return (f"{k['layer']}: {lead}. One scale for the whole layer, symmetric around 0: "
            "pixel = 128 + 127 · w / max|w|, so mid grey is 0, bright is positive, dark is negative.")


def kernel_figure(k: dict, *, untrained: Optional[dict] = None, mode: str = "auto",
                  max_channels: int = MAX_CHANNELS, cell_px: int = 40, title: Optional[str] = None,
                  colormap: str = "viridis") -> go.Figure:
    """A layer's kernels as pictures (:func:`kernels` gives ``k``), the untrained twin's beside them.

    One mosaic per model, each on its own layer's scale (see :func:`kernel_pixels`),
    labelled with max|w|. Hover names the output channel; a click selects a point
    whose ``customdata`` is the output channel.
    """
    from vizlib.arguments import require_result

    for name, value in (("k", k), ("untrained", untrained)):
        if value is not None or name == "k":
            require_result(value, ("layer", "weights"), "vizlib.kernels", name)
    parts = [("trained" if untrained is not None else "", k)] + ([("untrained", untrained)] if untrained else [])
    canvases = []
    for label, kk in parts:
        canvas, geo = kernel_canvas(kk, mode, max_channels=max_channels, cell_px=cell_px, colormap=colormap)
        canvases.append((label, kk, canvas, geo))
    height = max(c.shape[0] for _, _, c, _ in canvases)
    head = 22
    width = sum(c.shape[1] for _, _, c, _ in canvases) + PAIR_GAP_PX * (len(canvases) - 1)
    full = np.full((height + head, width, 3), 255, np.uint8)
    xs, ys, data, hover, notes = [], [], [], [], []
    x_at = 0
    for label, kk, canvas, geo in canvases:
        full[head:head + canvas.shape[0], x_at:x_at + canvas.shape[1]] = canvas
        what = "max norm" if geo["mode"] == "norms" else "max|w|"
        notes.append(dict(x=x_at, y=0, xanchor="left", yanchor="top", showarrow=False, xref="x", yref="y",
                          text=f"<b>{html.escape(label)}</b>  {what} = {geo['scale']:.3g}" if label
                          else f"{what} = {geo['scale']:.3g}", font=dict(size=12)))
        seen = set()
        for y0, x0, ch, cw, o in geo["cells"]:
            if geo["mode"] in ("grid", "norms") and o in seen:
                continue
            seen.add(o)
            span = cw if geo["mode"] not in ("grid",) else geo["cols"] * (cw + GAP_PX)
            xs.append(x_at + x0 + span / 2)
            ys.append(head + y0 + ch / 2)
            data.append(int(o))
            hover.append(f"output channel {o}" + (f" · {label}" if label else "") + "<br>click: open its map")
        x_at += canvas.shape[1] + PAIR_GAP_PX
    from vizlib.figures import png_data_uri

    fig = go.Figure()
    fig.add_trace(go.Image(source=png_data_uri(full), hoverinfo="skip", name="kernels"))
    first_geo = canvases[0][3]
    size = max(8, min(first_geo["cells"][0][2], first_geo["cells"][0][3]) * 0.8) if first_geo["cells"] else 8
    fig.add_trace(go.Scatter(
        x=xs, y=ys, mode="markers", customdata=data, hovertext=hover, name="channels", showlegend=False,
        hovertemplate="%{hovertext}<extra></extra>", marker=dict(size=size, color="rgba(0,0,0,0)", symbol="square"),
        selected=dict(marker=dict(opacity=0)), unselected=dict(marker=dict(opacity=0)),
    ))
    top = 36 if title else 6
    fig.update_layout(
        title=dict(text=html.escape(title), x=0, xanchor="left", font=dict(size=14)) if title else None,
        annotations=notes, height=int(min(900, height + head + top + 6)), margin=dict(l=0, r=0, t=top, b=0),
        hovermode="closest", dragmode=False, plot_bgcolor="white", paper_bgcolor="white", clickmode="event+select",
        xaxis=dict(visible=False, range=[0, width], constrain="domain", constraintoward="left"),
        yaxis=dict(visible=False, range=[height + head, 0], scaleanchor="x", constrain="domain",
                   constraintoward="top"),
    )
    return fig


def kernel_png(k: dict, *, untrained: Optional[dict] = None, mode: str = "auto", title: str = "",
               max_channels: int = MAX_CHANNELS, colormap: str = "viridis") -> bytes:
    """The kernel pictures as a PNG for slides (trained left, untrained right), titled with the caption."""
    from vizlib.export import slide_png

    from vizlib.arguments import require_result

    for name, value in (("k", k), ("untrained", untrained)):
        if value is not None or name == "k":
            require_result(value, ("layer", "weights"), "vizlib.kernels", name)
    mode = resolve_mode(k, mode)
    pics = [kernel_canvas(kk, mode, max_channels=max_channels, colormap=colormap)[0]
            for kk in ([k] + ([untrained] if untrained else []))]
    h = max(p.shape[0] for p in pics)
    gap = np.full((h, PAIR_GAP_PX, 3), 255, np.uint8)
    row = []
    for i, p in enumerate(pics):
        pad = np.full((h - p.shape[0], p.shape[1], 3), 255, np.uint8)
        row += ([gap] if i else []) + [np.concatenate([p, pad], axis=0)]
    pair = " Left: trained; right: untrained (random weights)." if untrained else ""
    text = (title + ". " if title else "") + kernel_caption(k, mode) + pair
    return slide_png(np.concatenate(row, axis=1), title=text, min_width=640)
