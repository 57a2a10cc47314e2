"""The public explain API: one call per question, any model kind (each runs a model operation)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

from vizlib.errors import InputError


def _as_model(model: Any) -> Any:
    from vizlib.contract import as_model

    return as_model(model)


def _one(images: Any) -> list:
    """A PIL image (or a list of them, or a raw pixel array) -> what ``raw_batch`` takes."""
    if isinstance(images, np.ndarray):
        return images
    if isinstance(images, (list, tuple)):
        return list(images)
    return [images]


def _check_reply(r: dict, keys: Sequence[str]) -> dict:
    for k in keys:
        if k not in r:
            raise InputError("The model's process sent a reply the dashboard can't read.")
    return r


def final_layer(model: Any) -> str:
    """The name of the final feature map: the layer the classifier's pooling / flatten reads."""
    return str(_as_model(model).run("explain.describe", None)["final_layer"])


def gradcam_method(model: Any, layer: Optional[str] = None, *, method: Optional[str] = None) -> dict:
    """Which map :func:`gradcam` computes for ``layer``: ``method`` ("gradcam" / "layercam"),
    ``method_title``, ``layer``, ``final_layer``, ``is_final``, ``target`` ("logit": the class score
    before softmax, or "output") and a one-sentence ``description`` for a caption."""
    m = _as_model(model)
    return dict(m.run("explain.describe", None, layer=layer, method=method))


@dataclass
class ClassExplanation:
    """Everything one Grad-CAM request gives for one image (see :func:`explain_class`)."""

    cam: np.ndarray  # float32 (H, W) at the model's input size, [0, 1]
    layer_cam: np.ndarray  # float32 (h, w) at the layer's own size, [0, 1] (the values behind ``cam``)
    method: str  # "gradcam" or "layercam"
    method_title: str
    layer: str
    final_layer: str
    is_final: bool
    class_index: int
    class_name: str
    probability: float
    score: float  # the class score the gradient was taken of (logit, or output when there is no softmax)
    target: str  # "logit" or "output"
    probabilities: np.ndarray  # (classes,)
    contributions: np.ndarray  # (channels,) mean of gradient x activation, per channel of ``layer``
    weights: np.ndarray  # (channels,) mean gradient per channel (Grad-CAM's weights)
    mean_activation: np.ndarray  # (channels,)
    description: str
    reused_features: bool = False  # True when the forward pass up to ``layer`` came from the cache
    empty: bool = field(default=False)  # True when the map is all zero (no positive evidence)
    #: The maps of ``layer`` for this image (h, w, channels) and the model's output (classes,), from the
    #: same forward pass: what the page shows beside the map, with no second forward pass.
    activations: Optional[np.ndarray] = field(default=None, repr=False)
    output: Optional[np.ndarray] = field(default=None, repr=False)

    def ranked_channels(self, n: Optional[int] = None) -> list[dict]:
        """Channels of ``layer`` by contribution to the class, largest first."""
        return _ranked(self.contributions, self.weights, self.mean_activation, n)

    def top_classes(self, n: int = 5) -> list[tuple[int, str, float]]:
        """(index, name, probability) of the ``n`` most likely classes."""
        order = np.argsort(-self.probabilities, kind="stable")[:n]
        return [(int(i), self._names[i] if self._names else f"class {i}", float(self.probabilities[i]))
                for i in order]

    _names: Optional[list[str]] = field(default=None, repr=False)


def _ranked(contrib: np.ndarray, weights: np.ndarray, mean_act: np.ndarray, n: Optional[int]) -> list[dict]:
    order = np.argsort(-contrib, kind="stable")
    if n is not None:
        order = order[: max(0, int(n))]
    total = float(np.abs(contrib).sum()) or 1.0
    return [{"channel": int(k), "contribution": float(contrib[k]), "share": float(contrib[k]) / total,
             "mean_gradient": float(weights[k]), "mean_activation": float(mean_act[k])} for k in order]


def explain_class(model: Any, image: Any, class_index: Optional[int] = None, layer: Optional[str] = None, *,
                  method: Optional[str] = None) -> ClassExplanation:
    """Grad-CAM (or LayerCAM), channel contributions and the prediction for one image, from one request.

    ``class_index=None`` explains the top predicted class; ``layer=None`` uses the
    final feature map. Asking again for another class of the same image reuses the
    forward pass up to ``layer`` (only the head and its gradient run again).
    """
    m = _as_model(model)
    batch = m.raw_batch(_one(image))[:1]
    r = _check_reply(m.run("explain.gradcam", batch, layer=layer,
                           class_index=None if class_index is None else int(class_index), method=method),
                     ("cam", "layer_cam", "class_index", "probabilities", "contributions", "weights"))
    c = int(r["class_index"][0])
    names = m.class_names if m.class_names and len(m.class_names) == r["probabilities"].shape[1] else None
    return ClassExplanation(
        cam=np.asarray(r["cam"][0], dtype=np.float32), layer_cam=np.asarray(r["layer_cam"][0], dtype=np.float32),
        method=r["method"], method_title=r["method_title"], layer=r["layer"], final_layer=r["final_layer"],
        is_final=bool(r["is_final"]), class_index=c, class_name=names[c] if names else f"class {c}",
        probability=float(r["probabilities"][0][c]), score=float(r["scores"][0][c]), target=r["target"],
        probabilities=np.asarray(r["probabilities"][0], dtype=np.float32),
        contributions=np.asarray(r["contributions"][0], dtype=np.float32),
        weights=np.asarray(r["weights"][0], dtype=np.float32),
        mean_activation=np.asarray(r["mean_activation"][0], dtype=np.float32), description=r["description"],
        reused_features=bool(r.get("reused_features", False)), empty=float(r["raw_peak"][0]) <= 0.0, _names=names,
        activations=np.asarray(r["activations"][0], dtype=np.float32) if "activations" in r else None,
        output=np.asarray(r["output"][0], dtype=np.float32) if "output" in r else None,
    )


def gradcam(model: Any, image: Any, class_index: Optional[int] = None, layer: Optional[str] = None, *,
            method: Optional[str] = None) -> np.ndarray:
    """Where the model looked for a class: float32 (H, W) at the model's input size, values in [0, 1].

    ``class_index=None``: the top predicted class. ``layer=None``: the final feature
    map, with Grad-CAM; at other layers LayerCAM (``method`` overrides;
    :func:`gradcam_method` says which). The maximum is 1 unless the map is all
    zero (no positive evidence for the class at that layer).
    """
    return explain_class(model, image, class_index, layer, method=method).cam


def channel_contributions(model: Any, image: Any, class_index: Optional[int] = None, layer: Optional[str] = None,
                          *, top: Optional[int] = None) -> list[dict]:
    """Channels of the final feature map (or ``layer``) ranked by their contribution to the class.

    Contribution = mean over positions of gradient x activation (the class score's
    first-order share carried by that channel). Each dict: ``channel``,
    ``contribution``, ``share`` (of the total absolute contribution),
    ``mean_gradient``, ``mean_activation``.
    """
    return explain_class(model, image, class_index, layer).ranked_channels(top)


def receptive_field(model: Any, layer: str, row: int, col: int) -> tuple[int, int, int, int]:
    """The input pixels cell (``row``, ``col``) of ``layer`` sees: ``(top, left, bottom, right)``.

    Bottom and right are exclusive; the box is clipped to the input (as the model
    sees it, at its input size). Computed from the layer graph: kernels, strides,
    "same" padding offsets, dilation, pooling, padding/cropping, upsampling,
    branches (union) and nested models. Branches through global pooling
    (squeeze-and-excitation) are left out: :func:`receptive_field_info` flags them.
    """
    return tuple(receptive_field_info(model, layer, row, col)["box"])  # type: ignore[return-value]


def receptive_field_info(model: Any, layer: str, row: int, col: int) -> dict:
    """:func:`receptive_field` with details: ``box``, ``size`` / ``size_hw`` (theoretical, unclipped),
    ``jump_hw`` (input pixels between neighbouring cells), ``global_context``, ``input_size``."""
    m = _as_model(model)
    r = _check_reply(m.run("explain.receptive_field", None, layer=str(layer), row=int(row), col=int(col)), ("box",))
    r["box"] = tuple(int(v) for v in r["box"])
    return r


def depth_profile(model: Any, image: Any) -> list[dict]:
    """One dict per spatial layer in forward order, from ONE forward pass for all of them.

    Keys: ``index``, ``name``, ``kind``, ``height``, ``width``, ``channels``,
    ``receptive_field`` (theoretical, pixels on one side, unclipped; None past a
    layer whose geometry is unknown), ``receptive_field_hw``, ``jump`` (input
    pixels between neighbouring cells), ``dead_fraction`` (share of channels that
    are all zero for this image), ``mean``, ``mean_abs``, ``sparsity`` (share of
    exactly-zero activations), ``max``, ``global_context``.
    """
    m = _as_model(model)
    batch = m.raw_batch(_one(image))[:1]
    r = _check_reply(m.run("explain.depth_profile", batch), ("names", "stats", "shapes", "receptive_field"))
    stats = np.asarray(r["stats"])[0]
    rows = []
    for i, name in enumerate(r["names"]):
        h, w, c = r["shapes"][i]
        row = {"index": int(r["indices"][i]), "name": name, "kind": r["kinds"][i], "height": int(h),
               "width": int(w), "channels": int(c), "receptive_field": r["receptive_field"][i],
               "receptive_field_hw": r["receptive_field_hw"][i], "jump": r["jump_hw"][i],
               "global_context": bool(r["global_context"][i])}
        row.update({s: float(stats[i, j]) for j, s in enumerate(r["stat_names"])})
        rows.append(row)
    return rows


def conv_arithmetic(model: Any, image: Any, row: int, col: int, channel: int = 0,
                    layer: Optional[str] = None) -> dict:
    """How one value of the first convolution (or ``layer``, a Conv2D) is made, for teaching.

    Returns the ``patch`` of the layer's input the kernel covers (zeros where it
    hangs over the padding), the ``kernel`` weights for ``channel``, their
    ``products``, ``bias``, ``pre_activation`` (the sum + bias), ``activation`` (its
    name) and ``value`` (after it), and ``model_value``, the value the model itself
    computed (equal up to float rounding), plus where the patch sits (``input_rows``,
    ``input_cols``; -1 for padding) and the input pixel ``box`` it sees.
    """
    m = _as_model(model)
    batch = m.raw_batch(_one(image))[:1]
    r = m.run("explain.conv_arithmetic", batch, row=int(row), col=int(col), channel=int(channel), layer=layer)
    return _check_reply(dict(r), ("patch", "kernel", "pre_activation", "value"))


def model_view_array(model: Any, image: Any) -> np.ndarray:
    """The image as the model sees it (resized, grey for a greyscale model) as uint8 (H, W) or (H, W, 3)."""
    m = _as_model(model)
    raw = m.raw_batch(_one(image))[0]
    arr = np.clip(np.rint(raw), 0, 255).astype(np.uint8)
    return arr[..., 0] if arr.shape[-1] == 1 else arr
