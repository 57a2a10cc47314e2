"""End to end: the real app under `streamlit run`, in a real Chromium.

What AppTest (tests/test_app.py) can't see: that the charts actually paint in a
browser, that hovering and clicking them works, that the file input and the URL
work as a user meets them, and that nothing logs an error in the browser console.

Run: ``pytest tests/browser -q -m browser``. Screenshots of the main views go to
``test-artifacts/screenshots/`` (git-ignored); failures get a screenshot in
``test-artifacts/failures/``.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

# Stable selectors used here: Streamlit's `st-key-<widget key>` class on keyed elements
# (model, source, view, layer, channel, cmap, grid-first, grid-last, grid-explore,
# grid-across, predictions, detail-<layer>), its data-testids, and Plotly's own classes.

COMPARE_CHARTS = 4  # predictions, first-layer grid, last-layer grid, detail heatmap
EXPLORE_CHARTS = 3  # predictions, layer grid, detail heatmap
ACROSS_CHARTS = 2  # predictions, across-images grid
ACTION_TIMEOUT_MS = 60_000


def query(app) -> dict[str, list[str]]:
    return parse_qs(urlparse(app.url).query)


def caption(app):
    """The caption under the input image ("<name>, as <model> sees it: ...")."""
    return app.page.locator('[data-testid="stMain"] [data-testid="stImageCaption"]').first


def top_bar_label(bars) -> str:
    """The category drawn highest in a horizontal bar chart (smallest y on screen)."""
    return bars.locator(".yaxislayer-above .ytick text").evaluate_all(
        """els => els.map(e => [e.getBoundingClientRect().top, e.textContent])
                   .sort((a, b) => a[0] - b[0])[0][1]""")


def click_cell(app, chart_key: str, index: int) -> None:
    """Click the centre of the `index`-th cell of a channel grid (its transparent scatter point).

    Plotly's drag layer sits above the points, so this is a real mouse click at the point's
    position (what a user does), not a click dispatched to the <path> element.
    """
    point = app.chart(chart_key).locator(".scatterlayer .point").nth(index)
    point.scroll_into_view_if_needed()
    box = point.bounding_box()
    assert box, f"cell {index} of {chart_key} has no box"
    app.page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)


def hover_until(app, chart, text: str, fractions=((0.5, 0.5), (0.3, 0.4), (0.7, 0.6))) -> str:
    """Move the mouse over the chart's plot area until its hover label contains ``text``."""
    expect = app.expect
    area = chart.locator(".nsewdrag").first
    area.scroll_into_view_if_needed()
    box = area.bounding_box()
    assert box, "the chart has no plot area"
    label = chart.locator(".hoverlayer .hovertext")
    last_error = None
    for fx, fy in fractions:
        app.page.mouse.move(box["x"] + box["width"] * fx, box["y"] + box["height"] * fy, steps=4)
        try:
            expect(label.first).to_contain_text(text, timeout=3_000)
            return label.first.text_content() or ""
        except AssertionError as exc:  # Plotly missed the move; try another spot
            last_error = exc
    raise AssertionError(f"no hover label with {text!r} over the chart") from last_error


def choose_upload_source(app):
    """Source -> Upload; returns the sidebar's (hidden) file input once the page is ready."""
    app.radio("source", "Upload")
    file_input = app.page.locator('.st-key-image_files input[type="file"]')
    file_input.wait_for(state="attached")
    app.expect(app.page.locator('[data-testid="stSidebar"]')).to_contain_text("No image uploaded yet")
    app.wait_painted(COMPARE_CHARTS)
    return file_input


@pytest.mark.browser
def test_default_page_paints_both_grids_and_predictions(app):
    expect = app.expect
    app.open()
    first, last, bars = app.chart("grid-first"), app.chart("grid-last"), app.chart("predictions")
    expect(first.locator(".gtitle")).to_contain_text("First conv layer")
    expect(first.locator(".gtitle")).to_contain_text("conv2d_1")
    expect(last.locator(".gtitle")).to_contain_text("Last conv layer")
    expect(last.locator(".gtitle")).to_contain_text("conv2d_7")
    # Each grid is one PNG mosaic with one (transparent) point per channel on top.
    for grid, channels in ((first, 8), (last, 7)):
        href = grid.locator(".imagelayer image").first.get_attribute("href") or ""
        assert href.startswith("data:image/png;base64,"), href[:40]
        expect(grid.locator(".scatterlayer .point")).to_have_count(channels)
    expect(bars.locator(".gtitle")).to_contain_text("Top-5 predictions")
    expect(bars.locator(".barlayer .point")).to_have_count(5)
    assert top_bar_label(bars) == "happy"
    expect(app.chart("detail-conv2d_1").locator(".gtitle")).to_contain_text("conv2d_1, channel 1")  # the most active
    expect(caption(app)).to_contain_text("astronaut_face, as")
    assert query(app).get("model") == ["emotion_cnn"]  # the bundled model: offline, empty Keras cache
    app.screenshot("compare-default")
    app.assert_clean()


@pytest.mark.browser
def test_hover_shows_values(app):
    app.open()
    text = hover_until(app, app.chart("detail-conv2d_1"), "activation")
    assert re.search(r"row \d+, column \d+\s*activation -?\d", text), text
    # The grid's invisible point layer names the channel under the mouse.
    first = app.chart("grid-first")
    cell = first.locator(".scatterlayer .point").nth(2)
    cell.scroll_into_view_if_needed()
    box = cell.bounding_box()
    assert box
    app.page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, steps=4)
    app.expect(first.locator(".hoverlayer .hovertext").first).to_contain_text("channel 2")
    app.assert_clean()


@pytest.mark.browser
def test_click_on_grid_cell_inspects_that_channel(app):
    expect = app.expect
    app.open()
    click_cell(app, "grid-first", 5)
    app.wait_title("conv2d_1, channel 5")
    app.wait_painted(COMPARE_CHARTS)
    expect(app.page.locator(".st-key-channel input")).to_have_value("5")
    assert query(app).get("channel") == ["5"]
    # The selected cell is outlined in the grid (one highlight rectangle).
    expect(app.chart("grid-first").locator(".shapelayer path")).to_have_count(1)

    # A cell of the last grid switches the inspected layer too (its channels are the classes).
    click_cell(app, "grid-last", 3)
    app.wait_title("conv2d_7, channel 3 (happy)")
    app.wait_painted(COMPARE_CHARTS)
    expect(app.page.locator(".st-key-inspect input")).to_have_value(re.compile("conv2d_7"))
    expect(app.page.locator(".st-key-channel input")).to_have_value("3")
    assert query(app).get("inspect") == ["conv2d_7"]
    app.assert_clean()


@pytest.mark.browser
def test_vgg16_untrained_from_a_link(app):
    expect = app.expect
    app.open("?model=vgg16&weights=untrained&image=cat")
    first, last = app.chart("grid-first"), app.chart("grid-last")
    expect(first.locator(".gtitle")).to_contain_text("block1_conv1")
    expect(first.locator(".gtitle")).to_contain_text("224×224×64")
    expect(last.locator(".gtitle")).to_contain_text("block5_conv3")
    expect(last.locator(".gtitle")).to_contain_text("14×14×512")
    expect(app.chart("predictions").locator(".gtitle")).to_contain_text("untrained")
    expect(caption(app)).to_contain_text("cat, as VGG16")
    expect(app.page.locator(".st-key-weights").get_by_role("radio", name="untrained (random)")).to_be_checked()
    app.screenshot("vgg16-untrained")
    app.assert_clean()


@pytest.mark.browser
def test_vgg16_offline_falls_back_to_untrained_weights(app):
    # The server runs with CNN_VIZ_OFFLINE=1 (conftest), so this path is the same on any machine.
    # Issue #17: ImageNet weights that can't be had leave no error on screen: untrained weights, said.
    expect = app.expect
    app.open()
    app.select("model", "VGG16")
    app.wait_title("block5_conv3", "14×14×512", timeout=120_000)
    app.wait_painted(COMPARE_CHARTS, timeout=120_000)
    app.wait_title("block1_conv1", "224×224×64")
    notice = app.page.locator('[data-testid="stMain"] [data-testid="stAlertContentWarning"]')
    expect(notice).to_contain_text("untrained (random) weights")
    expect(app.page.get_by_role("button", name="Use the bundled model")).to_be_visible()
    expect(app.page.locator(".st-key-weights").get_by_role("radio", name="untrained (random)")).to_be_checked()
    expect(app.chart("predictions").locator(".gtitle")).to_contain_text("untrained")
    assert query(app).get("model") == ["vgg16"] and query(app).get("weights") == ["untrained"]
    app.assert_clean()


@pytest.mark.browser
def test_layer_explorer_then_across_images(app):
    expect = app.expect
    app.open()
    app.segmented("view", "Layer explorer")
    expect(app.chart("grid-explore")).to_be_visible()
    app.wait_painted(EXPLORE_CHARTS)
    app.select("layer", "separable_conv2d_3", typed="separable_conv2d_3", exact=False)
    expect(app.chart("grid-explore").locator(".gtitle")).to_contain_text("separable_conv2d_3")
    expect(app.chart("grid-explore").locator(".gtitle")).to_contain_text("30×30×32")
    app.wait_title("separable_conv2d_3, channel 1")  # the detail follows the layer
    app.wait_painted(EXPLORE_CHARTS)
    expect(app.chart("grid-explore").locator(".scatterlayer .point")).to_have_count(32)
    assert query(app).get("view") == ["explore"] and query(app).get("layer") == ["separable_conv2d_3"]
    app.screenshot("explorer", anchor_key="layer")

    app.segmented("view", "One channel across images")
    across = app.chart("grid-across")
    expect(across.locator(".gtitle")).to_contain_text(re.compile(r"separable_conv2d_3, channel 1, across \d+ images"))
    app.wait_painted(ACROSS_CHARTS)
    labels = across.locator(".scatterlayer .textpoint text").all_text_contents()
    assert {"cat", "astronaut_face", "horse"} <= set(labels), labels
    assert query(app).get("view") == ["across"]
    app.screenshot("across-images")
    app.assert_clean()


@pytest.mark.browser
def test_upload_image_through_the_file_input(app, tmp_path: Path):
    from PIL import Image

    expect = app.expect
    name = "e2e-gradient.png"
    path = tmp_path / name
    img = Image.linear_gradient("L").resize((96, 72)).convert("RGB")
    img.save(path, format="PNG")
    app.open()
    file_input = choose_upload_source(app)
    file_input.set_input_files(str(path))
    expect(caption(app)).to_contain_text(re.compile(rf"^{re.escape(name)}, as .* sees it"))
    app.wait_painted(COMPARE_CHARTS)
    expect(app.page.locator('.st-key-image_files [data-testid="stFileChipName"]')).to_have_text(name)
    expect(app.page.locator(".st-key-upload_pick input")).to_have_value(name)
    assert name not in app.url  # uploads can't travel in a link
    app.assert_clean()


@pytest.mark.browser
def test_shared_link_reopens_the_view(app):
    expect = app.expect
    app.open("?view=explore&layer=conv2d_3&channel=3&cmap=magma&image=cat", n_charts=EXPLORE_CHARTS)
    page = app.page
    expect(page.locator(".st-key-view").get_by_role("radio", name="Layer explorer")).to_have_attribute(
        "aria-checked", "true")
    expect(page.locator(".st-key-layer input")).to_have_value(re.compile(r"\bconv2d_3\b"))
    expect(page.locator(".st-key-channel input")).to_have_value("3")
    expect(page.locator(".st-key-cmap input")).to_have_value("magma")
    expect(page.locator(".st-key-image input")).to_have_value(re.compile(r"^cat\b"))
    expect(app.chart("grid-explore").locator(".gtitle")).to_contain_text("conv2d_3")
    expect(app.chart("detail-conv2d_3").locator(".gtitle")).to_contain_text("conv2d_3, channel 3")
    expect(caption(app)).to_contain_text("cat, as")
    expect(page.locator('[data-testid="stToast"]')).to_have_count(0)  # nothing in the link was ignored
    app.assert_clean()


@pytest.mark.browser
def test_broken_upload_shows_error_and_keeps_the_grids(app):
    expect = app.expect
    app.open()
    file_input = choose_upload_source(app)
    file_input.set_input_files(files=[{"name": "broken.jpg", "mimeType": "image/jpeg",
                                       "buffer": b"\xff\xd8\xff\xe0 not really a JPEG"}])
    error = app.page.locator('[data-testid="stSidebar"] [data-testid="stAlertContentError"]')
    expect(error).to_contain_text("broken.jpg")
    app.wait_painted(COMPARE_CHARTS)
    expect(app.chart("grid-first").locator(".gtitle")).to_contain_text("First conv layer")
    expect(app.chart("grid-last").locator(".gtitle")).to_contain_text("Last conv layer")
    expect(caption(app)).to_contain_text("astronaut_face, as")  # falls back to the sample
    expect(app.page.locator('[data-testid="stException"]')).to_have_count(0)
    expect(app.page.locator('[data-testid="stMain"] [data-testid="stAlertContentError"]')).to_have_count(0)
    app.assert_quiet()


@pytest.mark.browser
def test_camera_snapshot_becomes_the_image(app):
    """Chromium's fake camera stands in for a webcam: a snapshot drives the model live."""
    expect = app.expect
    app.open()
    before = app.chart("grid-first").locator(".imagelayer image").first.get_attribute("href")
    app.radio("source", "Camera")
    camera = app.page.locator(".st-key-camera")
    take = camera.get_by_role("button", name=re.compile("Take photo", re.I))
    expect(take).to_be_enabled(timeout=ACTION_TIMEOUT_MS)
    # The button is enabled before the stream delivers frames; a snapshot needs a real frame.
    video = camera.locator("video")
    video.wait_for(state="visible", timeout=ACTION_TIMEOUT_MS)
    app.page.wait_for_function("v => v.readyState >= 2 && v.videoWidth > 0", arg=video.element_handle(),
                               timeout=ACTION_TIMEOUT_MS)
    take.click()
    expect(caption(app)).to_contain_text(re.compile(r"^camera snapshot, as "), timeout=ACTION_TIMEOUT_MS)
    app.wait_painted(COMPARE_CHARTS)
    after = app.chart("grid-first").locator(".imagelayer image").first.get_attribute("href")
    assert after != before  # the first layer now responds to the snapshot
    expect(app.chart("predictions").locator(".barlayer .point")).to_have_count(5)
    app.assert_clean()


@pytest.mark.browser
def test_export_downloads_are_real_files(app, tmp_path: Path):
    import io
    import json as _json

    import numpy as np
    from PIL import Image

    app.open()
    app.page.get_by_text("Share this view").click()
    panel = app.page.locator('[data-testid="stExpander"]').filter(has_text="Share this view")
    link = panel.locator("code").first.inner_text()
    assert "model=emotion_cnn" in link and link.startswith("http")
    got = {}
    for label in ("first layer (PNG)", "Activations (.npz)", "Manifest (.json)", "Bundle (.zip)"):
        with app.page.expect_download(timeout=ACTION_TIMEOUT_MS) as info:
            panel.get_by_role("button", name=label).click()
        path = tmp_path / info.value.suggested_filename
        info.value.save_as(path)
        got[label] = path.read_bytes()
    assert Image.open(io.BytesIO(got["first layer (PNG)"])).format == "PNG"
    arrays = np.load(io.BytesIO(got["Activations (.npz)"]), allow_pickle=False)
    assert arrays["conv2d_1"].shape == (1, 62, 62, 8)
    assert _json.loads(got["Manifest (.json)"])["layers"]["conv2d_7"] == [4, 4, 7]
    assert got["Bundle (.zip)"][:2] == b"PK"
    app.assert_clean()
