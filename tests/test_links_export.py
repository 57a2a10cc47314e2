"""Links (ViewState <-> query string) and exports (PNG, NPY/NPZ, manifest, bundle)."""

from __future__ import annotations

import io
import json
import zipfile
from urllib.parse import parse_qs, urlencode

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import vizlib
from vizlib.errors import InputError
from vizlib.export import (
    across_png, bundle, grid_png, is_bundle, manifest, manifest_json, npy_bytes, npz_bytes, read_bundle,
)
from vizlib.links import (
    DEFAULT, MODES, SCALES, TOGGLES, VIEWS, WEIGHTS, SOURCES, ViewState, as_dict, canonical, from_dict, from_query,
    to_query, validate_for_model,
)

MODELS = ["emotion_cnn", "vgg16", "resnet50", "mobilenet_v2"]
SAMPLE_NAMES = sorted(vizlib.SAMPLES)
CMAPS = ["viridis", "magma", "gray"]
layer_names = st.from_regex(r"[A-Za-z0-9_]{1,12}(/[A-Za-z0-9_]{1,12})?", fullmatch=True)

states = st.builds(
    ViewState,
    model=st.sampled_from(MODELS), weights=st.sampled_from(WEIGHTS), source=st.sampled_from(SOURCES),
    image=st.sampled_from(SAMPLE_NAMES), view=st.sampled_from(VIEWS), layer=st.just("") | layer_names,
    inspect=st.just("") | layer_names, channel=st.integers(0, 4095), mode=st.sampled_from(MODES),
    n=st.integers(1, 256), scale=st.sampled_from(SCALES), cmap=st.sampled_from(CMAPS),
    images=st.lists(st.sampled_from(SAMPLE_NAMES), unique=True, max_size=5).map(tuple),
    cls=st.integers(-1, 999), camlayer=st.just("") | layer_names, opacity=st.integers(0, 100),
    twin=st.sampled_from(TOGGLES), fv=st.sampled_from(TOGGLES),
    cell=st.just("") | st.tuples(st.integers(0, 999), st.integers(0, 999)).map(lambda rc: f"{rc[0]},{rc[1]}"),
    atlas=st.just("") | st.from_regex(r"[a-z0-9_]{1,10}(/[a-z0-9_-]{1,10})?", fullmatch=True),
)


@settings(max_examples=300, deadline=None)
@given(states)
def test_state_round_trips_through_a_real_query_string(state):
    query = urlencode(to_query(state))  # what ends up in the address bar
    params = {k: v for k, v in parse_qs(query, keep_blank_values=True).items()}
    back, notices = from_query(params, models=MODELS, samples=SAMPLE_NAMES, colormaps=CMAPS)
    assert notices == []
    assert back == canonical(state)  # a link carries what its view uses, nothing else
    assert canonical(back) == back


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=12), st.text(max_size=60) | st.lists(st.text(max_size=20), max_size=3),
                       max_size=8))
def test_garbage_never_raises_and_always_gives_a_valid_state(params):
    state, notices = from_query(params, models=MODELS, samples=SAMPLE_NAMES, colormaps=CMAPS)
    assert state.model in MODELS and state.view in VIEWS and state.mode in MODES and state.scale in SCALES
    assert 1 <= state.n <= 256 and state.channel >= 0 and state.cmap in CMAPS
    assert state.image in SAMPLE_NAMES and all(i in SAMPLE_NAMES for i in state.images)
    for key in params:
        if key not in as_dict(DEFAULT):
            assert any(repr(key)[1:-1][:10] in n or key[:10] in n for n in notices)


def test_bad_values_fall_back_with_notices():
    state, notices = from_query({"model": "resnet9000", "channel": "-4", "n": "lots", "view": "<script>",
                                 "cmap": "rainbow-unicorn", "image": "../../etc/passwd", "zzz": "1"},
                                models=MODELS, samples=SAMPLE_NAMES, colormaps=CMAPS)
    assert state == DEFAULT
    text = " ".join(notices)
    for bit in ("resnet9000", "channel", "lots", "view", "rainbow", "passwd", "zzz"):
        assert bit in text
    assert len(notices) == 7


def test_validate_for_model_drops_foreign_layers_and_clamps_channel():
    state = ViewState(view="compare", inspect="block1_conv1", channel=63, layer="nope")
    fixed, notices = validate_for_model(state, ["conv2d_1", "conv2d_7"], {"conv2d_1": 8, "conv2d_7": 7})
    assert fixed.inspect == "" and fixed.layer == "" and len(notices) == 2
    state = ViewState(view="explore", layer="conv2d_7", channel=9)
    fixed, notices = validate_for_model(state, ["conv2d_1", "conv2d_7"], {"conv2d_1": 8, "conv2d_7": 7})
    assert fixed.channel == 0 and "channels 0 to 6" in notices[0]
    ok = ViewState(view="explore", layer="conv2d_1", channel=7)
    assert validate_for_model(ok, ["conv2d_1"], {"conv2d_1": 8}) == (ok, [])


def test_manifest_dict_round_trip():
    state = ViewState(model="vgg16", weights="untrained", view="across", images=("cat", "coffee"), channel=11)
    back, notices = from_dict(json.loads(json.dumps(as_dict(state))), models=MODELS, samples=SAMPLE_NAMES)
    assert back == state and notices == []


# --------------------------------------------------------------------- exports


@pytest.fixture(scope="module")
def acts(bundled):
    img = vizlib.load_sample("astronaut_face")
    return img, vizlib.activations(bundled, [img], ["conv2d_1", "conv2d_7"])


def test_grid_png_decodes_with_labels_and_colour_bar(acts):
    _, a = acts
    data = grid_png(a["conv2d_1"][0], [0, 3, 5], title="conv2d_1", cell_px=100)
    img = Image.open(io.BytesIO(data))
    assert img.format == "PNG" and img.mode == "RGB"
    assert img.width > 2 * 100 + 60 and img.height > 2 * 100  # 2x2 grid of 100 px cells + colour bar
    px = np.asarray(img)
    assert (px.std(axis=(0, 1)) > 10).all()  # not blank
    with pytest.raises(InputError):
        grid_png(a["conv2d_1"][0], [8])


def test_npy_and_npz_round_trip(acts):
    _, a = acts
    back = np.load(io.BytesIO(npy_bytes(a["conv2d_7"])), allow_pickle=False)
    np.testing.assert_array_equal(back, a["conv2d_7"])
    assert back.shape == (1, 4, 4, 7)
    z = np.load(io.BytesIO(npz_bytes({"vgg16/block1_conv1": a["conv2d_1"], "conv2d_7": a["conv2d_7"]})),
                allow_pickle=False)
    assert set(z.files) == {"vgg16__block1_conv1", "conv2d_7"}
    np.testing.assert_array_equal(z["vgg16__block1_conv1"], a["conv2d_1"])


def test_manifest_names_the_view(bundled, acts):
    img, a = acts
    state = ViewState(channel=3, inspect="conv2d_1")
    meta = manifest(model=bundled, view=as_dict(state), layers={k: v.shape[1:] for k, v in a.items()},
                    channels={"conv2d_1": [0, 1, 2]}, image_name="astronaut_face", image_sha256="ab" * 32)
    text = json.loads(manifest_json(meta))
    assert text["model"]["key"] == "emotion_cnn" and text["model"]["weights"] == "bundled"
    assert text["layers"] == {"conv2d_1": [62, 62, 8], "conv2d_7": [4, 4, 7]}
    assert text["view"]["channel"] == 3 and text["image"]["sha256"] == "ab" * 32
    assert "keras" in text["versions"] and "numpy" in text["versions"]


def test_bundle_round_trip_and_tamper_detection(bundled, acts):
    img, a = acts
    meta = manifest(model=bundled, view=as_dict(ViewState(channel=2)), layers={k: v.shape[1:] for k, v in a.items()})
    data = bundle(image=img, image_name="me.jpg", manifest_data=meta, arrays=a,
                  figures={"grid.png": grid_png(a["conv2d_1"][0])})
    assert is_bundle(data)
    b = read_bundle(data)
    assert b.image_name == "me.jpg" and b.image.size == img.size
    assert np.array_equal(np.asarray(b.image), np.asarray(img.convert("RGB")))
    np.testing.assert_array_equal(b.arrays["conv2d_1"], a["conv2d_1"])
    assert b.manifest["view"]["channel"] == 2
    # a swapped image no longer matches the manifest's SHA-256
    buf = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(buf, "w") as dst:
        for item in src.infolist():
            content = src.read(item)
            if item.filename == "image.png":
                other = io.BytesIO()
                Image.new("RGB", (8, 8), "red").save(other, format="PNG")
                content = other.getvalue()
            dst.writestr(item, content)
    with pytest.raises(InputError, match="SHA-256"):
        read_bundle(buf.getvalue())


@pytest.mark.parametrize("payload, message", [
    (b"not a zip", "not a ZIP"),
    (None, "no manifest"),
])
def test_bad_bundles_refused(payload, message):
    if payload is None:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("a.txt", "hi")
        payload = buf.getvalue()
    with pytest.raises(InputError, match=message):
        read_bundle(payload)


def test_bundle_with_pickled_array_refused():
    buf = io.BytesIO()
    evil = io.BytesIO()
    np.save(evil, np.array([object()], dtype=object), allow_pickle=True)
    png = io.BytesIO()
    Image.new("RGB", (8, 8)).save(png, format="PNG")
    npz = io.BytesIO()
    with zipfile.ZipFile(npz, "w") as z:
        z.writestr("x.npy", evil.getvalue())
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("manifest.json", json.dumps({"format": "cnn-activation-view", "image": {"member": "image.png"}}))
        zf.writestr("image.png", png.getvalue())
        zf.writestr("activations.npz", npz.getvalue())
    with pytest.raises(InputError, match="holds object values; only numeric arrays are read"):
        read_bundle(buf.getvalue())


def test_across_png():
    maps = np.random.default_rng(0).uniform(size=(3, 10, 10)).astype(np.float32)
    img = Image.open(io.BytesIO(across_png(maps, ["a", "b", "c"], title="x")))
    assert img.format == "PNG" and img.width > 200


def test_link_messages_name_the_real_reason():
    """?model=zzz&channel=-3&n=100000 once said "channel out of range 0 to 100000" (the bound from n)."""
    _, notices = from_query({"model": "zzz", "channel": "-3", "n": "100000"}, models=MODELS,
                            samples=SAMPLE_NAMES, colormaps=CMAPS)
    text = " | ".join(notices)
    assert "model='zzz'" in text and "unknown model" in text
    assert "channel='-3'" in text and "numbered from 0" in text and "100000" not in text.split("channel=")[1].split("|")[0]
    assert "n='100000'" in text and "1 to 256" in text
    assert len(notices) == 3


def test_links_carry_only_what_applies():
    bundled = to_query(ViewState(model="emotion_cnn", weights="untrained", view="explore", inspect="conv2d_7",
                                 layer="conv2d_3", channel=4))
    assert "weights" not in bundled and "inspect" not in bundled
    assert bundled["layer"] == "conv2d_3" and bundled["channel"] == "4"
    compare = to_query(ViewState(model="vgg16", weights="untrained", view="compare", layer="block3_conv1",
                                 inspect="block5_conv3"))
    assert compare["weights"] == "untrained" and compare["inspect"] == "block5_conv3" and "layer" not in compare
    why = to_query(ViewState(model="vgg16", view="why", cls=281, opacity=70, twin="on"))
    assert why["cls"] == "281" and why["opacity"] == "70" and why["twin"] == "on"
    assert "cls" not in to_query(ViewState(view="explore", cls=281))


@pytest.mark.parametrize("raw", ["../etc", "/abs", "a/../../b", "a\\b", "x" * 300])
def test_atlas_paths_in_links_stay_relative(raw):
    state, notices = from_query({"atlas": raw, "view": "atlas"})
    assert state.atlas == "" and notices


def test_the_url_is_read_and_written_in_one_module_only():
    """The link is parsed, checked and written back in ui/state.py; a view that read ``st.query_params`` itself
    (the Why view and its scoreboard did) bypasses that path's checks. They ask ``ui.state.link_has``."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    hits = sorted(str(p.relative_to(root)) for p in [*(root / "ui").rglob("*.py"), *(root / "vizlib").rglob("*.py"),
                                                     root / "app.py"]
                  if "query_params" in p.read_text(encoding="utf-8"))
    assert hits == ["ui/state.py"], hits
