"""vizlib on real models: layers, activations, predictions, the catalogue, figures."""

from __future__ import annotations

import base64
import io
import json
import re

import numpy as np
import pytest
from PIL import Image

import vizlib
import vizlib.permodel
from vizlib.extract import (
    channel_across_images, channel_stats, decode, forward, pick_channels, top_channels,
)
from vizlib.errors import InputError
from vizlib.figures import channel_detail, channel_grid, across_images, colormap_lut, prediction_bars
from vizlib.layers import all_layers, conv_layers, find_layer, first_conv, last_conv, spatial_layers
from vizlib.models import CATALOGUE, EMOTIONS, describe_keras_model, load_model


def reference(model, layer_name, batch):
    """The tutorial's way: a sub-model from the input to one layer."""
    import keras

    sub = keras.Model(model.inputs, model.get_layer(layer_name).output)
    return np.asarray(sub.predict(batch, verbose=0))


# --------------------------------------------------------------------- the bundled model


def test_bundled_model_predicts_happy_on_astronaut_face(bundled):
    img = vizlib.load_sample("astronaut_face")
    top = vizlib.predict(bundled, [img])[0]
    assert top[0][0] == "happy"
    assert top[0][1] > 0.9
    assert [name for name, _ in top] == sorted([n for n, _ in top], key=lambda n: -dict(top)[n])
    assert set(dict(top)) <= set(EMOTIONS)


def test_bundled_model_first_and_last_conv(bundled):
    assert bundled.channels == 1 and bundled.input_size == (64, 64)
    first, last = first_conv(bundled), last_conv(bundled)
    assert (first.name, first.output_shape) == ("conv2d_1", (62, 62, 8))
    assert (last.name, last.output_shape) == ("conv2d_7", (4, 4, 7))
    names = [i.name for i in spatial_layers(bundled)]
    assert names.index("conv2d_1") < names.index("conv2d_7")
    assert "global_average_pooling2d_1" not in names  # (None, 7): not a map stack
    assert any(i.name == "global_average_pooling2d_1" for i in all_layers(bundled))


def test_activations_match_reference_submodel_greyscale(bundled):
    images = [vizlib.load_sample(n) for n in ("astronaut_face", "cat", "coins")]
    batch = vizlib.to_batch(images, (64, 64), channels=1, preprocess=bundled.preprocess)
    names = [i.name for i in conv_layers(bundled)]
    acts, output = forward(bundled, images, names)
    for name in names:
        np.testing.assert_allclose(acts[name], reference(bundled.model, name, batch), atol=1e-5, rtol=1e-5)
        assert acts[name].dtype == np.float32 and acts[name].shape[0] == 3
    np.testing.assert_allclose(output, bundled.model.predict(batch, verbose=0), atol=1e-6)


def test_one_forward_pass_builds_one_extractor(bundled, monkeypatch):
    import keras
    from vizlib import extract as mod
    built = []
    real = keras.Model

    class Counting(real):  # count models built by the extractor
        def __init__(self, *a, **k):
            built.append(k.get("name"))
            super().__init__(*a, **k)

    monkeypatch.setattr(keras, "Model", Counting)
    vizlib.permodel.clear()
    img = vizlib.load_sample("cat")
    names = [i.name for i in spatial_layers(bundled)]
    forward(bundled, [img], names)
    forward(bundled, [img], names)  # cached: no second build
    assert built == ["vizlib_extractor"]


# --------------------------------------------------------------------- real architectures


def test_activations_match_reference_on_mobilenet(mobilenet):
    m = describe_keras_model(mobilenet, preprocess="symmetric")
    assert m.input_size == (96, 96) and m.class_names and len(m.class_names) == 1000
    rng = np.random.default_rng(0)
    batch = rng.uniform(-1, 1, (2, 96, 96, 3)).astype(np.float32)
    convs = conv_layers(m)
    picks = [convs[0].name, convs[len(convs) // 2].name, convs[-1].name, "block_2_add"]
    acts = vizlib.activations(m, batch, picks)
    for name in picks:
        np.testing.assert_allclose(acts[name], reference(mobilenet, name, batch), atol=1e-5, rtol=1e-4)


def test_nested_model_layers_are_listed_and_correct(nested_vgg):
    model, base = nested_vgg
    m = load_model(model)
    names = [i.name for i in spatial_layers(m)]
    assert names[0] == "vgg16/block1_conv1"
    assert "vgg16/block5_conv3" in names and "vgg16/block5_pool" in names
    assert first_conv(m).name == "vgg16/block1_conv1" and last_conv(m).name == "vgg16/block5_conv3"
    assert find_layer(m, "vgg16/block3_conv2").output_shape == (8, 8, 256)
    batch = np.random.default_rng(1).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    acts, out = forward(m, batch, ["vgg16/block1_conv1", "vgg16/block5_conv3"])
    np.testing.assert_allclose(acts["vgg16/block5_conv3"], reference(base, "block5_conv3", batch), atol=1e-5)
    np.testing.assert_allclose(out, model.predict(batch, verbose=0), atol=1e-6)


def test_nested_model_in_the_middle_of_a_functional_model():
    import keras

    inner = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(4, 3, name="c1"),
                              keras.layers.Conv2D(5, 3, name="c2")], name="inner")
    inp = keras.Input((16, 16, 3))
    x = keras.layers.Rescaling(1 / 255.0, name="scale")(inp)
    x = inner(x)
    x = keras.layers.Conv2D(6, 3, name="head_conv")(x)
    out = keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inp, out)
    m = describe_keras_model(model, preprocess="raw")
    assert [i.name for i in conv_layers(m)] == ["inner/c1", "inner/c2", "head_conv"]
    batch = np.random.default_rng(2).uniform(0, 255, (3, 16, 16, 3)).astype(np.float32)
    acts = vizlib.activations(m, batch, ["inner/c2", "head_conv"])
    expected = np.asarray(inner(batch / 255.0))
    np.testing.assert_allclose(acts["inner/c2"], expected, atol=1e-5)
    np.testing.assert_allclose(acts["head_conv"], reference(model, "head_conv", batch), atol=1e-5)


def test_sequential_model():
    import keras

    model = keras.Sequential([keras.Input((20, 20, 1)), keras.layers.Conv2D(3, 3, name="a"),
                              keras.layers.MaxPooling2D(name="p"), keras.layers.Conv2D(2, 3, name="b"),
                              keras.layers.Flatten(), keras.layers.Dense(3)])
    m = describe_keras_model(model)
    assert m.channels == 1 and m.input_size == (20, 20)
    assert [i.name for i in spatial_layers(m)] == ["a", "p", "b"]
    assert m.is_classifier  # (None, 3): top-k is shown, softmax applied to logits
    img = vizlib.load_sample("coins")
    acts = vizlib.activations(m, [img], ["b"])
    batch = vizlib.to_batch([img], (20, 20), channels=1, preprocess=m.preprocess)
    np.testing.assert_allclose(acts["b"], reference(model, "b", batch), atol=1e-5)
    top = vizlib.predict(m, [img], top=3)[0]
    assert len(top) == 3 and abs(sum(p for _, p in top) - 1) < 1e-5  # all 3 classes: softmax sums to 1


# --------------------------------------------------------------------- refusals


def test_dense_only_model_has_no_maps():
    import keras

    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(2)])
    with pytest.raises(InputError, match="no layers with 2D spatial output"):
        spatial_layers(describe_keras_model(model))


def test_multi_input_model_refused():
    import keras

    a, b = keras.Input((8, 8, 3)), keras.Input((8, 8, 3))
    model = keras.Model([a, b], keras.layers.Add()([a, b]))
    with pytest.raises(InputError, match="2 inputs"):
        describe_keras_model(model)


def test_unbuilt_sequential_refused():
    import keras

    model = keras.Sequential([keras.layers.Conv2D(2, 3)])
    with pytest.raises(InputError, match="no defined input"):
        describe_keras_model(model)


def test_arrays_of_pixels_are_images_and_anything_else_a_message(bundled):
    """A notebook user's np.asarray(img) (any size, grey or RGB, uint8 or float) is the image it shows,
    alone or in a list, for every entry point that takes images; a wrong thing is an InputError."""
    img = vizlib.load_sample("astronaut_face")
    layer = last_conv(bundled).name
    want = vizlib.activations(bundled, [img], [layer])[layer]
    arr = np.asarray(img)
    for given in ([arr], arr, [arr.astype(np.float32)], [np.asarray(img.convert("L"))]):
        got = vizlib.activations(bundled, given, [layer])[layer]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    at_size = np.asarray(img.convert("L").resize(bundled.input_size[::-1], Image.BILINEAR))[..., None]
    np.testing.assert_allclose(vizlib.activations(bundled, at_size, [layer])[layer], want, rtol=1e-5, atol=1e-6)
    assert vizlib.predict(bundled, arr) == vizlib.predict(bundled, [img])
    np.testing.assert_array_equal(vizlib.attribution(bundled, arr, "gradcam"), vizlib.attribution(bundled, img, "gradcam"))
    for bad, words in ((["cat.jpg"], "Image 0 is a str"), ([img, np.full((9, 9, 3), np.nan)], "Image 1 has NaN"),
                       ([np.zeros((2, 9, 9, 3))], "Image 0 is an array of shape (2, 9, 9, 3)"),
                       ([np.zeros((9, 9, 2))], "Image 0 is an array of shape (9, 9, 2)"),
                       ([np.array([[None]])], "object"), (np.zeros((3, 100, 80, 3)), "Expected a batch")):
        with pytest.raises(InputError, match=re.escape(words)):
            vizlib.activations(bundled, bad, [layer])


def test_unknown_layer_and_non_spatial_layer(bundled):
    with pytest.raises(InputError, match="Did you mean conv2d_"):
        find_layer(bundled, "conv2d_l")
    with pytest.raises(InputError, match="not a 2D map"):
        vizlib.activations(bundled, [vizlib.load_sample("cat")], ["predictions"])


def test_activation_budget_refuses_huge_requests(bundled):
    img = vizlib.load_sample("cat")
    with pytest.raises(InputError, match="MB of activations"):
        forward(bundled, [img] * 4, ["conv2d_1"], max_bytes=100_000)


def test_unknown_model_name():
    with pytest.raises(InputError, match="Unknown model"):
        load_model("vgg17")


def test_imagenet_weights_offline_fail_fast(monkeypatch, tmp_path):
    """No weights in the cache and no network: a clear InputError at once, never a hang."""
    import time
    from vizlib import models

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(models, "network_available", lambda *a, **k: False)
    assert not models.imagenet_weights_cached("mobilenet_v2")
    start = time.monotonic()
    with pytest.raises(InputError, match="untrained"):
        load_model("mobilenet_v2")
    with pytest.raises(InputError, match="can't be reached"):
        models.fetch_imagenet_weights("vgg16")
    assert time.monotonic() - start < 60  # generous: building the model is the slow part
    assert not list(tmp_path.rglob("*.h5"))


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CATALOGUE))
def test_catalogue_weights_file_is_what_keras_asks_for(name, monkeypatch):
    """The cached-file names and URLs in the catalogue are the ones Keras Applications request."""
    from keras.src.utils import file_utils

    seen = {}

    class Asked(Exception):
        pass

    def capture(fname=None, origin=None, *a, **k):
        seen.update(fname=fname, origin=origin, file_hash=k.get("file_hash"))
        raise Asked

    monkeypatch.setattr(file_utils, "get_file", capture)
    with pytest.raises(Asked):
        CATALOGUE[name].build("imagenet")
    assert seen["fname"] == CATALOGUE[name].weights_file
    assert seen["origin"] == CATALOGUE[name].weights_url
    assert seen["file_hash"] == CATALOGUE[name].weights_hash  # vizlib asks Keras to check the same hash


def test_untrained_catalogue_model_is_labelled():
    m = load_model("mobilenet_v2", weights=None)
    assert m.untrained and "untrained" in m.label
    assert m.input_size == (224, 224) and m.channels == 3 and len(m.class_names) == 1000
    assert first_conv(m).name == "Conv1"
    top = vizlib.predict(m, [vizlib.load_sample("cat")])[0]
    assert len(top) == 5 and all(isinstance(n, str) for n, _ in top)


# --------------------------------------------------------------------- across images, stats


def test_channel_across_images_equals_the_layer_slice(bundled):
    images = [vizlib.load_sample(n) for n in ("astronaut_face", "cat", "coffee", "horse", "brick")]
    calls = []
    maps = channel_across_images(bundled, images, "conv2d_1", 5, batch_size=2,
                                 progress=lambda d, t: calls.append((d, t)))
    assert maps.shape == (5, 62, 62)
    full = vizlib.activations(bundled, images, ["conv2d_1"])["conv2d_1"][..., 5]
    np.testing.assert_allclose(maps, full, atol=1e-5)
    assert calls == [(2, 5), (4, 5), (5, 5)]
    with pytest.raises(InputError, match="channels 0 to 7"):
        channel_across_images(bundled, images, "conv2d_1", 8)


def test_top_channels_and_stats():
    maps = np.zeros((4, 4, 5), dtype=np.float32)
    maps[..., 3] = 2.0
    maps[..., 1] = 1.0
    maps[0, 0, 4] = 10.0  # high max, low mean
    assert top_channels(maps, 2) == [3, 1]
    assert top_channels(maps, 1, by="max") == [4]
    assert pick_channels(maps, 3, "first") == [0, 1, 2]
    assert pick_channels(maps, 99, "top")[:2] == [3, 1]
    s = channel_stats(maps)
    assert s["mean"][3] == 2.0 and s["max"][4] == 10.0


def test_decode_applies_softmax_to_logits_only(bundled):
    probs = np.array([[0.1, 0.0, 0.0, 0.7, 0.1, 0.1, 0.0]])
    top = decode(bundled, probs, top=2)[0]
    assert top == [("happy", pytest.approx(0.7)), ("angry", pytest.approx(0.1))]
    logits = np.array([[0.0, 0.0, 0.0, 5.0, 0.0, 0.0, 0.0]])
    p = decode(bundled, logits, top=1)[0][0]
    assert p[0] == "happy" and p[1] == pytest.approx(np.exp(5) / (np.exp(5) + 6))


# --------------------------------------------------------------------- figures


def _grid_png(fig) -> np.ndarray:
    src = fig.data[0].source
    assert src.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).convert("RGB"))


def test_channel_grid_is_one_image_with_true_colours():
    maps = np.zeros((4, 4, 3), dtype=np.float32)
    maps[..., 1] = 1.0
    maps[..., 2] = 0.5
    fig = channel_grid(maps, colormap="viridis", scale="shared", title="t")
    assert [t.type for t in fig.data][:2] == ["image", "scatter"]
    png = _grid_png(fig)
    lut = colormap_lut("viridis")
    cells = fig.data[1]
    assert list(cells.customdata) == [0, 1, 2]
    # centre pixel of each cell has the LUT colour of its normalised value
    for i, value in enumerate([0, 255, 128]):
        x, y = int(cells.x[i]), int(cells.y[i])
        np.testing.assert_array_equal(png[y, x], lut[value])
    assert "channel 1" in cells.hovertext[1]


def test_channel_grid_per_channel_scale_and_selection():
    maps = np.random.default_rng(0).normal(size=(6, 6, 10)).astype(np.float32)
    maps[..., 7] *= 100
    fig = channel_grid(maps, [7, 2], scale="channel", highlight=2)
    png = _grid_png(fig)
    lut = colormap_lut("viridis")
    assert (png == lut[255]).all(axis=-1).any() and (png == lut[0]).all(axis=-1).any()
    assert len(fig.layout.shapes) == 1  # the highlighted cell
    assert not any(t.name == "scale" for t in fig.data)  # no colour bar for per-channel scaling
    with pytest.raises(InputError, match="out of range"):
        channel_grid(maps, [10])
    with pytest.raises(InputError, match="Unknown colormap"):
        channel_grid(maps, colormap="nope")


def test_big_grid_stays_small_on_the_wire():
    maps = np.random.default_rng(0).uniform(size=(14, 14, 512)).astype(np.float32)
    fig = channel_grid(maps, max_channels=512)
    assert len(fig.to_json()) < 1_500_000
    assert [t.name for t in fig.data] == ["maps", "cells", "scale"]  # too many to label: hover names them


def test_channel_detail_carries_exact_values():
    m = np.arange(12, dtype=np.float32).reshape(3, 4)
    fig = channel_detail(m, title="x")
    spec = json.loads(fig.to_json())
    assert fig.data[0].type == "heatmap"
    np.testing.assert_array_equal(np.asarray(fig.data[0].z), m)
    assert "row %{y}" in spec["data"][0]["hovertemplate"] and "activation" in spec["data"][0]["hovertemplate"]
    assert spec["layout"]["yaxis"]["range"] == [2.5, -0.5]  # row 0 on top, exactly the map's rows


def test_across_images_and_prediction_bars():
    maps = np.random.default_rng(0).uniform(size=(5, 8, 8)).astype(np.float32)
    fig = across_images(maps, ["a", "b", "c", "d", "e"])
    labels = next(t for t in fig.data if t.name == "labels")
    assert list(labels.text) == ["a", "b", "c", "d", "e"]
    with pytest.raises(InputError):
        across_images(maps, ["a"])
    bars = prediction_bars([("cat", 0.9), ("dog", 0.1)])
    assert list(bars.data[0].y) == ["dog", "cat"]


def test_weights_download_reports_progress_into_the_keras_cache(monkeypatch, tmp_path):
    """The real download path, against a local HTTP server standing in for the weights bucket."""
    import dataclasses
    import http.server
    import threading
    from vizlib import models

    payload = bytes(range(256)) * 12_000  # ~3 MB, several progress steps

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        entry = models.CATALOGUE["mobilenet_v2"]
        local = dataclasses.replace(entry)
        monkeypatch.setitem(models.CATALOGUE, "mobilenet_v2", local)
        monkeypatch.setattr(type(local), "weights_url",
                            property(lambda self: f"http://127.0.0.1:{server.server_port}/{self.weights_file}"))
        monkeypatch.setenv("KERAS_HOME", str(tmp_path))
        seen = []
        path = models.fetch_imagenet_weights("mobilenet_v2", progress=lambda d, t: seen.append((d, t)))
        assert path == tmp_path / "models" / entry.weights_file
        assert path.read_bytes() == payload
        assert models.imagenet_weights_cached("mobilenet_v2")
        assert seen[-1] == (len(payload), len(payload)) and len(seen) >= 3
        assert [d for d, _ in seen] == sorted(d for d, _ in seen)
        assert not list((tmp_path / "models").glob("*.part"))
    finally:
        server.shutdown()


def test_fully_convolutional_model_with_open_input_size():
    import keras

    inp = keras.Input((None, None, 3))
    x = keras.layers.Conv2D(4, 3, name="a")(inp)
    x = keras.layers.Conv2D(2, 3, name="b")(x)
    model = keras.Model(inp, x)
    m = describe_keras_model(model)
    assert m.input_size == (224, 224)
    assert [(i.name, i.output_shape) for i in spatial_layers(m)] == [("a", (222, 222, 4)), ("b", (220, 220, 2))]
    acts = vizlib.activations(m, [vizlib.load_sample("cat")], ["b"])
    assert acts["b"].shape == (1, 220, 220, 2)
