"""The activation views: first vs last conv layer, the layer explorer, one channel across images."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import streamlit as st

from vizlib.contract import VizModel
from vizlib.export import across_png, grid_png
from vizlib.extract import top_channels
from vizlib.figures import across_images
from vizlib.images import MAX_IMAGES, SAMPLES, load_sample
from vizlib.layers import first_conv, final_feature_map_reason, last_conv, layer_table, spatial_layers
from vizlib.links import ViewState
from ui import featvis as fv_ui
from ui.caches import CHART_CONFIG, channel_over_chunk, compute
from ui.explain import cell_panel, contributions_for
from ui.scroll import scroll_to_row
from ui.state import choice, number, put
from ui.widgets import class_labels, clamp_channel, on_grid_click, share_and_export, show_detail, show_grid


def detail_extras(state: ViewState, m: VizModel, info, maps: np.ndarray, channel: int, image_key: str, image: Any,
                  view_img, view: str):
    """What goes under a channel's detail: what the channel looks for (when on), and what one cell sees."""
    def extra() -> None:
        if state.fv == "on":
            fv_ui.what_it_looks_for(m, info, channel, maps, key=f"featvis-detail-{view}", cell=state.cell)
        # Lazy: computed only while open (a link with cell=row,col opens it).
        box = st.expander("What does one cell of this map see? (receptive field)", expanded=bool(state.cell),
                          key=f"cell-panel-{view}", on_change="rerun")
        if box.open:
            with box:
                cell_panel(m, info, image_key, image, view_img, channel, state.cell)
    return extra


def feature_mosaic_for(state: ViewState, m: VizModel, info, shown: list[int], maps: np.ndarray, layer_key: str,
                       key: str, labels: Optional[list[str]] = None, width_hint: int = 380,
                       highlight: Optional[int] = None) -> None:
    if state.fv != "on":
        return
    fv_ui.feature_mosaic(m, info, shown, labels=labels, highlight=highlight,
                         reference=maps.mean(axis=(0, 1)), key=key, width_hint=width_hint,
                         on_select=lambda: on_grid_click(key, layer_key, info.name), chart_config=CHART_CONFIG)


def view_compare(m: VizModel, state: ViewState, image_key: str, image_name: str, image,
                 view_img) -> Optional[np.ndarray]:
    first, last = first_conv(m), last_conv(m)
    acts, output = compute(m.key, image_key, (first.name, last.name), m, image)
    inspect = state.inspect if state.inspect in (first.name, last.name) else first.name
    put(inspect=inspect)
    inspected = first if inspect == first.name else last
    channel = state.channel
    if st.session_state.pop("_auto_channel", False):
        channel = top_channels(acts[inspected.name][0], 1)[0]
        put(channel=channel)
    channel = clamp_channel(channel, inspected.channels)
    labels = class_labels(m, last)
    contrib = state.mode == "contrib" and m.is_classifier
    left, right = st.columns(2)
    with left:
        shown_first = show_grid(state, first, acts[first.name][0], "First conv layer: ", "grid-first", "inspect",
                                channel if inspected is first else None,
                                contributions=contributions_for(m, image_key, image, first.name, state.cls)
                                if contrib else None)
        st.caption("Early layers respond to edges, colours and contrast: the image is still recognisable.")
        feature_mosaic_for(state, m, first, shown_first, acts[first.name][0], "inspect", "fv-grid-first",
                           highlight=channel if inspected is first else None)
    with right:
        shown_last = show_grid(state, last, acts[last.name][0], "Last conv layer: ", "grid-last", "inspect",
                               channel if inspected is last else None, labels=labels,
                               contributions=contributions_for(m, image_key, image, last.name, state.cls)
                               if contrib else None)
        reason = final_feature_map_reason(m)
        st.caption("Deep layers see a few pixels each, but every pixel summarises a large patch of the "
                   "image: these maps say *what* is there more than *where*."
                   + (f" {reason}" if reason else ""))
        feature_mosaic_for(state, m, last, shown_last, acts[last.name][0], "inspect", "fv-grid-last", labels=labels,
                           highlight=channel if inspected is last else None)
    st.subheader("Inspect one channel")
    c1, c2 = st.columns([2, 1])
    choice(c1, "Layer", [first.name, last.name], key="inspect",
           format_func=lambda n: f"{'first' if n == first.name else 'last'} conv layer: {n}")
    channel = number(c2, "Channel", 0, inspected.channels - 1, key="channel")
    label = f" ({labels[channel]})" if labels and inspected is last else ""
    show_detail(state, m, inspected, acts[inspected.name][0], channel, view_img, label,
                extra=detail_extras(state, m, inspected, acts[inspected.name][0], channel, image_key, image,
                                    view_img, "compare"))
    cmap, scale = state.cmap, state.scale
    shown = {first.name: shown_first, last.name: shown_last}
    share_and_export(
        m, "compare", image_key, image_name, image, dict(acts), shown,
        {"first layer": lambda: grid_png(acts[first.name][0], shown[first.name], colormap=cmap, scale=scale,
                                         title=f"{m.label} · {first.describe()}"),
         "last layer": lambda: grid_png(acts[last.name][0], shown[last.name], colormap=cmap, scale=scale,
                                        title=f"{m.label} · {last.describe()}", labels=labels)})
    return output


def view_explore(m: VizModel, state: ViewState, image_key: str, image_name: str, image,
                 view_img) -> Optional[np.ndarray]:
    spatial = spatial_layers(m)
    names = [i.name for i in spatial]
    by_name = {i.name: i for i in spatial}
    layer = state.layer if state.layer in by_name else names[0]
    put(layer=layer)
    table = layer_table(m)

    # The layer shown is the selected row, in view, however it was chosen (the table, the picker, the
    # depth profile): one table per layer, so its selection starts at that layer's row.
    shown_row = next((i for i, r in enumerate(table) if r["name"] == layer), None)
    table_key = f"layer_table-{shown_row}"

    def on_row() -> None:
        rows = st.session_state[table_key].selection.rows
        if rows and table[rows[0]]["name"] in by_name:
            st.session_state["layer"] = table[rows[0]]["name"]

    with st.expander(f"All {len(table)} layers, in forward order (click a row with maps to show it)",
                     expanded=True):
        st.dataframe(table, hide_index=True, width="stretch", height=260, key=table_key,
                     on_select=on_row, selection_mode="single-row",
                     selection_default={"selection": {"rows": [] if shown_row is None else [shown_row],
                                                      "columns": []}})
        if shown_row is not None:
            scroll_to_row(table_key, shown_row)
    info = by_name[choice(st, "Layer", names, key="layer", format_func=lambda n: by_name[n].describe())]
    channel = clamp_channel(state.channel, info.channels)
    acts, output = compute(m.key, image_key, (info.name,), m, image)
    maps = acts[info.name][0]
    left, right = st.columns([3, 2])
    contrib = state.mode == "contrib" and m.is_classifier
    with left:
        shown = show_grid(state, info, maps, "", "grid-explore", "layer", channel, width_hint=460,
                          contributions=contributions_for(m, image_key, image, info.name, state.cls)
                          if contrib else None)
        feature_mosaic_for(state, m, info, shown, maps, "layer", "fv-grid-explore", width_hint=460,
                           highlight=channel)
    with right:
        channel = number(st, "Channel", 0, info.channels - 1, key="channel")
        show_detail(state, m, info, maps, channel, view_img, stacked=True,
                    extra=detail_extras(state, m, info, maps, channel, image_key, image, view_img, "explore"))
    cmap, scale = state.cmap, state.scale
    share_and_export(m, "explore", image_key, image_name, image, dict(acts), {info.name: shown},
                     {"layer": lambda: grid_png(maps, shown, colormap=cmap, scale=scale,
                                                title=f"{m.label} · {info.describe()}")})
    return output


def pick_layer_and_channel(m: VizModel, state: ViewState) -> tuple[Any, int]:
    """A layer (any with 2D maps; the first conv by default) and one of its channels, side by side."""
    by_name = {i.name: i for i in spatial_layers(m)}
    put(layer=state.layer if state.layer in by_name else first_conv(m).name)
    c1, c2 = st.columns([3, 1])
    info = by_name[choice(c1, "Layer", list(by_name), key="layer", format_func=lambda n: by_name[n].describe())]
    channel = number(c2, "Channel", 0, info.channels - 1, key="channel")
    return info, channel


def view_across(m: VizModel, state: ViewState, uploads: list[tuple[str, str, Any]], image_key: str,
                image_name: str, image: Any) -> Optional[np.ndarray]:
    _, output = compute(m.key, image_key, (), m, image)  # the prediction for the current image
    info, channel = pick_layer_and_channel(m, state)
    # The samples were checked with the state (ui.state.checked_state): the picker's value is this run's.
    samples = st.multiselect("Sample images", list(SAMPLES), key="images", persist_state="session")
    pool = [(f"sample:{s}", s, None) for s in samples] + [(k, n, img) for k, n, img in uploads]
    if not pool:
        st.info("Pick some sample images, or upload images in the sidebar (several at once).")
        return output
    if len(pool) > MAX_IMAGES:
        st.warning(f"Showing the first {MAX_IMAGES} of {len(pool)} images.")
        pool = pool[:MAX_IMAGES]
    layer_bytes = int(np.prod(info.output_shape)) * 4
    bar = st.progress(0.0, text=f"Channel {channel} of {info.name} over {len(pool)} images…")
    chunks = []
    for start in range(0, len(pool), 8):
        part = pool[start:start + 8]
        imgs = [img if img is not None else load_sample(name) for _, name, img in part]
        chunks.append(channel_over_chunk(m, tuple(k for k, _, _ in part), info.name, channel, imgs,
                                         layer_bytes))
        bar.progress(min(1.0, (start + len(part)) / len(pool)))
    bar.empty()
    maps = np.concatenate(chunks, axis=0)
    fig = across_images(maps, [n for _, n, _ in pool], colormap=state.cmap,
                        title=f"<b>{info.name}</b>, channel {channel}, across {len(pool)} "
                              f"image{'s' if len(pool) != 1 else ''}")
    left, right = st.columns([3, 1])
    left.plotly_chart(fig, key="grid-across", config=CHART_CONFIG)
    right.caption("The same kernel applied to every image, on one shared colour scale: bright where this "
                  "channel's pattern occurs. Hover a map for its image, mean and max.")
    names = [n for _, n, _ in pool]
    cmap = state.cmap
    share_and_export(
        m, "across", image_key, image_name, image, {f"{info.name}[..., {channel}]": maps[..., None]},
        {info.name: [channel]},
        {"across images": lambda: across_png(maps, names, colormap=cmap,
                                             title=f"{m.label} · {info.name}, channel {channel}")},
        images=[{"name": n, "key": k} for k, n, _ in pool])
    return output


def view_atlas(m: VizModel, state: ViewState, uploads: list[tuple[str, str, Any]], image_key: str,
               image_name: str, image: Any, view_img) -> Optional[np.ndarray]:
    """Which of my images excite this channel most? A dataset atlas, opened or built in the page."""
    from ui import atlas as atlas_ui
    from vizlib.images import image_digest

    _, output = compute(m.key, image_key, (), m, image)  # the prediction for the current image
    atlas_ui.apply_jump()  # an atlas opened last run asked for its most active channel
    info, channel = pick_layer_and_channel(m, state)
    item = atlas_ui.atlas_panel(m, uploads, layer=info.name, channel=channel, name=state.atlas or None)
    put(atlas=atlas_ui.chosen_name())  # a folder under the root; an uploaded or built one can't travel
    if state.fv == "on":
        fv_ui.what_it_looks_for(m, info, channel, key="featvis-atlas")
    if item is not None:
        # Open the clicked image in the views: it joins this session's images, shown at once.
        key = f"atlas:{image_digest(item['image'])}"
        ss = st.session_state
        opened = [x for x in ss.get("_opened_images", []) if x[0] != key][-(MAX_IMAGES - 1):]
        ss["_opened_images"] = opened + [(key, str(item["path"]), item["image"])]
        put(source="upload", upload_pick=key, view="explore")
        st.rerun()
    return output
