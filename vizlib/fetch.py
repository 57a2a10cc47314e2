"""Pre-fetch ImageNet weights into the Keras cache, e.g. before an offline event.

    python -m vizlib.fetch vgg16 resnet50      # or: python -m vizlib.fetch all
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional

from vizlib.errors import InputError
from vizlib.models import CATALOGUE, WEIGHTS_HOST, fetch_imagenet_weights, imagenet_weights_cached, network_available


def _parse(argv: list[str]) -> list[str]:
    ap = argparse.ArgumentParser(prog="python -m vizlib.fetch", description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", metavar="MODEL",
                    help=f"catalogue models ({', '.join(CATALOGUE)}) or 'all' (the default)")
    names = ap.parse_args(argv).models  # argparse: --help, and exit 2 with one line for a bad option
    if not names or names == ["all"]:
        return list(CATALOGUE)
    unknown = [n for n in names if n not in CATALOGUE]
    if unknown:
        raise InputError(f"Unknown model '{unknown[0]}'. The catalogue: {', '.join(CATALOGUE)} (or 'all').")
    return list(dict.fromkeys(names))


def _fetch(argv: list[str]) -> int:
    names = _parse(argv)
    if not all(imagenet_weights_cached(n) for n in names) and not network_available(WEIGHTS_HOST):
        raise InputError(f"{WEIGHTS_HOST} can't be reached from this machine, so nothing can be downloaded. "
                         "Run this where there is a network, then copy the Keras cache folder (~/.keras/models) "
                         "to the offline machine.")
    status = 0
    for name in names:
        def show(done: int, total: Optional[int], name: str = name) -> None:
            of = f" of {total / 2**20:.0f}" if total else ""
            print(f"\r{name}: {done / 2**20:.0f}{of} MB", end="", file=sys.stderr, flush=True)

        try:
            path = fetch_imagenet_weights(name, progress=show)
            print(f"\r{name}: ready at {path}")
        except InputError as exc:
            print(f"\r{name}: {exc.cli_message}", file=sys.stderr)
            status = 1
    return status


def main(argv: Optional[list[str]] = None) -> int:
    from vizlib.cli import guarded

    return guarded(lambda: _fetch(sys.argv[1:] if argv is None else argv),
                   interrupted="the weights downloaded so far are kept; run the same command again for the rest")


if __name__ == "__main__":
    raise SystemExit(main())
