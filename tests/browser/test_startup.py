"""Issue #8: the first visitor of a fresh server shouldn't wait for TensorFlow to start.

``app.py`` serves itself as an ``st.App`` whose lifespan imports TensorFlow,
loads the bundled model and computes the default view before the server takes
connections (``ui/startup.py``). Two fresh servers: one is left alone until it
is healthy, and then it must already be warm (``/ready``) and its first
visitor is never told that TensorFlow is starting; the other is visited the
moment its port opens, and that visitor gets the page, with no error.
"""

from __future__ import annotations

import time

import pytest

from conftest import FIRST_PAINT_TIMEOUT_MS, AppPage, http_status, launch_server, wait_painted

COMPARE_CHARTS = 4
STARTING = "Starting TensorFlow"


def _first_visit(browser, playwright_api, srv) -> list[str]:
    """Open the page, sample its text until the compare view has painted; the samples."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    try:
        page.goto(f"{srv.url}/", wait_until="commit", timeout=FIRST_PAINT_TIMEOUT_MS)
        seen = []
        end = time.monotonic() + FIRST_PAINT_TIMEOUT_MS / 1000
        while page.locator(".js-plotly-plot .main-svg").count() < COMPARE_CHARTS and time.monotonic() < end:
            seen.append(page.locator("body").inner_text())
            page.wait_for_timeout(100)
        wait_painted(page, COMPARE_CHARTS, timeout=FIRST_PAINT_TIMEOUT_MS)
        AppPage(page, srv.url, playwright_api.expect).assert_clean()
        return seen
    finally:
        page.close()


@pytest.mark.browser
def test_a_fresh_server_is_warm_before_it_takes_visitors(browser, playwright_api, tmp_path):
    with launch_server(tmp_path / "idle") as srv:
        # Nobody has opened the page; the server answers its health check: it is already warm.
        assert http_status(f"{srv.url}/ready") == 200, srv.log_tail()
        assert "Ready: TensorFlow and the bundled model loaded" in srv.log_tail(200)
        seen = _first_visit(browser, playwright_api, srv)
        assert not any(STARTING in text for text in seen)
        assert "Traceback" not in srv.log_tail(200)


@pytest.mark.browser
def test_a_visitor_as_the_server_starts_gets_the_page(browser, playwright_api, tmp_path):
    with launch_server(tmp_path / "early", wait_healthy=False) as srv:
        _first_visit(browser, playwright_api, srv)
        assert http_status(f"{srv.url}/ready") == 200
        assert "Traceback" not in srv.log_tail(200)
