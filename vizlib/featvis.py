"""Feature visualisation: the image a channel responds to most.

A channel's map on one image shows *where* its pattern occurs in that image;
an input optimised to excite the channel shows *what* the pattern is
(activation maximisation: Olah, Mordvintsev and Schubert, "Feature
Visualization", Distill 2017; OpenAI Microscope; Lucid)::

    import vizlib
    m = vizlib.load_model("emotion_cnn")
    imgs = vizlib.feature_visualization(m, "conv2d_7", [0, 3, 6])   # uint8 (3, H, W, 1)

Naive gradient ascent on pixels gives high-frequency noise. This follows
Lucid's recipe, what the literature found necessary for recognisable images:

* **a Fourier-space parameterisation** with 1/f frequency scaling (every
  frequency learns at the same speed, so low frequencies are not drowned by
  noise), and **decorrelated colour** (Lucid's ImageNet colour SVD; a single
  grey channel for greyscale models); a sigmoid maps to valid pixels;
* **transformation robustness**: every step sees the image padded, jittered,
  randomly scaled and rotated (one bilinear resampling with a fixed output
  size, so one compiled graph serves every step);
* **the model's own preprocessing**, in the graph: the objective sees exactly
  what the model sees for a real image (the affine maps of every named
  preprocessing are recovered from the numpy function itself);
* a **resolution suited to the layer**: by default about twice the layer's
  receptive field (from its kernels and strides), between 64 and 128 pixels
  and never above the model's input size;
* Lucid's **redirected ReLU gradient** for the first 16 steps, so a channel
  that is silent on the grey starting image still gets a direction.

The objective is how strongly the channel fires: the mean of its map's
positive part (for a ReLU layer, Lucid's mean activation; for a linear one,
such as a conv before its BatchNormalization, it turns the trivial optimum,
a uniformly bright or dark image, into the pattern the kernel matches),
plus a little of the plain mean (a gradient even where the channel is off),
minus a hinge when another channel of the layer fires within 80% as much:
the image should show what makes *this* channel fire, not what makes the
whole layer fire. All requested channels are optimised as ONE batch (channel
``i`` in row ``i``, Adam, a ``tf.function``-compiled step). Randomness comes
from numpy generators seeded by ``seed`` (the transforms) and by ``(seed,
channel)`` (the start image), so a channel's image does not depend on which
other channels share its batch, and results repeat exactly for a seed.

The computation is a set of operations (:mod:`vizlib.ops`) on the model, so
the same code runs for an uploaded model in its own process. Finished images
are cached on disk (:class:`DiskCache`), keyed by the weights' digest, the
layer, the channel and the settings.

Gradients and oneDNN: with TensorFlow 2.21 on CPU and oneDNN on, some input
gradients corrupt the heap and abort the process. ``import vizlib`` before
TensorFlow turns oneDNN off; if TensorFlow was imported first with oneDNN on,
these functions refuse with :class:`vizlib.explain.GradientsUnsafe` (as
Grad-CAM does) instead of crashing.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import threading
import time
import uuid
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from vizlib.errors import InputError
from vizlib.files import atomic_write_bytes
from vizlib.ops import op

#: Bump when the algorithm changes: it is part of every cache key.
ALGORITHM = "fv1"
#: Optimisation steps when the caller gives none (see benchmarks/README.md, "Feature visualisation").
DEFAULT_STEPS = 256
MAX_STEPS = 4096
#: Adam's learning rate: twice Lucid's 0.05, for half its 512 steps (benchmarks/README.md).
LEARNING_RATE = 0.1
#: The objective per image: own + SIGNED_WEIGHT * mean(a_c) - HINGE * relu(rival - MARGIN * own), where
#: own = mean(relu(a_c)) and rival = the largest mean(relu(a_d)) of the layer's other channels.
SIGNED_WEIGHT = 0.1
MARGIN = 0.8
HINGE = 3.0
#: Largest default side: the cost of a step grows with the area.
DEFAULT_MAX_SIDE = 128
#: Smallest default side: a first layer's tiny field still shows as a texture of many repeats.
DEFAULT_MIN_SIDE = 64
MIN_SIDE, MAX_SIDE = 16, 512
#: Channels in one optimisation batch are capped so that the backward pass stays within this.
BATCH_BYTES = 384 * 2**20
MAX_CHANNELS = 1024
#: Optimisations kept between calls in one process (a page polls them step by step).
MAX_STATES = 8
STATE_BYTES = 256 * 2**20

#: Lucid's colour decorrelation (square root of ImageNet's colour covariance, from its SVD).
_COLOR_SQRT = np.asarray([[0.26, 0.09, 0.02],
                          [0.27, 0.00, -0.05],
                          [0.27, -0.09, 0.03]], dtype=np.float32)
_COLOR = _COLOR_SQRT / np.max(np.linalg.norm(_COLOR_SQRT, axis=0))
#: Lucid's standard transforms at 128 px: pad 12, jitter 8, scale 0.9..1.1, rotate -10..10 deg, jitter 4.
_SCALES = np.array([1 + (i - 5) / 50.0 for i in range(11)], dtype=np.float64)
_ANGLES = np.radians(np.array(list(range(-10, 11)) + 5 * [0], dtype=np.float64))

ProgressFn = Callable[[int, int], None]


class _OwnTracingNoise(logging.Filter):
    """Drop TensorFlow's "frequent retracing" warning about this module's step functions.

    One step function is compiled per (model, layer, image size), each traced
    once (fixed input signatures); TensorFlow counts them together and warns
    as if one function were retraced. Other functions' warnings pass.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        text = str(record.msg)
        return not ("triggered tf.function retracing" in text and "_compile.<locals>" in str(record.args or "")
                    + text)


logging.getLogger("tensorflow").addFilter(_OwnTracingNoise())


# --------------------------------------------------------------------------- gradients are safe?


def gradients_safe() -> bool:
    """False when TensorFlow runs with oneDNN on, where some input gradients abort the process.

    The same rule as :mod:`vizlib.explain` (``CNN_VIZ_ALLOW_ONEDNN_GRADIENTS=1`` overrides it).
    """
    import tensorflow as tf  # noqa: F401 - oneDNN is decided when TensorFlow is imported

    from vizlib.explain import onednn_enabled

    return os.environ.get("CNN_VIZ_ALLOW_ONEDNN_GRADIENTS") == "1" or not onednn_enabled()


def _require_safe_gradients() -> None:
    if not gradients_safe():
        from vizlib.explain import GradientsUnsafe

        raise GradientsUnsafe(
            "Feature visualisation needs input gradients, and TensorFlow was imported with oneDNN on, where "
            "they can corrupt memory and abort the process. Import vizlib before tensorflow or keras (it "
            "turns oneDNN off), or set TF_ENABLE_ONEDNN_OPTS=0 before starting Python."
        )


# --------------------------------------------------------------------------- the model side


def _run_lock(km: Any) -> threading.Lock:
    from vizlib.extract import run_lock

    return run_lock(km)


def _affine_preprocess(m: Any) -> tuple[np.ndarray, np.ndarray]:
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
class _Graph:
    """Compiled pieces for one (model, layer, image size): shared by every optimisation of them."""

    extractor: Any  # keras.Model(input -> layer output), input spec lifted
    layer_channels: int
    size: tuple[int, int]  # the image (h, w)
    canvas: tuple[int, int]  # what the network sees during optimisation
    ratio: float  # image pixels per canvas pixel at scale 1
    free_size: bool  # the layer's graph runs at any input size
    step: Any = None  # compiled: one optimisation step for a batch
    final: Any = None  # eager: the finished images and their statistics


_GRAPHS: "weakref.WeakKeyDictionary[Any, OrderedDict]" = weakref.WeakKeyDictionary()
_GRAPH_LOCK = threading.Lock()
MAX_GRAPHS_PER_MODEL = 8


def _extractor(m: Any, layer: str) -> Any:
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
        with _run_lock(km):
            out = ext(tf.zeros((1, shape[0], shape[1], c)), training=False)
    except Exception:  # noqa: BLE001 - any layer may refuse another size
        return False
    return len(out.shape) == 4 and all(int(d) > 0 for d in out.shape[1:3])


def _margin(side: int) -> int:
    """Lucid pads 12 px and crops 12 px of jitter at 128 px: the network sees a 6 px grey margin each side."""
    return max(2, int(round(12 * side / 128)))


def _jitter(side: int) -> int:
    return max(1, int(round(6 * side / 128)))


def _graph(m: Any, layer: str, size: tuple[int, int]) -> _Graph:
    km = m.model
    key = (layer, size)
    with _GRAPH_LOCK:
        per = _GRAPHS.setdefault(km, OrderedDict())
        found = per.get(key)
        if found is not None:
            per.move_to_end(key)
            return found
    from vizlib.layers import find_layer

    info = find_layer(m, layer)
    ext = _extractor(m, layer)
    c = int(m.channels)
    h, w = size
    canvas = (h + _margin(h), w + _margin(w))
    free = _runs_at(ext, m.model, canvas, c) and _runs_at(ext, m.model, size, c)
    if free:
        ratio = 1.0
    else:  # a fixed-size graph: the image (plus its margin) is resampled onto the model's input
        canvas = (int(m.input_size[0]), int(m.input_size[1]))
        ratio = max((h + _margin(h)) / canvas[0], (w + _margin(w)) / canvas[1])
    g = _Graph(extractor=ext, layer_channels=info.channels, size=size, canvas=canvas, ratio=ratio, free_size=free)
    _compile(m, g)
    with _GRAPH_LOCK:
        per[key] = g
        while len(per) > MAX_GRAPHS_PER_MODEL:
            per.popitem(last=False)
    return g


def _frequency_scale(h: int, w: int) -> np.ndarray:
    """Lucid's 1/f scaling of the spectrum (so that every frequency learns at a similar rate)."""
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    freqs = np.sqrt(fx * fx + fy * fy)
    scale = 1.0 / np.maximum(freqs, 1.0 / max(w, h))
    return (scale * np.sqrt(w * h)).astype(np.float32)


#: Lucid's "redirected" ReLU gradient acts in the first steps only.
REDIRECT_STEPS = 16
_TLS = threading.local()
_PATCH_LOCK = threading.Lock()
_PATCH_USERS = 0
_ORIGINAL: dict[str, Any] = {}


def _redirected(name: str) -> Callable[..., Any]:
    """``tf.nn.relu`` / ``relu6`` as Lucid's ``redirected_relu_grad`` while this thread builds a step.

    A ReLU that is off (input < 0) passes no gradient, so a channel that is
    silent on the grey starting image would never move. For the first
    :data:`REDIRECT_STEPS` steps, where a row's ReLU gradient is all zero, the
    gradient passes wherever it pushes the input up (Lucid, ``render_vis``'s
    default). Other threads, and this thread outside a step's tracing, get
    TensorFlow's own function.
    """
    import tensorflow as tf

    original = _ORIGINAL[name]
    upper = 6.0 if name == "relu6" else None

    def fn(features: Any, name: Any = None) -> Any:
        step = getattr(_TLS, "step", None)
        if step is None:
            return original(features, name=name)

        @tf.custom_gradient
        def redirected(x: Any) -> Any:
            y = original(x)

            def grad(dy: Any) -> Any:
                off = x < 0.0 if upper is None else tf.logical_or(x < 0.0, x > upper)

                def plain() -> Any:
                    return tf.where(off, tf.zeros_like(dy), dy)

                def redirect() -> Any:
                    relu_grad = plain()
                    # dy > 0 where the loss would fall as x falls: below zero, pass only what pushes upward.
                    pushing_down = tf.logical_and(x < 0.0, dy > 0.0)
                    if upper is not None:
                        pushing_down = tf.logical_or(pushing_down, tf.logical_and(x > upper, dy < 0.0))
                    redirected_grad = tf.where(pushing_down, tf.zeros_like(dy), dy)
                    rows = tf.shape(x)[0]
                    norm = tf.norm(tf.reshape(relu_grad, [rows, -1]), axis=1)
                    norm = tf.reshape(norm, tf.concat([[rows], tf.ones([tf.rank(x) - 1], tf.int32)], 0))
                    return tf.where(norm > 0.0, relu_grad, redirected_grad)

                # Only the first steps pay for the redirection; later ones run the plain ReLU gradient.
                return tf.cond(step > float(REDIRECT_STEPS), plain, redirect)

            return y, grad

        return redirected(features)

    return fn


class _RedirectReLU:
    """While a step function is traced in this thread, ReLUs use the redirected gradient."""

    def __init__(self, step: Any):
        self.step = step

    def __enter__(self) -> "_RedirectReLU":
        global _PATCH_USERS
        import tensorflow as tf

        with _PATCH_LOCK:
            if _PATCH_USERS == 0:
                for name in ("relu", "relu6"):
                    _ORIGINAL.setdefault(name, getattr(tf.nn, name))
                    setattr(tf.nn, name, _redirected(name))
            _PATCH_USERS += 1
        _TLS.step = self.step
        return self

    def __exit__(self, *exc: Any) -> None:
        global _PATCH_USERS
        import tensorflow as tf

        _TLS.step = None
        with _PATCH_LOCK:
            _PATCH_USERS -= 1
            if _PATCH_USERS == 0:
                for name, fn in _ORIGINAL.items():
                    setattr(tf.nn, name, fn)


def _compile(m: Any, g: _Graph) -> None:
    import tensorflow as tf

    a, b = _affine_preprocess(m)
    a_t, b_t = tf.constant(a), tf.constant(b)
    c = int(m.channels)
    h, w = g.size
    ch, cw = g.canvas
    scale = tf.constant(_frequency_scale(h, w))
    color = tf.constant(_COLOR.T)
    ext = g.extractor

    def pixels(spec: Any) -> Any:
        """(B, C, fh, fw, 2) spectrum -> (B, h, w, C) pixels in 0..1."""
        z = tf.complex(spec[..., 0] * scale, spec[..., 1] * scale)
        img = tf.signal.irfft2d(z, fft_length=[h, w])  # (B, C, h, w)
        img = tf.transpose(img, [0, 2, 3, 1]) / 4.0
        if c == 3:
            img = tf.reshape(tf.reshape(img, [-1, 3]) @ color, tf.shape(img))
        return tf.sigmoid(img)

    def model_input(x01: Any) -> Any:
        return tf.tensordot(x01 * 255.0, a_t, axes=[[3], [0]]) + b_t

    def objective(acts: Any, channels: Any) -> Any:
        """Per row: how strongly the channel fires, less a hinge when another channel comes close."""
        fired = tf.reduce_mean(tf.nn.relu(acts), axis=[1, 2])  # (B, C)
        own = tf.gather(fired, channels, axis=1, batch_dims=1)
        signed = tf.reduce_mean(tf.gather(acts, channels, axis=3, batch_dims=1), axis=[1, 2])
        mask = tf.one_hot(channels, g.layer_channels, on_value=True, off_value=False)
        rival = tf.reduce_max(tf.where(mask, tf.fill(tf.shape(fired), -np.inf), fired), axis=1)
        rival = tf.where(tf.math.is_finite(rival), rival, tf.zeros_like(rival))  # a one-channel layer
        return own + SIGNED_WEIGHT * signed - HINGE * tf.nn.relu(rival - MARGIN * own)

    spec_sig = tf.TensorSpec([None, c, h, w // 2 + 1, 2], tf.float32)

    @tf.function(input_signature=[spec_sig, spec_sig, spec_sig, tf.TensorSpec([], tf.float32),
                                  tf.TensorSpec([None], tf.int32), tf.TensorSpec([8], tf.float32)])
    def traced_step(spec: Any, m1: Any, m2: Any, t: Any, channels: Any, transform: Any) -> Any:
        with _RedirectReLU(t), tf.GradientTape() as tape:  # the body runs only while tracing
            tape.watch(spec)
            img = pixels(spec)
            n = tf.shape(img)[0]
            x = tf.raw_ops.ImageProjectiveTransformV3(
                images=img, transforms=tf.tile(transform[None, :], [n, 1]), output_shape=[ch, cw],
                fill_value=0.5, interpolation="BILINEAR", fill_mode="CONSTANT")
            acts = ext(model_input(x), training=False)
            obj = objective(acts, channels)
            loss = -tf.reduce_sum(obj)
        grad = tape.gradient(loss, spec)
        beta1, beta2 = 0.9, 0.999
        m1 = beta1 * m1 + (1 - beta1) * grad
        m2 = beta2 * m2 + (1 - beta2) * grad * grad
        lr = LEARNING_RATE * tf.sqrt(1 - beta2 ** t) / (1 - beta1 ** t)
        spec = spec - lr * m1 / (tf.sqrt(m2) + 1e-8)
        return spec, m1, m2, obj

    def final(spec: Any) -> Any:
        """The finished images (uint8) and their statistics of every channel: run once, eagerly (no tracing)."""
        img = pixels(spec)
        quantised = tf.round(img * 255.0)
        x = quantised / 255.0
        if not g.free_size:
            x = tf.image.resize(x, [int(m.input_size[0]), int(m.input_size[1])], method="bilinear")
        acts = ext(model_input(x), training=False)
        stats = tf.stack([tf.reduce_mean(acts, axis=[1, 2]), tf.reduce_mean(tf.nn.relu(acts), axis=[1, 2]),
                          tf.reduce_mean(tf.abs(acts), axis=[1, 2]), tf.reduce_max(acts, axis=[1, 2]),
                          tf.reduce_min(acts, axis=[1, 2])], axis=1)
        return tf.cast(quantised, tf.uint8), stats

    g.step, g.final = traced_step, final


def _transforms(seed: int, steps: int, g: _Graph) -> np.ndarray:
    """Per step, the 8 numbers of a projective transform from canvas to image (jitter, scale, rotation)."""
    rng = np.random.default_rng([int(seed), 7919])
    h, w = g.size
    ch, cw = g.canvas
    jy, jx = _jitter(h), _jitter(w)
    out = np.zeros((steps, 8), dtype=np.float32)
    for i in range(steps):
        dy, dx = rng.integers(-jy, jy + 1), rng.integers(-jx, jx + 1)
        s = _SCALES[rng.integers(len(_SCALES))]
        th = _ANGLES[rng.integers(len(_ANGLES))]
        k = g.ratio / s
        a0, a1 = k * math.cos(th), k * math.sin(th)
        b0, b1 = -k * math.sin(th), k * math.cos(th)
        cxo, cyo, cxi, cyi = (cw - 1) / 2, (ch - 1) / 2, (w - 1) / 2, (h - 1) / 2
        out[i] = [a0, a1, cxi + dx - a0 * cxo - a1 * cyo, b0, b1, cyi + dy - b0 * cxo - b1 * cyo, 0, 0]
    return out


def _initial_spectrum(seed: int, channel: int, c: int, h: int, w: int) -> np.ndarray:
    """A small random spectrum (Lucid: sd 0.01), from a generator of its own per (seed, channel)."""
    rng = np.random.default_rng([int(seed), int(channel), 104729])
    return (0.01 * rng.standard_normal((c, h, w // 2 + 1, 2))).astype(np.float32)


def _bytes_per_row(m: Any, layer: str, g: _Graph) -> int:
    """Rough memory of one batch row's forward + backward up to ``layer`` (for batch sizing)."""
    from vizlib.layers import find_layer

    info = find_layer(m, layer)
    area = (g.canvas[0] * g.canvas[1]) / max(1, int(m.input_size[0]) * int(m.input_size[1]))
    total = 0
    for i in m.layers:
        if i.index > info.index:
            break
        if i.output_shape and all(isinstance(d, int) for d in i.output_shape):
            total += int(np.prod(i.output_shape))
    return int(max(total * area, 1) * 4 * 3)


class _State:
    """One optimisation in progress in this process: parameters, Adam's moments, steps done."""

    def __init__(self, m: Any, layer: str, channels: list[int], size: tuple[int, int], steps: int, seed: int):
        import tensorflow as tf

        self.g = _graph(m, layer, size)
        self.km = m.model
        self.steps = int(steps)
        self.done = 0
        self.channels = tf.constant(np.asarray(channels, dtype=np.int32))
        spec = np.stack([_initial_spectrum(seed, ch, int(m.channels), size[0], size[1]) for ch in channels])
        self.spec = tf.constant(spec)
        self.m1 = tf.zeros_like(self.spec)
        self.m2 = tf.zeros_like(self.spec)
        self.transforms = tf.constant(_transforms(seed, self.steps, self.g))
        self.nbytes = spec.nbytes * 3
        self.lock = threading.Lock()

    def advance(self, n: int) -> None:
        import tensorflow as tf

        with self.lock:
            for _ in range(max(0, min(int(n), self.steps - self.done))):
                t = tf.constant(float(self.done + 1))
                with _run_lock(self.km):
                    self.spec, self.m1, self.m2, _ = self.g.step(
                        self.spec, self.m1, self.m2, t, self.channels, self.transforms[self.done])
                self.done += 1

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        with _run_lock(self.km):
            img, means = self.g.final(self.spec)
        return np.asarray(img, dtype=np.uint8), np.asarray(means, dtype=np.float32)


_STATES: "OrderedDict[str, _State]" = OrderedDict()
_STATES_LOCK = threading.Lock()


def _state(m: Any, job: str, layer: str, channels: list[int], size: tuple[int, int], steps: int,
           seed: int) -> _State:
    with _STATES_LOCK:
        found = _STATES.get(job)
        if found is not None:
            _STATES.move_to_end(job)
            return found
    st = _State(m, layer, channels, size, steps, seed)
    with _STATES_LOCK:
        _STATES[job] = st
        while len(_STATES) > MAX_STATES or (
                len(_STATES) > 1 and sum(s.nbytes for s in _STATES.values()) > STATE_BYTES):
            _STATES.popitem(last=False)
    return st


def _check_layer_channels(m: Any, layer: str, channels: Sequence[int]) -> list[int]:
    from vizlib.layers import find_layer

    info = find_layer(m, layer)
    chosen = [int(c) for c in channels]
    if not chosen:
        raise InputError("No channels chosen.")
    bad = [c for c in chosen if not 0 <= c < info.channels]
    if bad:
        raise InputError(f"Layer '{layer}' has channels 0 to {info.channels - 1}; there is no channel {bad[0]}.")
    return chosen


def _receptive_field(m: Any, layer: str) -> int:
    """The side (input pixels) of what one unit of ``layer`` sees, from the kernels and strides."""
    side = max(int(m.input_size[0]), int(m.input_size[1]))
    try:
        from vizlib.atlas.rf import receptive_fields

        rf = receptive_fields(m.model, [layer])[layer]
    except Exception:  # noqa: BLE001 - an exotic graph: assume the whole image
        return side
    if rf.y is None or rf.x is None:
        return side
    return int(math.ceil(max(rf.y.hi - rf.y.lo, rf.x.hi - rf.x.lo))) + 1


def _default_size(m: Any, rf: int) -> tuple[int, int]:
    side = max(DEFAULT_MIN_SIDE, 16 * math.ceil(2 * rf / 16))
    side = min(side, DEFAULT_MAX_SIDE, max(int(m.input_size[0]), int(m.input_size[1])))
    return int(side), int(side)


def _resolve_size(size: Any) -> Optional[tuple[int, int]]:
    if size is None:
        return None
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        h = w = int(size)
    elif isinstance(size, (tuple, list)) and len(size) == 2:
        h, w = (int(v) for v in size)
    else:
        raise InputError(f"size must be a number of pixels or (height, width), not {size!r}.")
    if not (MIN_SIDE <= h <= MAX_SIDE and MIN_SIDE <= w <= MAX_SIDE):
        raise InputError(f"size must lie between {MIN_SIDE} and {MAX_SIDE} pixels, not {h}x{w}.")
    return h, w


@op("featvis.plan")
def _plan_op(m: Any, batch: Optional[np.ndarray], *, layer: str, size: Optional[list] = None) -> dict:
    """Image size (default from the receptive field), the canvas and how many channels fit one batch."""
    _require_safe_gradients()
    from vizlib.layers import find_layer

    info = find_layer(m, layer)
    rf = _receptive_field(m, layer)
    hw = _resolve_size(size) or _default_size(m, rf)
    g = _graph(m, layer, hw)
    per_row = _bytes_per_row(m, layer, g)
    return {"size": list(hw), "receptive_field": rf, "canvas": list(g.canvas), "free_size": g.free_size,
            "batch": int(max(1, min(MAX_CHANNELS, BATCH_BYTES // per_row))), "layer_channels": info.channels}


@op("featvis.optimise")
def _optimise_op(m: Any, batch: Optional[np.ndarray], *, layer: str, channels: list, size: list, steps: int,
                 seed: int, job: str, advance: Optional[int] = None) -> dict:
    """Advance one optimisation by ``advance`` steps (all when None); its state stays in this process.

    Returns ``done`` and ``steps``; once done, ``images`` (uint8 (B, H, W, C))
    and ``stats`` (float32 (B, len(STATS), layer channels): each image's
    statistics of every channel's map, see :data:`STATS`).
    """
    _require_safe_gradients()
    chosen = _check_layer_channels(m, layer, channels)
    hw = _resolve_size(size)
    steps = int(steps)
    if not 1 <= steps <= MAX_STEPS:
        raise InputError(f"steps must lie between 1 and {MAX_STEPS}, not {steps}.")
    st = _state(m, str(job), layer, chosen, hw, steps, int(seed))
    st.advance(steps if advance is None else int(advance))
    out: dict = {"done": st.done, "steps": st.steps}
    if st.done >= st.steps:
        out["images"], out["stats"] = st.finish()
        with _STATES_LOCK:
            _STATES.pop(str(job), None)
    return out


@op("featvis.cancel")
def _cancel_op(m: Any, batch: Optional[np.ndarray], *, job: str) -> dict:
    """Forget an optimisation (the page moved on)."""
    with _STATES_LOCK:
        return {"dropped": _STATES.pop(str(job), None) is not None}


# --------------------------------------------------------------------------- results


#: Statistics of every channel's map on each visualisation (``FeatureVisualization.stats``).
STATS = ("mean", "fired", "activity", "peak", "floor")


@dataclass
class FeatureVisualization:
    """Images made for channels of one layer, and what each image does to every channel of that layer.

    ``images[i]`` was optimised for ``channels[i]``. ``stats[name][i, d]`` is a
    statistic of channel ``d``'s map on ``images[i]``: ``"mean"`` (mean
    activation), ``"fired"`` (mean of its positive part), ``"activity"`` (mean
    absolute activation, how the dashboard ranks channels), ``"peak"`` (max),
    ``"floor"`` (min).
    """

    model_key: str
    layer: str
    channels: list[int]
    images: np.ndarray  # uint8 (K, H, W, C)
    stats: dict[str, np.ndarray]  # name -> float32 (K, layer channels)
    size: tuple[int, int]
    steps: int
    seed: int
    cached: list[bool] = field(default_factory=list)  # which came from the disk cache

    def own(self, stat: str = "mean") -> np.ndarray:
        """``stat`` of each image's own channel: float32 (K,)."""
        arr = self.stats[stat]
        return arr[np.arange(len(self.channels)), self.channels]

    def rank(self, stat: str = "fired") -> list[int]:
        """Rank of each image's own channel among the layer's channels by ``stat`` (1: the highest)."""
        arr = self.stats[stat]
        own = self.own(stat)
        return [1 + int(np.sum(arr[i] > own[i])) for i in range(len(self.channels))]

    def flat(self) -> list[bool]:
        """True where the channel's map stays constant on its own image: nothing found that moves it.

        A channel whose kernel is all zeros (the bundled model's first layer has
        two) or a ReLU channel that never switches on has no pattern to show.
        """
        peak, floor = self.own("peak"), self.own("floor")
        scale = np.maximum(1.0, np.abs(peak))
        return [bool(v) for v in (peak - floor) <= 1e-6 * scale]


# --------------------------------------------------------------------------- the disk cache


def cache_dir() -> Path:
    """Where finished visualisations are kept: ``$CNN_VIZ_CACHE_DIR/featvis`` (default ``~/.cache/cnn-viz``)."""
    from vizlib.settings import settings

    return Path(settings().cache_dir) / "featvis"


#: Default bound of the disk cache (``CNN_VIZ_FEATVIS_CACHE_MB`` overrides it).
CACHE_MB = 256


class DiskCache:
    """Finished visualisations on disk, one channel per entry, least recently used evicted first.

    An entry is two ``.npy`` files (the image, and its statistics of every
    channel of the layer) named by the SHA-256 of the key. Files are written to
    a temporary name and renamed, so a reader never sees half a file; reads
    load with ``allow_pickle=False`` and check dtype and shape, and a bad
    entry is deleted and counts as a miss. A hit touches the files' mtime;
    after each write the oldest entries go until the folder is under
    ``max_bytes``.
    """

    def __init__(self, folder: Optional[str | Path] = None, max_bytes: Optional[int] = None):
        self.folder = Path(folder) if folder is not None else cache_dir()
        if max_bytes is None:
            raw = os.environ.get("CNN_VIZ_FEATVIS_CACHE_MB", "").strip()
            try:
                max_bytes = int(float(raw) * 2**20) if raw else CACHE_MB * 2**20
            except ValueError:
                max_bytes = CACHE_MB * 2**20
        self.max_bytes = max(0, int(max_bytes))
        self._lock = threading.Lock()

    @staticmethod
    def key(*parts: Any) -> str:
        """A file-name-safe digest of the JSON of ``parts``."""
        text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def _paths(self, key: str) -> tuple[Path, Path]:
        return self.folder / f"{key}.img.npy", self.folder / f"{key}.stats.npy"

    def get(self, key: str, shape: tuple[int, int, int], layer_channels: int,
            ) -> Optional[tuple[np.ndarray, np.ndarray]]:
        """(image uint8 ``shape``, stats float32 (len(STATS), layer_channels)) or None."""
        img_path, stats_path = self._paths(key)
        try:
            img = np.load(img_path, allow_pickle=False)
            stats = np.load(stats_path, allow_pickle=False)
        except (OSError, ValueError, EOFError):
            if img_path.exists() or stats_path.exists():
                self._drop(key)
            return None
        if (img.dtype != np.uint8 or tuple(img.shape) != tuple(shape) or stats.dtype != np.float32
                or stats.shape != (len(STATS), int(layer_channels)) or not np.all(np.isfinite(stats))):
            self._drop(key)
            return None
        now = time.time()
        for p in (img_path, stats_path):
            try:
                os.utime(p, (now, now))
            except OSError:
                pass
        return img, stats

    def put(self, key: str, image: np.ndarray, stats: np.ndarray) -> None:
        """Store one entry (atomically), then trim the folder to ``max_bytes``."""
        if self.max_bytes <= 0:
            return
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            img_path, stats_path = self._paths(key)
            self._write(stats_path, np.ascontiguousarray(stats, dtype=np.float32))
            self._write(img_path, np.ascontiguousarray(image, dtype=np.uint8))
        except OSError:
            return  # a read-only or full disk: the cache is an optimisation, never an error
        self.trim()

    def _write(self, path: Path, arr: np.ndarray) -> None:
        buf = io.BytesIO()
        np.save(buf, arr, allow_pickle=False)
        atomic_write_bytes(path, buf.getvalue())

    def _drop(self, key: str) -> None:
        for p in self._paths(key):
            try:
                p.unlink()
            except OSError:
                pass

    def entries(self) -> list[tuple[str, float, int]]:
        """(key, last use, bytes) of every entry, oldest first."""
        found: dict[str, list[float]] = {}
        try:
            it = list(os.scandir(self.folder))
        except OSError:
            return []
        for e in it:
            name = e.name
            if not name.endswith(".npy") or name.startswith(".tmp-"):
                continue
            key = name.split(".", 1)[0]
            try:
                st = e.stat()
            except OSError:
                continue
            rec = found.setdefault(key, [0.0, 0])
            rec[0] = max(rec[0], st.st_mtime)
            rec[1] += st.st_size
        return sorted(((k, v[0], int(v[1])) for k, v in found.items()), key=lambda t: t[1])

    def size(self) -> int:
        """Bytes held."""
        return sum(b for _, _, b in self.entries())

    def trim(self) -> None:
        """Delete least recently used entries until the folder holds at most ``max_bytes``."""
        with self._lock:
            entries = self.entries()
            total = sum(b for _, _, b in entries)
            for key, _, nbytes in entries:
                if total <= self.max_bytes:
                    break
                self._drop(key)
                total -= nbytes
            cutoff = time.time() - 3600
            try:  # temporary files of writers that died
                for e in os.scandir(self.folder):
                    if e.name.startswith(".tmp-") and e.stat().st_mtime < cutoff:
                        os.unlink(e.path)
            except OSError:
                pass

    def clear(self) -> None:
        for key, _, _ in self.entries():
            self._drop(key)


# --------------------------------------------------------------------------- the public calls


class Cancelled(Exception):
    """A render stopped by its caller (``should_stop`` returned True)."""


_PLANS: "OrderedDict[tuple, dict]" = OrderedDict()
_PLANS_LOCK = threading.Lock()


def _plan(m: Any, layer: str, size: Optional[tuple[int, int]]) -> dict:
    # What a plan says (sizes, batch) depends on the architecture, not the weights: the model's key will do.
    from vizlib.layers import find_layer

    key = (str(m.key), m.preprocess_name, tuple(m.input_size), layer, find_layer(m, layer).output_shape,
           len(m.layers), size)
    with _PLANS_LOCK:
        found = _PLANS.get(key)
        if found is not None:
            return found
    plan = m.run("featvis.plan", None, layer=layer, size=None if size is None else list(size))
    try:
        checked = {"size": (int(plan["size"][0]), int(plan["size"][1])), "batch": max(1, int(plan["batch"])),
                   "layer_channels": int(plan["layer_channels"]), "canvas": [int(v) for v in plan["canvas"]],
                   "free_size": bool(plan["free_size"]), "receptive_field": int(plan["receptive_field"])}
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise InputError("The model's process sent a reply the dashboard can't read.") from exc
    with _PLANS_LOCK:
        _PLANS[key] = checked
        while len(_PLANS) > 256:
            _PLANS.popitem(last=False)
    return checked


def _cache_key(m: Any, digest: str, layer: str, channel: int, size: tuple[int, int], steps: int, seed: int) -> str:
    return DiskCache.key(ALGORITHM, digest, m.preprocess_name, list(m.input_size), int(m.channels), layer,
                         int(channel), list(size), int(steps), int(seed))


def render(model: Any, layer: str, channels: Sequence[int], *, size: Any = None, steps: Optional[int] = None,
           seed: int = 0, cache: "bool | DiskCache | None" = True, progress: Optional[ProgressFn] = None,
           should_stop: Optional[Callable[[], bool]] = None) -> FeatureVisualization:
    """Feature visualisations of ``channels`` of ``layer``, with what each does to the whole layer.

    Like :func:`feature_visualization`, plus: ``cache`` (True: the default
    :class:`DiskCache`; a ``DiskCache``; False/None: compute afresh),
    ``progress(steps done, steps in all)`` after every few steps, and
    ``should_stop()``, polled between chunks of steps (True raises
    :class:`Cancelled`). Channels missing from the cache are optimised
    together, in as few batches as memory allows.
    """
    from vizlib.contract import as_model

    m = as_model(model)
    steps = DEFAULT_STEPS if steps is None else int(steps)
    if not 1 <= steps <= MAX_STEPS:
        raise InputError(f"steps must lie between 1 and {MAX_STEPS}, not {steps}.")
    wanted = _check_channels_info(m, layer, channels)
    if len(set(wanted)) > MAX_CHANNELS:
        raise InputError(f"At most {MAX_CHANNELS} channels at a time.")
    hw = _resolve_size(size)
    plan = _plan(m, layer, hw)
    hw, layer_channels = plan["size"], plan["layer_channels"]
    store = DiskCache() if cache is True else (cache or None)
    shape = (hw[0], hw[1], int(m.channels))
    unique = list(dict.fromkeys(wanted))
    found: dict[int, tuple[np.ndarray, np.ndarray, bool]] = {}
    keys: dict[int, str] = {}
    if store is not None:
        digest = m.weights_digest()
        keys = {c: _cache_key(m, digest, layer, c, hw, steps, seed) for c in unique}
        for c in unique:
            hit = store.get(keys[c], shape, layer_channels)
            if hit is not None:
                found[c] = (hit[0], hit[1], True)
    missing = [c for c in unique if c not in found]
    total = steps * len(unique)
    done_before = steps * (len(unique) - len(missing))
    if progress:
        progress(done_before, total)
    for start in range(0, len(missing), plan["batch"]):
        chunk = missing[start:start + plan["batch"]]
        images, stats = _optimise(m, layer, chunk, hw, steps, seed, progress=(
            None if progress is None else
            (lambda d, _t, base=done_before + steps * start, k=len(chunk): progress(base + d * k, total))),
            should_stop=should_stop)
        for i, c in enumerate(chunk):
            found[c] = (images[i], stats[i], False)
            if store is not None:
                store.put(keys[c], images[i], stats[i])
    order = [found[c] for c in wanted]
    stats_all = np.stack([o[1] for o in order])  # (K, len(STATS), layer channels)
    return FeatureVisualization(
        model_key=str(getattr(m, "key", "")), layer=layer, channels=list(wanted),
        images=np.stack([o[0] for o in order]),
        stats={name: np.ascontiguousarray(stats_all[:, k, :]) for k, name in enumerate(STATS)},
        size=hw, steps=steps, seed=int(seed), cached=[o[2] for o in order])


def _check_channels_info(m: Any, layer: str, channels: Any) -> list[int]:
    """Channel numbers checked against the layer (from the model's layer list: no computation)."""
    if isinstance(channels, (int, np.integer)) and not isinstance(channels, bool):
        channels = [int(channels)]
    return _check_layer_channels(m, layer, channels)


#: Seconds one call of the optimisation should take, so progress moves and a cancel is heard.
CHUNK_SECONDS = 0.5


def _optimise(m: Any, layer: str, channels: list[int], size: tuple[int, int], steps: int, seed: int, *,
              progress: Optional[ProgressFn] = None, should_stop: Optional[Callable[[], bool]] = None,
              ) -> tuple[np.ndarray, np.ndarray]:
    """Run one batch of channels to the end, a few steps per call, where the model lives."""
    job = uuid.uuid4().hex
    advance, done, restarts = 4, 0, 0
    params = dict(layer=layer, channels=[int(c) for c in channels], size=list(size), steps=int(steps),
                  seed=int(seed), job=job)
    try:
        while True:
            if should_stop is not None and should_stop():
                raise Cancelled()
            t0 = time.perf_counter()
            r = m.run("featvis.optimise", None, advance=int(advance), **params)
            spent = time.perf_counter() - t0
            now = int(r.get("done", -1))
            if now < done:  # the model's process started afresh and lost the state: it restarts from 0
                restarts += 1
                if restarts > 2:
                    raise InputError("The model's process keeps stopping during feature visualisation; "
                                     "try fewer channels or fewer steps.")
            done = now
            if progress is not None:
                progress(min(done, steps), steps)
            if done >= steps:
                images, stats = r.get("images"), r.get("stats")
                k = len(channels)
                if (not isinstance(images, np.ndarray) or images.dtype != np.uint8
                        or images.shape != (k, size[0], size[1], int(m.channels))
                        or not isinstance(stats, np.ndarray) or stats.ndim != 3 or stats.shape[:2] != (k, len(STATS))):
                    raise InputError("The model's process sent a reply the dashboard can't read.")
                return images, stats.astype(np.float32, copy=False)
            per_step = spent / max(1, advance)
            advance = int(max(1, min(64, CHUNK_SECONDS / max(per_step, 1e-4))))
    except BaseException:
        try:
            m.run("featvis.cancel", None, job=job)
        except Exception:  # noqa: BLE001 - best effort: the state is evicted anyway
            pass
        raise


def feature_visualization(model: Any, layer: str, channels: Sequence[int], *, size: Any = None,
                          steps: Optional[int] = None, seed: int = 0) -> np.ndarray:
    """Images that excite ``channels`` of ``layer`` most: uint8 ``(len(channels), H, W, C)``.

    ``model`` is anything :func:`vizlib.load_model` accepts or returns (an
    uploaded model computes in its own process); ``C`` is the model's input
    channels (1 or 3). ``H x W`` is ``size`` (pixels, or ``(height, width)``),
    by default about twice the layer's receptive field, between 64 and 128
    pixels and at most the model's input size. ``steps`` of optimisation
    (default :data:`DEFAULT_STEPS`); the same ``seed`` gives the same images.
    Finished images are cached on disk (:class:`DiskCache`); :func:`render`
    gives more control and the statistics of every channel.
    """
    return render(model, layer, channels, size=size, steps=steps, seed=seed).images


def default_size(model: Any, layer: str) -> tuple[int, int]:
    """The image size :func:`feature_visualization` uses for ``layer`` when given none."""
    from vizlib.contract import as_model

    m = as_model(model)
    return _plan(m, layer, None)["size"]


# --------------------------------------------------------------------------- background jobs


_EXECUTOR: Any = None
_EXECUTOR_LOCK = threading.Lock()


def _executor() -> Any:
    """One worker thread for all renders: on a small server they would only fight over the cores."""
    global _EXECUTOR
    with _EXECUTOR_LOCK:
        if _EXECUTOR is None:
            from concurrent.futures import ThreadPoolExecutor

            _EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vizlib-featvis")
        return _EXECUTOR


class Job:
    """A :func:`render` running in a background thread: poll ``progress``, take ``result()`` when ``done``.

    For a page that must stay responsive while the optimisation runs::

        job = Job(model, "conv2d_7", [0, 1, 2])
        while not job.done:
            show(job.fraction)          # e.g. a progress bar, polled
        vis = job.result()              # FeatureVisualization (or the render's exception)

    Jobs run one at a time in a shared worker thread (``state`` is
    ``"queued"`` until theirs starts); ``cancel()`` stops one between chunks
    of steps. With ``abandon_after`` (seconds), a job that nobody has
    ``touch()``-ed for that long stops by itself (``state`` ``"abandoned"``):
    a page whose visitor left does not keep the worker busy.
    """

    def __init__(self, model: Any, layer: str, channels: Sequence[int], *, size: Any = None,
                 steps: Optional[int] = None, seed: int = 0, cache: "bool | DiskCache | None" = True,
                 abandon_after: Optional[float] = None):
        self.layer = layer
        self.channels = [int(c) for c in channels]
        self.steps_done, self.steps_total = 0, max(1, len(self.channels)) * (steps or DEFAULT_STEPS)
        self.state = "queued"
        self.created = time.monotonic()
        self.started: Optional[float] = None
        self.finished: Optional[float] = None
        self.abandon_after = abandon_after
        self._seen = time.monotonic()
        self._stop = threading.Event()
        self._ended = threading.Event()

        def progress(done: int, total: int) -> None:
            self.steps_done, self.steps_total = int(done), max(1, int(total))

        def should_stop() -> bool:
            if self._stop.is_set():
                return True
            if self.abandon_after is not None and time.monotonic() - self._seen > self.abandon_after:
                self.state = "abandoned"
                return True
            return False

        def work() -> FeatureVisualization:
            if should_stop():  # cancelled or abandoned while queued
                self.finished = time.monotonic()
                self._ended.set()
                raise Cancelled()
            self.state = "running"
            self.started = time.monotonic()
            try:
                out = render(model, layer, self.channels, size=size, steps=steps, seed=seed, cache=cache,
                             progress=progress, should_stop=should_stop)
                self.state = "done"
                return out
            except Cancelled:
                if self.state != "abandoned":
                    self.state = "cancelled"
                raise
            except BaseException:
                self.state = "failed"
                raise
            finally:
                self.finished = time.monotonic()
                self._ended.set()

        self._future = _executor().submit(work)

    @property
    def done(self) -> bool:
        """Finished: a result, an error, or cancelled."""
        return self._ended.is_set()

    def touch(self) -> None:
        """Someone still wants the result (with ``abandon_after``, a job nobody touches stops)."""
        self._seen = time.monotonic()

    def seconds_left(self) -> Optional[float]:
        """A rough estimate from the pace so far (None until a few steps have run)."""
        if self.started is None or self.steps_done < 8 or self.done:
            return None
        rate = (time.monotonic() - self.started) / self.steps_done
        return rate * max(0, self.steps_total - self.steps_done)

    @property
    def fraction(self) -> float:
        """Share of the optimisation steps done, 0..1."""
        return 1.0 if self.state == "done" else min(1.0, self.steps_done / max(1, self.steps_total))

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Block up to ``timeout`` seconds; True when finished."""
        return self._ended.wait(timeout)

    def result(self, timeout: Optional[float] = None) -> FeatureVisualization:
        """The :class:`FeatureVisualization` (waits); re-raises the render's exception."""
        return self._future.result(timeout)

    def error(self) -> Optional[BaseException]:
        """The exception the render raised, once finished (None on success or while running)."""
        if not self.done:
            return None
        return self._future.exception()

    def cancel(self) -> None:
        """Stop at the next chunk of steps (or before starting, if still queued)."""
        self._stop.set()
        if self._future.cancel():
            self.state = "cancelled"
            self.finished = time.monotonic()
            self._ended.set()


# --------------------------------------------------------------------------- figures and PNG export


def _as_images(images: Any) -> np.ndarray:
    arr = np.asarray(images)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] not in (1, 3) or arr.dtype != np.uint8 or len(arr) == 0:
        raise InputError(f"Expected uint8 images (K, H, W, 1 or 3), got {arr.dtype} {arr.shape}.")
    return arr


def _fit(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """One (H, W, C) uint8 image as RGB at ``size``: whole-number enlargement stays crisp."""
    from PIL import Image

    rgb = np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image
    h, w = rgb.shape[:2]
    th, tw = size
    if (th, tw) == (h, w):
        return rgb
    if th % h == 0 and tw % w == 0:
        return np.repeat(np.repeat(rgb, th // h, axis=0), tw // w, axis=1)
    resample = Image.LANCZOS if th < h else Image.BILINEAR
    return np.asarray(Image.fromarray(np.ascontiguousarray(rgb), mode="RGB").resize((tw, th), resample))


def image_mosaic(images: Any, *, cols: Optional[int] = None, cell_px: Optional[int] = None,
                 ) -> tuple[np.ndarray, dict]:
    """(K, H, W, C) uint8 images -> one RGB mosaic, laid out as :func:`vizlib.figures.mosaic` lays out maps."""
    from vizlib import figures

    arr = _as_images(images)
    k, h, w = arr.shape[:3]
    cols = max(1, min(int(cols) if cols else max(1, math.ceil(math.sqrt(k))), k))
    rows = math.ceil(k / cols)
    ch, cw = figures._cell_size(h, w, cell_px or figures._budget_cell(h, w, cols))
    gap = figures.GAP_PX
    canvas = np.empty((rows * ch + (rows + 1) * gap, cols * cw + (cols + 1) * gap, 3), dtype=np.uint8)
    canvas[:] = figures.BACKGROUND
    for i in range(k):
        r, c = divmod(i, cols)
        y0, x0 = gap + r * (ch + gap), gap + c * (cw + gap)
        canvas[y0:y0 + ch, x0:x0 + cw] = _fit(arr[i], (ch, cw))
    geo = {"rows": rows, "cols": cols, "cell": (ch, cw), "size": canvas.shape[:2], "lo": 0.0, "hi": 255.0}
    return canvas, geo


def _names(channels: Sequence[int], labels: Optional[Sequence[str]]) -> list[str]:
    return [f"{c} {labels[c]}" if labels is not None and c < len(labels) else str(c) for c in channels]


def feature_grid(vis: Any, channels: Optional[Sequence[int]] = None, *, labels: Optional[Sequence[str]] = None,
                 reference: Optional[np.ndarray] = None, title: Optional[str] = None,
                 highlight: Optional[int] = None, cols: Optional[int] = None, cell_px: Optional[int] = None,
                 height: Optional[int] = None, width_hint: int = 420) -> Any:
    """Feature visualisations as one mosaic, with the layout, labels and clicking of the channel grids.

    ``vis`` is a :class:`FeatureVisualization` (then ``channels`` defaults to
    its own) or uint8 images ``(K, H, W, C)`` with their ``channels``.
    ``labels`` names channels (class names of a classifier's last maps);
    ``reference`` (float, one value per channel of the layer: an image's mean
    activation) adds "x times this image" to the hover. Cells carry the
    channel as ``customdata`` for click-to-select, like
    :func:`vizlib.figures.channel_grid`.
    """
    from vizlib import figures

    if isinstance(vis, FeatureVisualization):
        images, chosen, own = vis.images, list(vis.channels), vis.own("mean")
    else:
        images = _as_images(vis)
        if channels is None:
            raise InputError("Say which channel each image is for (channels=...).")
        chosen, own = [int(c) for c in channels], None
    if len(chosen) != len(images):
        raise InputError(f"{len(images)} images but {len(chosen)} channels.")
    canvas, geo = image_mosaic(images, cols=cols, cell_px=cell_px)
    names = _names(chosen, labels)
    hover = []
    for i, name in enumerate(names):
        text = f"channel {name}<br>the image made to excite it"
        if own is not None:
            text += f"<br>its mean activation here: {own[i]:.3g}"
            if reference is not None and chosen[i] < len(reference):
                ref = float(reference[chosen[i]])
                if ref > 0 and own[i] > 0:
                    text += f" ({own[i] / ref:.1f}× the image's {ref:.3g})"
                else:
                    text += f" (the image: {ref:.3g})"
        hover.append(text)
    return figures._mosaic_figure(
        canvas, geo, names, hover, chosen, title=title, colormap=figures.DEFAULT_COLORMAP, colorbar=False,
        colorbar_title="", highlight=highlight, height=height,
        label_cells=len(chosen) <= figures.MAX_LABELLED_CELLS, width_hint=width_hint)


def feature_png(vis: Any, channels: Optional[Sequence[int]] = None, *, title: str = "",
                labels: Optional[Sequence[str]] = None, cell_px: int = 128, cols: Optional[int] = None) -> bytes:
    """Feature visualisations as a labelled PNG mosaic for slides (the layout of :func:`vizlib.export.grid_png`)."""
    from vizlib.export import _annotated_png

    if isinstance(vis, FeatureVisualization):
        images, chosen = vis.images, list(vis.channels)
    else:
        images = _as_images(vis)
        if channels is None:
            raise InputError("Say which channel each image is for (channels=...).")
        chosen = [int(c) for c in channels]
    if len(chosen) != len(images):
        raise InputError(f"{len(images)} images but {len(chosen)} channels.")
    canvas, geo = image_mosaic(images, cols=cols, cell_px=cell_px)
    return _annotated_png(canvas, geo, _names(chosen, labels), title, "gray", colorbar=False)


def image_png(image: np.ndarray, *, scale: int = 1) -> bytes:
    """One visualisation (H, W, C) uint8 as a PNG (greyscale stays greyscale), optionally enlarged ``scale`` times."""
    import io

    from PIL import Image

    arr = _as_images(image)[0]
    if scale > 1:
        arr = np.repeat(np.repeat(arr, int(scale), axis=0), int(scale), axis=1)
    pil = Image.fromarray(arr[..., 0], mode="L") if arr.shape[2] == 1 else Image.fromarray(arr, mode="RGB")
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return buf.getvalue()
