"""Issue #10 in a real browser: a click on a prediction explains it; a click on a map cell shows what it sees."""

from __future__ import annotations

import pytest
from conftest import current_url

COMPARE_CHARTS = 4


@pytest.mark.browser
def test_click_a_prediction_bar_then_a_map_cell(app):
    page = app.page
    app.open()
    # a click on the top bar ("happy", class 3) opens Grad-CAM for that class
    bars = app.chart("predictions")
    bar = bars.locator(".barlayer .point").nth(4)  # drawn bottom-up: the last is the most likely
    bar.scroll_into_view_if_needed()
    box = bar.bounding_box()
    assert box
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, steps=3)
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    app.wait_title("Where the model looked for", "happy")
    app.wait_painted(3)
    assert "view=why" in current_url(page) and "cls=3" in current_url(page)
    app.assert_clean()


@pytest.mark.browser
def test_click_a_cell_of_the_detail_map_shows_its_receptive_field(app):
    page = app.page
    app.open()
    area = app.chart("detail-conv2d_1").locator(".nsewdrag").first
    area.scroll_into_view_if_needed()
    box = area.bounding_box()
    assert box
    x, y = box["x"] + box["width"] * 0.25, box["y"] + box["height"] * 0.75
    page.mouse.move(x, y, steps=3)
    page.mouse.click(x, y)
    app.wait_title("What cell (row")
    app.wait_title("How channel 1 at (")
    # The link reopens this: the clicked position is in the URL.
    page.wait_for_function("() => /[?&]cell=\\d+%2C\\d+/.test(location.search)")
    app.assert_clean()
