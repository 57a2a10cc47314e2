"""Grad-CAM and LayerCAM: the class score, the model split at a layer (trunk + head), the map.

Grad-CAM for a layer ``L`` needs the forward pass up to ``L`` (the same for every
class) and a backward pass from the class score to ``L`` (per class). The model is
split at ``L`` into a *trunk* (input -> L's output, plus any tensor that bypasses
``L``, e.g. a residual shortcut) and a *head* (those tensors -> the class scores).
The trunk's outputs are cached per (layer, image), so switching the class reruns
only the head and its gradient, never the convolutional trunk. The building blocks
(:func:`class_scores`, :func:`layer_features`, :func:`class_probabilities`,
:func:`resize_maps`) are public so that :mod:`vizlib.attribution` differentiates
the same class score and cuts the model the same way.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from vizlib import permodel
from vizlib.errors import InputError
from vizlib.explain.common import activation_name, cached, keras_model, run_lock
from vizlib.explain.safety import check_gradients_safe
from vizlib.layers import find_layer, trace
from vizlib.ops import op
from vizlib.receptive import layer_graph, producer

#: Methods :func:`gradcam` knows. "auto": Grad-CAM at the final feature map, LayerCAM elsewhere.
METHODS = ("gradcam", "layercam")
METHOD_TITLES = {"gradcam": "Grad-CAM", "layercam": "LayerCAM"}
#: Class-independent results kept per model (one entry per (layer, image batch)) ...
MAX_CACHED_FEATURES = 4
#: ... and at most this many bytes of them per model (the newest entry always stays, if it fits alone).
MAX_CACHED_FEATURE_BYTES = 64 * 2**20
#: Split models (trunk + head) kept per model.
MAX_PLANS_PER_MODEL = 8

_PLANS = permodel.Slot("explain.plans")
_FEATURES = permodel.Slot("explain.features")


def clear_features() -> None:
    """Forget every cached trunk output (benchmarks that time a first request; :func:`vizlib.permodel.clear`
    forgets everything)."""
    _FEATURES.clear()


def _digest(batch: np.ndarray) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(str(batch.shape).encode())
    h.update(np.ascontiguousarray(batch, dtype=np.float32).tobytes())
    return h.hexdigest()



# --------------------------------------------------------------------------- final feature map, class score


def final_feature_map_name(m: Any) -> str:
    """The layer the classifier's global pooling / flatten reads (:func:`vizlib.layers.final_feature_map`)."""
    from vizlib.layers import final_feature_map

    return final_feature_map(keras_model(m)).name


@dataclass
class _Score:
    """How to get the class score (the logit before softmax / sigmoid) from the traced graph."""

    pre: Any  # symbolic tensor the head ends at
    finish: Optional[Any]  # the final Dense layer to apply linearly to ``pre``, or None
    squash: str  # "softmax", "sigmoid" or "none" (the output is taken as it is)
    n_classes: int


def _score(km: Any) -> _Score:
    def build() -> _Score:
        import keras
        from keras import tree

        tr = trace(km)
        flat = tree.flatten(tr.final)
        if len(flat) != 1 or len(flat[0].shape) != 2 or not flat[0].shape[-1]:
            raise InputError("Grad-CAM needs a model with one output of class scores, shape (batch, classes); "
                             "this model's output is different.")
        final = flat[0]
        n = int(final.shape[-1])
        operation, ins = producer(final)
        act = activation_name(getattr(operation, "activation", None)) if operation is not None else ""
        if isinstance(operation, keras.layers.Softmax):
            act = "softmax"
        if act == "softmax" and n == 1:
            raise InputError("This model's output is a softmax over one class: it is 1 whatever the image, so there "
                             "is no class score to explain. A one-class (yes/no) classifier needs a sigmoid output.")
        if act in ("softmax", "sigmoid") and len(ins) == 1:
            if isinstance(operation, (keras.layers.Activation, keras.layers.Softmax)):
                return _Score(ins[0], None, act, n)
            if isinstance(operation, keras.layers.Dense) and len(ins[0].shape) == 2:
                return _Score(ins[0], operation, act, n)
        return _Score(final, None, "none", n)

    return cached(km, "score", build)


def _apply_finish(score: _Score, pre: Any) -> Any:
    if score.finish is None:
        return pre
    from keras import ops

    z = ops.matmul(pre, score.finish.kernel)
    if getattr(score.finish, "use_bias", False) and score.finish.bias is not None:
        z = z + score.finish.bias
    return z


def _model_output(score: _Score, logits: Any) -> np.ndarray:
    """The model's output from the class scores, as the model's last layer computes it (float32)."""
    from keras import ops

    if score.squash == "softmax":
        return np.asarray(ops.softmax(logits, axis=-1), dtype=np.float32)
    if score.squash == "sigmoid":
        return np.asarray(ops.sigmoid(logits), dtype=np.float32)
    return np.asarray(logits, dtype=np.float32)


def _probabilities(score: _Score, logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64)
    if score.squash == "softmax":
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
    if score.squash == "sigmoid":
        return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)
    from vizlib.extract import probabilities

    return np.asarray(probabilities(z), dtype=np.float32)


# --------------------------------------------------------------------------- trunk + head


@dataclass
class _Plan:
    """The model split at one layer: trunk (input -> A + crossing tensors), head (those -> class score)."""

    layer: str
    trunk: Any
    head: Any
    n_cross: int


def _plan(m: Any, layer: str) -> _Plan:
    km = keras_model(m)
    return permodel.cached(km, _PLANS, layer, lambda: _build_plan(km, layer), max_entries=MAX_PLANS_PER_MODEL)


def _build_plan(km: Any, layer: str) -> _Plan:
    import keras

    tr = trace(km)
    g = layer_graph(km)
    score = _score(km)
    a_id = id(tr.outputs[layer])
    depends: dict[int, bool] = {}
    for tid in g.order:
        depends[tid] = tid == a_id or any(depends.get(i, False) for i in g.inputs[tid])
    pre_id = id(score.pre)
    if not depends.get(pre_id, False):
        raise InputError(f"Layer '{layer}' does not lead to the model's output, so it has no gradient for a class.")
    crossing: set[int] = set()
    seen: set[int] = set()
    stack = [pre_id]
    while stack:
        tid = stack.pop()
        if tid in seen or tid == a_id:
            continue
        seen.add(tid)
        if not depends[tid]:
            crossing.add(tid)
            continue
        stack.extend(g.inputs[tid])
    cross = sorted(crossing, key=lambda t: g.pos[t])
    head_inputs = [tr.outputs[layer]] + [g.tensor[t] for t in cross]
    try:
        head = keras.Model(head_inputs if cross else head_inputs[0], score.pre, name="vizlib_cam_head")
        trunk = keras.Model(tr.input, head_inputs, name="vizlib_cam_trunk")
    except Exception as exc:  # noqa: BLE001 - a graph Keras can't cut here
        raise InputError(f"Could not split this model at layer '{layer}' for Grad-CAM ({exc}).") from exc
    return _Plan(layer=layer, trunk=trunk, head=head, n_cross=len(cross))


def _trunk_outputs(m: Any, plan: _Plan, batch: np.ndarray) -> tuple[list[np.ndarray], bool]:
    """(trunk outputs, from cache?) for this batch: the class-independent half of the work."""
    km = keras_model(m)
    key = (plan.layer, _digest(batch))
    with permodel.LOCK:
        feats = _FEATURES.setdefault(km, OrderedDict())
        found = feats.get(key)
        if found is not None:
            feats.move_to_end(key)
            return found, True
    with run_lock(km):
        out = plan.trunk(batch, training=False)
    out = [np.asarray(o, dtype=np.float32) for o in (out if isinstance(out, (list, tuple)) else [out])]
    if sum(o.nbytes for o in out) <= MAX_CACHED_FEATURE_BYTES:
        with permodel.LOCK:
            feats = _FEATURES.setdefault(km, OrderedDict())
            feats[key] = out
            while len(feats) > 1 and (len(feats) > MAX_CACHED_FEATURES or sum(
                    o.nbytes for entry in feats.values() for o in entry) > MAX_CACHED_FEATURE_BYTES):
                feats.popitem(last=False)
    return out, False


def _resize(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(N, h, w) -> (N, H, W), bilinear with half-pixel centres (as cv2 / tf.image.resize)."""
    import tensorflow as tf

    if maps.shape[1:] == tuple(size):
        return maps.astype(np.float32, copy=True)
    out = tf.image.resize(maps[..., None], size, method="bilinear")
    return np.asarray(out, dtype=np.float32)[..., 0]


def _normalise(maps: np.ndarray) -> np.ndarray:
    """Each map to [0, 1] by its maximum (all-zero maps stay zero)."""
    maps = np.maximum(np.nan_to_num(maps.astype(np.float32, copy=False)), 0.0)
    peak = maps.reshape(len(maps), -1).max(axis=1)
    scale = np.where(peak > 0, peak, 1.0).astype(np.float32)
    return np.clip(maps / scale[:, None, None], 0.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------- building blocks for other methods
# Public so that vizlib.attribution (Grad-CAM++, Score-CAM, gradients, occlusion) differentiates the
# same class score, cuts the model the same way and refuses gradients by the same rule as Grad-CAM.


def class_scores(m: Any, inputs: Any, *, layer: Optional[str] = None) -> Any:
    """The class scores Grad-CAM differentiates, as a differentiable tensor (N, classes).

    The score is the logit before a final softmax / sigmoid (or the output itself
    when the model has neither). ``layer=None``: ``inputs`` is a batch of model
    inputs (preprocessed). Otherwise ``inputs`` is :func:`layer_features` of
    ``layer``: the model is cut there, as for Grad-CAM.
    """
    km = keras_model(m)
    score = _score(km)
    if layer is None:
        import keras

        body = cached(km, "score_body", lambda: keras.Model(trace(km).input, score.pre, name="vizlib_score"))
        return _apply_finish(score, body(inputs, training=False))
    plan = _plan(m, layer)
    xs = list(inputs)
    return _apply_finish(score, plan.head(xs if len(xs) > 1 else xs[0], training=False))


def layer_features(m: Any, batch: np.ndarray, layer: str) -> list[np.ndarray]:
    """The model up to ``layer`` for ``batch``: [layer's output, tensors bypassing it...] (cached per image)."""
    return _trunk_outputs(m, _plan(m, layer), batch)[0]


def feature_tensors(m: Any, layer: str) -> list:
    """The symbolic tensors :func:`layer_features` computes for ``layer`` (its output first, then the
    tensors bypassing it): for a traced function that takes them from a larger forward pass."""
    return list(_plan(m, layer).trunk.outputs)


def model_output(m: Any, scores: Any) -> np.ndarray:
    """Class scores (N, classes) -> the model's own output from them (its final softmax / sigmoid, if any)."""
    return _model_output(_score(keras_model(m)), scores)


def probability_missing(m: Any) -> Optional[str]:
    """Why the model reports no class probability (a single output without softmax or sigmoid: a regression),
    or None when it does. Measures built on a probability (deletion / insertion) can't run without one."""
    score = _score(keras_model(m))
    if score.squash == "none" and score.n_classes == 1:
        return ("This model's one output has no sigmoid or softmax, so it reports no class probability, and "
                "deletion / insertion measure how a probability falls and rises. If it is a yes/no classifier's "
                "logit, save the model with a sigmoid at the end (Dense(1, activation='sigmoid')).")
    return None


def class_probabilities(m: Any, scores: np.ndarray) -> np.ndarray:
    """Class scores (N, classes) -> the probabilities the model reports (softmax / sigmoid of the logits)."""
    return _probabilities(_score(keras_model(m)), scores)


def resize_maps(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(N, h, w) -> (N, H, W), bilinear with half-pixel centres: how every map reaches the input size."""
    return _resize(maps, size)


def _method_for(is_final: bool, method: Optional[str]) -> str:
    if method in (None, "", "auto"):
        return "gradcam" if is_final else "layercam"
    name = str(method).lower().replace("-", "").replace("_", "")
    if name not in METHODS:
        raise InputError(f"Unknown method '{method}'. Use 'gradcam', 'layercam' or None (automatic).")
    return name


def _describe(m: Any, layer: Optional[str], method: Optional[str]) -> dict:
    final = final_feature_map_name(m)
    name = final if layer in (None, "") else str(layer)
    info = find_layer(keras_model(m), name)
    is_final = name == final
    chosen = _method_for(is_final, method)
    try:
        squash: Optional[str] = _score(keras_model(m)).squash
    except InputError:  # not a classifier: the layers still have a final map, there is just no class score
        squash = None
    if chosen == "gradcam":
        text = ("Grad-CAM: each channel of the map weighted by the mean gradient of the class score over it, "
                "summed, negatives dropped.")
    else:
        text = ("LayerCAM: each position of each channel weighted by its own positive gradient of the class "
                "score, summed, negatives dropped; it stays meaningful at early layers, where Grad-CAM's "
                "averaged weights do not.")
    return {
        "layer": name, "method": chosen, "method_title": METHOD_TITLES[chosen], "final_layer": final,
        "is_final": is_final, "layer_shape": list(info.output_shape),
        "target": None if squash is None else "logit" if squash in ("softmax", "sigmoid") else "output",
        "description": text,
    }


@op("explain.describe")
def _describe_op(m: Any, batch: Optional[np.ndarray], *, layer: Optional[str] = None,
                 method: Optional[str] = None) -> dict:
    return _describe(m, layer, method)


@op("explain.gradcam")
def _gradcam_op(m: Any, batch: np.ndarray, *, layer: Optional[str] = None, class_index: Optional[int] = None,
                method: Optional[str] = None) -> dict:
    """Class activation map, channel contributions and the prediction, for each image of ``batch``."""
    if batch is None or len(batch) == 0:
        raise InputError("No image given.")
    check_gradients_safe()
    import tensorflow as tf

    desc = _describe(m, layer, method)
    km = keras_model(m)
    score = _score(km)
    plan = _plan(m, desc["layer"])
    feats, reused = _trunk_outputs(m, plan, batch)
    if class_index is not None and not 0 <= int(class_index) < score.n_classes:
        raise InputError(f"Class index {class_index} is out of range: this model has classes 0 to "
                         f"{score.n_classes - 1}.")
    with run_lock(km):
        xs = [tf.convert_to_tensor(f) for f in feats]
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(xs[0])
            pre = plan.head(xs if len(xs) > 1 else xs[0], training=False)
            logits = _apply_finish(score, pre)
            chosen = (np.argmax(np.asarray(logits), axis=1) if class_index is None
                      else np.full(len(batch), int(class_index)))
            picked = tf.gather(logits, tf.constant(chosen, dtype=tf.int32), axis=1, batch_dims=1)
            target = tf.reduce_sum(picked)
        grads = tape.gradient(target, xs[0])
    acts = feats[0]
    g = np.zeros_like(acts) if grads is None else np.asarray(grads, dtype=np.float32)
    weights = g.mean(axis=(1, 2))
    contributions = (g * acts).mean(axis=(1, 2))
    if desc["method"] == "gradcam":
        raw = np.einsum("nhwk,nk->nhw", acts, weights)
    else:
        raw = (np.maximum(g, 0.0) * acts).sum(axis=-1)
    layer_cam = _normalise(raw)
    cam = _normalise(_resize(np.maximum(raw, 0.0), tuple(m.input_size)))
    logits_np = np.asarray(logits, dtype=np.float32)
    return {
        # What this one forward pass already holds, so the page needs no second one for the same image:
        # the layer's maps and the model's own output (its final softmax / sigmoid on the class scores).
        "activations": acts, "output": _model_output(score, logits),
        **desc,
        "cam": cam, "layer_cam": layer_cam, "raw_peak": np.maximum(raw, 0).reshape(len(raw), -1).max(axis=1),
        "class_index": [int(c) for c in chosen],
        "scores": logits_np, "probabilities": _probabilities(score, logits_np),
        "contributions": contributions.astype(np.float32), "weights": weights.astype(np.float32),
        "mean_activation": acts.mean(axis=(1, 2)).astype(np.float32),
        "reused_features": bool(reused),
    }

