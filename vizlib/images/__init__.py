"""Loading untrusted images safely and turning them into model input.

Everything a user can upload goes through :func:`load_image` (or
:func:`load_images` / :func:`images_from_zip`), which returns a fully decoded,
detached ``RGB`` :class:`PIL.Image.Image` or raises :class:`InputError` with a
message fit for the page.  Caps on bytes and pixels are checked *before*
decoding so a hostile file (decompression bomb, zip bomb, a 400-megapixel
header) costs almost nothing to refuse.  Only raster formats are ever parsed:
Pillow is told which plugins it may use, so EPS/PDF (Ghostscript), SVG and the
like never reach a parser.

:func:`to_batch` turns images into the float32 ``(N, H, W, C)`` array a Keras
model expects; :func:`model_view` shows an image the way the model sees it.
The bundled sample images and their provenance live in :data:`SAMPLES`.

Only numpy and Pillow are imported here, so this module stays cheap to import.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import re
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Iterable, Sequence, Union

import numpy as np
from PIL import Image, ImageFile, ImageOps

from vizlib.errors import InputError

__all__ = [
    "ALLOWED_FORMATS",
    "MAX_COMPRESSION_RATIO",
    "MAX_IMAGES",
    "MAX_IMAGE_BYTES",
    "MAX_PIXELS",
    "MAX_TOTAL_BYTES",
    "SAMPLES",
    "SAMPLES_DIR",
    "UPLOAD_EXTENSIONS",
    "Sample",
    "file_digest",
    "image_digest",
    "images_from_zip",
    "load_image",
    "load_images",
    "load_sample",
    "model_view",
    "sample_path",
    "to_batch",
    "to_rgb",
]

#: The app's own pixel cap, well under Pillow's ~89 MP decompression-bomb limit:
#: a 40 MP RGB image is already 120 MB decoded.
MAX_PIXELS = 40_000_000
#: Largest single image file accepted (bytes).
MAX_IMAGE_BYTES = 20 * 2**20
#: Most images accepted in one batch (uploads or one ZIP).
MAX_IMAGES = 200
#: Largest total size of one batch of images (bytes; for a ZIP, uncompressed).
MAX_TOTAL_BYTES = 200 * 2**20
#: A ZIP member that inflates more than this many times is treated as a zip bomb.
MAX_COMPRESSION_RATIO = 100
#: Pixels (declared in the headers) decoded from one ZIP in all: tiny files can declare huge, flat images.
MAX_ZIP_PIXELS = 400_000_000
#: ... but only when it is bigger than this: tiny flat images (icons, masks)
#: legitimately compress by more than 100x and inflate to nothing dangerous.
_RATIO_CHECK_MIN_BYTES = 2**20

#: The only Pillow plugins ever allowed to parse user data (MPO is the
#: multi-picture JPEG variant many cameras write).
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF", "MPO")
# What is passed to ``Image.open(formats=...)``: MPO has no opener of its own
# (the JPEG opener returns an MPO image when it finds one) and naming it there
# raises KeyError.
_OPEN_FORMATS = tuple(f for f in ALLOWED_FORMATS if f != "MPO")
#: File extensions to offer in an upload widget (``st.file_uploader(type=...)``).
UPLOAD_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")
#: Extensions of ZIP members that are treated as images (everything else is skipped).
_ZIP_IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".mpo"}
)
_FORMATS_TEXT = "JPEG, PNG, WebP, BMP, GIF or TIFF"

ImageSource = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, IO[bytes]]
ZipSource = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, IO[bytes]]

_READ_CHUNK = 2**20


# --------------------------------------------------------------------------- messages


def _fmt_bytes(n: int) -> str:
    """Human-readable size for messages ("20 MB", "1.5 KB", "900 bytes")."""
    for unit, factor in (("GB", 2**30), ("MB", 2**20), ("KB", 2**10)):
        if n >= factor:
            value = n / factor
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{n} bytes"


def _fmt_mp(pixels: int) -> str:
    """Megapixels for messages ("40 megapixels", "81.0 megapixels")."""
    value = pixels / 1e6
    return f"{value:.0f} megapixels" if value == int(value) else f"{value:.1f} megapixels"


def _advice(max_pixels: int) -> str:
    return (
        f"Upload a {_FORMATS_TEXT} image smaller than {_fmt_bytes(MAX_IMAGE_BYTES)} "
        f"and {_fmt_mp(max_pixels)}."
    )


def _label(name: str | None) -> str:
    """How a file is named at the start of a message."""
    return f'"{name}"' if name else "This file"


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


def _accepted_kind(data: bytes) -> str | None:
    """The accepted format ``data`` claims to be by its magic number, if any."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if data.startswith(b"BM"):
        return "BMP"
    if data.startswith((b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")):
        return "TIFF"
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "WebP"
    return None


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
            raise InputError(f"{label} could not be read ({exc}). Try uploading it again.") from exc
        if not chunk:
            break
        if isinstance(chunk, str):
            raise TypeError("image file objects must be opened in binary mode")
        chunks.append(bytes(chunk))
        total += len(chunk)
        if total > limit:
            raise InputError(
                f"{label} is larger than {_fmt_bytes(limit)}, the limit per image. "
                + _advice(MAX_PIXELS)
            )
    return b"".join(chunks)


def _read_source(source: ImageSource, name: str | None) -> tuple[bytes, str]:
    """Return the raw bytes of ``source`` and the label used in messages.

    Enforces :data:`MAX_IMAGE_BYTES` (looked up at call time) without reading
    more than one byte past it.
    """
    limit = MAX_IMAGE_BYTES
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        label = _label(name or path.name)
        try:
            size = path.stat().st_size
            if not path.is_file():
                raise InputError(f"{label} is not a file. {_advice(MAX_PIXELS)}")
            if size > limit:
                raise InputError(
                    f"{label} is {_fmt_bytes(size)}; the limit is {_fmt_bytes(limit)} per image. "
                    + _advice(MAX_PIXELS)
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
                f"{label} is {_fmt_bytes(view.nbytes)}; the limit is {_fmt_bytes(limit)} per image. "
                + _advice(MAX_PIXELS)
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
        raise InputError(f"{label} is empty (0 bytes). {_advice(MAX_PIXELS)}")
    return data, label


# --------------------------------------------------------------------------- decoding

_BOMB_PIXELS_RE = re.compile(r"\((\d+) pixels\)")


def _too_many_pixels(label: str, max_pixels: int, size: tuple[int, int] | None, exc_text: str = "") -> InputError:
    if size is not None:
        w, h = size
        what = f"{w} x {h} pixels ({_fmt_mp(w * h)})"
    else:
        m = _BOMB_PIXELS_RE.search(exc_text)
        what = f"{_fmt_mp(int(m.group(1)))}" if m else "too many pixels"
    return InputError(
        f"{label} is {what}, more than the {_fmt_mp(max_pixels)} limit. "
        f"Shrink it to at most {_fmt_mp(max_pixels)} and upload it again."
    )


def _decode(
    data: bytes,
    label: str,
    *,
    max_pixels: int,
    draft_size: tuple[int, int] | None,
    max_side: int | None = None,
) -> Image.Image:
    """Decode ``data`` into a detached RGB image, or raise InputError."""
    # Pillow must refuse truncated files instead of padding them with grey;
    # nothing in this app wants the lenient mode.
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    # Pillow warns (DecompressionBombWarning) between ~89 and ~179 MP; make that
    # a refusal too.  catch_warnings() is not thread-safe before Python 3.14, so
    # concurrent sessions may leave this "error" filter installed globally,
    # which is harmless: it is exactly the policy wanted everywhere.
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        # Every except below is deliberately broad and wraps only Pillow calls:
        # Pillow's plugins raise all sorts of exceptions (OSError, ValueError,
        # SyntaxError, struct.error, EOFError, IndexError, MemoryError ...) on
        # hostile data, and for a user's upload all of them mean "bad file".
        try:
            im = Image.open(io.BytesIO(data), formats=_OPEN_FORMATS)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise _too_many_pixels(label, max_pixels, None, str(exc)) from exc
        except Image.UnidentifiedImageError as exc:
            claimed = _accepted_kind(data)
            if claimed is not None:
                raise InputError(
                    f"{label} starts like a {claimed} file but could not be read: it is corrupt "
                    "or truncated. Re-save it as JPEG or PNG and upload it again."
                ) from exc
            what = _sniff(data)
            kind = (
                f"looks like {what}, which is not an accepted format"
                if what
                else "is not an image in an accepted format"
            )
            raise InputError(f"{label} {kind}. {_advice(max_pixels)}") from exc
        except Exception as exc:
            raise InputError(
                f"{label} could not be opened: the file is corrupt ({_reason(exc)}). "
                f"Re-save it as JPEG or PNG and upload it again."
            ) from exc

        with im:
            w, h = im.size
            if w <= 0 or h <= 0:
                raise InputError(f"{label} has no pixels ({w} x {h}). {_advice(max_pixels)}")
            if w * h > max_pixels:
                raise _too_many_pixels(label, max_pixels, (w, h))
            try:
                im.seek(0)  # animations and multi-page files: first frame only
                if draft_size is None and max_side:
                    draft_size = (int(max_side), int(max_side))
                if draft_size is not None and im.format in ("JPEG", "MPO"):
                    # Square request so the result is never smaller than
                    # draft_size even after an EXIF 90-degree rotation.
                    side = max(int(draft_size[0]), int(draft_size[1]))
                    if side > 0:
                        im.draft("RGB", (side, side))
                im.load()
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
                raise _too_many_pixels(label, max_pixels, None, str(exc)) from exc
            except Exception as exc:
                raise InputError(
                    f"{label} could not be decoded: the file is truncated or corrupt "
                    f"({_reason(exc)}). Re-save it as JPEG or PNG and upload it again."
                ) from exc
            try:
                ImageOps.exif_transpose(im, in_place=True)
            except Exception:
                pass  # unreadable EXIF: show the pixels as stored rather than refuse
            rgb = _to_rgb(im, label)
    if max_side and max(rgb.size) > max_side:
        # Keep what is held in memory small: a model sees at most a few hundred pixels a side.
        rgb.thumbnail((int(max_side), int(max_side)), Image.BILINEAR, reducing_gap=2.0)
    rgb.info = {}
    return rgb


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def load_image(
    source: ImageSource,
    *,
    max_pixels: int = MAX_PIXELS,
    name: str | None = None,
    draft_size: tuple[int, int] | None = None,
    max_side: int | None = None,
) -> Image.Image:
    """Decode one untrusted image into a detached ``RGB`` image.

    ``source`` is a file path, bytes-like data, or a binary file-like object
    (e.g. Streamlit's ``UploadedFile``, read from its start).  ``name`` labels
    the file in error messages (default: the path's or file object's basename).

    Refuses, with :class:`InputError`: empty files, files over
    :data:`MAX_IMAGE_BYTES`, formats outside :data:`ALLOWED_FORMATS`, images
    over ``max_pixels`` (checked from the header, before decoding),
    decompression bombs, and truncated or corrupt files.  EXIF orientation is
    applied, only the first frame of an animation is kept, and every colour
    mode is converted to RGB (see :func:`to_rgb`).

    ``draft_size=(w, h)`` lets a large JPEG decode at a reduced scale (1/2,
    1/4 or 1/8) that is still at least ``max(w, h)`` pixels on both sides; it
    is an optimisation only and is ignored for other formats. ``max_side``
    shrinks the decoded image (aspect kept) so neither side exceeds it: what
    stays in memory per image is bounded, whatever the file declared.
    """
    data, label = _read_source(source, name)
    return _decode(data, label, max_pixels=max_pixels, draft_size=draft_size, max_side=max_side)


def load_images(
    sources: Iterable[tuple[str, ImageSource]],
    *,
    max_count: int = MAX_IMAGES,
    max_total_bytes: int = MAX_TOTAL_BYTES,
    max_pixels: int = MAX_PIXELS,
    draft_size: tuple[int, int] | None = None,
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
        data, label = _read_source(source, name)
        total += len(data)
        if total > max_total_bytes:
            raise InputError(
                f"The images add up to more than {_fmt_bytes(max_total_bytes)}, the limit for one "
                f"batch (reached at {label}). Upload fewer or smaller images."
            )
        out.append((name, _decode(data, label, max_pixels=max_pixels, draft_size=draft_size, max_side=max_side)))
    return out


# --------------------------------------------------------------------------- ZIP


def _natural_key(name: str) -> tuple:
    """Sort key like a file manager's: "img.png" < "img2.png" < "img10.png", case-insensitive."""

    def split(text: str) -> tuple:
        parts = re.split(r"([0-9]+)", text)
        return tuple(int(p) if i % 2 else p.casefold() for i, p in enumerate(parts))

    stem, ext = os.path.splitext(name)
    return (split(stem), split(ext), name)


def _zip_image_members(zf: zipfile.ZipFile) -> list[tuple[str, zipfile.ZipInfo]]:
    """(path, info) for the members that look like images; junk is skipped."""
    members = []
    for info in zf.infolist():
        if info.is_dir():
            continue
        path = info.filename.replace("\\", "/")
        parts = [p for p in path.split("/") if p not in ("", ".")]
        if not parts:
            continue
        if any(p == "__MACOSX" or (p.startswith(".") and p != "..") for p in parts):
            continue  # macOS resource forks, .DS_Store, hidden files and folders
        if os.path.splitext(parts[-1])[1].lower() not in _ZIP_IMAGE_EXTENSIONS:
            continue
        members.append(("/".join(p for p in parts if p != ".."), info))
    return members


def images_from_zip(
    data: ZipSource,
    *,
    max_count: int = MAX_IMAGES,
    max_total_bytes: int = MAX_TOTAL_BYTES,
    max_pixels: int = MAX_PIXELS,
    draft_size: tuple[int, int] | None = None,
    max_side: int | None = None,
    max_total_pixels: int = MAX_ZIP_PIXELS,
) -> list[tuple[str, Image.Image]]:
    """Decode the images in a ZIP archive (e.g. a zipped folder), sorted naturally by name.

    Nothing is extracted to disk.  Directories, ``__MACOSX/``, hidden files and
    members without an image extension are skipped.  The archive is refused
    (:class:`InputError`) if it is not a ZIP, holds no images, more than
    ``max_count`` images, more than ``max_total_bytes`` of them (declared,
    uncompressed), a member over :data:`MAX_IMAGE_BYTES`, a member that
    inflates more than :data:`MAX_COMPRESSION_RATIO` times (zip bomb), or a
    member that does not decode (the message names it).

    Returned names are member basenames; if two members share a basename,
    their paths inside the archive are used instead so names stay unique.
    """
    label = "The ZIP file"  # start of a sentence; ``where`` is the same mid-sentence
    if isinstance(data, (bytes, bytearray, memoryview)):
        if memoryview(data).nbytes == 0:
            raise InputError(f"{label} is empty (0 bytes).")
        fp: IO[bytes] = io.BytesIO(data)
    elif isinstance(data, (str, os.PathLike)):
        label = _label(Path(data).name)
        try:
            fp = io.BytesIO(Path(data).read_bytes())
        except OSError as exc:
            raise InputError(f"{label} could not be read ({exc.strerror or exc}).") from exc
    elif hasattr(data, "read"):
        raw_name = getattr(data, "name", None)
        if isinstance(raw_name, str) and raw_name:
            label = _label(os.path.basename(raw_name))
        seekable = getattr(data, "seekable", lambda: False)()
        if seekable:
            data.seek(0)
            fp = data
        else:
            fp = io.BytesIO(data.read())
    else:
        raise TypeError(f"ZIP source must be bytes, a path or a binary file object, not {type(data).__name__}")

    try:
        zf = zipfile.ZipFile(fp)
    except Exception as exc:  # BadZipFile, plus whatever a hostile directory provokes
        raise InputError(
            f"{label} is not a valid ZIP archive ({_reason(exc)}). "
            "Zip a folder of images and upload the .zip file."
        ) from exc

    where = "the ZIP file" if label == "The ZIP file" else label
    with zf:
        try:
            members = _zip_image_members(zf)
        except Exception as exc:
            raise InputError(f"{label} is not a valid ZIP archive ({_reason(exc)}).") from exc
        if not members:
            raise InputError(
                f"{label} contains no images. Put {_FORMATS_TEXT} files in a folder, zip it "
                "and upload the .zip file."
            )
        if len(members) > max_count:
            raise InputError(
                f"{label} contains {len(members)} images; the limit is {max_count}. "
                "Zip fewer images."
            )
        for path, info in members:
            if (
                info.file_size > _RATIO_CHECK_MIN_BYTES
                and info.file_size > MAX_COMPRESSION_RATIO * max(info.compress_size, 1)
            ):
                raise InputError(
                    f'"{path}" in {where} is compressed '
                    f"suspiciously well ({info.file_size // max(info.compress_size, 1)}:1, more than "
                    f"{MAX_COMPRESSION_RATIO}:1), which is how zip bombs work, so the archive was refused."
                )
            if info.file_size > MAX_IMAGE_BYTES:
                raise InputError(
                    f'"{path}" in {where} is {_fmt_bytes(info.file_size)}; the limit is '
                    f"{_fmt_bytes(MAX_IMAGE_BYTES)} per image. Zip smaller images."
                )
            if info.flag_bits & 0x1:
                raise InputError(
                    f'"{path}" in {where} is password-protected. Zip the images without a password.'
                )
        total = sum(info.file_size for _, info in members)
        if total > max_total_bytes:
            raise InputError(
                f"The images in {where} add up to "
                f"{_fmt_bytes(total)} uncompressed; the limit is {_fmt_bytes(max_total_bytes)}. "
                "Zip fewer or smaller images."
            )

        basenames = [path.rsplit("/", 1)[-1] for path, _ in members]
        named = [
            (base if basenames.count(base) == 1 else path, path, info)
            for base, (path, info) in zip(basenames, members)
        ]
        named.sort(key=lambda t: _natural_key(t[0]))

        out: list[tuple[str, Image.Image]] = []
        pixels_seen = 0
        for name, path, info in named:
            member_label = f'"{path}" in {where}'
            try:
                with zf.open(info) as f:
                    blob = f.read(MAX_IMAGE_BYTES + 1)
            except Exception as exc:  # bad CRC, unsupported compression, encryption, zlib.error ...
                raise InputError(
                    f"{member_label} could not be extracted ({_reason(exc)}). "
                    "Re-create the ZIP file and upload it again."
                ) from exc
            if len(blob) > MAX_IMAGE_BYTES:
                raise InputError(
                    f"{member_label} is larger than {_fmt_bytes(MAX_IMAGE_BYTES)}, the limit per image."
                )
            if not blob:
                raise InputError(f"{member_label} is empty (0 bytes). Remove it and zip the folder again.")
            pixels_seen += _declared_pixels(blob)
            if pixels_seen > max_total_pixels:
                raise InputError(
                    f"The images in {where} add up to more than {_fmt_mp(max_total_pixels)} "
                    f"(the limit for one archive) by {member_label}. Zip fewer or smaller images."
                )
            out.append((name, _decode(blob, member_label, max_pixels=max_pixels, draft_size=draft_size,
                                      max_side=max_side)))
    return out


def _declared_pixels(blob: bytes) -> int:
    """Width x height from an image header, without decoding (0 if unreadable: _decode will say why)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(blob), formats=_OPEN_FORMATS) as im:
                return int(im.width) * int(im.height)
    except Exception:
        return 0


# --------------------------------------------------------------------------- colour modes


def _gray_u8_to_rgb(arr: np.ndarray) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(arr, dtype=np.uint8), "L").convert("RGB")


def _stretch(arr: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Map [lo, hi] linearly onto 0..255 (uint8), without float overflow."""
    if hi <= lo:
        return np.full(arr.shape, np.clip(round(lo) if np.isfinite(lo) else 0, 0, 255), np.uint8)
    scale = 255.0 / (float(hi) - float(lo))
    out = arr.astype(np.float32) * np.float32(scale)
    out -= np.float32(float(lo) * scale)
    np.clip(out, 0, 255, out=out)
    return np.rint(out).astype(np.uint8)


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
    vals = arr[finite]
    lo, hi = float(vals.min()), float(vals.max())
    if not finite.all():
        arr = np.nan_to_num(arr, nan=lo, posinf=hi, neginf=lo)
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
            f"({_reason(exc)}). Re-save it as an RGB JPEG or PNG and upload it again."
        ) from exc


def to_rgb(image: Image.Image) -> Image.Image:
    """A new ``RGB`` copy of ``image``, converting any Pillow mode faithfully.

    Transparency is composited over white; 16-bit, 32-bit and float greyscale
    are scaled (never clipped) to 0..255; LAB goes through a real colour
    transform.  Raises InputError for a mode Pillow cannot convert.
    """
    return _to_rgb(image, "The image")


# --------------------------------------------------------------------------- model input


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in size)  # type: ignore[misc]
    except (TypeError, ValueError) as exc:
        raise InputError(
            f"The model's input size {size!r} is not a fixed (height, width); "
            "use a model with a fixed input size."
        ) from exc
    if h <= 0 or w <= 0 or h * w > MAX_PIXELS:
        raise InputError(
            f"The model's input size {h} x {w} is not usable (it must be positive and at most "
            f"{_fmt_mp(MAX_PIXELS)})."
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


# --------------------------------------------------------------------------- digests


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


# --------------------------------------------------------------------------- samples

#: Folder holding the bundled sample images.
SAMPLES_DIR = Path(__file__).resolve().parent.parent / "assets" / "samples"


@dataclass(frozen=True)
class Sample:
    """A bundled sample image and its provenance (from scikit-image's data, re-encoded)."""

    name: str
    filename: str
    title: str
    source: str
    licence: str


_PD = "Public domain"
_CC0 = "CC0"

SAMPLES: dict[str, Sample] = {
    s.name: s
    for s in (
        Sample("astronaut", "astronaut.jpg", "Astronaut Eileen Collins (NASA portrait)", "NASA", _PD),
        Sample("astronaut_face", "astronaut_face.jpg", "Astronaut's face (crop of the astronaut)", "NASA", _PD),
        Sample("brick", "brick.jpg", "Brick texture", "CC0Textures", _CC0),
        Sample("camera", "camera.jpg", "Man with a camera", "Lav Varshney", _CC0),
        Sample("cat", "cat.jpg", 'Cat ("Chelsea")', "Stefan van der Walt", _CC0),
        Sample("coffee", "coffee.jpg", "Cup of coffee", "Rachel Michetti", _CC0),
        Sample("coins", "coins.jpg", "Greek coins", "Brooklyn Museum", "No known copyright restrictions"),
        Sample("grass", "grass.jpg", "Grass texture", "CC0Textures", _CC0),
        Sample("gravel", "gravel.jpg", "Gravel texture", "CC0Textures", _CC0),
        Sample("horse", "horse.png", "Horse silhouette", "Andreas Preuss (openclipart)", _CC0),
        Sample("hubble", "hubble.jpg", "Hubble deep field", "NASA", _PD),
        Sample("retina", "retina.jpg", "Human retina (fundus photo)", "Wikimedia Commons", _CC0),
        Sample("rocket", "rocket.jpg", "SpaceX rocket launch", "SpaceX", _PD),
    )
}


def sample_path(name: str) -> Path:
    """Path of the bundled sample ``name`` (a key of :data:`SAMPLES`)."""
    sample = SAMPLES.get(name)
    if sample is None:
        raise InputError(
            f'There is no sample image called "{name}". Choose one of: {", ".join(sorted(SAMPLES))}.'
        )
    return SAMPLES_DIR / sample.filename


@functools.lru_cache(maxsize=None)
def _decoded_sample(name: str) -> Image.Image:
    return load_image(sample_path(name), name=SAMPLES[name].filename)


def load_sample(name: str) -> Image.Image:
    """The bundled sample ``name`` as an RGB image (decoded once; each call gets its own copy)."""
    sample_path(name)  # validates the name before touching the cache
    return _decoded_sample(name).copy()
