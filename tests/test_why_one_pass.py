"""One forward pass for Why (issue #19): the Grad-CAM request returns the layer's maps and the prediction it
already computed, and the Why view shows those instead of running the model again."""

from __future__ import annotations

import numpy as np

import vizlib
from vizlib import permodel


def _counting_model():
    """A small CNN whose first layer counts how often the model's forward pass runs (eager calls)."""
    import keras

    calls = []

    @keras.saving.register_keras_serializable(package="test_why")
    class Count(keras.layers.Layer):
        def call(self, x):
            calls.append(1)
            return x

    keras.utils.set_random_seed(3)
    L = keras.layers
    inp = keras.Input((24, 24, 3))
    x = Count(name="count")(inp)
    x = L.Conv2D(6, 3, padding="same", activation="relu", name="c1")(x)
    x = L.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="c2")(x)
    x = L.GlobalAveragePooling2D()(x)
    out = L.Dense(4, activation="softmax")(x)
    return vizlib.load_model(keras.Model(inp, out), preprocess="raw"), calls


def test_explain_class_returns_the_maps_and_prediction_of_its_one_forward_pass():
    m, calls = _counting_model()
    rng = np.random.default_rng(0)
    from PIL import Image

    img = Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8))
    permodel.clear()
    vizlib.explain_class(m, Image.new("RGB", (24, 24), (9, 90, 200)), layer="c2")  # traced, split: built once
    calls.clear()
    ex = vizlib.explain_class(m, img, layer="c2")
    assert len(calls) == 1  # one forward pass (the trunk); the class gradient runs only the head
    ref = vizlib.activations(m, [img], ["c2"])["c2"][0]
    np.testing.assert_allclose(ex.activations, ref, rtol=1e-5, atol=1e-6)
    _, out = vizlib.forward(m, [img], [], predictions=True)
    np.testing.assert_allclose(ex.output, out[0], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(ex.output, ex.probabilities, rtol=1e-5, atol=1e-7)
    calls.clear()
    other = vizlib.explain_class(m, img, class_index=(ex.class_index + 1) % 4, layer="c2")
    assert calls == [] and other.reused_features  # another class: no forward pass at all
    np.testing.assert_array_equal(other.activations, ex.activations)


def test_the_why_view_runs_no_forward_pass_of_its_own(offline, monkeypatch):
    import streamlit as st
    from test_app import assert_clean, make_app, titles

    from vizlib import extract

    real = extract.forward
    passes = []

    def counting(model, images, layers, **kw):
        passes.append(tuple(layers))
        return real(model, images, layers, **kw)

    monkeypatch.setattr(extract, "forward", counting)
    st.cache_data.clear()
    st.cache_resource.clear()
    explore = make_app(view="explore").run()  # the server's warm-up and the explorer's own pass are counted
    assert_clean(explore)
    assert passes, "the counting wrapper saw no forward pass at all"
    passes.clear()
    at = make_app(view="why").run()
    assert_clean(at)
    assert any("Where the model looked for" in x for x in titles(at)), titles(at)
    assert passes == [], passes  # the grid, the detail and the predictions all come from the Grad-CAM pass
