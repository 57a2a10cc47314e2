"""Issue #8: what a newcomer tripped over in their first ten minutes, each pinned by a test.

Each of these failed on the page before the fix (see the issue for what was seen).
"""

from __future__ import annotations

import io

import numpy as np

from test_app import assert_clean, charts, make_app, png_bytes, saved_model, small_cnn, titles  # noqa: F401


def captions(at) -> list[str]:
    return [img.proto.imgs[0].caption for img in at.get("image")]


def test_an_upload_while_on_samples_is_shown_at_once(offline):
    at = make_app().run()
    assert at.radio(key="source").value == "sample"
    at.file_uploader(key="image_files").set_value(("red.png", png_bytes(), "image/png")).run()
    assert_clean(at)
    assert at.radio(key="source").value == "upload"
    assert any(c.startswith("red.png, as") for c in captions(at)), captions(at)
    # a second upload is shown too, the first stays available
    at.file_uploader(key="image_files").set_value(
        [("red.png", png_bytes(), "image/png"), ("blue.png", png_bytes(color=(0, 0, 255)), "image/png")]).run()
    assert any(c.startswith("blue.png, as") for c in captions(at)), captions(at)
    assert set(at.selectbox(key="upload_pick").options) == {"red.png", "blue.png"}


def test_a_bundle_of_an_uploaded_photo_reopens_with_its_own_image_on_samples(offline, downloads):
    import vizlib

    at = make_app().run()
    face = io.BytesIO()
    vizlib.load_sample("astronaut_face").rotate(20).save(face, format="JPEG")
    at.file_uploader(key="image_files").set_value(("my_face.jpg", face.getvalue(), "image/jpeg")).run()
    at.segmented_control(key="view").set_value("explore").run()
    at.selectbox(key="layer").set_value("conv2d_3").run()
    at.session_state["share-explore"] = True
    bundle_zip = downloads(at.run())["Bundle (.zip)"]
    other = make_app().run()  # a fresh session, Source still "Samples"
    assert other.radio(key="source").value == "sample"
    other.file_uploader(key="image_files").set_value(("view.zip", bundle_zip, "application/zip")).run()
    assert_clean(other)
    assert any(c.startswith("my_face.jpg, as") for c in captions(other)), captions(other)
    assert other.selectbox(key="layer").value == "conv2d_3"


def test_a_model_file_is_checked_and_shown_on_upload(offline, tmp_path):
    at = make_app().run()
    assert at.selectbox(key="model").value == "emotion_cnn"
    at.file_uploader(key="model_file").set_value(("mine.keras", saved_model(tmp_path, small_cnn), "x")).run()
    assert_clean(at)
    assert at.selectbox(key="model").value == "upload"
    assert any("my_first_conv" in t for t in titles(at)), titles(at)


def test_a_broken_model_file_says_so_at_once_and_offers_only_what_applies(offline):
    at = make_app().run()
    at.file_uploader(key="model_file").set_value(("broken.keras", b"PK\x03\x04 not a zip at all", "x")).run()
    assert not at.exception
    assert at.error and "broken.keras" in at.error[0].value
    labels = [b.label for b in at.button]
    assert "Use the bundled model" in labels and not any("untrained" in label for label in labels), labels
    # the page keeps the image and the controls
    assert any(c for c in captions(at)), "the image vanished"
    assert at.radio(key="source") is not None and at.selectbox(key="cmap") is not None
    next(b for b in at.button if b.label == "Use the bundled model").click().run()
    assert_clean(at)
    assert any("conv2d_1" in t for t in titles(at))


def test_imagenet_unavailable_keeps_the_sidebar_consistent_and_controls_in_place(offline):
    at = make_app(model="vgg16").run()
    assert not at.exception and not at.error  # issue #17: untrained weights instead, with a notice
    assert any("can't be downloaded" in w.value for w in at.warning), [w.value for w in at.warning]
    side = " ".join(c.value for c in at.sidebar.caption)
    assert "download once" not in side and "can't be downloaded" in side, side
    assert at.selectbox(key="cmap") is not None and at.radio(key="source") is not None
    assert any(c for c in captions(at)), "the image vanished"


def test_a_single_colour_image_says_every_channel_is_flat(offline):
    at = make_app().run()
    at.file_uploader(key="image_files").set_value(("grey.png", png_bytes(color=(128, 128, 128)), "image/png")).run()
    assert_clean(at)
    text = " ".join(i.value for i in at.info)
    assert "Every channel of this layer is flat" in text, text
    assert "is the most active" not in text


def test_flat_channel_names_a_live_one():
    from ui.widgets import flat_message

    maps = np.zeros((4, 4, 3), np.float32)
    maps[..., 2] = np.arange(16).reshape(4, 4)
    assert "Channel 2 is the most active" in flat_message(maps, 0)
    assert flat_message(maps, 2) is None
    assert "Every channel" in flat_message(np.ones((3, 3, 4), np.float32), 1)


def test_links_carry_only_what_applies_on_the_page(offline):
    at = make_app().run()
    assert "weights" not in at.query_params  # the bundled model has one set of weights
    at.segmented_control(key="view").set_value("explore").run()
    assert "inspect" not in at.query_params


def test_last_conv_is_the_final_feature_map_and_says_why(offline):
    at = make_app(model="densenet121", weights="untrained").run()
    assert_clean(at)
    t = titles(at)
    last = next(x for x in t if x.startswith("Last conv layer"))
    assert "7×7×1024" in last, last
    text = " ".join(c.value for c in at.caption)
    assert "conv5_block16_2_conv" in text, text  # the inner layer is named, and reachable in the explorer


def test_across_images_channel_change_is_display_only(offline, monkeypatch):
    from vizlib import extract

    at = make_app(view="across").run()
    assert_clean(at)
    calls = []
    real_forward, real_channel = extract.forward, extract.channel_across_images
    monkeypatch.setattr(extract, "forward", lambda *a, **k: calls.append("forward") or real_forward(*a, **k))
    monkeypatch.setattr(extract, "channel_across_images",
                        lambda *a, **k: calls.append("channel") or real_channel(*a, **k))
    before = next(s for t, s in charts(at).items() if "across" in t)
    at.number_input(key="channel").set_value(3).run()
    assert_clean(at)
    assert calls == [], calls
    after = next(s for t, s in charts(at).items() if "across" in t)
    assert after != before


def test_no_plotly_toolbar_in_front_of_titles_or_the_tab_order(offline):
    import json

    at = make_app().run()
    for el in at.get("plotly_chart"):
        config = json.loads(el.proto.config) if el.proto.config else {}
        assert config.get("displayModeBar") is False, config
