"""Feature visualisation on any CNN: the method before issue 20 (Lucid's recipe), the new one, plain ascent.

    python benchmarks/bench_featvis.py [--steps 128] [--channels 8] [--models a,b,...] [--skip-vgg]
    python benchmarks/bench_featvis.py --polish --steps 96 --channels 6 --skip-vgg   # round 4's polish candidates
    python benchmarks/bench_featvis.py --seeds 0,1,2 --steps 256 --channels 6        # round 6: the baseline's own spread

1. Any CNN. Five small CNNs trained here in seconds (tests/_featvis_models.py: grey and RGB, 28-64 px,
   with and without BatchNorm, unit / -1..1 / caffe scaling) and the bundled model; every conv layer,
   ``--channels`` per layer drawn by a seeded generator; each method on the same channels, the same
   steps, one batch per layer. Per method: specificity (share of live channels whose own image excites
   them more than any other channel's image does), the activation (mean positive part) relative to
   plain ascent's on the same channel (median and share >= 1), steps actually run (the new method stops
   when every image has converged), seconds.
2. Time to first preview and to the final result, one channel of VGG16 ``block5_conv3`` (untrained
   weights: the same compute, no network) and of the bundled model's last conv, as a first visit
   (graph built and traced): seconds until the first preview image, until a useful one (its activation
   at least half the final image's; or rank 1 in the layer), and until the finished image; with the
   preview sketch (``Recipe.preview``: the parameterisation without transforms first, while someone watches, the
   default) and without it, and each final image's activation and rank. ``--vgg-channels`` VGG16
   channels (default 3), one at a time. The final images are the same either way (tests/test_featvis.py).
"""

from __future__ import annotations

import argparse
import sys
import time

import _common as C

sys.path.insert(0, str(C.ROOT / "tests"))


#: ``--polish``: round 4's candidates for the pixel polish instead of fv1 (benchmarks/README.md).
POLISH_CANDIDATES = False


def _recipes():
    from dataclasses import replace

    from vizlib.featvis.graph import FV2, LUCID, PLAIN

    if POLISH_CANDIDATES:
        return {"fv2.1 (no warm-up)": replace(FV2, polish_warmup=0.0), "new (fv2)": FV2,
                "warm-up, lr 0.15": replace(FV2, polish_lr=0.15), "warm-up, lr 0.2": replace(FV2, polish_lr=0.2),
                "warm-up, polish 5/8": replace(FV2, polish=0.625), "plain ascent": PLAIN}
    return {"before (fv1, Lucid)": LUCID, "new (fv2)": FV2, "plain ascent": PLAIN}


def _layer(m, layer: str, channels: list[int], steps: int, seed: int = 0) -> dict:
    import numpy as np

    from vizlib.featvis import default_size
    from vizlib.featvis.engine import State
    from vizlib.featvis.score import specificity

    size = default_size(m, layer)
    out = {}
    for name, recipe in _recipes().items():
        t0 = time.perf_counter()
        st = State(m, layer, channels, size, steps, seed, None, recipe)
        st.run()
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


def _seed_spread(steps: int, per_layer: int, seeds: list[int]) -> dict:
    """Round 6: the new method and plain ascent from several seeds (plain ascent starts from grey plus a seeded
    pinch of noise) on the same channels as section 1. Is "each image at least plain ascent's" a property that
    plain ascent itself has, from another seed?"""
    import numpy as np

    import vizlib
    import _featvis_models as M

    global POLISH_CANDIDATES
    POLISH_CANDIDATES = False
    models = [(s.name, s) for s in M.SPECS] + [("bundled", None)]
    own: dict = {}  # (method, seed) -> activations of the live channels, in one order
    for label, spec in models:
        if spec is None:
            m = vizlib.load_model("emotion_cnn")
            layers = [i.name for i in vizlib.spatial_layers(m) if i.kind == "Conv2D"]
        else:
            m, _, layers = M.train(spec)
        for k, layer in enumerate(layers):
            chans = M.sample_channels(vizlib.find_layer(m, layer).channels, per_layer, seed=k)
            runs = {s: _layer(m, layer, chans, steps, seed=s) for s in seeds}
            live = [i for i in range(len(chans)) if not all(r[n]["flat"][i] for r in runs.values() for n in r)]
            for s, r in runs.items():
                for name in ("new (fv2)", "plain ascent"):
                    own.setdefault((name, s), []).extend(r[name]["own"][i] for i in live)
        print(f"  {label} done", flush=True)
    a = {key: np.maximum(np.array(v), 1e-6) for key, v in own.items()}
    new, plain, s0 = "new (fv2)", "plain ascent", seeds[0]
    rows = {f"new seed {s0} / plain seed {s0}": a[new, s0] / a[plain, s0]}
    rows.update({f"plain seed {s} / plain seed {s0}": a[plain, s] / a[plain, s0] for s in seeds[1:]})
    rows.update({f"new seed {s} / plain seed {s}": a[new, s] / a[plain, s] for s in seeds[1:]})
    weakest = np.min([a[plain, s] for s in seeds], axis=0)
    rows[f"new seed {s0} / plain's weakest seed"] = a[new, s0] / weakest
    rows["plain's weakest seed / its strongest"] = weakest / np.max([a[plain, s] for s in seeds], axis=0)
    result = {}
    for name, q in rows.items():
        result[name] = {"median": float(np.median(q)), "min": float(q.min()), "below_0.95": int(np.sum(q < 0.95)),
                        "below_0.9": int(np.sum(q < 0.9)), "share_ge_1": float(np.mean(q >= 0.999)), "n": len(q)}
        r = result[name]
        print(f"  {name:40s} median {r['median']:.3f}  min {r['min']:.3f}  < 0.95: {r['below_0.95']:3d}  "
              f"< 0.9: {r['below_0.9']:3d}  >= 1: {r['share_ge_1']:.0%}  (of {r['n']})", flush=True)
    return result


def _fired(m, layer: str, channel: int, images) -> tuple[list[float], list[int]]:
    """The channel's mean positive part on each uint8 image (B, H, W, C), as the final statistics measure it,
    and its rank among the layer's channels on that image (1: no other channel fires more)."""
    import numpy as np
    import tensorflow as tf

    from vizlib.featvis import graph as fv_graph

    a, b = fv_graph.affine_preprocess(m)
    ext = fv_graph.extractor(m, layer)
    x = np.asarray(images, np.float32) @ a + b
    fired = np.maximum(np.asarray(ext(tf.constant(x), training=False)), 0).mean(axis=(1, 2))  # (B, C)
    return [float(v) for v in fired[:, channel]], [1 + int(np.sum(f > f[channel])) for f in fired]


def _first_preview(m, layer: str, channel: int, size, with_pass: bool) -> dict:
    """A first visit (graph built and traced, cache off): seconds to the first preview, to a useful one (rank 1:
    no other channel of the layer fires more on it, it already shows this channel's pattern), to one with half
    the final image's activation, and to the final image; the final's activation and rank."""
    import dataclasses

    from vizlib.featvis import graph as fv_graph, rendering
    from vizlib.featvis.graph import FV2

    fv_graph.clear()
    rendering._PLANS.clear()
    old_default = fv_graph.DEFAULT
    fv_graph.DEFAULT = FV2 if with_pass else dataclasses.replace(FV2, preview=0.0)
    marks: list = []
    t0 = time.perf_counter()
    try:
        vis = rendering.render(m, layer, [channel], size=size, cache=False, score=False,
                               preview=lambda ch, imgs: marks.append((time.perf_counter() - t0, imgs[0].copy())))
    finally:
        fv_graph.DEFAULT = old_default
    total = time.perf_counter() - t0
    final = float(vis.own("fired")[0])
    fired, ranks = _fired(m, layer, channel, [img for _, img in marks]) if marks else ([], [])
    useful = next((t for (t, _), r in zip(marks, ranks) if r == 1), total)
    half = next((t for (t, _), f in zip(marks, fired) if f >= 0.5 * final), total)
    first = marks[0][0] if marks else total
    label = "sketch first" if with_pass else "no sketch"
    print(f"  {m.label[:16]:16s} {layer:12s} {label:14s}: first preview {first:5.1f} s, rank 1 {useful:5.1f} s, "
          f"half the final's activation {half:5.1f} s, final {total:6.1f} s; final activation {final:.3f}, "
          f"rank {vis.rank('fired')[0]}", flush=True)
    return {"first_preview_s": first, "rank1_preview_s": useful, "half_activation_s": half, "final_s": total,
            "final_fired": final, "rank": vis.rank("fired")[0], "steps": vis.steps,
            "previews": [[round(t, 2), f, r] for (t, _), f, r in zip(marks, fired, ranks)]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=128)
    ap.add_argument("--channels", type=int, default=8)
    ap.add_argument("--models", default="")
    ap.add_argument("--skip-vgg", action="store_true")
    ap.add_argument("--skip-any", action="store_true")
    ap.add_argument("--vgg-channels", type=int, default=3, help="VGG16 block5_conv3 channels timed, one at a time")
    ap.add_argument("--polish", action="store_true", help="section 1 compares the polish candidates of round 4")
    ap.add_argument("--seeds", default="", help="round 6 only: the new method and plain ascent from these seeds")
    args = ap.parse_args()
    global POLISH_CANDIDATES
    POLISH_CANDIDATES = args.polish
    C.header("bench_featvis: any CNN (before / new / plain ascent), time to first preview and final image")
    import vizlib

    C.quiet_tf()
    result: dict = {"steps": args.steps, "channels_per_layer": args.channels}
    if args.seeds:
        print(f"\nSeeds {args.seeds}: the new method and plain ascent, every conv layer, {args.steps} steps")
        result["seed_spread"] = _seed_spread(args.steps, args.channels, [int(s) for s in args.seeds.split(",")])
        C.save("featvis_seeds", result)
        return
    if not args.skip_any:
        print("\n1. Any CNN: every conv layer, same channels and steps for every method")
        result["any_cnn"] = _any_cnn(args.steps, args.channels, [s for s in args.models.split(",") if s])
    print("\n2. Time to first preview and final image (first visit: graph built and traced)")
    timing = {}
    bundled = vizlib.load_model("emotion_cnn")
    targets = [(bundled, "conv2d_7", 3, None)]
    if not args.skip_vgg:
        import _featvis_models as M

        vgg = vizlib.load_model("vgg16", weights=None)
        targets += [(vgg, "block5_conv3", ch, 128) for ch in M.sample_channels(512, args.vgg_channels, seed=20)]
    for m, layer, ch, size in targets:
        timing[f"{m.label} {layer} channel {ch}"] = {name: _first_preview(m, layer, ch, size, name == "sketch first")
                                                     for name in ("sketch first", "no sketch")}
    result["timing"] = timing
    C.save("featvis", result)


if __name__ == "__main__":
    main()
