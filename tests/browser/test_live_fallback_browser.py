"""The live view when the WebRTC connection cannot be made, in a real Chromium.

The server is configured (``CNN_VIZ_ICE_SERVERS``, the project's setting) to send media
only through a TURN server (``iceTransportPolicy: relay``) that does not exist: a closed
port on this machine, so no packet leaves it. No route between the browser and the
server can then ever work, which is what a visitor on another network meets when the
host configured no reachable STUN/TURN server. Chromium does not call such a connection
failed for minutes; the page must say within its connect timeout why there is no video,
give the stream's slot back, and its button must open the snapshot camera.
"""

from __future__ import annotations

import json

import pytest

from conftest import ACTION_TIMEOUT_MS, FIRST_PAINT_TIMEOUT_MS, VIEWPORT, launch_server

UNREACHABLE_TURN_ONLY = json.dumps({
    "iceServers": [{"urls": "turn:127.0.0.1:9?transport=udp", "username": "nobody", "credential": "none"}],
    "iceTransportPolicy": "relay",
})


@pytest.fixture(scope="module")
def relay_only_server(tmp_path_factory):
    with launch_server(tmp_path_factory.mktemp("relay_only"),
                       extra_env={"CNN_VIZ_ICE_SERVERS": UNREACHABLE_TURN_ONLY}) as srv:
        yield srv


def test_live_view_that_cannot_connect_says_why_and_offers_the_snapshot_camera(browser, relay_only_server,
                                                                                 playwright_api):
    from ui.live import CONNECT_TIMEOUT_S

    expect = playwright_api.expect
    context = browser.new_context(viewport=VIEWPORT, permissions=["camera"])
    context.set_default_timeout(ACTION_TIMEOUT_MS)
    page = context.new_page()
    try:
        page.goto(f"{relay_only_server.url}/?view=live", timeout=FIRST_PAINT_TIMEOUT_MS)
        webrtc = page.frame_locator("iframe[title*='streamlit_webrtc']").first
        webrtc.get_by_role("button", name="Start").click(timeout=FIRST_PAINT_TIMEOUT_MS)
        # The browser keeps trying; the page gives up after its timeout and says why.
        message = page.get_by_text(f"The live video could not connect within {CONNECT_TIMEOUT_S:.0f} s")
        expect(message).to_be_visible(timeout=int(CONNECT_TIMEOUT_S * 1000) + ACTION_TIMEOUT_MS)
        alert = page.locator("[data-testid=stAlert]").filter(has=message)
        expect(alert).to_contain_text("STUN/TURN")  # the reasons, the host's setting among them
        expect(alert).to_contain_text("CNN_VIZ_ICE_SERVERS")
        # No composed frame ever came back: the video never played.
        assert not any(webrtc.locator("video").evaluate_all("(vs) => vs.map((v) => v.videoWidth)"))
        # The stuck stream gave its slot back: another visitor's live view counts no stream running.
        other = context.new_page()
        other.goto(f"{relay_only_server.url}/?view=live", timeout=FIRST_PAINT_TIMEOUT_MS)
        expect(other.get_by_text("Live streams on this server: 0 of 4")).to_be_visible()
        other.close()
        page.locator(".st-key-live_to_snapshot_timeout button").click()
        # The snapshot camera: the sidebar's camera source, and the compare view instead of the live one.
        expect(page.locator("[data-testid=stCameraInput]")).to_be_visible(timeout=FIRST_PAINT_TIMEOUT_MS)
        expect(page.locator("iframe[title*='streamlit_webrtc']")).to_have_count(0)
    finally:
        context.close()
