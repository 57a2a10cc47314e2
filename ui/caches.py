"""Everything the page caches: models, decoded uploads, forward passes. Keyed by content, bounded."""

from __future__ import annotations

import gc
import logging
from typing import Any

import numpy as np
import streamlit as st

from vizlib import extract
from vizlib.cache import ByteLRU
from vizlib.contract import VizModel
from vizlib.export import read_bundle
from vizlib.images import images_from_zip, load_image, load_sample
from vizlib.isolation import open_uploaded_model
from vizlib.models import BUNDLED_NAME, BUNDLED_TITLE, CATALOGUE, load_bundled_model, load_catalogue_model
from vizlib.settings import settings

log = logging.getLogger("cnn_viz")

UPLOAD_MODEL = "upload"
MODEL_TITLES = {BUNDLED_NAME: BUNDLED_TITLE, **{k: v.title for k, v in CATALOGUE.items()},
                UPLOAD_MODEL: "Your own model (.keras / .h5)…"}
#: Plotly's toolbar stays off: on a phone it covers the titles, and its buttons would come first in
#: the keyboard's tab order. Zoom still works by dragging; a double click resets it.
CHART_CONFIG = {"displayModeBar": False, "displaylogo": False}
#: Across-images view: when one layer's maps for a chunk of images fit in this, they are kept, so a
#: change of channel only slices them (no forward pass); bigger layers compute one channel at a time.
LAYER_CHUNK_BYTES = 48 * 2**20


def model_options() -> list[str]:
    """The models this server offers (no uploads when the host switched them off)."""
    return [m for m in MODEL_TITLES if m != UPLOAD_MODEL or settings().model_upload]


# --------------------------------------------------------------------------- models


@st.cache_resource(max_entries=1, show_spinner=False)
def get_bundled_model() -> VizModel:
    return load_bundled_model()


@st.cache_resource(max_entries=3, show_spinner=False)
def get_catalogue_model(name: str, weights: str) -> VizModel:
    return load_catalogue_model(name, "imagenet" if weights == "imagenet" else None)


@st.cache_resource(max_entries=2, ttl=3600, show_spinner=False)
def get_uploaded_model(digest: str, preprocess: str, _data: bytes, filename: str) -> VizModel:
    """An uploaded model, checked and run in its own process with memory and time limits."""
    return open_uploaded_model(_data, filename, preprocess=preprocess,
                               memory_limit_bytes=settings().model_memory_bytes)


@st.cache_resource(max_entries=2, ttl=3600, show_spinner=False)
def get_untrained_twin(model_key: str, _model: VizModel) -> VizModel:
    """The same architecture with random weights (seed 0): the sanity check beside every map."""
    name = model_key.split(":")[0]
    if name in CATALOGUE:
        return get_catalogue_model(name, "untrained")
    return _model.untrained_copy(0)


# --------------------------------------------------------------------------- uploads


@st.cache_data(max_entries=32, show_spinner=False, scope="session")
def decode_upload(digest: str, _data: bytes, name: str):
    return load_image(_data, name=name)  # the one decode (vizlib.images.UPLOAD_MAX_SIDE): one model view


@st.cache_data(max_entries=4, show_spinner=False, scope="session")
def decode_zip(digest: str, _data: bytes) -> list:
    return images_from_zip(_data)  # decoded as single uploads are, so the across view sees the same pixels


@st.cache_data(max_entries=8, show_spinner=False, scope="session")
def decode_bundle(digest: str, _data: bytes):
    return read_bundle(_data, arrays=False)  # the page reopens the view from the image and the manifest


# --------------------------------------------------------------------------- forward passes


@st.cache_resource(show_spinner=False)
def results_cache() -> ByteLRU:
    """Activations of every session, bounded by bytes (not entries): one big model can't fill the server."""
    budget = settings().results_cache_bytes
    return ByteLRU(budget, max_entry_bytes=budget // 4, name="activations")


def compute(model_key: str, image_key: str, layers: tuple[str, ...], _model: VizModel, _image: Any):
    """One forward pass for all layers on screen (plus the prediction), cached by content."""
    return results_cache().get_or_compute(
        ("forward", model_key, image_key, tuple(layers)),
        lambda: extract.forward(_model, [_image], list(layers), predictions=True))


def compute_layer_chunk(model_key: str, image_keys: tuple[str, ...], layer: str,
                        _model: VizModel, _images: list) -> np.ndarray:
    """One layer's maps for a chunk of images (all channels): a channel change is then a slice."""
    return results_cache().get_or_compute(
        ("layer", model_key, tuple(image_keys), layer),
        lambda: extract.activations(_model, _images, [layer])[layer])


def compute_channel_chunk(model_key: str, image_keys: tuple[str, ...], layer: str, channel: int,
                          _model: VizModel, _images: list) -> np.ndarray:
    """One channel for a chunk of images, sliced inside the graph (for layers too big to keep whole)."""
    return results_cache().get_or_compute(
        ("channel", model_key, tuple(image_keys), layer, int(channel)),
        lambda: extract.channel_across_images(_model, _images, layer, channel))


def channel_over_chunk(m: VizModel, image_keys: tuple[str, ...], layer: str, channel: int, images: list,
                       layer_bytes: int) -> np.ndarray:
    """(N, H, W) maps of one channel: a slice of the kept layer when it fits, else sliced in the graph."""
    if layer_bytes * len(images) <= LAYER_CHUNK_BYTES:
        return compute_layer_chunk(m.key, image_keys, layer, m, images)[..., channel]
    return compute_channel_chunk(m.key, image_keys, layer, channel, m, images)


# --------------------------------------------------------------------------- start-up


@st.cache_resource(show_spinner=False)
def warm_start() -> bool:
    """Once per process: import TensorFlow / Keras, load the bundled model, compute the default
    view's forward pass (into the shared results cache); the GC is frozen after the bundled model.

    Runs at server start (``ui/startup.py``) or, under a host that doesn't run
    the ``st.App`` (AppTest), in the first page run.

    After every run Streamlit calls ``keras.backend.clear_session()`` and
    ``gc.collect()``; with TensorFlow's ~360,000 long-lived objects frozen out of
    the collector's view, that costs ~1 ms instead of ~190 ms per rerun
    (benchmarks/bench_rerun.py). Only start-up objects are frozen; models loaded
    later (a default VGG16 too) stay collectable when their cache entries are evicted.
    """
    global _WARM
    get_bundled_model()
    gc.collect()
    gc.freeze()
    try:  # the default view's forward pass: traces the extractor, and the first visit is a cache hit
        from ui.state import default_state
        from vizlib.layers import first_conv, last_conv

        default = default_state()  # VGG16 on the cat when its ImageNet weights are cached
        m = (get_catalogue_model(default.model, default.weights) if default.model in CATALOGUE
             else get_bundled_model())
        compute(m.key, f"sample:{default.image}", (first_conv(m).name, last_conv(m).name), m,
                load_sample(default.image))
    except Exception:  # noqa: BLE001 - only a head start: the page computes (and reports) it itself
        log.exception("warm-up: the default view's forward pass failed")
    _WARM = True
    return True


_WARM = False


def is_warm() -> bool:
    """Whether this process has started TensorFlow and loaded the bundled model (no wait for a visitor)."""
    return _WARM
