"""Pre-fetch ImageNet weights into the Keras cache, e.g. before an offline event.

    python -m vizlib.fetch vgg16 resnet50      # or: python -m vizlib.fetch all
"""

from __future__ import annotations

import sys

from vizlib.errors import InputError
from vizlib.models import CATALOGUE, fetch_imagenet_weights


def main(argv: list[str]) -> int:
    names = list(CATALOGUE) if argv in (["all"], []) else argv
    status = 0
    for name in names:
        def show(done: int, total: int | None, name: str = name) -> None:
            of = f" of {total / 2**20:.0f}" if total else ""
            print(f"\r{name}: {done / 2**20:.0f}{of} MB", end="", flush=True)

        try:
            path = fetch_imagenet_weights(name, progress=show)
            print(f"\r{name}: ready at {path}")
        except InputError as exc:
            print(f"\r{name}: {exc.cli_message}", file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
