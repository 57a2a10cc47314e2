"""``python -m vizlib.atlas build ...``: build or resume a dataset atlas from the shell."""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Optional, Sequence


def _progress_bar(stream=None, unit: str = "images"):
    """A one-line progress bar with items/s and the time left, redrawn at most 4 times a second."""
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
        stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {unit} "
                     f"{rate:6.1f} {'img' if unit == 'images' else 'ch'}/s  ETA {eta} ")
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
    b.add_argument("--preprocess", default=None, help="for model files: auto (the default: raw when the model rescales its input itself, else unit), unit, symmetric, raw, caffe or torch")
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
    b.add_argument("--featvis", action="store_true",
                   help="also store the feature visualisation of every channel of the atlas's layers")
    _featvis_args(b, "--featvis-layers", "--featvis-steps", "--featvis-size")
    f = sub.add_parser("featvis", help="add stored feature visualisations to an existing atlas (resumable)")
    f.add_argument("--out", required=True, help="the atlas directory")
    f.add_argument("--model", required=True, help="the atlas's model (as given to build)")
    f.add_argument("--weights", default="imagenet", choices=["imagenet", "untrained"])
    f.add_argument("--preprocess", default=None)
    f.add_argument("--engine", default="local", choices=["local", "ray"])
    f.add_argument("--address", default=None)
    f.add_argument("--workers", type=int, default=None, help="worker processes (local) or concurrent Ray tasks")
    f.add_argument("--quiet", action="store_true")
    _featvis_args(f, "--layers", "--steps", "--size")
    args = parser.parse_args(argv)
    return _guarded(_featvis_main if args.command == "featvis" else _build_main, args)


def _guarded(run, args: argparse.Namespace) -> int:
    """Run a sub-command through the command lines' one error policy (:func:`vizlib.cli.guarded`); an
    interrupted build keeps its committed shards, so the message says how to resume."""
    from vizlib.cli import guarded

    return guarded(lambda: run(args), interrupted="the shards committed so far are kept; run the same "
                                                  "command again to resume")


def _build_main(args: argparse.Namespace) -> int:
    import vizlib  # noqa: F401  (sets TensorFlow's environment before it is imported)
    from vizlib.atlas.job import build

    from vizlib.atlas.sources import describe_ignored
    from vizlib.cli import names

    layers = names(args.layers, "--layers")
    fv_layers = names(args.featvis_layers, "--featvis-layers")
    atlas = build(args.model, args.images, args.out, layers=layers, top=args.top, engine=args.engine,
                  address=args.address, weights=args.weights, preprocess=args.preprocess,
                  batch_size=args.batch_size, shard_size=args.shard_size, workers=args.workers,
                  progress=None if args.quiet else _progress_bar(),
                  featvis=fv_layers or bool(args.featvis), featvis_steps=args.featvis_steps,
                  featvis_size=args.featvis_size,
                  featvis_progress=None if args.quiet else _progress_bar(unit="channels"))
    m = atlas.manifest
    c = m["counts"]
    print(f"atlas: {os.fspath(args.out)}  {c['images']} images ({c['failed']} skipped), layers "
          f"{', '.join(atlas.layers)}, top {atlas.top_k}, {m['runs'][-1]['seconds']:.1f} s")
    for f in m.get("failures", [])[:10]:
        print(f"  skipped {f['path']}: {f['error']}", file=sys.stderr)
    for reason, found in m.get("ignored", {}).items():
        print(f"  left out of the ZIP: {describe_ignored(reason, found['count'], found['examples'])}",
              file=sys.stderr)
    if atlas.featvis_layers:
        print(f"feature visualisations stored for {', '.join(atlas.featvis_layers)}")
    if c["images"] and not c.get("decoded", c["images"] - c["failed"]):  # nothing to look at: not a success
        print(f"error: none of the {c['images']} images could be read (the reasons are listed above)",
              file=sys.stderr)
        return 2
    return 0


def _featvis_args(p: argparse.ArgumentParser, layers: str, steps: str, size: str) -> None:
    p.add_argument(layers, default=None, help="feature visualisations of these layers (comma-separated; "
                                              "default: the atlas's layers)")
    p.add_argument(steps, type=int, default=None, help="optimisation steps per image (default: featvis' default)")
    p.add_argument(size, type=int, default=None, help="image side in pixels (default: from the receptive field)")


def _featvis_main(args: argparse.Namespace) -> int:
    import vizlib  # noqa: F401  (sets TensorFlow's environment before it is imported)
    from vizlib.atlas.job import add_featvis
    from vizlib.cli import names

    atlas = add_featvis(args.model, args.out, layers=names(args.layers, "--layers"), steps=args.steps,
                        size=args.size,
                        engine=args.engine, address=args.address, weights=args.weights,
                        preprocess=args.preprocess, workers=args.workers,
                        progress=None if args.quiet else _progress_bar(unit="channels"))
    print(f"atlas: {os.fspath(args.out)}  feature visualisations stored for {', '.join(atlas.featvis_layers)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
