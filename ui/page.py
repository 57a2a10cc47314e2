"""The page: sidebar controls -> a ViewState (mirrored in the URL) -> vizlib calls -> charts.

``app.py`` runs :func:`main` on every rerun. Everything Streamlit lives here and
in the other ``ui`` modules; the work is done by ``vizlib``. The checked
:class:`ViewState` is built once per run (after the sidebar, before any view)
and passed to the view, which reads its settings from it (see ``ui/state.py``).
"""

from __future__ import annotations

from typing import Optional

import streamlit as st

import vizlib  # noqa: E402,F401  (first: it turns TensorFlow's oneDNN off before TensorFlow loads)
from vizlib.errors import InputError  # noqa: E402
from vizlib.images import SAMPLES, load_sample, model_view  # noqa: E402
from vizlib.layers import first_conv, last_conv, spatial_layers  # noqa: E402
from vizlib.models import PREPROCESSING  # noqa: E402
from vizlib.links import DEFAULT, VIEW_TITLES, VIEWS  # noqa: E402
from ui import caches, explain, sidebar, views  # noqa: E402
from ui.graph import view_graph  # noqa: E402
from ui.touch import install_touch_select  # noqa: E402
from ui.state import (  # noqa: E402
    check_display, checked_state, current_state, featvis_off_for_a_new_model, init_state, on_screen, run_guarded,
    sync_url,
)
from ui.widgets import placeholder_chart, show_predictions  # noqa: E402


INTRO = (
    "A convolutional layer slides many small filters (kernels) over its input. Each filter "
    "makes one **channel**: a map that is bright where the filter's pattern occurs. The "
    "**first** layer sees pixels (edges, colours); each later layer combines the maps of the one "
    "before, so the **last** layer's maps are small (the image has been pooled down) but each of "
    "their pixels covers a large part of the image and stands for something more abstract.")


def show_model_error(exc: sidebar.ModelUnavailable) -> None:
    """The model can't be shown: say why, and offer only the ways out that apply."""
    st.error(str(exc))
    if exc.offers:
        for col, (label, update) in zip(st.columns(len(exc.offers)), exc.offers):
            col.button(label, on_click=lambda u=update: st.session_state.update(u))


def scaling_caption(m) -> str:
    """For your own model, the input scaling applied (with "automatic", which one it chose): '' otherwise."""
    label = " ".join(PREPROCESSING.get(m.preprocess_name, ("",))[0].split())
    return f"; input scaling {label}" if label else ""


def current_image(uploads, current, sample: str):
    """(key, name, PIL image) of the image on screen: a sample (``sample``, the sample picked), an upload or
    the camera's snapshot."""
    if current is None or current.startswith("sample:"):
        name = sample if sample in SAMPLES else DEFAULT.image
        return f"sample:{name}", name, load_sample(name)
    return next(u for u in uploads if u[0] == current)


def explained_class(view: str) -> Optional[int]:
    """The class the Why view explained in this run (the one its picker names), else None."""
    value = st.session_state.pop("_explained", None)
    return int(value) if view == "why" and value is not None else None


#: Toasts shown at once; a link with dozens of odd parameters gets a summary, not a wall of toasts.
MAX_TOASTS = 6


def toast_notices(notices: list[str]) -> None:
    """Each notice as a toast, at most :data:`MAX_TOASTS` (the rest counted in the last one)."""
    shown = notices if len(notices) <= MAX_TOASTS else notices[:MAX_TOASTS - 1]
    for notice in shown:
        st.toast(notice, icon="ℹ️" if notice.startswith("Reopened") else "⚠️")
    if len(shown) < len(notices):
        st.toast(f"…and {len(notices) - len(shown)} more settings from the link were ignored.", icon="⚠️")


def page() -> None:
    first_run = not st.session_state.get("_seeded")
    init_state()
    check_display()
    # Notices queued before this run (a link, a bundle, a click in the graph) are shown with this run's own checks,
    # in one batch: one cap (MAX_TOASTS) for everything a visitor is told at once.
    pending = st.session_state.pop("_notices", [])
    st.title("What does each layer of a CNN see?")
    with st.expander("What am I looking at?"):
        st.markdown(INTRO)
    top_left, top_right = st.columns([1, 2])
    image_slot, pred_slot = top_left.empty(), top_right.empty()
    if not caches.is_warm():
        placeholder_chart(pred_slot, "Starting TensorFlow and loading the model: a few seconds, once per server start…")
    elif first_run:
        placeholder_chart(pred_slot, "Computing…")
    caches.warm_start()

    try:
        m = sidebar.sidebar_model()
        failure = None
    except sidebar.ModelUnavailable as exc:
        m, failure = None, exc
    if m is not None and featvis_off_for_a_new_model(m.key):
        st.toast("Feature visualisations are off for the new model (on big layers they take minutes): "
                 "switch them on in the sidebar to compute them.", icon="ℹ️")
    # The image and display controls stay in place whatever happened to the model.
    uploads, current = sidebar.sidebar_images()
    drawn = current_state()  # the model and image widgets' values (the view and display ones are checked)
    sidebar.sidebar_display(drawn.view, drawn.fv)
    image_key, image_name, image = current_image(uploads, current, drawn.image)
    if m is None:
        pred_slot.empty()
        image_slot.image(image, width=200, caption=image_name)
        if failure is not None:
            show_model_error(failure)
        toast_notices(pending)
        sync_url(on_screen(current_state(), image_key, model_shown=False))
        return

    try:
        first = first_conv(m)  # also: does this model have maps at all?
    except InputError as exc:
        pred_slot.empty()
        st.error(str(exc))
        toast_notices(pending)
        sync_url(on_screen(current_state(), image_key, model_shown=False))
        return
    # Every view control checked against this model (a value from another model is dropped or mapped).
    state, notices = checked_state(m, first.name, last_conv(m).name, from_link=first_run)
    toast_notices(pending + notices)

    view_img = model_view(image, m.input_size, m.channels)
    image_slot.image(view_img, width=200,
                     caption=f"{image_name}, as {m.label} sees it: {m.input_size[0]}×{m.input_size[1]} "
                             f"{'greyscale' if m.channels == 1 else 'RGB'}" + scaling_caption(m))

    st.segmented_control("View", list(VIEWS), key="view", persist_state="session", required=True,
                         format_func=VIEW_TITLES.get, label_visibility="collapsed")
    try:
        # Each view makes one forward pass for its layers; the prediction comes out of the same pass.
        view = state.view
        if view == "compare":
            output = views.view_compare(m, state, image_key, image_name, image, view_img)
        elif view == "explore":
            output = views.view_explore(m, state, image_key, image_name, image, view_img)
        elif view == "why":
            output = explain.view_why(m, state, image_key, image_name, image, view_img)
        elif view == "depth":
            output = explain.view_depth(m, image_key, image_name, image, view_img)
        elif view == "graph":
            output = view_graph(m, image_key, image_name, image, view_img)
        elif view == "live":
            from ui.live import view_live  # streamlit-webrtc loads only when the live view opens

            output = view_live(m, state, image_key, image_name, image, view_img)
        elif view == "atlas":
            output = views.view_atlas(m, state, uploads, image_key, image_name, image, view_img)
        else:
            output = views.view_across(m, state, uploads, image_key, image_name, image)
    except InputError as exc:
        pred_slot.empty()
        st.error(str(exc))
    else:
        with pred_slot.container():
            show_predictions(m, output, explained=explained_class(view))
    install_touch_select()
    sync_url(on_screen(current_state(), image_key))


def main() -> None:
    """One run of the page (``app.py`` calls this on every rerun)."""
    st.set_page_config(page_title="CNN activation explorer", page_icon="🔬", layout="wide")
    run_guarded(page)
