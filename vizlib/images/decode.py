"""Decoding one untrusted image: bytes / path / file -> a detached, bounded RGB image.

The order of the checks is the point: bytes are capped while reading; the
file's structure is checked (:mod:`vizlib.images.structure`) before Pillow
parses anything beyond the magic number; the pixel count and side lengths
from the header are checked before anything is decoded; then the pixels are
decoded (JPEGs at a reduced scale when that is enough), converted to RGB
(:mod:`vizlib.images.colour`) and shrunk to ``max_side``.

The decoded image is *the* image for everyone who asks: the page, the atlas,
the across-images view, a bundle and a notebook all decode through
:func:`decode` with the same :data:`~vizlib.images.limits.UPLOAD_MAX_SIDE`,
then :func:`vizlib.images.model_view` resizes it to the model's input, so an
image has one model view (an atlas row's value is what the page shows).
The reduced-scale JPEG decode depends on the file alone (never on the model),
for the same reason. Only raster formats
are ever parsed: Pillow is told which plugins it may use, so EPS/PDF
(Ghostscript), SVG and the like never reach a parser.
"""

from __future__ import annotations

import io
import os
import re
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import IO

from PIL import Image, ImageFile

from vizlib.errors import InputError
from vizlib.images import limits, structure
from vizlib.images.colour import to_rgb
from vizlib.images.limits import ImageSource, advice, reason
from vizlib.images.limits import label as _label
from vizlib.units import fmt_bytes, fmt_mp

__all__ = ["load_image", "load_images"]

_READ_CHUNK = 2**20

_MAGIC_HINTS: tuple[tuple[bytes, str], ...] = (
    (b"%PDF", "a PDF document"),
    (b"%!PS", "a PostScript/EPS file"),
    (b"\xc5\xd0\xd3\xc6", "a PostScript/EPS file"),
    (b"<svg", "an SVG drawing"),
    (b"<?xml", "an XML/SVG file"),
    (b"8BPS", "a Photoshop (PSD) file"),
    (b"PK\x03\x04", "a ZIP archive"),
    (b"\x00\x00\x01\x00", "an ICO icon"),
)

_KIND_NAMES = {"JPEG": "JPEG", "PNG": "PNG", "GIF": "GIF", "BMP": "BMP", "TIFF": "TIFF", "WEBP": "WebP"}

#: EXIF orientation -> the transpose that shows the image upright (as ``ImageOps.exif_transpose``).
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


#: Modes Pillow resizes faithfully before conversion to RGB (palette, bilevel and 16-bit images are
#: converted first, then shrunk).
_SHRINK_FIRST = frozenset({"RGB", "RGBA", "RGBX", "L", "LA", "I", "F"})


def _sniff(data: bytes) -> str | None:
    """Name a common non-accepted file type from its first bytes, for a friendlier message."""
    head = data[:64].lstrip()
    for magic, what in _MAGIC_HINTS:
        if head.startswith(magic):
            return what
    if data[4:8] == b"ftyp":
        brand = data[8:12]
        if brand in (b"heic", b"heix", b"mif1", b"msf1", b"hevc", b"heim", b"heis"):
            return "a HEIC/HEIF photo (export it as JPEG first)"
        if brand in (b"avif", b"avis"):
            return "an AVIF image"
        return "a video or MP4-family file"
    return None


# --------------------------------------------------------------------------- reading


def _read_limited(f: IO[bytes], limit: int, label: str) -> bytes:
    """Read a binary file-like object to the end, refusing more than ``limit`` bytes."""
    chunks: list[bytes] = []
    total = 0
    while True:
        try:
            chunk = f.read(min(_READ_CHUNK, limit + 1 - total))
        except OSError as exc:
            raise InputError(f"{label} could not be read ({exc}). Try again with a fresh copy of the file.") from exc
        if not chunk:
            break
        if isinstance(chunk, str):
            raise TypeError("image file objects must be opened in binary mode")
        chunks.append(bytes(chunk))
        total += len(chunk)
        if total > limit:
            raise InputError(
                f"{label} is larger than {fmt_bytes(limit)}, the limit per image. "
                + advice(limits.MAX_PIXELS)
            )
    return b"".join(chunks)


def read_source(source: ImageSource, name: str | None) -> tuple[bytes, str]:
    """Return the raw bytes of ``source`` and the label used in messages.

    Enforces :data:`~vizlib.images.limits.MAX_IMAGE_BYTES` (looked up at call
    time) without reading more than one byte past it.
    """
    limit = limits.MAX_IMAGE_BYTES
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        label = _label(name or path.name)
        try:
            size = path.stat().st_size
            if not path.is_file():
                raise InputError(f"{label} is not a file. {advice(limits.MAX_PIXELS)}")
            if size > limit:
                raise InputError(
                    f"{label} is {fmt_bytes(size)}; the limit is {fmt_bytes(limit)} per image. "
                    + advice(limits.MAX_PIXELS)
                )
            with path.open("rb") as f:
                data = _read_limited(f, limit, label)
        except FileNotFoundError as exc:
            raise InputError(f"{label} was not found. Check the file name and try again.") from exc
        except OSError as exc:
            raise InputError(f"{label} could not be read ({exc.strerror or exc}).") from exc
    elif isinstance(source, (bytes, bytearray, memoryview)):
        label = _label(name)
        view = memoryview(source)
        if view.nbytes > limit:
            raise InputError(
                f"{label} is {fmt_bytes(view.nbytes)}; the limit is {fmt_bytes(limit)} per image. "
                + advice(limits.MAX_PIXELS)
            )
        data = source if isinstance(source, bytes) else view.tobytes()
    elif hasattr(source, "read"):
        if name is None:
            raw_name = getattr(source, "name", None)  # e.g. Streamlit's UploadedFile
            name = os.path.basename(raw_name) if isinstance(raw_name, str) and raw_name else None
        label = _label(name)
        # Read from the start: Streamlit's UploadedFile may already have been read
        # (e.g. to hash it) in the same script run.
        try:
            if getattr(source, "seekable", lambda: False)():
                source.seek(0)
        except OSError:
            pass
        data = _read_limited(source, limit, label)
    else:
        raise TypeError(
            "image source must be a path, bytes or a binary file-like object, "
            f"not {type(source).__name__}"
        )
    if not data:
        raise InputError(f"{label} is empty (0 bytes). {advice(limits.MAX_PIXELS)}")
    return data, label


# --------------------------------------------------------------------------- decoding

_BOMB_PIXELS_RE = re.compile(r"\((\d+) pixels\)")


def _too_many_pixels(label: str, max_pixels: int, size: tuple[int, int] | None, exc_text: str = "") -> InputError:
    if size is not None:
        w, h = size
        what = f"{w} x {h} pixels ({fmt_mp(w * h)})"
    else:
        m = _BOMB_PIXELS_RE.search(exc_text)
        what = f"{fmt_mp(int(m.group(1)))}" if m else "too many pixels"
    return InputError(
        f"{label} is {what}, more than the {fmt_mp(max_pixels)} limit. "
        f"Shrink it to at most {fmt_mp(max_pixels)} and try again."
    )


def _open(data: bytes, label: str, max_pixels: int) -> Image.Image:
    """Check the structure, open (headers only) and check the declared size; or raise InputError."""
    structure.check(data, label)
    try:
        im = Image.open(io.BytesIO(data), formats=limits.OPEN_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _too_many_pixels(label, max_pixels, None, str(exc)) from exc
    except Image.UnidentifiedImageError as exc:
        claimed = structure.kind(data)
        if claimed is not None:
            raise InputError(
                f"{label} starts like a {_KIND_NAMES[claimed]} file but could not be read: it is corrupt "
                "or truncated. Re-save it as JPEG or PNG and try again."
            ) from exc
        what = _sniff(data)
        kind = (
            f"looks like {what}, which is not an accepted format"
            if what
            else "is not an image in an accepted format"
        )
        raise InputError(f"{label} {kind}. {advice(max_pixels)}") from exc
    except Exception as exc:
        raise InputError(
            f"{label} could not be opened: the file is corrupt ({reason(exc)}). "
            f"Re-save it as JPEG or PNG and try again."
        ) from exc
    w, h = im.size
    if w <= 0 or h <= 0:
        im.close()
        raise InputError(f"{label} has no pixels ({w} x {h}). {advice(max_pixels)}")
    if w * h > max_pixels:
        im.close()
        raise _too_many_pixels(label, max_pixels, (w, h))
    if max(w, h) > limits.MAX_SIDE:
        im.close()
        raise InputError(
            f"{label} is {w} x {h} pixels; sides longer than {limits.MAX_SIDE:,} pixels are not "
            f"accepted. {advice(max_pixels)}"
        )
    return im


def declared_size(data: bytes, label: str, max_pixels: int) -> tuple[int, int]:
    """Width and height from the header, after the same checks as decoding (nothing is decoded)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with _open(data, label, max_pixels) as im:
            return im.size


def decode(
    data: bytes,
    label: str,
    *,
    max_pixels: int,
    max_side: int | None = None,
) -> Image.Image:
    """Decode ``data`` into a detached RGB image, or raise InputError.

    ``max_side`` (default :data:`~vizlib.images.limits.UPLOAD_MAX_SIDE`, read at
    call time) bounds the longest side kept. Everything that feeds a model keeps
    the default: any other value gives the model a different view of the image.
    """
    max_side = int(limits.UPLOAD_MAX_SIDE if max_side is None else max_side)
    # Pillow must refuse truncated files instead of padding them with grey;
    # nothing in this app wants the lenient mode.
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    # Pillow warns (DecompressionBombWarning) between ~89 and ~179 MP; make that
    # a refusal too.  catch_warnings() is not thread-safe before Python 3.14, so
    # concurrent sessions may leave this "error" filter installed globally,
    # which is harmless: it is exactly the policy wanted everywhere.
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        im = _open(data, label, max_pixels)
        # Every except below is deliberately broad and wraps only Pillow calls:
        # Pillow's plugins raise all sorts of exceptions (OSError, ValueError,
        # SyntaxError, struct.error, EOFError, IndexError, MemoryError ...) on
        # hostile data, and for a user's upload all of them mean "bad file".
        with im:
            try:
                im.seek(0)  # animations and multi-page files: first frame only
                if max_side > 0 and im.format in ("JPEG", "MPO"):
                    # The smallest DCT scale (1/2, 1/4, 1/8) still >= max_side on both sides
                    # (square, so an EXIF quarter turn changes nothing): a function of the file
                    # alone, so every caller gets the same pixels (benchmarks/bench_decode.py).
                    im.draft("RGB", (max_side, max_side))
                im.load()
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
                raise _too_many_pixels(label, max_pixels, None, str(exc)) from exc
            except Exception as exc:
                raise InputError(
                    f"{label} could not be decoded: the file is truncated or corrupt "
                    f"({reason(exc)}). Re-save it as JPEG or PNG and try again."
                ) from exc
            # TIFFs come out of Pillow's load() already upright; for the others the
            # orientation is read from IFD0 alone, never through Pillow's EXIF reader.
            turn = None if im.format == "TIFF" else _TRANSPOSE.get(structure.orientation(im.info))
            if max_side and max(im.size) > max_side and im.mode in _SHRINK_FIRST:
                # Shrink before converting: the conversion's copies are then of the small image
                # (a 40 MP RGBA PNG peaks at ~0.3 GB instead of ~0.8 GB). Pillow resizes RGBA/LA
                # premultiplied, so transparent edges stay right.
                try:
                    im.thumbnail((int(max_side), int(max_side)), Image.BILINEAR, reducing_gap=2.0)
                except Exception as exc:
                    raise InputError(
                        f"{label} could not be decoded ({reason(exc)}). Re-save it as JPEG or PNG and "
                        "try again."
                    ) from exc
            rgb = to_rgb(im, label)
    if max_side and max(rgb.size) > max_side:
        # Keep what is held in memory small: a model sees at most a few hundred pixels a side.
        rgb.thumbnail((int(max_side), int(max_side)), Image.BILINEAR, reducing_gap=2.0)
    if turn is not None:
        rgb = rgb.transpose(turn)
    rgb.info = {}
    return rgb


def load_image(
    source: ImageSource,
    *,
    max_pixels: int = limits.MAX_PIXELS,
    name: str | None = None,
    max_side: int | None = None,
) -> Image.Image:
    """Decode one untrusted image into a detached ``RGB`` image.

    ``source`` is a file path, bytes-like data, or a binary file-like object
    (e.g. Streamlit's ``UploadedFile``, read from its start).  ``name`` labels
    the file in error messages (default: the path's or file object's basename).

    Refuses, with :class:`InputError`: empty files, files over
    :data:`MAX_IMAGE_BYTES`, formats outside :data:`ALLOWED_FORMATS`, images
    over ``max_pixels`` or with a side over :data:`MAX_SIDE` (checked from the
    header, before decoding), files whose structure would make the decoder
    spend far more than their pixels need (see :mod:`vizlib.images.structure`),
    decompression bombs, and truncated or corrupt files.  EXIF orientation is
    applied, only the first frame of an animation is kept, and every colour
    mode is converted to RGB (see :func:`to_rgb`).

    The result is shrunk (aspect kept) so neither side exceeds ``max_side``
    (default :data:`~vizlib.images.limits.UPLOAD_MAX_SIDE`): what stays in
    memory per image is bounded, whatever the file declared. A large JPEG is
    decoded at the smallest reduced scale (1/2, 1/4, 1/8) still at least
    ``max_side`` on both sides, which is faster and gives the same pixels every
    time. Keep the default for anything a model sees: the page, the atlas and
    the across-images view all do, so an image has one model view.
    """
    data, label = read_source(source, name)
    return decode(data, label, max_pixels=max_pixels, max_side=max_side)


def load_images(
    sources: Iterable[tuple[str, ImageSource]],
    *,
    max_count: int = limits.MAX_IMAGES,
    max_total_bytes: int = limits.MAX_TOTAL_BYTES,
    max_pixels: int = limits.MAX_PIXELS,
    max_side: int | None = None,
) -> list[tuple[str, Image.Image]]:
    """Decode several named images (e.g. a multi-file upload), in order.

    Count and total-size caps are enforced before any image past the limit is
    read or decoded; the first bad image refuses the whole batch with a
    message naming it.
    """
    try:
        count = len(sources)  # type: ignore[arg-type]
    except TypeError:
        count = None
    if count is not None and count > max_count:
        raise InputError(
            f"{count} images were given; the limit is {max_count} at a time. Upload fewer images."
        )
    out: list[tuple[str, Image.Image]] = []
    total = 0
    for index, (name, source) in enumerate(sources):
        if index >= max_count:
            raise InputError(
                f"More than {max_count} images were given; the limit is {max_count} at a time. "
                "Upload fewer images."
            )
        data, label = read_source(source, name)
        total += len(data)
        if total > max_total_bytes:
            raise InputError(
                f"The images add up to more than {fmt_bytes(max_total_bytes)}, the limit for one "
                f"batch (reached at {label}). Upload fewer or smaller images."
            )
        out.append((name, decode(data, label, max_pixels=max_pixels, max_side=max_side)))
    return out
