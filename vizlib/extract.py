"""One forward pass -> {layer: (N, H, W, C) array}; one channel over many images; statistics.

All layers asked for come from one call of one cached multi-output
``keras.Model`` (plus the model's own output, for predictions), never a
sub-model per layer. The across-images view slices its channel inside the
graph and runs in batches, so memory holds one channel at a time.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Optional, Sequence

import numpy as np

from vizlib import permodel
from vizlib.errors import InputError
from vizlib.layers import find_layer, trace
from vizlib.ops import op

#: Largest activation payload computed for one request (all layers, all images).
MAX_ACTIVATION_BYTES = 256 * 2**20
#: Extractors kept per model (one per distinct set of layers).
MAX_EXTRACTORS_PER_MODEL = 16
#: Images per call of the extractor (at most; see FORWARD_BATCH_BYTES).
BATCH_SIZE = 16
#: Forward passes: images per call are also limited so that the model's largest
#: layer output for one call stays under this. TensorFlow's CPU convolutions
#: allocate several times a layer's output as scratch space, so 16 images of a
#: model with 256x256x64 maps ask for more than an uploaded model's 3 GB.
FORWARD_BATCH_BYTES = 64 * 2**20
#: Across-images view: images per call are chosen so that the model's largest
#: layer output for one call stays under this, whatever TensorFlow's allocator does.
CHANNEL_BATCH_BYTES = 32 * 2**20

_EXTRACTORS = permodel.Slot("extract.extractors")


def _model(model: Any) -> Any:
    from vizlib.contract import as_model

    return as_model(model)


#: One lock per Keras model: sessions share cached models; calls on one model run one at a time.
run_lock = permodel.run_lock


def extractor(model: Any, outputs: Sequence[Any], key: tuple) -> Any:
    """A cached ``keras.Model(input, outputs)`` over the model's traced graph (in-process models)."""
    import keras

    km = getattr(model, "model", model)
    return permodel.cached(km, _EXTRACTORS, key,
                           lambda: keras.Model(trace(km).input, list(outputs), name="vizlib_extractor"),
                           max_entries=MAX_EXTRACTORS_PER_MODEL)


def _images(model: Any, images: Any) -> tuple[np.ndarray, bool]:
    """(batch, prepared): PIL images (or arrays of pixels of any size, or uint8 arrays) -> raw pixels; a
    float array at the model's input shape, (N, H, W, C) or (H, W, C), is an already preprocessed batch."""
    from vizlib.models import checked_batch, one_image_array

    want = (model.input_size[0], model.input_size[1], model.channels)
    if one_image_array(images, want):
        return model.raw_batch([images]), False
    if isinstance(images, np.ndarray) and images.dtype == np.uint8:  # 8-bit pixels are never preprocessed
        return model.raw_batch(images), False
    if isinstance(images, np.ndarray):
        return checked_batch(images, want), True
    return model.raw_batch(images), False


def prepare(model: Any, images: Any) -> np.ndarray:
    """Images (PIL images, or an already preprocessed float batch) -> the model's input batch."""
    m = _model(model)
    batch, prepared = _images(m, images)
    if prepared:
        return batch
    if not hasattr(m, "preprocess"):
        raise InputError("This model preprocesses in its own process; pass PIL images.")
    return np.asarray(m.preprocess(batch), dtype=np.float32)


def _check_budget(layers: Iterable[Any], n_images: int, limit: int) -> None:
    total = 0
    for info in layers:
        total += n_images * int(np.prod(info.output_shape)) * 4
    if total > limit:
        raise InputError(
            f"That request would compute {total / 2**20:.0f} MB of activations, over the "
            f"{limit / 2**20:.0f} MB limit. Pick fewer layers or fewer images."
        )


def images_per_call(m: Any, requested: int, budget: int, upto: Optional[int] = None) -> int:
    """``requested`` capped so one call's largest layer output (layers up to ``upto``) fits ``budget``."""
    shapes = [i.output_shape for i in m.layers
              if i.output_shape and all(i.output_shape) and (upto is None or i.index <= upto)]
    biggest = max((int(np.prod(s)) * 4 for s in shapes), default=1)
    return max(1, min(int(requested), int(budget) // max(biggest, 1)))


def call_in_batches(km: Any, ext: Any, batch: np.ndarray, batch_size: int,
                    progress: Optional[Callable[[int, int], None]] = None) -> list[np.ndarray]:
    """``ext(batch)`` in chunks of ``batch_size`` under the model's run lock -> float32 arrays."""
    parts: list[list[np.ndarray]] = []
    n = len(batch)
    for start in range(0, n, batch_size):
        chunk = batch[start:start + batch_size]
        with run_lock(km):
            out = ext(chunk, training=False)
        if not isinstance(out, (list, tuple)):
            out = [out]
        parts.append([np.asarray(o, dtype=np.float32) for o in out])
        if progress:
            progress(min(start + batch_size, n), n)
    return [np.concatenate(p, axis=0) if len(p) > 1 else p[0] for p in zip(*parts)]


@op("extract.forward")
def _forward_op(m: Any, batch: np.ndarray, *, layers: Sequence[str], predictions: bool = True,
                batch_size: int = BATCH_SIZE, max_bytes: int = MAX_ACTIVATION_BYTES) -> dict:
    names = [str(n) for n in dict.fromkeys(layers)]
    infos = [find_layer(m, n) for n in names]
    _check_budget(infos, len(batch), min(int(max_bytes), MAX_ACTIVATION_BYTES))
    tr = trace(m.model)
    outs = [tr.outputs[n] for n in names]
    with_pred = bool(predictions) and len(m.model.outputs) == 1
    if with_pred:
        outs = outs + [final_output(m)]
    if not outs:  # nothing asked for that this model has (Keras refuses a model of no outputs)
        if predictions:
            raise InputError("This model has several outputs; the dashboard shows predictions for one.")
        return {"names": names}
    ext = extractor(m, outs, ("forward", tuple(names), with_pred))
    arrays = call_in_batches(m.model, ext, batch, images_per_call(m, batch_size, FORWARD_BATCH_BYTES))
    result: dict = {"names": names}
    result.update({f"act:{n}": a for n, a in zip(names, arrays)})
    if with_pred:
        if arrays[-1].nbytes > MAX_ACTIVATION_BYTES:
            raise InputError("This model's output is too large to send back; it is not a classifier.")
        result["output"] = arrays[-1]
    return result


def forward(model: Any, images: Any, layers: Sequence[str], *, predictions: bool = True,
            batch_size: int = BATCH_SIZE, max_bytes: int = MAX_ACTIVATION_BYTES,
            ) -> tuple[dict[str, np.ndarray], Optional[np.ndarray]]:
    """One forward pass: activations of ``layers`` and (optionally) the model's output.

    Returns ``({layer: float32 (N, H, W, C)}, output or None)``. Runs wherever the
    model lives (an uploaded model computes in its own process).
    """
    m = _model(model)
    names = list(dict.fromkeys(str(n) for n in layers))
    infos = [find_layer(m, n) for n in names]
    batch, prepared = _images(m, images)
    _check_budget(infos, len(batch), max_bytes)
    r = m.run("extract.forward", batch, prepared=prepared, layers=names, predictions=bool(predictions),
              batch_size=int(batch_size), max_bytes=int(max_bytes))
    got = r.get("names")
    if not isinstance(got, list) or [str(n) for n in got] != names:
        raise InputError("The model's process sent a reply the dashboard can't read.")
    acts = {}
    for n in names:
        arr = r.get(f"act:{n}")
        if not isinstance(arr, np.ndarray) or arr.ndim != 4 or len(arr) != len(batch):
            raise InputError("The model's process sent a reply the dashboard can't read.")
        acts[n] = arr
    out = r.get("output")
    return acts, (out if isinstance(out, np.ndarray) else None)


def final_output(m: Any) -> Any:
    """The model's own output, reached through the traced graph."""
    from keras import tree

    flat = tree.flatten(trace(m.model).final)
    if len(flat) != 1:
        raise InputError("This model has several outputs; the dashboard shows predictions for one.")
    return flat[0]


def activations(model: Any, images: Any, layers: Sequence[str], **kwargs: Any) -> dict[str, np.ndarray]:
    """``{layer name: float32 array (N, H, W, C)}`` for ``images``, all from one forward pass.

    ``model`` is anything :func:`vizlib.load_model` accepts or returns;
    ``images`` is a list of PIL images (resized and preprocessed for the model)
    or a ready, preprocessed batch.
    """
    if not layers:
        raise InputError("Name at least one layer (vizlib.spatial_layers(model) lists them).")
    acts, _ = forward(model, images, layers, predictions=False, **kwargs)
    return acts


def predict(model: Any, images: Any, top: int = 5) -> list[list[tuple[str, float]]]:
    """Top-``top`` (class name, score) per image; scores are probabilities (softmax applied if needed)."""
    m = _model(model)
    _, out = forward(m, images, [], predictions=True)
    if out is None:
        raise InputError("This model has several outputs; the dashboard shows predictions for one.")
    return decode(m, out, top)


def probabilities(output: np.ndarray) -> np.ndarray:
    """A classifier's output rows as probabilities (softmax applied when they are not already)."""
    out = np.asarray(output, dtype=np.float64)
    looks_like_probs = np.all(out >= -1e-6) and np.allclose(out.sum(axis=1), 1.0, atol=1e-3)
    if looks_like_probs:
        return out
    z = out - out.max(axis=1, keepdims=True)
    return np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)


def ranked_classes(model: Any, output: np.ndarray, top: int = 5) -> list[list[tuple[int, str, float]]]:
    """Per output row, the top-``top`` (class index, class name, probability), most likely first.

    ``output`` is a classifier's output (N, classes), softmax applied if it is not one
    already; a model whose output is not class scores gives [].
    """
    m = _model(model)
    out = np.asarray(output, dtype=np.float64)
    if out.ndim != 2 or out.shape[1] < 2:
        return []
    probs = probabilities(out)
    names = m.class_names if m.class_names and len(m.class_names) == out.shape[1] else None
    result = []
    for row in probs:
        idx = np.argsort(-row, kind="stable")[:top]
        result.append([(int(i), names[i] if names else f"class {i}", float(row[i])) for i in idx])
    return result


def decode(model: Any, output: np.ndarray, top: int = 5) -> list[list[tuple[str, float]]]:
    """Turn a classifier's output rows into top-``top`` (class name, probability) lists."""
    return [[(name, p) for _, name, p in row] for row in ranked_classes(model, output, top)]


@op("extract.channel")
def _channel_op(m: Any, batch: np.ndarray, *, layer: str, channel: int, batch_size: int = 8) -> dict:
    info = find_layer(m, layer)
    if not 0 <= int(channel) < info.channels:
        raise InputError(f"Layer '{layer}' has channels 0 to {info.channels - 1}; there is no channel {channel}.")
    out = trace(m.model).outputs[layer][..., int(channel)]
    ext = extractor(m, [out], ("channel", layer, int(channel)))
    (maps,) = call_in_batches(m.model, ext, batch, max(1, int(batch_size)))
    return {"maps": maps}


def channel_across_images(model: Any, images: Any, layer: str, channel: int, *,
                          batch_size: int = 8, max_bytes: int = MAX_ACTIVATION_BYTES,
                          progress: Optional[Callable[[int, int], None]] = None) -> np.ndarray:
    """One channel of one layer for many images: float32 (N, H, W).

    The channel is sliced inside the graph, and images run ``batch_size`` at a
    time, so memory holds that one channel, not the whole layer.
    ``progress(done, total)`` is called after each batch.
    """
    m = _model(model)
    info = find_layer(m, layer)
    if not 0 <= int(channel) < info.channels:
        raise InputError(f"Layer '{layer}' has channels 0 to {info.channels - 1}; there is no channel {channel}.")
    h, w, _ = info.output_shape
    if isinstance(images, np.ndarray):
        n = len(images)
    else:
        from vizlib.images import image_list

        images = image_list(images)
        n = len(images)
    if n == 0:
        raise InputError("No images given.")
    if n * h * w * 4 > max_bytes:
        raise InputError(f"{n} images of layer '{layer}' would take {n * h * w * 4 / 2**20:.0f} MB; use fewer images.")
    # Every layer up to this one runs in full for each call: size calls by the biggest of them.
    batch_size = images_per_call(m, batch_size, CHANNEL_BATCH_BYTES, upto=info.index)
    result = np.empty((n, h, w), dtype=np.float32)
    for start in range(0, n, batch_size):
        batch, prepared = _images(m, images[start:start + batch_size])
        maps = m.run("extract.channel", batch, prepared=prepared, layer=layer, channel=int(channel),
                     batch_size=batch_size).get("maps")
        if not isinstance(maps, np.ndarray) or maps.shape != (len(batch), h, w):
            raise InputError("The model's process sent a reply the dashboard can't read.")
        result[start:start + len(maps)] = maps
        if progress:
            progress(min(start + batch_size, n), n)
    return result


def channel_stats(maps: np.ndarray) -> dict[str, np.ndarray]:
    """Per-channel statistics of one image's maps (H, W, C): activity (mean |x|), mean, max, min, std."""
    maps = np.asarray(maps)
    if maps.ndim != 3:
        raise InputError(f"Expected maps of shape (H, W, C), got {maps.shape}.")
    flat = maps.reshape(-1, maps.shape[-1])
    return {
        "activity": np.abs(flat).mean(axis=0),
        "mean": flat.mean(axis=0),
        "max": flat.max(axis=0),
        "min": flat.min(axis=0),
        "std": flat.std(axis=0),
    }


def top_channels(maps: np.ndarray, n: int, by: str = "activity") -> list[int]:
    """Indices of the ``n`` most active channels, most active first.

    Ranked by ``"activity"``, the mean absolute activation (for ReLU outputs, the
    mean): a channel that responds strongly either way ranks high and a flat,
    dead channel ranks last. ``by`` may also be ``"mean"``, ``"max"`` or ``"std"``.
    """
    stats = channel_stats(maps)
    if by not in stats:
        raise InputError(f"Rank channels by one of {', '.join(stats)}, not '{by}'.")
    order = np.argsort(-stats[by], kind="stable")
    return [int(i) for i in order[: max(0, int(n))]]


def pick_channels(maps: np.ndarray, n: int, mode: str = "first") -> list[int]:
    """The channels a grid shows: the first ``n`` (as in the tutorial) or the ``n`` most active."""
    shape = np.shape(maps)
    if not shape:
        raise InputError("Channels are picked from maps with a channel axis (H, W, C), not from a single number.")
    c = int(shape[-1])
    n = max(1, min(int(n), c))
    if mode == "first":
        return list(range(n))
    if mode in ("top", "active", "most_active"):
        return top_channels(maps, n)
    raise InputError(f"Channel choice must be 'first' or 'top', not '{mode}'.")
