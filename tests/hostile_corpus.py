"""Generators of hostile uploads, small on disk and expensive to decode (issue #13).

Every function returns the file's bytes; each takes a size knob so that tests
and ``benchmarks/bench_hostile_uploads.py`` can draw several sizes and variants
of each class instead of one fixed file. Nothing here touches vizlib: the
files are built from their formats' specifications with ``struct``/``zlib``
(and Pillow only to encode ordinary, valid pixels).
"""

from __future__ import annotations

import io
import json
import struct
import zipfile
import zlib
from collections.abc import Iterable, Sequence

import numpy as np
from PIL import Image

# --------------------------------------------------------------------------- TIFF / EXIF structures

#: TIFF field types: code -> (struct letter, size)
_TYPES = {1: ("B", 1), 2: ("s", 1), 3: ("H", 2), 4: ("L", 4), 7: ("B", 1)}


def _ifd(entries: Sequence[tuple[int, int, int, bytes | int]], start: int, data_at: int,
         endian: str = "<", next_ifd: int = 0) -> tuple[bytes, bytes]:
    """One IFD at ``start`` and its out-of-line data at ``data_at``.

    ``entries`` are (tag, type, count, value): ``value`` is either the bytes of
    the field (placed inline if they fit in 4 bytes, else in the data area) or an
    int: an absolute offset the field points at (so several tags can share one block).
    """
    ifd = struct.pack(endian + "H", len(entries))
    data = b""
    for tag, typ, count, value in entries:
        if isinstance(value, int):
            field = struct.pack(endian + "L", value)
        elif len(value) <= 4:
            field = value.ljust(4, b"\x00")
        else:
            field = struct.pack(endian + "L", data_at + len(data))
            data += value
            if len(data) % 2:
                data += b"\x00"
        ifd += struct.pack(endian + "HHL", tag, typ, count) + field
    ifd += struct.pack(endian + "L", next_ifd)
    assert len(ifd) == 2 + 12 * len(entries) + 4
    return ifd, data


def _short(v: int) -> bytes:
    return struct.pack("<H", v)


def _long(v: int) -> bytes:
    return struct.pack("<L", v)


def tiff_image(width: int = 8, height: int = 8, *, extra: Sequence[tuple[int, int, int, bytes | int]] = (),
               strips: int | None = None, block: bytes = b"", pixels: bytes | None = None) -> bytes:
    """A little-endian, uncompressed 8-bit greyscale TIFF; ``extra`` tags go into IFD0.

    ``strips``: how many StripOffsets/StripByteCounts entries to declare (all
    pointing at the one real strip), default one. ``block``: bytes placed right
    after the header, at offset 8, for ``extra`` tags to point at (int values).
    """
    pixels = pixels if pixels is not None else bytes((i * 37) % 256 for i in range(width * height))
    n = 1 if strips is None else strips
    head = 8
    block_at = head
    pix_at = block_at + len(block)
    ifd_at = pix_at + len(pixels) + (len(pixels) % 2)
    entries: list[tuple[int, int, int, bytes | int]] = [
        (256, 4, 1, _long(width)), (257, 4, 1, _long(height)), (258, 3, 1, _short(8)),
        (259, 3, 1, _short(1)), (262, 3, 1, _short(1)),
        (273, 4, n, _long(pix_at) * n), (277, 3, 1, _short(1)),
        (278, 4, 1, _long(height if strips is None else 1)),
        (279, 4, n, _long(len(pixels)) * n),
    ]
    entries += list(extra)
    entries.sort(key=lambda e: e[0])
    data_at = ifd_at + 2 + 12 * len(entries) + 4
    ifd, data = _ifd(entries, ifd_at, data_at)
    out = b"II*\x00" + struct.pack("<L", ifd_at) + block + pixels + b"\x00" * (len(pixels) % 2) + ifd + data
    return out


def tiff_tags_sharing_one_block(n_tags: int, block_bytes: int) -> bytes:
    """A TIFF whose IFD0 has ``n_tags`` private tags, each a BYTE array of ``block_bytes`` at one offset.

    A ``block_bytes`` file makes Pillow read ``n_tags * block_bytes`` bytes of tag data.
    """
    block = b"\x07" * block_bytes
    extra = [(40000 + i, 1, block_bytes, 8) for i in range(n_tags)]
    return tiff_image(extra=extra, block=block)


def tiff_many_strips(n_strips: int, width: int = 8, height: int = 8) -> bytes:
    """A small TIFF declaring ``n_strips`` strips (all the same bytes): Pillow makes one tile each."""
    return tiff_image(width, height, strips=n_strips)


def exif_block(n_tags: int, block_bytes: int, orientation: int = 6) -> bytes:
    """A TIFF-structured EXIF block (no "Exif\\0\\0" prefix): Orientation plus ``n_tags``
    tags that all point at one ``block_bytes`` block."""
    block_at = 8
    ifd_at = block_at + block_bytes + (block_bytes % 2)
    entries: list[tuple[int, int, int, bytes | int]] = [(0x0112, 3, 1, _short(orientation))]
    entries += [(0x9000 + 0x10 + i, 7, block_bytes, block_at) for i in range(n_tags)]  # UNDEFINED
    entries.sort(key=lambda e: e[0])
    data_at = ifd_at + 2 + 12 * len(entries) + 4
    ifd, data = _ifd(entries, ifd_at, data_at)
    return b"II*\x00" + struct.pack("<L", ifd_at) + b"\x00" * block_bytes + b"\x00" * (block_bytes % 2) + ifd + data


def _base_image(size=(16, 12)) -> Image.Image:
    arr = np.zeros((size[1], size[0], 3), np.uint8)
    arr[:, : size[0] // 2] = (255, 0, 0)
    arr[:, size[0] // 2 :] = (0, 0, 255)
    return Image.fromarray(arr)


def with_exif(fmt: str, exif: bytes, size=(16, 12)) -> bytes:
    """A small valid ``fmt`` (JPEG, PNG or WEBP) image carrying ``exif``."""
    buf = io.BytesIO()
    prefix = b"Exif\x00\x00" if fmt == "JPEG" else b""
    _base_image(size).save(buf, fmt, exif=prefix + exif)
    return buf.getvalue()


def exif_many_tags(fmt: str, n_tags: int, block_bytes: int, orientation: int = 6) -> bytes:
    """A ``fmt`` image whose EXIF holds ``n_tags`` tags all pointing at one block (and an orientation)."""
    return with_exif(fmt, exif_block(n_tags, block_bytes, orientation))


def jpeg_mpf_many_tags(n_tags: int, block_bytes: int) -> bytes:
    """A JPEG with an APP2 "MPF" (multi-picture) segment whose IFD points ``n_tags`` times at one block.

    Pillow parses this segment when it opens any JPEG (to see whether it is an MPO).
    """
    base = io.BytesIO()
    _base_image().save(base, "JPEG")
    jpeg = base.getvalue()
    mp = exif_block(n_tags, block_bytes, orientation=1)
    segment = b"MPF\x00" + mp
    assert len(segment) + 2 <= 0xFFFF, "an APP2 segment holds at most 64 KB"
    app2 = b"\xff\xe2" + struct.pack(">H", len(segment) + 2) + segment
    return jpeg[:2] + app2 + jpeg[2:]


# --------------------------------------------------------------------------- BMP


def bmp_rle_deltas(width: int, height: int, n_deltas: int, rle4: bool = False) -> bytes:
    """An RLE8 (or RLE4) BMP of width x height whose stream is ``n_deltas`` "delta" codes
    moving 255 right and 255 down each: Pillow appends ``255 * (width + 1)`` bytes per code."""
    stream = b"\x00\x02\xff\xff" * n_deltas + b"\x00\x01"
    bits, compression = (4, 2) if rle4 else (8, 1)
    colours = 16 if rle4 else 256
    palette = b"".join(bytes((i, i, i, 0)) for i in range(colours))
    offset = 14 + 40 + len(palette)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, bits, compression, len(stream), 2835, 2835,
                       colours, 0)
    head = b"BM" + struct.pack("<IHHI", offset + len(stream), 0, 0, offset)
    return head + info + palette + stream


def bmp_rle_runs(width: int, height: int) -> bytes:
    """A valid RLE8 BMP painted with one-pixel runs (the slowest legitimate stream per byte)."""
    row = b"".join(b"\x01" + bytes((x % 256,)) for x in range(width)) + b"\x00\x00"
    stream = row * height + b"\x00\x01"
    palette = b"".join(bytes((i, i, i, 0)) for i in range(256))
    offset = 14 + 40 + len(palette)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 1, len(stream), 2835, 2835, 256, 0)
    return b"BM" + struct.pack("<IHHI", offset + len(stream), 0, 0, offset) + info + palette + stream


# --------------------------------------------------------------------------- GIF


def gif_comment_pieces(n_pieces: int, piece: int = 1, where: str = "before") -> bytes:
    """A 4x4 GIF with a comment extension made of ``n_pieces`` sub-blocks of ``piece`` bytes.

    Pillow joins the pieces with ``bytes +=``: quadratic in the number of pieces.
    """
    buf = io.BytesIO()
    Image.new("P", (4, 4), 1).save(buf, "GIF")
    gif = buf.getvalue()
    comment = b"\x21\xfe" + (bytes((piece,)) + b"c" * piece) * n_pieces + b"\x00"
    # after the header (6), the logical screen descriptor (7) and the global colour table
    flags = gif[10]
    gct = 3 * (2 ** ((flags & 7) + 1)) if flags & 0x80 else 0
    at = 13 + gct
    if where == "before":
        return gif[:at] + comment + gif[at:]
    return gif[:-1] + comment + gif[-1:]  # after the first image, before the trailer


def gif_application_pieces(n_pieces: int) -> bytes:
    """A GIF with an application extension of ``n_pieces`` one-byte sub-blocks (a linear skip)."""
    buf = io.BytesIO()
    Image.new("P", (4, 4), 1).save(buf, "GIF")
    gif = buf.getvalue()
    flags = gif[10]
    gct = 3 * (2 ** ((flags & 7) + 1)) if flags & 0x80 else 0
    at = 13 + gct
    ext = b"\x21\xff\x0bXXXXXXXX1.0" + b"\x01a" * n_pieces + b"\x00"
    return gif[:at] + ext + gif[at:]


# --------------------------------------------------------------------------- JPEG


def _segments(jpeg: bytes) -> list[tuple[int, bytes]]:
    """(marker, whole segment bytes incl. entropy data after SOS) of a JPEG, in order."""
    out = []
    pos = 2
    while pos < len(jpeg):
        assert jpeg[pos] == 0xFF
        marker = jpeg[pos + 1]
        if marker == 0xD9:
            out.append((marker, jpeg[pos:]))
            break
        length = struct.unpack(">H", jpeg[pos + 2 : pos + 4])[0]
        end = pos + 2 + length
        if marker == 0xDA:  # entropy-coded data runs to the next non-RST marker
            while True:
                end = jpeg.index(b"\xff", end)
                if jpeg[end + 1] == 0 or 0xD0 <= jpeg[end + 1] <= 0xD7:
                    end += 2
                    continue
                break
        out.append((marker, jpeg[pos:end]))
        pos = end
    return out


def progressive_jpeg_scans(n_extra_scans: int, size: int = 256, grey: bool = True, flat: bool = True) -> bytes:
    """A valid progressive JPEG whose last scan (with its Huffman table) is repeated ``n_extra_scans`` times.

    libjpeg decodes every scan over every block of its components: time grows
    with scans x pixels, for a file that grows by only a few bytes per scan.
    """
    if flat:  # one grey: every AC scan is a few bytes of end-of-band runs
        arr = np.full((size, size), 128, np.uint8)
    else:
        arr = (np.add.outer(np.arange(size), np.arange(size)) % 256).astype(np.uint8)
    img = Image.fromarray(arr, "L") if grey else Image.fromarray(np.stack([arr] * 3, -1))
    buf = io.BytesIO()
    img.save(buf, "JPEG", progressive=True, quality=50)
    segs = _segments(buf.getvalue())
    last_sos = max(i for i, (m, _) in enumerate(segs) if m == 0xDA)
    tables = b"".join(s for m, s in segs[last_sos - 1 : last_sos] if m == 0xC4)
    repeat = tables + segs[last_sos][1]
    body = b"".join(s for _, s in segs[:-1])
    return b"\xff\xd8" + body + repeat * n_extra_scans + b"\xff\xd9"


def jpeg_many_markers(n_markers: int, marker: int = 0xE5) -> bytes:
    """A valid small JPEG with ``n_markers`` tiny APPn (or COM) segments before its frame header."""
    buf = io.BytesIO()
    _base_image().save(buf, "JPEG")
    jpeg = buf.getvalue()
    seg = bytes((0xFF, marker)) + struct.pack(">H", 3) + b"x"
    return jpeg[:2] + seg * n_markers + jpeg[2:]


# --------------------------------------------------------------------------- PNG


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_many_chunks(n_chunks: int, kind: bytes = b"xxXx", where: str = "before") -> bytes:
    """A valid PNG with ``n_chunks`` empty ancillary chunks before its IDAT (``where="before"``),
    or (``where="idat"``) with its image data split into at least ``n_chunks`` one-byte IDAT chunks."""
    buf = io.BytesIO()
    if where == "before":
        _base_image().save(buf, "PNG")
    else:  # noise compresses badly: one IDAT byte per chunk makes many chunks
        side = max(16, int((n_chunks * 1.1) ** 0.5))
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (side, side), np.uint8)).save(buf, "PNG")
    png = buf.getvalue()
    ihdr_end = 8 + 25
    junk = png_chunk(kind, b"") * n_chunks
    if where == "before":
        return png[:ihdr_end] + junk + png[ihdr_end:]
    # split IDAT into one-byte IDAT chunks
    pos, out = 8, [png[:8]]
    while pos < len(png):
        length = struct.unpack(">I", png[pos : pos + 4])[0]
        kind_ = png[pos + 4 : pos + 8]
        data = png[pos + 8 : pos + 8 + length]
        if kind_ == b"IDAT":
            out += [png_chunk(b"IDAT", data[i : i + 1]) for i in range(len(data))]
        else:
            out.append(png[pos : pos + 12 + length])
        pos += 12 + length
    return b"".join(out)


def big_flat_png(side: int) -> bytes:
    """A valid side x side greyscale PNG that compresses to almost nothing."""
    buf = io.BytesIO()
    Image.new("L", (side, side), 200).save(buf, "PNG", optimize=True)
    return buf.getvalue()


# --------------------------------------------------------------------------- ZIP / NPY / bundles


def zip_of(members: Iterable[tuple[str, bytes]], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=compression) as zf:
        for name, data in members:
            zf.writestr(name, data)
    return buf.getvalue()


def npy_header(shape: Sequence[int], dtype: str = "<f4", fortran: bool = False) -> bytes:
    """A version-1.0 ``.npy`` header declaring ``shape`` (no data follows)."""
    d = f"{{'descr': {dtype!r}, 'fortran_order': {fortran!r}, 'shape': {tuple(shape)!r}, }}"
    pad = 64 - (10 + len(d) + 1) % 64
    header = (d + " " * pad + "\n").encode("latin1")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header


def npz_declaring(shape: Sequence[int], dtype: str = "<f4", data_bytes: int = 0) -> bytes:
    """An ``.npz`` whose one member's header declares ``shape`` but holds ``data_bytes`` of zeros."""
    return zip_of([("layer.npy", npy_header(shape, dtype) + b"\x00" * data_bytes)])


def npz_zeros(n_bytes: int, compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    """A real ``.npz`` holding ``n_bytes`` of float32 zeros, deflated (ratio ~1000:1)."""
    n = n_bytes // 4
    return zip_of([("layer.npy", npy_header((n,)) + b"\x00" * (4 * n))], compression=compression)


def npz_zeros_streamed(n_bytes: int) -> bytes:
    """Like :func:`npz_zeros` but written in chunks, so gigabyte declarations cost little memory."""
    n = n_bytes // 4
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf, \
            zf.open("layer.npy", "w", force_zip64=True) as fh:
        fh.write(npy_header((n,)))
        chunk = b"\x00" * 2**24
        left = 4 * n
        while left:
            fh.write(chunk[: min(left, len(chunk))])
            left -= min(left, len(chunk))
    return buf.getvalue()


def small_png(size=(16, 12)) -> bytes:
    buf = io.BytesIO()
    _base_image(size).save(buf, "PNG")
    return buf.getvalue()


def bundle_zip(manifest: object | bytes, *, image: bytes | None = None, npz: bytes | None = None,
               extra: Sequence[tuple[str, bytes]] = (), compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    """A view bundle (manifest.json + image.png + activations.npz) with any of its parts replaced.

    ``manifest`` is a JSON-able object or raw bytes; when it is a dict without an
    ``image.sha256``, none is checked.
    """
    image = small_png() if image is None else image
    raw = manifest if isinstance(manifest, bytes) else json.dumps(manifest).encode()
    members = [("manifest.json", raw), ("image.png", image)]
    if npz is not None:
        members.append(("activations.npz", npz))
    members += list(extra)
    return zip_of(members, compression=compression)


def good_manifest(**over) -> dict:
    base = {
        "format": "cnn-activation-view", "version": 1, "created": "2025-01-01T00:00:00+00:00",
        "model": {"key": "emotion_cnn", "title": "t", "weights": "imagenet", "source": "", "input_size": [64, 64],
                  "channels": 1, "preprocess": "unit"},
        "view": {"model": "emotion_cnn", "view": "compare", "n": 9, "images": ["cat"]},
        "layers": {"conv1": [1, 62, 62, 8]}, "channels": {"conv1": [0, 1]},
        "image": {"name": "x.png", "member": "image.png"},
        "versions": {"python": "3.11"},
        "arrays": {"member": "activations.npz", "names": {"conv1": "conv1"}},
    }
    base.update(over)
    return base


def deep_json(depth: int, kind: str = "list") -> bytes:
    """``depth`` nested lists (or objects) as JSON text."""
    if kind == "list":
        return b"[" * depth + b"]" * depth
    return b'{"a":' * depth + b"1" + b"}" * depth


def zip_with_many_entries(n: int) -> bytes:
    """A ZIP of ``n`` empty stored members (a big central directory for its size)."""
    return zip_of(((f"{i}.txt", b"") for i in range(n)), compression=zipfile.ZIP_STORED)


def jpeg_with_junk(n_bytes: int, byte: bytes = b"\x00") -> bytes:
    """A valid small JPEG with ``n_bytes`` of junk after its first (APP0) segment
    (Pillow steps over junk one byte per Python iteration)."""
    buf = io.BytesIO()
    _base_image().save(buf, "JPEG")
    jpeg = buf.getvalue()
    at = 4 + struct.unpack(">H", jpeg[4:6])[0]
    return jpeg[:at] + byte * n_bytes + jpeg[at:]


def tiff_exif_values(n_values: int) -> bytes:
    """A TIFF whose EXIF sub-directory holds one LONG array of ``n_values`` values: Pillow
    unpacks every value of that directory into a Python int when it loads the image."""
    data = b"\x01\x00\x00\x00" * n_values
    block_at = 8
    # the EXIF IFD sits right after the block; IFD0 points at it
    exif_at = block_at + len(data)
    exif_entries = [(0x9010, 4, n_values, block_at)]
    exif_ifd, _ = _ifd(exif_entries, exif_at, exif_at + 18)
    tail = exif_at + len(exif_ifd)
    body = tiff_image(extra=[(34665, 4, 1, _long(tail + 0))], block=b"")
    # rebuild with the block and the EXIF IFD in front of the image: simplest is to append them
    # and patch the pointer, since tiff_image puts its IFD last.
    head, rest = body[:8], body[8:]
    shift = len(data) + len(exif_ifd)
    out = bytearray(head + data + exif_ifd + rest)
    ifd_at = struct.unpack_from("<L", out, 4)[0] + shift
    struct.pack_into("<L", out, 4, ifd_at)
    count = struct.unpack_from("<H", out, ifd_at)[0]
    for i in range(count):
        at = ifd_at + 2 + 12 * i
        tag, typ, n = struct.unpack_from("<HHL", out, at)
        value = struct.unpack_from("<L", out, at + 8)[0]
        if tag == 34665:
            struct.pack_into("<L", out, at + 8, exif_at)
        elif tag in (273,) or (typ in (3, 4) and n * (2 if typ == 3 else 4) > 4):
            struct.pack_into("<L", out, at + 8, value + shift)
    return bytes(out)


def bmp_rle_stream(n_bytes: int, rle4: bool = False, width: int = 1000) -> bytes:
    """A valid RLE BMP whose pixel stream is about ``n_bytes`` of one-pixel runs."""
    row = b"\x01\x05" * width + b"\x00\x00"
    rows = max(1, n_bytes // len(row))
    bits, compression = (4, 2) if rle4 else (8, 1)
    colours = 16 if rle4 else 256
    palette = b"".join(bytes((i, i, i, 0)) for i in range(colours))
    stream = row * rows + b"\x00\x01"
    offset = 14 + 40 + len(palette)
    info = struct.pack("<IiiHHIIiiII", 40, width, rows, 1, bits, compression, len(stream), 2835, 2835, colours, 0)
    return b"BM" + struct.pack("<IHHI", offset + len(stream), 0, 0, offset) + info + palette + stream


def mpo_image() -> bytes:
    """A legitimate two-frame MPO (what many cameras write), made by Pillow."""
    buf = io.BytesIO()
    a, b = _base_image(), _base_image().transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    a.save(buf, "MPO", save_all=True, append_images=[b])
    return buf.getvalue()


def zip_with_long_numbers(digits: Sequence[int], image: bytes | None = None) -> bytes:
    """A ZIP of images named ``img<number>.png`` whose numbers have the given digit counts."""
    image = small_png() if image is None else image
    return zip_of((f"img{'9' * d}.png", image) for d in digits)


# --------------------------------------------------------------------------- measuring


def _status(field_name: str) -> int:
    """A /proc/self/status figure in bytes (VmRSS, VmHWM)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _act(action: str, data: bytes):
    """What the server does with an upload of this kind."""
    if action == "image":
        from vizlib.images import load_image

        return load_image(data, max_side=1024)
    if action == "zip":
        from vizlib.images import images_from_zip

        return images_from_zip(data, max_side=512)
    if action == "bundle":
        from vizlib.export import read_bundle

        return read_bundle(data)
    if action == "model":
        import os
        import tempfile

        from vizlib.modelcheck import check_model_file

        fd, path = tempfile.mkstemp(suffix=".keras")
        try:
            os.write(fd, data)
            os.close(fd)
            return check_model_file(path)
        finally:
            os.unlink(path)
    raise ValueError(action)


def run_cases(cases: Sequence[dict]) -> list[dict]:
    """Run each case ``{"make": "<expression over this module>", "action": "image|zip|bundle|model"}``
    in this process and report its outcome, seconds and peak memory growth (bytes above the RSS
    just before the call, the kernel's high-water mark reset first)."""
    import gc
    import time

    from vizlib.errors import InputError

    out = []
    for case in cases:
        try:
            data = eval(case["make"], dict(globals()))  # noqa: S307 - our own expressions
        except Exception as exc:  # noqa: BLE001 - a bad case, not a result
            out.append({**case, "file_bytes": None, "outcome": "bad case", "detail": repr(exc)[:300],
                        "seconds": None, "peak_growth": None})
            continue
        gc.collect()
        before = _status("VmRSS")
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")  # reset VmHWM to the current RSS
        except OSError:
            pass
        t0 = time.perf_counter()
        try:
            result = _act(case["action"], data)
            outcome = "handled"
            detail = type(result).__name__
        except InputError as exc:
            outcome, detail = "refused", str(exc)
        except BaseException as exc:  # noqa: BLE001 - reported, the test decides
            outcome, detail = "error", f"{type(exc).__name__}: {exc}"[:300]
        seconds = time.perf_counter() - t0
        peak = _status("VmHWM")
        out.append({**case, "file_bytes": len(data), "outcome": outcome, "detail": detail,
                    "seconds": seconds, "peak_growth": max(0, peak - before)})
        result = None
        del data
    return out


def measure(cases: Sequence[dict], *, timeout: float = 300, memory_cap: int = 6 * 2**30,
            python_path: str | None = None, separate: bool = False) -> list[dict]:
    """:func:`run_cases` in fresh interpreters (one for all cases, or one per case with ``separate``),
    under an address-space cap (so a runaway case fails instead of exhausting the machine) and a
    timeout (a case still running is reported as ``"timeout"``)."""
    import os
    import resource
    import subprocess
    import sys
    from pathlib import Path

    here = Path(__file__).resolve().parent
    root = python_path or str(here.parent)

    def limit():  # pragma: no cover - runs in the child
        resource.setrlimit(resource.RLIMIT_AS, (memory_cap, memory_cap))

    groups = [[c] for c in cases] if separate else [list(cases)]
    results: list[dict] = []
    for group in groups:
        code = ("import json, sys; sys.path[:0] = [%r, %r]; import hostile_corpus as h; "
                "print(json.dumps(h.run_cases(json.loads(sys.stdin.read()))))" % (root, str(here)))
        env = {**os.environ, "PYTHONPATH": root, "TF_CPP_MIN_LOG_LEVEL": "3"}
        try:
            proc = subprocess.run([sys.executable, "-c", code], input=json.dumps(group), capture_output=True,
                                  text=True, timeout=timeout, preexec_fn=limit, env=env)
        except subprocess.TimeoutExpired:
            results += [{**c, "outcome": "timeout", "detail": f"still running after {timeout:.0f} s",
                         "seconds": timeout, "peak_growth": None, "file_bytes": None} for c in group]
            continue
        if proc.returncode != 0 or not proc.stdout.strip():
            results += [{**c, "outcome": "crashed", "detail": proc.stderr[-300:], "seconds": None,
                         "peak_growth": None, "file_bytes": None} for c in group]
            continue
        results += json.loads(proc.stdout.strip().splitlines()[-1])
    return results


def big_flat(fmt: str, mode: str = "RGB", side: int = 6324, **save) -> bytes:
    """A legitimate image at the pixel cap (6324 x 6324 = 40 MP), flat so that the file is small:
    the most an accepted upload can make the decoder do."""
    value = {"1": 1, "L": 128, "P": 3, "I;16": 30000, "I": 70000, "F": 0.5, "LA": (128, 200),
             "RGBA": (10, 20, 30, 128)}.get(mode, (10, 200, 30))
    img = Image.new(mode, (side, side), value)
    buf = io.BytesIO()
    img.save(buf, fmt, **save)
    return buf.getvalue()


# --------------------------------------------------------------------------- model files


def _relu_layer(name: str) -> dict:
    return {"module": "keras.layers", "class_name": "ReLU", "registered_name": None,
            "config": {"name": name, "trainable": True, "dtype": "float32", "max_value": None,
                       "negative_slope": 0.0, "threshold": 0.0}}


def sequential_config(name: str, layers: list, *, with_input: bool = True) -> dict:
    """A Keras 3 Sequential config holding ``layers`` (input (None, 4) when ``with_input``)."""
    head = [{"module": "keras.layers", "class_name": "InputLayer", "registered_name": None,
             "config": {"batch_shape": [None, 4], "dtype": "float32", "name": f"{name}_input"}}]
    return {"module": "keras", "class_name": "Sequential", "registered_name": None,
            "config": {"name": name, "trainable": True, "layers": (head if with_input else []) + layers},
            "build_config": {"input_shape": [None, 4]}}


def relus(prefix: str, n: int) -> list:
    return [_relu_layer(f"{prefix}{i}") for i in range(n)]


def long_sequential(n: int) -> dict:
    return sequential_config("long", relus("r", n))


def nested_sequentials(*sizes: int) -> dict:
    """A Sequential of Sequentials of ``sizes`` ReLU layers each (the reviewer's case: 950, 950)."""
    inner = [sequential_config(f"inner{i}", relus(f"s{i}_", n), with_input=False) for i, n in enumerate(sizes)]
    return sequential_config("outer", inner)


def deep_functional(n: int) -> dict:
    """A functional chain of ``n`` ReLU layers."""
    layers = [{"module": "keras.layers", "class_name": "InputLayer", "registered_name": None, "name": "in",
               "config": {"batch_shape": [None, 4], "dtype": "float32", "name": "in"}, "inbound_nodes": []}]
    prev = "in"
    for i in range(n):
        layers.append({**_relu_layer(f"r{i}"), "name": f"r{i}", "inbound_nodes": [
            {"args": [{"class_name": "__keras_tensor__", "config": {"shape": [None, 4], "dtype": "float32",
                                                                    "keras_history": [prev, 0, 0]}}],
             "kwargs": {}}]})
        prev = f"r{i}"
    return {"module": "keras.src.models.functional", "class_name": "Functional", "registered_name": "Functional",
            "config": {"name": "deep", "trainable": True, "layers": layers,
                       "input_layers": [["in", 0, 0]], "output_layers": [[prev, 0, 0]]}}


def keras_archive(config: dict) -> bytes:
    """A .keras file (metadata, config, an empty weights file) for ``config``: what Keras 3 writes
    for a model whose layers have no weights."""
    import h5py

    weights = io.BytesIO()
    with h5py.File(weights, "w") as f:
        f.create_group("layers")
        f.create_group("vars")
    metadata = {"keras_version": "3.15.1", "date_saved": "2025-01-01@00:00:00"}
    return zip_of([("metadata.json", json.dumps(metadata).encode()), ("config.json", json.dumps(config).encode()),
                   ("model.weights.h5", weights.getvalue())], compression=zipfile.ZIP_STORED)
