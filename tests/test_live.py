"""The live camera view's library part (vizlib.live) and its streamlit-webrtc processor (ui/live.py).

Real model (the bundled, trained expression CNN), real frames (the sample faces),
streamlit-webrtc's own async track for the drop-not-queue and start/stop tests.
"""

from __future__ import annotations

import asyncio
import gc
import json
import threading
import tracemalloc

import numpy as np
import pytest
from PIL import Image

import vizlib  # noqa: F401  (oneDNN off before TensorFlow)
from aio import run_async
from vizlib.errors import InputError
from vizlib.extract import forward
from vizlib.figures import mosaic
from vizlib.images import load_sample
from vizlib.live import GRID_GAPS, LIMIT_MESSAGE, FrameProcessor, LatestFrame, StreamSlots


def face(name: str = "astronaut_face", size=(640, 480)) -> np.ndarray:
    return np.asarray(load_sample(name).convert("RGB").resize(size))


def find(haystack: np.ndarray, needle: np.ndarray) -> list[tuple[int, int]]:
    """Top-left positions where ``needle`` appears exactly in ``haystack``."""
    h, w = needle.shape[:2]
    ys, xs = np.nonzero(np.all(haystack[: haystack.shape[0] - h + 1, : haystack.shape[1] - w + 1]
                               == needle[0, 0], axis=-1))
    return [(y, x) for y, x in zip(ys, xs) if np.array_equal(haystack[y:y + h, x:x + w], needle)]


def largest_mosaic(maps: np.ndarray, box: tuple[int, int]) -> np.ndarray:
    """vizlib.figures.mosaic of (H, W, C) maps with the largest cell that fits ``box`` = (width, height)."""
    for cell in range(200, 0, -1):
        canvas, _ = mosaic(np.moveaxis(maps, -1, 0), colormap="viridis", cell_px=cell, background=GRID_GAPS)
        if canvas.shape[1] <= box[0] and canvas.shape[0] <= box[1]:
            return canvas
    raise AssertionError("no mosaic fits")


def test_composed_frame_contains_both_grids_and_the_prediction(bundled):
    p = FrameProcessor(bundled)
    frame = face()
    out = p.process(frame)
    assert out.image.dtype == np.uint8 and out.image.shape == (540, 960, 3)
    # The library's own (eager) forward pass, independent of the live path's traced step.
    acts, output = forward(bundled, [Image.fromarray(frame)], list(p.layers))
    # The prediction is the model's own on that frame.
    assert out.top[0][0] == int(np.argmax(output[0])) and len(out.top) == 5
    assert out.top[0][2] == pytest.approx(float(np.max(output[0])), rel=1e-4)
    box = (960 - 480 - 8, (540 - 8) // 2 - 22 - 8)
    for name in p.layers:  # each layer's mosaic, as vizlib.figures draws it, is in the frame at full size
        grid = largest_mosaic(acts[name][0][..., : p.grid_channels], box)
        assert grid.shape[1] > box[0] * 0.8 or grid.shape[0] > box[1] * 0.8  # it fills its box
        # The traced step and the eager pass may round a map value differently in its last bit: a few
        # pixels may differ by a colour step; and the last grid has the stepped channel's outline on it.
        spots = [(y, x) for y, x in corners(out.image, grid.shape) if x >= 480]  # in the right half
        best = max((similarity(out.image, grid, y, x) for y, x in spots), default=0.0)
        assert best > 0.98, (name, best)


def corners(img: np.ndarray, shape: tuple) -> list[tuple[int, int]]:
    """Where a mosaic of ``shape`` can start: from gap-coloured pixels (its gaps) with none left of or
    above them (its top-left corner), or right of or below them (its bottom-right corner)."""
    white = np.all(img == np.array(GRID_GAPS, dtype=img.dtype), axis=-1)
    top_left, bottom_right = white.copy(), white.copy()
    top_left[1:] &= ~white[:-1]
    top_left[:, 1:] &= ~white[:, :-1]
    bottom_right[:-1] &= ~white[1:]
    bottom_right[:, :-1] &= ~white[:, 1:]
    ys, xs = np.nonzero(bottom_right)
    return list(zip(*np.nonzero(top_left))) + [(y - shape[0] + 1, x - shape[1] + 1) for y, x in zip(ys, xs)]


def similarity(img: np.ndarray, grid: np.ndarray, y: int, x: int) -> float:
    """Share of ``grid``'s pixels drawn at (y, x) in ``img`` within a small colour step."""
    region = img[y:y + grid.shape[0], x:x + grid.shape[1]].astype(int)
    if region.shape != grid.shape:
        return 0.0
    return float((np.abs(region - grid).max(axis=-1) <= 8).mean())


def test_gradcam_from_the_one_pass_is_the_libraries_gradcam(bundled):
    """The live step takes Grad-CAM from the frame's own forward pass: the same map and class as
    vizlib.explain (which runs the model cut at the final feature map, eagerly)."""
    from vizlib.explain import explain_class
    from vizlib.live import _frame_op

    frame = Image.fromarray(face())
    batch = np.ascontiguousarray(bundled.preprocess(bundled.raw_batch([frame])), dtype=np.float32)
    for cls in (None, 0, 3):
        want = explain_class(bundled, frame, cls)
        got = _frame_op(bundled, batch, layers=["conv2d_1"], channels=[[0, 1]], gradcam=True, class_index=cls)
        assert got["class_index"] == want.class_index
        assert got["cam"].shape == want.layer_cam.shape
        np.testing.assert_allclose(got["cam"], want.layer_cam, atol=1e-3)
        np.testing.assert_allclose(got["output"][0], want.probabilities, atol=1e-5)
    with pytest.raises(InputError, match="out of range"):
        _frame_op(bundled, batch, layers=["conv2d_1"], channels=[[0]], gradcam=True, class_index=99)
    with pytest.raises(InputError, match="channels 0 to"):
        _frame_op(bundled, batch, layers=["conv2d_1"], channels=[[8]], gradcam=False)


def test_frames_that_differ_give_different_grids_and_predictions(bundled):
    p = FrameProcessor(bundled)
    a = p.process(face("astronaut_face"))
    b = p.process(np.ascontiguousarray(face("astronaut_face")[:, ::-1][::-1]))  # upside down
    assert not np.array_equal(a.image[:, 480:], b.image[:, 480:])
    assert [c for c, _, _ in a.top] != [c for c, _, _ in b.top] or a.top[0][2] != pytest.approx(b.top[0][2])


def test_gradcam_overlay_changes_the_camera_panel_only_there(bundled):
    frame = face()
    plain = FrameProcessor(bundled).process(frame)
    cam = FrameProcessor(bundled, gradcam=True).process(frame)
    assert cam.class_index == cam.top[0][0]
    diff = np.any(plain.image != cam.image, axis=-1)
    assert diff[:340, :470].mean() > 0.5  # the camera panel is coloured by the heat map
    assert not diff[:, 480:].any()  # the grids are the same


def test_stepping_layer_channel_class(bundled):
    p = FrameProcessor(bundled)
    first, last = p.layers
    assert p.step_layer(1) != last and p.layers[0] == first
    p.step_layer(-1)
    assert p.layers == (first, last)
    n = p.model.layers[[i.name for i in p.model.layers].index(last)].output_shape[-1]
    assert p.step_channel(-1) == n - 1
    out = p.process(face())
    assert out.channel == n - 1
    top = out.top[0][0]
    assert p.step_class(1) == (top + 1) % len(bundled.class_names) and p.gradcam


def test_bad_frames_and_layers_are_refused_clearly(bundled):
    p = FrameProcessor(bundled)
    for bad, words in [(np.zeros((10, 10), np.uint8), "shape"), (np.zeros((10, 10, 3), np.float32), "uint8"),
                       ("frame", "numpy"), (np.zeros((0, 10, 3), np.uint8), "pixels per side")]:
        with pytest.raises(InputError, match=words):
            p.process(bad)
    with pytest.raises(InputError, match="Pick one of"):
        FrameProcessor(bundled, layers=["dense"])
    with pytest.raises(InputError, match="colormap"):
        FrameProcessor(bundled, colormap="nope")


def test_latest_frame_wins_and_old_frames_are_dropped():
    box = LatestFrame()
    for i in range(10):
        box.put(i)
    assert box.take(0) == 9 and box.dropped == 9
    assert box.take(0.01) is None  # nothing waits: nothing is queued behind
    got = []
    t = threading.Thread(target=lambda: got.append(box.take(5)))
    t.start()
    box.put("new")
    t.join(5)
    assert got == ["new"]
    box.put("x")
    box.close()
    assert box.take(0) is None


def test_stream_limit_holds_with_its_message():
    slots = StreamSlots(2)
    assert slots.acquire("a") and slots.acquire("a") and slots.acquire("b")
    assert not slots.acquire("c") and slots.full() and slots.in_use == 2
    assert "2 live streams" in slots.message() and "snapshot camera" in slots.message()
    slots.release("a")
    assert slots.acquire("c") and not slots.acquire("d")


def test_the_settings_bound_the_streams_and_the_visitor_beyond_is_told(bundled, monkeypatch):
    import vizlib.live as live
    from ui.live import LiveVideo

    monkeypatch.setenv("CNN_VIZ_LIVE_STREAMS", "1")
    monkeypatch.setattr(live, "_SLOTS", None)
    first, second = LiveVideo(bundled), LiveVideo(bundled)
    assert first.admitted and not second.admitted
    refused = second.compose(face())
    assert refused.shape == (480, 640, 3) and not np.array_equal(refused, face())  # the message, on the camera
    assert LIMIT_MESSAGE.format(n=1).startswith("The live view is full: 1 live")
    first.on_ended()
    third = LiveVideo(bundled)
    assert third.admitted and third.compose(face()).shape == (540, 960, 3)
    third.on_ended()
    monkeypatch.setattr(live, "_SLOTS", None)


def test_a_stream_that_gives_up_connecting_frees_its_slot(bundled, monkeypatch):
    import vizlib.live as live
    from ui.live import LiveVideo

    monkeypatch.setenv("CNN_VIZ_LIVE_STREAMS", "1")
    monkeypatch.setattr(live, "_SLOTS", None)
    stuck = LiveVideo(bundled)
    assert stuck.admitted and live.stream_slots().full()
    stuck.give_up("The live video could not connect within 12 s.")
    assert not live.stream_slots().full() and stuck.processor is None
    late = stuck.compose(face())  # should it connect after all, its frames say why they carry no model
    assert late.shape == (480, 640, 3) and not np.array_equal(late, face())
    other = LiveVideo(bundled)  # the slot is free for someone else
    assert other.admitted
    other.on_ended()
    monkeypatch.setattr(live, "_SLOTS", None)


def test_ice_servers_setting(monkeypatch):
    from vizlib.settings import ice_servers

    monkeypatch.delenv("CNN_VIZ_ICE_SERVERS", raising=False)
    assert ice_servers() == []  # none by default: nothing leaves the machine on localhost/LAN
    monkeypatch.setenv("CNN_VIZ_ICE_SERVERS", '[{"urls": "turn:turn.example:3478", "username": "u", '
                                              '"credential": "p"}]')
    assert ice_servers()[0]["username"] == "u"
    for bad in ("not json", '[{"url": "x"}]', "3"):
        monkeypatch.setenv("CNN_VIZ_ICE_SERVERS", bad)
        assert ice_servers() == []


def test_rtc_configuration_setting_can_ask_for_relay_only(monkeypatch):
    from vizlib.settings import rtc_configuration

    monkeypatch.delenv("CNN_VIZ_ICE_SERVERS", raising=False)
    assert rtc_configuration() == {"iceServers": []}
    turn = {"urls": "turn:turn.example:3478", "username": "u", "credential": "p"}
    monkeypatch.setenv("CNN_VIZ_ICE_SERVERS", json.dumps([turn]))
    assert rtc_configuration() == {"iceServers": [turn]}
    monkeypatch.setenv("CNN_VIZ_ICE_SERVERS", json.dumps({"iceServers": [turn], "iceTransportPolicy": "relay"}))
    assert rtc_configuration() == {"iceServers": [turn], "iceTransportPolicy": "relay"}
    # Relay with no server to relay through could never connect: not honoured.
    monkeypatch.setenv("CNN_VIZ_ICE_SERVERS", json.dumps({"iceServers": [], "iceTransportPolicy": "relay"}))
    assert rtc_configuration() == {"iceServers": []}


class _Camera:
    """A MediaStreamTrack that hands out numbered frames as fast as asked (no pacing)."""

    kind = "video"

    def __init__(self, frames):
        from aiortc.mediastreams import MediaStreamTrack

        self.track = type("T", (MediaStreamTrack,), {"kind": "video", "recv": self._recv})()
        self.frames, self.i = frames, 0

    async def _recv(self):
        import av

        f = av.VideoFrame.from_ndarray(self.frames[self.i % len(self.frames)], format="rgb24")
        f.pts, f.time_base = self.i, __import__("fractions").Fraction(1, 30)
        self.i += 1
        await asyncio.sleep(0)
        return f


def _one_stream(model, frames, processed_frames: int = 1):
    """Start a stream in streamlit-webrtc's async track, take processed frames, stop it."""
    from streamlit_webrtc.process import AsyncVideoProcessTrack

    from ui.live import LiveVideo

    cam = _Camera(frames)
    video = LiveVideo(model)
    track = AsyncVideoProcessTrack(cam.track, video, stop_timeout=10)

    async def run():
        got = []
        for _ in range(2000):
            out = await track.recv()
            arr = out.to_ndarray(format="rgb24")
            if arr.shape == (540, 960, 3):  # a composed frame (before the first, the camera's own passes)
                got.append(arr)
                if video.mailbox.taken >= processed_frames:
                    break
            await asyncio.sleep(0.005)
        return got

    got = run_async(run)  # in a thread of its own (tests/aio.py)
    track.stop()
    return video, got, cam.i


def test_stream_drops_frames_when_the_model_is_slower_than_the_camera(bundled):
    video, got, sent = _one_stream(bundled, [face()], processed_frames=3)
    assert got and all(g.shape == (540, 960, 3) for g in got)
    assert video.processor is None  # stopping released it
    # The camera sent many more frames than were processed: the rest were dropped, not queued.
    assert video.mailbox.dropped > 0 and video.mailbox.taken >= 3
    assert video.received >= video.mailbox.taken + video.mailbox.dropped  # what the page takes for "connected"
    assert video.mailbox.taken + video.mailbox.dropped <= sent


def _rss() -> int:
    """This process's resident memory in bytes (VmRSS): what TensorFlow and numpy hold, not only Python."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_memory_and_threads_flat_over_100_start_stop_cycles(bundled):
    """100 streams started, each composing a frame on the real processor (the bundled model), and stopped:
    each stream's processor and frames are freed, its slot and thread given back, memory flat."""
    import weakref

    import vizlib.live as live

    frames = [face()]
    slots = live.stream_slots()
    for _ in range(5):  # warm-up: TensorFlow's and the traced step's one-time allocations
        _one_stream(bundled, frames)
    gc.collect()
    threads = threading.active_count()
    rss = _rss()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    gone = []
    half = None
    for i in range(100):
        video, got, _ = _one_stream(bundled, frames)
        assert got and got[-1].shape == (540, 960, 3)  # it composed frames with the model
        assert video.processor is None  # stopping released the processor
        gone.append(weakref.ref(video))
        del video, got
        if i == 49:
            gc.collect()
            half = _rss()
    gc.collect()
    grown = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    assert slots.in_use == 0
    assert threading.active_count() <= threads
    assert sum(r() is not None for r in gone) <= 1  # the streams themselves are gone (the last may linger)
    # 100 streams each allocated ~2 MB of frames (200 MB if kept); what stays is a few hundred kB of caches.
    assert grown < 2 * 2**20, grown
    # Nor held outside Python (TensorFlow, numpy). The allocator's arenas settle over the first cycles
    # (CI once saw 40.5 MB over all 100), so the leak check is the second 50: a stream that kept its
    # frames would add ~100 MB there, a settled process drifts by ±10 MB (300 cycles measured flat).
    end = _rss()
    assert end - half < 40 * 2**20, ((end - half) / 2**20, (half - rss) / 2**20)
    assert end - rss < 120 * 2**20, (end - rss) / 2**20


def test_page_without_webrtc_says_why_and_offers_the_snapshot_camera(offline):
    """AppTest has no WebRTC runtime: the live view says so and its button opens the snapshot camera."""
    from test_app import assert_clean, make_app

    at = make_app(view="live").run()
    assert_clean(at)
    assert any("snapshot camera" in w.value for w in at.warning)
    at.button(key="live_to_snapshot").click().run()
    assert_clean(at)
    assert at.session_state["source"] == "camera" and at.session_state["view"] == "compare"


def test_a_stream_that_stops_while_connecting_is_reported_as_failed():
    from ui.live import connection_phase

    phase = None
    for signalling, playing, want in [(False, False, "stopped"), (True, False, "connecting"), (True, True, "playing"),
                                      (False, False, "stopped"), (True, False, "connecting"),
                                      (False, False, "failed"), (False, False, "failed"), (True, False, "connecting")]:
        phase = connection_phase(phase, signalling, playing)
        assert phase == want


def test_an_uploaded_model_streams_from_its_own_process(tmp_path):
    """The frame's model work is an op (live.frame): an uploaded model, isolated in its child process,
    composes the same frame, Grad-CAM included, as the same model in this process."""
    import keras

    from vizlib.isolation import open_uploaded_model

    keras.utils.set_random_seed(3)
    inp = keras.Input((24, 24, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="c1")(inp)
    x = keras.layers.Conv2D(6, 3, strides=2, activation="relu", name="c2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(3, activation="softmax")(x)
    model = keras.Model(inp, out, name="tiny")
    path = tmp_path / "tiny.keras"
    model.save(path)
    here = vizlib.load_model(model, preprocess="unit")
    frame = face()
    with open_uploaded_model(path.read_bytes(), "tiny.keras", preprocess="unit") as isolated:
        for cam in (False, True):
            a = FrameProcessor(here, gradcam=cam).process(frame)
            b = FrameProcessor(isolated, gradcam=cam).process(frame)
            assert a.layers == b.layers == ("c1", "c2") and a.class_index == b.class_index
            assert [c for c, _, _ in a.top] == [c for c, _, _ in b.top]
            assert (np.abs(a.image.astype(int) - b.image.astype(int)).max(axis=-1) <= 8).mean() > 0.99


def test_a_model_without_one_prediction_still_streams_its_grids():
    """Two outputs (no one prediction to rank): the grids are drawn, no bars, no Grad-CAM, no error."""
    import keras

    keras.utils.set_random_seed(5)
    inp = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="c1")(inp)
    y = keras.layers.Conv2D(5, 3, strides=2, activation="relu", name="c2")(x)
    a = keras.layers.Dense(3, activation="softmax", name="a")(keras.layers.GlobalAveragePooling2D()(y))
    b = keras.layers.Dense(2, name="b")(keras.layers.GlobalAveragePooling2D()(y))
    m = vizlib.load_model(keras.Model(inp, [a, b]), preprocess="unit")
    frame = face()
    for cam in (False, True):
        out = FrameProcessor(m, gradcam=cam).process(frame)
        assert out.top == [] and out.class_index is None and out.layers == ("c1", "c2")
        acts = vizlib.activations(m, [Image.fromarray(frame)], ["c2"])
        grid = largest_mosaic(acts["c2"][0], (960 - 480 - 8, (540 - 8) // 2 - 22 - 8))
        spots = [(y, x) for y, x in corners(out.image, grid.shape) if x >= 480]
        assert max(similarity(out.image, grid, y, x) for y, x in spots) > 0.98
