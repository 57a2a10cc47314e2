"""Live camera view (issue #21): processed frames/s, CPU per stream, camera-to-composed-frame delay.

    python benchmarks/bench_live.py [--frames 30] [--vgg-frames 6] [--seconds 8]

(a) ``vizlib.live.FrameProcessor.process`` on a 640x480 frame of the sample face, bundled model,
    first and last conv grids: frames/s, time per step (forward / draw), process CPU seconds per
    frame (``time.process_time``); (a') the same with the Grad-CAM of the top class;
(b) the same for VGG16 (untrained weights, 224x224, block1_conv1 and block5_conv3);
(c) the streamlit-webrtc path: a camera track paced at 30 frames/s whose frames carry their number
    as a stamp of black/white blocks, through streamlit-webrtc's own ``AsyncVideoProcessTrack`` and
    ``ui.live.LiveVideo`` (latest frame wins); each composed frame's stamp is read back from its
    camera panel: delay = when the composed frame came out - when its camera frame was made, and the
    share of camera frames dropped. What this leaves out of glass-to-glass: the browser's capture,
    VP8 encode/decode and the network (on localhost a few ms each).
Room arithmetic: all streams of a process share one model and its run lock, so one process
processes at most 1 / (time per frame) frames/s in total, split between its streams.
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
    scale = 461 / frame.shape[1]  # the camera panel's width in the composed frame / the camera's
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--vgg-frames", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=8.0)
    a = ap.parse_args()
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
    res["room"] = {"process_frames_per_s": b["frames_per_s"],
                   "streams_at_10_per_s": b["frames_per_s"] / 10, "streams_at_5_per_s": b["frames_per_s"] / 5}
    for k, v in res.items():
        print(k, v)
    _common.save("bench_live", res)


if __name__ == "__main__":
    main()
