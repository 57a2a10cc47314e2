"""A per-request pixel budget for stored pictures (atlas crops, thumbnails, feature visualisations).

Pictures the project stored itself are small, but a stored file can be
replaced: an uploaded atlas whose 24 "crops" are 40-megapixel PNGs would
have a page decode a gigapixel for one view. Every stored picture is decoded
by the one decoder (:func:`vizlib.images.load_image`) with a longest side,
after its *declared* size (from the header, nothing decoded) was charged
against what the request may still decode.
"""

from __future__ import annotations

from typing import Any, Optional

from vizlib.errors import InputError
from vizlib.images import limits
from vizlib.units import fmt_mp

__all__ = ["PixelBudget"]


class PixelBudget:
    """Pixels one request may still decode from stored pictures.

    ``total`` defaults to :data:`~vizlib.images.limits.MAX_REQUEST_PIXELS`;
    each picture may declare at most :data:`~vizlib.images.limits.MAX_STORED_PICTURE_PIXELS`.
    """

    def __init__(self, total: Optional[int] = None, *, what: str = "the stored pictures"):
        self.left = int(limits.MAX_REQUEST_PIXELS if total is None else total)
        self.what = what

    def decode(self, blob: bytes, name: str, *, max_side: int, max_pixels: Optional[int] = None) -> Any:
        """``blob`` as a detached RGB PIL image no larger than ``max_side``, charged to this budget.

        Raises :class:`InputError` for a picture that is not an image, declares more
        than ``max_pixels`` (default the per-picture cap), or more than is left.
        """
        from vizlib.images.decode import declared_size, load_image

        per = int(min(limits.MAX_STORED_PICTURE_PIXELS, max_pixels or limits.MAX_STORED_PICTURE_PIXELS))
        if not isinstance(blob, (bytes, bytearray, memoryview)):
            raise InputError(f"{name} in {self.what} is not a picture.")
        w, h = declared_size(bytes(blob), name, per)
        if w * h > self.left:
            raise InputError(f"{self.what[:1].upper() + self.what[1:]} add up to more than "
                             f"{fmt_mp(limits.MAX_REQUEST_PIXELS)} for one view ({name} is {w} x {h}): they are not "
                             "what vizlib stores; rebuild the atlas.")
        self.left -= w * h
        return load_image(bytes(blob), name=name, max_pixels=per, max_side=int(max_side))
