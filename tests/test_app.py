"""The Streamlit page, driven by Streamlit's AppTest: widgets, uploads, figures, errors, the URL."""

from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image
from streamlit.testing.v1 import AppTest

TIMEOUT = 300
APP = str(Path(__file__).resolve().parent.parent / "app.py")


def make_app(**params) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    for key, value in params.items():
        at.query_params[key] = value
    return at


def charts(at: AppTest) -> dict[str, dict]:
    """Plotly figures on the page, by widget key (the figure JSON the browser receives)."""
    out = {}
    for el in at.get("plotly_chart"):
        spec = json.loads(el.proto.spec)
        title = ((spec.get("layout") or {}).get("title") or {}).get("text", "")
        out[title or el.proto.id] = spec
    return out


def titles(at: AppTest) -> list[str]:
    return list(charts(at))


def cell_labels(spec: dict) -> list[str]:
    """The text drawn on the cells of a mosaic figure."""
    return next(list(t["text"]) for t in spec["data"] if t.get("name") == "labels")


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def png_bytes(size=(80, 60), color=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def test_default_start_shows_first_and_last_layer_and_prediction(offline):
    at = make_app().run()
    assert_clean(at)
    t = titles(at)
    assert any("First conv layer" in x and "conv2d_1" in x and "62×62×8" in x for x in t), t
    assert any("Last conv layer" in x and "conv2d_7" in x and "4×4×7" in x for x in t), t
    # with no channel in the link, the first layer's most active channel is inspected (not a dead one)
    import vizlib

    acts = vizlib.activations(vizlib.load_model("emotion_cnn"), [vizlib.load_sample("astronaut_face")], ["conv2d_1"])
    best = vizlib.top_channels(acts["conv2d_1"][0], 1)[0]
    assert any(f"conv2d_1</b>, channel {best} " in x for x in t), t
    assert at.query_params["channel"] == [str(best)]
    bars = next(spec for title, spec in charts(at).items() if title.startswith("Top-5"))
    assert bars["data"][0]["y"][-1] == "happy"  # most likely on top
    first = next(spec for title, spec in charts(at).items() if title.startswith("First conv"))
    assert first["data"][0]["type"] == "image" and first["data"][0]["source"].startswith("data:image/png")
    assert at.query_params["model"] == ["emotion_cnn"]
    total = sum(len(el.proto.spec) for el in at.get("plotly_chart"))
    assert total < 1_500_000


def test_inspect_channel_and_layer(offline):
    at = make_app().run()
    at.number_input(key="channel").set_value(5).run()
    assert_clean(at)
    assert any("conv2d_1</b>, channel 5" in x for x in titles(at))
    detail = next(spec for title, spec in charts(at).items() if "channel 5" in title)
    assert detail["data"][0]["type"] == "heatmap"
    at.selectbox(key="inspect").set_value("conv2d_7").run()
    assert_clean(at)
    assert any("conv2d_7</b>, channel 5 (surprise)" in x for x in titles(at)), titles(at)
    assert at.query_params["channel"] == ["5"] and at.query_params["inspect"] == ["conv2d_7"]


def test_display_change_runs_no_forward_pass(offline, monkeypatch):
    at = make_app().run()
    from vizlib import extract as mod
    calls = []
    real = mod.forward
    monkeypatch.setattr(mod, "forward", lambda *a, **k: calls.append(1) or real(*a, **k))
    before = next(s for t, s in charts(at).items() if t.startswith("First"))["data"][0]["source"]
    at.selectbox(key="cmap").set_value("magma").run()
    at.radio(key="scale").set_value("channel").run()
    at.slider(key="n").set_value(4).run()
    assert_clean(at)
    after = next(s for t, s in charts(at).items() if t.startswith("First"))["data"][0]["source"]
    assert before != after
    assert calls == []


def test_most_active_channels(offline):
    at = make_app().run()
    at.segmented_control(key="mode").set_value("top").run()
    at.slider(key="n").set_value(3).run()
    assert_clean(at)
    first = next(s for t, s in charts(at).items() if t.startswith("First"))
    shown = first["data"][1]["customdata"]
    import vizlib

    m = vizlib.load_model("emotion_cnn")
    acts = vizlib.activations(m, [vizlib.load_sample("astronaut_face")], ["conv2d_1"])["conv2d_1"][0]
    assert list(np.ravel(shown)) == vizlib.top_channels(acts, 3)


def test_vgg16_offline_says_so_then_untrained_works(offline):
    at = make_app().run()
    at.selectbox(key="model").set_value("vgg16").run()
    # Issue #17: ImageNet weights can't be had offline, so the page falls back to untrained weights, said.
    assert_clean(at)
    assert any("untrained (random) weights" in w.value for w in at.warning), [w.value for w in at.warning]
    t = titles(at)
    assert any("block1_conv1" in x and "224×224×64" in x for x in t), t
    assert any("block5_conv3" in x and "14×14×512" in x for x in t), t
    assert any("untrained" in x for x in t)  # predictions are labelled untrained
    assert at.query_params["weights"] == ["untrained"]
    total = sum(len(el.proto.spec) for el in at.get("plotly_chart"))
    assert total < 1_500_000, total


def test_layer_explorer(offline):
    at = make_app().run()
    at.segmented_control(key="view").set_value("explore").run()
    assert_clean(at)
    at.selectbox(key="layer").set_value("separable_conv2d_3").run()
    at.number_input(key="channel").set_value(31).run()
    assert_clean(at)
    t = titles(at)
    assert any("separable_conv2d_3" in x and "30×30×32" in x for x in t), t
    assert any("separable_conv2d_3</b>, channel 31" in x for x in t), t
    table = at.dataframe[0].value
    assert "conv2d_1" in list(table["name"]) and "global_average_pooling2d_1" in list(table["name"])


def test_upload_image_becomes_current(offline):
    at = make_app().run()
    at.radio(key="source").set_value("upload").run()
    at.file_uploader(key="image_files").set_value(("red.png", png_bytes(), "image/png")).run()
    assert_clean(at)
    captions = [img.proto.imgs[0].caption for img in at.get("image")]
    assert any(c.startswith("red.png, as") for c in captions), captions
    # a flat red image: the inspected first-layer map is flat inside (the border sees zero padding... or not)
    detail = next(s for t, s in charts(at).items() if s["data"][0]["type"] == "heatmap")
    z = np.asarray(detail["data"][0]["z"]["bdata"] if isinstance(detail["data"][0]["z"], dict) else detail["data"][0]["z"])
    if isinstance(detail["data"][0]["z"], dict):
        import base64
        z = np.frombuffer(base64.b64decode(detail["data"][0]["z"]["bdata"]), dtype=detail["data"][0]["z"]["dtype"])
    assert np.ptp(z.astype(np.float64)) < 1e-4
    assert at.query_params.get("image") != ["red.png"]  # uploads can't travel in a link


def test_broken_upload_shows_error_and_page_keeps_working(offline):
    at = make_app().run()
    at.radio(key="source").set_value("upload").run()
    at.file_uploader(key="image_files").set_value(("broken.jpg", b"\xff\xd8\xff\xe0 not really", "image/jpeg")).run()
    assert not at.exception
    assert any("broken.jpg" in e.value for e in at.error), [e.value for e in at.error]
    assert any("First conv layer" in x for x in titles(at))  # falls back to the sample; nothing lost


def test_across_images_view(offline):
    at = make_app().run()
    at.segmented_control(key="view").set_value("across").run()
    assert_clean(at)
    fig = next(s for t, s in charts(at).items() if "across" in t)
    labels = cell_labels(fig)
    assert len(labels) == 13 and "cat" in labels
    at.multiselect(key="images").set_value(["cat", "coffee", "horse"]).run()
    at.number_input(key="channel").set_value(2).run()
    assert_clean(at)
    fig = next(s for t, s in charts(at).items() if "across" in t)
    assert cell_labels(fig) == ["cat", "coffee", "horse"]
    assert "channel 2" in next(t for t in titles(at) if "across" in t)
    assert at.query_params["images"] == ["cat,coffee,horse"]


def test_link_reopens_view_and_bad_params_fall_back(offline):
    at = make_app(view="explore", layer="conv2d_3", channel="3", cmap="magma", scale="channel", n="5",
                  image="cat").run()
    assert_clean(at)
    assert at.segmented_control(key="view").value == "explore"
    assert at.selectbox(key="layer").value == "conv2d_3"
    assert at.number_input(key="channel").value == 3
    assert at.selectbox(key="cmap").value == "magma"
    assert at.selectbox(key="image").value == "cat"
    for params in ({"n": "300"}, {"n": "0"}, {"channel": "99999"}, {"view": "across", "layer": "predictions"},
                   {"model": "vgg16", "weights": "untrained", "inspect": "conv2d_7", "channel": "500"}):
        odd = make_app(**params).run()
        assert not odd.exception and not odd.error, params
        assert odd.toast, params  # a notice says what was ignored
        assert len(odd.get("plotly_chart")) >= 2, params
    bad = make_app(model="resnet9000", channel="-4", layer="nope", view="<script>", n="lots").run()
    assert_clean(at)
    assert not bad.exception and not bad.error
    notices = " ".join(t.proto.body for t in bad.toast)
    for word in ("resnet9000", "channel", "view", "n="):
        assert word in notices, notices
    assert any("First conv layer" in x for x in titles(bad))


def test_a_link_with_many_odd_parameters_gets_a_summary_not_a_wall_of_toasts(offline):
    """250 unknown parameters queued 199 toasts (one per parameter, up to the link's cap); a cell outside the
    layer's map was dropped without a word while a malformed one got a notice; full-width digits were read
    as numbers."""
    from ui.page import MAX_TOASTS

    flood = make_app(view="explore", **{f"k{i}": "v" for i in range(250)}).run()
    assert not flood.exception and not flood.error
    bodies = [t.proto.body for t in flood.toast]
    assert len(bodies) == MAX_TOASTS and "more settings from the link were ignored" in bodies[-1], bodies
    # The link's own notices and the checks against the model (a layer it lacks, a channel past the end) are one
    # batch under one cap: they were capped separately, up to twice MAX_TOASTS.
    both = make_app(view="explore", inspect="no_such_layer", channel="999",
                    **{f"k{i}": "v" for i in range(250)}).run()
    assert not both.exception and not both.error
    bodies = [t.proto.body for t in both.toast]
    assert len(bodies) == MAX_TOASTS and "more settings from the link were ignored" in bodies[-1], bodies
    far = make_app(view="compare", inspect="conv2d_1", cell="999,999").run()
    assert not far.exception and not far.error
    assert any("cell=999,999" in t.proto.body and "62x62" in t.proto.body for t in far.toast), \
        [t.proto.body for t in far.toast]
    wide = make_app(view="explore", channel="\uff13").run()  # a full-width 3
    assert not wide.exception and wide.number_input(key="channel").value != 3
    assert any("channel" in t.proto.body for t in wide.toast), [t.proto.body for t in wide.toast]


# --------------------------------------------------------------------- share, export, bundles, ZIPs


def test_exports_produce_real_files(offline, downloads):
    at = make_app(channel="4", inspect="conv2d_7").run()
    assert_clean(at)
    assert not at.get("download_button")  # the share panel is lazy: nothing until it is opened
    at.session_state["share-compare"] = True  # what opening the expander does
    files = downloads(at.run())
    assert set(files) == {"first layer (PNG)", "last layer (PNG)", "Activations (.npz)", "Manifest (.json)",
                          "Bundle (.zip)"}
    img = Image.open(io.BytesIO(files["last layer (PNG)"]))
    assert img.format == "PNG" and img.width > 200
    arrays = np.load(io.BytesIO(files["Activations (.npz)"]), allow_pickle=False)
    assert arrays["conv2d_1"].shape == (1, 62, 62, 8) and arrays["conv2d_7"].shape == (1, 4, 4, 7)
    meta = json.loads(files["Manifest (.json)"])
    assert meta["model"]["key"] == "emotion_cnn"
    assert meta["view"]["channel"] == 4 and meta["view"]["inspect"] == "conv2d_7"
    assert meta["image"]["name"] == "astronaut_face" and len(meta["image"]["sha256"]) == 64
    assert meta["channels"]["conv2d_7"] == list(range(7))


def test_bundle_uploaded_back_reopens_the_view(offline, downloads):
    # someone exports a view of an uploaded image...
    at = make_app().run()
    at.radio(key="source").set_value("upload").run()
    face = io.BytesIO()
    import vizlib

    vizlib.load_sample("astronaut_face").rotate(15).save(face, format="JPEG")
    at.file_uploader(key="image_files").set_value(("my_face.jpg", face.getvalue(), "image/jpeg")).run()
    at.segmented_control(key="view").set_value("explore").run()
    at.selectbox(key="layer").set_value("conv2d_4").run()
    at.number_input(key="channel").set_value(17).run()
    at.selectbox(key="cmap").set_value("magma").run()
    assert_clean(at)
    at.session_state["share-explore"] = True
    bundle_zip = downloads(at.run())["Bundle (.zip)"]
    # ...and someone else opens the page and uploads the bundle
    other = make_app().run()
    other.radio(key="source").set_value("upload").run()
    other.file_uploader(key="image_files").set_value(("view.zip", bundle_zip, "application/zip")).run()
    assert_clean(other)
    assert other.segmented_control(key="view").value == "explore"
    assert other.selectbox(key="layer").value == "conv2d_4"
    assert other.number_input(key="channel").value == 17
    assert other.selectbox(key="cmap").value == "magma"
    captions = [img.proto.imgs[0].caption for img in other.get("image")]
    assert any(c.startswith("my_face.jpg, as") for c in captions), captions
    assert any("conv2d_4</b>, channel 17" in t for t in titles(other))
    # same image, same numbers as the original view
    assert charts(other)[next(t for t in titles(other) if "channel 17" in t)] == \
        charts(at)[next(t for t in titles(at) if "channel 17" in t)]


def test_zip_of_images_feeds_the_across_view(offline):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i, color in enumerate(["red", "green", "blue", "white", "black"]):
            zf.writestr(f"folder/img{i}.png", png_bytes(color=color))
        zf.writestr("__MACOSX/folder/._img0.png", b"junk")
        zf.writestr("folder/readme.txt", "not an image")
    at = make_app().run()
    at.radio(key="source").set_value("upload").run()
    at.file_uploader(key="image_files").set_value(("folder.zip", buf.getvalue(), "application/zip")).run()
    at.segmented_control(key="view").set_value("across").run()
    at.multiselect(key="images").set_value(["cat"]).run()
    assert_clean(at)
    fig = next(s for t, s in charts(at).items() if "across" in t)
    labels = cell_labels(fig)
    assert labels == ["cat", "img0.png", "img1.png", "img2.png", "img3.png", "img4.png"]


def test_too_many_images_in_a_zip_is_refused_clearly(offline, monkeypatch):
    import vizlib.images as images

    monkeypatch.setattr(images, "MAX_IMAGES", 3)
    monkeypatch.setattr(images.images_from_zip, "__kwdefaults__",
                        {**images.images_from_zip.__kwdefaults__, "max_count": 3})
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i in range(5):
            zf.writestr(f"img{i}.png", png_bytes())
    at = make_app().run()
    at.radio(key="source").set_value("upload").run()
    at.file_uploader(key="image_files").set_value(("many.zip", buf.getvalue(), "application/zip")).run()
    assert not at.exception
    assert at.error and "5" in at.error[0].value
    assert any("First conv layer" in x for x in titles(at))


# --------------------------------------------------------------------- your own model


def saved_model(tmp_path, build) -> bytes:
    import keras

    path = tmp_path / "model.keras"
    build(keras).save(path)
    return path.read_bytes()


def small_cnn(keras):
    inp = keras.Input((40, 40, 3))
    x = keras.layers.Conv2D(6, 3, activation="relu", name="my_first_conv")(inp)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(5, 3, activation="relu", name="my_last_conv")(x)
    out = keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x))
    return keras.Model(inp, out, name="mine")


def test_upload_own_model_runs_isolated(offline, tmp_path):
    data = saved_model(tmp_path, small_cnn)
    at = make_app().run()
    at.selectbox(key="model").set_value("upload").run()
    assert not at.exception
    at.file_uploader(key="model_file").set_value(("mine.keras", data, "application/octet-stream")).run()
    assert_clean(at)
    t = titles(at)
    assert any("my_first_conv" in x and "38×38×6" in x for x in t), t
    assert any("my_last_conv" in x and "17×17×5" in x for x in t), t
    bars = next(spec for title, spec in charts(at).items() if title.startswith("Top-5"))
    assert sorted(bars["data"][0]["y"]) == ["class 0", "class 1", "class 2"]
    # the file can't travel in a link: the link opens the upload prompt with the same settings
    assert at.query_params["model"] == ["upload"]
    again = make_app(model="upload").run()
    assert_clean(again)
    assert again.selectbox(key="model").value == "upload" and not again.get("plotly_chart")
    assert any("Upload a .keras or .h5 model" in i.value for i in again.info)


CANARY = str(Path(tempfile.gettempdir()) / f"cnn-viz-app-canary-{os.getpid()}")


def test_upload_lambda_model_is_refused_and_its_code_never_runs(offline, tmp_path):
    canary = Path(CANARY)

    def evil(keras):
        inp = keras.Input((16, 16, 3))
        x = keras.layers.Lambda(lambda t: (open(CANARY, "w").write("ran"), t)[1], name="evil")(inp)
        return keras.Model(inp, keras.layers.Conv2D(2, 3)(x))

    data = saved_model(tmp_path, evil)
    canary.unlink(missing_ok=True)  # building the model ran the lambda once; loading must not
    at = make_app().run()
    at.selectbox(key="model").set_value("upload").run()
    at.file_uploader(key="model_file").set_value(("evil.keras", data, "application/octet-stream")).run()
    assert not at.exception
    assert at.error and "Lambda" in at.error[0].value
    assert not canary.exists()
    at.selectbox(key="model").set_value("emotion_cnn").run()  # nothing lost: back to work
    assert_clean(at)
    assert any("conv2d_1" in x for x in titles(at))


def test_upload_model_without_maps_and_garbage_file(offline, tmp_path):
    def dense(keras):
        return keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(2)])

    at = make_app().run()
    at.selectbox(key="model").set_value("upload").run()
    at.file_uploader(key="model_file").set_value(("dense.keras", saved_model(tmp_path, dense), "x")).run()
    assert not at.exception
    assert at.error and "no layers with 2D spatial output" in at.error[0].value
    at.file_uploader(key="model_file").set_value(("junk.h5", b"\x89HDF\r\n\x1a\n" + b"\0" * 100, "x")).run()
    assert not at.exception and at.error


def test_model_upload_can_be_switched_off(offline, monkeypatch):
    monkeypatch.setenv("CNN_VIZ_MODEL_UPLOAD", "off")
    at = make_app(model="upload").run()
    assert not at.exception and not at.error
    assert "upload" not in at.selectbox(key="model").options
    assert any("conv2d_1" in x for x in titles(at))


def test_uploads_survive_switching_source_and_model(offline, tmp_path):
    at = make_app().run()
    at.radio(key="source").set_value("upload").run()
    at.file_uploader(key="image_files").set_value(("red.png", png_bytes(), "image/png")).run()
    at.radio(key="source").set_value("sample").run()
    at.radio(key="source").set_value("upload").run()
    assert_clean(at)
    captions = [img.proto.imgs[0].caption for img in at.get("image")]
    assert any(c.startswith("red.png, as") for c in captions), captions
    # the model file too
    at.selectbox(key="model").set_value("upload").run()
    at.file_uploader(key="model_file").set_value(("mine.keras", saved_model(tmp_path, small_cnn), "x")).run()
    at.selectbox(key="model").set_value("emotion_cnn").run()
    at.selectbox(key="model").set_value("upload").run()
    assert_clean(at)
    assert any("my_first_conv" in x for x in titles(at))


def test_model_errors_name_the_uploaded_file(offline):
    at = make_app().run()
    at.selectbox(key="model").set_value("upload").run()
    at.file_uploader(key="model_file").set_value(("notes.keras", b"just some text", "x")).run()
    assert not at.exception
    assert at.error and "notes.keras" in at.error[0].value, at.error[0].value


def test_duplicate_uploads_count_once_and_same_names_are_told_apart(offline):
    at = make_app().run()
    at.radio(key="source").set_value("upload").run()
    red, blue = png_bytes(color="red"), png_bytes(color="blue")
    at.file_uploader(key="image_files").set_value(
        [("same.png", red, "image/png"), ("same.png", blue, "image/png"), ("copy.png", red, "image/png")]).run()
    assert_clean(at)
    assert at.selectbox(key="upload_pick").options == ["same.png", "same.png (2)"]


def test_feature_visualisations_switch_off_when_another_model_is_picked(offline):
    """A link's fv=on opens with them on; picking another model (minutes of background work on a big one)
    turns them off with a notice, instead of starting that work unasked."""
    at = make_app(fv="on").run()
    assert_clean(at)
    assert at.toggle(key="fv_on").value is True and at.session_state["fv"] == "on"
    at.selectbox(key="model").set_value("mobilenet_v2").run()
    assert not at.exception, at.exception
    assert at.toggle(key="fv_on").value is False and at.session_state["fv"] == "off"
    assert any("Feature visualisations are off for the new model" in t.proto.body for t in at.toast), \
        [t.proto.body for t in at.toast]
