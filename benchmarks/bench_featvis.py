"""What does a channel look for? What feature visualisation costs, and how many steps it needs.

    python benchmarks/bench_featvis.py [--rounds 5] [--max-steps 320] [--skip-vgg] [--skip-specificity]

1. Steps to specificity: every channel of the bundled model's first and last conv layers, and of a
   small RGB CNN trained on coloured stripes here (tests/_featvis_child.py), optimised as one batch
   per layer; at checkpoints the current images are scored: the share of channels (that can move at
   all) whose image makes them fire (mean of the positive part) more than any other channel of the
   layer, and, for last layers, the share whose image excites them >= 3x the most any of the 13
   sample images does. Reported: the first checkpoint meeting >= 90% on both, per model.
2. Batched vs one at a time: VGG16 (untrained: same compute, no network) ``block5_conv3`` at 128x128
   and the bundled model's ``conv2d_7``: seconds per optimisation step for 16 channels in one batch
   and for 1 channel, interleaved rounds; per-channel cost ratio one-at-a-time / batched.
   Target >= 1.5. Control: the same ratio for bare forward+backward passes of the sub-model (1 image
   vs 16), i.e. what TensorFlow's kernels give for batching at all.
3. One channel of VGG16 ``block5_conv3`` at 128x128, end to end (default steps, cache off), in units
   of one bare forward+backward pass of the same sub-model at 128x128 (input gradient of the
   channel's mean, compiled, batch 1); the first call's compile time separately.
4. Info: the disk cache: a cached channel (new process state cleared) vs computing it.
"""

from __future__ import annotations

import argparse
import gc
import shutil
import sys
import tempfile
import time

import _common as C

from vizlib.featvis import engine as fv_engine, graph as fv_graph, rendering as fv_rendering

sys.path.insert(0, str(C.ROOT / "tests"))

TARGET_BATCH_RATIO = 1.5
CHECKPOINTS = (16, 32, 48, 64, 96, 128, 160, 192, 256, 320)


def _score(stats, channels, flat, samples_fired, last: bool) -> dict:
    import numpy as np

    fired = stats[:, 1, :]  # featvis.STATS order: mean, fired, activity, peak, floor
    alive = [i for i in range(len(channels)) if not flat[i]]
    own = np.array([fired[i, c] for i, c in enumerate(channels)])
    top = [i for i in alive if fired[i].max() <= own[i]]
    strong = [i for i in alive if own[i] >= 3.0 * samples_fired[channels[i]]]
    return {"rank1": len(top) / max(1, len(alive)), "strong": len(strong) / max(1, len(alive)),
            "alive": len(alive), "ok": len(top) >= 0.9 * len(alive) and (not last or len(strong) >= 0.9 * len(alive))}


def _steps_to_specificity(max_steps: int) -> dict:
    import numpy as np

    import vizlib
    from vizlib import featvis
    import _featvis_child as child

    imgs = child.samples()
    small, acc = child.small_trained_model()
    bundled = vizlib.load_model("emotion_cnn")
    out = {"small_accuracy": acc}
    for label, m, layers in (("bundled", bundled, [vizlib.first_conv(bundled).name, vizlib.last_conv(bundled).name]),
                             ("small", small, ["c1", "c3"])):
        per_model: dict = {}
        for layer in layers:
            last = layer == layers[-1]
            n = vizlib.find_layer(m, layer).channels
            acts = vizlib.activations(m, imgs, [layer])[layer]
            samples_fired = np.maximum(acts, 0).mean(axis=(1, 2)).max(axis=0)
            size = featvis.default_size(m, layer)
            st = fv_engine.State(m, layer, list(range(n)), size, max_steps, 0)
            rows = []
            t0 = time.perf_counter()
            for k in [c for c in CHECKPOINTS if c <= max_steps]:
                st.advance(k - st.done)
                _, stats = st.finish()
                peak, floor = stats[:, 3, :], stats[:, 4, :]
                flat = [bool(peak[i, i] - floor[i, i] <= 1e-6 * max(1.0, abs(peak[i, i]))) for i in range(n)]
                rows.append({"steps": k, "seconds": time.perf_counter() - t0,
                             **_score(stats, list(range(n)), flat, samples_fired, last)})
            per_model[layer] = rows
            for r in rows:
                print(f"  {label:8s} {layer:9s} steps {r['steps']:4d}: rank 1 {r['rank1']:.0%}, "
                      f">=3x samples {r['strong']:.0%} of {r['alive']} live channels ({r['seconds']:.1f} s)")
        firsts = None
        for i, k in enumerate([c for c in CHECKPOINTS if c <= max_steps]):
            if all(per_model[layer][i]["ok"] for layer in layers):
                firsts = k
                break
        out[label] = {"layers": per_model, "steps_needed": firsts}
        print(f"  {label}: specificity (>= 90% on both layers) first reached at {firsts} steps")
    return out


def _per_step(m, layer: str, channels: list[int], size, steps: int) -> float:
    """Seconds per optimisation step (after one warm-up step) for these channels in one batch.

    Timed past Lucid's redirected-ReLU phase (the first 16 steps run a costlier gradient): the
    step counter is moved there without computing, which changes nothing but the timing.
    """
    from vizlib import featvis

    st = fv_engine.State(m, layer, channels, size, featvis.REDIRECT_STEPS + steps + 2, 0)
    st.done = featvis.REDIRECT_STEPS + 1
    st.advance(1)
    t0 = time.perf_counter()
    st.advance(steps)
    return (time.perf_counter() - t0) / steps


def _batched(m, layer: str, size, rounds: int, steps: int, n: int = 16) -> dict:
    batched, single = [], []
    for _ in range(rounds):
        batched.append(_per_step(m, layer, list(range(n)), size, steps))
        single.append(_per_step(m, layer, [n], size, steps))
        gc.collect()
    b, s = C.median(batched), C.median(single)
    per_round = C.median([s1 / (b1 / n) for b1, s1 in zip(batched, single)])
    print(f"  {layer} {size[0]}x{size[1]}: {n} channels {C.ms(b)}/step ({C.ms(b / n)} per channel), "
          f"1 channel {C.ms(s)}/step -> one-at-a-time / batched per channel = {s / (b / n):.2f} "
          f"(per-round median {per_round:.2f})")
    return {"channels": n, "batched_step_s": b, "single_step_s": s, "ratio": s / (b / n),
            "ratio_per_round": per_round, "batched_all": batched, "single_all": single}


def _fb_fn(m, layer: str, size, n: int):
    """A compiled bare forward+backward pass (input gradient of channel 0's mean) for a batch of ``n``."""
    import numpy as np
    import tensorflow as tf

    from vizlib import featvis

    ext = fv_graph.extractor(m, layer)

    @tf.function(input_signature=[tf.TensorSpec([n, size[0], size[1], 3], tf.float32)])
    def fb(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.reduce_mean(ext(x, training=False)[..., 0])
        return tape.gradient(y, x)

    x = tf.constant(np.random.default_rng(0).uniform(-100, 100, (n, size[0], size[1], 3)).astype(np.float32))
    fb(x)

    def run() -> float:
        t0 = time.perf_counter()
        fb(x).numpy()
        return time.perf_counter() - t0

    return run


def _fb_pass(m, layer: str, size, rounds: int, n: int = 16) -> dict:
    """The model's own batching, as a control: bare passes for 1 image and for ``n``, interleaved."""
    one, many = _fb_fn(m, layer, size, 1), _fb_fn(m, layer, size, n)
    t1, tn = [], []
    for _ in range(rounds):
        t1.append(one())
        tn.append(many())
    a, b = C.median(t1), C.median(tn)
    print(f"  control, bare forward+backward {size[0]}x{size[1]}: 1 image {C.ms(a)}, {n} images {C.ms(b)} "
          f"({C.ms(b / n)} each) -> {a / (b / n):.2f}")
    return {"one_s": a, "batch_s": b, "n": n, "ratio": a / (b / n)}


def _vgg(rounds: int) -> dict:
    import vizlib
    from vizlib import featvis

    m = vizlib.load_model("vgg16", weights=None)
    layer, size = "block5_conv3", (128, 128)
    out: dict = {"batched": _batched(m, layer, size, rounds, steps=4)}
    control = _fb_pass(m, layer, size, rounds)
    out["control"] = control
    fb = control["one_s"]
    fv_graph.clear()  # end to end as a first visit: the graph is built and traced too
    fv_rendering._PLANS.clear()
    marks: list[tuple[int, float]] = []
    t0 = time.perf_counter()
    vis = featvis.render(m, layer, [100], size=128, cache=False,
                         progress=lambda done, total: marks.append((done, time.perf_counter() - t0)))
    total = time.perf_counter() - t0
    first = next((t for d, t in marks if d > 0), total)  # plan + graph + trace + the first chunk of steps
    steady = [(d2 - d1, t2 - t1) for (d1, t1), (d2, t2) in zip(marks, marks[1:]) if d1 > 0 and d2 > d1]
    per_step = sum(t for _, t in steady) / max(1, sum(d for d, _ in steady))
    out.update({"fb_pass_s": fb, "render_s": total, "steps": vis.steps, "render_in_fb_passes": total / fb,
                "step_s": per_step, "step_in_fb_passes": per_step / fb, "first_chunk_s": first,
                "rank_fired": vis.rank("fired")[0]})
    print(f"  VGG16 block5_conv3 128x128, 1 channel, {vis.steps} steps: {total:.1f} s = {total / fb:.0f} "
          f"forward+backward passes of {C.ms(fb)}; a steady step = {per_step / fb:.2f} passes; "
          f"set-up + tracing + first chunk {first:.1f} s")
    return out


def _cache_info() -> dict:
    import vizlib
    from vizlib import featvis

    m = vizlib.load_model("emotion_cnn")
    folder = tempfile.mkdtemp(prefix="bench-featvis-")
    try:
        cache = featvis.DiskCache(folder)
        t0 = time.perf_counter()
        featvis.render(m, "conv2d_7", [2], cache=cache)
        compute = time.perf_counter() - t0
        fv_rendering._PLANS.clear()
        fv_graph.clear()
        t0 = time.perf_counter()
        vis = featvis.render(m, "conv2d_7", [2], cache=featvis.DiskCache(folder))
        hit = time.perf_counter() - t0
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"  bundled conv2d_7, 1 channel: computed {compute:.1f} s, from the disk cache {C.ms(hit)} "
          f"(cached={vis.cached[0]})")
    return {"compute_s": compute, "hit_s": hit, "hit": vis.cached[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--max-steps", type=int, default=320)
    ap.add_argument("--skip-vgg", action="store_true")
    ap.add_argument("--skip-specificity", action="store_true")
    args = ap.parse_args()
    C.header("bench_featvis: steps to specificity, batched vs one channel at a time, VGG16 in passes")
    import vizlib  # noqa: F401  (first: oneDNN off before TensorFlow)

    C.quiet_tf()
    result: dict = {"rounds": args.rounds}
    if not args.skip_specificity:
        print("\n1. Steps to specificity")
        result["specificity"] = _steps_to_specificity(args.max_steps)
    print("\n2. Batched vs one channel at a time")
    bundled = vizlib.load_model("emotion_cnn")
    result["batched_bundled"] = _batched(bundled, "conv2d_7", (64, 64), args.rounds, steps=8, n=6)
    if not args.skip_vgg:
        print("\n2-3. VGG16 block5_conv3")
        result["vgg16"] = _vgg(args.rounds)
    print("\n4. Disk cache")
    result["cache"] = _cache_info()
    targets = {}
    if "vgg16" in result:
        b = result["vgg16"]["batched"]
        met = b["ratio"] >= TARGET_BATCH_RATIO
        targets["vgg16 batched per-channel advantage"] = {
            "value": b["ratio"], "target": TARGET_BATCH_RATIO,
            "met": met if met == (b["ratio_per_round"] >= TARGET_BATCH_RATIO) else None}
        targets["vgg16 control: bare passes, 16 vs 1 (info)"] = {
            "value": result["vgg16"]["control"]["ratio"], "target": TARGET_BATCH_RATIO,
            "met": result["vgg16"]["control"]["ratio"] >= TARGET_BATCH_RATIO}
    for label in ("bundled", "small") if "specificity" in result else ():
        steps = result["specificity"][label]["steps_needed"]
        targets[f"{label} specificity reached by the default steps"] = {
            "value": steps or float("nan"), "target": 256, "met": steps is not None and steps <= 256}
    result["targets"] = targets
    print("\nVerdicts:")
    for k, t in targets.items():
        v = "borderline" if t["met"] is None else C.verdict(t["met"])
        print(f"  {k:45s} {t['value']:.3g} (target {t['target']:.3g}): {v}")
    C.save("featvis", result)


if __name__ == "__main__":
    main()
