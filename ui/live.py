"""The live view: the visitor's camera as a stream, each frame composed by :mod:`vizlib.live`.

streamlit-webrtc carries the video (WebRTC, browser <-> this server). Its
``async_processing`` worker hands :meth:`LiveVideo.recv_queued` every frame that
arrived since the last one; the newest wins (:class:`vizlib.live.LatestFrame`),
the rest are dropped. The composed picture goes back into the video: the page
does not rerun per frame.

Bounded: a stream takes a slot of :func:`vizlib.live.stream_slots` when it
starts and gives it back when it stops; a visitor beyond the limit is told so
and offered the snapshot camera (the sidebar's Camera source). ICE servers come
from ``CNN_VIZ_ICE_SERVERS`` (default none: localhost and LAN need none, and no
STUN lookup leaves the machine).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any, Optional

import numpy as np
import streamlit as st
import streamlit.components.v2  # noqa: F401  (st.components.v2)

from vizlib.errors import InputError
from vizlib.extract import forward
from vizlib.live import FrameProcessor, LatestFrame, check_frame, stream_slots
from vizlib.settings import rtc_configuration
from ui.state import fragment

log = logging.getLogger("cnn_viz")

#: Keys -> the step buttons they press (presenter mode).
KEYS = {"ArrowUp": "live_layer_prev", "ArrowDown": "live_layer_next", "ArrowLeft": "live_ch_prev",
        "ArrowRight": "live_ch_next", "[": "live_cls_prev", "]": "live_cls_next"}

_JS = """
export default function (component) {
  const { data } = component;
  window.__cnnVizLiveKeys = data.presenter ? data.keys : {};
  // Presenter mode: the sidebar out of the way while the presenter toggle is on the page and on. A rule on the
  // toggle itself, not a style added and removed: leaving the live view (the toggle leaves the page) can never
  // leave the sidebar hidden in another view.
  if (!document.getElementById("cnn-viz-presenter")) {
    const style = document.createElement("style");
    style.id = "cnn-viz-presenter";
    const on = "body:has(.st-key-live_presenter input:checked) ";
    style.textContent = on + '[data-testid="stSidebar"], ' + on + '[data-testid="stSidebarCollapsedControl"] '
      + "{ display: none; }";
    document.head.appendChild(style);
  }
  if (data.presenter && !window.__cnnVizPresenting) {  // the live video in view, once per switch-on
    const video = document.querySelector("iframe[title*='streamlit_webrtc']");
    if (video) video.scrollIntoView({ block: "start" });
  }
  window.__cnnVizPresenting = !!data.presenter;
  if (window.__cnnVizLiveKeysOn) return;
  window.__cnnVizLiveKeysOn = true;
  document.addEventListener("keydown", (event) => {
    const t = event.target;
    const typing = t && (t.tagName === "TEXTAREA" || t.isContentEditable || (t.tagName === "INPUT"
      && !["checkbox", "radio", "button", "range"].includes(t.type)));
    if (typing) return;  // keys typed into a text box stay there
    const key = (window.__cnnVizLiveKeys || {})[event.key];
    if (!key) return;
    const button = document.querySelector(".st-key-" + key + " button");
    if (button) { button.click(); event.preventDefault(); }
  });
}
"""
_CSS = ":host { display: none; }"

#: A stream still connecting after this many seconds is reported as failed: a browser may keep trying
#: for minutes when no route can ever work (e.g. only an unreachable TURN server), without saying so.
CONNECT_TIMEOUT_S = 12.0

WHY_NO_CONNECTION = (
    "The live video needs a WebRTC connection between your browser and this server. It fails when "
    "the page is not on **localhost or HTTPS** (browsers give cameras only to secure pages), when the "
    "browser has no camera permission, or when the server is on another network and no STUN/TURN "
    "server is configured (the host sets `CNN_VIZ_ICE_SERVERS`; see the README's hosting section).")


class LiveVideo:
    """streamlit-webrtc's video processor: newest frame -> :class:`FrameProcessor` -> composed frame."""

    def __init__(self, model: Any, **options: Any) -> None:
        self.owner = uuid.uuid4().hex
        self.slots = stream_slots()
        self.admitted = self.slots.acquire(self.owner)
        self.processor: Optional[FrameProcessor] = FrameProcessor(model, **options) if self.admitted else None
        self.mailbox = LatestFrame()
        self.lock = threading.Lock()
        self.error: Optional[str] = None
        self.received = 0  # camera frames that reached this server: the connection is up once there is one

    async def recv_queued(self, frames: list) -> list:
        """All frames since the last call -> one composed frame (the newest input's)."""
        import av

        self.received += len(frames)
        for f in frames:
            self.mailbox.put(f)
        frame = self.mailbox.take(0)
        rgb = frame.to_ndarray(format="rgb24")
        out = self.compose(rgb)
        new = av.VideoFrame.from_ndarray(out, format="rgb24")
        new.pts, new.time_base = frame.pts, frame.time_base
        return [new]

    def compose(self, rgb: np.ndarray) -> np.ndarray:
        """One RGB frame through the processor (or why not: the limit message, or the stream gave up)."""
        try:
            with self.lock:  # the processor may be dropped meanwhile (the stream stopped or gave up)
                if self.processor is None:
                    return _banner(rgb, self.error or self.slots.message())
                return self.processor.process(check_frame(rgb)).image
        except InputError as exc:
            self.error = str(exc)
        except Exception:  # noqa: BLE001 - the stream must not die on one frame; details to the log
            log.exception("live frame failed")
            self.error = "A live frame could not be processed; the details are in the server log."
        return _banner(rgb, self.error or "")

    def give_up(self, reason: str) -> None:
        """The connection never came up: free the slot and the processor now, not when the browser
        stops trying (a stuck stream must not keep a room's live view full)."""
        self.error = reason
        self.on_ended()

    def on_ended(self) -> None:
        """The stream stopped: give the slot back and drop the model's pictures."""
        self.slots.release(self.owner)
        self.mailbox.close()
        with self.lock:  # not while a frame is being composed
            if self.processor is not None:
                self.processor.close()
            self.processor = None


def _banner(rgb: np.ndarray, text: str) -> np.ndarray:
    """The camera frame with ``text`` written over a dark band (what a refused or failed stream shows)."""
    from PIL import Image, ImageDraw

    from vizlib.export import slide_font

    img = Image.fromarray(rgb, mode="RGB")
    draw = ImageDraw.Draw(img)
    size = max(12, img.width // 40)
    words, lines, line = text.split(), [], ""
    for w in words:
        if len(line) + len(w) + 1 > img.width // (size * 0.55):
            lines.append(line)
            line = w
        else:
            line = f"{line} {w}".strip()
    lines.append(line)
    draw.rectangle((0, 0, img.width, (len(lines) + 1) * size * 1.3), fill=(20, 24, 31))
    for i, ln in enumerate(lines):
        draw.text((size // 2, size // 2 + i * size * 1.3), ln, fill=(255, 200, 40), font=slide_font(size))
    return np.asarray(img)


def _to_snapshot() -> None:
    st.session_state.update(source="camera", view="compare")


def _snapshot_fallback(reason: str, key: str = "live_to_snapshot") -> None:
    st.warning(reason)
    st.button("Use the snapshot camera", key=key, on_click=_to_snapshot)


def _connection_watch(since: float, ctx: Any) -> None:
    """While a stream connects: after :data:`CONNECT_TIMEOUT_S`, say it failed, give its stream slot
    back and offer the snapshot camera.

    Runs as a fragment every second (the page gets no rerun while the browser keeps trying).
    """
    if st.session_state.get("view") == "compare":  # the button below was pressed: the whole page changes
        st.rerun(scope="app")
    proc = getattr(ctx, "video_processor", None)
    if isinstance(proc, LiveVideo) and proc.received:
        return  # camera frames reach the server: connected (the page's next run says so), whatever the time
    if time.monotonic() - since > CONNECT_TIMEOUT_S:
        reason = f"The live video could not connect within {CONNECT_TIMEOUT_S:.0f} s. "
        if isinstance(proc, LiveVideo) and proc.processor is not None:
            proc.give_up(reason + "Press Stop, then Start to try again.")
        _snapshot_fallback(reason + WHY_NO_CONNECTION, key="live_to_snapshot_timeout")


def connection_phase(before: Optional[str], signalling: bool, playing: bool) -> str:
    """"connecting" / "playing" / "stopped" / "failed": a stream that stops while still connecting failed.

    streamlit-webrtc's frontend stops a peer connection whose state turns "failed"
    (no ICE route: another network and no STUN/TURN, UDP blocked, ...) and the
    page learns only that it is no longer signalling, without ever having played.
    """
    if playing:
        return "playing"
    if signalling:
        return "connecting"
    return "failed" if before in ("connecting", "failed") else "stopped"


def _reset_channel() -> None:
    st.session_state.live_ch = 0


def _step_layer(names: list[str], delta: int) -> None:
    """↑/↓: the previous / next layer with maps for the second grid, from its first channel."""
    i = names.index(st.session_state.live_layer) if st.session_state.get("live_layer") in names else 0
    st.session_state.live_layer = names[(i + delta) % len(names)]
    _reset_channel()


def _step(key: str, delta: int, start: int = 0) -> None:
    value = st.session_state.get(key)
    st.session_state[key] = (start if value is None else int(value)) + delta


def view_live(m: Any, state: Any, image_key: str, image_name: str, image: Any, view_img: Any) -> Optional[np.ndarray]:
    """The live view; returns the prediction output for the image in the sidebar (the snapshot path)."""
    from vizlib.layers import first_conv, last_conv, spatial_layers

    _, output = forward(m, [image], [], predictions=True)
    slots = stream_slots()
    if slots.limit == 0:
        _snapshot_fallback("The live view is switched off on this server (CNN_VIZ_LIVE_STREAMS=0).")
        return output
    try:
        from streamlit_webrtc import WebRtcMode, webrtc_streamer
    except ImportError:
        _snapshot_fallback("The live view needs the streamlit-webrtc package, which is not installed here.")
        return output

    names = [i.name for i in spatial_layers(m)]
    c1, c2, c3 = st.columns([2, 1, 1])
    default = names.index(last_conv(m).name)
    if st.session_state.get("live_layer") not in names:  # first visit, or another model
        st.session_state.live_layer = names[default]
    # Kept for the session (persist_state): back in the live view, it is as the visitor left it.
    layer = c1.selectbox("Second grid: layer", names, key="live_layer", on_change=_reset_channel,
                         persist_state="session",
                         help="The first grid is always the first conv layer; pick what the second shows.")
    cam = c2.toggle("Grad-CAM over the video", key="live_cam", persist_state="session")
    presenter = c3.toggle("Presenter mode", key="live_presenter", persist_state="session",
                          help="One large view with large labels; keys ↑/↓ layer, ←/→ channel, [ / ] class.")
    channel = int(st.session_state.get("live_ch", 0))
    cls_step = st.session_state.get("live_cls")
    n_classes = len(m.class_names or []) or 1
    class_index = None if cls_step is None else int(cls_step) % n_classes
    options = dict(layers=(first_conv(m).name, layer), channel=channel,
                   gradcam=cam or class_index is not None, class_index=class_index, presenter=presenter,
                   colormap=state.cmap)

    was_playing = st.session_state.get("_live_ctx_playing", False)
    if not was_playing and slots.full():
        _snapshot_fallback(slots.message())
        return output

    try:
        ctx = webrtc_streamer(
            key="live", mode=WebRtcMode.SENDRECV, async_processing=True,
            video_processor_factory=lambda: LiveVideo(m, **options),
            rtc_configuration=rtc_configuration(),
            media_stream_constraints={"video": {"width": 640, "height": 480}, "audio": False},
            video_html_attrs={"autoPlay": True, "controls": False, "muted": True,
                              "style": {"width": "100%" if presenter else "min(100%, 960px)"}},
        )
    except Exception:  # noqa: BLE001 - no WebRTC here (e.g. a test runtime): say so, offer the snapshot
        log.exception("the live stream could not start")
        _snapshot_fallback("The live video could not start on this server (its WebRTC part failed; the "
                           "details are in the server log). The snapshot camera works instead.")
        return output
    st.session_state["_live_ctx_playing"] = bool(ctx.state.playing)
    phase = connection_phase(st.session_state.get("_live_phase"), ctx.state.signalling, ctx.state.playing)
    st.session_state["_live_phase"] = phase
    if phase == "connecting":
        since = st.session_state.setdefault("_live_connecting_since", time.monotonic())
        fragment(_connection_watch, run_every=1.0)(since, ctx)
    else:
        st.session_state.pop("_live_connecting_since", None)
    if phase == "failed":
        _snapshot_fallback("The live video could not connect. " + WHY_NO_CONNECTION)
    proc = ctx.video_processor
    if proc is not None:
        if not proc.admitted:
            _snapshot_fallback(slots.message())
        elif proc.processor is not None:
            with proc.lock:  # the page's widgets steer the running stream; no restart
                p = proc.processor
                if p is not None:  # (it may have stopped meanwhile)
                    p.layers, p.channel = options["layers"], channel
                    p.gradcam, p.class_index, p.presenter = options["gradcam"], class_index, presenter
                    p.colormap = options["colormap"]
        if proc.error:
            st.warning(proc.error)
    elif ctx.state.signalling and not ctx.state.playing:
        st.info("Connecting… " + WHY_NO_CONNECTION)
    if not ctx.state.playing:
        with st.expander("No video? Why, and the snapshot camera instead"):
            st.markdown(WHY_NO_CONNECTION)
            st.button("Use the snapshot camera", key="live_to_snapshot_help",
                      on_click=lambda: st.session_state.update(source="camera", view="compare"))
    b = st.columns(6)
    for col, (key, label, target, delta) in zip(b, [
            ("live_layer_prev", "↑ layer", "live_layer", -1), ("live_layer_next", "↓ layer", "live_layer", 1),
            ("live_ch_prev", "← channel", "live_ch", -1), ("live_ch_next", "→ channel", "live_ch", 1),
            ("live_cls_prev", "[ class", "live_cls", -1), ("live_cls_next", "] class", "live_cls", 1)]):
        if target == "live_layer":
            col.button(label, key=key, on_click=_step_layer, args=(names, delta), width="stretch")
            continue
        start = 0 if target == "live_ch" or output is None else int(np.argmax(output[0]))
        col.button(label, key=key, on_click=_step, args=(target, delta, start), width="stretch")
    st.components.v2.component("cnn_viz_live_keys", js=_JS, css=_CSS)(
        key="live-keys", data={"keys": KEYS, "presenter": bool(presenter)})
    st.caption(f"Live streams on this server: {slots.in_use} of {slots.limit}. Frames the model can't keep "
               "up with are dropped, never queued: the picture follows you.")
    return output
