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
    app.page.wait_for_url("**view=explore**", timeout=ACTION_TIMEOUT_MS)
    app.page.wait_for_selector('[class*="st-key-layer_table"] .dvn-scroller', timeout=ACTION_TIMEOUT_MS)
    app.wait_painted(1)
    app.page.wait_for_function(f"() => ({_SELECTED_ROW_JS})('layer_table') && "
                               f"({_SELECTED_ROW_JS})('layer_table').visible.length > 0",
                               timeout=ACTION_TIMEOUT_MS)
    found = app.page.evaluate(_SELECTED_ROW_JS, "layer_table")
    assert len(found["visible"]) == 1 and found["scrollTop"] > 0, found
    layer = app.page.url.split("layer=")[1].split("&")[0]  # the layer the explorer opened on
    assert layer in found["visible"][0], (layer, found)
    app.screenshot("polish-depth-click-layer-row", anchor_key="view")
    app.assert_clean()
