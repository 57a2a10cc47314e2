"""How good a visualisation is, in numbers a visitor can check: the evidence every picture carries.

Two questions, answered for every image:

* **Is it stronger than a real image?** Its activation (mean of the
  channel's positive part, or the cell's value) relative to the strongest of
  a set of real images: the bundled samples (:data:`vizlib.images.SAMPLES`)
  or the images on the page. Below 1, a photograph already excites the
  channel more: the optimisation failed.
* **Is it this channel's image?** Its rank among the layer's channels on the
  image (:meth:`FeatureVisualization.rank`, by the mean positive part): rank
  1, no other channel of the layer fires more on it. (Measured against each
  channel's strongest sample instead, the rank was less reliable: a channel
  no sample excites gets a tiny denominator and outranks everything,
  benchmarks/README.md.) When a result holds several channels' images,
  :func:`specificity` also says whether each channel's own image excites it
  more than the others' images do (the benchmarks' and tests' measure).

An image that is not rank 1, or weaker than a real image, is marked failed.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Optional, Sequence

import numpy as np

_REFS: "OrderedDict[tuple, np.ndarray]" = OrderedDict()
_REFS_LOCK = threading.Lock()


def reference(model: Any, layer: str, images: Optional[Sequence[Any]] = None,
              cell: Optional[tuple[int, int]] = None) -> np.ndarray:
    """Per channel of ``layer``: the most any of ``images`` (default: the bundled samples) excites it.

    float32 (C,): the largest mean of each channel's positive part over the
    images, or with ``cell`` the largest positive value at that map position.
    The bundled samples' reference is computed once per model and layer.
    """
    from vizlib.contract import as_model
    from vizlib.extract import activations

    m = as_model(model)
    key = None
    if images is None:
        key = (str(m.key), m.weights_digest(), layer, cell)
        with _REFS_LOCK:
            if key in _REFS:
                return _REFS[key]
        from vizlib.images import SAMPLES, load_sample

        images = [load_sample(name) for name in sorted(SAMPLES)]
    acts = np.asarray(activations(m, list(images), [layer])[layer], dtype=np.float32)
    if cell is not None:
        out = np.maximum(acts[:, cell[0], cell[1], :], 0).max(axis=0)
    else:
        out = np.maximum(acts, 0).mean(axis=(1, 2)).max(axis=0)
    if key is not None:
        with _REFS_LOCK:
            _REFS[key] = out
            while len(_REFS) > 64:
                _REFS.popitem(last=False)
    return out


def specificity(values: np.ndarray, channels: Sequence[int]) -> list[int]:
    """Per image: 1 + how many of the OTHER images excite its channel more (1: its own image is best)."""
    arr = np.asarray(values)
    own = np.array([arr[i, c] for i, c in enumerate(channels)])
    return [1 + int(np.sum(np.delete(arr[:, c], i) > own[i])) for i, c in enumerate(channels)]
