"""Attribution methods and their faithfulness: how we know the maps are right.

* Known answers on tiny models with hand-set weights: for a linear model the
  saliency map is the weights, Integrated Gradients is input x weights, and
  occluding the one weighted pixel drops the score by exactly its share; for a
  one-channel CAM model every CAM method is that channel.
* Integrated Gradients is complete: the map sums to f(x) - f(baseline).
* On a small CNN trained here where the right region is known (a class shape
  beside an equally bright distractor): every method points at the class shape
  (pointing game), Grad-CAM is more faithful than a random map (deletion and
  insertion), and every method's map changes when the weights are randomised.
* An uploaded model in its own process gives the same maps as in-process.
"""

from __future__ import annotations

import numpy as np
import pytest

import vizlib
from vizlib import explain as E
from vizlib.attribution import METHODS, blur, faithfulness, methods as AM, rank_correlation
from vizlib.errors import InputError


def _model(layers, shape, preprocess="raw"):
    import keras

    km = keras.Sequential([keras.Input(shape)] + layers)
    return km, vizlib.load_model(km, preprocess=preprocess, class_names=[f"c{i}" for i in range(2)])


@pytest.fixture(scope="module")
def linear():
    """score_c = sum(W[:, c] * x) + b_c on an 8x8 greyscale image (a 1x1 identity conv keeps it spatial)."""
    import keras

    L = keras.layers
    km, m = _model([L.Conv2D(1, 1, use_bias=False, name="pix"), L.Flatten(), L.Dense(2)], (8, 8, 1))
    km.get_layer("pix").set_weights([np.ones((1, 1, 1, 1), "float32")])
    w = np.random.default_rng(3).normal(size=(64, 2)).astype("float32")
    km.layers[-1].set_weights([w, np.array([0.5, -0.25], "float32")])
    x = np.random.default_rng(4).uniform(0, 255, size=(8, 8, 1)).astype("float32")
    return m, w, x


def test_linear_model_saliency_smoothgrad_and_ig_are_the_weights(linear):
    m, w, x = linear
    for c in (0, 1):
        weights = w[:, c].reshape(8, 8)
        np.testing.assert_allclose(vizlib.attribution(m, x, "saliency", class_index=c, normalize=False), weights,
                                   rtol=1e-5, atol=1e-6)
        # Noise changes nothing where the gradient is constant.
        np.testing.assert_allclose(vizlib.attribution(m, x, "smoothgrad", class_index=c, normalize=False), weights,
                                   rtol=1e-4, atol=1e-5)
        # From black (raw 0): input x gradient, exactly.
        np.testing.assert_allclose(vizlib.attribution(m, x, "integrated_gradients", class_index=c,
                                                      normalize=False), x[..., 0] * weights, rtol=1e-4, atol=1e-3)
        norm = vizlib.attribution(m, x, "saliency", class_index=c)
        np.testing.assert_allclose(norm, np.abs(weights) / np.abs(weights).max(), atol=1e-6)


def test_occluding_the_one_weighted_pixel(linear):
    import keras

    L = keras.layers
    km, m = _model([L.Conv2D(1, 1, use_bias=False, name="pix"), L.Flatten(), L.Dense(2)], (8, 8, 1))
    km.get_layer("pix").set_weights([np.ones((1, 1, 1, 1), "float32")])
    w = np.zeros((64, 2), "float32")
    w[3 * 8 + 4, 0] = 2.0  # class 0 reads pixel (3, 4) only
    km.layers[-1].set_weights([w, np.zeros(2, "float32")])
    x = linear[2]
    occ = vizlib.attribution(m, x, "occlusion", class_index=0, normalize=False)
    # Every patch covering (3, 4) removes 2 x its value; no patch far from it removes anything.
    assert occ[3, 4] == pytest.approx(2.0 * x[3, 4, 0], rel=1e-5)
    assert occ[3, 4] == pytest.approx(occ.max())
    far = np.ones((8, 8), bool)
    far[1:6, 2:7] = False  # the default window here is 2 pixels: 2 away or more sees nothing
    assert np.all(occ[far] == 0)
    r = m.run("attribution.occlusion", x[None], class_index=0, window=1, stride=1)
    expected = np.zeros((8, 8), "float32")
    expected[3, 4] = 2.0 * x[3, 4, 0]
    np.testing.assert_allclose(r["raw"][0], expected, rtol=1e-5, atol=1e-4)


@pytest.fixture(scope="module")
def one_channel():
    """Input -> ReLU(1x1 conv, weight 1) 'features' -> global average -> Dense [[+1, -1]]: class 0 is the map."""
    import keras

    L = keras.layers
    km, m = _model([L.Conv2D(1, 1, activation="relu", name="features"), L.GlobalAveragePooling2D(),
                    L.Dense(2)], (8, 8, 1), preprocess="symmetric")
    km.get_layer("features").set_weights([np.ones((1, 1, 1, 1), "float32"), np.zeros(1, "float32")])
    km.layers[-1].set_weights([np.array([[1.0, -1.0]], "float32"), np.zeros(2, "float32")])
    x = np.random.default_rng(5).uniform(0, 255, size=(8, 8, 1)).astype("float32")
    return m, x


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "layercam", "scorecam"])
def test_every_cam_of_a_one_channel_model_is_that_channel(one_channel, method):
    m, x = one_channel
    a = np.maximum(x[..., 0] / 127.5 - 1.0, 0.0)  # the channel: ReLU of the preprocessed pixels
    np.testing.assert_allclose(vizlib.attribution(m, x, method, class_index=0), a / a.max(), atol=1e-5)
    # Class 1 reads the channel with weight -1: no positive evidence anywhere.
    assert np.all(vizlib.attribution(m, x, method, class_index=1) == 0)


def test_gradcam_is_the_why_views_map(one_channel):
    m, x = one_channel
    np.testing.assert_allclose(vizlib.attribution(m, x, "gradcam", class_index=0), vizlib.gradcam(m, x, 0),
                               atol=1e-6)


@pytest.fixture(scope="module")
def small_cnn():
    """A random (seeded) nonlinear CNN: 3x3 convs with ReLU, pooling, softmax."""
    import keras

    keras.utils.set_random_seed(7)
    L = keras.layers
    km = keras.Sequential([keras.Input((16, 16, 3)), L.Conv2D(6, 3, activation="relu", padding="same"),
                           L.MaxPooling2D(), L.Conv2D(8, 3, activation="relu", name="features"),
                           L.GlobalAveragePooling2D(), L.Dense(3, activation="softmax")])
    k, b = km.layers[-1].get_weights()
    km.layers[-1].set_weights([k * 30.0, b])  # scores that differ by more than float noise
    m = vizlib.load_model(km, preprocess="unit", class_names=["a", "b", "c"])
    x = np.random.default_rng(8).uniform(0, 255, size=(16, 16, 3)).astype("float32")
    return m, x


@pytest.mark.parametrize("baseline", ["black", "blurred", "noise"])
def test_integrated_gradients_completeness(small_cnn, baseline):
    m, x = small_cnn
    c = 1
    r = m.run("attribution.integrated_gradients", x[None], class_index=c, baseline=baseline, steps=2048, seed=3)
    base_raw = {"black": np.zeros((1,) + x.shape, "float32"), "blurred": blur(x[None]),
                "noise": np.random.default_rng(3).uniform(0.0, 255.0, size=(1,) + x.shape).astype("float32")}
    s = m.run("attribution.scores", np.concatenate([x[None], base_raw[baseline]]))["scores"][:, c]
    gap = float(s[0] - s[1])
    assert abs(gap) > 0.1  # the check means something
    assert float(r["raw"].sum()) == pytest.approx(gap, rel=0.01)


def test_same_seed_same_map_other_seed_other_map(small_cnn):
    m, x = small_cnn
    a = vizlib.attribution(m, x, "smoothgrad", seed=1)
    np.testing.assert_array_equal(a, vizlib.attribution(m, x, "smoothgrad", seed=1))
    assert not np.allclose(a, vizlib.attribution(m, x, "smoothgrad", seed=2), atol=1e-3)
    b = vizlib.attribution(m, x, "integrated_gradients", baseline="noise", seed=1)
    np.testing.assert_array_equal(b, vizlib.attribution(m, x, "integrated_gradients", baseline="noise", seed=1))


def test_batches_of_one_give_the_same_maps(small_cnn, monkeypatch):
    """Masks, samples, path points and patches are batched; the batch size changes nothing."""
    m, x = small_cnn
    options = {"smoothgrad": {"samples": 6}, "integrated_gradients": {"steps": 6},
               "occlusion": {"window": 6, "stride": 3}}

    def maps():
        return {k: m.run(f"attribution.{AM.method_class(k).op_name}", x[None], class_index=2, seed=4,
                         **options.get(k, {}))["raw"][0] for k in METHODS}

    before = maps()
    monkeypatch.setattr(AM, "FORWARD_BATCH_BYTES", 1)
    monkeypatch.setattr(AM, "GRADIENT_BATCH_BYTES", 1)
    assert AM.images_per_call(m, AM.FORWARD_IMAGES, AM.FORWARD_BATCH_BYTES) == 1
    after = maps()
    for k in METHODS:
        scale = max(1.0, float(np.abs(before[k]).max()))
        np.testing.assert_allclose(after[k], before[k], rtol=1e-4, atol=1e-5 * scale, err_msg=k)


def test_every_map_is_in_range_at_input_size(small_cnn):
    m, x = small_cnn
    for k in METHODS:
        s = vizlib.attribution(m, x, k)
        assert s.shape == (16, 16) and s.dtype == np.float32, k
        assert s.min() >= 0.0 and s.max() == pytest.approx(1.0), k


def test_bad_input_is_an_input_error_with_the_choices(small_cnn):
    m, x = small_cnn
    with pytest.raises(InputError, match="integrated_gradients"):
        vizlib.attribution(m, x, "guided_backprop")
    with pytest.raises(InputError, match="black, blurred, noise"):
        vizlib.attribution(m, x, "integrated_gradients", baseline="grey")
    with pytest.raises(InputError, match="classes 0 to 2"):
        vizlib.attribution(m, x, "saliency", class_index=3)
    with pytest.raises(InputError, match="whole number"):
        vizlib.attribution(m, x, "saliency", class_index="dog")
    with pytest.raises(InputError, match="no layer named"):
        vizlib.attribution(m, x, "gradcam", layer="nope")
    with pytest.raises(InputError, match="16 x 16"):
        faithfulness(m, x, np.zeros((8, 8)))
    with pytest.raises(InputError, match="steps"):
        faithfulness(m, x, np.zeros((16, 16)), steps=0)


def test_gradient_methods_refuse_when_gradients_are_unsafe(small_cnn, monkeypatch):
    m, x = small_cnn
    monkeypatch.delenv("CNN_VIZ_ALLOW_ONEDNN_GRADIENTS", raising=False)
    import sys

    # Where the rule looks oneDNN up (vizlib.explain or the module inside it that holds the rule).
    monkeypatch.setattr(sys.modules[E.check_gradients_safe.__module__], "onednn_enabled", lambda: True)
    for k in METHODS:
        if AM.method_class(k).gradients:
            with pytest.raises(E.GradientsUnsafe):
                vizlib.attribution(m, x, k)
        else:  # forward passes only: still allowed
            assert vizlib.attribution(m, x, k).shape == (16, 16)


def test_faithfulness_curves_start_and_end_at_the_two_images(small_cnn):
    m, x = small_cnn
    sal = vizlib.attribution(m, x, "saliency", class_index=0)
    f = faithfulness(m, x, sal, class_index=0, steps=10)
    p = m.run("attribution.scores", np.stack([x, blur(x[None])[0]]))["probabilities"][:, 0]
    assert f["deletion"][0] == pytest.approx(p[0], abs=1e-5) and f["deletion"][-1] == pytest.approx(p[1], abs=1e-5)
    assert f["insertion"][0] == pytest.approx(p[1], abs=1e-5) and f["insertion"][-1] == pytest.approx(p[0], abs=1e-5)
    assert len(f["deletion"]) == 11 and 0.0 <= f["deletion_auc"] <= 1.0 and 0.0 <= f["insertion_auc"] <= 1.0
    # The area is the trapezoid rule over fractions 0..1.
    assert f["deletion_auc"] == pytest.approx(float(np.trapezoid(f["deletion"], f["fractions"])), abs=1e-6)


def test_links_carry_the_method():
    from vizlib import links

    state, notices = links.from_query({"view": "why", "method": "gradcam++"})
    assert state.method == "gradcam++" and not notices
    assert links.to_query(state)["method"] == "gradcam++"
    assert links.from_query(links.to_query(state))[0] == state
    assert links.as_dict(state)["method"] == "gradcam++"  # the export manifest's view
    bad, notices = links.from_query({"view": "why", "method": "guided_backprop"})
    assert bad.method == "gradcam" and "integrated_gradients" in notices[0]
    assert "method" not in links.to_query(links.ViewState(view="compare", method="occlusion"))  # why view only


# --------------------------------------------------------------------------- a model where the answer is known


@pytest.fixture(scope="module")
def known():
    from shapes_model import train_shapes_model

    return train_shapes_model()


N_KNOWN = 24  # test images per method
CHANCE = (7 + 4) ** 2 / 32 ** 2  # a peak anywhere lands in the (tolerance-grown) box this often


def _maps(model, images, classes, method):
    return [vizlib.attribution(model, img, method, class_index=int(c)) for img, c in zip(images, classes)]


def _hit(sal, box, tolerance: int = 2) -> bool:
    t, left, b, r = box
    y, x = np.unravel_index(np.argmax(sal), sal.shape)
    return (t - tolerance <= y < b + tolerance) and (left - tolerance <= x < r + tolerance)


#: Pointing-game floors (share of images whose map peaks on the class shape, not on the distractor).
#: The CAMs and Integrated Gradients find it every time here; occlusion's patches blur the peak; the
#: raw gradients peak on single pixels, often on the distractor's edges, as their papers warn.
POINTING_FLOOR = {"gradcam": 0.9, "layercam": 0.9, "gradcam++": 0.9, "scorecam": 0.9,
                  "integrated_gradients": 0.9, "occlusion": 0.65, "saliency": 2 * CHANCE, "smoothgrad": 2 * CHANCE}
#: Model randomisation (Adebayo et al., 2018), what it finds here. At a final map read by global average
#: pooling, LayerCAM and Grad-CAM++ both reduce to the sum of the positively weighted channels, and with
#: random weights that is still "where the bright shapes are": they FAIL the check on this model (and
#: the scoreboard shows it). Integrated Gradients multiplies by the input and sits in between.
RANDOMISATION = {"gradcam": "passes", "scorecam": "passes", "saliency": "passes", "smoothgrad": "passes",
                 "occlusion": "passes", "layercam": "fails", "gradcam++": "fails", "integrated_gradients": "between"}


@pytest.mark.parametrize("method", METHODS)
def test_pointing_game_and_randomisation(known, method):
    m, xt, classes, boxes = known
    rand = vizlib.untrained(m, seed=0)
    imgs, cls, bxs = xt[:N_KNOWN], classes[:N_KNOWN], boxes[:N_KNOWN]
    trained, untrained = _maps(m, imgs, cls, method), _maps(rand, imgs, cls, method)
    hits = np.mean([_hit(s, b) for s, b in zip(trained, bxs)])
    hits_untrained = np.mean([_hit(s, b) for s, b in zip(untrained, bxs) if s.max() > 0] or [0.0])
    assert hits >= POINTING_FLOOR[method], f"{method}: peak on the class shape in {hits:.0%}"
    assert hits > hits_untrained, f"{method}: trained {hits:.0%} vs untrained {hits_untrained:.0%}"
    rho = float(np.mean([rank_correlation(a, b) for a, b in zip(trained, untrained)]))
    verdict = RANDOMISATION[method]
    if verdict == "passes":
        assert rho < 0.3, f"{method}: rank correlation with the untrained twin {rho:.2f}"
    elif verdict == "fails":
        assert rho > 0.7, f"{method}: rank correlation with the untrained twin {rho:.2f}"
    else:
        assert 0.3 <= rho <= 0.7, f"{method}: rank correlation with the untrained twin {rho:.2f}"


def test_gradcam_is_more_faithful_than_a_random_map(known):
    m, xt, classes, _ = known
    rng = np.random.default_rng(0)
    dg, ig, dr, ir = [], [], [], []
    for img, c in zip(xt[:16], classes[:16]):
        g = faithfulness(m, img, vizlib.attribution(m, img, "gradcam", class_index=int(c)), class_index=int(c))
        r = faithfulness(m, img, rng.random((32, 32)), class_index=int(c))
        dg.append(g["deletion_auc"]), ig.append(g["insertion_auc"])
        dr.append(r["deletion_auc"]), ir.append(r["insertion_auc"])
    assert np.mean(dg) < np.mean(dr) - 0.05, (np.mean(dg), np.mean(dr))
    assert np.mean(ig) > np.mean(ir) + 0.05, (np.mean(ig), np.mean(ir))


# --------------------------------------------------------------------------- an uploaded model in its own process


def test_an_isolated_model_gives_the_same_maps(bundled):
    from vizlib.isolation import IsolatedModel
    from vizlib.models import BUNDLED_MODEL_PATH

    face = vizlib.load_sample("astronaut_face")
    raw = bundled.raw_batch([face])
    # Fewer samples, steps and patches than the defaults keep this quick; the code path is the same.
    options = {"smoothgrad": {"samples": 4}, "integrated_gradients": {"steps": 8},
               "occlusion": {"window": 16, "stride": 16}, "scorecam": {"max_channels": 4}}
    with IsolatedModel(BUNDLED_MODEL_PATH, preprocess="symmetric") as iso:
        for method in METHODS:
            name = f"attribution.{AM.method_class(method).op_name}"
            params = dict(class_index=2, baseline="blurred", seed=1, **options.get(method, {}))
            a, b = iso.run(name, raw, **params), bundled.run(name, raw, **params)
            assert a["class_index"] == b["class_index"] == [2]
            scale = max(1.0, float(np.abs(b["raw"]).max()))
            np.testing.assert_allclose(a["raw"], b["raw"], rtol=1e-4, atol=1e-4 * scale, err_msg=method)
            np.testing.assert_allclose(a["map"], b["map"], atol=1e-4, err_msg=method)
        # The public call and the faithfulness curves, through the child too.
        np.testing.assert_allclose(vizlib.attribution(iso, face, "saliency"),
                                   vizlib.attribution(bundled, face, "saliency"), atol=1e-5)
        sal = vizlib.attribution(bundled, face, "gradcam")
        fa, fb = faithfulness(iso, face, sal), faithfulness(bundled, face, sal)
        assert fa["deletion_auc"] == pytest.approx(fb["deletion_auc"], abs=1e-5)
        assert fa["insertion_auc"] == pytest.approx(fb["insertion_auc"], abs=1e-5)
