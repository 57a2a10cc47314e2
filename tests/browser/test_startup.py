"""Issue #8: the first visitor of a fresh server shouldn't wait for TensorFlow to start.

``app.py`` serves itself as an ``st.App`` whose lifespan starts TensorFlow and the
bundled model in the background as the server starts; ``/ready`` says when that
is done. Two fresh servers: one warms with nobody visiting, then its first
visitor is told nothing about starting TensorFlow; the other is visited at once
and paints normally while the warm-up is still running (it waits for the same
cached work instead of doing it twice).
"""

from __future__ import annotations

import time

import pytest

from conftest import FIRST_PAINT_TIMEOUT_MS, AppPage, http_status, launch_server, wait_painted

COMPARE_CHARTS = 4
STARTING = "Starting TensorFlow"


@pytest.mark.browser
def test_a_fresh_server_warms_up_before_anyone_visits(browser, playwright_api, tmp_path):
    with launch_server(tmp_path / "idle") as srv:
        # Nobody has opened the page: only /ready is asked, and it turns 200 on its own.
        deadline = time.monotonic() + FIRST_PAINT_TIMEOUT_MS / 1000
        while (status := http_status(f"{srv.url}/ready")) != 200:
            assert status == 503, (status, srv.log_tail())
            assert time.monotonic() < deadline, "the server never warmed up by itself:\n" + srv.log_tail()
            time.sleep(0.25)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            seen = []
            page.goto(f"{srv.url}/", wait_until="domcontentloaded")
            # Sample the placeholder text while the first page paints: no "Starting TensorFlow".
            end = time.monotonic() + FIRST_PAINT_TIMEOUT_MS / 1000
            while page.locator(".js-plotly-plot .main-svg").count() < COMPARE_CHARTS and time.monotonic() < end:
                seen.append(page.locator("body").inner_text())
                page.wait_for_timeout(100)
            wait_painted(page, COMPARE_CHARTS, timeout=FIRST_PAINT_TIMEOUT_MS)
            assert not any(STARTING in text for text in seen)
            AppPage(page, srv.url, playwright_api.expect).assert_clean()
        finally:
            page.close()
        assert "Traceback" not in srv.log_tail(200)


@pytest.mark.browser
def test_a_visitor_during_the_warm_up_gets_the_page(browser, playwright_api, tmp_path):
    with launch_server(tmp_path / "busy") as srv:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        try:
            page.goto(f"{srv.url}/", wait_until="domcontentloaded")
            wait_painted(page, COMPARE_CHARTS, timeout=FIRST_PAINT_TIMEOUT_MS)
            AppPage(page, srv.url, playwright_api.expect).assert_clean()
        finally:
            page.close()
        assert http_status(f"{srv.url}/ready") == 200
        assert "Traceback" not in srv.log_tail(200)
