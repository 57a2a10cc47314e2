"""Why this prediction? Grad-CAM, channel contributions, receptive fields, the depth profile.

The questions people bring to a CNN after "what does each layer respond to":

* **Where did the model look for a class?** :func:`gradcam` (Grad-CAM at the
  final feature map, LayerCAM at earlier layers, where Grad-CAM's channel
  averages stop meaning much; :func:`gradcam_method` says which is used).
* **Which channels carried the decision?** :func:`channel_contributions`:
  the mean of gradient x activation per channel, ranked.
* **What does one cell of a map see?** :func:`receptive_field`, from the
  layer graph (kernels, strides, "same" padding offsets, dilation, pooling,
  branches and nested models), and for the first convolution the arithmetic
  that made one value (:func:`conv_arithmetic`).
* **What does each layer see, over the whole depth?** :func:`depth_profile`:
  size, channels, receptive field, dead channels, mean and sparsity for every
  spatial layer, from one forward pass.

Every computation is an operation (:mod:`vizlib.ops`) on the Keras model, so it
runs in this process for an in-process model and in the child process of an
uploaded model; the public functions take anything :func:`vizlib.load_model`
accepts or returns.

**Reusing work when only the class changes.** Grad-CAM for a layer ``L`` needs
the forward pass up to ``L`` (the same for every class) and a backward pass
from the class score to ``L`` (per class). The model is split at ``L`` into a
*trunk* (input -> L's output, plus any tensor that bypasses ``L``, e.g. a
residual shortcut) and a *head* (those tensors -> the class scores). The
trunk's outputs are cached per (layer, image), so switching the class reruns
only the head and its gradient, never the convolutional trunk.

**Gradients on TensorFlow 2.21 / CPU.** With oneDNN on, some input gradients
corrupt the heap and abort the process; vizlib turns oneDNN off when it is
imported before TensorFlow. If TensorFlow was imported first with oneDNN on,
gradient functions here refuse to run (:class:`GradientsUnsafe`) rather than
risk the process.
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np

# As vizlib/__init__ does: oneDNN off if TensorFlow isn't loaded yet (see the module doc).
if "tensorflow" not in sys.modules:
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

from vizlib.errors import InputError  # noqa: E402
from vizlib.layers import find_layer, trace  # noqa: E402
from vizlib.ops import op  # noqa: E402
from vizlib.receptive import (  # noqa: E402
    box_of, check_channels_last, dependence_masks, layer_graph, producer, spatial_shape, theoretical, windows,
)

#: Methods :func:`gradcam` knows. "auto": Grad-CAM at the final feature map, LayerCAM elsewhere.
METHODS = ("gradcam", "layercam")
METHOD_TITLES = {"gradcam": "Grad-CAM", "layercam": "LayerCAM"}
#: Class-independent results kept per model (one entry per (layer, image batch)) ...
MAX_CACHED_FEATURES = 4
#: ... and at most this many bytes of them per model (the newest entry always stays, if it fits alone).
MAX_CACHED_FEATURE_BYTES = 64 * 2**20
#: Split models (trunk + head) kept per model.
MAX_PLANS_PER_MODEL = 8

class GradientsUnsafe(RuntimeError):
    """TensorFlow runs with oneDNN on, where input gradients can abort the process (see the module doc)."""


# --------------------------------------------------------------------------- small helpers


def _km(m: Any) -> Any:
    return getattr(m, "model", m)


def _run_lock(km: Any) -> threading.Lock:
    from vizlib import extract

    return extract.run_lock(km)


_CACHE_LOCK = threading.Lock()
_PER_MODEL: "weakref.WeakKeyDictionary[Any, dict]" = weakref.WeakKeyDictionary()


def _model_cache(km: Any) -> dict:
    """Per-Keras-model cache of graphs, plans and features (dies with the model)."""
    with _CACHE_LOCK:
        found = _PER_MODEL.get(km)
        if found is None:
            found = _PER_MODEL[km] = {"plans": OrderedDict(), "features": OrderedDict(), "lock": threading.Lock()}
        return found


def _cached(km: Any, key: Any, build: Callable[[], Any]) -> Any:
    cache = _model_cache(km)
    with cache["lock"]:
        if key in cache:
            return cache[key]
    value = build()
    with cache["lock"]:
        return cache.setdefault(key, value)


def _digest(batch: np.ndarray) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(str(batch.shape).encode())
    h.update(np.ascontiguousarray(batch, dtype=np.float32).tobytes())
    return h.hexdigest()


def onednn_enabled() -> bool:
    """Whether the running TensorFlow uses oneDNN kernels (as decided when it was imported)."""
    try:
        from tensorflow.python.util import _pywrap_util_port
    except Exception:  # noqa: BLE001 - a TensorFlow without this probe: trust the environment
        return os.environ.get("TF_ENABLE_ONEDNN_OPTS", "") not in ("0", "false", "False")
    return bool(_pywrap_util_port.IsMklEnabled())


def _check_gradients_safe() -> None:
    if os.environ.get("CNN_VIZ_ALLOW_ONEDNN_GRADIENTS") == "1":
        return
    if onednn_enabled():
        raise GradientsUnsafe(
            "TensorFlow was imported with oneDNN on, and on TensorFlow 2.21 / CPU some gradients then "
            "corrupt memory and abort the process. Import vizlib before tensorflow or keras (it turns "
            "oneDNN off), or set TF_ENABLE_ONEDNN_OPTS=0 before starting Python."
        )


# --------------------------------------------------------------------------- final feature map, class score


def _final_feature_map_name(m: Any) -> str:
    """The layer the classifier's global pooling / flatten reads (:func:`vizlib.layers.final_feature_map`)."""
    from vizlib.layers import final_feature_map

    return final_feature_map(_km(m)).name


def _activation_name(fn: Any) -> str:
    return str(getattr(fn, "__name__", type(fn).__name__)).lower()


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
        act = _activation_name(getattr(operation, "activation", None)) if operation is not None else ""
        if isinstance(operation, keras.layers.Softmax):
            act = "softmax"
        if act in ("softmax", "sigmoid") and len(ins) == 1:
            if isinstance(operation, (keras.layers.Activation, keras.layers.Softmax)):
                return _Score(ins[0], None, act, n)
            if isinstance(operation, keras.layers.Dense) and len(ins[0].shape) == 2:
                return _Score(ins[0], operation, act, n)
        return _Score(final, None, "none", n)

    return _cached(km, "score", build)


def _apply_finish(score: _Score, pre: Any) -> Any:
    if score.finish is None:
        return pre
    from keras import ops

    z = ops.matmul(pre, score.finish.kernel)
    if getattr(score.finish, "use_bias", False) and score.finish.bias is not None:
        z = z + score.finish.bias
    return z


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
    km = _km(m)
    cache = _model_cache(km)
    with cache["lock"]:
        found = cache["plans"].get(layer)
        if found is not None:
            cache["plans"].move_to_end(layer)
            return found
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
    plan = _Plan(layer=layer, trunk=trunk, head=head, n_cross=len(cross))
    with cache["lock"]:
        cache["plans"][layer] = plan
        while len(cache["plans"]) > MAX_PLANS_PER_MODEL:
            cache["plans"].popitem(last=False)
    return plan


def _trunk_outputs(m: Any, plan: _Plan, batch: np.ndarray) -> tuple[list[np.ndarray], bool]:
    """(trunk outputs, from cache?) for this batch: the class-independent half of the work."""
    km = _km(m)
    cache = _model_cache(km)
    key = (plan.layer, _digest(batch))
    with cache["lock"]:
        found = cache["features"].get(key)
        if found is not None:
            cache["features"].move_to_end(key)
            return found, True
    with _run_lock(km):
        out = plan.trunk(batch, training=False)
    out = [np.asarray(o, dtype=np.float32) for o in (out if isinstance(out, (list, tuple)) else [out])]
    if sum(o.nbytes for o in out) <= MAX_CACHED_FEATURE_BYTES:
        with cache["lock"]:
            feats = cache["features"]
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


def check_gradients_safe() -> None:
    """Raise :class:`GradientsUnsafe` when input gradients could abort the process (see the module doc)."""
    _check_gradients_safe()


def class_scores(m: Any, inputs: Any, *, layer: Optional[str] = None) -> Any:
    """The class scores Grad-CAM differentiates, as a differentiable tensor (N, classes).

    The score is the logit before a final softmax / sigmoid (or the output itself
    when the model has neither). ``layer=None``: ``inputs`` is a batch of model
    inputs (preprocessed). Otherwise ``inputs`` is :func:`layer_features` of
    ``layer``: the model is cut there, as for Grad-CAM.
    """
    km = _km(m)
    score = _score(km)
    if layer is None:
        import keras

        body = _cached(km, "score_body", lambda: keras.Model(trace(km).input, score.pre, name="vizlib_score"))
        return _apply_finish(score, body(inputs, training=False))
    plan = _plan(m, layer)
    xs = list(inputs)
    return _apply_finish(score, plan.head(xs if len(xs) > 1 else xs[0], training=False))


def layer_features(m: Any, batch: np.ndarray, layer: str) -> list[np.ndarray]:
    """The model up to ``layer`` for ``batch``: [layer's output, tensors bypassing it...] (cached per image)."""
    return _trunk_outputs(m, _plan(m, layer), batch)[0]


def class_probabilities(m: Any, scores: np.ndarray) -> np.ndarray:
    """Class scores (N, classes) -> the probabilities the model reports (softmax / sigmoid of the logits)."""
    return _probabilities(_score(_km(m)), scores)


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
    final = _final_feature_map_name(m)
    name = final if layer in (None, "") else str(layer)
    info = find_layer(_km(m), name)
    is_final = name == final
    chosen = _method_for(is_final, method)
    try:
        squash: Optional[str] = _score(_km(m)).squash
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
    _check_gradients_safe()
    import tensorflow as tf

    desc = _describe(m, layer, method)
    km = _km(m)
    score = _score(km)
    plan = _plan(m, desc["layer"])
    feats, reused = _trunk_outputs(m, plan, batch)
    if class_index is not None and not 0 <= int(class_index) < score.n_classes:
        raise InputError(f"Class index {class_index} is out of range: this model has classes 0 to "
                         f"{score.n_classes - 1}.")
    with _run_lock(km):
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
        **desc,
        "cam": cam, "layer_cam": layer_cam, "raw_peak": np.maximum(raw, 0).reshape(len(raw), -1).max(axis=1),
        "class_index": [int(c) for c in chosen],
        "scores": logits_np, "probabilities": _probabilities(score, logits_np),
        "contributions": contributions.astype(np.float32), "weights": weights.astype(np.float32),
        "mean_activation": acts.mean(axis=(1, 2)).astype(np.float32),
        "reused_features": bool(reused),
    }


# --------------------------------------------------------------------------- receptive fields


@op("explain.receptive_field")
def _receptive_field_op(m: Any, batch: Optional[np.ndarray], *, layer: str, row: int, col: int) -> dict:
    km = _km(m)
    info = find_layer(km, str(layer))
    h, w, _ = info.output_shape
    row, col = int(row), int(col)
    if not (0 <= row < h and 0 <= col < w):
        raise InputError(f"Layer '{layer}' is {h} x {w}; there is no cell at row {row}, column {col}.")
    rows, cols, extra = dependence_masks(km, info.name, row, col)
    theo = theoretical(km, info.name)
    return {
        "box": list(box_of(rows, cols)), "layer": info.name, "row": row, "col": col,
        "size": theo["size"] if theo else None, "size_hw": list(theo["size_hw"]) if theo else None,
        "jump_hw": list(theo["jump_hw"]) if theo else None, "global_context": bool(extra["global_context"]),
        "assumed_pointwise": extra["assumed_pointwise"], "unknown_layers": extra["unknown"],
        "input_size": list(spatial_shape(trace(km).input)),
    }


# --------------------------------------------------------------------------- depth profile

#: Statistics computed inside the graph per spatial layer, in this order.
PROFILE_STATS = ("mean", "mean_abs", "sparsity", "dead_fraction", "max")


def _profile_extractor(m: Any) -> tuple[Any, list[str], bool]:
    """(fn(batch) -> [per-layer stats..., output], layer names, with output?), built and traced once per model.

    The statistics are reduced inside the graph, so one call returns a few numbers per
    layer instead of every activation; and the whole graph runs as one ``tf.function``
    (a few hundred small reductions op by op in eager mode would cost more than the
    forward pass itself on a small model).
    """
    km = _km(m)

    def build() -> tuple[Any, list[str], bool]:
        import keras
        import tensorflow as tf
        from keras import ops

        tr = trace(km)
        names = [i.name for i in tr.layers if i.is_spatial]
        outs = []
        for name in names:
            x = ops.cast(tr.outputs[name], "float32")
            ax = (1, 2, 3)
            channel_peak = ops.max(ops.abs(x), axis=(1, 2))
            outs.append(ops.stack([
                ops.mean(x, axis=ax),
                ops.mean(ops.abs(x), axis=ax),
                ops.mean(ops.cast(ops.equal(x, 0.0), "float32"), axis=ax),
                ops.mean(ops.cast(ops.equal(channel_peak, 0.0), "float32"), axis=-1),
                ops.max(x, axis=ax),
            ], axis=-1))
        with_pred = len(km.outputs) == 1
        if with_pred:
            from vizlib.extract import _final_output

            outs.append(_final_output(m))
        model = keras.Model(tr.input, outs, name="vizlib_depth_profile")
        spec = tf.TensorSpec((None,) + tuple(int(d) for d in tr.input.shape[1:]), tr.input.dtype)
        fn = tf.function(lambda x: model(x, training=False), input_signature=[spec])
        return fn, names, with_pred

    return _cached(km, "profile", build)


@op("explain.depth_profile")
def _depth_profile_op(m: Any, batch: np.ndarray) -> dict:
    """Per spatial layer statistics for every image of ``batch``: ONE forward pass for all layers."""
    if batch is None or len(batch) == 0:
        raise InputError("No image given.")
    km = _km(m)
    ext, names, with_pred = _profile_extractor(m)
    with _run_lock(km):
        out = ext(np.asarray(batch, dtype=np.float32))
    out = list(out) if isinstance(out, (list, tuple)) else [out]
    stats = np.stack([np.asarray(o, dtype=np.float32) for o in out[: len(names)]], axis=1)  # (N, L, S)
    tr = trace(km)
    infos = {i.name: i for i in tr.layers}
    rf_sizes, rf_hw, jumps, global_ctx = [], [], [], []
    reaches_global = _global_context_flags(km)
    for name in names:
        theo = theoretical(km, name)
        rf_sizes.append(theo["size"] if theo else None)
        rf_hw.append(list(theo["size_hw"]) if theo else None)
        jumps.append(list(theo["jump_hw"]) if theo else None)
        global_ctx.append(bool(reaches_global.get(id(tr.outputs[name]), False)))
    result = {
        "names": names, "kinds": [infos[n].kind for n in names], "indices": [infos[n].index for n in names],
        "shapes": [list(infos[n].output_shape) for n in names], "stats": stats, "stat_names": list(PROFILE_STATS),
        "receptive_field": rf_sizes, "receptive_field_hw": rf_hw, "jump_hw": jumps, "global_context": global_ctx,
        "input_size": list(m.input_size),
    }
    if with_pred:
        result["output"] = np.asarray(out[-1], dtype=np.float32)
    return result


def _global_context_flags(km: Any) -> dict:
    """id -> whether a tensor depends on the whole input through a global pooling branch."""

    def build() -> dict:
        g = layer_graph(km)
        flags: dict = {}
        for tid in g.order:
            hw = spatial_shape(g.tensor[tid])
            flag = False
            for iid in g.inputs[tid]:
                in_hw = spatial_shape(g.tensor[iid])
                if flags.get(iid):
                    flag = True
                elif hw is not None and hw != (1, 1) and (in_hw is None or in_hw == (1, 1)) and iid != g.input_id:
                    flag = True
            flags[tid] = flag and hw is not None
        return flags

    return _cached(km, "global_flags", build)


# --------------------------------------------------------------------------- one convolution, by hand


def _first_plain_conv(km: Any) -> str:
    """The first Conv2D in forward order (depthwise / separable / transposed ones are skipped)."""
    import keras

    tr = trace(km)
    g = layer_graph(km)
    for info in tr.layers:
        if info.is_spatial and isinstance(g.op.get(id(tr.outputs[info.name])), keras.layers.Conv2D):
            return info.name
    raise InputError("This model has no plain Conv2D layer, so there is no convolution arithmetic to show.")


def input_channel_order(m: Any, channels: int) -> str:
    """The order of a model's input colour channels: "BGR" for models fed 'caffe'-style (VGG, ResNet50),
    "RGB" for other 3-channel inputs, "" otherwise (the conv arithmetic and the kernel pictures use it)."""
    pre_name = str(getattr(m, "preprocess_name", ""))
    bgr = channels == 3 and any(k in pre_name for k in ("caffe", "vgg16", "vgg19", "resnet50", "resnet."))
    return "BGR" if bgr else ("RGB" if channels == 3 else "")


@op("explain.conv_arithmetic")
def _conv_arithmetic_op(m: Any, batch: np.ndarray, *, row: int, col: int, channel: int = 0,
                        layer: Optional[str] = None) -> dict:
    """The numbers behind one output value of a Conv2D: input patch, kernel, bias, sum, activation."""
    import keras

    if batch is None or len(batch) != 1:
        raise InputError("Give exactly one image.")
    km = _km(m)
    tr = trace(km)
    g = layer_graph(km)
    name = _first_plain_conv(km) if layer in (None, "") else str(layer)
    info = find_layer(km, name)
    out_t = tr.outputs[name]
    conv = g.op.get(id(out_t))
    if not isinstance(conv, keras.layers.Conv2D) or isinstance(conv, keras.layers.Conv2DTranspose):
        raise InputError(f"Layer '{name}' is a {info.kind}; the arithmetic is shown for Conv2D layers.")
    check_channels_last(conv)
    h, w, c_out = info.output_shape
    row, col, channel = int(row), int(col), int(channel)
    if not (0 <= row < h and 0 <= col < w):
        raise InputError(f"Layer '{name}' is {h} x {w}; there is no cell at row {row}, column {col}.")
    if not 0 <= channel < c_out:
        raise InputError(f"Layer '{name}' has channels 0 to {c_out - 1}; there is no channel {channel}.")
    in_t = g.tensor[g.inputs[id(out_t)][0]]
    ext = _cached(km, ("arith", name), lambda: keras.Model(tr.input, [in_t, out_t], name="vizlib_conv_arith"))
    with _run_lock(km):
        x_in, y = ext(batch, training=False)
    x_in = np.asarray(x_in, dtype=np.float32)[0]
    y = np.asarray(y, dtype=np.float32)[0]
    in_hw = x_in.shape[:2]
    wins = windows(conv, "Conv2D", in_hw, (h, w))
    rows = row * wins[0].s - wins[0].p + np.arange(wins[0].k) * wins[0].d
    cols = col * wins[1].s - wins[1].p + np.arange(wins[1].k) * wins[1].d
    kernel = np.asarray(conv.kernel, dtype=np.float32)  # (kh, kw, c_in / groups, c_out)
    groups = int(getattr(conv, "groups", 1) or 1)
    per_group = kernel.shape[2]
    group = channel // (c_out // groups)
    in_channels = list(range(group * per_group, (group + 1) * per_group))
    patch = np.zeros((len(rows), len(cols), per_group), dtype=np.float32)
    r_ok = (rows >= 0) & (rows < in_hw[0])
    c_ok = (cols >= 0) & (cols < in_hw[1])
    sub = x_in[np.clip(rows, 0, in_hw[0] - 1)][:, np.clip(cols, 0, in_hw[1] - 1)][:, :, in_channels]
    patch[:] = sub * (r_ok[:, None, None] & c_ok[None, :, None])
    weights = kernel[:, :, :, channel]
    bias = float(np.asarray(conv.bias)[channel]) if conv.use_bias and conv.bias is not None else 0.0
    products = patch.astype(np.float64) * weights.astype(np.float64)
    pre = float(products.sum() + bias)
    act_name = _activation_name(conv.activation)
    post = float(np.asarray(keras.ops.convert_to_numpy(conv.activation(np.array([pre], dtype=np.float32))))[0])
    rows_rf, cols_rf, _ = dependence_masks(km, name, row, col)
    between = [i.kind for i in tr.layers if i.index < info.index]
    followed = []
    for i in tr.layers[info.index + 1:]:
        if i.is_conv or not i.is_spatial or len(followed) == 3:
            break
        followed.append(i.kind)
    pre_name = str(getattr(m, "preprocess_name", ""))
    order = input_channel_order(m, x_in.shape[-1])
    source = (f"Input values: the image's pixels after the model's preprocessing ({pre_name})" if pre_name
              else "Input values: the image as the model receives it")
    if between:
        source += f", then {', '.join(between)}"
    return {
        "layer": name, "row": row, "col": col, "channel": channel,
        "patch": patch, "kernel": weights, "products": products.astype(np.float32),
        "per_input_channel": products.sum(axis=(0, 1)).astype(np.float32),
        "bias": bias, "pre_activation": pre, "activation": act_name, "value": post,
        "model_value": float(y[row, col, channel]),
        "input_rows": [int(r) if ok else -1 for r, ok in zip(rows, r_ok)],
        "input_cols": [int(c) if ok else -1 for c, ok in zip(cols, c_ok)],
        "input_channels": in_channels, "strides": [wins[0].s, wins[1].s], "dilation": [wins[0].d, wins[1].d],
        "padding": str(conv.padding), "pad_before": [wins[0].p, wins[1].p],
        "input_is_model_input": id(in_t) == id(tr.input), "input_source": source,
        "channel_order": order, "followed_by": followed,
        "input_layer": getattr(g.op.get(id(in_t)), "name", "input"),
        "box": list(box_of(rows_rf, cols_rf)),
    }


# --------------------------------------------------------------------------- public API


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
