"""Live camera view (issue #21): processed frames/s, CPU per stream, camera-to-composed-frame delay.

    python benchmarks/bench_live.py [--frames 30] [--vgg-frames 6] [--seconds 8]
    python benchmarks/bench_live.py --browser [--seconds 20]      # (d) only: glass-to-glass in Chromium

(a) ``vizlib.live.FrameProcessor.process`` on a 640x480 frame of the sample face, bundled model,
    first and last conv grids: frames/s, time per step (prepare: the model view; forward: the traced
    ``live.frame`` step and the top-5; draw), process CPU seconds per frame
    (``time.process_time``); (a') the same with the Grad-CAM of the top class (same one pass);
(b) the same for VGG16 (untrained weights, 224x224, block1_conv1 and block5_conv3);
(c) the streamlit-webrtc path: a camera track paced at 30 frames/s whose frames carry their number
    as a stamp of black/white blocks, through streamlit-webrtc's own ``AsyncVideoProcessTrack`` and
    ``ui.live.LiveVideo`` (latest frame wins); each composed frame's stamp is read back from its
    camera panel: delay = when the composed frame came out - when its camera frame was made, and the
    share of camera frames dropped. What this leaves out of glass-to-glass: the browser's capture,
    VP8 encode/decode and the network (on localhost a few ms each).
(d) ``--browser``: glass-to-glass in Chromium. ``streamlit run app.py`` (the bundled model, offline)
    and Chromium whose fake camera plays a Y4M of the sample face stamped with its frame number (30
    frames/s). A script injected into the page keeps the camera stream the live view sends and shows
    it in a video of its own; on every frame either video presents (``requestVideoFrameCallback``) it
    reads the stamp: off the camera preview, and off the camera panel of the composed frame coming
    back. Delay of a composed frame = when it was presented - when the same camera frame was presented
    locally: the whole WebRTC round trip (encode, send, decode, the model, draw, encode, send, decode,
    display). It leaves out only the local preview's own latency (capture -> display, about one
    frame). Also the server process's CPU seconds per processed frame (its /proc stat).
Room arithmetic: streams of a process share one model and its run lock, but a frame holds it for
a few ms now; the cores are the limit: CPU seconds per frame x frames/s = cores per stream.
"""

from __future__ import annotations

import argparse
import asyncio
import fractions
import os
import statistics
import time

import _common  # noqa: F401  (repo on sys.path, quiet TensorFlow)
import numpy as np

import vizlib  # noqa: F401  (before TensorFlow: oneDNN off, WebRTC's OpenSSL first)

STAMP_BITS, STAMP_PX = 12, 40


def stamp(rgb: np.ndarray, n: int) -> np.ndarray:
    out = rgb.copy()
    for b in range(STAMP_BITS):
        out[:STAMP_PX, b * STAMP_PX:(b + 1) * STAMP_PX] = 255 if (n >> b) & 1 else 0
    return out


def read_stamp(composed: np.ndarray, scale: float, pad: int = 8) -> int:
    n, cell = 0, STAMP_PX * scale
    for b in range(STAMP_BITS):
        y, x = pad + int(cell / 2), pad + int(b * cell + cell / 2)
        if composed[y, x].mean() > 128:
            n |= 1 << b
    return n


def run_processor(model, frame, n: int, **kw) -> dict:
    from vizlib.live import FrameProcessor

    p = FrameProcessor(model, **kw)
    p.process(frame)  # warm: the extractor is built once per model and layer set
    steps: dict[str, list[float]] = {}
    cpu0, t0 = time.process_time(), time.perf_counter()
    for _ in range(n):
        r = p.process(frame)
        for k, v in r.seconds.items():
            steps.setdefault(k, []).append(v)
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return {"frames_per_s": n / wall, "ms_per_frame": 1000 * wall / n, "cpu_s_per_frame": cpu / n,
            "cores_busy": cpu / wall, **{f"{k}_ms": 1000 * statistics.median(v) for k, v in steps.items()},
            "layers": list(p.layers)}


def run_stream(model, frame, seconds: float) -> dict:
    import av
    from aiortc.mediastreams import MediaStreamTrack
    from streamlit_webrtc.process import AsyncVideoProcessTrack

    from ui.live import LiveVideo

    made: dict[int, float] = {}

    class Camera(MediaStreamTrack):
        kind = "video"

        def __init__(self):
            super().__init__()
            self.i, self.start = 0, time.perf_counter()

        async def recv(self):
            due = self.start + self.i / 30
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            f = av.VideoFrame.from_ndarray(stamp(frame, self.i % 4096), format="rgb24")
            f.pts, f.time_base = self.i, fractions.Fraction(1, 30)
            made[self.i % 4096] = time.perf_counter()
            self.i += 1
            return f

    cam = Camera()
    video = LiveVideo(model)
    track = AsyncVideoProcessTrack(cam, video, stop_timeout=10)
    scale = panel_scale(frame.shape[1], frame.shape[0])
    delays, last = [], None

    async def go():
        nonlocal last
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            out = await track.recv()
            arr = out.to_ndarray(format="rgb24")
            if arr.shape[:2] != (540, 960):
                continue
            n = read_stamp(arr, scale)
            if n != last and n in made:
                delays.append(time.perf_counter() - made[n])
                last = n

    asyncio.run(go())
    track.stop()
    sent, taken = cam.i, video.mailbox.taken
    delays_ms = sorted(1000 * d for d in delays)
    return {"camera_frames": sent, "processed": taken, "dropped_share": 1 - taken / max(1, sent),
            "processed_per_s": taken / seconds, "delay_ms_median": statistics.median(delays_ms),
            "delay_ms_p95": delays_ms[int(0.95 * (len(delays_ms) - 1))], "delays_measured": len(delays_ms)}


#: What the page runs in every frame (the live view's video sits in streamlit-webrtc's iframe).
G2G_JS = """
(() => {
  if (!navigator.mediaDevices || window.__g2g) return;
  const G = window.__g2g = {local: [], shown: [], sizes: {}};
  const BITS = %(bits)d, PX = %(px)d, CAMERA_W = %(camera_w)d, PANEL = %(panel)f, PAD = %(pad)d;
  function watch(video, kind) {
    const canvas = document.createElement("canvas");
    const ctx = canvas.getContext("2d", {willReadFrequently: true});
    const onFrame = (now, meta) => {
      const w = video.videoWidth;
      if (w) {
        G.sizes[kind] = [w, video.videoHeight];
        // The stamp: BITS blocks of PX camera pixels along the top of the camera frame; in the composed
        // frame the camera panel starts at (PAD, PAD), scaled by PANEL (and all by w / 960 if resized).
        const f = kind === "local" ? w / CAMERA_W : w / 960;
        const cell = kind === "local" ? PX * f : PX * PANEL * f, x0 = kind === "local" ? 0 : PAD * f;
        canvas.width = Math.ceil(BITS * cell); canvas.height = Math.ceil(cell);
        ctx.drawImage(video, x0, x0, canvas.width, canvas.height, 0, 0, canvas.width, canvas.height);
        const d = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
        let n = 0;
        for (let b = 0; b < BITS; b++) {
          const i = (Math.floor(cell / 2) * canvas.width + Math.floor(b * cell + cell / 2)) * 4;
          if ((d[i] + d[i + 1] + d[i + 2]) / 3 > 128) n |= 1 << b;
        }
        if (kind === "local" || w === 960 || w === 1280) G[kind].push([meta.expectedDisplayTime, n]);
      }
      video.requestVideoFrameCallback(onFrame);
    };
    video.requestVideoFrameCallback(onFrame);
  }
  const getUserMedia = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
  navigator.mediaDevices.getUserMedia = async (constraints) => {
    const stream = await getUserMedia(constraints);
    const preview = document.createElement("video");
    preview.muted = true; preview.playsInline = true; preview.srcObject = stream; preview.__g2gPreview = true;
    preview.style.cssText = "position:fixed;left:0;bottom:0;width:160px;height:120px;pointer-events:none";
    document.body.appendChild(preview);
    preview.play();
    watch(preview, "local");
    return stream;
  };
  const seen = new WeakSet();
  setInterval(() => {
    for (const v of document.querySelectorAll("video")) {
      if (!seen.has(v) && !v.__g2gPreview && v.srcObject) {  // the live view's own video: what comes back
        seen.add(v); watch(v, "shown");
      }
    }
  }, 100);
})();
"""


def panel_scale(w: int, h: int) -> float:
    """How much a w x h camera frame is scaled into the composed 960x540 frame's camera panel."""
    from vizlib.live import SIZE

    pad = 8
    return min((SIZE[0] // 2 - 2 * pad) / w, int(SIZE[1] * 0.62) / h)


def browser_g2g(seconds: float) -> dict:
    """(d): glass-to-glass in Chromium, through the real page (see the module doc)."""
    import sys
    import tempfile
    from pathlib import Path

    from playwright.sync_api import sync_playwright

    import bench_browser
    from vizlib.images import load_sample

    sys.path.insert(0, str(_common.ROOT / "tests" / "browser"))
    from test_live_browser import write_y4m  # the tests' Y4M writer (Chromium's fake camera format)

    w, h, fps, n = 640, 480, 30, 240  # an 8 s loop; stamps 0..239
    face = np.asarray(load_sample("astronaut_face").convert("RGB").resize((w, h)))
    tmp = Path(tempfile.mkdtemp(prefix="bench_live_"))
    video = tmp / "stamped.y4m"
    write_y4m(video, [stamp(face, i) for i in range(n)], fps)
    js = G2G_JS % {"bits": STAMP_BITS, "px": STAMP_PX, "camera_w": w, "panel": panel_scale(w, h), "pad": 8}
    os.environ.update(CNN_VIZ_OFFLINE="1", KERAS_HOME=str(tmp / "keras"), CNN_VIZ_CACHE_DIR=str(tmp / "cache"))
    server = bench_browser.Server(bench_browser.free_port(), tmp / "server.log")
    try:
        server.wait_healthy()
        args = bench_browser.CHROMIUM_ARGS + ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                                              f"--use-file-for-fake-video-capture={video}"]
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=bench_browser.CHROMIUM, args=args, headless=True)
            try:
                context = browser.new_context(viewport={"width": 1400, "height": 1000}, permissions=["camera"])
                context.add_init_script(js)
                page = context.new_page()
                page.goto(f"http://localhost:{server.port}/?view=live", timeout=180_000)
                frame = page.frame_locator("iframe[title*='streamlit_webrtc']").first
                frame.get_by_role("button", name="Start").click(timeout=180_000)
                iframe, deadline = None, time.monotonic() + 180
                while time.monotonic() < deadline:  # the frame whose camera preview runs, once frames come back
                    iframe = next((f for f in page.frames if _evaluate(f, "() => window.__g2g.local.length > 0")),
                                  None)
                    if iframe is not None and _evaluate(iframe, "() => window.__g2g.shown.length > 5"):
                        break
                    page.wait_for_timeout(250)
                else:
                    raise RuntimeError("no composed frame came back within 180 s")
                cpu0, t0 = _cpu_seconds(server.proc.pid), time.perf_counter()
                mark = iframe.evaluate("() => [window.__g2g.local.length, window.__g2g.shown.length]")
                page.wait_for_timeout(seconds * 1000)
                cpu, wall = _cpu_seconds(server.proc.pid) - cpu0, time.perf_counter() - t0
                got = iframe.evaluate("() => window.__g2g")
                frame.get_by_role("button", name="Stop").click()
            finally:
                browser.close()
    finally:
        server.stop()
        for f in tmp.rglob("*.y4m"):
            f.unlink()
    local, shown = got["local"], got["shown"][mark[1]:]
    delays, unmatched, last = [], 0, None
    for t, k in shown:
        if k == last:
            continue  # the same composed frame presented again
        last = k
        # The latest local showing of that camera frame, within half the video's loop (its stamp repeats
        # every n frames); none: a stamp misread or a preview frame the local video skipped.
        before = [tl for tl, kl in local if kl == k and 0 <= t - tl < 1000 * n / fps / 2]
        if before:
            delays.append(t - before[-1])
        else:
            unmatched += 1
    delays.sort()
    new_frames = len(delays) + unmatched
    return {"camera_fps": fps, "seconds": round(wall, 1), "sizes": got["sizes"],
            "composed_frames_shown_per_s": new_frames / wall if wall else 0.0,
            "delay_ms_median": statistics.median(delays) if delays else None,
            "delay_ms_p95": delays[int(0.95 * (len(delays) - 1))] if delays else None,
            "delay_ms_max": delays[-1] if delays else None, "delays_measured": len(delays),
            "unmatched": unmatched,
            "server_cpu_s": round(cpu, 2), "server_cores_busy": cpu / wall if wall else 0.0,
            "server_cpu_s_per_frame": cpu / new_frames if new_frames else None}


def _evaluate(frame, js: str):
    try:
        return frame.evaluate(js)
    except Exception:  # noqa: BLE001 - a frame without the script (or navigating): not this one
        return None


def _cpu_seconds(pid: int) -> float:
    """A process's user + system CPU seconds so far (/proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--vgg-frames", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--browser", action="store_true", help="(d) only: glass-to-glass in Chromium")
    a = ap.parse_args()
    if a.browser:
        res = {"loadavg_before": os.getloadavg(), "cpus": os.cpu_count()}
        res["browser"] = browser_g2g(max(a.seconds, 20.0) if a.seconds == 8.0 else a.seconds)
        res["loadavg_after"] = os.getloadavg()
        for k, v in res.items():
            print(k, v)
        _common.save("bench_live_browser", res)
        return
    import keras

    from vizlib.images import load_sample
    from vizlib.models import load_bundled_model

    _common.quiet_tf()
    frame = np.asarray(load_sample("astronaut_face").convert("RGB").resize((640, 480)))
    load = os.getloadavg()
    bundled = load_bundled_model()
    res = {"loadavg_before": load, "cpus": os.cpu_count()}
    res["bundled"] = run_processor(bundled, frame, a.frames)
    res["bundled_gradcam"] = run_processor(bundled, frame, a.frames, gradcam=True)
    vgg = vizlib.as_model(keras.applications.VGG16(weights=None))
    res["vgg16"] = run_processor(vgg, frame, a.vgg_frames, layers=("block1_conv1", "block5_conv3"))
    res["stream"] = run_stream(bundled, frame, a.seconds)
    res["loadavg_after"] = os.getloadavg()
    b = res["bundled"]
    # The model and the draw only; --browser measures the whole stream (video codecs too) per frame.
    res["room"] = {"cores_per_stream_at_10_per_s": 10 * b["cpu_s_per_frame"],
                   "streams_per_free_core_at_10_per_s": 1 / (10 * b["cpu_s_per_frame"]),
                   "vgg16_cores_per_stream_at_2_per_s": 2 * res["vgg16"]["cpu_s_per_frame"]}
    for k, v in res.items():
        print(k, v)
    _common.save("bench_live", res)


if __name__ == "__main__":
    main()
