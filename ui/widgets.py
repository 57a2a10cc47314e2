"""Pieces every view uses: a channel grid, a channel's detail, predictions, the share panel."""

from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np
import streamlit as st

from vizlib.contract import VizModel
from vizlib.export import bundle, manifest, manifest_json, npz_bytes
from vizlib.extract import channel_stats, pick_channels, ranked_classes
from vizlib.figures import MAX_CLICKABLE_CELLS, channel_detail, channel_grid, prediction_bars
from vizlib.links import ViewState, as_dict
from vizlib.models import BUNDLED_NAME
from ui.caches import CHART_CONFIG
from ui.clicks import selected_points
from ui.state import current_state, image_sha256, on_screen, put, share_url


def class_labels(m: VizModel, info) -> Optional[list[str]]:
    """Class names as cell labels when a layer has one channel per class (the bundled model's last conv)."""
    bundled = m.key.split(":")[0] == BUNDLED_NAME
    return m.class_names if (bundled and m.class_names and info.channels == len(m.class_names)) else None


def grid_title(info, role: str) -> str:
    shape = "×".join(str(d) for d in info.output_shape)
    return f"{role}<b>{info.name}</b> · layer #{info.index} · {info.kind} · {shape}"


def on_grid_click(chart_key: str, layer_key: str, layer: str, channel_key: str = "channel") -> None:
    """A click on a grid cell (or a bar) picks that layer and channel."""
    event = st.session_state.get(chart_key)
    points = selected_points(event)
    for point in points:
        data = point.get("customdata") if isinstance(point, dict) else None
        if data is not None:
            st.session_state[layer_key] = layer
            st.session_state[channel_key] = int(data[0] if isinstance(data, (list, tuple)) else data)
            st.session_state["cell"] = ""
            return


def grid_channels(maps: np.ndarray, n: int, mode: str, contributions: Optional[np.ndarray] = None) -> list[int]:
    """The ``n`` channels the grid shows, by the sidebar's ``mode`` (contributions fall back to activity)."""
    if mode == "contrib" and contributions is not None and len(contributions) == maps.shape[-1]:
        n = max(1, min(int(n), maps.shape[-1]))
        return [int(i) for i in np.argsort(-np.asarray(contributions), kind="stable")[:n]]
    return pick_channels(maps, n, "top" if mode == "contrib" else mode)


def show_grid(state: ViewState, info, maps: np.ndarray, role: str, key: str, layer_key: str,
              selected: Optional[int], labels: Optional[list[str]] = None, width_hint: int = 380,
              contributions: Optional[np.ndarray] = None, mode: Optional[str] = None) -> list[int]:
    """A grid of ``state.n`` channels of ``maps`` (by ``mode``, else ``state.mode``) in ``state``'s colours."""
    mode = mode or state.mode
    chosen = grid_channels(maps, state.n, mode, contributions)
    fig = channel_grid(maps, chosen, colormap=state.cmap, scale=state.scale, title=grid_title(info, role),
                       highlight=selected, labels=labels, width_hint=width_hint)
    st.plotly_chart(fig, key=key, on_select=lambda: on_grid_click(key, layer_key, info.name),
                    selection_mode="points", config=CHART_CONFIG)
    if mode == "contrib" and contributions is not None:
        shown = "most contributing to the class explained"
    elif mode == "contrib":
        shown = "most active: contributions need a classifier"
    else:
        shown = "first" if mode == "first" else "most active"
    st.caption(f"{len(chosen)} of {info.channels} channels ({shown}), "
               f"{'one shared colour scale' if state.scale == 'shared' else 'each on its own scale'}. "
               "Hover for values; click a map (or type its number under *Channel*) to inspect it.")
    return chosen


def flat_message(maps: np.ndarray, channel: int) -> Optional[str]:
    """What to say when the inspected channel (or the whole layer) is flat for this image."""
    one = maps[:, :, channel]
    flat = float(np.ptp(one)) <= 1e-6 * max(1.0, float(np.abs(one).max()))
    if not flat:
        return None
    spread = np.ptp(maps.reshape(-1, maps.shape[-1]), axis=0)
    live = spread > 1e-6 * max(1.0, float(np.abs(maps).max()))
    if not live.any():
        return ("Every channel of this layer is flat for this image (each map is one value): a plain image "
                "gives its kernels nothing to respond to. Try an image with edges and texture.")
    best = int(np.argmax(np.where(live, channel_stats(maps)["activity"], -np.inf)))
    return (f"Channel {channel} is flat here (every value ≈ {float(one.flat[0]):.3g}): its kernel finds "
            f"nothing in this image. Channel {best} is the most active one that isn't flat.")


def show_detail(state: ViewState, m: VizModel, info, maps: np.ndarray, channel: int, view_img, label: str = "",
                stacked: bool = False, extra: Optional[Callable[[], None]] = None) -> None:
    """One channel's map with exact values (hover), beside the input as the model sees it, in ``state``'s colours."""
    one = maps[:, :, channel]
    # With a shared colour scale the detail uses the grid's range, so a weak channel looks weak here too.
    zmin, zmax = (float(maps.min()), float(maps.max())) if state.scale == "shared" else (None, None)
    title = f"<b>{info.name}</b>, channel {channel}{label} · {info.output_shape[0]}×{info.output_shape[1]}"
    fig = channel_detail(one, title=title, colormap=state.cmap, zmin=zmin, zmax=zmax, clickable=True)
    stats = channel_stats(maps)
    rank = 1 + int(np.sum(stats["activity"] > stats["activity"][channel]))
    if one.size <= MAX_CLICKABLE_CELLS:
        st.caption("Click a cell of the map to see which part of the input it sees.")
    text = (f"**channel {channel}**: mean {stats['mean'][channel]:.3g}, max {stats['max'][channel]:.3g}, "
            f"min {stats['min'][channel]:.3g}  \nrank {rank} of {info.channels} by activity "
            "(mean absolute activation)")
    if stacked:
        st.plotly_chart(fig, key=f"detail-{info.name}", config=CHART_CONFIG, selection_mode="points",
                        on_select=lambda: on_detail_click(f"detail-{info.name}"))
        st.markdown(text)
    else:
        col_map, col_img = st.columns([3, 2])
        col_map.plotly_chart(fig, key=f"detail-{info.name}", config=CHART_CONFIG, selection_mode="points",
                             on_select=lambda: on_detail_click(f"detail-{info.name}"))
        with col_img:
            st.image(view_img, caption="the input as the model sees it", width=220)
            st.markdown(text)
    message = flat_message(maps, channel)
    if message:
        st.info(message)
    if extra is not None:
        extra()


def on_detail_click(chart_key: str) -> None:
    """A click on a cell of a channel's heatmap: show what that cell sees (its receptive field)."""
    event = st.session_state.get(chart_key)
    points = selected_points(event)
    for point in points:
        data = point.get("customdata") if isinstance(point, dict) else None
        if isinstance(data, (list, tuple)) and len(data) >= 2:
            st.session_state["cell"] = f"{int(data[0])},{int(data[1])}"
            return


def clamp_channel(channel: int, n_channels: int) -> int:
    """``channel`` if the layer has it, else 0; the channel widget (drawn later in the run) is set to it."""
    value = channel if 0 <= channel < n_channels else 0
    if value != channel:
        put(channel=value)
    return value


def top_classes(m: VizModel, output: np.ndarray, top: int = 5) -> list[tuple[int, str, float]]:
    """(class index, name, probability) of the top classes for the first image."""
    ranked = ranked_classes(m, output, top)
    return ranked[0] if ranked else []


def on_prediction_click() -> None:
    event = st.session_state.get("predictions")
    points = selected_points(event)
    for point in points:
        data = point.get("customdata") if isinstance(point, dict) else None
        if data is not None:
            st.session_state["cls"] = int(data[0] if isinstance(data, (list, tuple)) else data)
            st.session_state["view"] = "why"
            return


#: Bar colours: the class explained (Why view) stands out; the others are lighter. Plotly's own
#: selection dimming is off, so the highlight always follows the class explained, not the last click.
BAR = "#4c78a8"
BAR_DIM = "#b9cde3"


def show_predictions(m: VizModel, output: Optional[np.ndarray], explained: Optional[int] = None) -> None:
    """The top-5 bars; ``explained`` (a class index, Why view) is the highlighted bar."""
    if output is None or not m.is_classifier:
        st.caption("This model's output is not a single class score vector, so no predictions are shown.")
        return
    top = top_classes(m, output)
    if not top:
        return
    title = "Top-5 predictions" + (" — untrained: random, for comparison" if m.untrained else "")
    fig = prediction_bars([(name, p) for _, name, p in top], title=title)
    order = [i for i, _, _ in reversed(top)]  # bars are drawn bottom-up
    colours = [BAR if explained is None or i == explained else BAR_DIM for i in order]
    fig.update_traces(customdata=order, marker_color=colours,
                      marker_line=dict(color=["#1f3b57" if explained == i else "rgba(0,0,0,0)" for i in order],
                                       width=2),
                      selected=dict(marker=dict(opacity=1.0)), unselected=dict(marker=dict(opacity=1.0)),
                      hovertemplate="%{y}: %{x:.1%}<br>click: where did the model look?<extra></extra>")
    st.plotly_chart(fig, key="predictions", config=CHART_CONFIG, on_select=on_prediction_click,
                    selection_mode="points")
    names = dict((i, name) for i, name, _ in top)
    if explained is not None and explained not in names:
        explained_name = m.class_names[explained] if m.class_names and 0 <= explained < len(m.class_names) \
            else f"class {explained}"
        st.caption(f"Explaining **{explained_name}**, which is not in the top 5. Click a bar to explain that class.")
    else:
        st.caption("Click a bar to see where the model looked for that class (Grad-CAM).")


def placeholder_chart(slot, text: str) -> None:
    """An empty chart, sent at once on a session's first run, so the browser fetches plotly.js
    while the server is still computing (the library is several MB of JavaScript)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.update_layout(height=200, margin=dict(l=0, r=0, t=30, b=0), xaxis=dict(visible=False),
                      yaxis=dict(visible=False), title=dict(text=text, font=dict(size=14)))
    slot.plotly_chart(fig, config={"displayModeBar": False, "staticPlot": True})


def share_and_export(m: VizModel, view: str, image_key: str, image_name: str, image: Any,
                     arrays: dict[str, np.ndarray], channels: dict[str, list[int]],
                     pngs: dict[str, Any], images: Optional[list[dict]] = None,
                     arrays_label: str = "Activations") -> None:
    """The link to this view, and downloads of what is on screen (generated only when clicked)."""
    state = on_screen(current_state(), image_key)
    # Lazy: nothing below runs (or is sent) until the expander is opened, so a page load
    # doesn't fetch the code-block component for a panel most visitors never open.
    panel = st.expander("Share this view · export PNG, arrays, manifest, bundle", key=f"share-{view}",
                        on_change="rerun")
    if not panel.open:
        return
    with panel:
        st.code(share_url(state), language=None, wrap_lines=True)
        uploaded = not image_key.startswith("sample:") or m.weights in ("file", "in-memory")
        if uploaded:
            st.caption("Uploads can't travel in a link: this link reopens these settings on a sample image. "
                       "To share exactly this view, download the **bundle** and upload it back "
                       "(Image → Upload).")
        else:
            st.caption("Copy the link (button on the right) to reopen exactly this view.")
        meta = manifest(model=m, view=as_dict(state), layers={k: v.shape[1:] for k, v in arrays.items()},
                        channels=channels, image_name=image_name, image_sha256=image_sha256(image_key),
                        images=images)
        stem = f"{m.key.split(':')[0]}_{view}".replace("/", "_")
        cols = st.columns(len(pngs) + 3)
        for col, (label, make) in zip(cols, pngs.items()):
            col.download_button(f"{label} (PNG)", data=make, file_name=f"{stem}_{label.replace(' ', '_')}.png",
                                mime="image/png", on_click="ignore", key=f"dl-{view}-{label}")
        cols[-3].download_button(f"{arrays_label} (.npz)", data=lambda: npz_bytes(arrays), file_name=f"{stem}.npz",
                                 mime="application/octet-stream", on_click="ignore", key=f"dl-{view}-npz")
        cols[-2].download_button("Manifest (.json)", data=lambda: manifest_json(meta), file_name=f"{stem}.json",
                                 mime="application/json", on_click="ignore", key=f"dl-{view}-json")
        cols[-1].download_button(
            "Bundle (.zip)", key=f"dl-{view}-zip", mime="application/zip", on_click="ignore",
            file_name=f"{stem}_bundle.zip",
            data=lambda: bundle(image=image, image_name=image_name, manifest_data=meta, arrays=arrays,
                                figures={f"{k}.png": v() for k, v in pngs.items()}),
            help="Image + manifest + arrays. Upload it back (Image → Upload) to reopen this view.")
