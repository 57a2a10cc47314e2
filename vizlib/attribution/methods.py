"""Attribution methods: one class per method, one uniform call, each an operation run where the model lives.

Every method answers "which pixels made the class score what it is" with a map
at the model's input size. Each is a class (Captum style) whose
``attribute(m, x, classes, layer=..., seed=..., baseline=...)`` takes an
in-process :class:`vizlib.models.LoadedModel`, a batch of model inputs and one
class per image, and returns the raw signed map per image plus the passes it
cost. Each class is registered as the operation ``attribution.<op_name>``
(:mod:`vizlib.ops`), so an uploaded model runs the very same code in its own
process.

**The class score** is Grad-CAM's (:func:`vizlib.explain.class_scores`): the
logit before a final softmax / sigmoid, or the model's output when it has
neither. Every gradient, every masked or occluded forward pass and every
Integrated Gradients path differentiates or evaluates that score.

Work over many inputs (Score-CAM's masks, SmoothGrad's noisy copies, Integrated
Gradients' path points, occlusion's patches) runs in batches sized by
:func:`vizlib.extract.images_per_call`, so memory stays bounded whatever the
model. Random draws come from ``numpy.random.default_rng(seed)``: a seed gives
the same map every time.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from vizlib import explain as E
from vizlib import ops
from vizlib.attribution.baselines import baseline_batch, check_baseline
from vizlib.errors import InputError
from vizlib.extract import BATCH_SIZE, FORWARD_BATCH_BYTES, images_per_call, run_lock

#: Model inputs per gradient call are sized so the largest layer output stays under this
#: (the backward pass keeps the forward pass's activations, so it is half the forward budget).
GRADIENT_BATCH_BYTES = FORWARD_BATCH_BYTES // 2
#: Images per forward-only call at most (masks, patches, curves); the byte budget decides for big models.
FORWARD_IMAGES = 64
#: Score-CAM masks at most this many channels (those whose maps vary most, as "Faster Score-CAM").
SCORECAM_MAX_CHANNELS = 128

_REGISTRY: dict[str, type["Attribution"]] = {}


def _km(m: Any) -> Any:
    return getattr(m, "model", m)


# --------------------------------------------------------------------------- shared steps


def class_scores_of(m: Any, x: np.ndarray, classes: Optional[np.ndarray] = None) -> np.ndarray:
    """Class scores (N, classes) of model inputs ``x``, in batches; ``classes`` given: (N,) the picked ones."""
    n = len(x)
    step = images_per_call(m, FORWARD_IMAGES, FORWARD_BATCH_BYTES)
    parts = []
    km = _km(m)
    for start in range(0, n, step):
        with run_lock(km):
            parts.append(np.asarray(E.class_scores(m, x[start:start + step]), dtype=np.float32))
    scores = np.concatenate(parts, axis=0) if parts else np.zeros((0, 0), np.float32)
    if classes is None:
        return scores
    return scores[np.arange(n), np.asarray(classes, dtype=int)]


def input_gradients(m: Any, x: np.ndarray, classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(d score / d input (N, H, W, C), picked scores (N,)) for model inputs ``x``, in bounded batches."""
    import tensorflow as tf

    E.check_gradients_safe()
    step = images_per_call(m, BATCH_SIZE, GRADIENT_BATCH_BYTES)
    grads, picked = [], []
    km = _km(m)
    for start in range(0, len(x), step):
        xt = tf.convert_to_tensor(np.ascontiguousarray(x[start:start + step], dtype=np.float32))
        cls = tf.constant(np.asarray(classes[start:start + step], dtype=np.int32))
        with run_lock(km):
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(xt)
                s = tf.gather(E.class_scores(m, xt), cls, axis=1, batch_dims=1)
                total = tf.reduce_sum(s)
            g = tape.gradient(total, xt)
        grads.append(np.zeros(xt.shape, np.float32) if g is None else np.asarray(g, dtype=np.float32))
        picked.append(np.asarray(s, dtype=np.float32))
    return np.concatenate(grads, axis=0), np.concatenate(picked, axis=0)


def layer_gradients(m: Any, x: np.ndarray, classes: np.ndarray, layer: str) -> tuple[np.ndarray, np.ndarray]:
    """(activations of ``layer`` (N, h, w, K), d score / d activations): Grad-CAM's cut of the model."""
    import tensorflow as tf

    E.check_gradients_safe()
    feats = E.layer_features(m, x, layer)
    with run_lock(_km(m)):
        xs = [tf.convert_to_tensor(f) for f in feats]
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(xs[0])
            s = E.class_scores(m, xs, layer=layer)
            total = tf.reduce_sum(tf.gather(s, tf.constant(np.asarray(classes, np.int32)), axis=1, batch_dims=1))
        g = tape.gradient(total, xs[0])
    acts = np.asarray(feats[0], dtype=np.float32)
    return acts, (np.zeros_like(acts) if g is None else np.asarray(g, dtype=np.float32))


def _to_input_size(m: Any, maps: np.ndarray) -> np.ndarray:
    return E.resize_maps(np.asarray(maps, dtype=np.float32), tuple(m.input_size))


def normalise(raw: np.ndarray, positive: bool) -> np.ndarray:
    """Raw maps (N, H, W) -> [0, 1]: the positive part (``positive``) or the magnitude, over its maximum."""
    v = np.nan_to_num(np.asarray(raw, dtype=np.float32))
    v = np.maximum(v, 0.0) if positive else np.abs(v)
    peak = v.reshape(len(v), -1).max(axis=1)
    return (v / np.where(peak > 0, peak, 1.0)[:, None, None]).astype(np.float32)


# --------------------------------------------------------------------------- the methods


class Attribution:
    """One attribution method: ``attribute`` -> (raw signed maps (N, H, W), cost in passes per image).

    Subclasses set ``name`` (the public method name), ``op_name`` (the operation's
    name, ``attribution.<op_name>``), ``title``, ``uses_layer`` (the CAM family cuts
    the model at a layer), ``gradients`` (needs input or layer gradients) and
    ``positive`` (the normalised map keeps the positive part, not the magnitude).
    Options (``steps``, ``samples``, ...) are constructor arguments.
    """

    name = ""
    op_name = ""
    title = ""
    uses_layer = False
    gradients = True
    positive = True
    reference = ""

    def attribute(self, m: Any, x: np.ndarray, classes: np.ndarray, *, layer: Optional[str], seed: int,
                  baseline: str) -> tuple[np.ndarray, dict]:
        raise NotImplementedError


def register(cls: type[Attribution]) -> type[Attribution]:
    """Make ``cls`` a method of :func:`vizlib.attribution` and the operation ``attribution.<op_name>``."""
    _REGISTRY[cls.name] = cls

    def run(m: Any, batch: Optional[np.ndarray], *, class_index: Optional[int] = None, layer: Optional[str] = None,
            seed: int = 0, baseline: str = "black", **options: Any) -> dict:
        return _run(cls, m, batch, class_index=class_index, layer=layer, seed=seed, baseline=baseline,
                    options=options)

    run.__doc__ = f"{cls.title} for each image of ``batch`` (see :class:`{cls.__name__}`)."
    ops.op(f"attribution.{cls.op_name}")(run)
    return cls


def method_class(method: Any) -> type[Attribution]:
    """The class of ``method`` (a public method name), or :class:`InputError` naming the valid ones."""
    found = _REGISTRY.get(method) if isinstance(method, str) else None
    if found is None:
        raise InputError(f"Unknown attribution method {method!r}. Use one of: {', '.join(_REGISTRY)}.")
    return found


def _classes(m: Any, x: np.ndarray, class_index: Optional[int]) -> np.ndarray:
    scores = class_scores_of(m, x)
    n_classes = scores.shape[1]
    if class_index is None:
        return np.argmax(scores, axis=1).astype(int)
    try:
        c = int(class_index)
    except (TypeError, ValueError):
        raise InputError(f"Class index {class_index!r} is not a whole number: use 0 to {n_classes - 1}.") from None
    if not 0 <= c < n_classes:
        raise InputError(f"Class index {c} is out of range: this model has classes 0 to {n_classes - 1}.")
    return np.full(len(x), c, dtype=int)


def _layer(m: Any, layer: Optional[str]) -> str:
    """The layer a CAM is computed at (None: the final feature map), checked like Grad-CAM's."""
    if layer is not None and not isinstance(layer, str):
        raise InputError(f"A layer is given by its name, not {layer!r}.")
    return str(ops.call(m, "explain.describe", None, {"layer": layer or None})["layer"])


def _run(cls: type[Attribution], m: Any, batch: Optional[np.ndarray], *, class_index: Optional[int],
         layer: Optional[str], seed: int, baseline: str, options: dict) -> dict:
    if batch is None or len(batch) == 0:
        raise InputError("No image given.")
    check_baseline(baseline)
    try:
        method = cls(**options)
    except TypeError as exc:
        raise InputError(f"{cls.title} takes no option among {sorted(options)} ({exc}).") from None
    x = np.ascontiguousarray(batch, dtype=np.float32)
    if cls.gradients:
        E.check_gradients_safe()
    classes = _classes(m, x, class_index)
    chosen_layer = _layer(m, layer) if cls.uses_layer or layer else None
    raw, cost = method.attribute(m, x, classes, layer=chosen_layer, seed=int(seed), baseline=baseline)
    raw = np.nan_to_num(np.asarray(raw, dtype=np.float32))
    return {"raw": raw, "map": normalise(raw, cls.positive), "class_index": [int(c) for c in classes],
            "method": cls.name, "layer": chosen_layer if cls.uses_layer else None,
            "forward_passes": float(cost.get("forward", 0)), "backward_passes": float(cost.get("backward", 0))}


@register
class GradCAM(Attribution):
    """Grad-CAM (Selvaraju et al., 2017): the layer's channels weighted by their mean gradient, summed, ReLU.

    Computed by :mod:`vizlib.explain`'s own Grad-CAM operation, so it is the map the Why view shows.
    """

    name, op_name, title, uses_layer = "gradcam", "gradcam", "Grad-CAM", True
    reference = "Selvaraju et al., ICCV 2017"
    cam_method = "gradcam"

    def attribute(self, m, x, classes, *, layer, seed, baseline):
        maps = []
        for i in range(len(x)):  # one class per image: explain's operation takes one class per call
            r = ops.call(m, "explain.gradcam", x[i:i + 1], {"layer": layer, "class_index": int(classes[i]),
                                                            "method": self.cam_method})
            maps.append(r["layer_cam"][0] * float(r["raw_peak"][0]))  # ReLU(weighted sum) at the layer
        return _to_input_size(m, np.stack(maps)), {"forward": 1, "backward": 1}


@register
class LayerCAM(GradCAM):
    """LayerCAM (Jiang et al., 2021): every position weighted by its own positive gradient, summed, ReLU."""

    name, op_name, title = "layercam", "layercam", "LayerCAM"
    reference = "Jiang et al., IEEE TIP 2021"
    cam_method = "layercam"


@register
class GradCAMPlusPlus(Attribution):
    """Grad-CAM++ (Chattopadhay et al., 2018): channel weights from positive gradients, each position
    weighted by the closed-form alpha of the paper (exponential score: higher derivatives from the first)."""

    name, op_name, title, uses_layer = "gradcam++", "gradcam_pp", "Grad-CAM++", True
    reference = "Chattopadhay et al., WACV 2018"

    def attribute(self, m, x, classes, *, layer, seed, baseline):
        acts, g = layer_gradients(m, x, classes, layer)
        g2, g3 = g ** 2, g ** 3
        denom = 2.0 * g2 + acts.sum(axis=(1, 2), keepdims=True) * g3
        alpha = np.where(denom != 0.0, g2 / np.where(denom != 0.0, denom, 1.0), 0.0)
        weights = (alpha * np.maximum(g, 0.0)).sum(axis=(1, 2))
        raw = np.maximum(np.einsum("nhwk,nk->nhw", acts, weights), 0.0)
        return _to_input_size(m, raw), {"forward": 1, "backward": 1}


@register
class ScoreCAM(Attribution):
    """Score-CAM (Wang et al., 2020): each channel, upsampled and scaled to [0, 1], masks the image
    (blending it with black); the channel's weight is the class score of the masked image minus that of
    the black image; ReLU of the weighted sum. No gradients: one forward pass per channel.

    At most ``max_channels`` channels are used: those whose maps vary most (as tf-keras-vis's
    Faster Score-CAM), so a 512-channel layer costs 128 forward passes, not 512.
    """

    name, op_name, title, uses_layer, gradients = "scorecam", "scorecam", "Score-CAM", True, False
    reference = "Wang et al., CVPR Workshops 2020"

    def __init__(self, max_channels: int = SCORECAM_MAX_CHANNELS):
        self.max_channels = max(1, int(max_channels))

    def attribute(self, m, x, classes, *, layer, seed, baseline):
        acts = np.asarray(E.layer_features(m, x, layer)[0], dtype=np.float32)
        black = baseline_batch(m, x, "black")
        base_scores = class_scores_of(m, black, classes)
        k = acts.shape[-1]
        step = images_per_call(m, FORWARD_IMAGES, FORWARD_BATCH_BYTES)
        out, passes = [], 1
        for i in range(len(x)):
            a = acts[i]
            keep = np.argsort(-a.reshape(-1, k).var(axis=0), kind="stable")[: self.max_channels]
            keep = keep[a[..., keep].max(axis=(0, 1)) > a[..., keep].min(axis=(0, 1))]  # constant maps mask nothing
            weights = np.zeros(k, np.float32)
            for start in range(0, len(keep), step):
                ks = keep[start:start + step]
                up = _to_input_size(m, np.moveaxis(a[..., ks], -1, 0))
                lo = up.reshape(len(ks), -1).min(axis=1)[:, None, None]
                hi = up.reshape(len(ks), -1).max(axis=1)[:, None, None]
                masks = ((up - lo) / np.maximum(hi - lo, 1e-12))[..., None]
                masked = black[i] + masks * (x[i] - black[i])
                weights[ks] = class_scores_of(m, masked.astype(np.float32), np.full(len(ks), classes[i])) \
                    - base_scores[i]
            out.append(np.maximum(np.einsum("hwk,k->hw", a, weights), 0.0))
            passes = max(passes, 1 + len(keep))
        return _to_input_size(m, np.stack(out)), {"forward": passes + 1, "backward": 0}


@register
class Saliency(Attribution):
    """Vanilla gradients (Simonyan et al., 2014): d class score / d input, summed over colour channels."""

    name, op_name, title, positive = "saliency", "saliency", "Saliency (gradients)", False
    reference = "Simonyan et al., ICLR Workshop 2014"

    def attribute(self, m, x, classes, *, layer, seed, baseline):
        g, _ = input_gradients(m, x, classes)
        return g.sum(axis=-1), {"forward": 1, "backward": 1}


@register
class SmoothGrad(Attribution):
    """SmoothGrad (Smilkov et al., 2017): the input gradient averaged over ``samples`` noisy copies,
    Gaussian noise with standard deviation ``noise`` x (the image's max - min), seeded."""

    name, op_name, title, positive = "smoothgrad", "smoothgrad", "SmoothGrad", False
    reference = "Smilkov et al., 2017 (arXiv:1706.03825)"

    def __init__(self, samples: int = 25, noise: float = 0.15):
        self.samples, self.noise = max(1, int(samples)), float(noise)

    def attribute(self, m, x, classes, *, layer, seed, baseline):
        rng = np.random.default_rng(seed)
        out = []
        for i in range(len(x)):
            sigma = self.noise * float(x[i].max() - x[i].min())
            noisy = x[i][None] + rng.normal(0.0, 1.0, size=(self.samples,) + x[i].shape).astype(np.float32) * sigma
            g, _ = input_gradients(m, noisy.astype(np.float32), np.full(self.samples, classes[i]))
            out.append(g.mean(axis=0).sum(axis=-1))
        return np.stack(out), {"forward": self.samples, "backward": self.samples}


@register
class IntegratedGradients(Attribution):
    """Integrated Gradients (Sundararajan et al., 2017): (input - baseline) x the gradient averaged along
    the straight path from the baseline, at ``steps`` midpoints; summed over colour channels.

    Completeness: the map sums to score(input) - score(baseline), up to the quadrature error.
    """

    name, op_name, title, positive = "integrated_gradients", "integrated_gradients", "Integrated Gradients", False
    reference = "Sundararajan et al., ICML 2017"

    def __init__(self, steps: int = 48):
        self.steps = max(1, int(steps))

    def attribute(self, m, x, classes, *, layer, seed, baseline):
        base = baseline_batch(m, x, baseline, seed)
        alphas = ((np.arange(self.steps) + 0.5) / self.steps).astype(np.float32)
        out = []
        for i in range(len(x)):
            path = base[i][None] + alphas[:, None, None, None] * (x[i] - base[i])[None]
            g, _ = input_gradients(m, path.astype(np.float32), np.full(self.steps, classes[i]))
            out.append(((x[i] - base[i]) * g.mean(axis=0)).sum(axis=-1))
        return np.stack(out), {"forward": self.steps, "backward": self.steps}


@register
class Occlusion(Attribution):
    """Occlusion (Zeiler & Fergus, 2014): a square patch (``window``, default side / 8) slides with
    ``stride`` (default window / 2) and is filled with the baseline; each pixel gets the mean drop of the
    class score over the patches covering it. No gradients: one forward pass per patch."""

    name, op_name, title, gradients = "occlusion", "occlusion", "Occlusion", False
    reference = "Zeiler & Fergus, ECCV 2014"

    def __init__(self, window: Optional[int] = None, stride: Optional[int] = None):
        self.window, self.stride = window, stride

    @staticmethod
    def _starts(n: int, window: int, stride: int) -> list[int]:
        starts = list(range(0, max(n - window, 0) + 1, stride))
        if starts[-1] != max(n - window, 0):
            starts.append(max(n - window, 0))  # the last patch reaches the edge
        return starts

    def attribute(self, m, x, classes, *, layer, seed, baseline):
        h, w = x.shape[1:3]
        win = int(self.window) if self.window else max(2, int(round(max(h, w) / 8)))
        win = max(1, min(win, h, w))
        stride = max(1, int(self.stride) if self.stride else win // 2 or 1)
        base = baseline_batch(m, x, baseline, seed)
        patches = [(r, c) for r in self._starts(h, win, stride) for c in self._starts(w, win, stride)]
        step = images_per_call(m, FORWARD_IMAGES, FORWARD_BATCH_BYTES)
        full = class_scores_of(m, x, classes)
        out = []
        for i in range(len(x)):
            total = np.zeros((h, w), np.float64)
            count = np.zeros((h, w), np.float64)
            for start in range(0, len(patches), step):
                chunk = patches[start:start + step]
                batch = np.repeat(x[i][None], len(chunk), axis=0)
                for j, (r, c) in enumerate(chunk):
                    batch[j, r:r + win, c:c + win] = base[i, r:r + win, c:c + win]
                drop = full[i] - class_scores_of(m, batch, np.full(len(chunk), classes[i]))
                for (r, c), d in zip(chunk, drop):
                    total[r:r + win, c:c + win] += d
                    count[r:r + win, c:c + win] += 1
            out.append((total / np.maximum(count, 1)).astype(np.float32))
        return np.stack(out), {"forward": len(patches) + 1, "backward": 0}


#: Public method names, cheapest first (the order the page computes them in).
METHODS = ("gradcam", "layercam", "gradcam++", "saliency", "smoothgrad", "integrated_gradients", "occlusion",
           "scorecam")
METHOD_TITLES = {name: _REGISTRY[name].title for name in METHODS}
assert set(METHODS) == set(_REGISTRY), "every registered method is listed"
