"""One row of the scoreboard: a method's map with its evidence (faithfulness, randomisation, cost).

The page shows every method side by side for one image and class; each map
carries the measurements that say whether to trust it here (DESIGN.md: every
picture that claims something carries its evidence).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from vizlib.errors import InputError


@dataclass
class MethodScore:
    """A method's map for one image and class, and how far to trust it."""

    method: str
    title: str
    map: np.ndarray  # float32 (H, W) in [0, 1]
    class_index: int
    seconds: float  # wall time of the map alone
    forward_units: Optional[float]  # seconds / the seconds of one forward pass of the same model
    deletion_auc: float  # lower is more faithful
    insertion_auc: float  # higher is more faithful
    randomisation: Optional[float]  # rank correlation with the untrained twin's map (low is good)


def forward_seconds(model: Any, image: Any, repeats: int = 3) -> float:
    """Median seconds of one forward pass of ``model`` on ``image`` (the unit costs are given in)."""
    from vizlib.contract import as_model

    m = as_model(model)
    batch = m.raw_batch(image if isinstance(image, np.ndarray) else [image])[:1]
    m.run("attribution.scores", batch)  # warm (graphs built, caches filled)
    times = []
    for _ in range(max(1, int(repeats))):
        t0 = time.perf_counter()
        m.run("attribution.scores", batch)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def score_method(model: Any, image: Any, method: str, class_index: int, *, twin: Any = None,
                 unit_seconds: Optional[float] = None, layer: Optional[str] = None, seed: int = 0,
                 baseline: str = "black", steps: int = 20) -> MethodScore:
    """``method``'s map of ``class_index`` with its deletion / insertion AUC, its rank correlation with
    the map of ``twin`` (the untrained copy, :func:`vizlib.untrained`; None: not measured) and its cost."""
    from vizlib.attribution import METHOD_TITLES, attribution, faithfulness, rank_correlation

    if class_index is None:
        raise InputError("Give the class the maps explain.")
    t0 = time.perf_counter()
    sal = attribution(model, image, method, class_index=class_index, layer=layer, seed=seed, baseline=baseline)
    seconds = time.perf_counter() - t0
    f = faithfulness(model, image, sal, class_index=class_index, steps=steps)
    rho = None
    if twin is not None:
        other = attribution(twin, image, method, class_index=class_index, layer=layer, seed=seed, baseline=baseline)
        rho = rank_correlation(sal, other)
    return MethodScore(method=method, title=METHOD_TITLES[method], map=sal, class_index=int(class_index),
                       seconds=float(seconds), forward_units=None if not unit_seconds else seconds / unit_seconds,
                       deletion_auc=f["deletion_auc"], insertion_auc=f["insertion_auc"], randomisation=rho)
