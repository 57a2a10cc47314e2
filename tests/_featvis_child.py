"""Gradient work for tests/test_featvis.py, run in a child process that must exit cleanly.

Input gradients through some models can abort a TensorFlow process (oneDNN
heap corruption); a test that took them in the pytest process would take the
whole run down. Each task prints one JSON line of results on stdout.

    python tests/_featvis_child.py <task> [args...]
"""

from __future__ import annotations

import glob
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

if sys.argv[1:2] == ["refused"]:
    import tensorflow  # noqa: F401  (first, with oneDNN on: the case vizlib must refuse)

import vizlib  # noqa: E402  (before TensorFlow: oneDNN off)
import numpy as np  # noqa: E402

from vizlib import featvis  # noqa: E402
from vizlib.errors import InputError  # noqa: E402

#: Steps used by the specificity checks.
STEPS = None  # the default (featvis.DEFAULT_STEPS): what a user gets
COLOURS = np.array([[1, .15, .15], [.15, 1, .15], [.15, .15, 1]], np.float32)


def samples() -> list:
    return [vizlib.load_image(p) for p in sorted(glob.glob(str(ROOT / "assets" / "samples" / "*")))]


def stripes(n: int, rng: np.random.Generator, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Six classes: red / green / blue stripes, horizontal or vertical, any phase and frequency, noisy."""
    x = np.zeros((n, size, size, 3), np.float32)
    y = rng.integers(0, 6, n)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    for i in range(n):
        colour, vertical = divmod(int(y[i]), 2)
        f, phase = rng.uniform(0.12, 0.3), rng.uniform(0, 2 * np.pi)
        pattern = np.sin(2 * np.pi * f * (xx if vertical else yy) + phase)
        image = rng.uniform(0.3, 0.7) + 0.3 * pattern[..., None] * COLOURS[colour] + rng.normal(0, .05, (size, size, 3))
        x[i] = np.clip(image, 0, 1) * 255
    return x, y


def small_trained_model():
    """A small RGB CNN shaped like the bundled one (conv-BN-ReLU, last conv = one map per class, GAP), trained."""
    import keras

    keras.utils.set_random_seed(0)
    x, y = stripes(1200, np.random.default_rng(0))
    L = keras.layers
    inp = keras.Input((32, 32, 3))
    h = L.Conv2D(8, 3, padding="same", use_bias=False, name="c1")(inp)
    h = L.Activation("relu")(L.BatchNormalization()(h))
    h = L.MaxPooling2D()(h)
    h = L.Conv2D(16, 3, padding="same", use_bias=False, name="c2")(h)
    h = L.Activation("relu")(L.BatchNormalization()(h))
    h = L.MaxPooling2D()(h)
    h = L.Conv2D(6, 3, padding="same", name="c3")(h)
    out = L.Activation("softmax")(L.GlobalAveragePooling2D()(h))
    km = keras.Model(inp, out, name="stripes")
    km.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    hist = km.fit(x / 255.0, y, epochs=5, batch_size=32, verbose=0)
    return vizlib.load_model(km, preprocess="unit"), float(hist.history["accuracy"][-1])


def layer_report(m, layer: str, imgs: list, steps: int, cache) -> dict:
    """Specificity of every channel's visualisation, and how it compares with the sample images."""
    vis = featvis.render(m, layer, list(range(vizlib.find_layer(m, layer).channels)), steps=steps, cache=cache)
    acts = vizlib.activations(m, imgs, [layer])[layer]
    fired_samples = np.maximum(acts, 0).mean(axis=(1, 2)).max(axis=0)  # (C,) the most any sample image gets
    mean_samples = acts.mean(axis=(1, 2)).max(axis=0)
    from vizlib.featvis.score import specificity

    return {
        "layer": layer,
        "shape": list(vis.images.shape), "dtype": str(vis.images.dtype),
        "flat": vis.flat(),
        "specificity": specificity(vis.stats["fired"], vis.channels),
        "failed": vis.failed(),
        "vs_samples": [float(v) for v in vis.vs_samples()],
        "rank_fired": vis.rank("fired"), "rank_mean": vis.rank("mean"),
        "own_fired": vis.own("fired").tolist(), "own_mean": vis.own("mean").tolist(),
        "samples_fired": fired_samples.tolist(), "samples_mean": mean_samples.tolist(),
        "reference": [float(v) for v in vis.reference], "fired": vis.stats["fired"].tolist(),
        "cached": vis.cached,
        "digest": featvis.DiskCache.key(vis.images.tobytes().hex()),
    }


def task_specificity(cache_dir: str) -> dict:
    """Bundled model's first and last conv layers and a small trained RGB model's: every channel, one batch each."""
    os.environ["CNN_VIZ_CACHE_DIR"] = cache_dir
    cache = featvis.DiskCache()
    imgs = samples()
    out: dict = {"gradients_safe": featvis.gradients_safe()}
    m = vizlib.load_model("emotion_cnn")
    first, last = vizlib.first_conv(m).name, vizlib.last_conv(m).name
    t0 = time.perf_counter()
    out["bundled"] = [layer_report(m, first, imgs, STEPS, cache), layer_report(m, last, imgs, STEPS, cache)]
    out["bundled_seconds"] = time.perf_counter() - t0
    # Determinism: the same seed gives the same image, alone or in a batch; another seed another image.
    one = featvis.render(m, last, [3], steps=48, cache=False).images
    again = featvis.render(m, last, [3], steps=48, cache=False).images
    other = featvis.render(m, last, [3], steps=48, seed=1, cache=False).images
    batched = featvis.render(m, last, [5, 3, 0], steps=48, cache=False).images[1:2]
    out["deterministic"] = bool(np.array_equal(one, again))
    out["batch_independent"] = float(np.abs(one.astype(int) - batched.astype(int)).max())
    out["seed_changes"] = float(np.abs(one.astype(int) - other.astype(int)).mean())
    pinned = vizlib.featvis.feature_visualization(m, first, [1, 2], steps=4)
    out["pinned"] = [list(pinned.shape), str(pinned.dtype)]
    sm, acc = small_trained_model()
    out["small_accuracy"] = acc
    out["small"] = [layer_report(sm, "c1", imgs, STEPS, None), layer_report(sm, "c3", imgs, STEPS, None)]
    pinned = vizlib.featvis.feature_visualization(sm, "c2", [0, 5, 9], size=40, steps=3)
    out["small_pinned"] = [list(pinned.shape), str(pinned.dtype)]
    return out


def sweep_layer(m, layer: str, channels: list, steps: int) -> dict:
    """The default method and plain gradient ascent on the same channels and steps, scored alike."""
    from vizlib.featvis.engine import State
    from vizlib.featvis.graph import PLAIN
    from vizlib.featvis.score import specificity

    size = featvis.default_size(m, layer)
    out: dict = {"layer": layer, "channels": channels, "size": list(size)}
    for name, recipe in (("new", None), ("plain", PLAIN)):
        st = State(m, layer, channels, size, steps, 0, None, recipe)
        st.run()
        _, stats = st.finish()
        fired = stats[:, 1, :]
        peak, floor = stats[:, 3, :], stats[:, 4, :]
        out[name] = {"specificity": specificity(fired, channels),
                     "own": [float(fired[i, c]) for i, c in enumerate(channels)],
                     "flat": [bool(peak[i, c] - floor[i, c] <= 1e-6 * max(1.0, abs(peak[i, c])))
                              for i, c in enumerate(channels)]}
    return out


def task_sweep(names: list) -> dict:
    """Small models trained here (grey/RGB, 28-48 px, BN or not, three scalings) and the bundled one, every conv."""
    import _featvis_models as M

    out = {}
    for spec in M.SPECS:
        if spec.name not in names:
            continue
        m, acc, layers = M.train(spec)
        out[spec.name] = {"accuracy": acc, "layers": [
            sweep_layer(m, layer, M.sample_channels(vizlib.find_layer(m, layer).channels, 6, seed=i), 96)
            for i, layer in enumerate(layers)]}
    if "bundled" in names:
        m = vizlib.load_model("emotion_cnn")
        convs = [info.name for info in vizlib.spatial_layers(m) if info.kind == "Conv2D"]
        out["bundled"] = {"accuracy": 1.0, "layers": [
            sweep_layer(m, layer, M.sample_channels(vizlib.find_layer(m, layer).channels, 6, seed=i), 96)
            for i, layer in enumerate(convs)]}
    return out


def task_cell_and_convergence() -> dict:
    """The neuron objective on one map cell, and a long optimisation that stops when it has converged."""
    from vizlib.featvis.engine import State

    m = vizlib.load_model("emotion_cnn")
    layer, cell, channel = "conv2d_4", (2, 3), 3
    one = featvis.render(m, layer, [channel], steps=96, cache=False, cell=cell)
    whole = featvis.render(m, layer, [channel], steps=96, cache=False, size=one.size)
    from PIL import Image

    whole_maps = vizlib.activations(m, [Image.fromarray(whole.images[0][..., 0], mode="L")], [layer])[layer][0]
    st = State(m, "conv2d_7", [0, 3], (64, 64), 640, 0)  # 320 robust steps, then at most 320 on the pixels
    st.advance(640)
    return {"cell_size": list(one.size), "cell_value": float(one.own("peak")[0]),
            "whole_at_cell": float(whole_maps[cell[0], cell[1], channel]),
            "cell_vs_samples": float(one.vs_samples()[0]), "cell_shape": list(one.images.shape),
            "ran": st.ran, "done": st.done, "converged_at": st.converged_at.tolist()}


def task_preview() -> dict:
    """The preview sketch (only while someone watches) on a 96 px image of a small convolutional model: its images
    come first, at the full size, and are stronger than the method's own at that point; the final images are
    exactly those of the run nobody watched."""
    import keras

    from vizlib.featvis.engine import State
    from vizlib.featvis.graph import extractor

    keras.utils.set_random_seed(3)
    inp = keras.Input((96, 96, 3))
    h = keras.layers.Conv2D(8, 5, strides=2, activation="relu", name="a")(inp)
    h = keras.layers.Conv2D(6, 3, activation="relu", name="b")(h)
    m = vizlib.load_model(keras.Model(inp, keras.layers.GlobalAveragePooling2D()(h)), preprocess="unit")
    chans = [0, 4]
    ext = extractor(m, "b")

    def fired(imgs) -> list[float]:  # each image's own channel: its mean positive part (unit scaling: x / 255)
        a = np.maximum(np.asarray(ext(np.asarray(imgs, np.float32) / 255.0)), 0).mean(axis=(1, 2))
        return [float(a[i, c]) for i, c in enumerate(chans)]

    out, images = {}, {}
    for name, watched in (("watched", True), ("unwatched", False)):
        st = State(m, "b", chans, (96, 96), 128, 0, None, watched=watched)
        shapes, done_during, after_pass = [], [], None
        while st.done < st.steps:
            if st.sketch_running:
                done_during.append(st.done)
            st.advance(4)
            shapes.append(list(st.preview().shape))
            if after_pass is None and st.sketch is not None and not st.sketch_running:
                after_pass = fired(st.preview())
            if name == "unwatched" and st.done == 16:
                after_pass = fired(st.preview())
        images[name], stats = st.finish()
        out[name] = {"sketch_steps": None if st.sketch is None else st.sketch.steps,
                     "sketch_done": None if st.sketch is None else st.sketch.done,
                     "preview_shapes": sorted(set(map(tuple, shapes))), "done_during_pass": sorted(set(done_during)),
                     "fired_after_16": after_pass, "final": [float(stats[i, 1, c]) for i, c in enumerate(chans)]}
    out["same"] = bool(np.array_equal(images["watched"], images["unwatched"]))
    # Through the public call: previews at the full size, the same images as the unwatched run.
    seen = []
    vis = featvis.render(m, "b", chans, size=96, steps=128, cache=False, score=False,
                         preview=lambda ch, imgs: seen.append(list(imgs.shape)))
    out["render_same"] = bool(np.array_equal(vis.images, images["unwatched"]))
    out["render_previews"] = seen
    return out


def task_restart(cache_dir: str) -> dict:
    """A fresh process with the same cache folder: the bundled model's last layer comes from disk."""
    os.environ["CNN_VIZ_CACHE_DIR"] = cache_dir
    m = vizlib.load_model("emotion_cnn")
    last = vizlib.last_conv(m).name
    calls = []
    from vizlib.featvis import engine
    original = engine._optimise_op

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    vizlib.ops._OPS["featvis.optimise"] = counting
    vis = featvis.render(m, last, list(range(7)), steps=STEPS)
    return {"cached": vis.cached, "optimise_calls": len(calls), "shape": list(vis.images.shape),
            "digest": featvis.DiskCache.key(vis.images.tobytes().hex())}


def task_catalogue(names: list[str]) -> dict:
    """Input gradients through every catalogue architecture (untrained) at its last conv layer."""
    from vizlib.models import CATALOGUE, load_catalogue_model

    out = {}
    for name in names or list(CATALOGUE):
        t0 = time.perf_counter()
        m = load_catalogue_model(name, None)
        layer = vizlib.last_conv(m).name
        vis = featvis.render(m, layer, [0], size=32, steps=1, cache=False, score=False)  # the gradient, not scores
        out[name] = {"layer": layer, "shape": list(vis.images.shape),
                     "finite": bool(np.all(np.isfinite(vis.stats["mean"]))),
                     "seconds": round(time.perf_counter() - t0, 1)}
        del m
    return out


def task_isolated(model_path: str) -> dict:
    """An uploaded model in its own process: the same operation runs there; the result matches in-process."""
    from vizlib.isolation import IsolatedModel

    local = vizlib.load_model(model_path, preprocess="symmetric")
    layer = vizlib.last_conv(local).name
    here = featvis.render(local, layer, [0, 4], steps=24, cache=False)
    with IsolatedModel(model_path, preprocess="symmetric") as iso:
        there = featvis.render(iso, layer, [0, 4], steps=24, cache=False)
        digest = iso.weights_digest()
    return {"layer": layer, "here": list(here.images.shape), "there": list(there.images.shape),
            "max_diff": float(np.abs(here.images.astype(int) - there.images.astype(int)).max()),
            "mean_diff": float(np.abs(here.images.astype(int) - there.images.astype(int)).mean()),
            "rank_there": there.rank("mean"), "digest": digest}


def task_refused() -> dict:
    """TensorFlow imported first with oneDNN on: feature visualisation refuses instead of risking the heap."""
    from vizlib.explain import GradientsUnsafe

    m = vizlib.load_model("emotion_cnn")
    try:
        featvis.render(m, "conv2d_7", [0], steps=2, cache=False)
    except GradientsUnsafe as exc:
        return {"refused": str(exc)}
    return {"refused": None}


def task_redirect() -> dict:
    """Lucid's redirected ReLU gradient lives in the traced step only: a dead channel moves there, nowhere else."""
    import threading

    import keras
    import tensorflow as tf

    from vizlib.featvis import REDIRECT_STEPS
    from vizlib.featvis.engine import State

    relu_before = tf.nn.relu
    inp = keras.Input((16, 16, 1))
    dead_bias = keras.initializers.Constant(-50.0)  # off everywhere on 0..1 images
    h = keras.layers.Conv2D(2, 3, activation="relu", name="dead", bias_initializer=dead_bias)(inp)
    km = keras.Model(inp, keras.layers.GlobalAveragePooling2D()(h))
    m = vizlib.load_model(km, preprocess="unit")

    def moved(start: int) -> bool:
        st = State(m, "dead", [0], (16, 16), REDIRECT_STEPS + 4, 0)
        st.done = start
        before = st.spec.numpy()
        st.advance(1)
        return not np.array_equal(before, st.spec.numpy())

    # Meanwhile another thread takes the plain gradient of the same model: it must see TensorFlow's own ReLU.
    seen = []

    def other() -> None:
        x = tf.random.uniform((1, 16, 16, 1))
        for _ in range(20):
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = tf.reduce_sum(km(x))
            seen.append(float(tf.reduce_sum(tf.abs(tape.gradient(y, x)))))

    t = threading.Thread(target=other)
    t.start()
    early = moved(0)
    t.join()
    late = moved(REDIRECT_STEPS + 1)
    return {"early_moves": early, "late_moves": late, "other_thread_grad": max(seen),
            "relu_unchanged": tf.nn.relu is relu_before}


def task_ui() -> dict:
    """The page's pieces under Streamlit's AppTest: a progress bar first, the result when the job ends."""
    from streamlit.testing.v1 import AppTest

    from ui.startup import keep_keras_session

    keep_keras_session()  # what the server's start-up does (AppTest has no server)

    def page() -> None:
        import streamlit as st

        import vizlib
        from ui import featvis as fv_ui

        @st.cache_resource
        def model():
            return vizlib.load_model("emotion_cnn")

        m = model()
        info = vizlib.find_layer(m, "conv2d_7")
        st.number_input("Channel", 0, 6, key="channel")
        maps = vizlib.activations(m, [vizlib.load_sample("astronaut_face")], [info.name])[info.name][0]
        fv_ui.what_it_looks_for(m, info, int(st.session_state.channel), maps, steps=24, cell="1,2")
        fv_ui.feature_mosaic(m, info, [0, 3, 5], labels=m.class_names, steps=16, key="grid",
                             reference=maps.mean(axis=(0, 1)))

    at = AppTest.from_function(page, default_timeout=120)
    at.run()
    out = {"exception": [str(e.value) for e in at.exception],
           "first_progress": len(at.get("progress")), "first_images": len(at.get("image"))}
    from ui import featvis as fv_ui

    for job in list(fv_ui._JOBS.values()):
        while not job.wait(1.0):
            job.touch()  # what the page's polling fragment does every second
    at.run()
    out["done_progress"] = len(at.get("progress"))
    out["done_images"] = len(at.get("image"))
    out["done_charts"] = len(at.get("plotly_chart"))
    out["markdown"] = " ".join(md.value for md in at.markdown)
    out["downloads"] = len(at.get("download_button"))
    out["radios"] = [list(r.options) for r in at.radio]
    # The literature's baseline on the same channel, on request: plain gradient ascent beside the method's image.
    out["checkboxes"] = [c.label for c in at.checkbox]
    at.checkbox(key="featvis-detail-plain").check().run()
    for job in list(fv_ui._JOBS.values()):
        while not job.wait(1.0):
            job.touch()
    at.run()
    out["plain_markdown"] = " ".join(md.value for md in at.markdown)
    out["plain_captions"] = " ".join(" ".join(str(c) for c in (i.captions or [])) for i in at.get("image"))
    out["plain_jobs"] = sorted([[list(k[2]), k[-1], j.state] for k, j in fv_ui._JOBS.items()])
    at.checkbox(key="featvis-detail-plain").uncheck().run()
    # Another channel: its detail computes while the grid stays drawn; the superseded job is not queued.
    at.number_input(key="channel").set_value(4).run()
    out["switch_progress"] = len(at.get("progress"))
    out["switch_charts"] = len(at.get("plotly_chart"))
    out["switch_captions"] = " ".join(" ".join(str(c) for c in (i.captions or [])) for i in at.get("image"))
    out["jobs"] = sorted([[list(k[2]), j.state] for k, j in fv_ui._JOBS.items()])
    out["exception"] += [str(e.value) for e in at.exception]
    # A job nobody polls any more (the visitor left) stops by itself.
    m = vizlib.load_model("emotion_cnn")
    lonely = featvis.Job(m, "conv2d_7", [1], steps=4000, cache=False, abandon_after=1.0)
    lonely.wait(120)
    out["lonely"] = [lonely.state, lonely.steps_done < 4000]
    out["lonely_preview"] = None if lonely.preview is None else list(lonely.preview.shape)
    return out


def task_plain(cache_dir: str) -> dict:
    """``method="plain"``: plain gradient ascent through the library's own path (cache, batches, the model's
    process), bit for bit what the engine's PLAIN recipe makes; cached apart from the default method's images."""
    from vizlib.featvis.cache import DiskCache
    from vizlib.featvis.engine import State
    from vizlib.featvis.graph import PLAIN

    m = vizlib.load_model("emotion_cnn")
    layer, chans, steps = "conv2d_5", [3, 7], 24
    cache = DiskCache(cache_dir)
    plain = featvis.render(m, layer, chans, steps=steps, cache=cache, method="plain")
    st = State(m, layer, chans, plain.size, steps, 0, None, PLAIN)
    st.run()
    direct, _ = st.finish()
    default = featvis.render(m, layer, chans, steps=steps, cache=cache)
    again = featvis.render(m, layer, chans, steps=steps, cache=cache, method="plain")
    pinned = vizlib.feature_visualization(m, layer, chans, steps=steps, method="plain")
    try:
        vizlib.feature_visualization(m, layer, chans, steps=steps, method="lucid")
        refused = None
    except InputError as exc:
        refused = str(exc)
    return {"same_as_engine": bool(np.array_equal(plain.images, direct)),
            "pinned_same": bool(np.array_equal(pinned, direct)),
            "differs_from_default": bool(not np.array_equal(plain.images, default.images)),
            "default_cached": default.cached, "again_cached": again.cached, "method": [plain.method, default.method],
            "ratio": (default.own("fired") / np.maximum(plain.own("fired"), 1e-6)).tolist(), "refused": refused}


def task_scheduler() -> dict:
    """Jobs run the smallest first, and a running one pauses for a smaller one that arrives: a visitor's one
    channel does not wait for a grid. Pausing changes no image."""
    import threading
    import time

    m = vizlib.load_model("emotion_cnn")
    out: dict = {}
    grid = featvis.Job(m, "conv2d_7", list(range(7)), steps=300, cache=False)
    t0 = time.monotonic()
    while grid.steps_done < 40 and not grid.done and time.monotonic() - t0 < 300:
        time.sleep(0.01)
    states: list = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            states.append(grid.state)
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    one = featvis.Job(m, "conv2d_7", [3], steps=60, cache=False)
    # Two more arrive while the grid runs: the smaller of them is served before the bigger, whatever came first.
    mid = featvis.Job(m, "conv2d_7", [4, 5], steps=100, cache=False)
    small = featvis.Job(m, "conv2d_7", [6], steps=30, cache=False)
    ends: dict = {}
    for name, job in (("one", one), ("mid", mid), ("small", small), ("grid", grid)):
        job.wait(600)
        ends[name] = job.finished
    stop.set()
    watcher.join()
    out["order"] = sorted(ends, key=lambda k: ends[k])
    out["states"] = sorted(set(states))
    out["grid_state"] = grid.state
    out["one_state"] = one.state
    alone = featvis.render(m, "conv2d_7", list(range(7)), steps=300, cache=False, score=False)
    out["same"] = bool(np.array_equal(grid.result().images, alone.images))
    out["one_same"] = bool(np.array_equal(one.result().images,
                                          featvis.render(m, "conv2d_7", [3], steps=60, cache=False).images))
    return out


def task_fairness() -> dict:
    """A steady stream of one-channel jobs (a busy hosted page: several visitors, each asking again as soon as
    their image is done) while a grid runs: the grid still finishes, within its share of the worker, and the
    stream is served meanwhile (jobs.MAX_WAIT_S set to 1 s here)."""
    import threading
    import time

    from vizlib.featvis import jobs

    jobs.MAX_WAIT_S = float(os.environ.get("FAIRNESS_MAX_WAIT", "1.0"))
    limit = float(os.environ.get("FAIRNESS_LIMIT", "600"))
    m = vizlib.load_model("emotion_cnn")
    featvis.render(m, "conv2d_7", [0], steps=2, cache=False)  # graphs traced before anything is timed
    t0 = time.monotonic()
    alone = featvis.Job(m, "conv2d_7", list(range(7)), steps=200, cache=False, seed=1)
    alone.wait(600)
    alone_s = time.monotonic() - t0
    grid = featvis.Job(m, "conv2d_7", list(range(7)), steps=200, cache=False)
    stream: list = []
    lock = threading.Lock()
    stop = threading.Event()

    def visitor(k: int) -> None:  # asks again as soon as the last image is done: the queue is never empty
        while not stop.is_set() and time.monotonic() - t0 < limit:
            with lock:
                n = len(stream)
                job = featvis.Job(m, "conv2d_7", [n % 7], steps=30, cache=False, seed=n + 2)
                stream.append(job)
            job.wait(120)

    t1 = time.monotonic()
    feeders = [threading.Thread(target=visitor, args=(k,)) for k in range(3)]
    for f in feeders:
        f.start()
    grid.wait(limit + 60)
    grid_s = time.monotonic() - t1
    served_meanwhile = sum(1 for j in stream if j.done and j.finished is not None and j.finished <= grid.finished)
    stop.set()
    for f in feeders:
        f.join()
    for j in stream:
        j.wait(120)
    return {"alone_s": alone_s, "grid_s": grid_s, "grid_state": grid.state, "served": served_meanwhile,
            "stream_states": sorted({j.state for j in stream})}


def main() -> None:
    task, args = sys.argv[1], sys.argv[2:]
    result = {"specificity": lambda: task_specificity(args[0]), "restart": lambda: task_restart(args[0]),
              "catalogue": lambda: task_catalogue(args), "isolated": lambda: task_isolated(args[0]),
              "refused": task_refused, "ui": task_ui, "preview": task_preview, "scheduler": task_scheduler,
              "redirect": task_redirect, "sweep": lambda: task_sweep(args), "fairness": task_fairness, "cell": task_cell_and_convergence,
              "plain": lambda: task_plain(args[0])}[task]()
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
