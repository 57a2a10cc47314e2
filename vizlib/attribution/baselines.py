"""What an attribution compares the image with: a black image, a blurred one, uniform noise.

Integrated Gradients integrates from a baseline, occlusion fills its patch with
it, Score-CAM masks towards black, and the faithfulness curves remove pixels by
replacing them with the blurred image. All of them come from here, so "the
blurred image" is the same picture for every method and every metric.

Everything works on model inputs (after the model's preprocessing). Blurring is
linear and spatial, so for the per-pixel affine preprocessings of every model
the dashboard offers (scaling, mean subtraction, channel order) blurring the
model input equals preprocessing the blurred pixels.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from vizlib.errors import InputError

#: Baselines Integrated Gradients can integrate from (and occlusion fills with).
BASELINES = ("black", "blurred", "noise")
BASELINE_TITLES = {"black": "black image (raw pixels 0)", "blurred": "blurred image",
                   "noise": "uniform noise (raw pixels 0..255)"}
#: The Gaussian blur's standard deviation is the image's longer side divided by this.
BLUR_DIVISOR = 12.0


def check_baseline(baseline: Any) -> str:
    """``baseline`` if it is one of :data:`BASELINES`, else :class:`InputError` naming them."""
    if not isinstance(baseline, str) or baseline not in BASELINES:
        raise InputError(f"Unknown baseline {baseline!r}. Use one of: {', '.join(BASELINES)}.")
    return baseline


def blur(batch: np.ndarray, sigma: Optional[float] = None) -> np.ndarray:
    """(N, H, W, C) -> the same blurred by a Gaussian (``sigma`` defaults to the longer side / 12).

    Edges are reflected, so a uniform image stays uniform; deterministic, numpy only.
    """
    x = np.asarray(batch, dtype=np.float32)
    if x.ndim != 4:
        raise InputError(f"Expected a batch (N, H, W, C) to blur, got shape {x.shape}.")
    h, w = x.shape[1:3]
    s = float(sigma) if sigma is not None else max(h, w) / BLUR_DIVISOR
    out = x.astype(np.float64)
    for axis, n in ((1, h), (2, w)):
        r = min(int(3.0 * s + 0.5), n - 1)
        if r < 1 or s <= 0:
            continue
        k = np.exp(-(np.arange(-r, r + 1) ** 2) / (2.0 * s * s))
        k /= k.sum()
        pad = [(0, 0)] * 4
        pad[axis] = (r, r)
        padded = np.pad(out, pad, mode="reflect")
        acc = np.zeros_like(out)
        for j, weight in enumerate(k):
            acc += weight * np.take(padded, np.arange(j, j + n), axis=axis)
        out = acc
    return out.astype(np.float32)


def baseline_batch(m: Any, x: np.ndarray, baseline: str, seed: int = 0) -> np.ndarray:
    """The baseline for each model input of ``x`` (same shape), for an in-process model ``m``.

    ``"black"``: raw pixels 0 through the model's preprocessing; ``"blurred"``: ``x``
    blurred (:func:`blur`); ``"noise"``: raw pixels uniform in 0..255 (seeded),
    preprocessed.
    """
    check_baseline(baseline)
    x = np.asarray(x, dtype=np.float32)
    if baseline == "blurred":
        return blur(x)
    if baseline == "black":
        raw = np.zeros(x.shape, dtype=np.float32)
    else:
        raw = np.random.default_rng(int(seed)).uniform(0.0, 255.0, size=x.shape).astype(np.float32)
    return np.ascontiguousarray(m.preprocess(raw), dtype=np.float32)
