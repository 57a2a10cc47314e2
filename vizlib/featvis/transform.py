"""Transformation robustness: every step sees the image jittered, scaled and rotated (Lucid's ``transform``).

A pattern that excites a channel only at one exact pixel offset is an
adversarial accident; one that survives small shifts, scalings and rotations
is something the channel looks for. The transforms are drawn per step from a
generator seeded by ``seed`` and expressed as one projective resampling from
the canvas the network sees to the image (a fixed output size, so one
compiled step serves every step). Lucid's amounts are for 128 px; here they
scale with the image's side.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

#: Lucid's standard transforms at 128 px: pad 12, jitter 8, scale 0.9..1.1, rotate -10..10 deg, jitter 4.
SCALES = np.array([1 + (i - 5) / 50.0 for i in range(11)], dtype=np.float64)
ANGLES = np.radians(np.array(list(range(-10, 11)) + 5 * [0], dtype=np.float64))


def margin(side: int) -> int:
    """Lucid pads 12 px and crops 12 px of jitter at 128 px: the network sees a 6 px grey margin each side."""
    return max(2, int(round(12 * side / 128)))


def jitter(side: int) -> int:
    """Largest shift (pixels) for an image of ``side`` pixels."""
    return max(1, int(round(6 * side / 128)))


def transforms(seed: int, steps: int, size: tuple[int, int], canvas: tuple[int, int], ratio: float,
               strength: float = 1.0, polish: float = 0.0) -> np.ndarray:
    """Per step, the 8 numbers of a projective transform from canvas to image (jitter, scale, rotation).

    ``strength`` scales every amount (0: none); the last ``polish`` share of
    the steps gets none (they optimise exactly the image that is measured).
    """
    rng = np.random.default_rng([int(seed), 7919])
    h, w = size
    ch, cw = canvas
    jy, jx = int(round(jitter(h) * strength)), int(round(jitter(w) * strength))
    still = int(round(steps * float(polish)))
    out = np.zeros((steps, 8), dtype=np.float32)
    for i in range(steps):
        dy, dx = rng.integers(-jy, jy + 1), rng.integers(-jx, jx + 1)
        s = 1 + (SCALES[rng.integers(len(SCALES))] - 1) * strength
        th = ANGLES[rng.integers(len(ANGLES))] * strength
        if i >= steps - still:
            dy = dx = th = 0
            s = 1.0
        k = ratio / s
        a0, a1 = k * math.cos(th), k * math.sin(th)
        b0, b1 = -k * math.sin(th), k * math.cos(th)
        cxo, cyo, cxi, cyi = (cw - 1) / 2, (ch - 1) / 2, (w - 1) / 2, (h - 1) / 2
        out[i] = [a0, a1, cxi + dx - a0 * cxo - a1 * cyo, b0, b1, cyi + dy - b0 * cxo - b1 * cyo, 0, 0]
    return out


def resample(images: Any, transform: Any, canvas: tuple[int, int], fill: Any = None) -> Any:
    """TensorFlow: ``images`` (B, h, w, C) in 0..1 seen through one ``transform`` on a ``canvas``.

    Outside the image: ``fill`` (one value per channel; default mid-grey).
    """
    import tensorflow as tf

    n = tf.shape(images)[0]
    c = images.shape[-1]
    fill = [0.5] * int(c) if fill is None else [float(v) for v in fill]
    base = fill[0] if len(set(fill)) == 1 else 0.0
    # The op fills with one scalar; a per-channel colour is the image minus it, resampled, plus it.
    shift = tf.constant(np.asarray(fill, np.float32) - base)
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=images - shift, transforms=tf.tile(transform[None, :], [n, 1]), output_shape=list(canvas),
        fill_value=base, interpolation="BILINEAR", fill_mode="CONSTANT")
    return out + shift
