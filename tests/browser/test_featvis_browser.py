"""Issue #11 in a real browser: what a channel looks for paints, and the page stays usable meanwhile."""

from __future__ import annotations

import pytest

COMPARE_CHARTS = 4


@pytest.mark.browser
def test_feature_visualisations_paint_and_controls_stay_usable(app):
    page = app.page
    app.open("?fv=on&inspect=conv2d_7&channel=3", n_charts=COMPARE_CHARTS)
    # While the images are being made, a progress bar shows and the page answers other controls.
    progress = page.locator('[data-testid="stProgress"]')
    app.select("cmap", "magma")
    app.wait_title("conv2d_7, channel 3")
    app.wait_url("cmap=magma")  # the control answered while the job runs
    # The mosaics for both grids and the detail's image arrive by themselves (a polling fragment).
    app.expect(page.locator(".st-key-fv-grid-first .js-plotly-plot .imagelayer image")).to_have_count(
        1, timeout=240_000)
    app.expect(page.locator(".st-key-fv-grid-last .js-plotly-plot .imagelayer image")).to_have_count(
        1, timeout=240_000)
    app.expect(page.get_by_text("What this channel looks for")).to_be_visible(timeout=240_000)
    app.expect(page.get_by_text("made for channel 3")).to_be_visible(timeout=240_000)
    # Its score beside it: against the strongest sample image, and its rank in the layer.
    app.expect(page.get_by_text("the strongest sample image").first).to_be_visible()
    app.expect(page.get_by_text("channels of the layer on this image").first).to_be_visible()
    href = page.locator(".st-key-fv-grid-last .imagelayer image").first.get_attribute("href") or ""
    assert href.startswith("data:image/png;base64,") and len(href) > 1000
    assert progress.count() == 0 or not progress.first.is_visible()
    app.screenshot("featvis-compare")
    app.assert_clean()
