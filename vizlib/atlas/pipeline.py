"""The atlas pipeline as plain functions: read -> decode/preprocess -> batched model call -> reduction -> merge.

Every engine runs exactly these functions, in the same batches (a batch is a
fixed run of consecutive image ids, so its composition never depends on the
engine or on where a resumed run starts); that is what makes the local and
the Ray engine give the same numbers, bit for bit, on the same machine.

- :func:`decode_batch`: bytes -> the model's view, uint8 ``(n, H, W, C)``,
  with the safe decoding of uploads (:func:`vizlib.images.load_image`);
  unreadable images become failures, never exceptions.
- :func:`batch_stats`: one model call per batch through the model contract
  (operation ``atlas.batch_stats``, so an uploaded model computes in its own
  process); the maps are reduced inside the graph to per-image, per-channel
  maximum, its position and the mean, so only ``3 x C`` numbers per image and
  layer leave the model.
- :class:`TopK`: the per-channel top-k merge, ties broken by the smaller image
  id (the earlier image in the listing), NaN ranked last.
- :func:`view_and_thumbnail` / :func:`crop_bytes`: the pictures stored for the
  winners.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

from vizlib import permodel
from vizlib.errors import InputError
from vizlib.images.limits import UPLOAD_MAX_SIDE
from vizlib.ops import op

#: Decoded images are shrunk to at most this many pixels a side: the one decode every path uses
#: (:data:`vizlib.images.UPLOAD_MAX_SIDE`), so a row's value is what the page shows for the image.
DECODE_MAX_SIDE = UPLOAD_MAX_SIDE
#: Thumbnails stored for the images in any top-k list (the picture the page opens), longest side.
THUMB_SIDE = 256
#: Receptive-field crops are stored at most this big (longest side); smaller crops keep their size.
CROP_SIDE = 128
#: JPEG quality of stored thumbnails and large crops.
JPEG_QUALITY = 90
#: Default images per model call and per committed shard.
DEFAULT_BATCH = 32
DEFAULT_SHARD_BATCHES = 16
#: The largest layer output one model call may produce (sizes the default batch;
#: the same bound as a forward pass, :data:`vizlib.extract.FORWARD_BATCH_BYTES`:
#: TensorFlow's scratch space is several times this, and an uploaded model has 3 GB).
BATCH_ACTIVATION_BYTES = 64 * 2**20
#: Name of the model operation that computes one batch's statistics.
STATS_OP = "atlas.batch_stats"


# --------------------------------------------------------------------------- decoding


@dataclass
class DecodedBatch:
    """One batch after decoding: the readable images' model views, in id order, and the failures."""

    ids: np.ndarray  # int64 (n,) ids of the decoded images
    pixels: np.ndarray  # uint8 (n, H, W, C): what the model sees, before its preprocessing
    digests: list[str]  # SHA-256 of each decoded image's file bytes
    failures: list[tuple[int, str]] = field(default_factory=list)  # (id, reason) of unreadable images


def decode_image(data: bytes, name: str, size: tuple[int, int]) -> Any:
    """Bytes -> a checked RGB PIL image, decoded exactly as the page and ``vizlib.load_image`` do (InputError if bad).

    ``size`` is not used to decode: the image must not depend on the model that asks
    (a reduced-scale decode sized to the model's input changed values by up to 91%).
    """
    from vizlib.images import load_image

    return load_image(data, name=name)


def model_pixels(image: Any, size: tuple[int, int], channels: int) -> np.ndarray:
    """The model's view of a decoded image as uint8 (H, W, C): resized, grey for 1-channel models."""
    from vizlib.images import model_view

    arr = np.asarray(model_view(image, size, channels), dtype=np.uint8)
    return arr[..., None] if arr.ndim == 2 else arr


def decode_one(data: bytes, name: str, size: tuple[int, int], channels: int) -> tuple[np.ndarray, str]:
    """One item's bytes -> (model pixels, SHA-256 of the bytes)."""
    digest = hashlib.sha256(data).hexdigest()
    return model_pixels(decode_image(data, name, size), size, channels), digest


def read_and_decode(ref: Any, index: int, name: str, size: tuple[int, int],
                    channels: int) -> tuple[Optional[np.ndarray], Optional[str], Optional[str]]:
    """Read and decode item ``index``: (pixels, digest, None) or (None, None, reason). Never raises for bad data."""
    from vizlib.atlas.sources import read_bytes

    try:
        data = read_bytes(ref, index, name)
        pixels, digest = decode_one(data, name, size, channels)
        return pixels, digest, None
    except InputError as exc:
        return None, None, str(exc)
    except MemoryError:
        return None, None, "Not enough memory to decode this image."
    except Exception as exc:  # a reader or decoder failure we did not foresee: one image, not the job
        return None, None, f"Could not be read ({type(exc).__name__}: {exc})."[:500]


def assemble(ids: Sequence[int], results: Sequence[tuple[Optional[np.ndarray], Optional[str], Optional[str]]],
             size: tuple[int, int], channels: int) -> DecodedBatch:
    """Per-item decode results (in id order) -> one :class:`DecodedBatch`."""
    ok = [(i, r) for i, r in zip(ids, results) if r[0] is not None]
    pixels = np.empty((len(ok), size[0], size[1], channels), dtype=np.uint8)
    for j, (_, r) in enumerate(ok):
        pixels[j] = r[0]
    return DecodedBatch(
        ids=np.array([i for i, _ in ok], dtype=np.int64),
        pixels=pixels,
        digests=[str(r[1]) for _, r in ok],
        failures=[(int(i), str(r[2])) for i, r in zip(ids, results) if r[0] is None],
    )


def decode_batch(ref: Any, ids: Sequence[int], names: Sequence[str], size: tuple[int, int],
                 channels: int) -> DecodedBatch:
    """Read and decode one batch in this thread (the Ray engine's decode task)."""
    return assemble(ids, [read_and_decode(ref, i, n, size, channels) for i, n in zip(ids, names)], size, channels)


# --------------------------------------------------------------------------- the model call

_STATS_MODELS = permodel.Slot("atlas.stats_models")


def _stats_model(m: Any, names: tuple[str, ...]) -> Any:
    """One cached keras.Model: input -> per layer (max, argmax, mean) over the map, shape (N, C) each."""
    return permodel.cached(m.model, _STATS_MODELS, names, lambda: _build_stats_model(m, names), max_entries=8)


def _build_stats_model(m: Any, names: tuple[str, ...]) -> Any:
    import keras

    from vizlib.layers import find_layer, trace

    tr = trace(m.model)
    outs = []
    for name in names:
        info = find_layer(m, name)
        h, w, c = (int(v) for v in info.output_shape)
        t = tr.outputs[name]
        flat = keras.ops.reshape(t, (-1, h * w, c))
        outs += [keras.ops.max(flat, axis=1), keras.ops.argmax(flat, axis=1), keras.ops.mean(flat, axis=1)]
    return keras.Model(tr.input, outs, name="vizlib_atlas_stats")


@op(STATS_OP)
def _batch_stats_op(m: Any, batch: np.ndarray, *, layers: Sequence[str]) -> dict:
    """Per image and channel of each layer: the map's maximum, its flat position, and its mean."""
    from vizlib.extract import run_lock

    names = tuple(str(n) for n in layers)
    model = _stats_model(m, names)
    with run_lock(m.model):
        outs = model(batch, training=False)
    result: dict = {}
    for i in range(len(names)):
        result[f"max:{i}"] = np.asarray(outs[3 * i], dtype=np.float32)
        result[f"argmax:{i}"] = np.asarray(outs[3 * i + 1]).astype(np.int32)
        result[f"mean:{i}"] = np.asarray(outs[3 * i + 2], dtype=np.float32)
    return result


@dataclass
class LayerStats:
    """One layer's per-image statistics for a batch: each (n, C)."""

    max: np.ndarray  # float32
    argmax: np.ndarray  # int32, flat index row * W + col into the layer's (H, W) map
    mean: np.ndarray  # float32


def batch_stats(model: Any, pixels: np.ndarray, layers: Sequence[str]) -> list[LayerStats]:
    """One model call on a batch of model pixels (uint8 or float 0..255) -> per-layer statistics."""
    if len(pixels) == 0:
        return []
    r = model.run(STATS_OP, np.asarray(pixels, dtype=np.float32), layers=list(layers))
    return [LayerStats(np.asarray(r[f"max:{i}"], np.float32), np.asarray(r[f"argmax:{i}"], np.int32),
                       np.asarray(r[f"mean:{i}"], np.float32)) for i in range(len(layers))]


def default_batch_size(model: Any) -> int:
    """Images per model call: at most :data:`DEFAULT_BATCH`, fewer when one image's biggest map is large."""
    from vizlib.extract import images_per_call

    return images_per_call(model, DEFAULT_BATCH, BATCH_ACTIVATION_BYTES)


# --------------------------------------------------------------------------- the merge


class TopK:
    """The k images with the highest maximum, per channel of one layer, merged batch by batch.

    Order: value descending, then image id ascending (ties go to the earlier
    image); NaN counts as lower than anything. The merge is exact and
    associative, so any order of batches gives the same result.
    """

    def __init__(self, channels: int, k: int):
        self.k = int(k)
        self.channels = int(channels)
        self.value = np.empty((channels, 0), np.float32)
        self.id = np.empty((channels, 0), np.int64)
        self.pos = np.empty((channels, 0), np.int32)
        self.mean = np.empty((channels, 0), np.float32)

    def add(self, ids: np.ndarray, stats: LayerStats) -> None:
        """Merge a batch's images: ``ids`` (n,), stats arrays (n, C)."""
        if len(ids) == 0:
            return
        value = np.concatenate([self.value, stats.max.T], axis=1)
        idx = np.concatenate([self.id, np.broadcast_to(np.asarray(ids, np.int64), (self.channels, len(ids)))], axis=1)
        pos = np.concatenate([self.pos, stats.argmax.T], axis=1)
        mean = np.concatenate([self.mean, stats.mean.T], axis=1)
        key = np.where(np.isnan(value), np.inf, -value.astype(np.float64))
        order = np.lexsort((idx, key), axis=-1)[:, : self.k]
        self.value = np.take_along_axis(value, order, axis=1)
        self.id = np.take_along_axis(idx, order, axis=1)
        self.pos = np.take_along_axis(pos, order, axis=1)
        self.mean = np.take_along_axis(mean, order, axis=1)


# --------------------------------------------------------------------------- pictures for the winners


def _encode(image: Any, *, lossless: bool) -> bytes:
    buf = io.BytesIO()
    if lossless:
        image.save(buf, format="PNG", compress_level=6)
    else:
        image.save(buf, format="JPEG", quality=JPEG_QUALITY, optimize=False, subsampling=0)
    return buf.getvalue()


def view_and_thumbnail(data: bytes, name: str, size: tuple[int, int], channels: int) -> tuple[Any, bytes, tuple[int, int]]:
    """Decode once for the stored pictures: (the model's view as a PIL image, thumbnail JPEG, thumbnail size).

    The thumbnail (colour, aspect kept) is what the page opens; the view (what the
    model saw, squashed to its input size) is what crops are cut from.
    """
    from PIL import Image

    from vizlib.images import model_view

    image = decode_image(data, name, size)
    view = model_view(image, size, channels)
    thumb = image.copy()
    thumb.thumbnail((THUMB_SIDE, THUMB_SIDE), Image.BILINEAR, reducing_gap=2.0)
    return view, _encode(thumb, lossless=False), thumb.size


#: How the model's view of each top image is stored (the manifest's ``decode.view``): lossless, so it is exact.
VIEW_FORMAT = "png"


def view_bytes(view: Any) -> bytes:
    """The model's view, stored losslessly (PNG): the page reopens an atlas image from exactly the pixels
    the atlas measured, so a top-k row's value is what the page shows (crops covering the whole view are
    cut from it too)."""
    return _encode(view, lossless=True)


def crop_bytes(view: Any, box: tuple[int, int, int, int]) -> bytes:
    """The receptive-field crop (top, left, bottom, right) of the model's view, encoded (PNG if small)."""
    from PIL import Image

    top, left, bottom, right = box
    crop = view.crop((left, top, right, bottom))
    if max(crop.size) > CROP_SIDE:
        crop.thumbnail((CROP_SIDE, CROP_SIDE), Image.BILINEAR, reducing_gap=2.0)
    small = crop.size[0] * crop.size[1] <= 64 * 64
    return _encode(crop, lossless=small)
