"""Why this prediction? What Grad-CAM, the class switch and the depth profile cost, whether Grad-CAM's
maps are causally right (deletion curves), oneDNN on vs off, and bytes per view.

    python benchmarks/bench_explain.py [--rounds 7] [--models emotion_cnn,vgg16,resnet50] [--skip-onednn]

1. Cost, interleaved rounds per model (catalogue models untrained: same compute, no network), one image:
   (b) one bare forward pass ``m.model(batch)``; (g) Grad-CAM for one class, end to end from the PIL
   image (``vizlib.explain.explain_class``, the per-image cache cleared first: forward to the final
   feature map + head + backward to it); (s) the same image, another class (the class switch: only
   the head and its gradient run again); (k) the keras.io Grad-CAM recipe: a new
   ``keras.Model(model.inputs, [layer.output, model.output])`` per call, a tape, the gradient, the
   map in numpy; (p) ``depth_profile`` (every spatial layer's statistics, one forward pass); (n) info:
   the profile the naive way (all spatial activations back to numpy, statistics there).
   Targets: g/b <= 3; s/g well under 1 (the class switch repeats no class-independent work);
   k/g > 1 (the recipe is the peer to beat); p/b <= 1.5 (one forward pass for all layers).
2. Deletion curves (Petsiuk et al., RISE, 2018) on the bundled model over the 13 samples: pixels set
   to grey (0 after the model's scaling) in the order of a saliency map, most salient first, 32
   steps; AUC of the top class's probability (lower = the map found what the class depends on).
   Grad-CAM vs a random order vs a centre prior (distance from the centre).
3. oneDNN on vs off: forward passes timed in fresh interpreters with ``TF_ENABLE_ONEDNN_OPTS`` 1 / 0
   (interleaved, 2 rounds), and the bundled model's input gradient run 3 times in each mode:
   how many runs the process survives.
4. Bytes per view: each figure of ``vizlib.explain_figures`` serialised as Streamlit does
   (``plotly.io.to_json``). Target <= 1.5 MB.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import textwrap

import _common as C

TARGET_G_OVER_B = 3.0
TARGET_P_OVER_B = 1.5
TARGET_PAYLOAD = 1.5 * 2**20


def _cost(name: str, rounds: int) -> dict:
    import keras
    import numpy as np
    import tensorflow as tf

    import vizlib
    from vizlib import explain as E

    m = vizlib.load_model(name) if name == "emotion_cnn" else vizlib.load_model(name, weights=None)
    img = vizlib.load_sample("astronaut_face" if name == "emotion_cnn" else "cat")
    batch = m.preprocess(m.raw_batch([img]))
    final = E.final_layer(m)
    spatial = [i.name for i in vizlib.spatial_layers(m)]
    km = m.model
    from vizlib.explain.cam import clear_features

    def bare():
        return km(batch, training=False)

    def gradcam_first(c):
        clear_features()
        return E.explain_class(m, img, class_index=c)

    def gradcam_switch(c):
        return E.explain_class(m, img, class_index=c)

    def recipe(c):
        # https://keras.io/examples/vision/grad_cam/ (make_gradcam_heatmap), as published.
        output = km.output[0] if isinstance(km.output, (list, tuple)) else km.output
        grad_model = keras.Model(km.inputs, [km.get_layer(final).output, output])
        with tf.GradientTape() as tape:
            last, preds = grad_model(batch)
            class_channel = preds[:, c]
        grads = tape.gradient(class_channel, last)
        pooled = tf.reduce_mean(grads, axis=(0, 1, 2))
        heat = last[0] @ pooled[..., tf.newaxis]
        heat = tf.maximum(tf.squeeze(heat), 0) / tf.math.reduce_max(heat)
        return heat.numpy()

    def profile():
        return E.depth_profile(m, img)

    def naive_profile():
        acts = vizlib.activations(m, [img], spatial, max_bytes=2**31)
        return [(float((np.abs(a[0]).max(axis=(0, 1)) == 0).mean()), float(a.mean()), float((a == 0).mean()))
                for a in acts.values()]

    # Warm up every path once (builds, traces, plans), and report the first calls apart.
    first = {}
    first["b"], _ = C.timed(bare)
    first["g"], ex = C.timed(lambda: gradcam_first(None))
    top = ex.class_index
    others = [c for c in range(ex.probabilities.shape[0]) if c != top][:rounds * 2 + 2]
    first["p"], _ = C.timed(profile)
    first["k"], _ = C.timed(lambda: recipe(top))
    naive_profile()
    times: dict[str, list] = {k: [] for k in "bgskpn"}
    for r in range(rounds):
        c1, c2 = others[2 * r % len(others)], others[(2 * r + 1) % len(others)]
        for key, fn in (("b", bare), ("g", lambda: gradcam_first(c1)), ("s", lambda: gradcam_switch(c2)),
                        ("k", lambda: recipe(c1)), ("p", profile), ("n", naive_profile)):
            gc.collect()
            t, out = C.timed(fn)
            if key == "s":
                assert out.reused_features, "the class switch recomputed the forward pass"
            times[key].append(t)
    med = {k: C.median(v) for k, v in times.items()}
    per_round = {f"{a}/{b}": C.median([x / y for x, y in zip(times[a], times[b])])
                 for a, b in (("g", "b"), ("s", "g"), ("k", "g"), ("p", "b"), ("n", "p"))}
    ratios = {"g/b": med["g"] / med["b"], "s/g": med["s"] / med["g"], "k/g": med["k"] / med["g"],
              "p/b": med["p"] / med["b"], "n/p": med["n"] / med["p"]}
    print(f"\n{name} ({m.input_size[0]}x{m.input_size[1]}, {len(spatial)} spatial layers, final {final})")
    labels = {"b": "bare forward", "g": "Grad-CAM, one class (end to end)", "s": "class switch (cached trunk)",
              "k": "keras.io recipe (grad model per call)", "p": "depth profile (1 pass)",
              "n": "naive profile (all activations to numpy)"}
    for k, label in labels.items():
        print(f"  ({k}) {label:42s} {C.spread(times[k])} s")
    for k, v in ratios.items():
        print(f"  {k:4s} = {v:6.2f}   (per-round median {per_round[k]:.2f})")
    print("  first calls (build included): " + ", ".join(f"{k} {C.ms(v)}" for k, v in first.items()))
    result = {"model": name, "input": list(m.input_size), "spatial_layers": len(spatial), "final": final,
              "median_s": med, "times_s": times, "first_call_s": first, "ratios": ratios,
              "ratios_per_round": per_round}
    keras.backend.clear_session()
    gc.collect()
    return result


def _deletion_auc(model, raw, base, saliency, c: int, steps: int, rng) -> float:
    """Area under the class probability as pixels go to ``base``, most salient first (ties broken at random)."""
    import numpy as np

    import vizlib

    h, w = saliency.shape
    order = np.argsort(-(saliency + rng.random((h, w)) * 1e-6).ravel(), kind="stable")
    counts = np.linspace(0, h * w, steps + 1).astype(int)
    batch = np.repeat(raw[None], steps + 1, axis=0)
    flat_base = base.reshape(h * w, -1)
    for i, n in enumerate(counts):
        flat = batch[i].reshape(h * w, -1)
        flat[order[:n]] = flat_base[order[:n]]
    out = model.model(model.preprocess(batch), training=False)
    out = out[0] if isinstance(out, (list, tuple)) else out
    probs = np.asarray(out, dtype=np.float64)[:, c]
    if not (probs.min() >= 0 and probs.max() <= 1):
        probs = vizlib.extract.probabilities(np.asarray(out))[:, c]
    return float(np.trapezoid(probs, dx=1.0 / steps))


def _summarise(aucs: dict, label: str) -> dict:
    import numpy as np

    mean = {k: float(np.mean(v)) for k, v in aucs.items()}
    n = len(aucs["Grad-CAM"])
    wins = {k: int(sum(g < o for g, o in zip(aucs["Grad-CAM"], aucs[k]))) for k in ("random", "centre")}
    print(f"  {label}: " + ", ".join(f"{k} {v:.3f}" for k, v in mean.items())
          + f"  | Grad-CAM below random on {wins['random']}/{n}, below centre on {wins['centre']}/{n}")
    return {"mean_auc": mean, "auc": aucs, "gradcam_wins": wins, "n": n,
            "ratio_gradcam_over_random": mean["Grad-CAM"] / mean["random"],
            "ratio_gradcam_over_centre": mean["Grad-CAM"] / mean["centre"]}


def _deletion(steps: int = 32) -> dict:
    """Deletion AUC on the bundled model over the samples, and on a positive control (a tiny CNN trained
    here on synthetic shapes, where what the class depends on is known)."""
    import numpy as np
    from PIL import Image, ImageFilter

    import vizlib
    from vizlib import explain as E

    rng = np.random.default_rng(0)
    m = vizlib.load_model("emotion_cnn")
    h, w = m.input_size
    yy, xx = np.mgrid[0:h, 0:w]
    centre = -np.hypot(yy - (h - 1) / 2, xx - (w - 1) / 2)
    mid = "add_2"  # a 16x16 map halfway up the bundled model: LayerCAM, for comparison
    result: dict = {"steps": steps, "bundled": {}}
    print(f"\nDeletion AUC (probability of the top class, {steps} steps; lower = the map found what the class "
          "depends on):")
    for baseline in ("grey", "blur"):
        aucs: dict = {"Grad-CAM": [], f"LayerCAM@{mid}": [], "random": [], "centre": []}
        faces: dict = {k: [] for k in aucs}
        for name in vizlib.SAMPLES:
            img = vizlib.load_sample(name)
            raw = m.raw_batch([img])[0]
            base = (np.full_like(raw, 127.5) if baseline == "grey" else np.asarray(
                Image.fromarray(raw[..., 0].astype(np.uint8)).filter(ImageFilter.GaussianBlur(8)),
                dtype=np.float32)[..., None])
            ex = E.explain_class(m, img)
            maps = {"Grad-CAM": ex.cam, f"LayerCAM@{mid}": E.gradcam(m, img, ex.class_index, mid),
                    "random": rng.random((h, w)), "centre": centre}
            for k, sal in maps.items():
                a = _deletion_auc(m, raw, base, sal, ex.class_index, steps, rng)
                aucs[k].append(a)
                if name.startswith("astronaut"):
                    faces[k].append(a)
        result["bundled"][baseline] = _summarise(aucs, f"bundled, {len(vizlib.SAMPLES)} samples, {baseline}")
        result["bundled"][baseline + "_faces"] = _summarise(faces, f"bundled, the 2 face samples, {baseline}")
    result["samples"] = list(vizlib.SAMPLES)

    # Positive control: does the metric reward a map that is known to be right?
    sys.path.insert(0, str(C.ROOT / "tests"))
    from shapes_model import train_shapes_model  # the tests' known-answer model, one builder for both

    sm, xt, classes, _ = train_shapes_model()
    s = xt.shape[1]
    yy, xx = np.mgrid[0:s, 0:s]
    centre_s = -np.hypot(yy - (s - 1) / 2, xx - (s - 1) / 2)
    aucs = {"Grad-CAM": [], "random": [], "centre": []}
    for img, c in zip(xt, classes):
        cam = E.gradcam(sm, img, int(c))
        base = np.full_like(img, 30.0)  # the background's mean level
        for k, sal in (("Grad-CAM", cam), ("random", rng.random((s, s))), ("centre", centre_s)):
            aucs[k].append(_deletion_auc(sm, img, base, sal, int(c), steps, rng))
    result["shapes_control"] = _summarise(aucs, f"control: tiny CNN on synthetic shapes, {len(xt)} images")
    return result


_FORWARD_CHILD = """
    import json, os, statistics, sys, time
    import numpy as np
    import tensorflow as tf
    import keras
    from tensorflow.python.util import _pywrap_util_port
    name, batch_size, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    if name == "emotion_cnn":
        km = keras.models.load_model("assets/models/emotion_mini_xception_fer2013.keras", compile=False)
    else:
        km = getattr(keras.applications, name)(weights=None)
    shape = (batch_size,) + tuple(km.input_shape[1:])
    x = tf.constant(np.random.default_rng(0).uniform(-1, 1, size=shape).astype("float32"))
    for _ in range(3):
        km(x, training=False)
    ts = []
    for _ in range(n):
        t = time.perf_counter(); km(x, training=False); ts.append(time.perf_counter() - t)
    print(json.dumps({"onednn": bool(_pywrap_util_port.IsMklEnabled()), "median_s": statistics.median(ts),
                      "min_s": min(ts)}))
"""

_GRADIENT_CHILD = """
    import numpy as np
    import tensorflow as tf
    import keras
    km = keras.models.load_model("assets/models/emotion_mini_xception_fer2013.keras", compile=False)
    x = tf.constant(np.random.default_rng(0).uniform(-1, 1, size=(1, 64, 64, 1)).astype("float32"))
    for _ in range(3):
        with tf.GradientTape() as tape:
            tape.watch(x)
            score = tf.reduce_max(km(x, training=False))
        tape.gradient(score, x).numpy()
    print("survived")
"""


def _child(code: str, args: list[str], onednn: bool, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "1" if onednn else "0", "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True,
                          cwd=str(C.ROOT), env=env, timeout=timeout)


def _onednn(rounds: int = 2) -> dict:
    cases = [("emotion_cnn", 1, 40), ("emotion_cnn", 16, 20), ("VGG16", 1, 8), ("ResNet50", 1, 10)]
    out: dict = {}
    print("\noneDNN on vs off: forward passes in fresh interpreters (median of each child's timed passes)")
    for name, bs, n in cases:
        got: dict[str, list] = {"on": [], "off": []}
        for _ in range(rounds):
            for mode in ("on", "off"):
                proc = _child(_FORWARD_CHILD, [name, str(bs), str(n)], mode == "on")
                if proc.returncode != 0:
                    raise RuntimeError(f"forward child {name} {mode} failed: {proc.stderr[-2000:]}")
                row = json.loads(proc.stdout.strip().splitlines()[-1])
                assert row["onednn"] == (mode == "on")
                got[mode].append(row["median_s"])
        on, off = C.median(got["on"]), C.median(got["off"])
        key = f"{name} batch {bs}"
        out[key] = {"on_s": got["on"], "off_s": got["off"], "off_over_on": off / on}
        print(f"  {key:22s} on {C.ms(on):>8s}  off {C.ms(off):>8s}  off/on {off / on:.2f}   "
              f"(runs: on {[round(t * 1000) for t in got['on']]}, off {[round(t * 1000) for t in got['off']]} ms)")
    crash: dict = {}
    for mode in ("on", "off"):
        codes = []
        for _ in range(3):
            proc = _child(_GRADIENT_CHILD, [], mode == "on")
            codes.append(proc.returncode if "survived" not in proc.stdout else 0)
        crash[mode] = codes
        print(f"  bundled model, input gradient x3 per process, oneDNN {mode}: exit codes {codes}")
    return {"forward": out, "gradient_exit_codes": crash}


def _payload() -> dict:
    import plotly.io as pio

    import vizlib
    from vizlib import explain as E
    from vizlib import explain_figures as F

    sizes: dict = {}
    for name, sample in (("emotion_cnn", "astronaut_face"), ("vgg16", "cat"), ("densenet121", "cat")):
        m = vizlib.load_model(name) if name == "emotion_cnn" else vizlib.load_model(name, weights=None)
        img = vizlib.load_sample(sample)
        view = E.model_view_array(m, img)
        ex = E.explain_class(m, img)
        first = vizlib.first_conv(m).name
        early = E.explain_class(m, img, layer=first)
        untrained = E.explain_class(vizlib.untrained(m, 0), img, class_index=ex.class_index)
        mid = vizlib.spatial_layers(m)[len(vizlib.spatial_layers(m)) // 2]
        rf = E.receptive_field_info(m, mid.name, mid.output_shape[0] // 2, mid.output_shape[1] // 2)
        figs = {
            "gradcam overlay (final layer)": F.gradcam_overlay(view, ex.cam, layer_cam=ex.layer_cam, layer=ex.layer),
            f"LayerCAM overlay ({first})": F.gradcam_overlay(view, early.cam, layer_cam=early.layer_cam,
                                                             layer=first, method="LayerCAM"),
            "trained vs untrained": F.gradcam_pair(view, [ex.cam, untrained.cam], ["trained", "untrained"],
                                                   layer_cams=[ex.layer_cam, untrained.layer_cam]),
            "contributions (top 15)": F.contributions_bar(ex.ranked_channels(), layer=ex.layer),
            "receptive field": F.receptive_field_figure(view, rf["box"], layer=mid.name),
            "conv arithmetic": F.conv_arithmetic_figure(E.conv_arithmetic(m, img, 3, 4, 0)),
            "depth profile": F.depth_profile_figure(E.depth_profile(m, img), input_size=m.input_size[0]),
        }
        sizes[name] = {k: len(pio.to_json(f, validate=False)) for k, f in figs.items()}
        print(f"\nBytes per figure, {name} ({sample}):")
        for k, v in sizes[name].items():
            print(f"  {k:34s} {C.mb(v):>9s}  {'ok' if v <= TARGET_PAYLOAD else 'OVER 1.5 MB'}")
        del m
    return sizes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--models", default="emotion_cnn,vgg16,resnet50")
    ap.add_argument("--skip-onednn", action="store_true")
    ap.add_argument("--skip-payload", action="store_true")
    args = ap.parse_args()
    C.header("bench_explain: Grad-CAM, class switch, depth profile, deletion AUC, oneDNN, payload")
    import vizlib  # noqa: F401  (first: oneDNN off before TensorFlow)

    C.quiet_tf()
    result: dict = {"rounds": args.rounds}
    result["cost"] = {name: _cost(name, args.rounds) for name in args.models.split(",")}
    result["deletion"] = _deletion()
    result["payload_bytes"] = {} if args.skip_payload else _payload()
    if not args.skip_onednn:
        result["onednn"] = _onednn()
    targets = {}
    for name, c in result["cost"].items():
        r, pr = c["ratios"], c["ratios_per_round"]
        targets[f"{name} g/b"] = {"value": r["g/b"], "target": TARGET_G_OVER_B,
                                  "met": (r["g/b"] <= TARGET_G_OVER_B) if (r["g/b"] <= TARGET_G_OVER_B) ==
                                  (pr["g/b"] <= TARGET_G_OVER_B) else None}
        targets[f"{name} p/b"] = {"value": r["p/b"], "target": TARGET_P_OVER_B,
                                  "met": (r["p/b"] <= TARGET_P_OVER_B) if (r["p/b"] <= TARGET_P_OVER_B) ==
                                  (pr["p/b"] <= TARGET_P_OVER_B) else None}
    if result["payload_bytes"]:
        worst = max(v for per in result["payload_bytes"].values() for v in per.values())
        targets["payload"] = {"value": worst, "target": TARGET_PAYLOAD, "met": worst <= TARGET_PAYLOAD}
    d = result["deletion"]
    for key, row in (("bundled, grey", d["bundled"]["grey"]), ("bundled, blur", d["bundled"]["blur"]),
                     ("shapes control", d["shapes_control"])):
        targets[f"deletion {key}: Grad-CAM/random"] = {"value": row["ratio_gradcam_over_random"], "target": 1.0,
                                                       "met": row["ratio_gradcam_over_random"] < 1.0}
    result["targets"] = targets
    print("\nVerdicts:")
    for k, t in targets.items():
        v = "borderline" if t["met"] is None else C.verdict(t["met"])
        print(f"  {k:34s} {t['value']:.3g} (target {t['target']:.3g}): {v}")
    C.save("explain", result)


if __name__ == "__main__":
    main()
