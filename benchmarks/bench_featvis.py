"""Feature visualisation on any CNN: the method before issue 20 (Lucid's recipe), the new one, plain ascent.

    python benchmarks/bench_featvis.py [--steps 128] [--channels 8] [--models a,b,...] [--skip-vgg]

1. Any CNN. Five small CNNs trained here in seconds (tests/_featvis_models.py: grey and RGB, 28-64 px,
   with and without BatchNorm, unit / -1..1 / caffe scaling) and the bundled model; every conv layer,
   ``--channels`` per layer drawn by a seeded generator; each method on the same channels, the same
   steps, one batch per layer. Per method: specificity (share of live channels whose own image excites
   them more than any other channel's image does), the activation (mean positive part) relative to
   plain ascent's on the same channel (median and share >= 1), steps actually run (the new method stops
   when every image has converged), seconds.
2. Time to first preview and to the final result, one channel of VGG16 ``block5_conv3`` (untrained
   weights: the same compute, no network) and of the bundled model's last conv, as a first visit
   (graph built and traced): seconds until the first preview image, and until the finished image;
   the old method (no preview: its first image is the final one) for comparison. Ratios in one run.
"""

from __future__ import annotations

import argparse
import sys
import time

import _common as C

sys.path.insert(0, str(C.ROOT / "tests"))


def _recipes():
    from vizlib.featvis.graph import FV2, LUCID, PLAIN

    return {"before (fv1, Lucid)": LUCID, "new (fv2)": FV2, "plain ascent": PLAIN}


def _layer(m, layer: str, channels: list[int], steps: int) -> dict:
    import numpy as np

    from vizlib.featvis import default_size
    from vizlib.featvis.engine import State
    from vizlib.featvis.score import specificity

    size = default_size(m, layer)
    out = {}
    for name, recipe in _recipes().items():
        t0 = time.perf_counter()
        st = State(m, layer, channels, size, steps, 0, None, recipe)
        st.advance(steps)
        _, stats = st.finish()
        fired = stats[:, 1, :]
        out[name] = {"spec": specificity(fired, channels), "own": [float(fired[i, c]) for i, c in enumerate(channels)],
                     "flat": [bool(stats[i, 3, c] - stats[i, 4, c] <= 1e-6 * max(1.0, abs(stats[i, 3, c])))
                              for i, c in enumerate(channels)],
                     "ran": st.ran, "seconds": time.perf_counter() - t0}
    base = np.array(out["plain ascent"]["own"])
    live = [i for i in range(len(channels)) if not all(r["flat"][i] for r in out.values())]
    for r in out.values():
        ratio = np.array(r["own"]) / np.maximum(base, 1e-6)
        r["live"] = len(live)
        r["rank1"] = sum(r["spec"][i] == 1 for i in live)
        r["ratios"] = [float(ratio[i]) for i in live]
    return out


def _any_cnn(steps: int, per_layer: int, names: list[str]) -> dict:
    import numpy as np

    import vizlib
    import _featvis_models as M

    result: dict = {}
    models = [(s.name, s) for s in M.SPECS if not names or s.name in names]
    if not names or "bundled" in names:
        models.append(("bundled", None))
    for label, spec in models:
        if spec is None:
            m = vizlib.load_model("emotion_cnn")
            layers, acc = [i.name for i in vizlib.spatial_layers(m) if i.kind == "Conv2D"], 1.0
        else:
            m, acc, layers = M.train(spec)
        per = {}
        for k, layer in enumerate(layers):
            chans = M.sample_channels(vizlib.find_layer(m, layer).channels, per_layer, seed=k)
            per[layer] = _layer(m, layer, chans, steps)
        summary = {}
        for method in _recipes():
            live = sum(per[layer][method]["live"] for layer in per)
            rank1 = sum(per[layer][method]["rank1"] for layer in per)
            ratios = [q for layer in per for q in per[layer][method]["ratios"]]
            summary[method] = {"rank1": rank1, "live": live, "ratio_median": float(np.median(ratios)),
                               "ratio_ge_1": float(np.mean(np.array(ratios) >= 0.999)),
                               "ratio_min": float(min(ratios)),
                               "steps_run": float(np.mean([per[layer][method]["ran"] for layer in per])),
                               "seconds": sum(per[layer][method]["seconds"] for layer in per)}
            s = summary[method]
            print(f"  {label:16s} {method:20s} rank 1 {rank1:3d}/{live:3d} ({rank1 / max(1, live):.0%})  "
                  f"activation / plain: median {s['ratio_median']:.2f}, >= 1 for {s['ratio_ge_1']:.0%}, "
                  f"min {s['ratio_min']:.2f}  steps run {s['steps_run']:.0f}/{steps}  {s['seconds']:.0f} s",
                  flush=True)
        result[label] = {"accuracy": acc, "layers": per, "summary": summary}
    return result


def _first_preview(m, layer: str, channel: int, size, recipe_name: str) -> dict:
    from vizlib.featvis import graph as fv_graph, rendering
    from vizlib.featvis.graph import FV2, LUCID

    fv_graph.clear()
    rendering._PLANS.clear()
    old_default = fv_graph.DEFAULT
    fv_graph.DEFAULT = FV2 if recipe_name == "new" else LUCID
    marks: list[float] = []
    t0 = time.perf_counter()
    try:
        vis = rendering.render(m, layer, [channel], size=size, cache=False, score=False,
                               preview=(lambda ch, imgs: marks.append(time.perf_counter() - t0))
                               if recipe_name == "new" else None)
    finally:
        fv_graph.DEFAULT = old_default
    total = time.perf_counter() - t0
    first = marks[0] if marks else total
    print(f"  {m.label:28s} {layer:14s} {recipe_name:4s}: first preview {first:5.1f} s, final {total:6.1f} s "
          f"({vis.steps} steps at most)", flush=True)
    return {"first_preview_s": first, "final_s": total}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=128)
    ap.add_argument("--channels", type=int, default=8)
    ap.add_argument("--models", default="")
    ap.add_argument("--skip-vgg", action="store_true")
    ap.add_argument("--skip-any", action="store_true")
    args = ap.parse_args()
    C.header("bench_featvis: any CNN (before / new / plain ascent), time to first preview and final image")
    import vizlib

    C.quiet_tf()
    result: dict = {"steps": args.steps, "channels_per_layer": args.channels}
    if not args.skip_any:
        print("\n1. Any CNN: every conv layer, same channels and steps for every method")
        result["any_cnn"] = _any_cnn(args.steps, args.channels, [s for s in args.models.split(",") if s])
    print("\n2. Time to first preview and final image (first visit: graph built and traced)")
    timing = {}
    bundled = vizlib.load_model("emotion_cnn")
    targets = [(bundled, "conv2d_7", 3, None)]
    if not args.skip_vgg:
        targets.append((vizlib.load_model("vgg16", weights=None), "block5_conv3", 100, 128))
    for m, layer, ch, size in targets:
        timing[f"{m.label} {layer}"] = {name: _first_preview(m, layer, ch, size, name) for name in ("old", "new")}
    result["timing"] = timing
    C.save("featvis", result)


if __name__ == "__main__":
    main()
