"""A dataset made on the spot from the bundled samples: crops, flips, rotations and colour shifts.

For tests and benchmarks (no downloads): ``make_dataset(folder, 2000)`` writes
2000 distinct JPEG/PNG files, the same for the same ``seed``.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from vizlib.images import SAMPLES, load_sample


def _variants(n: int, side: int, seed: int) -> Iterator[tuple[str, Image.Image]]:
    rng = np.random.default_rng(seed)
    names = sorted(SAMPLES)
    bases = {name: load_sample(name) for name in names}
    for i in range(n):
        name = names[i % len(names)]
        im = bases[name]
        w, h = im.size
        f = rng.uniform(0.4, 1.0)
        cw, ch = max(8, int(w * f)), max(8, int(h * f))
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        v = im.crop((x0, y0, x0 + cw, y0 + ch))
        if rng.random() < 0.5:
            v = ImageOps.mirror(v)
        if rng.random() < 0.3:
            v = ImageOps.flip(v)
        angle = float(rng.choice([0, 0, 90, 180, 270, rng.uniform(-30, 30)]))
        if angle:
            v = v.rotate(angle, expand=True, fillcolor=tuple(int(c) for c in rng.integers(0, 256, 3)))
        v = ImageEnhance.Color(v).enhance(float(rng.uniform(0.3, 1.7)))
        v = ImageEnhance.Brightness(v).enhance(float(rng.uniform(0.6, 1.4)))
        shift = rng.integers(-30, 31, 3)
        arr = np.clip(np.asarray(v, dtype=np.int16) + shift, 0, 255).astype(np.uint8)
        v = Image.fromarray(arr, "RGB")
        v.thumbnail((side, side), Image.BILINEAR)
        yield f"{name}_{i:05d}", v


def encode(image: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


def make_images(n: int, *, side: int = 160, seed: int = 0) -> Iterator[tuple[str, bytes]]:
    """``n`` (file name, bytes) pairs: mostly JPEG, every fifth a PNG."""
    for i, (stem, im) in enumerate(_variants(n, side, seed)):
        fmt = "PNG" if i % 5 == 4 else "JPEG"
        yield f"{stem}.{'png' if fmt == 'PNG' else 'jpg'}", encode(im, fmt)


def make_dataset(folder: str | Path, n: int, *, side: int = 160, seed: int = 0, subfolders: int = 3) -> Path:
    """Write ``n`` images into ``folder`` (spread over a few subfolders); returns the folder."""
    root = Path(folder)
    for i, (name, data) in enumerate(make_images(n, side=side, seed=seed)):
        sub = root / f"part{i % subfolders}" if subfolders > 1 else root
        sub.mkdir(parents=True, exist_ok=True)
        (sub / name).write_bytes(data)
    return root
