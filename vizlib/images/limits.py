"""What an uploaded image may be: formats, sizes, counts, and how refusals read.

Every cap that decides whether an upload is accepted lives here, so a host
can read (or a test can change) them in one place. Functions elsewhere in
:mod:`vizlib.images` look them up as ``limits.NAME`` at call time.
"""

from __future__ import annotations

import os
from typing import IO, Union

from vizlib.units import fmt_bytes, fmt_mp

#: The app's own pixel cap, well under Pillow's ~89 MP decompression-bomb limit:
#: a 40 MP RGB image is already 120 MB decoded.
MAX_PIXELS = 40_000_000
#: Longest side accepted, whatever the pixel count (JPEG, GIF and WebP cannot exceed it
#: anyway). Bounds per-row work in decoders, e.g. a BMP "delta" code skips 255 rows at once.
MAX_SIDE = 65_535
#: Largest single image file accepted (bytes).
MAX_IMAGE_BYTES = 20 * 2**20
#: Most images accepted in one batch (uploads or one ZIP).
MAX_IMAGES = 200
#: Most images one dataset atlas may list (a folder, ZIP or table given to ``python -m vizlib.atlas``),
#: counted before a name is made per image: a table declaring 300 million rows is refused from its metadata.
MAX_DATASET_IMAGES = 1_000_000
#: Pixels of stored pictures (atlas crops, thumbnails, feature visualisations) one request may decode
#: in all, and at most per picture: a page showing 49 crops never holds 49 large images.
MAX_REQUEST_PIXELS = 64_000_000
MAX_STORED_PICTURE_PIXELS = 16_777_216
#: Largest total size of one batch of images (bytes; for a ZIP, uncompressed).
MAX_TOTAL_BYTES = 200 * 2**20
#: A ZIP member that inflates more than this many times is treated as a zip bomb.
MAX_COMPRESSION_RATIO = 100
#: Pixels (declared in the headers) decoded from one ZIP in all: tiny files can declare huge, flat images.
MAX_ZIP_PIXELS = 400_000_000
#: Most entries in a ZIP's directory (images and anything else): each costs memory to list.
MAX_ZIP_ENTRIES = 10_000
#: Largest ZIP central directory (bytes), read from the end record before the directory is parsed.
MAX_ZIP_DIRECTORY_BYTES = 4 * 2**20
#: Longest side kept of a decoded image: a model sees at most a few hundred pixels a side, so
#: what stays in memory per image is bounded. Every path that feeds a model (uploads, ZIPs,
#: samples, bundles, the atlas, ``vizlib.load_image``) keeps it, so an image has one model view.
UPLOAD_MAX_SIDE = 1024
#: The ratio check applies only to members bigger than this: tiny flat images (icons, masks)
#: legitimately compress by more than 100x and inflate to nothing dangerous.
RATIO_CHECK_MIN_BYTES = 2**20

#: The only Pillow plugins ever allowed to parse user data (MPO is the
#: multi-picture JPEG variant many cameras write).
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF", "MPO")
#: What is passed to ``Image.open(formats=...)``: MPO has no opener of its own
#: (the JPEG opener returns an MPO image when it finds one) and naming it there
#: raises KeyError.
OPEN_FORMATS = tuple(f for f in ALLOWED_FORMATS if f != "MPO")
#: File extensions to offer in an upload widget (``st.file_uploader(type=...)``).
UPLOAD_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")
#: Extensions of ZIP members that are treated as images (everything else is skipped).
ZIP_IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".mpo"}
)
FORMATS_TEXT = "JPEG, PNG, WebP, BMP, GIF or TIFF"

#: What :func:`vizlib.images.load_image` accepts as a source.
ImageSource = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, IO[bytes]]


def advice(max_pixels: int) -> str:
    """The sentence that ends most refusals: what would be accepted (worded for the page, the command lines and the
    library alike)."""
    return (
        f"Use a {FORMATS_TEXT} image smaller than {fmt_bytes(MAX_IMAGE_BYTES)} "
        f"and {fmt_mp(max_pixels)}."
    )


def label(name: str | None) -> str:
    """How a file is named at the start of a message."""
    return f'"{name}"' if name else "This file"


def reason(exc: BaseException) -> str:
    """An exception's text, short enough to quote in a message."""
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."
