"""CNN activation explorer: what each layer of a Keras CNN responds to in an image.

    streamlit run app.py

The page reads top to bottom: sidebar controls -> a ViewState (mirrored in the
URL) -> vizlib calls -> charts. Everything Streamlit lives here; the work is
done by ``vizlib``.
"""

from __future__ import annotations

import gc
import logging

from dataclasses import fields
from typing import Any, Optional

import streamlit as st

st.set_page_config(page_title="CNN activation explorer", page_icon="🔬", layout="wide")

import numpy as np  # noqa: E402
from PIL import ImageOps  # noqa: E402

from vizlib.extract import (  # noqa: E402
    channel_across_images, channel_stats, decode, forward, pick_channels, top_channels,
)
from vizlib.errors import InputError  # noqa: E402
from vizlib.figures import COLORMAPS, across_images, channel_detail, channel_grid, prediction_bars  # noqa: E402
from vizlib.export import (  # noqa: E402
    across_png, bundle, grid_png, is_bundle, manifest, manifest_json, npz_bytes, read_bundle,
)
from vizlib.images import (  # noqa: E402
    MAX_IMAGES, SAMPLES, UPLOAD_EXTENSIONS, file_digest, images_from_zip, load_image, load_sample,
    model_view,
)
from vizlib.contract import VizModel  # noqa: E402
from vizlib.isolation import open_uploaded_model  # noqa: E402
from vizlib.settings import settings  # noqa: E402
from vizlib.layers import conv_layers, layer_table, spatial_layers  # noqa: E402
from vizlib.links import (  # noqa: E402
    VIEW_TITLES, VIEWS, ViewState, as_dict, from_dict, from_query, to_query, validate_for_model,
)
from vizlib.models import (  # noqa: E402
    BUNDLED_NAME, BUNDLED_TITLE, CATALOGUE, PREPROCESSING, LoadedModel, fetch_imagenet_weights,
    imagenet_weights_cached, load_bundled_model, load_catalogue_model,
)

log = logging.getLogger("cnn_viz")

UPLOAD_MODEL = "upload"
CHART_CONFIG = {"displaylogo": False, "modeBarButtonsToRemove": ["select2d", "lasso2d", "autoScale2d"]}
MODEL_TITLES = {BUNDLED_NAME: BUNDLED_TITLE, **{k: v.title for k, v in CATALOGUE.items()},
                UPLOAD_MODEL: "Your own model (.keras / .h5)…"}


# --------------------------------------------------------------------------- caches


@st.cache_resource(max_entries=1, show_spinner=False)
def get_bundled_model() -> LoadedModel:
    return load_bundled_model()


@st.cache_resource(max_entries=3, show_spinner=False)
def get_catalogue_model(name: str, weights: str) -> LoadedModel:
    return load_catalogue_model(name, "imagenet" if weights == "imagenet" else None)


@st.cache_resource(max_entries=2, ttl=3600, show_spinner=False)
def get_uploaded_model(digest: str, preprocess: str, _data: bytes, filename: str) -> VizModel:
    """An uploaded model, checked and run in its own process with memory and time limits.

    The file is saved under a server-chosen name (the uploaded name is only a
    label); the child process keeps its own copy.
    """
    return open_uploaded_model(_data, filename, preprocess=preprocess,
                               memory_limit_bytes=settings().model_memory_bytes)


#: Longest side kept of an uploaded image (what stays in memory; models see at most a few hundred
#: pixels). Images from a ZIP are kept smaller: up to 200 of them feed the across-images view.
UPLOAD_MAX_SIDE = 1024
ZIP_MAX_SIDE = 512


@st.cache_data(max_entries=32, show_spinner=False, scope="session")
def decode_upload(digest: str, _data: bytes, name: str):
    return load_image(_data, name=name, max_side=UPLOAD_MAX_SIDE)


@st.cache_data(max_entries=4, show_spinner=False, scope="session")
def decode_zip(digest: str, _data: bytes) -> list:
    return images_from_zip(_data, max_side=ZIP_MAX_SIDE)


@st.cache_data(max_entries=8, show_spinner=False, scope="session")
def decode_bundle(digest: str, _data: bytes):
    return read_bundle(_data)


@st.cache_data(max_entries=24, show_spinner=False)
def compute(model_key: str, image_key: str, layers: tuple[str, ...], _model: VizModel, _image: Any):
    """One forward pass for all layers on screen (plus the prediction), cached by content."""
    return forward(_model, [_image], list(layers), predictions=True)


@st.cache_data(max_entries=128, show_spinner=False)
def compute_channel_chunk(model_key: str, image_keys: tuple[str, ...], layer: str, channel: int,
                          _model: VizModel, _images: list) -> np.ndarray:
    return channel_across_images(_model, _images, layer, channel)


# --------------------------------------------------------------------------- state <-> URL


def default_state() -> ViewState:
    if imagenet_weights_cached("vgg16"):
        return ViewState(model="vgg16", weights="imagenet", image="cat")
    return ViewState(model=BUNDLED_NAME, weights="imagenet", image="astronaut_face")


def init_state() -> None:
    """On a session's first run, seed every widget from the URL (ignoring what doesn't parse)."""
    if st.session_state.get("_seeded"):
        return
    default = default_state()
    state, notices = from_query(
        st.query_params.to_dict(), models=[m for m in MODEL_TITLES if m != UPLOAD_MODEL or settings().model_upload],
        samples=list(SAMPLES), colormaps=COLORMAPS, default=default)
    for f in fields(ViewState):
        st.session_state[f.name] = getattr(state, f.name)
    st.session_state["images"] = list(state.images) or list(SAMPLES)
    st.session_state["_notices"] = notices
    st.session_state["_default"] = default
    # No channel in the link: open on the first layer's most active channel, not on channel 0
    # (often a dead one), so a newcomer's first look at a single map shows something.
    st.session_state["_auto_channel"] = "channel" not in st.query_params
    st.session_state["_seeded"] = True


def current_state() -> ViewState:
    ss = st.session_state
    images = tuple(ss.get("images") or ())
    d = st.session_state["_default"]
    return ViewState(
        model=ss.get("model", d.model), weights=ss.get("weights", d.weights), source=ss.get("source", d.source),
        image=ss.get("image", d.image), view=ss.get("view", d.view),
        layer=ss.get("layer") or "", inspect=ss.get("inspect") or "", channel=int(ss.get("channel") or 0),
        mode=ss.get("mode", d.mode), n=int(ss.get("n", d.n)), scale=ss.get("scale", d.scale),
        cmap=ss.get("cmap", d.cmap),
        images=() if set(images) == set(SAMPLES) else images,
    )


def sync_url(state: ViewState) -> None:
    params = to_query(state, st.session_state["_default"])
    if params != st.query_params.to_dict():
        st.query_params.from_dict(params)


# --------------------------------------------------------------------------- sidebar


def sidebar_model() -> Optional[VizModel]:
    st.sidebar.header("Model")
    options = [m for m in MODEL_TITLES if m != UPLOAD_MODEL or settings().model_upload]
    if st.session_state.model not in options:
        st.session_state.model = BUNDLED_NAME
    name = st.sidebar.selectbox("Model", options, key="model", persist_state="session", format_func=MODEL_TITLES.get,
                                help="The bundled model works offline. Keras Applications models "
                                     "use ImageNet weights (downloaded once) or untrained weights.")
    upload = sidebar_upload_model(expanded=name == UPLOAD_MODEL) if settings().model_upload else None
    if name == BUNDLED_NAME:
        st.sidebar.caption("64x64 greyscale faces → 7 emotions. Works offline.")
        return get_bundled_model()
    if name == UPLOAD_MODEL:
        if upload is None:
            st.info("Upload a .keras or .h5 model in the sidebar, or pick a model from the list.")
            return None
        data = upload.getvalue()
        with st.spinner(f"Checking and loading {upload.name}…"):
            return get_uploaded_model(file_digest(data), st.session_state.preprocess, data, upload.name)
    entry = CATALOGUE[name]
    cached = imagenet_weights_cached(name)
    st.sidebar.radio(
        "Weights", ["imagenet", "untrained"], key="weights", persist_state="session", horizontal=True,
        format_func={"imagenet": "ImageNet (pretrained)", "untrained": "untrained (random)"}.get)
    if st.session_state.weights == "imagenet":
        st.sidebar.caption("ImageNet weights are in the Keras cache." if cached else
                           f"ImageNet weights download once (~{entry.weights_mb} MB) into the Keras cache.")
        if not cached:
            bar = st.progress(0.0, text=f"Downloading ImageNet weights for {entry.title}…")

            def show(done: int, total: Optional[int]) -> None:
                frac = min(1.0, done / total) if total else 0.0
                bar.progress(frac, text=f"Downloading {entry.title} weights: {done / 2**20:.0f}"
                                        + (f" of {total / 2**20:.0f} MB" if total else " MB"))

            try:
                fetch_imagenet_weights(name, progress=show)
            finally:
                bar.empty()
    with st.spinner(f"Building {entry.title}…"):
        return get_catalogue_model(name, st.session_state.weights)


def sidebar_upload_model(expanded: bool):
    """The model-file uploader, always drawn (in an expander) so the file survives a model switch."""
    box = st.sidebar.expander("Your own model (.keras / .h5)", expanded=expanded)
    upload = box.file_uploader("Model file", type=["keras", "h5"], key="model_file",
                               help="Checked, then loaded with safe_mode=True in a separate process: "
                                    "built-in Keras layers only, no Lambda layers.")
    box.selectbox("Input scaling", list(PREPROCESSING), key="preprocess", persist_state="session",
                  format_func=lambda k: PREPROCESSING[k][0],
                  help="How pixel values (0-255) are scaled before they reach your model.")
    if upload is not None and st.session_state.model != UPLOAD_MODEL:
        box.button("Show this model", on_click=lambda: st.session_state.update(model=UPLOAD_MODEL))
    return upload


def sidebar_images() -> tuple[list[tuple[str, str, Any]], Optional[str]]:
    """All images available this session as (key, name, PIL image), and the key of the current one."""
    st.sidebar.header("Image")
    st.sidebar.radio("Source", ["sample", "upload", "camera"], key="source", persist_state="session", horizontal=True,
                     format_func={"sample": "Samples", "upload": "Upload", "camera": "Camera"}.get)
    current: Optional[str] = None
    source = st.session_state.source
    controls = st.sidebar.container()  # the chosen source's controls, drawn above the uploader
    # Always drawn (a widget that isn't drawn loses its files), so uploads survive a switch of source.
    files = st.sidebar.file_uploader(
        "Upload images (one, many, a ZIP, or a bundle)", type=[*UPLOAD_EXTENSIONS, "zip"],
        accept_multiple_files=True, key="image_files", on_change=on_images_uploaded,
        help="JPEG, PNG, WebP, BMP, GIF or TIFF; several at once, a ZIP of a folder of images, or a "
             "bundle exported from this page. Uploads stay in your session and can't travel in a link.")
    uploads = uploaded_images(files or [])
    if len(uploads) > MAX_IMAGES:
        st.sidebar.warning(f"Using the first {MAX_IMAGES} of {len(uploads)} images.")
        uploads = uploads[:MAX_IMAGES]
    if source == "sample":
        if st.session_state.image not in SAMPLES:
            st.session_state.image = "astronaut_face"
        controls.selectbox("Sample image", list(SAMPLES), key="image", persist_state="session",
                           format_func=lambda k: f"{k} — {SAMPLES[k].title}")
        s = SAMPLES[st.session_state.image]
        controls.caption(f"{s.source} · {s.licence}")
        current = f"sample:{st.session_state.image}"
    elif source == "upload":
        if uploads:
            names = {k: n for k, n, _ in uploads}
            if st.session_state.get("upload_pick") not in names:
                st.session_state["upload_pick"] = next(iter(names))
            current = controls.selectbox("Show", list(names), format_func=names.get, key="upload_pick")
            controls.caption(f"{len(uploads)} image{'s' if len(uploads) != 1 else ''} uploaded; "
                             "all of them join the *One channel across images* view.")
        else:
            controls.caption("No image uploaded yet: showing the sample image.")
    else:
        controls.toggle("Crop to the centre square", value=True, key="camera_crop",
                        help="Keeps a face in the middle of the frame large for the 64x64 face model.")
        shot = controls.camera_input("Take a picture", key="camera",
                                     help="Your snapshot stays in this session; it is never stored.")
        if shot is not None:
            data = shot.getvalue()
            digest = file_digest(data)
            try:
                snap = decode_upload(digest, data, "camera snapshot")
                crop = bool(st.session_state.get("camera_crop", True))
                if crop:
                    side = min(snap.size)
                    snap = ImageOps.fit(snap, (side, side))  # the centre square: where a face usually is
                # The key names the pixels the model sees (cached activations are keyed by it).
                uploads.append((f"camera:{digest}:{'crop' if crop else 'full'}", "camera snapshot", snap))
                current = uploads[-1][0]
            except InputError as exc:
                controls.error(str(exc))
    return uploads, current


def uploaded_images(files: list) -> list[tuple[str, str, Any]]:
    """Every image in this session's uploads: single files, ZIPs of images, and bundles."""
    out: list[tuple[str, str, Any]] = []
    for f in files:
        data = f.getvalue()
        digest = file_digest(data)
        try:
            if f.name.lower().endswith(".zip") or data[:4] == b"PK\x03\x04":
                if is_bundle(data):
                    b = decode_bundle(digest, data)
                    out.append((f"bundle:{digest}", b.image_name, b.image))
                else:
                    out.extend((f"zip:{digest}:{i}", name, img)
                               for i, (name, img) in enumerate(decode_zip(digest, data)))
            else:
                out.append((f"upload:{digest}", f.name, decode_upload(digest, data, f.name)))
        except InputError as exc:
            st.sidebar.error(str(exc))
    # The same file twice counts once; different files with one name get told apart.
    unique: dict[str, tuple[str, str, Any]] = {}
    names: dict[str, int] = {}
    for key, name, img in out:
        if key in unique:
            continue
        names[name] = names.get(name, 0) + 1
        unique[key] = (key, name if names[name] == 1 else f"{name} ({names[name]})", img)
    return list(unique.values())


def on_images_uploaded() -> None:
    """A bundle was uploaded: reopen the view it was exported from (once per bundle)."""
    applied = st.session_state.setdefault("_bundles_applied", set())
    for f in st.session_state.get("image_files") or []:
        data = f.getvalue()
        digest = file_digest(data)
        if digest in applied or not is_bundle(data):
            continue
        applied.add(digest)
        try:
            b = decode_bundle(digest, data)
        except InputError:
            continue  # shown by uploaded_images() in the run that follows
        view = dict(b.manifest.get("view") or {})
        view.pop("source", None)
        view.pop("image", None)
        state, notices = from_dict(view, models=[m for m in MODEL_TITLES if m != UPLOAD_MODEL],
                                   samples=list(SAMPLES), colormaps=COLORMAPS, default=current_state())
        for f_ in fields(ViewState):
            if f_.name not in ("source", "image", "images"):
                st.session_state[f_.name] = getattr(state, f_.name)
        st.session_state["upload_pick"] = f"bundle:{digest}"
        model_key = str((b.manifest.get("model") or {}).get("key", ""))
        if model_key.startswith("file:"):
            notices.append("This bundle was made with an uploaded model; upload that model too to see it again.")
        st.session_state["_notices"] = notices + [f"Reopened the view from bundle {f.name}."]


def sidebar_display() -> None:
    st.sidebar.header("Display")
    # The across-images view shows one channel on one shared scale: grid controls don't apply there.
    grid_only = st.session_state.get("view") == "across"
    st.sidebar.segmented_control("Channels shown", ["first", "top"], key="mode", persist_state="session", required=True,
                                 format_func={"first": "First N", "top": "Most active N"}.get, disabled=grid_only,
                                 help="The first N channels, as in the Keras tutorial, or the N that respond "
                                      "most strongly to this image (highest mean absolute activation).")
    st.sidebar.slider("N (grid size)", 1, 256, key="n", persist_state="session", disabled=grid_only)
    st.sidebar.radio("Colour scale", ["shared", "channel"], key="scale", persist_state="session", horizontal=True,
                     format_func={"shared": "shared", "channel": "per channel"}.get, disabled=grid_only,
                     help="Shared: one scale for the whole grid, so strong and weak channels compare. "
                          "Per channel: each map stretched to its own range, to see its shape.")
    if grid_only:
        st.sidebar.caption("One channel across images uses one shared scale; the grid settings above "
                           "apply to the other views.")
    st.sidebar.selectbox("Colormap", COLORMAPS, key="cmap", persist_state="session")


# --------------------------------------------------------------------------- share and export


def share_url(state: ViewState) -> str:
    from urllib.parse import urlencode

    base = (st.context.url or "").split("?")[0] or "http://localhost:8501/"
    if base.count("/") == 2:  # "http://host:port" -> "http://host:port/"
        base += "/"
    return f"{base}?{urlencode(to_query(state, st.session_state['_default']))}"


def image_sha256(image_key: str) -> str:
    kind, _, rest = image_key.partition(":")
    if kind == "sample":
        from vizlib.images import sample_path

        return file_digest(sample_path(rest).read_bytes())
    return rest.split(":")[0]


def share_and_export(m: VizModel, view: str, image_key: str, image_name: str, image: Any,
                     arrays: dict[str, np.ndarray], channels: dict[str, list[int]],
                     pngs: dict[str, Any], images: Optional[list[dict]] = None) -> None:
    """The link to this view, and downloads of what is on screen (generated only when clicked)."""
    state = current_state()
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
        cols[-3].download_button("Activations (.npz)", data=lambda: npz_bytes(arrays), file_name=f"{stem}.npz",
                                 mime="application/octet-stream", on_click="ignore", key=f"dl-{view}-npz")
        cols[-2].download_button("Manifest (.json)", data=lambda: manifest_json(meta), file_name=f"{stem}.json",
                                 mime="application/json", on_click="ignore", key=f"dl-{view}-json")
        cols[-1].download_button(
            "Bundle (.zip)", key=f"dl-{view}-zip", mime="application/zip", on_click="ignore",
            file_name=f"{stem}_bundle.zip",
            data=lambda: bundle(image=image, image_name=image_name, manifest_data=meta, arrays=arrays,
                                figures={f"{k}.png": v() for k, v in pngs.items()}),
            help="Image + manifest + arrays. Upload it back (Image → Upload) to reopen this view.")


# --------------------------------------------------------------------------- views


def grid_title(info, role: str) -> str:
    shape = "×".join(str(d) for d in info.output_shape)
    return f"{role}<b>{info.name}</b> · layer #{info.index} · {info.kind} · {shape}"


def on_grid_click(chart_key: str, layer_key: str, layer: str, channel_key: str = "channel") -> None:
    event = st.session_state.get(chart_key)
    points = (event or {}).get("selection", {}).get("points", []) if isinstance(event, dict) else \
        getattr(getattr(event, "selection", None), "points", []) or []
    for point in points:
        data = point.get("customdata") if isinstance(point, dict) else None
        if data is not None:
            st.session_state[layer_key] = layer
            st.session_state[channel_key] = int(data[0] if isinstance(data, (list, tuple)) else data)
            return


def show_grid(info, maps: np.ndarray, role: str, key: str, layer_key: str, selected: Optional[int],
              labels: Optional[list[str]] = None, width_hint: int = 380) -> None:
    ss = st.session_state
    chosen = pick_channels(maps, ss.n, ss.mode)
    fig = channel_grid(maps, chosen, colormap=ss.cmap, scale=ss.scale, title=grid_title(info, role),
                       highlight=selected, labels=labels, width_hint=width_hint)
    st.plotly_chart(fig, key=key, on_select=lambda: on_grid_click(key, layer_key, info.name),
                    selection_mode="points", config=CHART_CONFIG)
    shown = "first" if ss.mode == "first" else "most active"
    st.caption(f"{len(chosen)} of {info.channels} channels ({shown}), "
               f"{'one shared colour scale' if ss.scale == 'shared' else 'each on its own scale'}. "
               "Hover for values; click a map to inspect it.")


def show_detail(m: VizModel, info, maps: np.ndarray, channel: int, view_img, label: str = "",
                stacked: bool = False) -> None:
    """One channel's map with exact values (hover), beside the input as the model sees it."""
    ss = st.session_state
    one = maps[:, :, channel]
    # With a shared colour scale the detail uses the grid's range, so a weak channel looks weak here too.
    zmin, zmax = (float(maps.min()), float(maps.max())) if ss.scale == "shared" else (None, None)
    title = f"<b>{info.name}</b>, channel {channel}{label} · {info.output_shape[0]}×{info.output_shape[1]}"
    fig = channel_detail(one, title=title, colormap=ss.cmap, zmin=zmin, zmax=zmax)
    stats = channel_stats(maps)
    rank = 1 + int(np.sum(stats["activity"] > stats["activity"][channel]))
    best = int(np.argmax(stats["activity"]))
    text = (f"**channel {channel}**: mean {stats['mean'][channel]:.3g}, max {stats['max'][channel]:.3g}, "
            f"min {stats['min'][channel]:.3g}  \nrank {rank} of {info.channels} by activity "
            "(mean absolute activation)")
    flat = float(np.ptp(one)) <= 1e-6 * max(1.0, float(np.abs(one).max()))
    if stacked:
        st.plotly_chart(fig, key=f"detail-{info.name}", config=CHART_CONFIG)
        st.markdown(text)
    else:
        col_map, col_img = st.columns([3, 2])
        col_map.plotly_chart(fig, key=f"detail-{info.name}", config=CHART_CONFIG)
        with col_img:
            st.image(view_img, caption="the input as the model sees it", width=220)
            st.markdown(text)
    if flat:
        st.info(f"Channel {channel} is flat here (every value ≈ {float(one.flat[0]):.3g}): its kernel finds "
                f"nothing in this image. Channel {best} is the most active.")


def clamp_channel(key: str, n_channels: int) -> None:
    value = int(st.session_state.get(key) or 0)
    if not 0 <= value < n_channels:
        st.session_state[key] = 0


def view_compare(m: VizModel, image_key: str, image_name: str, image, view_img) -> Optional[np.ndarray]:
    first, last = conv_layers(m)[0], conv_layers(m)[-1]
    acts, output = compute(m.key, image_key, (first.name, last.name), m, image)
    ss = st.session_state
    if ss.inspect not in (first.name, last.name):
        ss.inspect = first.name
    inspected = first if ss.inspect == first.name else last
    if ss.pop("_auto_channel", False):
        ss.channel = top_channels(acts[inspected.name][0], 1)[0]
    clamp_channel("channel", inspected.channels)
    labels = m.class_names if (m.key == BUNDLED_NAME and m.class_names
                               and last.channels == len(m.class_names)) else None
    left, right = st.columns(2)
    with left:
        show_grid(first, acts[first.name][0], "First conv layer: ", "grid-first", "inspect",
                  ss.channel if inspected is first else None)
        st.caption("Early layers respond to edges, colours and contrast: the image is still recognisable.")
    with right:
        show_grid(last, acts[last.name][0], "Last conv layer: ", "grid-last", "inspect",
                  ss.channel if inspected is last else None, labels=labels)
        st.caption("Deep layers see a few pixels each, but every pixel summarises a large patch of the "
                   "image: these maps say *what* is there more than *where*.")
    st.subheader("Inspect one channel")
    c1, c2 = st.columns([2, 1])
    c1.selectbox("Layer", [first.name, last.name], key="inspect", persist_state="session",
                 format_func=lambda n: f"{'first' if n == first.name else 'last'} conv layer: {n}")
    c2.number_input("Channel", 0, inspected.channels - 1, key="channel", persist_state="session", step=1)
    label = f" ({labels[ss.channel]})" if labels and inspected is last else ""
    show_detail(m, inspected, acts[inspected.name][0], int(ss.channel), view_img, label)
    shown = {info.name: pick_channels(acts[info.name][0], ss.n, ss.mode) for info in (first, last)}
    cmap, scale = ss.cmap, ss.scale
    share_and_export(
        m, "compare", image_key, image_name, image, dict(acts), shown,
        {"first layer": lambda: grid_png(acts[first.name][0], shown[first.name], colormap=cmap, scale=scale,
                                         title=f"{m.label} · {first.describe()}"),
         "last layer": lambda: grid_png(acts[last.name][0], shown[last.name], colormap=cmap, scale=scale,
                                        title=f"{m.label} · {last.describe()}", labels=labels)})
    return output


def view_explore(m: VizModel, image_key: str, image_name: str, image, view_img) -> Optional[np.ndarray]:
    spatial = spatial_layers(m)
    names = [i.name for i in spatial]
    by_name = {i.name: i for i in spatial}
    ss = st.session_state
    if ss.layer not in by_name:
        ss.layer = names[0]
    table = layer_table(m)

    def on_row() -> None:
        rows = st.session_state["layer_table"].selection.rows
        if rows and table[rows[0]]["name"] in by_name:
            st.session_state["layer"] = table[rows[0]]["name"]

    with st.expander(f"All {len(table)} layers, in forward order (click a row with maps to show it)",
                     expanded=True):
        st.dataframe(table, hide_index=True, width="stretch", height=260, key="layer_table",
                     on_select=on_row, selection_mode="single-row")
    st.selectbox("Layer", names, key="layer", persist_state="session", format_func=lambda n: by_name[n].describe())
    info = by_name[ss.layer]
    clamp_channel("channel", info.channels)
    acts, output = compute(m.key, image_key, (info.name,), m, image)
    maps = acts[info.name][0]
    left, right = st.columns([3, 2])
    with left:
        show_grid(info, maps, "", "grid-explore", "layer", int(ss.channel), width_hint=460)
    with right:
        st.number_input("Channel", 0, info.channels - 1, key="channel", persist_state="session", step=1)
        show_detail(m, info, maps, int(ss.channel), view_img, stacked=True)
    shown = pick_channels(maps, ss.n, ss.mode)
    cmap, scale = ss.cmap, ss.scale
    share_and_export(m, "explore", image_key, image_name, image, dict(acts), {info.name: shown},
                     {"layer": lambda: grid_png(maps, shown, colormap=cmap, scale=scale,
                                                title=f"{m.label} · {info.describe()}")})
    return output


def view_across(m: VizModel, uploads: list[tuple[str, str, Any]], image_key: str, image_name: str,
                image: Any) -> Optional[np.ndarray]:
    _, output = compute(m.key, image_key, (), m, image)  # the prediction for the current image
    spatial = spatial_layers(m)
    by_name = {i.name: i for i in spatial}
    ss = st.session_state
    if ss.layer not in by_name:
        ss.layer = conv_layers(m)[0].name
    c1, c2 = st.columns([3, 1])
    c1.selectbox("Layer", list(by_name), key="layer", persist_state="session", format_func=lambda n: by_name[n].describe())
    info = by_name[ss.layer]
    clamp_channel("channel", info.channels)
    c2.number_input("Channel", 0, info.channels - 1, key="channel", persist_state="session", step=1)
    ss["images"] = [s for s in ss.get("images") or [] if s in SAMPLES]
    st.multiselect("Sample images", list(SAMPLES), key="images", persist_state="session")
    pool = [(f"sample:{s}", s, None) for s in ss["images"]] + [(k, n, img) for k, n, img in uploads]
    if not pool:
        st.info("Pick some sample images, or upload images in the sidebar (several at once).")
        return output
    if len(pool) > MAX_IMAGES:
        st.warning(f"Showing the first {MAX_IMAGES} of {len(pool)} images.")
        pool = pool[:MAX_IMAGES]
    bar = st.progress(0.0, text=f"Channel {ss.channel} of {info.name} over {len(pool)} images…")
    chunks = []
    for start in range(0, len(pool), 8):
        part = pool[start:start + 8]
        imgs = [img if img is not None else load_sample(name) for _, name, img in part]
        chunks.append(compute_channel_chunk(m.key, tuple(k for k, _, _ in part), info.name, int(ss.channel), m, imgs))
        bar.progress(min(1.0, (start + len(part)) / len(pool)))
    bar.empty()
    maps = np.concatenate(chunks, axis=0)
    fig = across_images(maps, [n for _, n, _ in pool], colormap=ss.cmap,
                        title=f"<b>{info.name}</b>, channel {ss.channel}, across {len(pool)} "
                              f"image{'s' if len(pool) != 1 else ''}")
    left, right = st.columns([3, 1])
    left.plotly_chart(fig, key="grid-across", config=CHART_CONFIG)
    right.caption("The same kernel applied to every image, on one shared colour scale: bright where this "
                  "channel's pattern occurs. Hover a map for its image, mean and max.")
    names = [n for _, n, _ in pool]
    cmap, channel = ss.cmap, int(ss.channel)
    share_and_export(
        m, "across", image_key, image_name, image, {f"{info.name}[..., {channel}]": maps[..., None]},
        {info.name: [channel]},
        {"across images": lambda: across_png(maps, names, colormap=cmap,
                                             title=f"{m.label} · {info.name}, channel {channel}")},
        images=[{"name": n, "key": k} for k, n, _ in pool])
    return output


def show_predictions(m: VizModel, output: Optional[np.ndarray]) -> None:
    if output is None or not m.is_classifier:
        st.caption("This model's output is not a single class score vector, so no predictions are shown.")
        return
    top = decode(m, output, top=5)[0]
    title = "Top-5 predictions" + (" — untrained: random, for comparison" if m.untrained else "")
    st.plotly_chart(prediction_bars(top, title=title), key="predictions", config={"displayModeBar": False})


# --------------------------------------------------------------------------- the page


@st.cache_resource(show_spinner="Starting TensorFlow…")
def warm_start() -> bool:
    """Once per process: import TensorFlow / Keras and load the bundled model, then freeze the GC.

    After every run Streamlit calls ``keras.backend.clear_session()`` and
    ``gc.collect()``; with TensorFlow's ~360,000 long-lived objects frozen out of
    the collector's view, that costs ~1 ms instead of ~190 ms per rerun
    (benchmarks/bench_rerun.py). Only start-up objects are frozen; models loaded
    later stay collectable when their cache entries are evicted.
    """
    get_bundled_model()
    gc.collect()
    gc.freeze()
    return True


def placeholder_chart(slot) -> None:
    """An empty chart, sent at once on a session's first run, so the browser fetches plotly.js
    while the server is still computing (the library is several MB of JavaScript)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.update_layout(height=200, margin=dict(l=0, r=0, t=30, b=0), xaxis=dict(visible=False),
                      yaxis=dict(visible=False), title=dict(text="Computing…", font=dict(size=14)))
    slot.plotly_chart(fig, config={"displayModeBar": False, "staticPlot": True})


def page() -> None:
    first_run = not st.session_state.get("_seeded")
    init_state()
    for notice in st.session_state.pop("_notices", []):
        st.toast(notice, icon="ℹ️" if notice.startswith("Reopened") else "⚠️")
    st.title("What does each layer of a CNN see?")
    with st.expander("What am I looking at?"):
        st.markdown(
            "A convolutional layer slides many small filters (kernels) over its input. Each filter "
            "makes one **channel**: a map that is bright where the filter's pattern occurs. The "
            "**first** layer sees pixels (edges, colours); each later layer combines the maps of the one "
            "before, so the **last** layer's maps are small (the image has been pooled down) but each of "
            "their pixels covers a large part of the image and stands for something more abstract.")
    top_left, top_right = st.columns([1, 2])
    image_slot, pred_slot = top_left.empty(), top_right.empty()
    if first_run:
        placeholder_chart(pred_slot)
    warm_start()

    try:
        m = sidebar_model()
    except InputError as exc:
        pred_slot.empty()
        st.error(str(exc))
        a, b = st.columns(2)
        a.button("Use untrained weights", on_click=lambda: st.session_state.update(weights="untrained"))
        b.button("Use the bundled model", on_click=lambda: st.session_state.update(model=BUNDLED_NAME))
        sync_url(current_state())
        return
    if m is None:
        pred_slot.empty()
        sync_url(current_state())
        return

    uploads, current = sidebar_images()
    sidebar_display()
    if current is None or current.startswith("sample:"):
        name = st.session_state.image if st.session_state.image in SAMPLES else "astronaut_face"
        image_key, image, image_name = f"sample:{name}", load_sample(name), name
    else:
        image_key, image_name, image = next(u for u in uploads if u[0] == current)

    try:
        first = conv_layers(m)[0]  # also: does this model have maps at all?
    except InputError as exc:
        pred_slot.empty()
        st.error(str(exc))
        sync_url(current_state())
        return
    spatial = spatial_layers(m)
    state, notices = validate_for_model(current_state(), [i.name for i in spatial],
                                        {i.name: i.channels for i in spatial}, default_layer=first.name)
    if first_run:  # later, a switch of model just resets what doesn't fit, without a warning
        for notice in notices:
            st.toast(notice, icon="⚠️")
    for key in ("layer", "inspect", "channel"):
        st.session_state[key] = getattr(state, key)

    view_img = model_view(image, m.input_size, m.channels)
    image_slot.image(view_img, width=200,
                     caption=f"{image_name}, as {m.label} sees it: {m.input_size[0]}×{m.input_size[1]} "
                             f"{'greyscale' if m.channels == 1 else 'RGB'}")

    st.segmented_control("View", list(VIEWS), key="view", persist_state="session", required=True, format_func=VIEW_TITLES.get,
                         label_visibility="collapsed")
    try:
        # Each view makes one forward pass for its layers; the prediction comes out of the same pass.
        if st.session_state.view == "compare":
            output = view_compare(m, image_key, image_name, image, view_img)
        elif st.session_state.view == "explore":
            output = view_explore(m, image_key, image_name, image, view_img)
        else:
            output = view_across(m, uploads, image_key, image_name, image)
    except InputError as exc:
        pred_slot.empty()
        st.error(str(exc))
    else:
        with pred_slot.container():
            show_predictions(m, output)
    sync_url(current_state())


def main() -> None:
    try:
        page()
    except InputError as exc:
        st.error(str(exc))
    except Exception:  # noqa: BLE001 - the page must survive anything; details go to the server log
        log.exception("unexpected error while drawing the page")
        st.error("Something went wrong while drawing this view. Try another setting; "
                 "the details are in the server log.")


main()
