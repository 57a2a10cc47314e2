"""Which explanation to trust: the common attribution methods, each measured on your image.

One call per map, one call per measurement::

    import vizlib
    m = vizlib.load_model("vgg16")
    img = vizlib.load_sample("cat")
    sal = vizlib.attribution(m, img, "integrated_gradients", baseline="blurred")
    vizlib.faithfulness(m, img, sal)        # {"deletion_auc": ..., "insertion_auc": ...}

Methods (:data:`METHODS`): ``"gradcam"``, ``"gradcam++"``, ``"scorecam"``,
``"layercam"`` (the CAM family: a map at a layer, upsampled); ``"saliency"``,
``"smoothgrad"``, ``"integrated_gradients"`` (input gradients); ``"occlusion"``.
All differentiate or evaluate the same class score as Grad-CAM: the logit before
a final softmax / sigmoid (the model's output when it has neither).
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from vizlib.attribution.baselines import BASELINE_TITLES, BASELINES, blur, check_baseline
from vizlib.attribution.faithfulness import faithfulness, rank_correlation
from vizlib.attribution.methods import (
    METHOD_TITLES, METHODS, Attribution, GradCAM, GradCAMPlusPlus, IntegratedGradients, LayerCAM, Occlusion,
    Saliency, ScoreCAM, SmoothGrad, method_class,
)
from vizlib.arguments import check_seed
from vizlib.errors import InputError


def attribution(model: Any, image: Any, method: str, *, class_index: Optional[int] = None,
                layer: Optional[str] = None, seed: int = 0, normalize: bool = True,
                baseline: str = "black") -> np.ndarray:
    """Which pixels made the class score what it is, by ``method``: float32 (H, W) at the model's input size.

    ``model``: anything :func:`vizlib.load_model` accepts or returns (an uploaded
    model computes in its own process, with the same result). ``image``: a PIL
    image or a raw pixel array (H, W, C), 0..255. ``class_index=None``: the top
    class. The class score is Grad-CAM's: the logit before a final softmax /
    sigmoid, or the output when the model has neither. ``layer``: where the CAM
    family cuts the model (None: the final feature map). ``seed``: SmoothGrad's
    noise and the ``"noise"`` baseline (same seed, same map). ``baseline``
    (``"black"``: raw pixels 0; ``"blurred"``; ``"noise"``): what Integrated
    Gradients integrates from and occlusion's patches are filled with.

    ``normalize=True``: values in [0, 1], the map divided by its maximum (the
    positive part for the CAM family and occlusion, the magnitude for the gradient
    methods; an all-zero map stays zero). ``normalize=False``: the raw signed
    attribution summed over colour channels (for the CAM family, the ReLU'd map
    upsampled; for occlusion, the mean drop of the class score).
    """
    from vizlib.contract import as_model

    cls = method_class(method)
    check_baseline(baseline)
    m = as_model(model)
    batch = m.raw_batch(image if isinstance(image, np.ndarray) else [image])[:1]
    r = m.run(f"attribution.{cls.op_name}", batch, class_index=_whole(class_index, "class_index"),
              layer=layer, seed=check_seed(seed), baseline=baseline)
    if "raw" not in r or "map" not in r:
        raise InputError("The model's process sent a reply the dashboard can't read.")
    return np.asarray(r["map" if normalize else "raw"][0], dtype=np.float32)


def _whole(value: Any, name: str) -> Optional[int]:
    """``value`` as a plain int (numpy integers don't cross to an uploaded model's process), None kept."""
    if value is None:
        return None
    if isinstance(value, (bool, float)) or not isinstance(value, (int, np.integer)):
        raise InputError(f"{name} must be a whole number, not {value!r}.")
    return int(value)


from vizlib.attribution.scoreboard import MethodScore, forward_seconds, score_method  # noqa: E402

__all__ = [
    "attribution", "faithfulness", "rank_correlation", "METHODS", "METHOD_TITLES", "BASELINES", "BASELINE_TITLES",
    "blur", "Attribution", "GradCAM", "GradCAMPlusPlus", "ScoreCAM", "LayerCAM", "Saliency", "SmoothGrad",
    "IntegratedGradients", "Occlusion", "method_class", "MethodScore", "score_method", "forward_seconds",
]
