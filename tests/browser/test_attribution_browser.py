"""Issue #23 in a real browser: the Why view's scoreboard of attribution methods; a click picks the big map."""

from __future__ import annotations

import re

import pytest

from vizlib.attribution import METHOD_TITLES, METHODS


@pytest.mark.browser
def test_scoreboard_click_makes_a_map_the_big_one(app):
    page = app.page
    app.open("?model=emotion_cnn&image=astronaut_face&view=why", n_charts=3)
    go = page.locator(".st-key-attr-go").get_by_role("button", name="Compute the scoreboard (all eight maps)")
    go.scroll_into_view_if_needed()
    go.click()
    # Every method gets its thumbnail, its numbers and its button; Grad-CAM is the big one first.
    app.wait_title("Grad-CAM: where the model looked for", timeout=180_000)
    for name in METHODS:
        key = name.replace("+", "p")  # widget keys become CSS classes: no "+"
        page.locator(f".st-key-attr-pick-{key} button").wait_for(timeout=60_000)
    captions = page.get_by_text(re.compile(r"^deletion \d\.\d{3} · insertion \d\.\d{3} · ρ untrained"))
    assert captions.count() == len(METHODS)
    # A click on Occlusion's button makes it the big map, and the link carries it.
    pick = page.locator(".st-key-attr-pick-occlusion button")
    pick.scroll_into_view_if_needed()
    pick.click()
    app.wait_title(f"{METHOD_TITLES['occlusion']}: where the model looked for")
    page.wait_for_function("() => /[?&]method=occlusion/.test(location.search)")
    assert page.locator(".st-key-attr-pick-occlusion button").inner_text().startswith("▶")
    app.wait_painted(3)
    app.screenshot("attribution_scoreboard", anchor_key="attr-big")
    app.assert_clean()
