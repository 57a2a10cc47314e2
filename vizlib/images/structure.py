"""Refusing hostile image *structure* before Pillow parses it.

The pixel cap bounds what a decoded image holds, not what a decoder spends on
the way there. Measured with Pillow 12.3 on this project's server (numbers in
``benchmarks/README.md``, section "Hostile uploads"), these decoders amplify
small files far beyond their pixels:

* **JPEG.** libjpeg passes over every block of a scan's components once per
  scan: a 220 KB progressive JPEG of 1,000 near-empty scans of a 36 MP frame
  took 72 s. Pillow's marker loop runs in Python, one step per segment and one
  per junk byte; and when it opens any JPEG it reads the EXIF IFD0 (for the
  dpi) and the multi-picture (MPF) IFD, each tag a fresh copy of the bytes it
  points at -- thousands of tags can point at one block.
* **TIFF.** Pillow reads every IFD0 tag's data when it opens the file (twice),
  then, after decoding, reads the EXIF, GPS and Interop IFDs and unpacks every
  value into Python objects: 1,000 tags pointing at one 1 MB block cost 2 GB.
  Each strip or tile becomes a Python object and a decoder call, and
  StripOffsets may list far more strips than the image has (1M strips of an
  8x8 image: 7.6 s, 300 MB).
* **GIF.** A comment's sub-blocks are joined with ``bytes +=``, quadratic in
  their number (1M one-byte pieces: 35 s); everything before the first image
  is walked in Python, one sub-block (or junk byte) at a time.
* **PNG.** Every chunk is a step of a Python loop (1M empty chunks: 2 s, 170 MB).
* **BMP.** The RLE decoder is pure Python (RLE4: 1.5 s per MB of stream), and
  a "delta" code appends up to 255 rows at once, past the image's end: a 1 KB
  BMP 40,000,000 pixels wide asks for 10 GB.

:func:`check` reads only the container's structure (marker segments, chunk
headers, IFD entries, GIF blocks) -- with C-level searches and ``struct``
unpacks, never more Python steps than the caps below allow -- and refuses,
with :class:`~vizlib.errors.InputError`, any file whose structure would drive
one of those costs past a cap that no ordinary image comes near. What is left
is bounded by the pixel cap: see ``benchmarks/README.md`` for the worst time
and memory per class.

EXIF orientation is read by :func:`orientation` from IFD0 alone, so Pillow's
EXIF reader (which copies and unpacks every tag, and rewrites the whole block
when an orientation is applied) never runs on a JPEG, PNG or WebP upload.
"""

from __future__ import annotations

import re
import struct
from typing import Any

from vizlib.errors import InputError
from vizlib.units import fmt_bytes, fmt_mp

__all__ = ["check", "kind", "orientation"]

# --------------------------------------------------------------------------- caps

#: Marker segments in a JPEG (APPn, COM, tables, frame and scan headers; restart markers
#: don't count). An ICC profile can take 255 APP2 segments; cameras write a few dozen.
MAX_JPEG_SEGMENTS = 4096
#: Scans in a JPEG: baseline has 1 (3 when not interleaved), progressive ~10.
MAX_JPEG_SCANS = 100
#: Samples decoded over all scans (each scan passes over all blocks of its components):
#: 30 full passes of a 40 MP image, ~1.5 s here. A 10-scan progressive 40 MP photo needs ~0.4e9.
MAX_JPEG_SCAN_SAMPLES = 1_200_000_000
#: Bytes Pillow's JPEG/GIF parsers step over one Python iteration at a time (junk between
#: segments, fill bytes): a few are common in damaged files, megabytes only in hostile ones.
MAX_JUNK_BYTES = 65_536
#: Entries in one TIFF/EXIF directory (IFD). Cameras and scanners write well under 100.
MAX_IFD_ENTRIES = 1024
#: Tag data read from all directories of one TIFF structure may exceed its size by at most this
#: factor (plus :data:`IFD_DATA_SLACK`): ordinary tags point at bytes of their own, so the total
#: is under 1x; tags sharing one block multiply it.
IFD_DATA_FACTOR = 2
IFD_DATA_SLACK = 65_536
#: Numeric tag values (SHORT, LONG, RATIONAL ...) in the image's own TIFF directory, and in each
#: EXIF/GPS/Interop directory, which Pillow unpacks value by value into Python objects.
MAX_IFD_VALUES = 2**20
MAX_SUB_IFD_VALUES = 2**16
#: Strips or tiles of a TIFF (and never more than about what its size and strip/tile geometry
#: give): 65,535 one-row strips of planar RGB fit.
MAX_TIFF_STRIPS = 2**18
#: Chunks in a PNG (libpng writes 8 KB IDAT chunks: 2,560 for a 20 MB file).
MAX_PNG_CHUNKS = 65_536
#: Sub-blocks (and junk bytes) before a GIF's first image, and sub-blocks of one comment
#: (joined quadratically by Pillow: 1,024 pieces of <= 255 bytes cost ~0.1 s).
MAX_GIF_BLOCKS = 65_536
MAX_GIF_COMMENT_PIECES = 1024
#: Bytes of RLE-compressed BMP pixel data, decoded by a pure-Python loop (RLE8 ~0.4 s per MB,
#: RLE4 ~1.5 s per MB here).
MAX_BMP_RLE8_BYTES = 4 * 2**20
MAX_BMP_RLE4_BYTES = 1 * 2**20

_SAVE_AS = "Re-save it as PNG or a baseline JPEG and try again."

# --------------------------------------------------------------------------- dispatch

#: TIFF byte-order/version prefixes Pillow accepts (``TiffImagePlugin.PREFIXES``).
TIFF_PREFIXES = (b"MM\x00\x2a", b"II\x2a\x00", b"MM\x2a\x00", b"II\x00\x2a", b"MM\x00\x2b", b"II\x2b\x00")


def kind(data: bytes) -> str | None:
    """Which of the allowed Pillow plugins will parse ``data`` (by the same magic numbers), if any."""
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if data.startswith(b"BM"):
        return "BMP"
    if data.startswith(TIFF_PREFIXES):
        return "TIFF"
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def check(data: bytes, label: str) -> None:
    """Refuse ``data`` if its structure would make Pillow spend far more than its pixels need.

    ``label`` names the file at the start of a message (``'"cat.jpg"'``,
    ``"This file"``). Files of other kinds pass untouched (Pillow refuses them).
    Structure that merely ends early passes too (Pillow says what is wrong); a
    structure the checks cannot follow is refused (fail closed).
    """
    checker = _CHECKERS.get(kind(data) or "")
    if checker is None:
        return
    try:
        checker(data, label)
    except InputError:
        raise
    except Exception as exc:  # the checkers stop at truncation themselves: this is a structure they misread
        raise InputError(
            f"{label} could not be read: its structure is corrupt ({type(exc).__name__}). {_SAVE_AS}"
        ) from exc


# --------------------------------------------------------------------------- JPEG

# A marker: 0xFF followed by anything but 0x00 (a stuffed byte) or 0xFF (fill).
_MARKER = re.compile(rb"\xff[^\x00\xff]")
# The marker that ends a scan's entropy-coded data: restart markers RST0-7 belong to the scan.
_SCAN_END = re.compile(rb"\xff+[^\x00\xff\xd0-\xd7]")
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_STANDALONE = frozenset(range(0xD0, 0xD9)) | {0x01}


def _check_jpeg(data: bytes, label: str) -> None:
    n = len(data)
    pos = 2
    segments = scans = 0
    junk = 0
    samples = 0
    frame: tuple[int, dict[int, int]] | None = None  # (pixels, {component id: share of pixels x 64})
    in_scans = False
    while pos < n:
        m = (_SCAN_END if in_scans else _MARKER).search(data, pos)
        if m is None:
            break
        if not in_scans:
            # Before the first scan Pillow walks junk and fill bytes one at a time, in Python.
            junk += m.start() - pos
            if junk > MAX_JUNK_BYTES:
                raise InputError(
                    f"{label} has {fmt_bytes(junk)} of stray bytes between its JPEG segments. "
                    f"{_SAVE_AS}"
                )
        marker = data[m.end() - 1]
        pos = m.end()
        if marker == 0xD9:  # end of image
            break
        if marker in _STANDALONE:
            continue
        if pos + 2 > n:
            break
        length = struct.unpack_from(">H", data, pos)[0]
        segments += 1
        if segments > MAX_JPEG_SEGMENTS:
            raise InputError(
                f"{label} is made of more than {MAX_JPEG_SEGMENTS:,} JPEG segments (metadata, tables "
                f"and scans); ordinary photos have a few dozen. {_SAVE_AS}"
            )
        body = data[pos + 2 : pos + length] if marker in (0xE1, 0xE2) or marker in _SOF or marker == 0xDA else b""
        if marker in _SOF and len(body) >= 6:
            height, width, ncomp = struct.unpack_from(">HHB", body, 1)
            comps = {}
            factors = []
            for i in range(min(ncomp, (len(body) - 6) // 3)):
                cid, hv = body[6 + 3 * i], body[7 + 3 * i]
                factors.append((cid, max(hv >> 4, 1), max(hv & 15, 1)))
            hmax = max((h for _, h, _ in factors), default=1)
            vmax = max((v for _, _, v in factors), default=1)
            for cid, h, v in factors:
                comps[cid] = h * v * 64 // (hmax * vmax)  # share of the frame's pixels, in 64ths
            frame = (width * height, comps)
        elif marker == 0xE1 and body.startswith(b"Exif\x00\x00"):
            _check_tiff_structure(body[6:], label, "EXIF metadata", sub_ifds=True)
        elif marker == 0xE2 and body.startswith(b"MPF\x00"):
            _check_tiff_structure(body[4:], label, "multi-picture (MPF) metadata", sub_ifds=False)
        elif marker == 0xDA:
            scans += 1
            in_scans = True
            if scans > MAX_JPEG_SCANS:
                raise InputError(
                    f"{label} is a JPEG of more than {MAX_JPEG_SCANS} scans; ordinary (progressive) "
                    f"JPEGs have at most a few dozen, and each one is a pass over the whole image. {_SAVE_AS}"
                )
            if frame is not None and body:
                pixels, comps = frame
                ns = body[0]
                ids = [body[1 + 2 * i] for i in range(min(ns, (len(body) - 1) // 2))]
                samples += sum(pixels * comps.get(cid, 64) // 64 for cid in ids)
                if samples > MAX_JPEG_SCAN_SAMPLES:
                    passes = samples // max(pixels, 1)
                    raise InputError(
                        f"{label} is a JPEG whose {scans} (or more) scans pass over its {fmt_mp(pixels)} "
                        f"{passes} times: decoding it would take as long as {passes} ordinary images. "
                        f"{_SAVE_AS}"
                    )
        pos += max(length, 2)


# --------------------------------------------------------------------------- TIFF and EXIF directories

#: Field type -> bytes per value, as Pillow reads them (``ImageFileDirectory_v2._load_dispatch``);
#: other types are skipped by Pillow without reading anything.
TIFF_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4, 16: 8}
#: Types Pillow keeps as bytes/str; every other type is unpacked value by value into Python objects.
_BYTES_TYPES = frozenset({1, 2, 7})
_EXIF_IFD, _GPS_IFD, _INTEROP_IFD = 0x8769, 0x8825, 0xA005
_ORIENTATION = 0x0112


class _Ifd:
    """The entries of one directory: {tag: (type, count, inline value bytes or data offset)}."""

    def __init__(self) -> None:
        self.entries: dict[int, tuple[int, int, bytes, int]] = {}
        self.data_bytes = 0
        self.values = 0


def _tiff_header(buf: bytes) -> tuple[str, bool, int] | None:
    """(struct byte order, BigTIFF?, offset of IFD0) the way Pillow reads a TIFF header."""
    if not buf.startswith(TIFF_PREFIXES):
        return None
    endian = "<" if buf[:2] == b"II" else ">"
    big = buf[2] == 43  # what Pillow tests (so "MM\0+" is read as a classic TIFF)
    if len(buf) < (16 if big else 8):
        return None
    first = struct.unpack_from(endian + ("Q" if big else "L"), buf, 8 if big else 4)[0]
    return endian, big, first


def _read_ifd(buf: bytes, offset: int, endian: str, big: bool, label: str, what: str) -> _Ifd:
    """One directory's entries and what Pillow would read for them (bytes of tag data, values)."""
    ifd = _Ifd()
    if offset <= 0 or offset + (8 if big else 2) > len(buf):
        return ifd  # Pillow finds no directory there either
    count = struct.unpack_from(endian + ("Q" if big else "H"), buf, offset)[0]
    if count > MAX_IFD_ENTRIES:
        raise InputError(
            f"{label} has {count:,} entries in one directory of its {what}; real files have well "
            f"under {MAX_IFD_ENTRIES:,}. Re-save it without the metadata and try again."
        )
    entry, inline = (20, 8) if big else (12, 4)
    start = offset + (8 if big else 2)
    available = max(0, (len(buf) - start) // entry)
    fmt = endian + ("HHQ" if big else "HHL")
    for i in range(min(count, available)):
        at = start + i * entry
        tag, typ, n = struct.unpack_from(fmt, buf, at)
        unit = TIFF_TYPE_SIZES.get(typ)
        if unit is None:
            continue
        size = n * unit
        raw = buf[at + entry - inline : at + entry]
        if size > inline:
            where = struct.unpack_from(endian + ("Q" if big else "L"), raw)[0]
            ifd.data_bytes += max(0, min(size, len(buf) - where))  # what a read there returns
        else:
            where = -1
        if typ not in _BYTES_TYPES:
            ifd.values += n
        ifd.entries[tag] = (typ, n, raw, where)
    return ifd


def _inline_int(ifd: _Ifd, tag: int, endian: str) -> int | None:
    """A single SHORT/LONG/LONG8 value stored in the entry itself, if that is what the tag holds."""
    entry = ifd.entries.get(tag)
    if entry is None:
        return None
    typ, n, raw, _ = entry
    if n != 1 or typ not in (3, 4, 13, 16):
        return None
    letter = {3: "H", 4: "L", 13: "L", 16: "Q"}[typ]
    if struct.calcsize(endian + letter) > len(raw):
        return None
    return struct.unpack_from(endian + letter, raw)[0]


def _check_tiff_structure(buf: bytes, label: str, what: str, *, sub_ifds: bool,
                          image: bool = False) -> _Ifd | None:
    """Check IFD0 of a TIFF-structured block (a TIFF file, an EXIF or MPF segment) and,
    with ``sub_ifds``, its EXIF, GPS and Interop directories; return IFD0."""
    head = _tiff_header(buf)
    if head is None:
        return None
    endian, big, first = head
    ifd0 = _read_ifd(buf, first, endian, big, label, what)
    directories = [ifd0]
    if sub_ifds:
        for tag in (_EXIF_IFD, _GPS_IFD):
            at = _inline_int(ifd0, tag, endian)
            if at:
                sub = _read_ifd(buf, at, endian, big, label, what)
                directories.append(sub)
                if tag == _EXIF_IFD:
                    inter = _inline_int(sub, _INTEROP_IFD, endian)
                    if inter:
                        directories.append(_read_ifd(buf, inter, endian, big, label, what))
    if image:
        _check_strips(ifd0, endian, label)
    total = sum(d.data_bytes for d in directories)
    if total > IFD_DATA_FACTOR * len(buf) + IFD_DATA_SLACK:
        raise InputError(
            f"{label} has {what} whose entries point at the same data over and over "
            f"({fmt_bytes(total)} of tag data in {fmt_bytes(len(buf))}). "
            "Re-save it without the metadata and try again."
        )
    limits = [MAX_IFD_VALUES if image else MAX_SUB_IFD_VALUES] + [MAX_SUB_IFD_VALUES] * (len(directories) - 1)
    for d, cap in zip(directories, limits):
        if d.values > cap:
            raise InputError(
                f"{label} has {what} listing {d.values:,} numbers in one directory (the limit is "
                f"{cap:,}). Re-save it without the metadata and try again."
            )
    return ifd0


def _check_tiff(data: bytes, label: str) -> None:
    _check_tiff_structure(data, label, "TIFF tags", sub_ifds=True, image=True)


def _check_strips(ifd0: _Ifd, endian: str, label: str) -> None:
    """No more strips (or tiles) than the image's size and strip geometry give, and at most
    :data:`MAX_TIFF_STRIPS`: Pillow makes one Python object and one decoder call per entry."""
    tiled = 324 in ifd0.entries
    offsets = ifd0.entries.get(324 if tiled else 273)
    if offsets is None:
        return
    count = offsets[1]
    width = _inline_int(ifd0, 256, endian)
    height = _inline_int(ifd0, 257, endian)
    expected: int | None = None
    if width and height:
        planar = _inline_int(ifd0, 284, endian) or 1
        samples = _inline_int(ifd0, 277, endian) or 1
        planes = samples if planar == 2 else 1
        if tiled:
            tw = _inline_int(ifd0, 322, endian) or 0
            th = _inline_int(ifd0, 323, endian) or 0
            if tw > 0 and th > 0:
                expected = planes * -(-width // tw) * -(-height // th)
        else:
            rows = _inline_int(ifd0, 278, endian)
            rows = height if rows is None else max(rows, 1)
            expected = planes * -(-height // min(rows, height))
    what = "tiles" if tiled else "strips"
    if expected is not None and count > 2 * expected + 16:  # a few spare entries are harmless
        raise InputError(
            f"{label} lists {count:,} {what} for an image that has {expected:,}. "
            f"The file is corrupt or made to be slow to read. {_SAVE_AS}"
        )
    if count > MAX_TIFF_STRIPS:
        raise InputError(
            f"{label} is stored in {count:,} {what}, more than the {MAX_TIFF_STRIPS:,} accepted. {_SAVE_AS}"
        )


# --------------------------------------------------------------------------- PNG


def _check_png(data: bytes, label: str) -> None:
    n = len(data)
    pos = 8
    chunks = 0
    while pos + 8 <= n:
        length, kind_ = struct.unpack_from(">I4s", data, pos)
        chunks += 1
        if chunks > MAX_PNG_CHUNKS:
            raise InputError(
                f"{label} is a PNG of more than {MAX_PNG_CHUNKS:,} chunks; ordinary PNGs have a few "
                f"dozen to a few thousand. {_SAVE_AS}"
            )
        if kind_ == b"IEND":
            break
        pos += 12 + length


# --------------------------------------------------------------------------- GIF

_GIF_BLOCK_START = re.compile(rb"[\x21\x2c\x3b]")


def _check_gif(data: bytes, label: str) -> None:
    n = len(data)
    if n < 13:
        return
    flags = data[10]
    pos = 13 + (3 * 2 ** ((flags & 7) + 1) if flags & 0x80 else 0)
    steps = 0
    while pos < n:
        b = data[pos]
        if b in (0x2C, 0x3B):  # the first image (decoded in C from here), or the end
            break
        if b != 0x21:
            # Pillow skips unknown bytes one Python step at a time
            m = _GIF_BLOCK_START.search(data, pos)
            end = m.start() if m else n
            steps += end - pos
            pos = end
        else:
            label_byte = data[pos + 1] if pos + 1 < n else 0
            pos += 2
            pieces = 0
            while pos < n:
                size = data[pos]
                pos += 1 + size
                pieces += 1
                if size == 0:
                    break
                if steps + pieces > MAX_GIF_BLOCKS:
                    break
                if label_byte == 0xFE and pieces > MAX_GIF_COMMENT_PIECES:
                    raise InputError(
                        f"{label} has a GIF comment made of more than {MAX_GIF_COMMENT_PIECES:,} pieces, "
                        f"which takes the decoder quadratic time to join. {_SAVE_AS}"
                    )
            steps += pieces
        if steps > MAX_GIF_BLOCKS:
            raise InputError(
                f"{label} has more than {MAX_GIF_BLOCKS:,} metadata blocks (or stray bytes) before its "
                f"first image; ordinary GIFs have a handful. {_SAVE_AS}"
            )


# --------------------------------------------------------------------------- BMP


def _check_bmp(data: bytes, label: str) -> None:
    if len(data) < 34:
        return
    offset, header = struct.unpack_from("<II", data, 10)
    if header < 40:
        return  # OS/2 1.x header: no compression
    compression = struct.unpack_from("<I", data, 30)[0]
    if compression not in (1, 2):
        return
    stream = max(0, len(data) - offset)
    cap = MAX_BMP_RLE8_BYTES if compression == 1 else MAX_BMP_RLE4_BYTES
    if stream > cap:
        raise InputError(
            f"{label} is a run-length compressed (RLE{8 if compression == 1 else 4}) BMP with "
            f"{fmt_bytes(stream)} of pixel data; compressed BMPs are accepted up to {fmt_bytes(cap)} "
            "(their decoder is slow). Re-save it as PNG and try again."
        )


_CHECKERS = {"JPEG": _check_jpeg, "TIFF": _check_tiff, "PNG": _check_png, "GIF": _check_gif, "BMP": _check_bmp}


# --------------------------------------------------------------------------- orientation

_XMP_ORIENTATION = re.compile(rb'tiff:Orientation(?:="|>)([0-9])')


def orientation(info: dict[str, Any]) -> int:
    """The EXIF orientation (1-8) recorded in an opened image's ``info``, else 1.

    Reads only the Orientation entry of IFD0 of ``info["exif"]`` (falling back,
    as Pillow does, to ``tiff:Orientation`` in XMP), in time bounded by the
    directory's entry count: no tag data is copied, nothing is unpacked.
    """
    exif = info.get("exif")
    if isinstance(exif, (bytes, bytearray)):
        buf = bytes(exif)
        if buf.startswith(b"Exif\x00\x00"):
            buf = buf[6:]
        try:
            value = _orientation_from_tiff(buf)
        except (struct.error, IndexError, ValueError):
            value = None
        if value is not None:
            return value if 1 <= value <= 8 else 1
    for key in ("XML:com.adobe.xmp", "xmp"):
        xmp = info.get(key)
        if isinstance(xmp, str):
            xmp = xmp.encode("utf-8", "replace")
        if isinstance(xmp, (bytes, bytearray)) and xmp:
            m = _XMP_ORIENTATION.search(xmp)
            if m:
                value = int(m.group(1))
                return value if 1 <= value <= 8 else 1
            return 1
    return 1


def _orientation_from_tiff(buf: bytes) -> int | None:
    head = _tiff_header(buf)
    if head is None:
        return None
    endian, big, first = head
    if first <= 0 or first + (8 if big else 2) > len(buf):
        return None
    count = struct.unpack_from(endian + ("Q" if big else "H"), buf, first)[0]
    entry = 20 if big else 12
    start = first + (8 if big else 2)
    for i in range(min(count, MAX_IFD_ENTRIES, max(0, (len(buf) - start) // entry))):
        at = start + i * entry
        tag, typ, n = struct.unpack_from(endian + ("HHQ" if big else "HHL"), buf, at)
        if tag == _ORIENTATION:
            if typ == 3 and n >= 1:
                return struct.unpack_from(endian + "H", buf, at + (12 if big else 8))[0]
            return None
    return None
