"""Images as a model sees them: resized, converted, stacked into a float32 batch; digests.

:func:`to_batch` turns images into the float32 ``(N, H, W, C)`` array a Keras
model expects; :func:`model_view` shows an image the way the model sees it;
:func:`image_digest` / :func:`file_digest` key caches by content.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image

from vizlib.errors import InputError
from vizlib.images import limits
from vizlib.images.colour import to_rgb
from vizlib.units import fmt_mp

__all__ = ["as_image", "file_digest", "image_digest", "model_view", "to_batch"]


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in size)  # type: ignore[misc]
    except (TypeError, ValueError) as exc:
        raise InputError(
            f"The model's input size {size!r} is not a fixed (height, width); "
            "use a model with a fixed input size."
        ) from exc
    if h <= 0 or w <= 0 or h * w > limits.MAX_PIXELS:
        raise InputError(
            f"The model's input size {h} x {w} is not usable (it must be positive and at most "
            f"{fmt_mp(limits.MAX_PIXELS)})."
        )
    return h, w


def _mode_for(channels: int) -> str:
    if channels == 1:
        return "L"
    if channels == 3:
        return "RGB"
    raise InputError(
        f"The model expects {channels}-channel images; only 1-channel (greyscale) and "
        "3-channel (RGB) inputs are supported."
    )


def _check_dims(w: int, h: int, index: int) -> None:
    """An image held in memory (not decoded here) within the limits decoded files are held to."""
    if w == 0 or h == 0:
        raise InputError(f"Image {index} is empty ({w}x{h} pixels).")
    if w > limits.MAX_SIDE or h > limits.MAX_SIDE:
        raise InputError(f"Image {index} is {w}x{h} pixels; the limit is {limits.MAX_SIDE:,} pixels a side.")
    if w * h > limits.MAX_PIXELS:
        raise InputError(f"Image {index} is {w}x{h} pixels; the limit is {fmt_mp(limits.MAX_PIXELS)}.")


def as_image(image: object, index: int = 0) -> Image.Image:
    """A PIL image as is; an array of pixels (H, W), (H, W, 1), (H, W, 3) or (H, W, 4), 0..255, as an image.

    What a notebook user has at hand (``np.asarray(img)``, ``keras.utils.img_to_array``) is taken as the
    image it shows; anything else is an :class:`InputError` naming the item, not an error three calls down.
    """
    if isinstance(image, Image.Image):
        _check_dims(image.width, image.height, index)
        return image
    if isinstance(image, np.ndarray):
        arr = image
        if arr.ndim == 3 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        ok_shape = arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] in (3, 4))
        if not ok_shape or arr.dtype.kind not in "uif" or 0 in arr.shape[:2]:
            raise InputError(f"Image {index} is an array of shape {tuple(image.shape)} ({image.dtype}); give "
                             "(height, width), (height, width, 3) or (height, width, 4) pixels of 0..255.")
        _check_dims(arr.shape[1], arr.shape[0], index)
        if arr.dtype != np.uint8:
            arr = arr.astype(np.float64)
            if not np.isfinite(arr).all():
                raise InputError(f"Image {index} has NaN or infinite pixels.")
            arr = np.clip(np.rint(arr), 0, 255)
        return Image.fromarray(np.ascontiguousarray(arr, dtype=np.uint8))
    raise InputError(f"Image {index} is a {type(image).__name__}, not an image: give PIL images "
                     "(vizlib.load_image(path)) or arrays of 0..255 pixels.")


def image_list(images: object) -> list:
    """``images`` as a list: a list or other iterable of images as it is, one PIL image as a list of one.

    Anything else (None, a path, a number) is an :class:`InputError` that says what to give instead.
    """
    if isinstance(images, Image.Image):
        return [images]
    if isinstance(images, (str, bytes, bytearray)) or hasattr(images, "__fspath__"):
        raise InputError("Give images, not a path: load it first with vizlib.load_image(path).")
    try:
        return list(images)  # type: ignore[call-overload]
    except TypeError:
        raise InputError(f"images must be a list of PIL images (vizlib.load_image(path)) or arrays of 0..255 "
                         f"pixels, not {type(images).__name__}.") from None


def model_view(image: Image.Image, size: tuple[int, int], channels: int = 3) -> Image.Image:
    """The image as the model sees it: squashed to ``size=(height, width)``, greyscale if ``channels == 1``.

    Same steps as :func:`to_batch` (and ``keras.utils.load_img(target_size=...)``:
    convert, then resize with bilinear filtering, ignoring aspect ratio), for display.
    ``image`` may also be an array of 0..255 pixels (:func:`as_image`).
    """
    h, w = _check_size(size)
    mode = _mode_for(channels)
    image = as_image(image)
    view = image if image.mode == "RGB" else to_rgb(image)
    if mode == "L":
        view = view.convert("L")
    if view.size != (w, h):
        view = view.resize((w, h), Image.BILINEAR)
    elif view is image:
        view = image.copy()
    return view


def to_batch(
    images: Sequence[Image.Image],
    size: tuple[int, int],
    *,
    channels: int = 3,
    preprocess: Callable[[np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
    """Stack images into a contiguous float32 ``(N, height, width, channels)`` batch.

    Pixels are 0..255 (as ``keras.utils.img_to_array`` gives) until
    ``preprocess`` (e.g. a ``keras.applications`` ``preprocess_input``, which
    may work in place) is applied to the whole batch.
    """
    h, w = _check_size(size)
    mode = _mode_for(channels)
    if len(images) == 0:
        raise InputError("No images were given. Upload or choose at least one image.")
    batch = np.empty((len(images), h, w, channels), dtype=np.float32)
    for i, image in enumerate(images):
        arr = np.asarray(model_view(as_image(image, i), (h, w), channels), dtype=np.float32)
        batch[i] = arr[..., None] if mode == "L" else arr
    if preprocess is not None:
        batch = np.asarray(preprocess(batch), dtype=np.float32)
    return np.ascontiguousarray(batch, dtype=np.float32)




def image_digest(image: Image.Image) -> str:
    """SHA-256 of the decoded pixels (mode, size, palette and raw bytes): a cache key by content."""
    h = hashlib.sha256()
    h.update(f"{image.mode}\0{image.width}x{image.height}\0".encode())
    if image.mode in ("P", "PA"):
        palette = image.getpalette()
        if palette:
            h.update(bytes(palette))
    h.update(image.tobytes())
    return h.hexdigest()


def file_digest(data: bytes | bytearray | memoryview) -> str:
    """SHA-256 hex of raw file bytes (cache key for an upload before decoding)."""
    return hashlib.sha256(data).hexdigest()
