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

__all__ = ["file_digest", "image_digest", "model_view", "to_batch"]


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


def model_view(image: Image.Image, size: tuple[int, int], channels: int = 3) -> Image.Image:
    """The image as the model sees it: squashed to ``size=(height, width)``, greyscale if ``channels == 1``.

    Same steps as :func:`to_batch` (and ``keras.utils.load_img(target_size=...)``:
    convert, then resize with bilinear filtering, ignoring aspect ratio), for display.
    """
    h, w = _check_size(size)
    mode = _mode_for(channels)
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
        arr = np.asarray(model_view(image, (h, w), channels), dtype=np.float32)
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
