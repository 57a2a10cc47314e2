"""The model side of an optimisation: the layer's sub-graph, the model's preprocessing, one compiled step.

Compiled pieces are built once per (model, layer, image size, objective)
and kept with the model (weakly: they go when the model goes). The step
function is traced with fixed input signatures, so one trace serves every
step and every batch of channels.

Gradients and oneDNN: with TensorFlow 2.21 on CPU and oneDNN on, some input
gradients corrupt the heap and abort the process. ``import vizlib`` before
TensorFlow turns oneDNN off; if TensorFlow was imported first with oneDNN on,
feature visualisation refuses with :class:`vizlib.explain.GradientsUnsafe`
(as Grad-CAM does) instead of crashing.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from vizlib.errors import InputError
from vizlib.featvis import objectives, param, transform
from vizlib.featvis.redirect import redirected_relu

#: Adam's learning rate: twice Lucid's 0.05, for half its 512 steps (benchmarks/README.md).
LEARNING_RATE = 0.1
MAX_GRAPHS_PER_MODEL = 8
#: The sketch's learning rate: twice the method's (no transforms, few steps; benchmarks/README.md, round 3).
SKETCH_LEARNING_RATE = 0.2
#: The preview pass runs for images of at least this side (below it the method itself previews within seconds).
PREVIEW_MIN_SIDE = 96


@dataclass(frozen=True)
class Recipe:
    """The choices of one method, all in one place (benchmarks compare recipes on the same models and steps).

    ``fourier``: Fourier parameterisation + sigmoid (else pixels, clipped);
    ``decorrelate``: Lucid's colour decorrelation for RGB models; ``jitter``:
    transformation strength (1 = Lucid's amounts scaled to the image, 0 =
    none); ``margin``: a grey margin around the image during optimisation
    (Lucid's padding) instead of the model's own padding colour; ``hinge``:
    the rival-channel penalty's weight; ``polish``: the share of final steps
    run without transforms (they optimise exactly what is measured);
    ``plain``: Lucid's plain objective (mean activation) instead of
    :func:`~vizlib.featvis.objectives.channel`; ``polish_pixels``: the polish
    steps work on the pixels themselves (the image so far becomes the
    starting point of plain ascent), not on the spectrum; ``preview``: when
    the caller watches the images form (the page), a sketch first, of this
    share of the steps: the same parameterisation without transforms, at
    :data:`SKETCH_LEARNING_RATE` (:func:`sketch_recipe`). Without transforms it
    forms within a few dozen steps, where the robust phase needs half the run;
    its images are the preview until the method's own image, in its polish, is
    as strong. Only for images of at least :data:`PREVIEW_MIN_SIDE` px; the
    final images are unchanged by it. ``polish_warmup``: the polish's learning
    rate climbs from a tenth to its full value over this share of the polish
    steps (at most :data:`~vizlib.featvis.engine.WARMUP_MAX_STEPS`): Adam's first
    steps move every pixel by the full rate, which threw some robust images away.
    """

    fourier: bool = True
    decorrelate: bool = True
    jitter: float = 1.0
    margin: bool = True
    hinge: float = objectives.HINGE
    polish: float = 0.0
    lr: float = LEARNING_RATE
    plain: bool = False
    polish_pixels: bool = False
    polish_lr: float = 0.05
    preview: float = 0.0
    polish_warmup: float = 0.0
    name: str = "fv1"


#: Lucid's recipe as this project ran it before issue 20.
LUCID = Recipe()
#: Plain gradient ascent: pixels, no transforms, the channel's mean (the literature's baseline).
#: The default since issue 20 (benchmarks/README.md, "Feature visualisation on any CNN"): Lucid's Fourier
#: parameterisation and transforms scaled to the image for the first half, against the model's own padding
#: colour instead of a grey margin, no rival hinge; then the second half polishes the pixels themselves without
#: transforms (plain ascent from a robust start), so the image is as strong as the plain baseline's.
#: The polish runs at twice plain ascent's learning rate: it starts from the robust image (inside the sigmoid's
#: range) and has half the steps, and at 0.05 it had not arrived (0.02 / 0.05 / 0.1: median activation vs plain
#: 0.90 / 0.96 / 0.99 on the small models, benchmarks/README.md). A sketch of an eighth of the steps first
#: (the parameterisation without transforms, only while someone watches): on VGG16 block5_conv3 a preview
#: several times stronger at 10 s than the method's own image then (benchmarks/README.md, round 3). The polish
#: warms up over its first quarter (at most 8 steps): at full rate from its first step it destroyed a few robust
#: images, down to 1 % of plain ascent's activation (benchmarks/README.md, round 4).
FV2 = Recipe(margin=False, hinge=0.0, polish=0.5, polish_pixels=True, polish_lr=0.1, preview=0.125,
             polish_warmup=0.25, name="fv2")
DEFAULT = FV2
PLAIN = Recipe(fourier=False, decorrelate=False, jitter=0.0, margin=False, hinge=0.0, lr=0.05, plain=True,
               name="plain")


# TensorFlow's "frequent retracing" warning about the step functions below is filtered in vizlib.tfsetup.


def gradients_safe() -> bool:
    """False when TensorFlow runs with oneDNN on, where some input gradients abort the process.

    The same rule as :mod:`vizlib.explain` (``CNN_VIZ_ALLOW_ONEDNN_GRADIENTS=1`` overrides it).
    """
    import tensorflow as tf  # noqa: F401 - oneDNN is decided when TensorFlow is imported

    from vizlib.explain import onednn_enabled
    from vizlib.settings import allow_onednn_gradients

    return allow_onednn_gradients() or not onednn_enabled()


def require_safe_gradients() -> None:
    """Raise :class:`vizlib.explain.GradientsUnsafe` unless input gradients are safe in this process."""
    if not gradients_safe():
        from vizlib.explain import GradientsUnsafe

        raise GradientsUnsafe(
            "Feature visualisation needs input gradients, and TensorFlow was imported with oneDNN on, where "
            "they can corrupt memory and abort the process. Import vizlib before tensorflow or keras (it "
            "turns oneDNN off), or set TF_ENABLE_ONEDNN_OPTS=0 before starting Python."
        )


def run_lock(km: Any) -> threading.Lock:
    from vizlib.extract import run_lock as lock

    return lock(km)


def affine_preprocess(m: Any) -> tuple[np.ndarray, np.ndarray]:
    """The model's preprocessing as ``x @ A + b`` (per pixel), read off its numpy function.

    Every scaling vizlib names (x/255, -1..1, caffe's BGR and mean, torch's mean
    and std, Keras Applications' ``preprocess_input``) is affine per pixel; a
    function that is not raises :class:`InputError`.
    """
    c = int(m.channels)

    def run(x: np.ndarray) -> np.ndarray:
        return np.asarray(m.preprocess(np.array(x, dtype=np.float32, copy=True)), dtype=np.float64)

    probe = np.zeros((c + 1, 2, 2, c), dtype=np.float32)
    for j in range(c):
        probe[j + 1, ..., j] = 255.0
    try:
        out = run(probe)
        if out.shape != probe.shape:
            raise ValueError(f"shape {out.shape}")
        b = out[0, 0, 0]
        a = (out[1:, 0, 0] - b) / 255.0  # row j: the output for a unit of input channel j
        rng = np.random.default_rng(0)
        test = rng.uniform(0, 255, size=(2, 5, 5, c)).astype(np.float32)
        want = run(test)
        got = test.astype(np.float64) @ a + b
        ok = np.allclose(got, want, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(want).max())))
    except Exception as exc:  # noqa: BLE001 - a user's function may raise anything
        raise InputError(f"This model's preprocessing ({m.preprocess_name}) could not be evaluated: {exc}") from exc
    if not ok:
        raise InputError(
            f"This model's preprocessing ({m.preprocess_name}) is not a per-pixel scaling, so feature "
            "visualisation can't differentiate through it. Load the model with a named preprocessing "
            "('unit', 'symmetric', 'raw', 'caffe', 'torch')."
        )
    return a.astype(np.float32), b.astype(np.float32)


@dataclass
class Graph:
    """Compiled pieces for one (model, layer, image size, cell): shared by every optimisation of them."""

    extractor: Any  # keras.Model(input -> layer output), input spec lifted
    layer_channels: int
    size: tuple[int, int]  # the image (h, w)
    canvas: tuple[int, int]  # what the network sees during optimisation
    ratio: float  # image pixels per canvas pixel at scale 1
    free_size: bool  # the layer's graph runs at any input size
    cell: Optional[tuple[int, int]] = None  # the neuron objective's map position, or None: the whole channel
    recipe: Any = None  # the Recipe it was compiled for
    step: Any = None  # compiled: one optimisation step for a batch
    final: Any = None  # eager: the finished images and their statistics
    pixels: Any = None  # parameters -> images in 0..1


from vizlib.permodel import LOCK as _GRAPH_LOCK, Slot  # noqa: E402 - the one per-model store
_GRAPHS = Slot("featvis.graphs")


def clear() -> None:
    """Forget every compiled graph (tests and benchmarks that measure a first visit)."""
    with _GRAPH_LOCK:
        _GRAPHS.clear()


def extractor(m: Any, layer: str) -> Any:
    """``keras.Model(input, layer output)`` over the traced graph, accepting any input size."""
    import keras

    from vizlib.layers import trace

    tr = trace(m.model)
    ext = keras.Model(tr.input, tr.outputs[layer], name="vizlib_featvis")
    ext.input_spec = None  # the layer's sub-graph is convolutional: let it run at other sizes
    return ext


def _runs_at(ext: Any, km: Any, shape: tuple[int, int], c: int) -> bool:
    """Whether the layer's sub-graph runs on an input of ``shape`` (a fully convolutional path does)."""
    import tensorflow as tf

    try:
        with run_lock(km):
            out = ext(tf.zeros((1, shape[0], shape[1], c)), training=False)
    except Exception:  # noqa: BLE001 - any layer may refuse another size
        return False
    return len(out.shape) == 4 and all(int(d) > 0 for d in out.shape[1:3])


def graph(m: Any, layer: str, size: tuple[int, int], cell: Optional[tuple[int, int]] = None,
          recipe: Optional["Recipe"] = None) -> Graph:
    """The compiled :class:`Graph` for ``layer`` of ``m`` at image ``size`` (built once, kept with the model)."""
    recipe = recipe or DEFAULT
    km = m.model
    key = (layer, size, cell, recipe)
    with _GRAPH_LOCK:
        per = _GRAPHS.setdefault(km, OrderedDict())
        found = per.get(key)
        if found is not None:
            per.move_to_end(key)
            return found
    from vizlib.layers import find_layer

    info = find_layer(m, layer)
    ext = extractor(m, layer)
    c = int(m.channels)
    h, w = size
    pad_h, pad_w = (transform.margin(h), transform.margin(w)) if recipe.margin else (0, 0)
    if cell is not None:  # a map position is only defined at the model's own input size
        canvas, free = (int(m.input_size[0]), int(m.input_size[1])), False
    else:
        canvas = (h + pad_h, w + pad_w)
        free = _runs_at(ext, m.model, canvas, c) and _runs_at(ext, m.model, size, c)
    if free:
        ratio = 1.0
    else:  # a fixed-size graph: the image (plus its margin) is resampled onto the model's input
        canvas = (int(m.input_size[0]), int(m.input_size[1]))
        ratio = max((h + pad_h) / canvas[0], (w + pad_w) / canvas[1])
    g = Graph(extractor=ext, layer_channels=info.channels, size=size, canvas=canvas, ratio=ratio, free_size=free,
              cell=cell, recipe=recipe)
    compile_step(m, g)
    with _GRAPH_LOCK:
        per[key] = g
        while len(per) > MAX_GRAPHS_PER_MODEL:
            per.popitem(last=False)
    return g


def padding_colour(m: Any) -> np.ndarray:
    """The pixel (0..1 per channel) the model's preprocessing maps to zero: what its zero padding looks like.

    Outside the image the network sees this colour during optimisation, as it
    sees zeros around the image at its own padding: so the image's border is
    optimised against what the model really sees there (black for x/255,
    mid-grey for -1..1, the mean colour for caffe).
    """
    a, b = affine_preprocess(m)
    diag = np.diag(a) if a.ndim == 2 else a
    with np.errstate(divide="ignore", invalid="ignore"):
        x = np.where(np.abs(diag) > 1e-12, -b / (diag * 255.0), 0.5)
    if a.ndim == 2 and a.shape[0] == 3 and not np.allclose(a, np.diag(np.diag(a))):  # a channel swap (BGR)
        x = np.linalg.solve(a.T * 255.0, -b)
    return np.clip(x, 0.0, 1.0).astype(np.float32)


def compile_step(m: Any, g: Graph) -> None:
    """Fill ``g.step`` (one Adam step on a batch of parameters, traced once) and ``g.final`` (images + stats)."""
    import tensorflow as tf

    recipe = g.recipe or DEFAULT
    a, b = affine_preprocess(m)
    a_t, b_t = tf.constant(a), tf.constant(b)
    c = int(m.channels)
    h, w = g.size
    pixels = param.fourier_image(c, h, w, decorrelate=recipe.decorrelate) if recipe.fourier else param.identity
    fill = [0.5] * c if recipe.margin else [float(v) for v in padding_colour(m)]
    ext = g.extractor

    def model_input(x01: Any) -> Any:
        return tf.tensordot(x01 * 255.0, a_t, axes=[[3], [0]]) + b_t

    def objective(acts: Any, channels: Any) -> Any:
        if recipe.plain:
            if g.cell is not None:
                acts = acts[:, g.cell[0]:g.cell[0] + 1, g.cell[1]:g.cell[1] + 1, :]
            return tf.reduce_mean(tf.gather(acts, channels, axis=3, batch_dims=1), axis=[1, 2])
        return objectives.objective(acts, channels, g.layer_channels, g.cell, hinge=recipe.hinge)

    spec_sig = tf.TensorSpec([None, *param.param_shape(c, h, w, recipe.fourier)], tf.float32)

    # autograph=False: the step has no Python control flow on tensors, and AutoGraph's source lookup confuses
    # the closures of functions compiled more than once here ("closure mismatch").
    @tf.function(input_signature=[spec_sig, spec_sig, spec_sig, tf.TensorSpec([], tf.float32),
                                  tf.TensorSpec([None], tf.int32), tf.TensorSpec([8], tf.float32),
                                  tf.TensorSpec([], tf.float32)], autograph=False)
    def traced_step(spec: Any, m1: Any, m2: Any, t: Any, channels: Any, tr: Any, rate: Any) -> Any:
        with redirected_relu(t):  # the body runs only while tracing: the override is this graph's alone
            img = pixels(spec)
            x = transform.resample(img, tr, g.canvas, fill)
            acts = ext(model_input(x), training=False)
            obj = objective(acts, channels)
            loss = -tf.reduce_sum(obj)
        grad = tf.gradients(loss, spec)[0]
        beta1, beta2 = 0.9, 0.999
        m1 = beta1 * m1 + (1 - beta1) * grad
        m2 = beta2 * m2 + (1 - beta2) * grad * grad
        lr = rate * recipe.lr * tf.sqrt(1 - beta2 ** t) / (1 - beta1 ** t)
        spec = spec - lr * m1 / (tf.sqrt(m2) + 1e-8)
        if not recipe.fourier:
            spec = tf.clip_by_value(spec, 0.0, 1.0)
        return spec, m1, m2, obj

    def final(spec: Any) -> Any:
        """The finished images (uint8) and their statistics of every channel: run once, eagerly (no tracing)."""
        img = pixels(spec)
        quantised = tf.round(img * 255.0)
        x = quantised / 255.0
        if not g.free_size:
            x = tf.image.resize(x, [int(m.input_size[0]), int(m.input_size[1])], method="bilinear")
        acts = ext(model_input(x), training=False)
        if g.cell is not None:
            acts = acts[:, g.cell[0]:g.cell[0] + 1, g.cell[1]:g.cell[1] + 1, :]
        stats = tf.stack([tf.reduce_mean(acts, axis=[1, 2]), tf.reduce_mean(tf.nn.relu(acts), axis=[1, 2]),
                          tf.reduce_mean(tf.abs(acts), axis=[1, 2]), tf.reduce_max(acts, axis=[1, 2]),
                          tf.reduce_min(acts, axis=[1, 2])], axis=1)
        return tf.cast(quantised, tf.uint8), stats

    g.step, g.final, g.pixels = traced_step, final, pixels


def sketch_recipe(recipe: Recipe) -> Recipe:
    """The recipe of the preview sketch before ``recipe``: its parameterisation, no transforms, a faster rate."""
    return Recipe(fourier=recipe.fourier, decorrelate=recipe.decorrelate, jitter=0.0, margin=False,
                  hinge=recipe.hinge, polish=0.0, lr=SKETCH_LEARNING_RATE, plain=recipe.plain,
                  name=recipe.name + "+sketch")


def polish_recipe(recipe: Recipe) -> Recipe:
    """The recipe of a pixel-space polish after ``recipe``'s robust phase: no transforms, no margin."""
    return Recipe(fourier=False, decorrelate=False, jitter=0.0, margin=False, hinge=recipe.hinge, polish=0.0,
                  lr=recipe.polish_lr, plain=recipe.plain, polish_warmup=recipe.polish_warmup,
                  name=recipe.name + "+polish")
