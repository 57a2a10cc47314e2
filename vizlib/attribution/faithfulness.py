"""Is a map faithful to the model? Deletion and insertion curves, and the model-randomisation check.

**Deletion** (Petsiuk et al., 2018, RISE): remove the most salient pixels first,
replacing them by the blurred image, and watch the class probability fall; a
faithful map makes it fall fast (small area). **Insertion**: start from the
blurred image and put the most salient pixels back; a faithful map makes the
probability rise fast (large area).

**Model randomisation** (Adebayo et al., 2018): a map that barely changes when
the model's weights are replaced by random ones explains the image, not the
model; :func:`rank_correlation` with the untrained twin's map says how much.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from vizlib import explain as E
from vizlib.attribution.baselines import blur
from vizlib.attribution.methods import class_scores_of
from vizlib.errors import InputError
from vizlib.ops import op


@op("attribution.scores")
def _scores_op(m: Any, batch: np.ndarray) -> dict:
    """Class scores (Grad-CAM's) and the probabilities the model reports, for every image, in bounded batches."""
    if batch is None or len(batch) == 0:
        raise InputError("No image given.")
    scores = class_scores_of(m, np.ascontiguousarray(batch, dtype=np.float32))
    return {"scores": scores, "probabilities": np.asarray(E.class_probabilities(m, scores), dtype=np.float32)}


@op("attribution.probability_missing")
def _probability_missing_op(m: Any, batch: Any = None) -> dict:
    """Where the model lives: why it reports no class probability (None when it does)."""
    return {"reason": E.probability_missing(m)}


def _check_map(saliency: Any, size: tuple[int, int]) -> np.ndarray:
    try:
        s = np.asarray(saliency, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError("The saliency map must be an array of numbers.") from None
    if s.shape != tuple(size):
        raise InputError(f"The saliency map is {s.shape}; this model takes {size[0]} x {size[1]} images, "
                         "so give an (H, W) map of that size (vizlib.attribution returns one).")
    if not np.all(np.isfinite(s)):
        raise InputError("The saliency map holds NaN or infinite values.")
    return s


def curves(m: Any, raw: np.ndarray, saliency: np.ndarray, class_index: Optional[int], steps: int) -> dict:
    """Deletion and insertion curves for one raw image (1, H, W, C) and a checked (H, W) map.

    Step k (0..steps) moves round(k / steps x H x W) pixels, taken in order of
    decreasing saliency (ties: row-major order). All 2 x (steps + 1) images go to
    the model in one operation (batched where the model lives).
    """
    h, w = saliency.shape
    blurred = blur(raw)
    order = np.argsort(-saliency.ravel(), kind="stable")
    counts = np.rint(np.arange(steps + 1) * (h * w) / steps).astype(int)
    flat_x, flat_b = raw.reshape(h * w, -1), blurred.reshape(h * w, -1)
    images = np.empty((2 * (steps + 1),) + raw.shape[1:], dtype=np.float32)
    for k, n in enumerate(counts):
        idx = order[:n]
        deleted = flat_x.copy()
        deleted[idx] = flat_b[idx]
        inserted = flat_b.copy()
        inserted[idx] = flat_x[idx]
        images[k] = deleted.reshape(raw.shape[1:])
        images[steps + 1 + k] = inserted.reshape(raw.shape[1:])
    r = m.run("attribution.scores", images)
    probs = np.asarray(r["probabilities"], dtype=np.float64)
    n_classes = probs.shape[1]
    if class_index is None:
        c = int(np.argmax(np.asarray(r["scores"])[0]))
    else:
        c = int(class_index)
        if not 0 <= c < n_classes:
            raise InputError(f"Class index {c} is out of range: this model has classes 0 to {n_classes - 1}.")
    return {"fractions": np.arange(steps + 1) / float(steps), "deletion": probs[: steps + 1, c],
            "insertion": probs[steps + 1:, c], "class_index": c}


def area(curve: np.ndarray) -> float:
    """Trapezoidal area under a curve sampled at equal steps over [0, 1]: the mean height, in [0, 1]."""
    y = np.asarray(curve, dtype=np.float64)
    return float((y.sum() - 0.5 * (y[0] + y[-1])) / (len(y) - 1))


def faithfulness(model: Any, image: Any, saliency: Any, *, class_index: Optional[int] = None,
                 steps: int = 20) -> dict:
    """Deletion and insertion AUC of ``saliency`` for ``image``: how well the map predicts the model.

    The class probability (the model's softmax / sigmoid of Grad-CAM's class score;
    ``class_index=None``: the top class of ``image``) is measured as the most salient
    pixels are removed (replaced by the blurred image, :func:`vizlib.attribution.baselines.blur`)
    or added (to the blurred image), ``steps`` equal steps from none to all pixels.
    Each AUC is the trapezoidal area under probability (0..1) against the fraction
    of pixels moved (0..1), so it lies in [0, 1] without any rescaling: the mean
    probability along the curve. Lower deletion and higher insertion mean a more
    faithful map. Returns ``deletion_auc``, ``insertion_auc``, ``class_index``, and
    the curves (``fractions``, ``deletion``, ``insertion``).
    """
    from vizlib.contract import as_model

    m = as_model(model)
    try:
        steps = int(steps)
    except (TypeError, ValueError):
        raise InputError(f"steps must be a whole number, not {steps!r}.") from None
    if not 1 <= steps <= 200:
        raise InputError(f"steps must be between 1 and 200, not {steps}.")
    raw = m.raw_batch(image if isinstance(image, np.ndarray) else [image])[:1]
    s = _check_map(saliency, tuple(m.input_size))
    missing = m.run("attribution.probability_missing").get("reason")
    if missing:
        raise InputError(missing)
    c = curves(m, raw, s, class_index, steps)
    return {"deletion_auc": area(c["deletion"]), "insertion_auc": area(c["insertion"]),
            "class_index": c["class_index"], "fractions": c["fractions"].astype(np.float32),
            "deletion": c["deletion"].astype(np.float32), "insertion": c["insertion"].astype(np.float32)}


def _ranks(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64).ravel()
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x))
    r[order] = np.arange(len(x))
    _, inv, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.zeros(len(counts))
    np.add.at(sums, inv, r)
    return (sums / counts)[inv]


def rank_correlation(a: Any, b: Any) -> float:
    """Spearman rank correlation of two maps (ties share their average rank; 0 when either is constant).

    Used for the model-randomisation check: the map for the trained model against
    the map for its untrained twin. Near 1: the map ignores what the model learned.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise InputError(f"Maps of different shapes {a.shape} and {b.shape} can't be compared.")
    ra, rb = _ranks(a), _ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return 0.0
    return float(np.corrcoef(ra, rb)[0, 1])
