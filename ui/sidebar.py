"""The sidebar: which model, which image(s), and how maps are drawn."""

from __future__ import annotations

import logging
from dataclasses import fields
from typing import Any, Optional

import streamlit as st
from PIL import ImageOps

from vizlib.contract import VizModel
from vizlib.errors import InputError
from vizlib.export import is_bundle
from vizlib.figures import COLORMAPS
from vizlib.images import MAX_IMAGES, SAMPLES, UPLOAD_EXTENSIONS, file_digest
from vizlib.links import DEFAULT, WEIGHTS, ViewState, from_dict
from vizlib.models import AUTO, BUNDLED_NAME, CATALOGUE, PREPROCESSING, fetch_imagenet_weights, imagenet_weights_cached
from vizlib.settings import settings
from ui.caches import (
    MODEL_TITLES, UPLOAD_MODEL, decode_bundle, decode_upload, decode_zip, get_bundled_model, get_catalogue_model,
    get_uploaded_model, model_options,
)
from ui.state import choice, current_state, kept_if_valid, put

log = logging.getLogger("cnn_viz")

class ModelUnavailable(InputError):
    """The chosen model can't be shown; ``offers`` are the (label, session-state update) ways out that apply."""

    def __init__(self, message: str, offers: list[tuple[str, dict]]):
        super().__init__(message)
        self.offers = offers


USE_BUNDLED = ("Use the bundled model", {"model": BUNDLED_NAME})


def sidebar_model() -> Optional[VizModel]:
    """The model picker; returns the model, None while an upload is awaited, or raises ModelUnavailable."""
    st.sidebar.header("Model")
    options = model_options()
    kept_if_valid("model", options, DEFAULT.model)
    name = st.sidebar.selectbox("Model", options, key="model", persist_state="session", format_func=MODEL_TITLES.get,
                                help="The bundled model works offline. Keras Applications models "
                                     "use ImageNet weights (downloaded once) or untrained weights.")
    upload, preprocess = sidebar_upload_model(name) if settings().model_upload else (None, None)
    if name == BUNDLED_NAME:
        st.sidebar.caption("64x64 greyscale faces → 7 emotions. Works offline.")
        return get_bundled_model()
    if name == UPLOAD_MODEL:
        if upload is None:
            st.info("Upload a .keras or .h5 model in the sidebar (Your own model), or pick a model from the list.")
            return None
        data = upload.getvalue()
        try:
            with st.spinner(f"Checking and loading {upload.name}…"):
                return get_uploaded_model(file_digest(data), preprocess, data, upload.name)
        except InputError as exc:
            raise ModelUnavailable(f"{exc} Upload another file, or pick a model from the list.",
                                   [USE_BUNDLED]) from None
    entry = CATALOGUE[name]
    cached = imagenet_weights_cached(name)
    weights = kept_if_valid("weights", WEIGHTS, "imagenet")
    # Fetched before the weights radio is drawn: where they can't be had, the radio falls back to
    # untrained weights (with a notice) instead of staying on ImageNet beside an error.
    fell_back = False
    if weights == "imagenet" and not cached:
        bar = st.progress(0.0, text=f"Downloading ImageNet weights for {entry.title}…")

        def show(done: int, total: Optional[int]) -> None:
            frac = min(1.0, done / total) if total else 0.0
            bar.progress(frac, text=f"Downloading {entry.title} weights: {done / 2**20:.0f}"
                                    + (f" of {total / 2**20:.0f} MB" if total else " MB"))

        try:
            fetch_imagenet_weights(name, progress=show)
            cached = True
        except InputError as exc:
            log.warning("ImageNet weights for %s unavailable, showing untrained weights: %s", name, exc)
            put(weights="untrained")
            fell_back = True
        finally:
            bar.empty()
    weights = st.sidebar.radio(
        "Weights", ["imagenet", "untrained"], key="weights", persist_state="session", horizontal=True,
        format_func={"imagenet": "ImageNet (pretrained)", "untrained": "untrained (random)"}.get)
    note = st.sidebar.empty()
    if fell_back:
        note.caption(f"ImageNet weights for {entry.title} are not cached and can't be downloaded from here, "
                     "so untrained weights are shown. Untrained weights work offline.")
        st.warning(f"The ImageNet weights for {entry.title} aren't on this server and can't be downloaded from "
                   f"here, so this is {entry.title} with **untrained (random) weights**: its predictions are "
                   "random. The bundled model is trained and works offline.")
        st.button(USE_BUNDLED[0], on_click=lambda: st.session_state.update(USE_BUNDLED[1]), key="use-bundled")
    elif weights == "imagenet":
        note.caption("ImageNet weights are in the Keras cache." if cached else
                     f"ImageNet weights download once (~{entry.weights_mb} MB) into the Keras cache.")
    else:
        note.caption("Random weights (seed 0): what the architecture alone does, before any training.")
    try:
        with st.spinner(f"Building {entry.title}…"):
            return get_catalogue_model(name, weights)
    except InputError as exc:
        offers = [USE_BUNDLED] if weights == "untrained" else [
            ("Use untrained weights", {"weights": "untrained"}), USE_BUNDLED]
        raise ModelUnavailable(str(exc), offers) from None


def on_model_uploaded() -> None:
    """A model file was just uploaded: show it (its check runs at once, and says what is wrong)."""
    if st.session_state.get("model_file") is not None:
        st.session_state.model = UPLOAD_MODEL


#: The "auto" scaling's label (vizlib.models.AUTO).
SCALING_AUTO = "automatic  (none if the model starts with a Rescaling layer, else x / 255)"


def sidebar_upload_model(model: str) -> tuple[Any, str]:
    """The model-file uploader, always drawn (in an expander) so the file survives a model switch;
    (the uploaded file or None, the input scaling picked). ``model`` is the model picked."""
    box = st.sidebar.expander("Your own model (.keras / .h5)", expanded=model == UPLOAD_MODEL)
    upload = box.file_uploader("Model file", type=["keras", "h5"], key="model_file", on_change=on_model_uploaded,
                               help="Checked, then loaded with safe_mode=True in a separate process: "
                                    "built-in Keras layers only, no Lambda layers.")
    preprocess = box.selectbox("Input scaling", [AUTO, *PREPROCESSING], key="preprocess", persist_state="session",
                  format_func=lambda k: SCALING_AUTO if k == AUTO else PREPROCESSING[k][0],
                  help="How pixel values (0-255) are scaled before they reach your model. Automatic: none when "
                       "the model starts with Keras' Rescaling(1/255) or Rescaling(1/127.5, offset=-1) (it "
                       "rescales them itself), else x / 255.")
    if upload is not None and model != UPLOAD_MODEL:
        box.button("Show this model", on_click=lambda: st.session_state.update(model=UPLOAD_MODEL))
    return upload, preprocess


def sidebar_images() -> tuple[list[tuple[str, str, Any]], Optional[str]]:
    """All images available this session as (key, name, PIL image), and the key of the current one."""
    st.sidebar.header("Image")
    source = st.sidebar.radio("Source", ["sample", "upload", "camera"], key="source", persist_state="session",
                              horizontal=True, format_func={"sample": "Samples", "upload": "Upload",
                                                            "camera": "Camera"}.get)
    current: Optional[str] = None
    controls = st.sidebar.container()  # the chosen source's controls, drawn above the uploader
    # Always drawn (a widget that isn't drawn loses its files), so uploads survive a switch of source.
    files = st.sidebar.file_uploader(
        "Upload images (one, many, a ZIP, or a bundle)", type=[*UPLOAD_EXTENSIONS, "zip"],
        accept_multiple_files=True, key="image_files", on_change=on_images_uploaded,
        help="JPEG, PNG, WebP, BMP, GIF or TIFF; several at once, a ZIP of a folder of images, or a "
             "bundle exported from this page. Uploads stay in your session and can't travel in a link.")
    uploads = uploaded_images(files or []) + list(st.session_state.get("_opened_images", []))
    if len(uploads) > MAX_IMAGES:
        st.sidebar.warning(f"Using the first {MAX_IMAGES} of {len(uploads)} images.")
        uploads = uploads[:MAX_IMAGES]
    if source == "sample":
        kept_if_valid("image", list(SAMPLES), DEFAULT.image)
        image = controls.selectbox("Sample image", list(SAMPLES), key="image", persist_state="session",
                                   format_func=lambda k: f"{k} — {SAMPLES[k].title}")
        s = SAMPLES[image]
        controls.caption(f"{s.source} · {s.licence}")
        current = f"sample:{image}"
        if uploads:
            controls.caption(f"{len(uploads)} uploaded image{'s' if len(uploads) != 1 else ''}: "
                             "switch Source to Upload to show them.")
    elif source == "upload":
        if uploads:
            names = {k: n for k, n, _ in uploads}
            current = choice(controls, "Show", list(names), format_func=names.get, key="upload_pick")
            controls.caption(f"{len(uploads)} image{'s' if len(uploads) != 1 else ''} uploaded; "
                             "all of them join the *One channel across images* view.")
        else:
            controls.caption("No image uploaded yet: showing the sample image. Upload one below.")
    else:
        crop = bool(controls.toggle("Crop to the centre square", value=True, key="camera_crop",
                                    help="Keeps a face in the middle of the frame large for the 64x64 face model."))
        shot = controls.camera_input("Take a picture", key="camera",
                                     help="Your snapshot stays in this session; it is never stored.")
        if shot is not None:
            data = shot.getvalue()
            digest = file_digest(data)
            try:
                snap = decode_upload(digest, data, "camera snapshot")
                if crop:
                    side = min(snap.size)
                    snap = ImageOps.fit(snap, (side, side))  # the centre square: where a face usually is
                # The key names the pixels the model sees (cached activations are keyed by it).
                uploads.append((f"camera:{digest}:{'crop' if crop else 'full'}", "camera snapshot", snap))
                current = uploads[-1][0]
            except InputError as exc:
                controls.error(str(exc))
    return uploads, current


def _upload_key(data: bytes, name: str) -> tuple[str, str]:
    """(kind, key prefix) of an uploaded file: bundle, zip of images, or one image."""
    digest = file_digest(data)
    if name.lower().endswith(".zip") or data[:4] == b"PK\x03\x04":
        return ("bundle", f"bundle:{digest}") if is_bundle(data) else ("zip", f"zip:{digest}:0")
    return "image", f"upload:{digest}"


def uploaded_images(files: list) -> list[tuple[str, str, Any]]:
    """Every image in this session's uploads: single files, ZIPs of images, and bundles."""
    out: list[tuple[str, str, Any]] = []
    for f in files:
        data = f.getvalue()
        digest = file_digest(data)
        try:
            kind, key = _upload_key(data, f.name)
            if kind == "bundle":
                b = decode_bundle(digest, data)
                out.append((key, b.image_name, b.image))
            elif kind == "zip":
                out.extend((f"zip:{digest}:{i}", name, img) for i, (name, img) in enumerate(decode_zip(digest, data)))
            else:
                out.append((key, f.name, decode_upload(digest, data, f.name)))
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
    """Uploads are an intent: show the newest upload at once; a bundle reopens the view it was exported from."""
    seen = st.session_state.setdefault("_uploads_seen", set())
    newest: Optional[str] = None
    for f in st.session_state.get("image_files") or []:
        data = f.getvalue()
        digest = file_digest(data)
        if digest in seen:
            continue
        seen.add(digest)
        try:
            kind, key = _upload_key(data, f.name)
        except InputError:
            continue
        newest = key
        if kind == "bundle":
            _apply_bundle(f.name, digest, data)
    if newest is not None:
        st.session_state["source"] = "upload"
        st.session_state["upload_pick"] = newest


def _apply_bundle(file_name: str, digest: str, data: bytes) -> None:
    try:
        b = decode_bundle(digest, data)
    except InputError:
        return  # shown by uploaded_images() in the run that follows
    view = dict(b.manifest.get("view") or {})
    view.pop("source", None)
    view.pop("image", None)
    state, notices = from_dict(view, models=[m for m in MODEL_TITLES if m != UPLOAD_MODEL], samples=list(SAMPLES),
                               colormaps=COLORMAPS, default=current_state())
    for f_ in fields(ViewState):
        if f_.name not in ("source", "image", "images"):
            st.session_state[f_.name] = getattr(state, f_.name)
    model_key = str((b.manifest.get("model") or {}).get("key", ""))
    if model_key.startswith("file:"):
        notices.append("This bundle was made with an uploaded model; upload that model too to see it again.")
    st.session_state["_notices"] = notices + [f"Reopened the view from bundle {file_name}."]


def sidebar_display(view: str, fv: str) -> None:
    """The display settings for ``view``; ``fv`` is the feature-visualisation setting the toggle starts from."""
    st.sidebar.header("Display")
    # The across-images view shows one channel on one shared scale: grid controls don't apply there.
    grid_only = view in ("across", "depth", "atlas")
    st.sidebar.segmented_control(
        "Channels shown", ["first", "top", "contrib"], key="mode", persist_state="session", required=True,
        format_func={"first": "First N", "top": "Most active N", "contrib": "Most contributing N"}.get,
        disabled=grid_only,
        help="The first N channels, as in the Keras tutorial; the N that respond most strongly to this image "
             "(highest mean absolute activation); or the N that carried the predicted class most (mean of "
             "gradient × activation, Grad-CAM's channel weights).")
    st.sidebar.slider("N (grid size)", 1, 256, key="n", persist_state="session", disabled=grid_only)
    st.sidebar.radio("Colour scale", ["shared", "channel"], key="scale", persist_state="session", horizontal=True,
                     format_func={"shared": "shared", "channel": "per channel"}.get, disabled=grid_only,
                     help="Shared: one scale for the whole grid, so strong and weak channels compare. "
                          "Per channel: each map stretched to its own range, to see its shape.")
    if grid_only:
        st.sidebar.caption("This view doesn't draw a channel grid; the grid settings above apply to the others.")
    st.sidebar.selectbox("Colormap", COLORMAPS, key="cmap", persist_state="session")
    on = st.sidebar.toggle("Show what channels look for", value=fv == "on", key="fv_on",
                           help="Beside each map, an image made to excite that channel (feature visualisation). "
                                "Computed in the background; seconds for small models, longer for big layers.")
    put(fv="on" if on else "off")
