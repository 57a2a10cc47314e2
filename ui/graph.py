"""Architecture: the model as a graph of layers, and its kernels as pictures (trained beside untrained)."""

from __future__ import annotations

from functools import partial
from typing import Any, Optional

import numpy as np
import streamlit as st

from vizlib import graph as vg
from vizlib.contract import VizModel
from vizlib.errors import InputError
from vizlib.graph.kernels import resolve_mode
from ui.caches import CHART_CONFIG, compute, get_untrained_twin
from ui.clicks import selected_points
from ui.explain import profiled
from ui.state import fragment

#: Collapse repeated blocks by default from this many layers on (DenseNet121 has ~430).
COLLAPSE_FROM = 120
KERNEL_MODES = {"auto": "Pictures", "grid": "Per input channel", "norms": "Kernel norms"}
GRAPH_CHART = "graph-chart"
KERNEL_CHART = "kernel-chart"
#: Set by a click that opens another view: the fragment it happened in reruns the whole page.
WHOLE_PAGE = "_graph_whole_page"


# --------------------------------------------------------------------------- cached computations


# Graphs, layouts and figures are immutable once made: cached as objects (st.cache_resource), not
# pickled copies (unpickling a Plotly figure re-validates it: ~0.1-0.5 s, benchmarks/README.md).
@st.cache_resource(max_entries=8, show_spinner="Reading the model's layers and connections…")
def graph_of(model_key: str, _m: VizModel) -> vg.LayerGraph:
    return vg.layer_graph(_m)


@st.cache_resource(max_entries=32, show_spinner="Laying out the graph…")
def laid_out(model_key: str, nested: bool, detail: str, _m: VizModel) -> tuple[vg.LayerGraph, vg.GraphLayout]:
    """The (collapsed) graph and its layered layout, computed once per model and collapse setting."""
    graph = vg.collapse(graph_of(model_key, _m), nested=nested, blocks=detail in ("blocks", "stages"),
                        stages=detail == "stages")
    return graph, vg.graph_layout(graph)


@st.cache_resource(max_entries=32, show_spinner=False)
def figure_of(model_key: str, nested: bool, detail: str, color_by: str, image_key: str, highlight: str,
              _m: VizModel, _image: Any):
    graph, layout = laid_out(model_key, nested, detail, _m)
    profile = profiled(model_key, image_key, _m, _image) if vg.COLOR_BY[color_by] else None
    return vg.graph_figure(graph, layout=layout, color_by=color_by, profile=profile, highlight=highlight or None,
                           title=f"{_m.label}: {len(graph.nodes)} boxes, data flows down")


@st.cache_data(max_entries=16, show_spinner="Reading the kernels…")
def kernels_of(model_key: str, layer: str, _m: VizModel) -> dict:
    return vg.kernels(_m, layer)


@st.cache_resource(max_entries=16, show_spinner=False)
def kernel_figure_of(model_key: str, twin_key: str, layer: str, mode: str, _m: VizModel, _twin: Optional[VizModel]):
    """The kernel pictures (trained beside untrained) as one figure, made once per model, layer and mode."""
    k = kernels_of(model_key, layer, _m)
    u = kernels_of(twin_key, layer, _twin) if _twin is not None else None
    return k, u, vg.kernel_figure(k, untrained=u, mode=mode)


# --------------------------------------------------------------------------- clicks


def on_graph_click() -> None:
    """A click on a box opens its layer in the Layer explorer (as the depth profile's click does)."""
    event = st.session_state.get(GRAPH_CHART)
    points = selected_points(event)
    for point in points:
        data = point.get("customdata") if isinstance(point, dict) else None
        if isinstance(data, (list, tuple)) and len(data) == 2:
            opens, name = str(data[0] or ""), str(data[1])
            if opens:
                st.session_state["layer"] = opens
                st.session_state["view"] = "explore"
            else:
                st.session_state.setdefault("_notices", []).append(
                    f"{name} has no 2D maps to open; click a convolution, pooling or block box.")
            st.session_state[WHOLE_PAGE] = True  # the fragment hands this click to the whole page
            return


def on_kernel_click(layer: str, first: str) -> None:
    """A click on a kernel opens its output channel's activation map."""
    event = st.session_state.get(KERNEL_CHART)
    points = selected_points(event)
    for point in points:
        data = point.get("customdata") if isinstance(point, dict) else None
        if data is None:
            continue
        channel = int(data[0] if isinstance(data, (list, tuple)) else data)
        st.session_state["channel"] = channel
        st.session_state.pop("_auto_channel", None)  # this channel was chosen: the compare view keeps it
        if layer == first:  # the first conv layer is inspected in the side-by-side view
            st.session_state["inspect"] = layer
            st.session_state["view"] = "compare"
        else:
            st.session_state["layer"] = layer
            st.session_state["view"] = "explore"
        st.session_state[WHOLE_PAGE] = True
        return


# --------------------------------------------------------------------------- the view


#: How much of the graph is drawn: every layer, each block as one box, or each stage (a run of alike blocks).
DETAIL = {"layers": "Every layer", "blocks": "Blocks", "stages": "Stages"}


def _controls(m: VizModel, g: vg.LayerGraph) -> tuple[str, str, str, bool]:
    c1, c2, c3, c4 = st.columns([3, 2, 3, 2], vertical_alignment="bottom")
    names = [n.name for n in g.nodes] + [b for b, _ in g.blocks] + [s for s, _ in g.stages]
    found = c1.selectbox("Find a layer", names, index=None, placeholder="Type a layer name…",
                         key="graph-search", help="Outlines the layer (or the block holding it) and moves to it.")
    color_by = c2.selectbox("Colour boxes by", list(vg.COLOR_BY), key="graph-color",
                            help="Type: what kind of layer. The others are this image's depth profile: "
                                 "map height, receptive field, share of dead channels, mean activation.")
    options = ["layers"] + (["blocks"] if g.blocks else []) + (["stages"] if g.stages else [])
    default = options[-1] if len(g.nodes) >= COLLAPSE_FROM else "layers"
    detail = c3.segmented_control(
        "Draw", options, format_func=DETAIL.get, default=default, key="graph-detail", required=True,
        disabled=len(options) == 1,
        help=f"Blocks ({len(g.blocks)} found): stretches that branch and merge again (residual units, dense "
             f"layers, Inception modules), one box each. Stages ({len(g.stages)}): runs of alike blocks, one box "
             "each (ResNet's and DenseNet's stages)." if g.blocks else "This model has no blocks that branch.")
    nested = c4.toggle("Collapse nested", value=False, key="graph-nested", disabled=not g.containers,
                       help="Draw each nested model (a model inside the model) as one box." if g.containers
                       else "This model has no nested models.")
    return found or "", color_by, detail if detail in options else "layers", bool(nested and g.containers)


def _whole_page_if_asked() -> None:
    """A click in a fragment that opened another view (or left a notice) reruns the whole page."""
    if st.session_state.pop(WHOLE_PAGE, False):
        st.rerun(scope="app")


def _kernels_section(m: VizModel) -> None:
    _whole_page_if_asked()
    convs = [i.name for i in m.layers if i.is_conv]
    if not convs:
        st.info("This model has no convolution layers, so there are no kernels to draw.")
        return
    st.subheader("Kernels as pictures")
    c1, c2 = st.columns([3, 2], vertical_alignment="bottom")
    layer = c1.selectbox("Kernels of", convs, key="graph-kernel-layer",
                         help="The first convolution's kernels look at the image's pixels directly.")
    mode = c2.segmented_control("Draw", list(KERNEL_MODES), format_func=KERNEL_MODES.get, default="auto",
                                key="graph-kernel-mode", required=True)
    twin = None if m.untrained else get_untrained_twin(m.key, m)
    k, u, fig = kernel_figure_of(m.key, twin.key if twin is not None else "", layer, mode, m, twin)
    shown = resolve_mode(k, mode)
    st.plotly_chart(fig, key=KERNEL_CHART, config=CHART_CONFIG, on_select=partial(on_kernel_click, layer, convs[0]),
                    selection_mode="points")
    pair = (" Left: the trained weights; right: the same architecture with random weights (seed 0). Trained "
            "first-layer kernels are smooth edge and colour detectors; random ones are noise."
            if u is not None else " This model is untrained: choose ImageNet weights to see learned kernels.")
    st.caption(vg.kernel_caption(k, shown) + pair + " Click a kernel to open its channel's activation map.")
    st.download_button("Kernels (PNG)", key="dl-graph-kernels", mime="image/png", on_click="ignore",
                       file_name=f"{m.key.split(':')[0]}_{layer.replace('/', '_')}_kernels.png",
                       data=lambda: vg.kernel_png(k, untrained=u, mode=mode, title=m.label))


def view_graph(m: VizModel, image_key: str, image_name: str, image: Any, view_img) -> Optional[np.ndarray]:
    """The Architecture view: the layer graph to explore, and the kernels as pictures.

    Each part is a fragment: a change of its controls (search, colour, detail, kernel layer) repaints that
    part only, not the page around it (the predictions, the sidebar); a click that opens another view
    reruns the whole page.
    """
    _, output = compute(m.key, image_key, (), m, image)
    fragment(_graph_section)(m, image_key, image)
    fragment(_kernels_section)(m)
    return output


def _graph_section(m: VizModel, image_key: str, image: Any) -> None:
    _whole_page_if_asked()
    g = graph_of(m.key, m)
    found, color_by, detail, nested = _controls(m, g)
    try:
        fig = figure_of(m.key, nested, detail, color_by, image_key if vg.COLOR_BY[color_by] else "", found, m,
                        image)
    except InputError as exc:
        st.error(str(exc))
        return
    st.plotly_chart(fig, key=GRAPH_CHART, config={**CHART_CONFIG, "scrollZoom": True}, on_select=on_graph_click,
                    selection_mode="points")
    st.caption("Each box is a layer: its type and output shape (height × width × channels). Arrows carry the "
               "data down; where they fork and meet again the model branches (a residual addition, a "
               "concatenation). Drag to move, scroll to zoom, double-click to see everything; click a box "
               "to open that layer in the Layer explorer.")
    graph, layout = laid_out(m.key, nested, detail, m)
    stem = f"{m.key.split(':')[0]}_architecture".replace("/", "_")
    profile = profiled(m.key, image_key, m, image) if vg.COLOR_BY[color_by] else None
    opts = dict(layout=layout, color_by=color_by, profile=profile, title=m.label)
    d1, d2, _ = st.columns([1, 1, 4])
    d1.download_button("Graph (SVG)", key="dl-graph-svg", mime="image/svg+xml", on_click="ignore",
                       file_name=f"{stem}.svg", data=lambda: vg.graph_svg(graph, **opts).encode())
    d2.download_button("Graph (PNG)", key="dl-graph-png", mime="image/png", on_click="ignore",
                       file_name=f"{stem}.png", data=lambda: vg.graph_png(graph, **opts))
