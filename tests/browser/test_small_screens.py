"""Issue #8, small screens and keyboards: a phone and a keyboard user can do what a mouse user does."""

from __future__ import annotations

import contextlib

import pytest

from conftest import ACTION_TIMEOUT_MS, AppPage, FIRST_PAINT_TIMEOUT_MS, wait_painted

COMPARE_CHARTS = 4


@pytest.mark.browser
def test_keyboard_reaches_the_controls_first_and_picks_a_channel(app):
    app.open()
    page = app.page
    assert page.locator(".modebar-btn").count() == 0  # no toolbar buttons to tab through
    page.evaluate("() => { if (document.activeElement) document.activeElement.blur(); }")
    focused = []
    for _ in range(40):
        page.keyboard.press("Tab")
        focused.append(page.evaluate(
            """() => { const e = document.activeElement; if (!e) return '';
                       const keyed = e.closest('[class*="st-key-"]');
                       const key = keyed ? [...keyed.classList].find(c => c.startsWith('st-key-')) : '';
                       return (e.closest('[data-testid="stSidebar"]') ? 'sidebar:' : 'main:') + key; }"""))
    first_control = next(i for i, f in enumerate(focused) if f.startswith("sidebar:st-key-"))
    assert first_control <= 6, focused[:10]
    assert not any("modebar" in f for f in focused)
    assert any(f.endswith("st-key-channel") for f in focused), focused  # the channel is reachable by Tab
    # choose a channel from the keyboard alone
    box = page.locator(".st-key-channel input")
    box.focus()
    page.keyboard.press("Control+A")
    page.keyboard.type("6")
    page.keyboard.press("Enter")
    app.wait_title("channel 6")
    app.assert_clean()


@contextlib.contextmanager
def phone(browser, server, playwright_api):
    """The default view painted on a 390x844 touch screen: an :class:`AppPage`."""
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=2,
                                  is_mobile=True, has_touch=True)
    context.set_default_timeout(ACTION_TIMEOUT_MS)
    page = context.new_page()
    try:
        page.goto(f"{server.url}/", wait_until="domcontentloaded")
        wait_painted(page, COMPARE_CHARTS, timeout=FIRST_PAINT_TIMEOUT_MS)
        yield AppPage(page, server.url, playwright_api.expect)
    finally:
        context.close()


@pytest.mark.browser
def test_phone_has_no_toolbar_over_the_titles(browser, server, playwright_api):
    """On a 390 px phone no Plotly toolbar covers a chart title, and every title fits its chart."""
    with phone(browser, server, playwright_api) as app:
        page = app.page
        assert page.locator(".modebar").count() == 0
        overflow = page.evaluate("""() => [...document.querySelectorAll('.js-plotly-plot')].flatMap(p => {
            const box = p.getBoundingClientRect();
            return [...p.querySelectorAll('.gtitle')].filter(t => {
                const r = t.getBoundingClientRect(); return r.right > box.right + 1 || r.left < box.left - 1; })
              .map(t => t.textContent); })""")
        assert overflow == [], overflow
        app.assert_clean()


@pytest.mark.browser
def test_phone_one_tap_on_a_grid_cell_inspects_that_channel(browser, server, playwright_api):
    """A finger doesn't hover first: one tap on a grid cell must select it (not just show its tooltip)."""
    with phone(browser, server, playwright_api) as app:
        page = app.page
        for chart, index, title in (("grid-first", 5, "conv2d_1, channel 5"),
                                    ("grid-last", 3, "conv2d_7, channel 3 (happy)")):
            point = app.chart(chart).locator(".scatterlayer .point").nth(index)
            point.scroll_into_view_if_needed()
            box = point.bounding_box()
            assert box, f"cell {index} of {chart} has no box"
            page.touchscreen.tap(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            app.wait_title(title)
            wait_painted(page, COMPARE_CHARTS, timeout=FIRST_PAINT_TIMEOUT_MS)
        app.assert_clean()
