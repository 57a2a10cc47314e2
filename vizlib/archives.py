"""Reading untrusted ZIP archives, and the archives inside them, within budgets.

Uploads that are ZIPs (a folder of images, a view bundle) and the ZIPs inside
them (a bundle's ``.npz`` is itself a ZIP of ``.npy`` files) are read with the
same rules at every level, before anything is allocated:

* the directory: its entry count and size come from the end record, before
  :mod:`zipfile` builds an object per entry (:func:`open_zip`);
* every member: its declared size against a byte budget, its compression
  ratio against :data:`MAX_RATIO` (zip bombs), no encryption; read with a cap
  of one byte past its budget, so a lying header cannot overrun it
  (:func:`check_member`, :func:`read_member`);
* every ``.npy`` member of an ``.npz``: the header is parsed on its own
  (numeric dtypes only, a shape whose product fits the budget and matches the
  bytes stored), so a declared 1 TiB array is refused from its 128-byte header
  (:func:`read_npz`).

Messages name the archive as ``where`` ("the bundle", "the ZIP file") and
the member, and say the limit in words ("over the 256 KB limit").
"""

from __future__ import annotations

import ast
import io
import math
import struct
import zipfile
from typing import IO

import numpy as np

from vizlib.errors import InputError
from vizlib.units import fmt_bytes

__all__ = ["MAX_RATIO", "RATIO_FLOOR_BYTES", "check_member", "directory_stats", "open_zip", "read_member",
           "read_npz"]

#: A member that inflates more than this many times (and is above :data:`RATIO_FLOOR_BYTES`) is a zip bomb.
MAX_RATIO = 100
#: Small members may compress better than :data:`MAX_RATIO` (flat icons, masks, zeros): harmless.
RATIO_FLOOR_BYTES = 2**20
#: Longest ``.npy`` header read (numpy's own default limit is 10,000 characters).
MAX_NPY_HEADER = 4096
#: dtype kinds an array from an upload may have: bool, integers, floats (no objects, strings, records).
NUMERIC_KINDS = "biuf"

_EOCD = b"PK\x05\x06"


def _short(name: str) -> str:
    """A member name fit for a message (ZIP names can be 65,535 bytes long)."""
    name = name.replace("\x00", "\\0")
    return name if len(name) <= 120 else name[:117] + "..."


def directory_stats(fh: IO[bytes], size: int) -> tuple[int, int]:
    """(entry count, central-directory bytes) of the ZIP in ``fh`` (``size`` bytes), from its end record.

    Raises ValueError when there is no (readable) end record; zip64 records are followed.
    """
    tail_len = min(size, 22 + 65535)
    fh.seek(size - tail_len)
    tail = fh.read(tail_len)
    pos = tail.rfind(_EOCD)
    if pos < 0 or len(tail) - pos < 22:
        raise ValueError("no end-of-directory record")
    eocd_abs = size - tail_len + pos
    (_, _, _, _, n_total, cd_size, cd_offset, _) = struct.unpack("<4s4H2LH", tail[pos : pos + 22])
    if n_total == 0xFFFF or cd_size == 0xFFFFFFFF or cd_offset == 0xFFFFFFFF:
        if eocd_abs < 20:
            raise ValueError("zip64 locator missing")
        fh.seek(eocd_abs - 20)
        locator = fh.read(20)
        sig, _, z64_offset, _ = struct.unpack("<4sLQL", locator)
        if sig != b"PK\x06\x07" or z64_offset + 56 > size:
            raise ValueError("zip64 record missing")
        fh.seek(z64_offset)
        record = fh.read(56)
        if len(record) < 56 or record[:4] != b"PK\x06\x06":
            raise ValueError("zip64 record corrupt")
        (_, _, _, _, _, _, _, n_total, cd_size, _) = struct.unpack("<4sQ2H2L4Q", record)
    return n_total, cd_size


def open_zip(data: bytes | IO[bytes], *, label: str, max_entries: int,
             max_directory_bytes: int = 4 * 2**20, what: str = "ZIP archive") -> zipfile.ZipFile:
    """A :class:`zipfile.ZipFile` over ``data`` whose directory was sized before it was parsed.

    ``label`` starts the messages ("The ZIP file", "This bundle"). Raises
    InputError for something that is not a ZIP, or a directory of more than
    ``max_entries`` entries or ``max_directory_bytes`` bytes.
    """
    fh: IO[bytes] = io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else data
    try:
        fh.seek(0, io.SEEK_END)
        size = fh.tell()
        entries, cd_bytes = directory_stats(fh, size)
        fh.seek(0)
    except (ValueError, OSError, struct.error) as exc:
        raise InputError(_not_a_zip(label, what, exc)) from exc
    if entries > max_entries or cd_bytes > max_directory_bytes:
        raise InputError(
            f"{label} lists {entries:,} files ({fmt_bytes(cd_bytes)} of directory); the limit is "
            f"{max_entries:,}. Zip fewer files."
        )
    try:
        return zipfile.ZipFile(fh)
    except Exception as exc:  # BadZipFile, plus whatever a hostile directory provokes
        raise InputError(_not_a_zip(label, what, exc)) from exc


def _not_a_zip(label: str, what: str, exc: BaseException) -> str:
    if what == "ZIP archive":
        return f"{label} is not a valid ZIP archive ({_reason(exc)}). Zip a folder of images and upload the .zip file."
    return f"{label} is not a {what} ({_reason(exc)})."


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def check_member(info: zipfile.ZipInfo, *, where: str, max_bytes: int, what: str = "",
                 max_ratio: float = MAX_RATIO, ratio_floor: int = RATIO_FLOOR_BYTES,
                 limit: int | None = None) -> None:
    """Refuse a member by its directory entry: over ``max_bytes``, a zip bomb, or encrypted.

    ``where`` names the archive mid-sentence ("the bundle"); ``what`` is the advice that ends
    the message; ``limit`` is the limit the message names, when ``max_bytes`` adds allowances
    to it (headers).
    """
    name = f'"{_short(info.filename)}" in {where}'
    if info.flag_bits & 0x1:
        raise InputError(f"{name} is password-protected. {what or 'Zip the files without a password.'}".strip())
    if info.file_size > max_bytes:
        raise InputError(
            f"{name} is {fmt_bytes(info.file_size)}, over the {fmt_bytes(limit or max_bytes)} limit. {what}".strip()
        )
    if info.file_size > ratio_floor and info.file_size > max_ratio * max(info.compress_size, 1):
        raise InputError(
            f"{name} is compressed suspiciously well ({info.file_size // max(info.compress_size, 1)}:1, "
            f"more than {max_ratio:g}:1), which is how zip bombs work, so the archive was refused."
        )


def read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, *, where: str, max_bytes: int,
                what: str = "", limit: int | None = None) -> bytes:
    """The member's bytes after :func:`check_member`, reading at most one byte past ``max_bytes``."""
    check_member(info, where=where, max_bytes=max_bytes, what=what, limit=limit)
    name = f'"{_short(info.filename)}" in {where}'
    try:
        with zf.open(info) as fh:
            data = fh.read(max_bytes + 1)
    except Exception as exc:  # bad CRC, unsupported compression, zlib.error, ...
        raise InputError(
            f"{name} could not be extracted ({_reason(exc)}). Re-create the archive and upload it again."
        ) from exc
    if len(data) > max_bytes:
        raise InputError(f"{name} is larger than its directory says; refusing it.")
    return data


def npy_header(blob: bytes, *, where: str) -> tuple[np.dtype, tuple[int, ...], bool, int]:
    """(dtype, shape, fortran order, data offset) of a ``.npy`` file, from its header alone."""
    if not blob.startswith(b"\x93NUMPY") or len(blob) < 10:
        raise InputError(f"{where} is not a .npy array.")
    major = blob[6]
    if major == 1:
        hlen, start = struct.unpack_from("<H", blob, 8)[0], 10
    elif major in (2, 3) and len(blob) >= 12:
        hlen, start = struct.unpack_from("<I", blob, 8)[0], 12
    else:
        raise InputError(f"{where} is a .npy array of an unknown version.")
    if hlen > MAX_NPY_HEADER or start + hlen > len(blob):
        raise InputError(f"{where} has a .npy header that is too long or truncated.")
    text = blob[start : start + hlen].decode("utf-8" if major == 3 else "latin1", "replace")
    try:
        if text.count("(") > 1 or text.count("[") or len(text) > MAX_NPY_HEADER:
            raise ValueError("nested")
        d = ast.literal_eval(text)
        if not isinstance(d, dict) or set(d) != {"descr", "fortran_order", "shape"}:
            raise ValueError("keys")
        descr, fortran, shape = d["descr"], d["fortran_order"], d["shape"]
        if not isinstance(descr, str) or not isinstance(fortran, bool) or not isinstance(shape, tuple):
            raise ValueError("types")
        if len(shape) > 32 or not all(type(s) is int and 0 <= s < 2**63 for s in shape):
            raise ValueError("shape")
        dtype = np.dtype(descr)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as exc:
        raise InputError(f"{where} has an unreadable .npy header ({_reason(exc)}).") from exc
    if dtype.kind not in NUMERIC_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise InputError(f"{where} holds {dtype} values; only numeric arrays are read.")
    return dtype, shape, fortran, start + hlen


def read_npz(blob: bytes, *, where: str, max_bytes: int, max_arrays: int = 4096) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` (a ZIP of ``.npy`` files) read from an untrusted upload.

    Each member gets the archive rules (size, ratio, encryption) and its header
    is checked before its data is read: numeric dtype, and ``shape x itemsize``
    equal to the bytes stored and within what is left of ``max_bytes`` (for all
    arrays together). Nothing is unpickled. ``where`` names the ``.npz`` mid-sentence.
    """
    zf = open_zip(blob, label=where[:1].upper() + where[1:], max_entries=max_arrays,
                  max_directory_bytes=max(64 * 2**10, 512 * max_arrays), what=".npz archive")
    out: dict[str, np.ndarray] = {}
    left = max_bytes
    with zf:
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                continue
            key = info.filename[: -len(".npy")]
            member = f'"{_short(info.filename)}" in {where}'
            # The header alone decides what may be allocated.
            check_member(info, where=where, max_bytes=left + MAX_NPY_HEADER + 16, limit=max_bytes,
                         what="That is more than the arrays of one upload may hold. Export fewer layers.")
            try:
                with zf.open(info) as fh:
                    head = fh.read(MAX_NPY_HEADER + 16)
                    dtype, shape, fortran, offset = npy_header(head, where=member)
                    nbytes = math.prod(shape) * dtype.itemsize
                    if nbytes > left:
                        raise InputError(
                            f"{member} declares a {'x'.join(map(str, shape)) or 'scalar'} array of "
                            f"{fmt_bytes(nbytes)}, over the {fmt_bytes(max_bytes)} limit for the arrays of "
                            f"one upload. Export fewer layers."
                        )
                    if info.file_size != offset + nbytes:
                        raise InputError(
                            f"{member} holds {fmt_bytes(max(info.file_size - offset, 0))} of data for an array "
                            f"that needs {fmt_bytes(nbytes)}; it is corrupt."
                        )
                    array = np.empty(shape, dtype=dtype, order="F" if fortran else "C")
                    view = memoryview(array.reshape(-1, order="A")).cast("B") if nbytes else memoryview(b"")
                    first = head[offset : offset + nbytes]
                    view[: len(first)] = first
                    got = len(first)
                    while got < nbytes:
                        n = fh.readinto(view[got:])
                        if not n:
                            break
                        got += n
                    # Read to the end, so that the CRC is checked and nothing follows the array.
                    extra = len(head) > offset + nbytes or bool(fh.read(1))
            except InputError:
                raise
            except Exception as exc:  # bad CRC, zlib.error, truncated data ...
                raise InputError(f"{member} could not be read ({_reason(exc)}).") from exc
            if got != nbytes or extra:
                raise InputError(f"{member} does not hold the array its header declares; it is corrupt.")
            left -= nbytes
            out[key] = array
    return out
