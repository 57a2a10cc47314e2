"""Small CNNs trained in seconds, for judging feature visualisation where the answer is known.

Four models that differ where a method tuned to one model would break:
greyscale and RGB, 28 to 64 px, with and without BatchNormalization, and
three input scalings (unit, -1..1, caffe). Each learns synthetic stripes
(orientation, frequency and, for RGB, colour), so its channels have real,
different patterns to find. Used by tests/_featvis_child.py (the tests) and
benchmarks/bench_featvis.py (the broad sweep).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

COLOURS = np.array([[1, .15, .15], [.15, 1, .15], [.15, .15, 1]], np.float32)


@dataclass(frozen=True)
class Spec:
    name: str
    side: int
    colour: bool
    batchnorm: bool
    preprocess: str  # a vizlib preprocessing name
    widths: tuple[int, ...] = (8, 16, 24)


SPECS = (
    Spec("grey28_unit", 28, False, False, "unit"),
    Spec("rgb48_unit_bn", 48, True, True, "unit"),
    Spec("rgb32_symmetric", 32, True, False, "symmetric"),
    Spec("grey64_unit_bn", 64, False, True, "unit", (8, 12, 16)),
    Spec("rgb40_caffe_bn", 40, True, True, "caffe", (8, 12, 16)),
)


def stripes(n: int, rng: np.random.Generator, size: int, colour: bool) -> tuple[np.ndarray, np.ndarray]:
    """Stripes, horizontal or vertical, coarse or fine, (RGB) in one of three colours: uint8-range floats."""
    x = np.zeros((n, size, size, 3), np.float32)
    classes = 12 if colour else 4
    y = rng.integers(0, classes, n)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    for i in range(n):
        colour_i, rest = divmod(int(y[i]), 4)
        vertical, fine = divmod(rest, 2)
        f = rng.uniform(0.2, 0.3) if fine else rng.uniform(0.05, 0.1)
        pattern = np.sin(2 * np.pi * f * (xx if vertical else yy) + rng.uniform(0, 2 * np.pi))
        tint = COLOURS[colour_i] if colour else np.ones(3, np.float32)
        image = rng.uniform(0.3, 0.7) + 0.3 * pattern[..., None] * tint + rng.normal(0, .05, (size, size, 3))
        x[i] = np.clip(image, 0, 1) * 255
    if not colour:
        x = x.mean(axis=3, keepdims=True)
    return x, y


def train(spec: Spec, n: int = 600, epochs: int = 4):
    """(vizlib model, training accuracy, conv layer names): trained for a few seconds."""
    import keras

    import vizlib
    from vizlib.models import PREPROCESSING

    keras.utils.set_random_seed(0)
    x, y = stripes(n, np.random.default_rng(0), spec.side, spec.colour)
    L = keras.layers
    inp = keras.Input((spec.side, spec.side, 3 if spec.colour else 1))
    h, names = inp, []
    for i, width in enumerate(spec.widths):
        name = f"conv{i + 1}"
        names.append(name)
        if spec.batchnorm:
            h = L.Conv2D(width, 3, padding="same", use_bias=False, name=name)(h)
            h = L.Activation("relu")(L.BatchNormalization()(h))
        else:
            h = L.Conv2D(width, 3, padding="same", activation="relu", name=name)(h)
        if i < len(spec.widths) - 1:
            h = L.MaxPooling2D()(h)
    out = L.Dense(int(y.max()) + 1, activation="softmax")(L.GlobalAveragePooling2D()(h))
    km = keras.Model(inp, out, name=spec.name)
    km.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    pre = PREPROCESSING[spec.preprocess][1]
    hist = km.fit(pre(x.copy()), y, epochs=epochs, batch_size=32, verbose=0)
    return vizlib.load_model(km, preprocess=spec.preprocess), float(hist.history["accuracy"][-1]), names


def sample_channels(n_channels: int, k: int, seed: int = 0) -> list[int]:
    """``k`` channels of ``n_channels`` drawn without replacement by a seeded generator (all when k >= n)."""
    if k >= n_channels:
        return list(range(n_channels))
    return sorted(int(c) for c in np.random.default_rng(seed).choice(n_channels, k, replace=False))
