"""A ZIP of images (a zipped folder) -> named, decoded images, within budgets.

Nothing is extracted to disk. The archive's directory is sized from its end
record before it is parsed (:func:`vizlib.archives.open_zip`); every image
member is checked by its directory entry (size, compression ratio, encryption)
before anything is inflated, then by its header (structure, pixels) before
anything is decoded, against a per-archive pixel budget.
"""

from __future__ import annotations

import io
import os
import re
import zipfile
from pathlib import Path
from typing import IO

from PIL import Image

from vizlib import archives
from vizlib.errors import InputError
from vizlib.images import limits
from vizlib.images.decode import declared_size, decode
from vizlib.images.limits import ImageSource
from vizlib.images.limits import label as _label
from vizlib.units import fmt_bytes, fmt_mp

__all__ = ["ZipSource", "images_from_zip"]

#: What :func:`images_from_zip` accepts (the same kinds of source as an image: bytes, a path,
#: or a binary file object); kept as a name for code that imports it.
ZipSource = ImageSource

_DIGITS = re.compile(r"([0-9]+)")


def _natural_key(name: str) -> tuple:
    """Sort key like a file manager's: "img.png" < "img2.png" < "img10.png", case-insensitive.

    Runs of digits compare by value without becoming ``int`` (a 5,000-digit run would hit
    Python's integer-conversion limit): by their length without leading zeros, then by text.
    """

    def split(text: str) -> tuple:
        parts = _DIGITS.split(text)
        return tuple(
            (len(p.lstrip("0")), p.lstrip("0")) if i % 2 else p.casefold() for i, p in enumerate(parts)
        )

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
        if os.path.splitext(parts[-1])[1].lower() not in limits.ZIP_IMAGE_EXTENSIONS:
            continue
        members.append(("/".join(p for p in parts if p != ".."), info))
    return members


def _shown(path: str) -> str:
    return path if len(path) <= 120 else path[:117] + "..."


def images_from_zip(
    data: ZipSource,
    *,
    max_count: int = limits.MAX_IMAGES,
    max_total_bytes: int = limits.MAX_TOTAL_BYTES,
    max_pixels: int = limits.MAX_PIXELS,
    max_side: int | None = None,
    max_total_pixels: int = limits.MAX_ZIP_PIXELS,
) -> list[tuple[str, Image.Image]]:
    """Decode the images in a ZIP archive (e.g. a zipped folder), sorted naturally by name.

    Nothing is extracted to disk.  Directories, ``__MACOSX/``, hidden files and
    members without an image extension are skipped.  The archive is refused
    (:class:`InputError`) if it is not a ZIP, lists more than
    :data:`~vizlib.images.limits.MAX_ZIP_ENTRIES` files, holds no images, more than
    ``max_count`` images, more than ``max_total_bytes`` of them (declared,
    uncompressed), a member over :data:`MAX_IMAGE_BYTES`, a member that
    inflates more than :data:`MAX_COMPRESSION_RATIO` times (zip bomb), images
    declaring more than ``max_total_pixels`` in all, or a member that does not
    decode (the message names it). Each image is decoded like
    :func:`~vizlib.images.load_image` with ``max_pixels`` and ``max_side``.

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

    zf = archives.open_zip(fp, label=label, max_entries=limits.MAX_ZIP_ENTRIES,
                           max_directory_bytes=limits.MAX_ZIP_DIRECTORY_BYTES)
    where = "the ZIP file" if label == "The ZIP file" else label
    with zf:
        try:
            members = _zip_image_members(zf)
        except Exception as exc:
            raise InputError(f"{label} is not a valid ZIP archive ({limits.reason(exc)}).") from exc
        if not members:
            raise InputError(
                f"{label} contains no images. Put {limits.FORMATS_TEXT} files in a folder, zip it "
                "and use the .zip file."
            )
        if len(members) > max_count:
            raise InputError(
                f"{label} contains {len(members)} images; the limit is {max_count}. "
                "Zip fewer images."
            )
        for path, info in members:  # the one archive policy: encryption, method, zip-bomb ratio, size
            archives.check_member(info, where=where, max_bytes=limits.MAX_IMAGE_BYTES,
                                  max_ratio=limits.MAX_COMPRESSION_RATIO, ratio_floor=limits.RATIO_CHECK_MIN_BYTES,
                                  what="Zip smaller images.")
        total = sum(info.file_size for _, info in members)
        if total > max_total_bytes:
            raise InputError(
                f"The images in {where} add up to "
                f"{fmt_bytes(total)} uncompressed; the limit is {fmt_bytes(max_total_bytes)}. "
                "Zip fewer or smaller images."
            )

        basenames = [path.rsplit("/", 1)[-1] for path, _ in members]
        counts: dict[str, int] = {}
        for base in basenames:
            counts[base] = counts.get(base, 0) + 1
        named = [
            (base if counts[base] == 1 else path, path, info)
            for base, (path, info) in zip(basenames, members)
        ]
        named.sort(key=lambda t: _natural_key(t[0]))

        out: list[tuple[str, Image.Image]] = []
        pixels_seen = 0
        for name, path, info in named:
            member_label = f'"{_shown(path)}" in {where}'
            blob = archives.read_member(zf, info, where=where, max_bytes=limits.MAX_IMAGE_BYTES,
                                        max_ratio=limits.MAX_COMPRESSION_RATIO, ratio_floor=limits.RATIO_CHECK_MIN_BYTES,
                                        what="Re-create the ZIP file and try again.")
            if not blob:
                raise InputError(f"{member_label} is empty (0 bytes). Remove it and zip the folder again.")
            w, h = declared_size(blob, member_label, max_pixels)
            pixels_seen += w * h
            if pixels_seen > max_total_pixels:
                raise InputError(
                    f"The images in {where} add up to more than {fmt_mp(max_total_pixels)} "
                    f"(the limit for one archive) by {member_label}. Zip fewer or smaller images."
                )
            out.append((name, decode(blob, member_label, max_pixels=max_pixels, max_side=max_side)))
    return out
