"""Bad input to the library and the command lines, found by a probe with files and values no issue named.

Each case must be a clear InputError (the command line: exit 2 and one line), never a raw TypeError or
ValueError from three calls down, a hang, or a wrong reason.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

import vizlib
from vizlib.errors import InputError

LAYER = "conv2d_7"


@pytest.fixture(scope="module")
def m():
    return vizlib.load_model("emotion_cnn")


@pytest.mark.parametrize("images, says", [
    (None, "not NoneType"),
    (5, "not int"),
    ("/tmp/photo.jpg", "vizlib.load_image(path)"),
    ([np.zeros((1, 100000, 3), np.uint8)], "65,535 pixels a side"),  # was: "the limit is 40 megapixels"
    ([Image.new("RGB", (100000, 1))], "65,535 pixels a side"),  # a PIL image went through unchecked
    ([Image.new("RGB", (0, 0))], "empty (0x0 pixels)"),  # accepted, while a 0x0 array was refused
    (np.full((1, 64, 64, 1), np.nan, np.float32), "NaN or infinite"),  # a preprocessed batch of NaN
    (np.empty((1, 64, 64, 1), object), "batch of numbers"),
])
def test_bad_images_are_input_errors_that_say_why(m, images, says):
    with pytest.raises(InputError) as err:
        vizlib.activations(m, images, [LAYER])
    assert says in str(err.value), str(err.value)
    with pytest.raises(InputError):
        vizlib.channel_across_images(m, images, LAYER, 0)


def test_no_layers_is_an_input_error_and_one_pil_image_is_a_list_of_one(m):
    cat = vizlib.load_sample("cat")
    with pytest.raises(InputError, match="at least one layer"):
        vizlib.activations(m, [cat], [])
    one = vizlib.activations(m, cat, [LAYER])[LAYER]
    np.testing.assert_array_equal(one, vizlib.activations(m, [cat], [LAYER])[LAYER])


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes on this platform")
def test_a_pipe_named_like_a_dataset_is_refused_at_once(tmp_path, capsys):
    """A FIFO named .zip or .parquet hung `atlas build` for ever (opening it waits for a writer)."""
    from vizlib.atlas.__main__ import main
    from vizlib.atlas.sources import list_source

    for name in ("pipe.zip", "pipe.parquet", "pipe.arrow"):
        fifo = tmp_path / name
        os.mkfifo(fifo)
        with pytest.raises(InputError, match="not a regular file"):
            list_source(fifo)
        with pytest.raises(InputError, match="not a regular file"):
            list_source(fifo.as_uri())
        code = main(["build", "--model", "emotion_cnn", "--images", str(fifo), "--out", str(tmp_path / "a"),
                     "--quiet"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and "not a regular file" in err[0], err


def test_zip_members_left_out_are_named_not_dropped_without_a_word(tmp_path, capsys):
    """A nested ZIP and an image whose path climbs out with '..' were left out in silence: a ZIP of ZIPs said only
    "No images found", and a build from a ZIP with both reported every image read. A README is still not news."""
    import io
    import zipfile

    from vizlib.atlas.__main__ import main
    from vizlib.atlas.sources import list_source

    buf = io.BytesIO()
    vizlib.load_sample("cat").save(buf, "PNG")
    mixed = tmp_path / "mixed.zip"
    with zipfile.ZipFile(mixed, "w") as z:
        z.writestr("faces/a.png", buf.getvalue())
        z.writestr("../../evil.png", buf.getvalue())
        z.writestr("more/inner.zip", b"PK\x05\x06" + bytes(18))
        z.writestr("README.txt", "about")
    listing = list_source(mixed)
    assert listing.names == ["faces/a.png"]
    assert listing.ignored == {"unsafe": ["../../evil.png"], "nested": ["more/inner.zip"]}
    code = main(["build", "--model", "emotion_cnn", "--images", str(mixed), "--out", str(tmp_path / "a"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 0
    assert "a ZIP inside the ZIP (more/inner.zip)" in err and "unzip them" in err, err
    assert "an image whose path leaves the archive (../../evil.png)" in err and "README" not in err, err

    only = tmp_path / "zips.zip"
    with zipfile.ZipFile(only, "w") as z:
        for i in range(5):
            z.writestr(f"part{i}.zip", b"PK\x05\x06" + bytes(18))
    with pytest.raises(InputError) as err:
        list_source(only)
    assert "No images found" in str(err.value) and "5 ZIPs inside the ZIP (part0.zip, part1.zip, part2.zip, …)" \
        in str(err.value), str(err.value)


def test_a_build_where_no_image_could_be_read_is_not_a_success(tmp_path, capsys):
    from vizlib.atlas.__main__ import main

    folder = tmp_path / "zero"
    folder.mkdir()
    for i in range(3):
        (folder / f"z{i}.jpg").write_bytes(b"")
    code = main(["build", "--model", "emotion_cnn", "--images", str(folder), "--out", str(tmp_path / "a"),
                 "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1] == "error: none of the 3 images could be read (the reasons are listed above)", err
    assert sum("is empty (0 bytes)" in line for line in err) == 3
    # One readable image among them: a success, with the others listed as skipped.
    vizlib.load_sample("cat").save(folder / "cat.jpg")
    assert main(["build", "--model", "emotion_cnn", "--images", str(folder), "--out", str(tmp_path / "b"),
                 "--quiet"]) == 0


def test_a_model_that_needs_its_own_code_says_so_without_keras_internals(tmp_path):
    """A conv whose activation is a Python lambda: Keras' own message named its internal classes and
    from_config(); the user learns instead why (code in a model file is never run) and what to do."""
    import keras

    inp = keras.Input((16, 16, 1))
    out = keras.layers.Conv2D(4, 3, activation=lambda t: t * 2.0)(inp)
    path = tmp_path / "lambda_activation.keras"
    keras.Model(inp, out).save(path)
    with pytest.raises(InputError) as err:
        vizlib.load_model(str(path))
    text = str(err.value)
    assert "custom layer, activation or function" in text and "never run" in text, text
    assert "keras.src" not in text and "from_config" not in text, text


@pytest.mark.parametrize("call, says", [
    (lambda m: vizlib.feature_visualization(m, LAYER, [0.5]), "a list of whole numbers, not the list [0.5]"),
    (lambda m: vizlib.feature_visualization(m, LAYER, [1, 0.5]), "not the list [1, 0.5]"),
    (lambda m: vizlib.feature_visualization(m, LAYER, [*range(100), "a"]), "not the list [0, 1, 2, 3, 4, 5, ...]"),
    (lambda m: vizlib.load_image(None), "should be text or a path or bytes"),
])
def test_argument_messages_name_what_was_given(m, call, says):
    """'should be a list of a whole number, not a list' and 'ForwardRef(...)' were what the checks said."""
    with pytest.raises(InputError) as err:
        call(m)
    assert says in str(err.value) and "ForwardRef" not in str(err.value), str(err.value)


@pytest.mark.parametrize("channels, says", [
    ("5-1", "runs backwards; write it as 1-5"),  # was: "No channels chosen."
    ("0-999999999999", "goes past the layer's last channel, 6"),  # refused before a list of 10**12 is made
    ("a-b", "is not a channel number"),
])
def test_precompute_channel_ranges_are_checked_before_use(channels, says, capsys):
    from vizlib.featvis.__main__ import main

    code = main(["precompute", "--model", "emotion_cnn", "--layers", LAYER, "--channels", channels, "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and says in err[0], err


@pytest.mark.parametrize("command", [
    ["vizlib.featvis", "precompute", "--model", "emotion_cnn", "--layers", ""],
    ["vizlib.featvis", "precompute", "--model", "emotion_cnn", "--layers", " , "],
    ["vizlib.featvis", "precompute", "--model", "emotion_cnn", "--layers", LAYER, "--channels", ""],
    ["vizlib.atlas", "build", "--model", "emotion_cnn", "--images", "{images}", "--out", "{out}", "--layers", ""],
    ["vizlib.atlas", "build", "--model", "emotion_cnn", "--images", "{images}", "--out", "{out}", "--featvis-layers",
     ","],
    ["vizlib.atlas", "featvis", "--model", "emotion_cnn", "--out", "{out}", "--layers", ""],
])
def test_an_empty_list_option_is_refused_not_read_as_the_default(command, tmp_path, capsys):
    """`--layers ""` silently meant "the default layers" (a script's empty variable, and a whole build ran on layers
    nobody chose); now one line that says so, exit 2, before any model loads and nothing written."""
    import importlib

    folder = tmp_path / "images"
    folder.mkdir()
    vizlib.load_sample("cat").save(folder / "cat.png")
    out = tmp_path / "out"
    main = importlib.import_module(command[0] + ".__main__").main
    code = main([a.format(images=folder, out=out) for a in command[1:]] + ["--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "is empty" in err[0] and "leave" in err[0], err
    assert not out.exists()


def test_unknown_weights_are_refused_not_ignored():
    with pytest.raises(InputError, match="weights must be 'imagenet'"):
        vizlib.load_model("emotion_cnn", weights="zzz")
    assert vizlib.load_model("emotion_cnn", weights="untrained").untrained


# --------------------------------------------------------------------------- hostile models (probe of 2026-12-07)


def _tiny(head: str = "softmax3", **conv) -> "keras.Model":
    import keras

    inp = keras.Input((16, 16, 3), dtype=conv.pop("dtype", "float32"))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="c1", **conv)(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    units, act = {"softmax3": (3, "softmax"), "softmax1": (1, "softmax"), "sigmoid1": (1, "sigmoid"),
                  "linear1": (1, None)}[head]
    return keras.Model(inp, keras.layers.Dense(units, activation=act, name="head")(x))


def test_models_that_would_give_garbage_are_refused_in_plain_words(tmp_path):
    """A NaN weight, a uint8 input and a channels-first layout loaded (or failed deep in Keras) and then gave
    all-zero maps, NaN predictions and 'the dashboard feeds 16 channels' (the image's height)."""
    import keras

    nan = _tiny()
    w = nan.get_layer("c1").get_weights()
    w[0][0, 0, 0, 0] = np.nan
    nan.get_layer("c1").set_weights(w)
    nan.save(tmp_path / "nan.keras")
    with pytest.raises(InputError, match=r"'c1/kernel' hold 1 NaN or infinite value: every result"):
        vizlib.load_model(str(tmp_path / "nan.keras"))
    with pytest.raises(InputError, match="NaN or infinite"):  # a keras.Model from a notebook too
        vizlib.load_model(nan)
    with pytest.raises(InputError, match="input is uint8: gradients"):
        vizlib.load_model(_tiny(dtype="uint8"))
    inp = keras.Input((3, 16, 16))
    first = keras.Model(inp, keras.layers.Conv2D(4, 3, data_format="channels_first")(inp))
    with pytest.raises(InputError, match=r"channels-first images \(3, 16, 16\)"):
        vizlib.load_model(first)
    assert vizlib.load_model(_tiny()).channels == 3  # the same model, healthy, still loads


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, True])
def test_a_seed_out_of_range_is_an_input_error_on_every_entry_point(m, seed):
    img = vizlib.load_sample("astronaut_face")
    for call in (lambda: vizlib.feature_visualization(m, LAYER, [0], steps=1, seed=seed),
                 lambda: vizlib.attribution(m, img, "smoothgrad", seed=seed),
                 lambda: vizlib.untrained(m, seed=seed)):
        with pytest.raises(InputError, match="whole number") as err:  # a float or bool: the type check's words
            call()
        assert "seed" in str(err.value) and str(seed) in str(err.value)


def test_a_negative_seed_on_the_command_line_is_one_line(capsys):
    from vizlib.featvis.__main__ import main

    code = main(["precompute", "--model", "emotion_cnn", "--layers", LAYER, "--channels", "0", "--seed", "-1",
                 "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "seed must be a whole number" in err[0], err


def test_outputs_without_a_class_probability_are_named_not_scored():
    """Softmax over one class is 1 for any image, and a regression's output was 'probability 1.0' too: deletion and
    insertion came out 1.0 for any map, a random one included. A sigmoid output is a real probability."""
    img = vizlib.load_sample("cat")
    with pytest.raises(InputError, match="softmax over one class"):
        vizlib.explain_class(vizlib.load_model(_tiny("softmax1")), img)
    linear = vizlib.load_model(_tiny("linear1"))
    with pytest.raises(InputError, match="no sigmoid or softmax"):
        vizlib.faithfulness(linear, img, np.ones((16, 16), np.float32), steps=2)
    sig = vizlib.load_model(_tiny("sigmoid1"))
    f = vizlib.faithfulness(sig, img, np.random.default_rng(0).random((16, 16)).astype(np.float32), steps=4)
    p = vizlib.explain_class(sig, img).probabilities[0]
    assert 0 < p < 1 and f["deletion"][0] == pytest.approx(p, abs=1e-5)


def test_two_outputs_and_no_feature_maps_are_input_errors():
    import keras

    inp = keras.Input((16, 16, 3))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3, name="c1")(inp))
    two = vizlib.load_model(keras.Model(inp, [keras.layers.Dense(2)(x), keras.layers.Dense(3)(x)]))
    img = vizlib.load_sample("cat")
    with pytest.raises(InputError, match="several outputs"):
        vizlib.predict(two, [img])
    assert vizlib.activations(two, [img], ["c1"])["c1"].shape == (1, 14, 14, 4)
    inp = keras.Input((16, 16, 3))
    dense = vizlib.load_model(keras.Model(inp, keras.layers.Dense(3)(keras.layers.Flatten()(inp))))
    with pytest.raises(InputError, match="no layers with 2D spatial output"):
        vizlib.depth_profile(dense, img)


def test_an_atlas_of_overflowing_activations_reads_back(tmp_path):
    """Finite weights can overflow to inf: the build wrote ties of inf, and its own reader called the atlas
    'not ordered highest first' (inf - inf is NaN)."""
    from vizlib.atlas import reader

    huge = _tiny()
    w = huge.get_layer("c1").get_weights()
    w[0][:] = 3e38
    huge.get_layer("c1").set_weights(w)
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("cat", "astronaut_face"):
        vizlib.load_sample(name).save(folder / f"{name}.png")
    vizlib.atlas.build(vizlib.load_model(huge), folder, tmp_path / "atlas", layers=["c1"], top=2)
    top = reader.load(tmp_path / "atlas").top("c1", 0)
    assert len(top) == 2 and all(np.isinf(t["value"]) for t in top)


def _rescaling_model(scale: float, offset: float = 0.0, augment: bool = True) -> "keras.Model":
    import keras

    inp = keras.Input((16, 16, 3))
    x = keras.Sequential([keras.layers.RandomFlip("horizontal")])(inp) if augment else inp
    x = keras.layers.Rescaling(scale, offset=offset)(x)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3, activation="relu", name="c1")(x))
    return keras.Model(inp, keras.layers.Dense(3, activation="softmax")(x))


def test_a_model_that_rescales_its_input_itself_gets_raw_pixels(tmp_path):
    """Keras' own tutorials put Rescaling(1/255) first in the model; the default x / 255 then fed it 0 .. 1/255, a
    near-black image, without a word. 'auto' (the default for files and keras.Models) feeds it 0..255."""
    tutorial = _rescaling_model(1 / 255)
    tutorial.save(tmp_path / "tutorial.keras")
    img = vizlib.load_sample("cat")
    for m in (vizlib.load_model(str(tmp_path / "tutorial.keras")), vizlib.load_model(tutorial)):
        assert m.preprocess_name == "raw"
        pixels = np.asarray(img.convert("RGB").resize((16, 16), Image.BILINEAR), np.float32)[None]
        first = vizlib.activations(m, [img], ["c1"])["c1"]
        assert first.max() > 0.05  # 0..255 rescaled by the model itself: not near-black
        assert m.raw_batch([img]).max() > 1 and float(np.abs(m.preprocess(pixels) - pixels).max()) == 0
    assert vizlib.load_model(str(tmp_path / "tutorial.keras"), preprocess="unit").preprocess_name == "unit"
    # keyed by the scaling applied: caches and atlases made with the old default ("unit") stay valid
    _tiny().save(tmp_path / "plain.keras")
    assert vizlib.load_model(str(tmp_path / "plain.keras")).key == vizlib.load_model(
        str(tmp_path / "plain.keras"), preprocess="unit").key
    assert vizlib.load_model(str(tmp_path / "tutorial.keras")).key.endswith(":raw")
    assert vizlib.load_model(_rescaling_model(1 / 127.5, -1, augment=False)).preprocess_name == "raw"
    assert vizlib.load_model(_rescaling_model(2.0, -1)).preprocess_name == "unit"  # expects 0..1: x / 255 is right
    assert vizlib.load_model(_tiny()).preprocess_name == "unit"
    with pytest.raises(InputError, match="Choose one of: auto, unit"):
        vizlib.load_model(_tiny(), preprocess="zzz")
