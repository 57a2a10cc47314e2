"""bench_attribution: cost of each attribution method in forward-pass units; vizlib vs the papers' recipes.

1. Cost: wall time of ``vizlib.attribution`` per method divided by the time of one
   forward pass of the same model on the same image (both measured in this run,
   median of ``--rounds``), on the bundled model and (``--vgg16``) VGG16 at 224
   (untrained weights: the cost doesn't depend on them, and nothing is downloaded).
2. Reference implementations written from the papers, one image at a time as
   the papers' pseudo-code reads (``reference_integrated_gradients``: right
   Riemann sum, Sundararajan et al. 2017 eq. 3; ``reference_smoothgrad``:
   Smilkov et al. 2017 eq. 4), on the same class score: how close vizlib's
   batched maps are (relative L2 error, rank correlation) and the time ratio.
3. tf-keras-vis, when importable (``PYTHONPATH`` pointing at an install of it):
   its Saliency / SmoothGrad maps against vizlib's on the greyscale bundled model
   (one colour channel, so "max |grad| over channels" and "|sum over channels|" agree).

Run: python benchmarks/bench_attribution.py [--rounds 3] [--vgg16]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402


# --------------------------------------------------------------------------- the papers' recipes


def _score_grad(km, x, c):
    """Gradient of the class logit (Grad-CAM's class score) for ONE input, the way a tutorial writes it."""
    import tensorflow as tf

    from vizlib import explain as E

    xt = tf.convert_to_tensor(x[None])
    with tf.GradientTape() as tape:
        tape.watch(xt)
        s = E.class_scores(km, xt)[0, c]
    return np.asarray(tape.gradient(s, xt))[0]


def reference_integrated_gradients(m, x, baseline, c, steps):
    """IG_i(x) = (x_i - x'_i) * 1/m * sum_{k=1..m} dF(x' + k/m (x - x'))/dx_i  (Sundararajan et al., eq. 3)."""
    total = np.zeros_like(x)
    for k in range(1, steps + 1):
        total += _score_grad(m, baseline + (k / steps) * (x - baseline), c)
    return ((x - baseline) * total / steps).sum(axis=-1)


def reference_smoothgrad(m, x, c, n, noise, rng):
    """M(x) = 1/n * sum_{i=1..n} dS_c(x + N(0, sigma^2))/dx, sigma = noise * (max - min)  (Smilkov et al., eq. 4).

    The n standard-normal draws are taken at once from ``rng`` (so a generator seeded as vizlib's gives
    the very same noisy copies, and the comparison isolates the implementation from Monte Carlo noise).
    """
    sigma = noise * float(x.max() - x.min())
    draws = rng.normal(0.0, 1.0, size=(n,) + x.shape).astype(np.float32)
    total = np.zeros_like(x)
    for d in draws:
        total += _score_grad(m, x + d * sigma, c)
    return (total / n).sum(axis=-1)


def _compare(a, b) -> dict:
    from vizlib.attribution import rank_correlation

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return {"rel_l2": float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12)),
            "rank_corr": rank_correlation(a, b)}


# --------------------------------------------------------------------------- measurements


def _cost(m, image, rounds: int) -> dict:
    import vizlib
    from vizlib.attribution import METHODS, forward_seconds

    unit = forward_seconds(m, image, repeats=max(3, rounds))
    rows = {}
    for method in METHODS:
        vizlib.attribution(m, image, method)  # warm: graphs built, trunk cached as on a page revisit
        times = [C.timed(lambda: vizlib.attribution(m, image, method))[0] for _ in range(rounds)]
        rows[method] = {"seconds": C.median(times), "spread": C.spread(times),
                        "forward_units": C.median(times) / unit}
        print(f"  {method:22s} {C.ms(C.median(times)):>10s}  {C.median(times) / unit:8.1f} forward passes")
    return {"forward_seconds": unit, "methods": rows}


def _references(m, image) -> dict:
    from vizlib.attribution import methods as AM

    raw = m.raw_batch([image])
    x = np.ascontiguousarray(m.preprocess(raw), dtype=np.float32)
    c = int(np.argmax(AM.class_scores_of(m, x)[0]))
    black = np.ascontiguousarray(m.preprocess(np.zeros_like(raw)), dtype=np.float32)[0]
    out = {}
    for steps in (32, 128):
        t_ref, ref = C.timed(lambda: reference_integrated_gradients(m, x[0], black, c, steps))
        t_viz, viz = C.timed(lambda: m.run("attribution.integrated_gradients", raw, class_index=c, steps=steps))
        row = _compare(viz["raw"][0], ref)
        row.update({"ref_seconds": t_ref, "vizlib_seconds": t_viz, "speedup": t_ref / t_viz})
        out[f"ig_{steps}"] = row
        print(f"  IG {steps:4d} steps: rel. L2 {row['rel_l2']:.4f}, rank corr {row['rank_corr']:.4f}, "
              f"paper loop {C.ms(t_ref)} vs vizlib {C.ms(t_viz)} ({row['speedup']:.1f}x)")
    for n, seed, draws in ((25, 0, "same"), (100, 123, "independent")):
        t_ref, ref = C.timed(lambda: reference_smoothgrad(m, x[0], c, n, 0.15, np.random.default_rng(seed)))
        t_viz, viz = C.timed(lambda: m.run("attribution.smoothgrad", raw, class_index=c, samples=n, seed=0))
        row = _compare(viz["raw"][0], ref)
        row.update({"ref_seconds": t_ref, "vizlib_seconds": t_viz, "speedup": t_ref / t_viz, "draws": draws})
        out[f"smoothgrad_{n}_{draws}"] = row
        print(f"  SmoothGrad {n:4d} samples ({draws} noise draws): rel. L2 {row['rel_l2']:.2g}, rank corr "
              f"{row['rank_corr']:.3f}, paper loop {C.ms(t_ref)} vs vizlib {C.ms(t_viz)} ({row['speedup']:.1f}x)")
    return out


def _tf_keras_vis(m, image) -> dict:
    try:
        from tf_keras_vis.saliency import Saliency
        from tf_keras_vis.utils.model_modifiers import ReplaceToLinear
        from tf_keras_vis.utils.scores import CategoricalScore
    except Exception as exc:  # noqa: BLE001 - not installed / doesn't import on this stack
        print(f"  tf-keras-vis not importable here ({type(exc).__name__}: {str(exc)[:80]})")
        return {"available": False, "reason": f"{type(exc).__name__}: {str(exc)[:200]}"}
    from vizlib.attribution import methods as AM

    raw = m.raw_batch([image])
    x = np.ascontiguousarray(m.preprocess(raw), dtype=np.float32)
    c = int(np.argmax(AM.class_scores_of(m, x)[0]))
    sal = Saliency(m.model, model_modifier=ReplaceToLinear(), clone=True)
    out = {"available": True}
    for name, kwargs, ours_kwargs in (("saliency", {}, {}),
                                      ("smoothgrad", {"smooth_samples": 100, "smooth_noise": 0.15}, {"samples": 100})):
        t_tkv, theirs = C.timed(lambda: sal(CategoricalScore(c), x, **kwargs)[0])
        t_viz, ours = C.timed(lambda: m.run(f"attribution.{name}", raw, class_index=c, **ours_kwargs)["map"][0])
        row = _compare(ours, theirs)
        row.update({"tf_keras_vis_seconds": t_tkv, "vizlib_seconds": t_viz})
        out[name] = row
        print(f"  tf-keras-vis {name}: rel. L2 {row['rel_l2']:.3f}, rank corr {row['rank_corr']:.3f}, "
              f"{C.ms(t_tkv)} vs vizlib {C.ms(t_viz)}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--vgg16", action="store_true", help="also VGG16 at 224 (a few minutes more)")
    args = ap.parse_args()
    C.header("bench_attribution: cost per method (forward-pass units), vizlib vs the papers, tf-keras-vis")
    import vizlib  # first: oneDNN off before TensorFlow

    C.quiet_tf()
    result: dict = {"rounds": args.rounds, "cost": {}}
    bundled = vizlib.load_model("emotion_cnn")
    face = vizlib.load_sample("astronaut_face")
    print("\nCost, bundled model (64x64 grey):")
    result["cost"]["emotion_cnn"] = _cost(bundled, face, args.rounds)
    if args.vgg16:
        print("\nCost, VGG16 (224x224, untrained weights):")
        result["cost"]["vgg16"] = _cost(vizlib.load_model("vgg16", weights=None), vizlib.load_sample("cat"), 1)
    print("\nvizlib vs the papers' recipes (bundled model, top class):")
    result["reference"] = _references(bundled, face)
    print("\ntf-keras-vis (bundled model, top class):")
    result["tf_keras_vis"] = _tf_keras_vis(bundled, face)
    ig, sg = result["reference"]["ig_128"], result["reference"]["smoothgrad_25_same"]
    result["targets"] = {"IG vs paper (128 steps) rel. L2": {"value": ig["rel_l2"], "target": 0.05,
                                                             "met": ig["rel_l2"] < 0.05},
                         "SmoothGrad vs paper, same draws": {"value": sg["rel_l2"], "target": 1e-4,
                                                             "met": sg["rel_l2"] < 1e-4}}
    print("\nVerdicts:")
    for k, t in result["targets"].items():
        print(f"  {k:34s} {t['value']:.3g} (target < {t['target']:.3g}): {C.verdict(t['met'])}")
    C.save("attribution", result)


if __name__ == "__main__":
    main()
