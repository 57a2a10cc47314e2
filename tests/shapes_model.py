"""A tiny CNN where the right answer is known, shared by the explanation and attribution tests.

Noisy 32x32 greyscale images hold a filled square, a ring and / or a plus (the
classes, sigmoid each) and, in every image, an equally bright X (the
distractor). "Where did the model look for the ring" has one right answer: the
ring, not the X beside it.
"""

from __future__ import annotations

import numpy as np

S, K = 32, 7  # image side, object side
CLASS_NAMES = ["square", "ring", "plus"]


def shape(kind: int) -> np.ndarray:
    """The (K, K) mask of a square (0), ring (1), plus (2) or the distractor X (3)."""
    a = np.zeros((K, K), bool)
    if kind == 0:
        a[:] = True  # filled square
    elif kind == 1:
        a[0, :] = a[-1, :] = a[:, 0] = a[:, -1] = True  # ring
    elif kind == 2:
        a[K // 2, :] = True  # plus
        a[:, K // 2] = True
    else:  # the distractor in every image: an X
        np.fill_diagonal(a, True)
        a[np.arange(K), K - 1 - np.arange(K)] = True
    return a


def synthetic(n: int, rng: np.random.Generator, single: bool = False):
    """Noisy 32x32 images; which shapes (square, ring, plus) they hold decides the labels; an X in every image.

    Returns (images (n, S, S, 1) 0..255, labels (n, 3), boxes (top, left, bottom, right) of the class shapes).
    """
    x = rng.uniform(0, 60, size=(n, S, S, 1)).astype("float32")
    y = np.zeros((n, 3), "float32")
    boxes = []
    for i in range(n):
        taken: list = []
        kinds = [int(rng.integers(0, 3))] if single else [k for k in range(3) if rng.random() < 0.4]
        for k in kinds + [3]:
            while True:
                p = rng.integers(0, S - K + 1, 2)
                if all(abs(p[0] - q[0]) >= K + 1 or abs(p[1] - q[1]) >= K + 1 for q in taken):
                    break
            taken.append(p)
            x[i, p[0]:p[0] + K, p[1]:p[1] + K, 0][shape(k)] = rng.uniform(180, 255)
            if k < 3:
                y[i, k] = 1
                boxes.append((int(p[0]), int(p[1]), int(p[0]) + K, int(p[1]) + K))
    return x, y, boxes


def train_shapes_model():
    """The tiny CNN trained for a few seconds (seeded) and 64 test images with one class shape each.

    Returns (model as vizlib loads it, test images, their classes, the class shapes' boxes).
    """
    import keras

    import vizlib

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x, y, _ = synthetic(3000, rng)
    L = keras.layers
    km = keras.Sequential([
        keras.Input((S, S, 1)), L.Rescaling(1 / 255.0),
        L.Conv2D(8, 3, padding="same", activation="relu"), L.MaxPooling2D(),
        L.Conv2D(16, 3, padding="same", activation="relu"), L.MaxPooling2D(),
        L.Conv2D(32, 3, padding="same", activation="relu", name="features"),
        L.GlobalAveragePooling2D(), L.Dense(3, activation="sigmoid"),
    ], name="shapes")
    km.compile(keras.optimizers.Adam(3e-3), "binary_crossentropy")
    km.fit(x, y, epochs=4, batch_size=64, verbose=0)
    xt, yt, boxes = synthetic(64, np.random.default_rng(1), single=True)
    m = vizlib.load_model(km, preprocess="raw", class_names=list(CLASS_NAMES))
    return m, xt, yt.argmax(axis=1), boxes
