"""One contract for every model kind: the same calls, the same answers, wherever the model lives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import vizlib
from vizlib import InputError
from vizlib.contract import VizModel, as_model
from vizlib.isolation import IsolatedModel, open_uploaded_model

REPO = Path(__file__).resolve().parents[1]
BUNDLED_FILE = REPO / "assets" / "models" / "emotion_mini_xception_fer2013.keras"


@pytest.fixture(scope="module")
def small_keras():
    import keras

    keras.utils.set_random_seed(3)
    inp = keras.Input((24, 24, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="c1")(inp)
    x = keras.layers.Conv2D(6, 3, strides=2, name="c2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(3, activation="softmax")(x)
    return keras.Model(inp, out, name="tiny")


@pytest.fixture(scope="module")
def small_file(small_keras, tmp_path_factory):
    path = tmp_path_factory.mktemp("contract") / "tiny.keras"
    small_keras.save(path)
    return path


@pytest.fixture(scope="module")
def isolated(small_file):
    with open_uploaded_model(small_file.read_bytes(), "my tiny.keras", preprocess="unit") as m:
        yield m


def _batch(n=2, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, 24, 24, 3)).astype(np.float32)


def test_every_kind_satisfies_the_protocol(small_keras, isolated):
    kinds = [vizlib.load_model("emotion_cnn"), vizlib.load_model("mobilenet_v2", weights=None),
             vizlib.load_model(small_keras), isolated]
    for m in kinds:
        assert isinstance(m, VizModel), type(m)
        assert as_model(m) is m
        assert [i.index for i in m.layers] == list(range(len(m.layers)))
        assert isinstance(m.weights_digest(), str) and len(m.weights_digest()) >= 32
    assert isolated.title == "my tiny.keras" and isolated.weights == "file" and not isolated.untrained


def test_same_op_same_answer_in_process_and_isolated(small_keras, isolated):
    here = vizlib.load_model(small_keras, preprocess="unit")
    batch = _batch()
    a = here.run("extract.forward", batch, layers=["c1", "c2"])
    b = isolated.run("extract.forward", batch, layers=["c1", "c2"])
    assert a["names"] == b["names"] == ["c1", "c2"]
    for key in ("act:c1", "act:c2", "output"):
        np.testing.assert_allclose(a[key], b[key], atol=1e-5)
    # the public functions take either kind, no branching by the caller
    for m in (here, isolated):
        acts = vizlib.activations(m, [vizlib.load_sample("cat")], ["c2"])
        assert acts["c2"].shape == (1, 10, 10, 6)
        maps = vizlib.channel_across_images(m, [vizlib.load_sample("cat")] * 3, "c2", 5)
        np.testing.assert_allclose(maps[0], acts["c2"][0, ..., 5], atol=1e-5)


def test_unknown_op_is_an_input_error_everywhere(small_keras, isolated):
    here = vizlib.load_model(small_keras)
    for m in (here, isolated):
        for name in ("extract.nope", "nosuchmodule.x", "../etc.passwd", ""):
            with pytest.raises(InputError, match="Unknown operation"):
                m.run(name, _batch(1))
    assert isolated.pid is not None  # the child survived


def test_untrained_copy_is_reproducible_and_differs(small_keras, small_file, isolated):
    here = vizlib.load_model(small_keras)
    u0, u0b, u1 = here.untrained_copy(0), vizlib.untrained(here, seed=0), here.untrained_copy(1)
    assert u0.untrained and "untrained" in u0.label and u0.key != here.key
    for w0, w0b, w1, wt in zip(u0.model.get_weights(), u0b.model.get_weights(), u1.model.get_weights(),
                               here.model.get_weights()):
        np.testing.assert_array_equal(w0, w0b)
        if w0.std() > 0:
            assert not np.array_equal(w0, w1) and not np.array_equal(w0, wt)
    assert u0.weights_digest() == u0b.weights_digest() != here.weights_digest()
    # an uploaded model's untrained copy runs in its own process, with the same weights as in-process
    file_here = vizlib.load_model(str(small_file), preprocess="unit")
    with isolated.untrained_copy(0) as iso_u:
        assert iso_u.untrained and iso_u.pid != isolated.pid
        a = file_here.untrained_copy(0).run("extract.forward", _batch(), layers=["c2"], predictions=False)
        b = iso_u.run("extract.forward", _batch(), layers=["c2"], predictions=False)
        np.testing.assert_allclose(a["act:c2"], b["act:c2"], atol=1e-5)


def test_load_model_weights_none_means_untrained_for_every_kind(small_keras):
    bundled_u = vizlib.load_model("emotion_cnn", weights=None)
    assert bundled_u.untrained and bundled_u.input_size == (64, 64)
    trained = vizlib.load_model("emotion_cnn")
    assert not np.array_equal(bundled_u.model.get_weights()[0], trained.model.get_weights()[0])
    assert vizlib.load_model(small_keras, weights=None).untrained
    cat_u = vizlib.load_model("mobilenet_v2", weights=None)
    assert cat_u.key == "mobilenet_v2:untrained"
    again = vizlib.load_model("mobilenet_v2", weights=None)
    np.testing.assert_array_equal(cat_u.model.get_weights()[0], again.model.get_weights()[0])


def test_upload_suffix_is_sniffed_not_trusted(small_file):
    from vizlib.isolation import sniff_model_suffix

    data = small_file.read_bytes()
    assert sniff_model_suffix(data, "evil.h5") == ".keras"
    assert sniff_model_suffix(b"\x89HDF\r\n\x1a\nrest", "x.keras") == ".h5"
    assert sniff_model_suffix(b"garbage", "x.hdf5") == ".h5"
    with pytest.raises(InputError) as info:
        open_uploaded_model(b"not a model at all", "../../etc/passwd.keras")
    assert "passwd.keras" in str(info.value) and "/etc" not in str(info.value)


def test_isolated_model_is_not_special_cased():
    import inspect

    import vizlib.extract
    import vizlib.layers

    for mod in (vizlib.extract, vizlib.layers):
        assert "isolated" not in inspect.getsource(mod)
    assert not hasattr(IsolatedModel, "isolated")


def test_pinned_library_signatures():
    """Other code calls these exactly as the issues pinned them."""
    import inspect

    def params(fn):
        return [(p.name, p.kind.name, p.default) for p in inspect.signature(fn).parameters.values()]

    assert params(vizlib.gradcam)[:4] == [("model", "POSITIONAL_OR_KEYWORD", inspect._empty),
                                          ("image", "POSITIONAL_OR_KEYWORD", inspect._empty),
                                          ("class_index", "POSITIONAL_OR_KEYWORD", None),
                                          ("layer", "POSITIONAL_OR_KEYWORD", None)]
    assert [p[0] for p in params(vizlib.receptive_field)] == ["model", "layer", "row", "col"]
    assert [p[0] for p in params(vizlib.depth_profile)] == ["model", "image"]
    assert params(vizlib.untrained) == [("model", "POSITIONAL_OR_KEYWORD", inspect._empty),
                                        ("seed", "POSITIONAL_OR_KEYWORD", 0)]
    # Pinned (issue 20): these six keep their meaning; options may follow, keyword-only with defaults.
    fv = params(vizlib.feature_visualization)
    assert fv[:6] == [
        ("model", "POSITIONAL_OR_KEYWORD", inspect._empty), ("layer", "POSITIONAL_OR_KEYWORD", inspect._empty),
        ("channels", "POSITIONAL_OR_KEYWORD", inspect._empty), ("size", "KEYWORD_ONLY", None),
        ("steps", "KEYWORD_ONLY", None), ("seed", "KEYWORD_ONLY", 0)]
    assert all(kind == "KEYWORD_ONLY" and default is not inspect._empty for _, kind, default in fv[6:]), fv[6:]
    # Pinned (issue 23), exactly.
    assert params(vizlib.attribution) == [
        ("model", "POSITIONAL_OR_KEYWORD", inspect._empty), ("image", "POSITIONAL_OR_KEYWORD", inspect._empty),
        ("method", "POSITIONAL_OR_KEYWORD", inspect._empty), ("class_index", "KEYWORD_ONLY", None),
        ("layer", "KEYWORD_ONLY", None), ("seed", "KEYWORD_ONLY", 0), ("normalize", "KEYWORD_ONLY", True),
        ("baseline", "KEYWORD_ONLY", "black")]
    assert params(vizlib.faithfulness) == [
        ("model", "POSITIONAL_OR_KEYWORD", inspect._empty), ("image", "POSITIONAL_OR_KEYWORD", inspect._empty),
        ("saliency", "POSITIONAL_OR_KEYWORD", inspect._empty), ("class_index", "KEYWORD_ONLY", None),
        ("steps", "KEYWORD_ONLY", 20)]
    from vizlib import atlas

    assert params(atlas.load)[0][:2] == ("directory", "POSITIONAL_OR_KEYWORD")


def test_importing_vizlib_loads_no_tensorflow_and_turns_onednn_off():
    import subprocess
    import sys

    code = ("import os, sys; os.environ.pop('TF_ENABLE_ONEDNN_OPTS', None); import vizlib; "
            "print('tensorflow' in sys.modules, 'keras' in sys.modules, os.environ.get('TF_ENABLE_ONEDNN_OPTS'))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=str(REPO), timeout=120)
    assert out.stdout.split() == ["False", "False", "0"], out.stdout + out.stderr
