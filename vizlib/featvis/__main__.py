"""Pre-compute feature visualisations into the shared disk cache, so the page serves them instantly.

    python -m vizlib.featvis precompute --model vgg16 --layers block5_conv3,block4_conv3
    python -m vizlib.featvis precompute --model emotion_cnn            # the first and last conv layer
    python -m vizlib.featvis precompute --model vgg16 --layers block5_conv3 --channels 0-48 --steps 256
    python -m vizlib.featvis precompute --model vgg16 --layers block5_conv3 --workers 4          # processes
    python -m vizlib.featvis precompute --model vgg16 --layers block5_conv3 --engine ray         # local Ray
    python -m vizlib.featvis precompute --model vgg16 --engine ray --address auto                # a Ray cluster

Images land in ``$CNN_VIZ_CACHE_DIR/featvis`` (:class:`vizlib.featvis.DiskCache`)
under the keys the page uses (same model, layer, channel, size, steps, seed),
so a host can fill the cache before a lecture. Run it with the settings the
page uses: the detail's default steps (``--steps`` omitted), and, for the
grid's mosaics, ``--steps 128`` (``ui/featvis.py`` ``GRID_STEPS``). Finished
channels are skipped, so an interrupted run continues where it stopped.
Channels are computed in chunks of 16 by the engines of the atlas's bulk
visualisations (:func:`vizlib.atlas.bulk_featvis.fill_cache`): in this
process, in ``--workers`` local processes, or as Ray tasks (``--engine ray``,
``pip install -r requirements-ray.txt``) on a local Ray instance or the
cluster at ``--address``; this process writes every result into the cache.
For a dataset atlas with stored visualisations, see ``python -m vizlib.atlas featvis``.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Optional, Sequence

from vizlib.errors import InputError


def _channels(text: Optional[str], n: int) -> list[int]:
    if text is None:
        return list(range(n))
    if not text.strip(" ,"):
        raise InputError("--channels is empty: give channels like 0-48 or 1,5,9, or leave it out for every channel.")
    out: list[int] = []
    for part in text.split(","):
        part = part.strip()
        lo, _, hi = part.partition("-")
        try:
            first, last = int(lo), int(hi if hi else lo)
        except ValueError:
            raise InputError(f"--channels: '{part}' is not a channel number or a range like 0-15.") from None
        if first > last:
            raise InputError(f"--channels: '{part}' runs backwards; write it as {last}-{first}.")
        if last >= n:  # checked before a list is made: '0-999999999999' must not fill the memory
            raise InputError(f"--channels: '{part}' goes past the layer's last channel, {n - 1} "
                             f"(it has {n} channels, 0 to {n - 1}).")
        out.extend(range(first, last + 1))
    return list(dict.fromkeys(out))


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The command line; returns the exit status (2 for anything the user got wrong, with one line)."""
    ap = argparse.ArgumentParser(prog="python -m vizlib.featvis", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("precompute", help="fill the disk cache with chosen models' and layers' visualisations")
    p.add_argument("--model", required=True, help="catalogue name, emotion_cnn, or a .keras/.h5 file")
    p.add_argument("--weights", default="imagenet", choices=["imagenet", "untrained"])
    p.add_argument("--preprocess", default=None, help="for model files: auto (the default: raw when the model rescales its input itself, else unit), unit, symmetric, raw, caffe, torch")
    p.add_argument("--layers", default=None, help="comma-separated layer names (default: first and last conv)")
    p.add_argument("--channels", default=None, help="e.g. 0-48 or 1,5,9 (default: every channel)")
    p.add_argument("--steps", type=int, default=None, help="optimisation steps (default: the page's detail)")
    p.add_argument("--size", type=int, default=None, help="image side in pixels (default: from the layer)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--engine", default="local", choices=["local", "ray"],
                   help="local: this process or --workers processes; ray: Ray tasks (requirements-ray.txt)")
    p.add_argument("--workers", type=int, default=None,
                   help="local processes or concurrent Ray tasks (default: 1 locally, the cluster's CPUs on Ray)")
    p.add_argument("--address", default=None, help="a Ray cluster (e.g. auto); default: a new local instance")
    p.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    from vizlib.cli import guarded

    return guarded(lambda: _precompute(args), interrupted="the channels finished so far are in the cache; "
                                                          "run the same command again to continue")


def _precompute(args: argparse.Namespace) -> int:
    import vizlib
    from vizlib.atlas.bulk_featvis import fill_cache
    from vizlib.cli import names
    from vizlib.featvis import render

    chosen = names(args.layers, "--layers")  # a mistake in the arguments is told before the model loads
    if args.channels is not None and not args.channels.strip(" ,"):
        _channels(args.channels, 0)
    kwargs = {} if args.preprocess is None else {"preprocess": args.preprocess}
    weights = None if args.weights == "untrained" else "imagenet"
    m = vizlib.load_model(args.model, weights=weights, **kwargs)
    layers = chosen or list(dict.fromkeys([vizlib.first_conv(m).name, vizlib.last_conv(m).name]))
    spec = None
    if args.engine == "ray" or (args.workers or 1) > 1:  # other processes load the model themselves
        from vizlib.atlas.job import model_spec

        spec = model_spec(args.model, m, weights, args.preprocess)
    for layer in layers:
        channels = _channels(args.channels, vizlib.find_layer(m, layer).channels)
        t0 = time.monotonic()

        def progress(done: int, total: int, layer: str = layer) -> None:
            if not args.quiet:
                print(f"\r{layer}: {done}/{total} channels", end="", file=sys.stderr, flush=True)

        report = fill_cache(m, [layer], channels, steps=args.steps, size=args.size, seed=args.seed,
                            engine=args.engine, spec=spec, workers=args.workers or (None if spec else 1),
                            address=args.address, progress=progress)
        # What the page gets: every image from the cache, with its score (a forward pass, no optimisation).
        vis = render(m, layer, channels, size=args.size, steps=args.steps, seed=args.seed)
        failed = sum(vis.failed())
        if not args.quiet:
            print(file=sys.stderr)
        print(f"{layer}: {len(channels)} channels ({report[layer]['cached_before']} already cached) in "
              f"{time.monotonic() - t0:.0f} s ({args.engine}); {failed} failed their check")
    return 0


if __name__ == "__main__":
    sys.exit(main())
