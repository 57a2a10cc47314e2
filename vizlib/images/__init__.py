"""Loading untrusted images safely and turning them into model input.

Everything a user can upload goes through :func:`load_image` (or
:func:`load_images` / :func:`images_from_zip`), which returns a fully decoded,
detached ``RGB`` :class:`PIL.Image.Image` or raises :class:`InputError` with a
message fit for the page. Caps on bytes, structure and pixels are checked
*before* decoding, so a hostile file (decompression bomb, zip bomb, a
400-megapixel header, a JPEG of 100,000 scans) costs almost nothing to refuse.

The package has one module per job; every name is importable from here:

* :mod:`~vizlib.images.limits` -- the caps (change them there: the code reads
  ``limits.NAME`` at call time) and the wording of refusals;
* :mod:`~vizlib.images.structure` -- refusing hostile file structure before
  Pillow parses it, and reading the EXIF orientation;
* :mod:`~vizlib.images.decode` -- :func:`load_image`, :func:`load_images`;
* :mod:`~vizlib.images.colour` -- every Pillow mode to faithful RGB (:func:`to_rgb`);
* :mod:`~vizlib.images.zips` -- :func:`images_from_zip`;
* :mod:`~vizlib.images.batch` -- :func:`to_batch`, :func:`model_view`, digests;
* :mod:`~vizlib.images.samples` -- the bundled samples and their provenance.

Only numpy and Pillow are imported here, so this package stays cheap to import.
"""

from __future__ import annotations

from vizlib.images.batch import file_digest, image_digest, image_list, model_view, to_batch
from vizlib.images.colour import to_rgb
from vizlib.images.decode import load_image, load_images
from vizlib.images.limits import (
    ALLOWED_FORMATS,
    MAX_COMPRESSION_RATIO,
    MAX_IMAGE_BYTES,
    MAX_IMAGES,
    MAX_PIXELS,
    MAX_SIDE,
    MAX_TOTAL_BYTES,
    MAX_ZIP_ENTRIES,
    MAX_ZIP_PIXELS,
    UPLOAD_EXTENSIONS,
    UPLOAD_MAX_SIDE,
    ImageSource,
)
from vizlib.images.samples import SAMPLES, SAMPLES_DIR, Sample, load_sample, sample_path
from vizlib.images.zips import ZipSource, images_from_zip

__all__ = [
    "ALLOWED_FORMATS",
    "MAX_COMPRESSION_RATIO",
    "MAX_IMAGES",
    "MAX_IMAGE_BYTES",
    "MAX_PIXELS",
    "MAX_SIDE",
    "MAX_TOTAL_BYTES",
    "MAX_ZIP_ENTRIES",
    "MAX_ZIP_PIXELS",
    "SAMPLES",
    "SAMPLES_DIR",
    "UPLOAD_EXTENSIONS",
    "UPLOAD_MAX_SIDE",
    "ImageSource",
    "Sample",
    "ZipSource",
    "file_digest",
    "image_digest",
    "images_from_zip",
    "load_image",
    "load_images",
    "load_sample",
    "model_view",
    "sample_path",
    "to_batch",
    "image_list",
    "to_rgb",
]
