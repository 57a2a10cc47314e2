"""Why this prediction? Grad-CAM, channel contributions, trained vs untrained, receptive fields, depth profile."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import streamlit as st

from vizlib import explain
from vizlib import explain_figures as xf
from vizlib.attribution.faithfulness import rank_correlation
from vizlib.contract import VizModel
from vizlib.errors import InputError
from vizlib.export import grid_png
from vizlib.layers import find_layer, first_conv, spatial_layers
from vizlib.links import ViewState
from ui.attribution import scoreboard as attribution_scoreboard
from ui.caches import CHART_CONFIG, compute, get_untrained_twin
from ui.clicks import selected_points
from ui.state import check_cell, check_class, choice, link_has, number, put
from ui.widgets import class_labels, clamp_channel, share_and_export, show_detail, show_grid

# --------------------------------------------------------------------------- cached computations


@st.cache_data(max_entries=48, show_spinner="Computing where the model looked (one forward and one backward pass)…")
def explained(model_key: str, image_key: str, cls: int, layer: str, _m: VizModel, _image: Any):
    """Grad-CAM / LayerCAM, contributions and probabilities for one class (-1: the top one)."""
    return explain.explain_class(_m, _image, None if cls < 0 else cls, layer or None)


@st.cache_data(max_entries=16, show_spinner="Measuring every layer (the first time for a model takes a few seconds)…")
def profiled(model_key: str, image_key: str, _m: VizModel, _image: Any) -> list[dict]:
    return explain.depth_profile(_m, _image)


@st.cache_data(max_entries=256, show_spinner=False)
def field_of(model_key: str, layer: str, row: int, col: int, _m: VizModel) -> dict:
    return explain.receptive_field_info(_m, layer, row, col)


@st.cache_data(max_entries=64, show_spinner=False)
def arithmetic(model_key: str, image_key: str, layer: str, row: int, col: int, channel: int,
               _m: VizModel, _image: Any) -> dict:
    return explain.conv_arithmetic(_m, _image, row, col, channel, layer=layer)


def contributions_for(m: VizModel, image_key: str, image: Any, layer: str, cls: int) -> Optional[np.ndarray]:
    """Per-channel contributions of ``layer`` to the class ``cls`` (-1: the top one; for 'Most contributing N')."""
    try:
        return explained(m.key, image_key, int(cls), layer, m, image).contributions
    except InputError:
        return None


# --------------------------------------------------------------------------- what one cell sees


def _set_cell(info_name: str) -> None:
    st.session_state["cell"] = (f"{int(st.session_state[f'cell-row-{info_name}'])},"
                                f"{int(st.session_state[f'cell-col-{info_name}'])}")


def cell_panel(m: VizModel, info, image_key: str, image: Any, view_img, channel: int, cell: str) -> None:
    """The input region one cell (``cell``: "row,col" or "") of the inspected map sees; for the first conv
    layer, the arithmetic too."""
    h, w = info.output_shape[0], info.output_shape[1]
    cell = check_cell(cell, (h, w))
    r0, c0 = (int(v) for v in cell.split(",")) if cell else (h // 2, w // 2)
    r0, c0 = min(r0, h - 1), min(c0, w - 1)
    for key, value in ((f"cell-row-{info.name}", r0), (f"cell-col-{info.name}", c0)):
        if cell and st.session_state.get(key) != value:
            st.session_state[key] = value
    c1, c2 = st.columns([1, 1])
    # number() keeps a value left by another model's layer of the same name inside this map.
    row = number(c1, "Row", 0, h - 1, key=f"cell-row-{info.name}", default=r0, on_change=_set_cell,
                 args=(info.name,))
    col = number(c2, "Column", 0, w - 1, key=f"cell-col-{info.name}", default=c0, on_change=_set_cell,
                 args=(info.name,))
    rf = field_of(m.key, info.name, int(row), int(col), m)
    left, right = st.columns([1, 2])
    with left:
        base = explain.model_view_array(m, image)
        st.plotly_chart(xf.receptive_field_figure(base, rf["box"], layer=info.name, row=int(row), col=int(col),
                                                  size=rf.get("size"), width_hint=260),
                        key=f"rf-{info.name}", config=CHART_CONFIG)
    with right:
        top, left_px, bottom, right_px = rf["box"]
        st.markdown(f"Cell ({row}, {col}) of **{info.name}** sees input rows {top}–{bottom - 1} and columns "
                    f"{left_px}–{right_px - 1} ({bottom - top}×{right_px - left_px} pixels"
                    + (f"; its full receptive field is {rf['size']} pixels on a side, the rest is padding"
                       if rf.get("size") and rf["size"] > max(bottom - top, right_px - left_px) else "")
                    + ").")
        if rf.get("global_context"):
            st.caption("This layer also mixes in global context (e.g. squeeze-and-excitation), which sees the "
                       "whole image; the box shows the convolutional path.")
        if info.name == first_conv(m).name and info.kind == "Conv2D":
            try:
                arith = arithmetic(m.key, image_key, info.name, int(row), int(col), int(channel), m, image)
            except InputError as exc:
                st.caption(str(exc))
            else:
                st.plotly_chart(xf.conv_arithmetic_figure(arith, title=f"How channel {channel} at ({row}, {col}) "
                                                                       "is computed"),
                                key=f"arith-{info.name}", config=CHART_CONFIG)


# --------------------------------------------------------------------------- the "why" view


def class_options(m: VizModel, probs: np.ndarray, top: Optional[int] = None) -> tuple[list[int], Any]:
    """The picker's classes, most likely first, after -1 ("the top prediction").

    ``top`` is the class the explanation takes as the top prediction: with near-equal
    scores (an untrained model) the label must name that one, not another of the ties.
    """
    names = m.class_names if m.class_names and len(m.class_names) == len(probs) else None
    order = [int(i) for i in np.argsort(-probs, kind="stable")]
    top = order[0] if top is None else int(top)

    def label(i: int) -> str:
        if i < 0:
            return f"the top prediction: {names[top] if names else f'class {top}'}"
        return f"{names[i] if names else f'class {i}'} ({probs[i]:.1%})"

    return [-1] + order, label


def on_contribution_click() -> None:
    event = st.session_state.get("contributions")
    points = selected_points(event)
    for point in points:
        data = point.get("customdata") if isinstance(point, dict) else None
        if data is not None:
            st.session_state["channel"] = int(data[0] if isinstance(data, (list, tuple)) else data)
            return


def view_why(m: VizModel, state: ViewState, image_key: str, image_name: str, image: Any,
             view_img) -> Optional[np.ndarray]:
    if not m.is_classifier:
        st.info("Grad-CAM explains a class score: this model's output is not a single vector of class scores.")
        return None
    spatial = spatial_layers(m)
    names = [i.name for i in spatial]
    top = explained(m.key, image_key, -1, "", m, image)
    probs = top.probabilities
    check_class(m, len(probs))  # checked against this model's classes (the page checked it by name already)
    options, label = class_options(m, probs, top.class_index)
    # Two controls a row: the class picker wide enough that its help opens over the page, not past
    # its left edge (at a quarter of the width it was cut off there).
    c1, c2 = st.columns(2)
    c3, c4 = st.columns(2)
    # The labels carry this image's probabilities: choice() re-sends the value every run, so the
    # browser never keeps (and sends back) a label of another model or image.
    cls = choice(c1, "Explain the class", options, key="cls", format_func=label, default=-1,
                 help="Or click a bar of the top-5. Type to search.")
    final = top.final_layer
    camlayer = choice(c2, "Map at layer", ["", *names], key="camlayer", default="",
                      format_func=lambda n: f"final feature map: {final} (Grad-CAM)" if n == "" else
                      (f"{n} (Grad-CAM)" if n == final else f"{n} (LayerCAM)"),
                      help="Grad-CAM weighs each channel of the final feature map by its mean gradient. At "
                           "earlier layers LayerCAM (each position weighted by its own positive gradient) stays "
                           "meaningful.")
    opacity = int(c3.slider("Opacity", 0, 100, key="opacity", persist_state="session",
                            help="How strongly the map covers the image.")) / 100
    twin_on = c4.toggle("vs untrained", key="twin_on", value=state.twin == "on",
                        help="The same architecture with random weights (seed 0): if the two maps look alike, the "
                             "map shows the architecture or the image's edges, not what training taught.")
    twin = "on" if twin_on else "off"
    put(twin=twin)
    ex = explained(m.key, image_key, int(cls), camlayer, m, image)
    st.session_state["_explained"] = ex.class_index  # the top-5 chart highlights the class explained (ui/page.py)
    base = explain.model_view_array(m, image)
    left, right = st.columns([3, 2])
    with left:
        if twin == "on":
            twin_model = get_untrained_twin(m.key, m)
            tex = explained(twin_model.key, image_key, ex.class_index, camlayer, twin_model, image)
            fig = xf.gradcam_pair(base, [ex.cam, tex.cam], ["trained weights", "untrained (random) weights"],
                                  layer_cams=[ex.layer_cam, tex.layer_cam], opacity=opacity,
                                  method=ex.method_title, layer=ex.layer,
                                  title=f"Where the model looked for <b>{ex.class_name}</b>")
            rho = rank_correlation(ex.cam, tex.cam)
            st.plotly_chart(fig, key="cam-pair", config=CHART_CONFIG)
            st.caption(f"Rank correlation between the two maps: {rho:.2f} (near 1: the map doesn't depend on "
                       "training; near 0: it does).")
        else:
            fig = xf.gradcam_overlay(base, ex.cam, layer_cam=ex.layer_cam, opacity=opacity, class_name=ex.class_name,
                                     method=ex.method_title, layer=ex.layer)
            st.plotly_chart(fig, key="cam", config=CHART_CONFIG)
        st.caption(ex.description + (" The map is all zero: nothing at this layer speaks *for* this class."
                                     if ex.empty else ""))
    info = find_layer(m, ex.layer)
    asked = (m.key, image_key, ex.class_index, ex.layer)
    channel = state.channel
    last_asked = st.session_state.get("_why_asked")
    if last_asked != asked:  # a new question: inspect the channel that carried it most
        if last_asked is not None or not link_has("channel"):
            channel = int(np.argmax(ex.contributions))
            put(channel=channel)
        st.session_state["_why_asked"] = asked
    channel = clamp_channel(channel, info.channels)
    with right:
        ranked = ex.ranked_channels()
        st.plotly_chart(xf.contributions_bar(ranked, class_name=ex.class_name, layer=ex.layer,
                                             highlight=channel, width_hint=220),  # 2/5 of a 1024 px page
                        key="contributions", config=CHART_CONFIG, on_select=on_contribution_click,
                        selection_mode="points")
        st.caption(f"Which channels of {ex.layer} carried **{ex.class_name}** ({ex.probability:.1%}): mean of "
                   "gradient × activation. Click a bar to inspect that channel below.")
    # The Grad-CAM pass already holds the layer's maps and the prediction: no second forward pass.
    maps, output = ex.activations, ex.output[None]
    st.subheader(f"Channels of {ex.layer}, most contributing first")
    g, d = st.columns([3, 2])
    with g:
        shown = show_grid(state, info, maps, "", "grid-why", "_why_layer", channel, width_hint=460,
                          contributions=ex.contributions, mode="contrib", labels=class_labels(m, info))
    with d:
        channel = number(st, "Channel", 0, info.channels - 1, key="channel")
        show_detail(state, m, info, maps, channel, view_img, stacked=True)
    cmap, scale = state.cmap, state.scale
    arrays = {"cam": ex.cam[None], "layer_cam": ex.layer_cam[None], "contributions": ex.contributions[None],
              ex.layer: maps[None]}
    arrays.update(attribution_scoreboard(m, image_key, image, ex.class_index, ex.class_name, base, opacity,
                                         method=state.method))
    share_and_export(m, "why", image_key, image_name, image, arrays, {ex.layer: shown},
                     {"grad-cam": lambda: xf.gradcam_png(base, ex.cam, opacity=opacity, class_name=ex.class_name,
                                                         method=ex.method_title, layer=ex.layer),
                      "channels": lambda: grid_png(maps, shown, colormap=cmap, scale=scale,
                                                   title=f"{m.label} · {info.describe()}")},
                     arrays_label="Maps")
    return output


# --------------------------------------------------------------------------- the depth profile


def on_depth_click() -> None:
    event = st.session_state.get("depth-profile")
    points = selected_points(event)
    for point in points:
        data = point.get("customdata") if isinstance(point, dict) else None
        if data:
            st.session_state["layer"] = str(data[0] if isinstance(data, (list, tuple)) else data)
            st.session_state["view"] = "explore"
            return


def view_depth(m: VizModel, image_key: str, image_name: str, image: Any, view_img) -> Optional[np.ndarray]:
    _, output = compute(m.key, image_key, (), m, image)
    profile = profiled(m.key, image_key, m, image)
    fig = xf.depth_profile_figure(profile, input_size=max(m.input_size),
                                  title=f"What each layer of {m.label} sees, input to output")
    st.plotly_chart(fig, key="depth-profile", config=CHART_CONFIG, on_select=on_depth_click,
                    selection_mode="points")
    st.caption("Left to right: every layer with 2D maps, in forward order. Maps shrink while each cell's "
               "receptive field grows; dead channels (all zero for this image) and sparsity show how selective "
               "each layer is. Click a layer to open it in the Layer explorer.")
    arrays = {k: np.asarray([[row.get(k) if row.get(k) is not None else np.nan for row in profile]],
                            dtype=np.float64)
              for k in ("height", "width", "channels", "receptive_field", "dead_fraction", "mean", "sparsity")}
    title = f"{m.label}: what each layer sees ({image_name})"
    share_and_export(m, "depth", image_key, image_name, image, arrays, {},
                     {"depth profile": lambda: xf.depth_profile_png(profile, title=title)}, arrays_label="Profile")
    return output
