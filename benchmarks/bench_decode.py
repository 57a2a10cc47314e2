"""Decoding JPEGs for a model: is the reduced-scale (``draft``) decode worth keeping? (issue #19)

    python benchmarks/bench_decode.py [--rounds 5] [--size 224]

An image has one model view, whoever asks (page, atlas, across-images view, notebook), so the
decode must not depend on who asks. Three ways from JPEG bytes to the model's view (``size`` x
``size``), interleaved per round over the same mixed set of photos-like JPEGs (640 px to 4000 px):

(f) full decode: every pixel decoded, shrunk to 1024 a side, then resized to the model's input;
(c) the one decode (``vizlib.load_image`` as it is now): the smallest DCT scale still >= 1024 a side
    (a function of the file alone), shrunk to 1024, resized to the input;
(o) the atlas's old decode: the smallest DCT scale >= the *model's input*, shrunk, resized. Fastest,
    but its pixels differ from what the page sees (up to 91% on the bundled model's last layer).

Prints c/f and o/f (decode time ratios, lower = faster) and the largest pixel difference between
each model view and (c)'s.
"""

from __future__ import annotations

import argparse
import io

import numpy as np
from _common import median, save
from PIL import Image

from vizlib.images import load_image, model_view

SIDES = [(640, 480), (1024, 768), (1600, 1200), (2400, 1600), (3000, 2000), (4000, 3000)]


def _photo(w: int, h: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    arr = np.stack([127 + 100 * np.sin(x / (13 + 7 * c) + y / (29 + c * 5) + seed) for c in range(3)], -1)
    arr += rng.normal(0, 12, arr.shape)
    buf = io.BytesIO()
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=88)
    return buf.getvalue()


def _old(data: bytes, size: int) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.draft("RGB", (size, size))
    im.load()
    im = im.convert("RGB")
    im.thumbnail((1024, 1024), Image.BILINEAR, reducing_gap=2.0)
    return im


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--size", type=int, default=224)
    args = ap.parse_args()
    size = (args.size, args.size)
    files = [_photo(w, h, i) for i, (w, h) in enumerate(SIDES)]

    def full(d):
        im = load_image(d, max_side=0)
        im.thumbnail((1024, 1024), Image.BILINEAR, reducing_gap=2.0)
        return model_view(im, size)

    ways = {"f": full, "c": lambda d: model_view(load_image(d), size), "o": lambda d: model_view(_old(d, args.size), size)}
    import time

    times: dict[str, list[float]] = {k: [] for k in ways}
    for _ in range(args.rounds):
        for k, fn in ways.items():
            t = time.perf_counter()
            for d in files:
                fn(d)
            times[k].append(time.perf_counter() - t)
    med = {k: median(v) for k, v in times.items()}
    ref = [np.asarray(ways["c"](d), np.int16) for d in files]
    diff = {k: int(max(np.abs(np.asarray(ways[k](d), np.int16) - r).max() for d, r in zip(files, ref)))
            for k in ("f", "o")}
    print(f"{len(files)} JPEGs ({', '.join(f'{w}x{h}' for w, h in SIDES)}) -> {args.size}x{args.size}, "
          f"median of {args.rounds} rounds")
    for k, what in (("f", "full decode"), ("c", "the one decode (draft >= 1024)"), ("o", "old atlas (draft >= input)")):
        print(f"  ({k}) {what:34s} {med[k] * 1000:8.1f} ms")
    print(f"  c/f = {med['c'] / med['f']:.2f}   o/f = {med['o'] / med['f']:.2f}")
    print(f"  largest pixel difference of the model view vs (c): full {diff['f']}, old atlas {diff['o']} (of 255)")
    save("decode", {"rounds": args.rounds, "size": args.size, "median_seconds": med,
                    "c_over_f": med["c"] / med["f"], "o_over_f": med["o"] / med["f"], "max_pixel_diff": diff})


if __name__ == "__main__":
    main()
