"""Whether a loaded ``keras.Model`` can be fed as an image model, and the input scaling it expects.

:func:`image_input` refuses, in plain words, what would load and then give garbage in every view (several
inputs, a channels-first layout, whole-number pixels, NaN weights, ...); :func:`resolve_scaling` turns
:data:`AUTO` into the scaling the model wants. :func:`vizlib.models.describe_keras_model` calls both for every
user model (files, uploads in their own process, notebooks' ``keras.Model``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vizlib.errors import InputError


def _channels_first(model: Any) -> bool:
    """Some layer of ``model`` (or of a model inside it) works on channels-first tensors."""
    stack = list(getattr(model, "layers", []))
    while stack:
        layer = stack.pop()
        if getattr(layer, "data_format", None) == "channels_first":
            return True
        stack.extend(getattr(layer, "layers", []) or [])
    return False


def _require_finite_weights(model: Any) -> None:
    """InputError naming the first weight that holds NaN or infinity: every map, score and image of such a
    model is NaN or zero, and each view would show it as if it were a result."""
    for w in getattr(model, "weights", []):  # Keras lists the weights of nested models too
        try:
            values = np.asarray(w.numpy() if hasattr(w, "numpy") else w)
        except Exception:  # a weight that can't be read here is Keras' concern, not this check's
            continue
        # One float64 sum is NaN or infinite exactly when some value is (float32's largest, times any count of
        # weights, stays finite in float64), and costs no array of flags: about 0.3 s on VGG16's 138 M weights.
        if values.dtype.kind == "f" and not np.isfinite(values.sum(dtype=np.float64)):
            bad = int(values.size - np.isfinite(values).sum())
            name = str(getattr(w, "path", None) or getattr(w, "name", "?"))
            raise InputError(
                f"The weights '{name}' hold {bad:,} NaN or infinite value{'s' * (bad != 1)}: every result of "
                "this model would be NaN or zero. Training probably diverged; use an earlier checkpoint or a "
                "smaller learning rate."
            )


#: ``preprocess="auto"`` (the default for model files and your own models): ``"raw"`` when the model rescales its
#: input itself (its first layer, after any random augmentation, is Keras' ``Rescaling(1/255)`` or
#: ``Rescaling(1/127.5, offset=-1)``, as in Keras' own image-classification tutorials), else ``"unit"``.
#: Feeding such a model x / 255 scaled twice: every image reached it as near-black, silently.
AUTO = "auto"


def rescales_itself(model: Any) -> bool:
    """The model's first layer that acts at inference is a ``Rescaling`` from 0..255 to 0..1 or -1..1."""
    import keras

    stack = list(getattr(model, "layers", []))
    while stack:
        layer = stack.pop(0)
        if isinstance(layer, (keras.layers.InputLayer, keras.layers.Resizing, keras.layers.CenterCrop)) or \
                type(layer).__name__.startswith("Random"):
            continue  # augmentation passes images through at inference; resizing and cropping keep their scale
        if isinstance(layer, keras.Model):
            stack = list(layer.layers) + stack
            continue
        if not isinstance(layer, keras.layers.Rescaling):
            return False
        try:
            scale, offset = float(np.mean(layer.scale)), float(np.mean(layer.offset))
        except (TypeError, ValueError):
            return False
        return (abs(scale * 255 - 1) < 1e-3 and abs(offset) < 1e-3) or (
            abs(scale * 127.5 - 1) < 1e-3 and abs(offset + 1) < 1e-3)
    return False


def image_input(model: Any) -> tuple[int, int, int]:
    """(height, width, channels) of ``model``'s one image input (224x224 where it leaves them open), or
    InputError saying why the dashboard can't feed it."""
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    if not inputs:
        raise InputError(
            "This model has no defined input shape (a Sequential model built without an Input). "
            "Give it one, e.g. keras.Input(shape=(224, 224, 3)), and save it again."
        )
    if len(inputs) != 1:
        raise InputError(
            f"This model has {len(inputs)} inputs; the dashboard feeds one image, so it needs "
            "exactly one image input."
        )
    shape = tuple(inputs[0].shape)
    if len(shape) != 4:
        raise InputError(
            f"This model's input has shape {shape}; an image model needs (batch, height, width, channels)."
        )
    _, h, w, c = shape
    if c not in (1, 3):
        if shape[1] in (1, 3) and _channels_first(model):
            raise InputError(
                f"This model takes channels-first images {shape[1:]} (channels, height, width); the dashboard "
                "feeds channels-last images (height, width, channels), Keras' default. Rebuild it with "
                "data_format='channels_last' and save it again."
            )
        raise InputError(
            f"This model expects {c} input channels; the dashboard feeds greyscale (1) or RGB (3) images."
        )
    dtype = str(getattr(inputs[0], "dtype", "float32"))
    if not dtype.startswith(("float", "bfloat")):
        raise InputError(
            f"This model's input is {dtype}: gradients (Grad-CAM, attributions, feature visualisations) cannot "
            "flow back through whole-number pixels. Give it a float32 input, e.g. keras.Input(shape=..., "
            "dtype='float32'), and save it again."
        )
    _require_finite_weights(model)
    h = int(h) if h else 224
    w = int(w) if w else 224
    if not (8 <= h <= 1024 and 8 <= w <= 1024):
        raise InputError(f"This model's input size {h}x{w} is outside what the dashboard supports (8 to 1024).")
    return h, w, int(c)


def resolve_scaling(model: Any, preprocess: Any) -> Any:
    """``preprocess`` itself, except :data:`AUTO`: ``"raw"`` for a model that rescales itself, else ``"unit"``."""
    if isinstance(preprocess, str) and preprocess == AUTO:
        return "raw" if rescales_itself(model) else "unit"
    return preprocess
