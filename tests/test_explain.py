"""Why this prediction? Grad-CAM, contributions, receptive fields, depth profile: how we know they are right.

* Grad-CAM agrees with an independent implementation of the published recipe,
  finds the object on a tiny CNN trained here on synthetic images where the
  answer is known (pointing game), and fails to on the same CNN untrained;
  trained and randomised models give maps with low rank correlation (Adebayo
  et al., 2018), on that CNN and on the bundled model.
* Receptive fields equal the empirical ones (where the gradient of one output
  cell with respect to the input is non-zero) on models with strides, "same"
  padding on even sizes, dilation, pooling, padding, upsampling, transposed
  convolutions, branches and nesting, and VGG16's published sizes.
* The depth profile equals statistics computed directly from the activations,
  from one forward pass.
* Gradients through the bundled model and every catalogue architecture run in a
  child process that must exit cleanly (the oneDNN heap corruption).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import vizlib
import vizlib.permodel
from vizlib import explain as E
from vizlib import explain_figures as F
from vizlib.errors import InputError

ROOT = Path(__file__).resolve().parent.parent


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation with average ranks for ties (no scipy needed)."""

    def ranks(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64).ravel()
        order = np.argsort(x, kind="stable")
        r = np.empty(len(x))
        r[order] = np.arange(len(x))
        _, inv, counts = np.unique(x, return_inverse=True, return_counts=True)
        sums = np.zeros(len(counts))
        np.add.at(sums, inv, r)
        return (sums / counts)[inv]

    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


@pytest.fixture(scope="module")
def face():
    return vizlib.load_sample("astronaut_face")


# --------------------------------------------------------------------------- Grad-CAM: the contract


def test_gradcam_contract_on_the_bundled_model(bundled, face):
    cam = E.gradcam(bundled, face)
    assert cam.shape == (64, 64) and cam.dtype == np.float32
    assert cam.min() >= 0.0 and cam.max() == pytest.approx(1.0)
    top_name = vizlib.predict(bundled, [face])[0][0][0]
    ex = E.explain_class(bundled, face)
    assert ex.class_name == top_name == "happy"
    assert ex.layer == vizlib.layers.final_feature_map(bundled).name == "conv2d_7"
    assert ex.method == "gradcam" and ex.is_final and ex.target == "logit"
    assert np.array_equal(ex.cam, cam)
    assert ex.probability == pytest.approx(float(vizlib.predict(bundled, [face])[0][0][1]), rel=1e-4)
    meta = E.gradcam_method(bundled, "conv2d_1")
    assert meta["method"] == "layercam" and not meta["is_final"] and meta["final_layer"] == "conv2d_7"
    assert E.gradcam_method(bundled, "conv2d_1", method="gradcam")["method"] == "gradcam"
    assert E.final_layer(bundled) == "conv2d_7"


def test_gradcam_explains_the_class_asked_for(bundled, face):
    maps = [E.explain_class(bundled, face, class_index=c) for c in range(7)]
    assert [m.class_index for m in maps] == list(range(7))
    assert [m.class_name for m in maps] == list(vizlib.models.EMOTIONS)
    # The bundled head is conv2d_7 (one channel per emotion) -> global average -> softmax:
    # the class score's gradient reaches exactly the class's own channel.
    for c, m in enumerate(maps):
        assert np.flatnonzero(m.weights).tolist() == [c]
        assert m.ranked_channels(1)[0]["channel"] == c or m.contributions[c] <= 0
    assert any(not np.allclose(maps[0].cam, m.cam) for m in maps[1:])


def test_user_errors_are_input_errors(bundled, face):
    with pytest.raises(InputError, match="out of range"):
        E.gradcam(bundled, face, class_index=7)
    with pytest.raises(InputError, match="no layer named"):
        E.gradcam(bundled, face, layer="nope")
    with pytest.raises(InputError, match="not a 2D map"):
        E.gradcam(bundled, face, layer="global_average_pooling2d_1")
    with pytest.raises(InputError, match="Unknown method"):
        E.gradcam(bundled, face, method="saliency")
    with pytest.raises(InputError, match="no cell"):
        E.receptive_field(bundled, "conv2d_7", 4, 0)
    with pytest.raises(InputError, match="no channel"):
        E.conv_arithmetic(bundled, face, 0, 0, channel=8)


def test_a_model_without_class_scores_has_maps_but_no_gradcam():
    import keras

    km = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(4, 3), keras.layers.Conv2D(2, 3, name="last")])
    assert E.final_layer(km) == "last" and E.gradcam_method(km)["target"] is None
    assert E.receptive_field(km, "last", 0, 0) == (0, 0, 5, 5)
    assert len(E.depth_profile(km, np.zeros((16, 16, 3), np.float32))) == 2
    with pytest.raises(InputError, match="one output of class scores"):
        E.gradcam(km, np.zeros((16, 16, 3), np.float32))


def _reference_cam(km, layer_name, pre_name, batch, class_index, method):
    """The keras.io Grad-CAM recipe, written independently: a grad model per call, tape, numpy."""
    import keras
    import tensorflow as tf

    from vizlib.layers import trace

    tr = trace(km)
    grad_model = keras.Model(tr.input, [tr.outputs[layer_name], tr.outputs[pre_name]])
    with tf.GradientTape() as tape:
        conv_out, logits = grad_model(batch)
        score = logits[:, class_index]
    grads = tape.gradient(score, conv_out)[0].numpy()
    conv = conv_out[0].numpy()
    if method == "gradcam":
        cam = conv @ grads.mean(axis=(0, 1))
    else:
        cam = (np.maximum(grads, 0) * conv).sum(axis=-1)
    cam = np.maximum(cam, 0)
    return cam / cam.max(), (grads * conv).mean(axis=(0, 1))


@pytest.mark.parametrize("layer, method", [("conv2d_7", "gradcam"), ("conv2d_3", "layercam"),
                                           ("separable_conv2d_5", "layercam")])
def test_gradcam_equals_the_reference_recipe(bundled, face, layer, method):
    # conv2d_3 and separable_conv2d_5 sit inside residual blocks: the head must take the shortcut too.
    batch = bundled.preprocess(bundled.raw_batch([face]))
    for c in (3, 0):
        ex = E.explain_class(bundled, face, class_index=c, layer=layer)
        assert ex.method == method
        ref, contrib = _reference_cam(bundled.model, layer, "global_average_pooling2d_1", batch, c, method)
        np.testing.assert_allclose(ex.layer_cam, ref, atol=2e-5)
        np.testing.assert_allclose(ex.contributions, contrib, rtol=1e-4, atol=1e-7)


def test_class_switch_reuses_the_forward_pass(bundled, face):
    other = vizlib.load_sample("cat")
    layer = "separable_conv2d_5"  # a mid layer: trunk = half the model, head takes the shortcut too
    first = E.explain_class(bundled, other, class_index=1, layer=layer)
    switched = E.explain_class(bundled, other, class_index=5, layer=layer)
    assert switched.reused_features
    assert first.class_index == 1
    vizlib.permodel.clear()
    fresh = E.explain_class(bundled, other, class_index=5, layer=layer)
    assert not fresh.reused_features
    np.testing.assert_array_equal(fresh.cam, switched.cam)
    np.testing.assert_array_equal(fresh.contributions, switched.contributions)
    assert not E.explain_class(bundled, face.rotate(90), class_index=5, layer=layer).reused_features


# --------------------------------------------------------------------------- a model where the answer is known

@pytest.fixture(scope="module")
def known():
    """A tiny CNN trained for a few seconds: does the image hold a square, a ring, a plus (sigmoid each)?

    Each class needs positive evidence (an image may hold none), so "where did it
    look for the ring" has one right answer: the ring, not the X beside it.
    """
    from shapes_model import train_shapes_model

    return train_shapes_model()


def _pointing(model, images, classes, boxes, tolerance: int = 2):
    hits, cams = 0, []
    for img, c, (t, left, b, r) in zip(images, classes, boxes):
        ex = E.explain_class(model, img, class_index=int(c))
        cams.append(ex.cam)
        y, x = np.unravel_index(np.argmax(ex.cam), ex.cam.shape)
        hits += (t - tolerance <= y < b + tolerance) and (left - tolerance <= x < r + tolerance)
    return hits / len(images), cams


def test_pointing_game_trained_finds_the_object_untrained_does_not(known):
    m, xt, classes, boxes = known
    assert E.final_layer(m) == "features"
    assert E.explain_class(m, xt[0]).target == "logit"  # the score before the sigmoid
    trained, cams = _pointing(m, xt, classes, boxes)
    untrained, ucams = _pointing(vizlib.untrained(m, seed=0), xt, classes, boxes)
    assert trained >= 0.9, f"Grad-CAM's peak on the object in {trained:.0%} of images"
    assert untrained <= 0.5, f"untrained copy's peak on the object in {untrained:.0%} of images"
    # Model randomisation (Adebayo et al.): the trained and the randomised maps must differ.
    rho = np.mean([_spearman(a, b) for a, b in zip(cams, ucams)])
    assert rho < 0.5, f"mean rank correlation trained vs randomised {rho:.2f}"


def test_randomisation_sanity_check_on_the_bundled_model(bundled):
    names = list(vizlib.SAMPLES)
    rand = vizlib.untrained(bundled, seed=0)
    rhos = []
    for name in names:
        img = vizlib.load_sample(name)
        a = E.explain_class(bundled, img)
        b = E.explain_class(rand, img, class_index=a.class_index)
        rhos.append(_spearman(a.cam, b.cam))
    assert np.mean(rhos) < 0.5, f"mean rank correlation {np.mean(rhos):.2f} over {len(names)} samples"
    # A copy with the same seed gives the same map (a link reproduces it); another seed does not.
    img = vizlib.load_sample(names[0])
    same = E.explain_class(vizlib.untrained(bundled, seed=0), img, class_index=3)
    np.testing.assert_allclose(same.cam, E.explain_class(rand, img, class_index=3).cam, atol=1e-6)
    other = E.explain_class(vizlib.untrained(bundled, seed=1), img, class_index=3)
    assert not np.allclose(other.cam, same.cam, atol=1e-3)


# --------------------------------------------------------------------------- receptive fields


def _empirical_box(km, layer: str, row: int, col: int, n: int = 32, seed: int = 0):
    """Where the gradient of cell (row, col) w.r.t. the input is non-zero, over n random inputs."""
    import keras
    import tensorflow as tf

    from vizlib.layers import trace

    tr = trace(km)
    sub = keras.Model(tr.input, tr.outputs[layer])
    shape = (n,) + tuple(int(d) for d in tr.input.shape[1:])
    x = tf.constant(np.random.default_rng(seed).normal(size=shape).astype("float32"))
    with tf.GradientTape() as tape:
        tape.watch(x)
        s = tf.reduce_sum(sub(x, training=False)[:, row, col, :])
    g = np.abs(tape.gradient(s, x).numpy()).sum(axis=(0, 3))
    rows, cols = np.flatnonzero(g.any(axis=1)), np.flatnonzero(g.any(axis=0))
    if rows.size == 0:
        return (0, 0, 0, 0)
    return (int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1)


@pytest.fixture(scope="module")
def geometry_model():
    """Strides, 'same' padding on even sizes, a residual branch, average and max pooling, dilation,
    zero padding, depthwise and separable convolutions, a nested model, upsampling, a transposed conv.
    Linear activations, so every path carries gradient."""
    import keras

    L = keras.layers
    inp = keras.Input((40, 40, 3))
    x = L.Conv2D(4, 3, padding="same")(inp)
    x = L.Conv2D(4, 3, strides=2, padding="same")(x)  # even input: TF pads 0 before, 1 after
    a = L.AveragePooling2D(2)(x)
    b = L.Conv2D(4, 1, strides=2)(x)
    x = L.Add()([a, b])
    x = L.Conv2D(4, 3, dilation_rate=2, padding="same")(x)
    x = L.MaxPooling2D(3, strides=2, padding="same")(x)
    x = L.ZeroPadding2D(((1, 0), (2, 1)))(x)
    x = L.DepthwiseConv2D(3, strides=2)(x)
    x = L.SeparableConv2D(4, 3, dilation_rate=2, padding="same")(x)
    inner = keras.Model(inp, x, name="inner")
    outer_in = keras.Input((40, 40, 3))
    y = inner(outer_in)
    y = L.Conv2D(4, 2, padding="same", name="top")(y)
    y = L.UpSampling2D(2)(y)
    y = L.Conv2DTranspose(3, 3, strides=2, padding="same", name="tconv")(y)
    return keras.Model(outer_in, y, name="geometry")


def test_receptive_fields_equal_the_empirical_ones(geometry_model):
    layers = vizlib.spatial_layers(geometry_model)
    assert any(i.name.startswith("inner/") for i in layers)
    checked = 0
    for info in layers:
        h, w, _ = info.output_shape
        for r, c in {(0, 0), (h // 2, w // 2), (h - 1, w - 1), (0, w - 1), (h - 1, 1 % w)}:
            got = E.receptive_field(geometry_model, info.name, r, c)
            assert got == _empirical_box(geometry_model, info.name, r, c), (info.name, info.kind, r, c)
            checked += 1
    assert checked > 60


def test_receptive_fields_on_mobilenet_branches(mobilenet):
    # ReLU6 and batch norm: the empirical field can only be smaller, and on random inputs it is equal.
    for name in ("block_1_expand_relu", "block_3_project", "block_6_depthwise"):
        info = vizlib.layers.find_layer(mobilenet, name)
        h, w, _ = info.output_shape
        for r, c in ((h // 2, w // 2), (0, w - 1)):
            assert E.receptive_field(mobilenet, name, r, c) == _empirical_box(mobilenet, name, r, c, n=16)


def test_receptive_field_sizes_match_published_values(nested_vgg):
    # Araujo et al., "Computing Receptive Fields of Convolutional Neural Networks" (Distill, 2019):
    # VGG16 conv5_3 sees 196 pixels, pool5 212. Here VGG16 is nested in a transfer-learning Sequential.
    model, _ = nested_vgg
    prof = {r["name"]: r for r in E.depth_profile(model, np.zeros((32, 32, 3), np.float32))}
    assert prof["vgg16/block1_conv1"]["receptive_field"] == 3
    assert prof["vgg16/block1_pool"]["receptive_field"] == 6
    assert prof["vgg16/block5_conv3"]["receptive_field"] == 196
    assert prof["vgg16/block5_pool"]["receptive_field"] == 212
    assert prof["vgg16/block5_conv3"]["jump"] == [16.0, 16.0]
    # On a 32x32 input every block5 cell sees the whole image (clipped).
    assert E.receptive_field(model, "vgg16/block5_conv3", 1, 1) == (0, 0, 32, 32)
    assert E.receptive_field(model, "vgg16/block1_conv1", 0, 0) == (0, 0, 2, 2)
    assert E.receptive_field(model, "vgg16/block1_conv2", 5, 7) == (3, 5, 8, 10)


def test_theoretical_size_equals_the_unclipped_box(geometry_model):
    # The per-layer size in the depth profile (one forward sweep) and the exact box of a cell far
    # from the borders (one backward sweep) are two computations of the same thing.
    checked = 0
    for info in vizlib.spatial_layers(geometry_model):
        h, w, _ = info.output_shape
        box = E.receptive_field_info(geometry_model, info.name, h // 2, w // 2)
        t, left, b, r = box["box"]
        if 0 < t and 0 < left and b < 40 and r < 40:
            assert box["size_hw"] == [b - t, r - left], info.name
            checked += 1
    assert checked >= 5


# --------------------------------------------------------------------------- depth profile


def test_depth_profile_equals_a_direct_computation(bundled, face):
    prof = E.depth_profile(bundled, face)
    spatial = vizlib.spatial_layers(bundled)
    assert [r["name"] for r in prof] == [i.name for i in spatial]
    assert [r["index"] for r in prof] == sorted(r["index"] for r in prof)
    acts = vizlib.activations(bundled, [face], [i.name for i in spatial])
    for row, info in zip(prof, spatial):
        a = acts[info.name][0].astype(np.float64)
        assert (row["height"], row["width"], row["channels"]) == tuple(info.output_shape)
        peaks = np.abs(a).max(axis=(0, 1))
        assert row["dead_fraction"] == pytest.approx(float((peaks == 0).mean()), abs=1e-6)
        assert row["sparsity"] == pytest.approx(float((a == 0).mean()), abs=1e-6)
        assert row["mean"] == pytest.approx(float(a.mean()), rel=1e-4, abs=1e-5)
        assert row["mean_abs"] == pytest.approx(float(np.abs(a).mean()), rel=1e-4, abs=1e-5)
        assert row["max"] == pytest.approx(float(a.max()), rel=1e-5, abs=1e-6)
    assert prof[0]["receptive_field"] == 3  # conv2d_1: one 3x3 kernel
    assert prof[-1]["name"] == "conv2d_7" and prof[-1]["jump"] == [16.0, 16.0]
    assert any(r["dead_fraction"] > 0 for r in prof)  # ReLU layers of a real image do have dead channels


def test_depth_profile_is_one_forward_pass(bundled, face, monkeypatch):
    calls = []
    from vizlib.explain import profile as P

    real = P.profile_extractor

    def counting(m):
        ext, names, with_pred = real(m)

        def run(*a, **k):
            calls.append(1)
            return ext(*a, **k)

        return run, names, with_pred

    monkeypatch.setattr(P, "profile_extractor", counting)
    prof = E.depth_profile(bundled, face)
    assert len(calls) == 1 and len(prof) == len(vizlib.spatial_layers(bundled))


# --------------------------------------------------------------------------- one convolution by hand


def test_conv_arithmetic_reproduces_the_model(bundled, face):
    a = E.conv_arithmetic(bundled, face, 10, 12, channel=3)
    assert a["layer"] == "conv2d_1" and a["patch"].shape == (3, 3, 1) and a["kernel"].shape == (3, 3, 1)
    assert a["pre_activation"] == pytest.approx(a["model_value"], abs=1e-5)
    assert a["activation"] == "linear" and a["followed_by"][:2] == ["BatchNormalization", "Activation"]
    raw = bundled.raw_batch([face])[0, 10:13, 12:15, 0]
    np.testing.assert_allclose(a["patch"][..., 0], raw / 127.5 - 1, atol=1e-5)
    assert tuple(a["box"]) == (10, 12, 13, 15)


def test_conv_arithmetic_with_relu_bias_and_padding():
    import keras

    L = keras.layers
    km = keras.Sequential([keras.Input((10, 10, 3)), L.Conv2D(5, 3, strides=2, padding="same", activation="relu",
                                                              bias_initializer="ones", name="c1"),
                           L.GlobalAveragePooling2D(), L.Dense(2)])
    rng = np.random.default_rng(0)
    img = rng.uniform(0, 255, size=(10, 10, 3)).astype("float32")
    m = vizlib.load_model(km, preprocess="unit")
    for r, c in ((0, 0), (4, 4), (2, 3)):
        for ch in range(5):
            a = E.conv_arithmetic(m, img, r, c, channel=ch)
            assert a["bias"] == 1.0 and a["activation"] == "relu"
            assert a["value"] == pytest.approx(max(a["pre_activation"], 0.0), abs=1e-6)
            assert a["value"] == pytest.approx(a["model_value"], abs=1e-5)
    corner = E.conv_arithmetic(m, img, 4, 4)  # even input, stride 2, "same": padding only after
    assert corner["input_rows"] == [8, 9, -1] and not corner["patch"][2].any()
    assert corner["pad_before"] == [0, 0]


# --------------------------------------------------------------------------- an uploaded model in its own process


def test_explanations_of_an_isolated_model_equal_in_process(bundled, face):
    from vizlib.isolation import IsolatedModel
    from vizlib.models import BUNDLED_MODEL_PATH

    with IsolatedModel(BUNDLED_MODEL_PATH, preprocess="symmetric") as iso:
        a, b = E.explain_class(iso, face), E.explain_class(bundled, face)
        assert a.class_name == b.class_name
        np.testing.assert_allclose(a.cam, b.cam, atol=1e-6)
        assert E.explain_class(iso, face, class_index=0).reused_features  # the cache lives in the child
        assert E.receptive_field(iso, "separable_conv2d_5", 3, 3) == E.receptive_field(bundled, "separable_conv2d_5",
                                                                                       3, 3)
        p, q = E.depth_profile(iso, face), E.depth_profile(bundled, face)
        assert [r["dead_fraction"] for r in p] == [r["dead_fraction"] for r in q]
        assert E.conv_arithmetic(iso, face, 3, 4, 2)["pre_activation"] == pytest.approx(
            E.conv_arithmetic(bundled, face, 3, 4, 2)["pre_activation"], abs=1e-6)


# --------------------------------------------------------------------------- figures


def _payload(fig) -> int:
    import plotly.io as pio

    return len(pio.to_json(fig, validate=False))


def test_figures_carry_the_values_and_stay_small(bundled, face):
    view = E.model_view_array(bundled, face)
    ex = E.explain_class(bundled, face)
    fig = F.gradcam_overlay(view, ex.cam, layer_cam=ex.layer_cam, class_name=ex.class_name,
                            method=ex.method_title, layer=ex.layer, opacity=0.3)
    kinds = [t.type for t in fig.data]
    assert kinds.count("image") == 2 and "heatmap" in kinds
    heat = next(t for t in fig.data if t.type == "heatmap")
    np.testing.assert_allclose(np.asarray(heat.z), ex.layer_cam)
    assert fig.data[1].opacity == 0.3 and "happy" in fig.layout.title.text
    pair = F.gradcam_pair(view, [ex.cam, ex.cam], ["trained", "untrained"], layer_cams=[ex.layer_cam] * 2)
    assert [t.type for t in pair.data].count("image") == 4
    bars = F.contributions_bar(ex.ranked_channels(), class_name=ex.class_name, layer=ex.layer, n=5)
    assert list(bars.data[0].customdata)[::-1] == [r["channel"] for r in ex.ranked_channels(5)]
    box = E.receptive_field(bundled, "max_pooling2d_2", 2, 3)
    rf = F.receptive_field_figure(view, box, layer="max_pooling2d_2", row=2, col=3)
    outline = rf.layout.shapes[-1]
    assert (outline.y0 + 0.5, outline.x0 + 0.5, outline.y1 + 0.5, outline.x1 + 0.5) == box
    arith = F.conv_arithmetic_figure(E.conv_arithmetic(bundled, face, 10, 12, 3))
    assert sum(t.type == "heatmap" for t in arith.data) == 3
    prof = E.depth_profile(bundled, face)
    depth = F.depth_profile_figure(prof, input_size=64, highlight="conv2d_7")
    assert list(depth.data[0].customdata) == [r["name"] for r in prof]
    for f in (fig, pair, bars, rf, arith, depth):
        assert _payload(f) < 1.5 * 2**20


def test_overlay_payload_at_imagenet_size():
    # A LayerCAM at a 224x224 layer: PNG layers plus a hover grid averaged down, far under 1.5 MB.
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(224, 224, 3), dtype=np.uint8)
    cam = rng.random((224, 224)).astype(np.float32)
    fig = F.gradcam_overlay(image, cam, layer_cam=cam, layer="block1_conv1", method="LayerCAM")
    heat = next(t for t in fig.data if t.type == "heatmap")
    assert np.asarray(heat.z).shape == (112, 112)
    assert _payload(fig) < 1.5 * 2**20


# --------------------------------------------------------------------------- gradients must not take the process down


def _child(code: str, env: dict | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter. TF_ENABLE_ONEDNN_OPTS is NOT inherited (this process has it
    set by vizlib): the child's own ``import vizlib`` must be what turns oneDNN off."""
    full_env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    full_env.update({"PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})})
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, env=full_env, cwd=str(ROOT))


_GRADIENT_CHILD = """
    import gc, json, sys
    import numpy as np
    import vizlib                      # first: turns oneDNN off before TensorFlow loads
    from vizlib import explain as E
    import keras, tensorflow as tf
    assert not E.onednn_enabled(), "vizlib must turn oneDNN off"
    img = vizlib.load_sample("cat")
    for name in sys.argv[1:]:
        m = vizlib.load_model(name) if name == "emotion_cnn" else vizlib.load_model(name, weights=None)
        ex = E.explain_class(m, img)                          # Grad-CAM at the final feature map
        assert ex.cam.shape == tuple(m.input_size) and np.isfinite(ex.cam).all()
        x = tf.constant(m.preprocess(m.raw_batch([img])))     # and the input gradient through every layer
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = m.model(x, training=False)
            score = tf.reduce_max(y)
        g = tape.gradient(score, x).numpy()
        assert np.isfinite(g).all() and np.abs(g).max() > 0
        print(json.dumps({"model": name, "layer": ex.layer, "max": float(ex.cam.max())}), flush=True)
        del m, ex, x, y, g
        keras.backend.clear_session(); gc.collect()
"""


def _gradients_in_child(names: list[str]) -> list[dict]:
    code = _GRADIENT_CHILD.replace("sys.argv[1:]", repr(names))
    proc = _child(code)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [r["model"] for r in rows] == names
    return rows


def test_gradients_through_the_bundled_model_exit_cleanly():
    # The bundled model has the crashing pattern: 1x1 stride-2 convolutions without bias on even sizes.
    (row,) = _gradients_in_child(["emotion_cnn"])
    assert row["layer"] == "conv2d_7" and row["max"] == pytest.approx(1.0)


@pytest.mark.slow  # builds all nine Keras Applications architectures (about a minute); CI runs it
def test_gradients_through_every_catalogue_model_exit_cleanly():
    rows = _gradients_in_child(list(vizlib.CATALOGUE))
    assert {r["model"]: r["layer"] for r in rows}["resnet50"] == "conv5_block3_out"


def test_gradients_refused_when_tensorflow_came_first_with_onednn():
    proc = _child("""
        import tensorflow                      # before vizlib, oneDNN on: gradients may corrupt the heap
        import vizlib
        from vizlib import explain as E
        assert E.onednn_enabled()
        try:
            E.gradcam(vizlib.load_model("emotion_cnn"), vizlib.load_sample("astronaut_face"))
        except E.GradientsUnsafe as exc:
            print("refused:", exc)
    """, env={"TF_ENABLE_ONEDNN_OPTS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "refused: TensorFlow was imported with oneDNN on" in proc.stdout
