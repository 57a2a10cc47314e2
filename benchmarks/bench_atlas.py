"""Dataset atlas (issue #12): throughput of both engines against bare forward passes, and flat memory.

    python benchmarks/bench_atlas.py [--images 512] [--model mobilenet_v2] [--rounds 2] [--no-ray]

All ratios are measured in one run, interleaved, on images generated here from the samples
(crops, flips, rotations, colour shifts; JPEG and PNG, longest side 320 px).

  (a) bare: ``m.model(x, training=False)`` over already-preprocessed float32 batches (the same
      batch size as the atlas), i.e. the model alone, no decoding, no reduction.
  (b) local engine: ``vizlib.atlas.build(..., engine="local")`` over the images; the streaming
      pass (read, decode, preprocess, model + in-graph reduction, shard commits) in images/s,
      and end to end (plus the merge and the stored crops/thumbnails).
  (c) Ray engine on a local Ray instance (2 CPUs): the same build; images/s while running (from
      the model actors' first call to their last, so starting Ray, the workers and TensorFlow in
      the actor is left out, as the local pass leaves out loading the model) and end to end.
  (d) memory: peak RSS (VmHWM) of a fresh process building an atlas of N and of 8N images
      (bundled model, default k and batch sizes).

Targets (issue #12): b/a >= 0.85; c/b >= 0.8; d(8N)/d(N) <= 1.10. The model defaults to
MobileNetV2 with untrained (seeded) weights: ImageNet-sized, no download, same compute.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common as C

MEMORY_SCRIPT = r"""
import sys, json
sys.path.insert(0, {root!r})
import vizlib, vizlib.atlas
a = vizlib.atlas.build("emotion_cnn", {images!r}, {out!r})
hwm = [int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")][0]
print(json.dumps({{"hwm_kb": hwm, "images": a.manifest["counts"]["images"]}}))
"""


def bare_rate(m, batch_size: int, n_images: int, rounds: int = 1) -> float:
    import numpy as np

    from vizlib.atlas.synthetic import make_images

    pics = []
    for _, data in make_images(n_images, side=320, seed=7):
        pics.append(vizlib_load(data))
    x = m.raw_batch(pics)
    xp = np.asarray(m.preprocess(x), dtype=np.float32)
    m.model(xp[:2], training=False)
    best = []
    for _ in range(rounds):
        t = time.perf_counter()
        for s in range(0, len(xp), batch_size):
            m.model(xp[s:s + batch_size], training=False)
        best.append(len(xp) / (time.perf_counter() - t))
    return C.median(best)


def vizlib_load(data: bytes):
    import vizlib

    return vizlib.load_image(data)


def peak_rss(images: Path, out: Path) -> dict:
    code = MEMORY_SCRIPT.format(root=str(C.ROOT), images=str(images), out=str(out))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=3600,
                       env={**__import__("os").environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    if r.returncode != 0:
        raise RuntimeError(r.stderr[-3000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--model", default="mobilenet_v2")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--memory-images", type=int, default=250)
    ap.add_argument("--no-ray", action="store_true")
    args = ap.parse_args()
    import vizlib  # before TensorFlow: vizlib turns oneDNN off (as in Ray's workers), so numbers match
    import vizlib.atlas

    C.quiet_tf()
    from vizlib.atlas.pipeline import default_batch_size
    from vizlib.atlas.synthetic import make_dataset

    work = Path(tempfile.mkdtemp(prefix="bench-atlas-"))
    try:
        data = make_dataset(work / "images", args.images, side=320, seed=11)
        m = vizlib.load_model(args.model, weights=None)
        bs = default_batch_size(m)
        print(f"{args.model} (untrained), batch {bs}, {args.images} images of <= 320 px; layers "
              f"{vizlib.atlas.default_layers(m)}")
        res: dict = {"model": args.model, "images": args.images, "batch_size": bs, "rounds": []}
        for r in range(args.rounds):
            rnd: dict = {}
            rnd["bare"] = bare_rate(m, bs, min(args.images, 4 * bs))
            out = work / f"local{r}"
            t = time.perf_counter()
            a = vizlib.atlas.build(m, data, out)
            e2e = time.perf_counter() - t
            run = a.manifest["runs"][-1]
            rnd["local_pass"] = args.images / run["pass_seconds"]
            rnd["local_e2e"] = args.images / e2e
            if not args.no_ray:
                import ray  # noqa: F401

                out = work / f"ray{r}"
                t = time.perf_counter()
                a = vizlib.atlas.build(args.model, data, out, weights="untrained", engine="ray",
                                       ray_init={"num_cpus": 2, "object_store_memory": 200 * 2**20})
                e2e = time.perf_counter() - t
                info = a.manifest["runs"][-1]["ray"]
                rnd["ray_steady"] = info["images_per_second_while_running"]
                rnd["ray_e2e"] = args.images / e2e
                rnd["ray_first_result_s"] = info["first_result_seconds"]
                rnd["ray_driver_s_per_batch"] = info["driver_seconds"] / max(1, info["batches"])
                same = all((work / f"local{r}" / f).read_bytes() == (out / f).read_bytes()
                           for f in ("top.parquet", "crops.parquet"))
                rnd["ray_identical_to_local"] = same
            rnd["bare_after"] = bare_rate(m, bs, min(args.images, 4 * bs))
            print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in rnd.items()}))
            res["rounds"].append(rnd)
            shutil.rmtree(work / f"local{r}", ignore_errors=True)
            shutil.rmtree(work / f"ray{r}", ignore_errors=True)

        def med(key: str) -> float:
            return C.median([x[key] for x in res["rounds"] if x.get(key) is not None])

        bare = C.median([x["bare"] for x in res["rounds"]] + [x["bare_after"] for x in res["rounds"]])
        res["bare_images_per_s"] = bare
        res["local_pass_over_bare"] = med("local_pass") / bare
        res["local_e2e_over_bare"] = med("local_e2e") / bare
        print(f"(a) bare forward passes      {bare:7.1f} img/s")
        print(f"(b) local engine, pass       {med('local_pass'):7.1f} img/s   b/a = {res['local_pass_over_bare']:.2f} "
              f"(target >= 0.85: {C.verdict(res['local_pass_over_bare'] >= 0.85)})")
        print(f"    local engine, end to end {med('local_e2e'):7.1f} img/s   = {res['local_e2e_over_bare']:.2f} of bare")
        if not args.no_ray:
            res["ray_steady_over_local"] = med("ray_steady") / med("local_pass")
            res["ray_e2e_over_local_e2e"] = med("ray_e2e") / med("local_e2e")
            res["ray_first_result_s"] = med("ray_first_result_s")
            res["ray_driver_s_per_batch"] = med("ray_driver_s_per_batch")
            print(f"(c) Ray, steady state        {med('ray_steady'):7.1f} img/s   c/b = {res['ray_steady_over_local']:.2f} "
                  f"(target >= 0.8: {C.verdict(res['ray_steady_over_local'] >= 0.8)})")
            print(f"    Ray, end to end          {med('ray_e2e'):7.1f} img/s   = {res['ray_e2e_over_local_e2e']:.2f} of "
                  f"local end to end; first result after {res['ray_first_result_s']:.1f} s; driver "
                  f"{res['ray_driver_s_per_batch'] * 1000:.1f} ms per batch of {bs}")
            print(f"    Ray tables identical to local: {all(x['ray_identical_to_local'] for x in res['rounds'])}")

        n = args.memory_images
        small = make_dataset(work / "mem-small", n, side=160, seed=5)
        big = make_dataset(work / "mem-big", 8 * n, side=160, seed=5)
        p1 = peak_rss(small, work / "mem-out-small")
        p8 = peak_rss(big, work / "mem-out-big")
        res["memory"] = {"n": p1, "8n": p8, "ratio": p8["hwm_kb"] / p1["hwm_kb"]}
        print(f"(d) peak RSS {n} images {p1['hwm_kb'] / 1024:.0f} MB, {8 * n} images {p8['hwm_kb'] / 1024:.0f} MB: "
              f"ratio {res['memory']['ratio']:.3f} (target <= 1.10: {C.verdict(res['memory']['ratio'] <= 1.10)})")
        C.save("atlas", res)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
