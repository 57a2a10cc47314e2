"""Issue 17, part 2: what a newcomer tripped over, each as a check of the behaviour the visitor sees.

Top-5 axis and labels, the contributions chart's axis title, the first layer's arithmetic, the PNG
exports for slides, messages that name no server path, command-line messages that name flags.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import vizlib  # noqa: F401  (before TensorFlow: oneDNN off)
from vizlib import explain_figures as F
from vizlib.figures import NARROWEST_PLOT_PX, plain_text, prediction_bars


def _luminance(rgb: tuple[int, int, int]) -> float:
    def lin(c: float) -> float:
        c /= 255
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (lin(float(v)) for v in rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def _contrast(a: tuple[int, int, int], b: tuple[int, int, int]) -> float:
    hi, lo = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


def _hex(colour: str) -> tuple[int, int, int]:
    colour = colour.lstrip("#")
    return tuple(int(colour[i:i + 2], 16) for i in (0, 2, 4))  # type: ignore[return-value]


# --------------------------------------------------------------------------- top-5 axis


@pytest.mark.parametrize("probs", [
    [0.0021, 0.0020, 0.0019, 0.0019, 0.0018],  # untrained VGG16: ~0.2 % each
    [0.0012, 0.0011, 0.0011, 0.0010, 0.0010],  # 1000 classes, nearly uniform
    [0.31, 0.2, 0.1, 0.05, 0.01],
    [0.986, 0.006, 0.004, 0.002, 0.001],
])
def test_top5_axis_ticks_read_the_data_range(probs):
    fig = prediction_bars([(f"class {i}", p) for i, p in enumerate(probs)], title="Top-5 predictions")
    axis = fig.layout.xaxis
    assert axis.ticktext is not None, "tick labels left to a fixed format"
    vals, texts = list(axis.tickvals), list(axis.ticktext)
    assert len(set(texts)) == len(texts) >= 3, texts  # not "0%" five times
    for v, t in zip(vals, texts):  # each label says its own value
        assert abs(float(t.rstrip("%")) / 100 - v) <= 1e-12 + 1e-9 * v, (t, v)
    lo, hi = axis.range
    assert lo == 0 and hi >= max(probs) and hi <= max(1.0, 1.3 * max(probs))
    assert vals[-1] >= 0.6 * max(probs)  # the ticks reach the bars, not only the first fifth of them


def test_top5_dimmed_bar_keeps_a_readable_label():
    """A selection (a clicked bar) dims the others; the 98.6 % label of a dimmed bar must stay readable."""
    fig = prediction_bars([("happy", 0.986), ("sad", 0.006), ("angry", 0.004)])
    bar = fig.data[0]
    colour = bar.unselected.textfont.color if bar.unselected and bar.unselected.textfont else None
    assert colour, "Plotly's default dims the label with the bar (white text at 20 % on white)"
    opacity = bar.unselected.marker.opacity
    assert opacity is not None and opacity >= 0.3  # the bar itself is still visible
    # the label sits on the dimmed bar: blend the bar colour over white at its opacity
    fill = tuple(round(opacity * c + (1 - opacity) * 255) for c in _hex(bar.marker.color))
    assert _contrast(_hex(colour), fill) >= 4.5
    assert _contrast(_hex(colour), (255, 255, 255)) >= 4.5  # and beside it, outside a short bar


# --------------------------------------------------------------------------- contributions chart


LONG_CLASS = "fox squirrel, eastern fox squirrel, Sciurus niger"


@pytest.mark.parametrize("width", [220, 290, 420])
def test_contributions_titles_fit_a_half_width_column(width):
    """"…Sciurus ni": ImageNet's long class names ran past the chart's edge in a half-width column."""
    rows = [{"channel": c, "contribution": 1.0 / (c + 1), "share": 0.1} for c in range(8)]
    fig = F.contributions_bar(rows, class_name=LONG_CLASS, layer="conv5_block3_out", width_hint=width)
    for text, font, room in ((fig.layout.xaxis.title.text, fig.layout.xaxis.title.font.size or 14,
                              min(width, NARROWEST_PLOT_PX) - 70),  # the plot area, less the y axis's labels
                             (fig.layout.title.text, fig.layout.title.font.size or 14, min(width, NARROWEST_PLOT_PX))):
        for line in text.split("<br>"):
            assert len(plain_text(line)) * font * 0.5 <= room, (line, text)  # Plotly would cut it
        assert "…" not in plain_text(text), text  # wrapped whole, not abbreviated
    assert "fox squirrel" in plain_text(fig.layout.title.text)
    assert "gradient × activation" in " ".join(plain_text(fig.layout.xaxis.title.text).split())
    lines = fig.layout.xaxis.title.text.count("<br>") + 1
    assert fig.layout.margin.b >= 18 * lines  # the margin holds every line


# --------------------------------------------------------------------------- first-layer arithmetic


def _tiny_grey_model():
    """A 1-channel conv whose sums are a few thousandths: what made '0.00 + bias 0.00 = -0.004753'."""
    import keras

    from vizlib.contract import as_model

    inp = keras.Input((8, 8, 1))
    conv = keras.layers.Conv2D(2, 3, activation="relu", name="c1")
    out = keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(conv(inp)))
    kernel = np.full((3, 3, 1, 2), -0.0005, np.float32)
    kernel[1, 1, 0, 0] = -0.001
    kernel[:, :, 0, 1] = -1e-30  # a dead channel's weights: decimals can't write them
    conv.set_weights([kernel, np.array([0.00003, 0.0], np.float32)])
    return as_model(keras.Model(inp, out))


def test_arithmetic_sum_is_visibly_right():
    from PIL import Image

    from vizlib import explain as E

    image = Image.fromarray(np.full((8, 8), 200, np.uint8))
    arith = E.conv_arithmetic(_tiny_grey_model(), image, 3, 3, 0)
    assert -0.01 < arith["pre_activation"] < -0.001
    text = plain_text(F.conv_arithmetic_figure(arith).layout.annotations[-1].text)
    line = re.search(r"sum of products: (.*?) = (-?[0-9.]+)", text)
    assert line, text
    written = [float(v) for v in re.findall(r"(?<![\w.])-?\d+\.\d+", line.group(1))]
    total = float(line.group(2))
    decimals = len(line.group(2).split(".")[1])
    assert abs(total - arith["pre_activation"]) <= 0.5 * 10 ** -decimals  # the total, as computed
    assert abs(sum(written) - total) <= 0.5 * 10 ** -decimals * len(written), (written, total)
    assert re.sub(r"[-0.]", "", line.group(2))[:2].isdigit()  # >= 2 significant digits shown
    # "(grey)" is explained
    assert "grey channel" in text and re.search(r"grey channel: [^·]*(greyscale|one channel)", text), text


def test_arithmetic_of_a_dead_channel_stays_readable():
    """Weights of 1e-30 were written "0.000000" in every cell (wider than the cell) and the sum as
    "0.000000000 + bias 0.000000000 = 0.000000000"; the worked sum ran past the chart's edge."""
    from PIL import Image

    from vizlib import explain as E

    image = Image.fromarray(np.full((8, 8), 200, np.uint8))
    arith = E.conv_arithmetic(_tiny_grey_model(), image, 3, 3, 1)
    fig = F.conv_arithmetic_figure(arith, width_hint=420)
    kernel_text = [t for row in fig.data[1].text for t in row]
    assert all(len(t) <= 8 for t in kernel_text) and any("e-30" in t or "e-3" in t for t in kernel_text), kernel_text
    note = fig.layout.annotations[-1].text
    line = plain_text(note)
    assert "0.000000" not in line and re.search(r"sum of products: -?[0-9.]+e-\d+", line), line
    for piece in note.split("<br>"):
        assert len(plain_text(piece)) * 13 * 0.5 <= 420, piece  # every line fits the chart


# --------------------------------------------------------------------------- PNG exports for slides


def _picture_top(arr: np.ndarray) -> int:
    """The first row of the picture: the first with a third of its pixels not white."""
    busy = (arr.min(axis=-1) < 235).mean(axis=1) > 0.33
    assert busy.any(), "no picture in the PNG"
    return int(np.argmax(busy))


def _title_ink(arr: np.ndarray) -> int:
    top = _picture_top(arr)
    return int((arr[:top].max(axis=-1) < 100).sum())


def _colour_bar_rows(arr: np.ndarray, colormap: str) -> int:
    """Length of the longest vertical run, in the right part of the PNG, of the colormap's colours from its
    top (hi) down to its bottom (lo): 0 when there is no colour bar."""
    from vizlib.figures import colormap_lut

    lut = colormap_lut(colormap).astype(np.int32)
    best = 0
    w = arr.shape[1]
    for x in range(max(0, w - 220), w, 3):
        col = arr[:, x].astype(np.int32)
        d = ((col[:, None, :] - lut[None, :, :]) ** 2).sum(axis=-1)
        idx, ok = d.argmin(axis=1), d.min(axis=1) <= 12
        run, start = 0, None
        for y in range(len(col) + 1):
            good = y < len(col) and ok[y] and (start is None or idx[y] <= idx[y - 1] + 1)
            if good and start is None:
                start = y
            elif not good and start is not None:
                seg = idx[start:y]
                if seg.size and seg[0] >= 250 and seg[-1] <= 5:
                    run = max(run, y - start)
                start = y if y < len(col) and ok[y] else None
        best = max(best, run)
    return best


def _export(name: str) -> tuple[bytes, "str | None"]:
    """One PNG export of the page, made from small real inputs: (PNG, colormap of its colour bar)."""
    from PIL import Image

    from vizlib.export import across_png, grid_png
    from vizlib.featvis import feature_png

    rng = np.random.default_rng(0)
    face = rng.integers(0, 256, (64, 64), dtype=np.uint8)
    cam = np.outer(np.hanning(64), np.hanning(64)).astype(np.float32)
    maps = rng.uniform(size=(7, 7, 4)).astype(np.float32)
    profile = [{"name": f"conv{i}", "height": 64 >> (i // 2), "receptive_field": 3 + 4 * i,
                "channels": 8 * (1 + i // 2), "dead_fraction": 0.1 * (i % 3), "sparsity": 0.2 * (i % 2)}
               for i in range(8)]
    crops = [Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)) for _ in range(4)]
    rows = [{"rank": i, "value": 5.0 - i, "path": f"img{i}.jpg"} for i in range(4)]
    exports = {
        "grad-cam": lambda: (F.gradcam_png(face, cam, class_name="happy", layer="conv2d_7"), "turbo"),
        "channel grid": lambda: (grid_png(maps, [0, 1, 2], title="Emotion CNN · conv2d_7"), "viridis"),
        "channel grid, own scales": lambda: (grid_png(maps, [0, 1], scale="channel", title="conv2d_7"), None),
        "across images": lambda: (across_png(np.moveaxis(maps, -1, 0)[:2], ["a.jpg", "b.jpg"], title="channel 3",
                                             colormap="magma"), "magma"),
        "depth profile": lambda: (F.depth_profile_png(profile, title="Emotion CNN: what each layer sees"), None),
        "feature visualisations": lambda: (feature_png(rng.integers(0, 256, (2, 20, 20, 3), dtype=np.uint8),
                                                       [0, 1], title="VGG16 · block5_conv3"), None),
        "atlas crops": lambda: (_atlas_png(crops, rows, title="conv2d_1 · channel 5: top 4 of 6 images"), None),
    }
    return exports[name]()


def _atlas_png(*args, **kwargs) -> bytes:
    from vizlib.atlas.figure import top_png

    return top_png(*args, **kwargs)


@pytest.mark.parametrize("name", ["grad-cam", "channel grid", "channel grid, own scales", "across images",
                                  "depth profile", "feature visualisations", "atlas crops"])
def test_png_exports_read_on_a_projector(name):
    import io

    from PIL import Image

    data, colormap = _export(name)
    img = Image.open(io.BytesIO(data))
    assert img.format == "PNG"
    arr = np.asarray(img.convert("RGB"))
    assert img.width >= 800, f"{name}: {img.width} px wide"
    assert _title_ink(arr) > 80, f"{name}: no title above the picture"
    if colormap:
        assert _colour_bar_rows(arr, colormap) >= 150, f"{name}: no colour bar"


# --------------------------------------------------------------------------- no server path in a message


def test_offline_imagenet_error_names_no_server_path(offline, tmp_path, caplog):
    import logging

    from vizlib.errors import InputError
    from vizlib.models import load_catalogue_model

    with caplog.at_level(logging.INFO), pytest.raises(InputError) as info:
        load_catalogue_model("vgg16", "imagenet")
    message = str(info.value)
    assert "VGG16" in message and "untrained" in message
    assert str(tmp_path) not in message and "/models/" not in message and ".h5" not in message, message
    assert str(tmp_path) in caplog.text  # the host still finds the path: in the log


def test_keras_load_failure_names_no_server_path(tmp_path):
    from vizlib.errors import InputError
    from vizlib.models import load_model_file

    folder = tmp_path / "server" / "uploads"
    folder.mkdir(parents=True)
    bad = folder / "model.keras"
    bad.write_bytes(b"not a zip at all")
    for path in (bad, folder / "missing.keras"):
        with pytest.raises(InputError) as info:
            load_model_file(path, check=False)
        assert str(folder) not in str(info.value) and str(tmp_path) not in str(info.value), str(info.value)


#: InputError messages that may name a path, by (the value interpolated, a phrase of the message): each
#: is a path the user typed on a command line (or passed to a library call) themselves, never one the
#: server chose. Phrases, not files, so the list survives code moving between modules.
_OWN_PATHS = {
    ("location", "Can't open "): "the --images the user gave the atlas command",
    ("location", "is not a readable ZIP archive"): "the --images the user gave the atlas command",
    ("location", "has no column of image bytes"): "the --images the user gave the atlas command",
    ("location", "has several binary columns"): "the --images the user gave the atlas command",
    ("self.ref.location", "could not be opened"): "the --images the user gave the atlas command",
    ("directory", "--out"): "the --out the user gave the atlas command",
    ("p", "There is no atlas directory at"): "vizlib.atlas.load(path) without a root: the caller's own folder",
    ("path", "No model file at"): "isolation: a model file path the caller passed (the page's upload exists)",
    ("path", "has a row group whose column"): "a Parquet column path, not a file",
    ("path", "DELTA_BYTE_ARRAY"): "a Parquet column path, not a file",
    ("path", "The atlas has no picture of"): "a dataset path stored in the atlas, relative to its images",
}


def test_no_input_error_interpolates_a_server_path():
    """The class of defect, not one message: an InputError whose f-string interpolates a path object
    (not just its ``.name``) shows the visitor a folder of the server."""
    import ast
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    pathy = {"path", "target", "p", "root", "directory", "dir", "folder", "file", "dest", "tmp", "cache_dir",
             "workdir", "base", "full", "src", "location"}
    found = []
    for f in sorted((repo / "vizlib").rglob("*.py")):
        rel = f.relative_to(repo).as_posix()
        for node in ast.walk(ast.parse(f.read_text())):
            if not (isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)):
                continue
            if getattr(node.exc.func, "id", getattr(node.exc.func, "attr", "")) != "InputError":
                continue
            for part in [*node.exc.args, *(k.value for k in node.exc.keywords if k.arg != "cli")]:
                words = "".join(c.value for c in ast.walk(part) if isinstance(c, ast.Constant)
                                and isinstance(c.value, str))
                for v in ast.walk(part):
                    if not isinstance(v, ast.FormattedValue):
                        continue
                    e = v.value
                    ident = e.id if isinstance(e, ast.Name) else e.attr if isinstance(e, ast.Attribute) else ""
                    if not (ident in pathy or "path" in ident.lower()):
                        continue
                    if not any(expr == ast.unparse(e) and phrase in words for expr, phrase in _OWN_PATHS):
                        found.append(f"{rel}:{node.lineno} {ast.unparse(e)}")
    assert not found, "InputError messages that name a server path (log it instead):\n" + "\n".join(found)


# --------------------------------------------------------------------------- command lines speak in flags


def test_atlas_command_names_the_flag_offline(offline, tmp_path, capsys):
    from vizlib.atlas.__main__ import main

    images = tmp_path / "images"
    images.mkdir()
    code = main(["build", "--model", "vgg16", "--images", str(images), "--out", str(tmp_path / "atlas"),
                 "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "--weights untrained" in err[0] and "Pick 'untrained'" not in err[0] and "pick 'untrained'" not in err[0]
    assert err[0].startswith("error: ")


def test_fetch_command_says_what_to_do_offline_in_one_line(offline, capsys, monkeypatch, tmp_path):
    """Offline, the fetch command says so once (exit 2, one line) instead of advising, per model, to run the very
    command that just failed; a model name it does not know is one line too; --help works."""
    from vizlib import models
    from vizlib.fetch import main

    monkeypatch.setattr(models, "keras_cache_dir", lambda: tmp_path)  # nothing cached here
    assert main(["vgg16"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "can't be reached" in err[0], err
    assert "python -m vizlib.fetch" not in err[0] and "--weights" not in err[0] and "Pick '" not in err[0]
    assert main(["nonexistent_model"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Unknown model 'nonexistent_model'" in err[0] and "vgg16" in err[0], err
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0 and "MODEL" in capsys.readouterr().out


# --------------------------------------------------------------------------- the dataset atlas view


from test_atlas_ui import env, root  # noqa: E402,F401  (fixtures: the same test atlas, its folder set)


def _atlas_page(uploads: bool = False) -> None:
    """The atlas panel as the page lays it out: the channel widget first, then the panel."""
    import streamlit as st

    import vizlib
    from ui import atlas as ua

    @st.cache_resource
    def model():
        return vizlib.load_model("emotion_cnn")

    st.session_state.setdefault("channel", 0)
    channel = st.number_input("Channel", 0, 7, key="channel")
    ups = [(n, n, vizlib.load_sample(n)) for n in ("cat", "coins", "astronaut_face")] if uploads else []
    ua.atlas_panel(model(), ups, layer="conv2d_1", channel=int(channel))


def _atlas_app(**kwargs):
    from streamlit.testing.v1 import AppTest

    return AppTest.from_function(_atlas_page, kwargs=kwargs, default_timeout=120)


def _peaks(folder) -> np.ndarray:
    """Each conv2d_1 channel's strongest response in the test atlas, read from its top-k table."""
    import vizlib.atlas

    atlas = vizlib.atlas.load("faces/v1", root=folder)
    n = atlas.layer("conv2d_1")["shape"][2]
    return np.array([atlas.top("conv2d_1", c)[0]["value"] for c in range(n)], dtype=np.float64)


def _atlas_view():
    """The whole page in the atlas view on the bundled model's first layer, the test atlas picked."""
    from test_app import assert_clean, make_app

    at = make_app(view="atlas", layer="conv2d_1").run()
    assert_clean(at)
    at.selectbox(key="atlas-name").select("faces/v1").run()
    assert_clean(at)
    return at


def _atlas_title(at) -> str:
    from test_app import titles

    return next(t for t in titles(at) if "conv2d_1 · channel" in t)


def test_atlas_opens_on_the_most_active_live_channel(offline, env):
    peaks = _peaks(env)
    assert peaks[0] < 1e-6 * peaks.max()  # the bundled model's conv2d_1 channel 0: 8e-34 at best
    best = int(np.argmax(peaks))
    at = _atlas_view()
    assert at.number_input(key="channel").value == best
    assert f"channel {best}: the 3 of 6 images" in _atlas_title(at) and "dead" not in _atlas_title(at)
    assert at.query_params["channel"] == [str(best)] and at.query_params["atlas"] == ["faces/v1"]


def test_atlas_marks_a_dead_channel_and_offers_a_live_one(offline, env):
    best = int(np.argmax(_peaks(env)))
    at = _atlas_view()
    at.number_input(key="channel").set_value(0).run()  # the visitor goes to channel 0 on purpose
    assert not at.exception and at.number_input(key="channel").value == 0
    assert any("dead" in w.value and "Channel 0" in w.value for w in at.warning), [w.value for w in at.warning]
    assert "channel 0 (dead" in _atlas_title(at)
    assert any("Dead channels of conv2d_1" in c.value and ": 0" in c.value for c in at.caption)
    go = [b for b in at.button if b.label == f"Show channel {best}, the most active"]
    assert go
    go[0].click().run()
    assert at.number_input(key="channel").value == best and not any("dead" in w.value for w in at.warning)


def test_atlas_picker_names_the_atlas_on_screen_and_says_its_k(env):
    at = _atlas_app(uploads=True).run()
    at.selectbox[0].select("faces/v1").run()
    assert any("keeps each channel's top 3" in c.value for c in at.caption)
    # the page's k and the command's k are both said
    assert any("top 9 images" in c.value and "keeps 49" in c.value for c in at.caption), [c.value for c in at.caption]
    [b for b in at.button if "Build an atlas" in b.label][0].click().run()
    assert not at.exception and not at.error
    box = at.selectbox[0]
    built = [o for o in box.options if o.startswith("Built here")]
    assert built == ["Built here: 3 uploaded images (top 3)"], box.options
    # the picker names the atlas on screen (AppTest gives the value; the page shows its label)
    assert str(box.value).startswith("built:") and at.session_state["_atlases"][box.value][0] == built[0]
    assert "Upload a zipped atlas…" in box.options and "faces/v1" in box.options
    assert any("keeps each channel's top 3" in c.value and "3 images, 0 skipped" in c.value for c in at.caption)
    box.select("faces/v1").run()  # and with two atlases, each is named when shown
    assert at.selectbox[0].value == "faces/v1"
    assert any("6 images, 0 skipped" in c.value for c in at.caption)
