"""Issue 17, part 2, in the real browser: what a newcomer tripped over on the page itself."""

from __future__ import annotations

import pytest

from conftest import ACTION_TIMEOUT_MS, FIRST_PAINT_TIMEOUT_MS

# The layer table's selected row, and whether the grid shows it: glide-data-grid keeps an accessible
# <table> of the rows it renders, the selected one marked aria-selected.
_SELECTED_ROW_JS = """
(key) => {
  const host = document.querySelector('[class*="st-key-' + key + '"]');
  const scroller = host && host.querySelector('.dvn-scroller');
  if (!scroller) return null;
  // that table is visually hidden: where a row is drawn follows from its index (35 px rows under a
  // 35 px header, aria-rowindex 1 being the header)
  const rows = [...host.querySelectorAll('tr[aria-selected="true"]')];
  const seen = rows.filter(r => {
      const top = 35 + (parseInt(r.getAttribute('aria-rowindex')) - 2) * 35;
      return top >= scroller.scrollTop + 35 - 1 && top + 35 <= scroller.scrollTop + scroller.clientHeight + 1; });
  return {selected: rows.map(r => r.textContent), visible: seen.map(r => r.textContent),
          scrollTop: scroller.scrollTop};
}
"""


@pytest.mark.browser
def test_depth_click_opens_the_layer_selected_and_in_view(app):
    app.page.goto(f"{app.base_url}/?view=depth", wait_until="domcontentloaded")
    # line charts count as painted for no helper: wait for the profile's points, then for a quiet page
    app.page.wait_for_selector(".st-key-depth-profile .scatterlayer .point", timeout=FIRST_PAINT_TIMEOUT_MS)
    app.page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')",
                               timeout=ACTION_TIMEOUT_MS)
    points = app.chart("depth-profile").locator(".scatterlayer .trace").first.locator(".point")
    n = points.count()
    assert n > 8  # the bundled model has more layers than the table shows at once
    point = points.nth(n - 1)  # the deepest layer: far below the table's first rows
    point.scroll_into_view_if_needed()
    box = point.bounding_box()
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    app.page.mouse.move(x, y, steps=2)
    app.page.wait_for_timeout(300)  # Plotly picks the clicked point from the hover
    app.page.mouse.click(x, y)
    app.wait_url("view=explore", timeout=ACTION_TIMEOUT_MS)
    app.page.wait_for_selector('[class*="st-key-layer_table"] .dvn-scroller', timeout=ACTION_TIMEOUT_MS)
    app.wait_painted(1)
    app.page.wait_for_function(f"() => ({_SELECTED_ROW_JS})('layer_table') && "
                               f"({_SELECTED_ROW_JS})('layer_table').visible.length > 0",
                               timeout=ACTION_TIMEOUT_MS)
    found = app.page.evaluate(_SELECTED_ROW_JS, "layer_table")
    assert len(found["visible"]) == 1 and found["scrollTop"] > 0, found
    layer = app.url.split("layer=")[1].split("&")[0]  # the layer the explorer opened on
    assert layer in found["visible"][0], (layer, found)
    app.screenshot("polish-depth-click-layer-row", anchor_key="view")
    app.assert_clean()


_TOOLTIP_JS = """
() => {
  const tip = document.querySelector('[data-testid="stTooltipContent"]');
  const main = document.querySelector('[data-testid="stMain"]');
  if (!tip || !main) return null;
  const t = tip.getBoundingClientRect(), m = main.getBoundingClientRect();
  return {tip: [t.left, t.right], main: [m.left, m.right], width: innerWidth};
}
"""


@pytest.mark.browser
@pytest.mark.parametrize("width", [1400, 1024])
def test_explain_class_help_opens_inside_the_page(browser, server, playwright_api, width):
    """The help of "Explain the class" opened left of its control: past the page's left edge (over the
    sidebar, or cut off by the window) when the picker had a quarter of the width."""
    from conftest import AppPage

    context = browser.new_context(viewport={"width": width, "height": 1000})
    context.set_default_timeout(ACTION_TIMEOUT_MS)
    try:
        app = AppPage(context.new_page(), server.url, playwright_api.expect)
        app.open("?view=why", n_charts=3)
        icon = app.page.locator('.st-key-cls [data-testid="stTooltipHoverTarget"]').first
        icon.scroll_into_view_if_needed()
        icon.hover()
        app.page.wait_for_selector('[data-testid="stTooltipContent"]')
        app.page.wait_for_timeout(300)  # the popover settles into place
        box = app.page.evaluate(_TOOLTIP_JS)
        assert box["tip"][0] >= box["main"][0] - 1 and box["tip"][1] <= box["main"][1] + 1, box
        if width == 1024:
            app.page.screenshot(path=str(app_screens() / "polish-explain-help-1024.png"))
        app.assert_clean()
    finally:
        context.close()


def app_screens():
    from conftest import SCREENSHOTS

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS


_FOCUS_KEY_JS = """
() => { const e = document.activeElement; if (!e) return '';
        const keyed = e.closest('[class*="st-key-"]');
        const key = keyed ? [...keyed.classList].find(c => c.startsWith('st-key-')) : '';
        return key + '|' + (e.getAttribute('data-testid') || e.tagName); }
"""


def _tab_to(app, key: str, testid: str = "stBaseButton-secondary", most: int = 150) -> int:
    """Press Tab until the focus is on the ``testid`` element (an uploader's button) inside the element keyed
    ``key``; the number of presses it took."""
    for i in range(1, most + 1):
        app.page.keyboard.press("Tab")
        if app.page.evaluate(_FOCUS_KEY_JS) == f"st-key-{key}|{testid}":
            return i
    raise AssertionError(f"{most} Tab presses never reached the {testid} of {key}")


def _open_chooser(app, key: str):
    """Tab to the uploader keyed ``key`` and open its file chooser from the keyboard (Enter, else Space:
    a key pressed while the page is still redrawing can land on the element being replaced)."""
    for attempt, key_name in enumerate(("Enter", "Space", "Enter")):
        app.wait_idle()
        app.page.evaluate("() => { if (document.activeElement) document.activeElement.blur(); }")
        _tab_to(app, key)
        try:
            with app.page.expect_file_chooser(timeout=10_000) as chooser:
                app.page.keyboard.press(key_name)
            return chooser.value
        except Exception:  # noqa: BLE001 - Playwright's TimeoutError: try again
            if attempt == 2:
                raise


@pytest.mark.browser
def test_upload_controls_work_from_the_keyboard_alone(app):
    """The image uploader (sidebar) and the page's own uploader (a zipped atlas) are reached with Tab and
    opened with Enter; an image chosen that way is shown."""
    from conftest import ROOT

    app.open()
    _open_chooser(app, "image_files").set_files(str(ROOT / "assets" / "samples" / "cat.jpg"))
    app.page.wait_for_function("() => document.body.innerText.includes('cat.jpg')", timeout=ACTION_TIMEOUT_MS)
    app.wait_painted(3)
    # the atlas view's own uploader, in the page (no atlas folder here: it is offered at once)
    app.page.goto(f"{app.base_url}/?view=atlas", wait_until="domcontentloaded")
    app.page.wait_for_selector(".st-key-atlas-zip", timeout=ACTION_TIMEOUT_MS)
    chooser = _open_chooser(app, "atlas-zip")
    assert ".zip" in (chooser.element.get_attribute("accept") or "")
    app.assert_clean()


@pytest.mark.browser
def test_phone_inspected_heatmap_uses_the_width(browser, server, playwright_api):
    """On a 390 px phone the inspected map was ~110-175 px wide in white space (axis margins, a padded
    range, a height made for a desktop): it must fill most of the chart."""
    from test_small_screens import phone

    with phone(browser, server, playwright_api) as app:
        chart = app.page.locator('[class*="st-key-detail-"] .js-plotly-plot').first
        chart.scroll_into_view_if_needed()
        box = app.page.evaluate("""(c) => { const r = c.getBoundingClientRect();
            const h = c.querySelector('.heatmaplayer image').getBoundingClientRect();
            return {chart: [r.width, r.height], heat: [h.width, h.height]}; }""", chart.element_handle())
        assert box["heat"][0] >= 0.65 * box["chart"][0], box
        assert box["heat"][1] >= 0.55 * box["chart"][1], box  # no band of white above or below
        app.page.screenshot(path=str(app_screens() / "polish-phone-detail.png"))
        app.assert_clean()
