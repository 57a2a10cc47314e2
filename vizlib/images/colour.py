"""Every Pillow colour mode to faithful 8-bit RGB.

Transparency is composited over white; 16-bit, 32-bit and float greyscale are
scaled (never clipped) to 0..255; LAB goes through a real colour transform.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from vizlib.errors import InputError
from vizlib.images.limits import reason

__all__ = ["to_rgb"]


def _gray_u8_to_rgb(arr: np.ndarray) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(arr, dtype=np.uint8), "L").convert("RGB")


#: Elements converted at a time when stretching to 8 bits: bounds the float temporaries
#: (a 40 MP float image would otherwise need ~3 x 160 MB of them).
_CHUNK = 2**20


def _stretch(arr: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Map [lo, hi] linearly onto 0..255 (uint8), without float overflow, a block of rows at a time.

    Non-finite values (floats) map as NaN -> ``lo``, +inf -> ``hi``, -inf -> ``lo``.
    """
    if hi <= lo:
        return np.full(arr.shape, np.clip(round(lo) if np.isfinite(lo) else 0, 0, 255), np.uint8)
    scale = np.float32(255.0 / (float(hi) - float(lo)))
    offset = np.float32(float(lo) * (255.0 / (float(hi) - float(lo))))
    out = np.empty(arr.shape, np.uint8)
    flat_in = arr.reshape(-1) if arr.flags.c_contiguous else np.ascontiguousarray(arr).reshape(-1)
    flat_out = out.reshape(-1)
    for start in range(0, flat_in.size, _CHUNK):
        block = flat_in[start : start + _CHUNK].astype(np.float32)
        if block.dtype.kind == "f" and arr.dtype.kind == "f":
            np.nan_to_num(block, copy=False, nan=lo, posinf=hi, neginf=lo)
        block *= scale
        block -= offset
        np.clip(block, 0, 255, out=block)
        np.rint(block, out=block)
        flat_out[start : start + _CHUNK] = block
    return out


def _int_to_rgb(image: Image.Image) -> Image.Image:
    """16/32-bit integer greyscale to RGB without clipping.

    ``I;16*``: scaled by the bit depth the data actually uses (values up to
    255 -> as is, up to 4095 -> /4095*255, up to 65535 -> /257).
    ``I`` and other integer modes: as is if inside 0..255, else stretched by the
    data's actual min/max.
    """
    arr = np.asarray(image)
    if arr.size == 0:
        return Image.new("RGB", image.size)
    lo, hi = int(arr.min()), int(arr.max())
    if lo >= 0 and hi <= 255:
        return _gray_u8_to_rgb(arr)
    if image.mode.startswith("I;16") and lo >= 0:
        full = (1 << max(8, hi.bit_length())) - 1
        return _gray_u8_to_rgb(_stretch(arr, 0, full))
    return _gray_u8_to_rgb(_stretch(arr, lo, hi))


def _float_to_rgb(image: Image.Image) -> Image.Image:
    """Float greyscale to RGB, stretched by the finite min/max (NaN -> min, +inf -> max)."""
    arr = np.asarray(image, dtype=np.float32)
    finite = np.isfinite(arr)
    if not finite.any():
        return Image.new("RGB", image.size)
    lo = float(np.min(arr, where=finite, initial=np.inf))
    hi = float(np.max(arr, where=finite, initial=-np.inf))
    del finite
    return _gray_u8_to_rgb(_stretch(arr, lo, hi))


def _lab_to_rgb(image: Image.Image) -> Image.Image:
    from PIL import ImageCms  # only LAB needs the colour-management engine

    transform = ImageCms.buildTransform(
        ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"), "LAB", "RGB"
    )
    out = ImageCms.applyTransform(image, transform)
    assert out is not None
    return out


def _has_alpha(image: Image.Image) -> bool:
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        return True
    if "transparency" in image.info:
        return True
    return image.mode == "P" and image.palette is not None and image.palette.mode == "RGBA"


def _to_rgb(image: Image.Image, label: str) -> Image.Image:
    """``image`` as a new RGB image; ``label`` names it if the mode cannot be converted."""
    mode = image.mode
    try:
        if mode == "RGB":
            return image.copy()
        if mode.startswith("I"):
            return _int_to_rgb(image)
        if mode.startswith("F"):
            return _float_to_rgb(image)
        if mode == "LAB":
            return _lab_to_rgb(image)
        if _has_alpha(image):
            if mode == "La":
                image = image.convert("LA")
            rgba = image.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(white, rgba).convert("RGB")
        return image.convert("RGB")  # 1, L, P, CMYK, YCbCr, HSV, RGBX ...
    except Exception as exc:
        raise InputError(
            f"{label} uses a colour mode ({mode}) that cannot be converted to RGB "
            f"({reason(exc)}). Re-save it as an RGB JPEG or PNG and try again."
        ) from exc


def to_rgb(image: Image.Image, label: str = "The image") -> Image.Image:
    """A new ``RGB`` copy of ``image``, converting any Pillow mode faithfully.

    Transparency is composited over white; 16-bit, 32-bit and float greyscale
    are scaled (never clipped) to 0..255; LAB goes through a real colour
    transform.  Raises InputError (naming the image by ``label``) for a mode
    Pillow cannot convert.
    """
    return _to_rgb(image, label)
