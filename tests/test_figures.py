"""vizlib.figures and the grid PNG: what is drawn must be right (issue #8).

The colour scales that go to the browser survive Streamlit's frontend, titles
of any length fit, the detail heatmap is ticked at whole rows and columns, and
an exported grid PNG carries its whole title. What only a browser can show
(painted colour bars, readable labels, titles inside the chart) is in
tests/browser/test_colormaps.py.
"""

from __future__ import annotations

import io
import json

import numpy as np
import plotly.colors as pc
import pytest
from PIL import Image, ImageDraw

from vizlib.export import SLIDE_TITLE_PX, slide_font, across_png, grid_png
from vizlib.figures import (
    COLORMAPS, NARROWEST_PLOT_PX, TITLE_FONT_PX, across_images, channel_detail, channel_grid, fit_title,
    plain_text, prediction_bars, wrap_plain,
)

#: Streamlit 1.64's frontend (PlotlyChart: replaceTemporaryColors) does `spec.replaceAll(p, themeColour)`
#: on a chart's JSON text for each of these placeholders of its Plotly template, whatever `theme` is.
ST_PLACEHOLDERS = [f"#0000{i:02d}" for i in range(1, 41)]


def streamlit_frontend(spec: str) -> dict:
    """What the browser's Plotly gets: the JSON text with Streamlit's placeholders replaced (by white)."""
    for p in ST_PLACEHOLDERS:
        spec = spec.replace(p, "#ffffff")
    return json.loads(spec)


def scale_rgb(scale) -> list[tuple[float, tuple[int, int, int]]]:
    out = []
    for pos, colour in scale:
        rgb = pc.hex_to_rgb(colour) if colour.startswith("#") else pc.unlabel_rgb(colour)
        out.append((round(float(pos), 6), tuple(int(round(float(v))) for v in rgb)))
    return out


def colourscales(spec: dict) -> list:
    return [t["marker"]["colorscale"] if t.get("type") == "scatter" else t["colorscale"]
            for t in spec["data"] if t.get("type") == "heatmap" or (t.get("marker") or {}).get("colorscale")]


@pytest.mark.parametrize("cmap", COLORMAPS)
def test_colour_scales_reach_the_browser_unchanged(cmap):
    """magma and inferno start at #000004, one of Streamlit's placeholders: the bar began light pink."""
    maps = np.random.default_rng(0).uniform(size=(6, 6, 4)).astype(np.float32)
    own = scale_rgb(pc.get_colorscale(cmap))
    for fig in (channel_grid(maps, colormap=cmap), channel_detail(maps[..., 0], colormap=cmap),
                across_images(np.moveaxis(maps, -1, 0), list("abcd"), colormap=cmap)):
        scales = colourscales(streamlit_frontend(fig.to_json()))
        assert scales, "no colour scale in the figure"
        for scale in scales:
            assert scale_rgb(scale) == own


def test_text_with_a_placeholder_colour_is_defused():
    maps = np.ones((4, 4, 2), np.float32)
    fig = channel_grid(maps, labels=["#000004", "x"], title="layer #000012")
    spec = fig.to_json()
    data = json.dumps(json.loads(spec)["data"]) + json.dumps(json.loads(spec)["layout"].get("title"))
    assert not any(p in data for p in ST_PLACEHOLDERS)
    assert plain_text(fig.layout.title.text) == "layer #000012"


# --------------------------------------------------------------------- titles

LONG_TITLES = [
    # the compare view's titles for ConvNeXtTiny and Xception (app.grid_title), and the explorer's
    "Last conv layer: <b>convnext_tiny_stage_3_block_2_depthwise_conv</b> · layer #149 · Conv2D · 7×7×768",
    "Last conv layer: <b>block14_sepconv2</b> · layer #128 · SeparableConv2D · 10×10×2048",
    "<b>convnext_tiny_stage_3_block_2_pointwise_conv_2</b> · layer #153 · Dense · 7×7×3072",
    "<b>my_transfer_model/vgg16/block5_conv3</b> · layer #19 · Conv2D · 14×14×512",
]


def lines_of(title: str) -> list[str]:
    return [plain_text(line) for line in title.split("<br>")]


def max_chars(width_px: int) -> int:
    from vizlib.figures import _TITLE_CHAR_EM

    return int(width_px / (TITLE_FONT_PX * _TITLE_CHAR_EM))


@pytest.mark.parametrize("title", LONG_TITLES)
def test_long_grid_titles_wrap_whole(title):
    maps = np.random.default_rng(1).uniform(size=(7, 7, 9)).astype(np.float32)
    fig = channel_grid(maps, title=title, width_hint=380)
    shown = fig.layout.title.text
    lines = lines_of(shown)
    assert len(lines) > 1
    # (a " ·" separator may hang past the line: the width estimate has more slack than that)
    assert all(len(line.rstrip(" ·")) <= max_chars(NARROWEST_PLOT_PX - 4) for line in lines), lines
    assert "".join(lines) == plain_text(title)  # nothing lost, nothing added: only wrapped
    assert shown.count("<b>") == shown.count("</b>")  # bold closed and reopened around each break
    assert fig.layout.margin.t >= 22 + 18 * len(lines)  # room for every line


def test_short_title_stays_one_line():
    t = "First conv layer: <b>conv2d_1</b> · Conv2D"
    assert fit_title(t, 340) == (t, False)


def test_very_long_name_is_abbreviated_with_the_full_title_on_hover():
    name = "block_" * 40 + "end"
    maps = np.random.default_rng(1).uniform(size=(5, 5, 3)).astype(np.float32)
    fig = channel_grid(maps, title=f"<b>{name}</b> · Conv2D")
    assert fig.layout.title.text.endswith("…") and len(lines_of(fig.layout.title.text)) == 3
    cells = next(t for t in fig.data if t.name == "cells")
    assert all(h.startswith(f"{name} · Conv2D<br>") for h in cells.hovertext)
    detail = channel_detail(maps[..., 0], title=f"<b>{name}</b>, channel 0")
    assert detail.layout.title.text.endswith("…")
    assert f"{name}, channel 0" in detail.data[0].hovertemplate


def test_detail_title_wraps():
    fig = channel_detail(np.ones((4, 4), np.float32), title=LONG_TITLES[0])
    assert len(lines_of(fig.layout.title.text)) > 1


def test_prediction_title_wraps():
    fig = prediction_bars([("a", 0.5)], title="Top-5 predictions of " + "a_very_long_model_name_" * 3)
    assert len(lines_of(fig.layout.title.text)) > 1


# --------------------------------------------------------------------- detail ticks


@pytest.mark.parametrize("shape", [(4, 4), (7, 7), (3, 9), (62, 62), (224, 224)])
def test_detail_ticks_whole_rows_and_columns(shape):
    fig = channel_detail(np.random.default_rng(0).uniform(size=shape).astype(np.float32))
    for axis, n in ((fig.layout.yaxis, shape[0]), (fig.layout.xaxis, shape[1])):
        assert axis.tickmode == "linear" and axis.tick0 == 0
        assert float(axis.dtick).is_integer() and axis.dtick >= 1
        assert 2 <= len(range(0, n, int(axis.dtick))) <= 9  # a readable number of ticks
        assert axis.tickformat == "d"


# --------------------------------------------------------------------- labels


def test_cell_labels_have_an_outline():
    maps = np.ones((4, 4, 3), np.float32)
    labels = next(t for t in channel_grid(maps, labels=["a", "b", "c"]).data if t.name == "labels")
    shadow = labels.textfont.shadow
    # a dark halo on all four sides: white text reads on light cells too (browser test measures it)
    for dx, dy in ((-1, -1), (1, -1), (-1, 1), (1, 1)):
        assert f"{dx}px {dy}px" in shadow
    assert labels.textfont.color == "white"


# --------------------------------------------------------------------- exported grid PNG


def ink(img: Image.Image) -> int:
    return int((np.asarray(img.convert("L")) < 128).sum())


def test_wrap_plain_keeps_every_word():
    font = slide_font(18)
    text = "VGG16 (untrained) · #149 convnext_tiny_stage_3_block_2_depthwise_conv (Conv2D, 7 x 7 x 768)"
    lines = wrap_plain(text, 220, font.getlength)
    assert len(lines) > 2 and all(font.getlength(line) <= 220 for line in lines)
    assert " ".join(lines).replace("_ ", "_") == text
    assert any("7 x 7 x 768" in line for line in lines)  # a shape is never split


@pytest.mark.parametrize("n_channels", [1, 4])
def test_grid_png_carries_its_whole_title(n_channels):
    title = ("ConvNeXtTiny (untrained) · #149 convnext_tiny_stage_3_block_2_depthwise_conv "
             "(Conv2D, 7 x 7 x 768)")
    maps = np.random.default_rng(0).uniform(size=(7, 7, 4)).astype(np.float32)
    png = Image.open(io.BytesIO(grid_png(maps, list(range(n_channels)), title=title, cell_px=64)))
    # The title's ink on the PNG equals the ink of the whole title drawn on an unbounded canvas:
    # nothing cut at the edge (the title used to end mid-shape).
    font = slide_font(SLIDE_TITLE_PX)
    free = Image.new("L", (int(font.getlength(title)) + 40, 40), 255)
    ImageDraw.Draw(free).text((4, 4), title, fill=0, font=font)
    rgb = np.asarray(png.convert("RGB")).astype(int)
    arr = np.asarray(png.convert("L"))
    colourful = (rgb.max(axis=-1) - rgb.min(axis=-1)) > 40  # viridis cells; the title is black on white
    grid_top = int(np.argmax(colourful.sum(axis=1) > 10))
    title_ink = int((arr[:grid_top] < 128).sum())
    assert grid_top > 0 and abs(title_ink - ink(free)) <= 0.04 * ink(free), (title_ink, ink(free))
    assert (arr[:grid_top, -3:] > 250).all()  # nothing touches the right edge
    # and the grid itself is still all there below it
    assert png.height > grid_top + 64


def test_across_png_carries_its_whole_title():
    title = "VGG16 · ImageNet weights · block5_conv3, channel 511 across 13 images of a rather long dataset name"
    maps = np.random.default_rng(1).uniform(size=(2, 14, 14)).astype(np.float32)
    png = Image.open(io.BytesIO(across_png(maps, ["a.jpg", "b.jpg"], title=title, cell_px=64)))
    font = slide_font(SLIDE_TITLE_PX)
    free = Image.new("L", (int(font.getlength(title)) + 40, 40), 255)
    ImageDraw.Draw(free).text((4, 4), title, fill=0, font=font)
    rgb = np.asarray(png.convert("RGB")).astype(int)
    arr = np.asarray(png.convert("L"))
    colourful = (rgb.max(axis=-1) - rgb.min(axis=-1)) > 40
    grid_top = int(np.argmax(colourful.sum(axis=1) > 10))
    title_ink = int((arr[:grid_top] < 128).sum())
    assert grid_top > 0 and abs(title_ink - ink(free)) <= 0.06 * ink(free), (title_ink, ink(free))
