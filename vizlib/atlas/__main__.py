"""``python -m vizlib.atlas build ...``: build or resume a dataset atlas from the shell."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Optional, Sequence


def _progress_bar(stream=None):
    """A one-line progress bar with images/s and the time left, redrawn at most 4 times a second."""
    stream = stream or sys.stderr
    state = {"t0": None, "d0": 0, "last": 0.0}

    def show(done: int, total: int) -> None:
        now = time.monotonic()
        if state["t0"] is None:
            state["t0"], state["d0"] = now, done
        if done < total and now - state["last"] < 0.25:
            return
        state["last"] = now
        elapsed = now - state["t0"]
        rate = (done - state["d0"]) / elapsed if elapsed > 0 else 0.0
        left = (total - done) / rate if rate > 0 else float("nan")
        width = 30
        filled = int(width * done / max(total, 1))
        eta = "--:--" if left != left else time.strftime("%H:%M:%S", time.gmtime(left))
        stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} images "
                     f"{rate:6.1f} img/s  ETA {eta} ")
        if done >= total:
            stream.write("\n")
        stream.flush()

    return show


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vizlib.atlas",
                                     description="Dataset atlas: the images that excite each channel most.")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build an atlas (running it again on the same --out resumes)")
    b.add_argument("--model", required=True, help="catalogue name (vgg16, ...), emotion_cnn, or a .keras/.h5 file")
    b.add_argument("--weights", default="imagenet", choices=["imagenet", "untrained"],
                   help="for catalogue models: ImageNet weights or untrained (seeded) weights")
    b.add_argument("--preprocess", default=None, help="for model files: unit, symmetric, raw, caffe or torch")
    b.add_argument("--images", required=True, help="a folder (recursive), a .zip, or a .parquet/.arrow table")
    b.add_argument("--layers", default=None, help="comma-separated layer names (default: first and last conv)")
    b.add_argument("--top", type=int, default=49, help="images kept per channel (default 49)")
    b.add_argument("--engine", default="local", choices=["local", "ray"])
    b.add_argument("--address", default=None, help="Ray cluster address (default: start a local Ray instance)")
    b.add_argument("--out", required=True, help="the atlas directory")
    b.add_argument("--batch-size", type=int, default=None, help="images per model call")
    b.add_argument("--shard-size", type=int, default=None, help="images per committed shard")
    b.add_argument("--workers", type=int, default=None, help="decode threads (local) or model actors (ray)")
    b.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    import vizlib  # noqa: F401  (sets TensorFlow's environment before it is imported)
    from vizlib.atlas.job import build
    from vizlib.errors import InputError

    layers = [s.strip() for s in args.layers.split(",") if s.strip()] if args.layers else None
    try:
        atlas = build(args.model, args.images, args.out, layers=layers, top=args.top, engine=args.engine,
                      address=args.address, weights=args.weights, preprocess=args.preprocess,
                      batch_size=args.batch_size, shard_size=args.shard_size, workers=args.workers,
                      progress=None if args.quiet else _progress_bar())
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    m = atlas.manifest
    c = m["counts"]
    print(f"atlas: {os.fspath(args.out)}  {c['images']} images ({c['failed']} skipped), layers "
          f"{', '.join(atlas.layers)}, top {atlas.top_k}, {m['runs'][-1]['seconds']:.1f} s")
    for f in m.get("failures", [])[:10]:
        print(f"  skipped {f['path']}: {f['error']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
