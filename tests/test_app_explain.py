"""The explain views on the page (issue #10), through AppTest: every model kind, links, exports."""

from __future__ import annotations

import numpy as np

from test_app import assert_clean, charts, make_app, saved_model, small_cnn, titles
from vizlib.figures import plain_text


def test_why_view_explains_the_top_class_and_inspects_its_top_channel(offline):
    at = make_app(view="why").run()
    assert_clean(at)
    t = titles(at)
    assert any("Where the model looked for" in x and "happy" in x for x in t), t
    assert any(" ".join(plain_text(x).split()).startswith("Channels of conv2d_7 that carried") for x in t), t
    import vizlib

    ranked = vizlib.explain.channel_contributions(vizlib.load_model("emotion_cnn"), vizlib.load_sample("astronaut_face"))
    assert at.number_input(key="channel").value == ranked[0]["channel"]
    payload = sum(len(el.proto.spec) for el in at.get("plotly_chart"))
    assert payload < 1_500_000, payload


def test_any_class_any_layer_and_the_link_reopens_it(offline):
    at = make_app(view="why").run()
    at.selectbox(key="cls").set_value(2).run()  # "fear"
    assert_clean(at)
    assert any("fear" in x for x in titles(at)), titles(at)
    at.selectbox(key="camlayer").set_value("conv2d_3").run()
    assert_clean(at)
    assert any("LayerCAM" in x and "conv2d_3" in x for x in titles(at)), titles(at)
    at.slider(key="opacity").set_value(80).run()
    q = {k: v[0] for k, v in at.query_params.items()}
    assert q["view"] == "why" and q["cls"] == "2" and q["camlayer"] == "conv2d_3" and q["opacity"] == "80"
    again = make_app(**q).run()
    assert_clean(again)
    assert titles(again) == titles(at)


def test_untrained_twin_side_by_side(offline):
    at = make_app(view="why", twin="on").run()
    assert_clean(at)
    cam = next(spec for title, spec in charts(at).items() if "Where the model looked" in title)
    text = " ".join(a.get("text", "") for a in cam["layout"].get("annotations", []))
    assert "untrained" in text, text
    assert any("Rank correlation" in c.value for c in at.caption)
    assert at.query_params["twin"] == ["on"]


def test_why_view_for_an_untrained_catalogue_model_and_an_uploaded_model(offline, tmp_path):
    at = make_app(model="mobilenet_v2", weights="untrained", view="why").run()
    assert_clean(at)
    assert any("Where the model looked for" in x for x in titles(at))
    up = make_app(view="why").run()
    up.file_uploader(key="model_file").set_value(("mine.keras", saved_model(tmp_path, small_cnn), "x")).run()
    assert_clean(up)
    t = titles(up)
    assert any("Where the model looked for" in x and "my_last_conv" in x for x in t), t


def test_depth_profile_view(offline):
    at = make_app(view="depth").run()
    assert_clean(at)
    spec = next(spec for title, spec in charts(at).items() if title.startswith("What each layer"))
    names = {str(c[0] if isinstance(c, list) else c) for tr in spec["data"] for c in (tr.get("customdata") or [])}
    assert {"conv2d_1", "conv2d_7"} <= names, names


def test_most_contributing_grid_mode(offline):
    import vizlib

    at = make_app(mode="contrib", n="3").run()
    assert_clean(at)
    assert sum("most contributing" in c.value for c in at.caption) == 2
    m, img = vizlib.load_model("emotion_cnn"), vizlib.load_sample("astronaut_face")
    want = [r["channel"] for r in vizlib.explain.channel_contributions(m, img, layer="conv2d_7")[:3]]
    last = next(spec for title, spec in charts(at).items() if title.startswith("Last conv layer"))
    shown = [int(np.ravel(p)[0]) for p in next(t for t in last["data"] if t.get("customdata"))["customdata"]]
    assert shown == want


def test_what_one_cell_sees_and_the_first_layer_arithmetic(offline):
    at = make_app(cell="10,12", channel="3").run()
    assert_clean(at)
    t = [x.replace("<br>", "") for x in titles(at)]
    assert any("cell (row 10, column 12) of conv2d_1" in x and "3 × 3 input pixels" in x for x in t), t
    assert any("How channel 3 at (10, 12)" in x for x in t), t
    text = " ".join(m.value for m in at.markdown)
    assert "Cell (10, 12) of **conv2d_1** sees input rows" in text, text


def test_the_cell_panel_is_lazy_and_leaves_the_link_alone(offline):
    at = make_app().run()
    assert_clean(at)
    assert "cell" not in at.query_params
    assert not any("input pixels" in x for x in titles(at))  # nothing computed while it is closed


def test_depth_profile_png_for_slides():
    import io

    from PIL import Image

    from vizlib.explain_figures import depth_profile_png

    profile = [{"name": f"l{i}", "height": 64 >> (i // 2), "receptive_field": 3 + 4 * i, "channels": 8 * (1 + i // 2),
                "dead_fraction": 0.1 * (i % 3), "sparsity": 0.2 * (i % 2)} for i in range(8)]
    png = Image.open(io.BytesIO(depth_profile_png(profile, title="a title"))).convert("RGB")
    assert png.width >= 900
    colours = {tuple(c) for c in np.asarray(png).reshape(-1, 3)[::7]}
    for rgb in [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189)]:
        assert rgb in colours, rgb  # every series is drawn
    import pytest as _pytest

    from vizlib import InputError

    with _pytest.raises(InputError):
        depth_profile_png([])
