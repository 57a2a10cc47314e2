"""The page's state: widgets in ``st.session_state``, seeded from the URL once, mirrored back to it.

Every setting is a field of :class:`vizlib.links.ViewState` and a widget key of
the same name, so a link reopens exactly the view on screen.
"""

from __future__ import annotations

from dataclasses import fields

import streamlit as st

from vizlib.figures import COLORMAPS
from vizlib.images import SAMPLES, file_digest, sample_path
from vizlib.links import DEFAULT, ViewState, from_query, to_query
from vizlib.models import imagenet_weights_cached
from ui.caches import model_options


def default_state() -> ViewState:
    """VGG16 on the cat when its ImageNet weights are cached (the tutorial's model), else the bundled model."""
    if imagenet_weights_cached("vgg16"):
        return ViewState(model="vgg16", weights="imagenet", image="cat")
    return DEFAULT


def init_state() -> None:
    """On a session's first run, seed every widget from the URL (ignoring, with a notice, what doesn't parse)."""
    if st.session_state.get("_seeded"):
        return
    default = default_state()
    state, notices = from_query(st.query_params.to_dict(), models=model_options(), samples=list(SAMPLES),
                                colormaps=COLORMAPS, default=default)
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
    """The widgets' values as a ViewState (what the URL shows)."""
    ss = st.session_state
    d: ViewState = ss.get("_default", DEFAULT)
    values = {}
    for f in fields(ViewState):
        value = ss.get(f.name, getattr(d, f.name))
        if f.name == "images":
            value = tuple(value or ())
            value = () if set(value) == set(SAMPLES) else value
        elif isinstance(getattr(d, f.name), int):
            try:
                value = int(value)
            except (TypeError, ValueError):
                value = getattr(d, f.name)
        elif value is None:
            value = getattr(d, f.name)
        values[f.name] = value
    return ViewState(**values)


def sync_url(state: ViewState) -> None:
    params = to_query(state, st.session_state.get("_default", DEFAULT))
    if params != st.query_params.to_dict():
        st.query_params.from_dict(params)


def share_url(state: ViewState) -> str:
    from urllib.parse import urlencode

    base = (st.context.url or "").split("?")[0] or "http://localhost:8501/"
    if base.count("/") == 2:  # "http://host:port" -> "http://host:port/"
        base += "/"
    return f"{base}?{urlencode(to_query(state, st.session_state.get('_default', DEFAULT)))}"


def image_sha256(image_key: str) -> str:
    kind, _, rest = image_key.partition(":")
    if kind == "sample":
        return file_digest(sample_path(rest).read_bytes())
    return rest.split(":")[0]
