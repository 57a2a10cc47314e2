"""Every ZIP the project reads or writes, and the ``.npy`` arrays inside them, within budgets.

This is the ONE module that opens ZIP archives (``zipfile.ZipFile(`` appears
nowhere else): uploaded folders of images, view bundles and the ``.npz``
inside them, zipped atlases, dataset ZIPs, ``.keras`` model files, and the
bundles the app writes. One policy, applied before anything is allocated:

* the directory: its entry count and size come from the end record (zip64
  records followed; split archives refused), before :mod:`zipfile` builds an
  object per entry (:func:`open_zip`);
* every entry, once the directory is parsed: no encryption or other features
  :mod:`zipfile` cannot read, only stored or deflated data, data inside the
  file and not overlapping another entry's (a lying zip64 size or offset is
  refused here), and the declared total within a budget;
* every member read: its declared size against a byte budget and its
  compression ratio against :data:`MAX_RATIO` (zip bombs); read with a cap of
  one byte past its budget, so a lying header cannot overrun it
  (:func:`check_member`, :func:`read_member`, :func:`copy_member`);
* every ``.npy`` (in an ``.npz`` or a cache file): the header is parsed on its
  own (numeric dtypes only, a shape whose product fits the budget and matches
  the bytes stored), so a declared 1 TiB array is refused from its 128-byte
  header (:func:`read_npz`, :func:`load_npy`).

Whatever a damaged or hostile archive provokes in :mod:`zipfile` or zlib (bad
CRC, ``BadZipFile``, ``EOFError``, ``NotImplementedError``, ``zlib.error``,
``struct.error`` ...) becomes an :class:`~vizlib.errors.InputError` whose
message names the archive (``label`` starts a sentence, ``where`` is the same
mid-sentence), the member, the limit in words, and what to do (``advice``).
"""

from __future__ import annotations

import ast
import io
import math
import os
import struct
import zipfile
import zlib
from pathlib import Path
from typing import IO, Iterable, Optional

import numpy as np

from vizlib.errors import InputError
from vizlib.files import atomic_file
from vizlib.units import fmt_bytes

__all__ = ["ALLOWED_METHODS", "MAX_RATIO", "RATIO_FLOOR_BYTES", "check_member", "copy_member", "directory_stats",
           "load_npy", "npy_header", "open_zip", "read_member", "read_npz", "stored_member", "write_zip"]

#: A member that inflates more than this many times (and is above :data:`RATIO_FLOOR_BYTES`) is a zip bomb.
MAX_RATIO = 100
#: Small members may compress better than :data:`MAX_RATIO` (flat icons, masks, zeros): harmless.
RATIO_FLOOR_BYTES = 2**20
#: Longest ``.npy`` header read (numpy's own default limit is 10,000 characters).
MAX_NPY_HEADER = 4096
#: dtype kinds an array from an upload may have: bool, integers, floats (no objects, strings, records).
NUMERIC_KINDS = "biuf"
#: Compression methods read: what every ZIP tool writes by default. Others (bzip2, LZMA, deflate64,
#: AES ...) are refused by name rather than left to fail half-way through a read.
ALLOWED_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}
#: General-purpose flag bits refused: encryption (0), compressed patched data (5), strong encryption (6),
#: masked directory (13).
_REFUSED_FLAGS = 0x1 | 0x20 | 0x40 | 0x2000
#: Highest "version needed to extract" zipfile reads (6.3).
_MAX_VERSION = 63
_CHUNK = 2**20

_EOCD = b"PK\x05\x06"
_LOCAL = b"PK\x03\x04"
#: Everything zipfile, zlib and a hostile file object raise while reading an archive.
_READ_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, NotImplementedError,
                RuntimeError, struct.error, OverflowError, UnicodeDecodeError, KeyError, IndexError, TypeError,
                MemoryError, zlib.error)


def _short(name: str) -> str:
    """A member name fit for a message (ZIP names can be 65,535 bytes long)."""
    name = name.replace("\x00", "\\0")
    return name if len(name) <= 120 else name[:117] + "..."


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."


def _end(text: str, advice: str) -> str:
    return f"{text} {advice}".strip() if advice else text


# --------------------------------------------------------------------------- the directory


def directory_stats(fh: IO[bytes], size: int) -> tuple[int, int]:
    """(entry count, central-directory bytes) of the ZIP in ``fh`` (``size`` bytes), from its end record.

    The one parser of ZIP end records. Raises ValueError when there is no (readable) end record,
    for split (multi-disk) archives, and for a directory that does not fit in the file;
    zip64 records are followed.
    """
    n_total, cd_size, _ = _end_record(fh, size)
    return n_total, cd_size


def _end_record(fh: IO[bytes], size: int) -> tuple[int, int, int]:
    """(entry count, directory bytes, directory offset as the end record states it): :func:`directory_stats`."""
    tail_len = min(size, 22 + 65535)
    fh.seek(size - tail_len)
    tail = fh.read(tail_len)
    pos = tail.rfind(_EOCD)
    if pos < 0 or len(tail) - pos < 22:
        raise ValueError("no end-of-directory record; the file is truncated or not a ZIP")
    eocd_abs = size - tail_len + pos
    (_, disk, cd_disk, n_disk, n_total, cd_size, cd_offset, _) = struct.unpack("<4s4H2LH", tail[pos : pos + 22])
    if n_total == 0xFFFF or cd_size == 0xFFFFFFFF or cd_offset == 0xFFFFFFFF:
        if eocd_abs < 20:
            raise ValueError("zip64 locator missing")
        fh.seek(eocd_abs - 20)
        locator = fh.read(20)
        if len(locator) < 20:
            raise ValueError("zip64 locator truncated")
        sig, _, z64_offset, _ = struct.unpack("<4sLQL", locator)
        if sig != b"PK\x06\x07" or z64_offset + 56 > size:
            raise ValueError("zip64 record missing")
        fh.seek(z64_offset)
        record = fh.read(56)
        if len(record) < 56 or record[:4] != b"PK\x06\x06":
            raise ValueError("zip64 record corrupt")
        (_, _, _, _, disk, cd_disk, n_disk, n_total, cd_size, cd_offset) = struct.unpack("<4sQ2H2L4Q", record)
    if disk != 0 or cd_disk != 0 or n_disk != n_total:
        raise ValueError("a split (multi-part) ZIP archive")
    if cd_size > size:
        raise ValueError("its directory is larger than the file")
    return n_total, cd_size, cd_offset


def _size_of(fh: IO[bytes]) -> int:
    fh.seek(0, io.SEEK_END)
    return fh.tell()


def open_zip(data: bytes | IO[bytes], *, label: str, max_entries: int,
             max_directory_bytes: int = 4 * 2**20, max_total_bytes: Optional[int] = None,
             what: str = "ZIP archive", advice: Optional[str] = None,
             too_many: Optional[str] = None) -> zipfile.ZipFile:
    """A :class:`zipfile.ZipFile` over ``data`` whose directory was sized before, and vetted after, parsing.

    ``label`` starts the messages ("The ZIP file", "This bundle"); ``what`` says what the data
    should have been ("ZIP archive", "usable Keras model file"); ``advice`` ends them (default:
    zip a folder again). ``too_many`` replaces the advice when the directory lists too many
    entries. Raises InputError for something that is not a ZIP, a directory of more than
    ``max_entries`` entries or ``max_directory_bytes`` bytes, an entry that is encrypted, uses
    another method than stored/deflate, lies about where its data is, or overlaps another
    entry's data, and (when given) entries declaring more than ``max_total_bytes`` in all.
    """
    if advice is None:
        advice = ("Zip a folder of images and use the .zip file." if what == "ZIP archive"
                  else "Re-create the archive and try again.")
    fh: IO[bytes] = io.BytesIO(data) if isinstance(data, (bytes, bytearray, memoryview)) else data
    try:
        size = _size_of(fh)
        entries, cd_bytes = directory_stats(fh, size)
        fh.seek(0)
    except _READ_ERRORS as exc:
        raise InputError(_end(_not_a(label, what, exc), advice)) from exc
    if entries > max_entries or cd_bytes > max_directory_bytes:
        raise InputError(_end(
            f"{label} lists {entries:,} files ({fmt_bytes(cd_bytes)} of directory); the limit is {max_entries:,}.",
            too_many or "Zip fewer files."))
    try:
        try:
            zf = zipfile.ZipFile(fh)
        except UnicodeDecodeError:  # a name flagged UTF-8 that isn't: read it with replacement characters
            zf = _with_replaced_names(fh, size)
    except _READ_ERRORS as exc:  # BadZipFile, plus whatever a hostile directory provokes
        raise InputError(_end(_not_a(label, what, exc), advice)) from exc
    try:
        _vet_directory(zf.infolist(), size, label=label, max_total_bytes=max_total_bytes, advice=advice)
    except BaseException:
        zf.close()
        raise
    return zf


class _FlagsCleared(io.RawIOBase):
    """``fh`` read through, with the UTF-8 name flag (bit 11) cleared in the headers at ``offsets``
    (each the offset of a 2-byte general-purpose flag field)."""

    def __init__(self, fh: IO[bytes], offsets: set[int]):
        super().__init__()
        self._fh, self.offsets = fh, offsets

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._fh.tell()

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._fh.seek(offset, whence)

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        start = self._fh.tell()
        got = self._fh.readinto(view) or 0
        for off in self.offsets:
            i = off + 1 - start  # bit 11 lives in the flag field's second byte
            if 0 <= i < got:
                view[i] &= ~0x08 & 0xFF
        return got


def _with_replaced_names(fh: IO[bytes], size: int) -> zipfile.ZipFile:
    """A ZipFile over ``fh`` whose entries flagged UTF-8 but not UTF-8 are named with replacement characters.

    The directory's and the local headers' flags are cleared for those entries only (zipfile then
    reads their raw names as cp437, consistently in both places), and each entry's name is set to
    its bytes decoded as UTF-8 with U+FFFD for what isn't, made unique. Nothing is decoded twice
    and no entry is dropped: one stray name doesn't cost the user the whole archive.
    """
    n_total, cd_size, cd_offset = _end_record(fh, size)
    fh.seek(cd_offset)
    directory = fh.read(cd_size)
    offsets, raw_names, pos = set(), {}, 0
    for _ in range(n_total):
        head = directory[pos:pos + 46]
        if len(head) < 46 or head[:4] != b"PK\x01\x02":
            break
        flags, = struct.unpack("<H", head[8:10])
        n_name, n_extra, n_comment = struct.unpack("<3H", head[28:34])
        raw = directory[pos + 46:pos + 46 + n_name]
        if flags & 0x800:
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                offsets.add(cd_offset + pos + 8)
                raw_names[raw.decode("cp437")] = raw
        pos += 46 + n_name + n_extra + n_comment
    overlay = _FlagsCleared(fh, offsets)
    zf = zipfile.ZipFile(overlay)
    taken = {info.filename for info in zf.infolist()}
    for info in zf.infolist():
        raw = raw_names.get(info.orig_filename)
        if raw is None:
            continue
        overlay.offsets.add(info.header_offset + 6)  # the local header's flags say the same from now on
        name, n = raw.decode("utf-8", errors="replace"), 1
        base, dot, ext = name.rpartition(".")
        while name in taken:
            n += 1
            name = f"{base} ({n}).{ext}" if dot else f"{raw.decode('utf-8', errors='replace')} ({n})"
        zf.NameToInfo.pop(info.filename, None)
        info.filename = name
        zf.NameToInfo[name] = info
        taken.add(name)
    return zf


def _not_a(label: str, what: str, exc: BaseException) -> str:
    return f"{label} is not a {'valid ' if what == 'ZIP archive' else ''}{what} ({_reason(exc)})."


def _vet_directory(infos: list[zipfile.ZipInfo], size: int, *, label: str, max_total_bytes: Optional[int],
                   advice: str) -> None:
    """Refuse what no member read should ever meet: encryption, odd methods, lying or overlapping data."""
    total = 0
    spans = []
    for info in infos:
        name = f'"{_short(info.filename)}" in {label[:1].lower() + label[1:]}'
        if info.flag_bits & _REFUSED_FLAGS:
            raise InputError(_end(f"{name} is encrypted (password-protected).",
                                  "Zip the files without a password."))
        if info.extract_version > _MAX_VERSION:
            raise InputError(_end(f"{name} needs ZIP version {info.extract_version / 10:.1f} to extract; "
                                  "only standard ZIP features are read.", advice))
        if info.compress_type not in ALLOWED_METHODS and not (info.is_dir() and info.file_size == 0):
            raise InputError(_end(
                f"{name} uses compression method {info.compress_type}; only stored and deflate (what every "
                "ZIP tool writes by default) are read.", advice))
        if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
            raise InputError(_end(f"{name} has sizes that disagree; the archive is damaged.", advice))
        if info.header_offset + 30 + info.compress_size > size:
            raise InputError(_end(f"{name} claims data past the end of the file; the archive is damaged "
                                  "or truncated.", advice))
        total += info.file_size
        spans.append((info.header_offset, info.header_offset + 30 + info.compress_size, name))
    spans.sort()
    for (_, stop, name), (nxt, _, other) in zip(spans, spans[1:]):
        if nxt < stop:  # the next local header starts inside this member's data
            raise InputError(_end(f"{name} and {other} share their data, as some zip bombs are built; "
                                  "the archive was refused.", advice))
    if max_total_bytes is not None and total > max_total_bytes:
        raise InputError(_end(f"The files in {label[:1].lower() + label[1:]} add up to {fmt_bytes(total)} "
                              f"uncompressed; the limit is {fmt_bytes(max_total_bytes)}.", advice))


# --------------------------------------------------------------------------- members


def check_member(info: zipfile.ZipInfo, *, where: str, max_bytes: int, what: str = "",
                 max_ratio: float = MAX_RATIO, ratio_floor: int = RATIO_FLOOR_BYTES,
                 limit: int | None = None) -> None:
    """Refuse a member by its directory entry: over ``max_bytes``, a zip bomb, encrypted, or an odd method.

    ``where`` names the archive mid-sentence ("the bundle"); ``what`` is the advice that ends
    the message; ``limit`` is the limit the message names, when ``max_bytes`` adds allowances
    to it (headers).
    """
    name = f'"{_short(info.filename)}" in {where}'
    if info.flag_bits & _REFUSED_FLAGS:
        raise InputError(f"{name} is password-protected. {what or 'Zip the files without a password.'}".strip())
    if info.compress_type not in ALLOWED_METHODS:
        raise InputError(_end(f"{name} uses compression method {info.compress_type}; only stored and deflate "
                              "are read.", what or "Re-create the archive with an ordinary ZIP tool."))
    bomb = info.file_size > ratio_floor and info.file_size > max_ratio * max(info.compress_size, 1)
    ratio = (f"compressed suspiciously well ({info.file_size // max(info.compress_size, 1)}:1, more than "
             f"{max_ratio:g}:1), which is how zip bombs work")
    if info.file_size > max_bytes:
        raise InputError(
            f"{name} is {fmt_bytes(info.file_size)}, over the {fmt_bytes(limit or max_bytes)} limit"
            + (f", and {ratio}." if bomb else ".") + f" {what}".rstrip()
        )
    if bomb:
        raise InputError(f"{name} is {ratio}, so the archive was refused.")


def _unreadable(name: str, exc: BaseException, what: str) -> InputError:
    return InputError(_end(f"{name} could not be extracted ({_reason(exc)}).",
                           what or "Re-create the archive and try again."))


def read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, *, where: str, max_bytes: int,
                what: str = "", limit: int | None = None, max_ratio: float = MAX_RATIO,
                ratio_floor: int = RATIO_FLOOR_BYTES) -> bytes:
    """The member's bytes after :func:`check_member`, reading at most one byte past ``max_bytes``.

    Every error of a damaged member (bad CRC, zlib, truncation, ...) is an InputError naming it.
    """
    check_member(info, where=where, max_bytes=max_bytes, what=what, limit=limit, max_ratio=max_ratio,
                 ratio_floor=ratio_floor)
    name = f'"{_short(info.filename)}" in {where}'
    try:
        with zf.open(info) as fh:
            data = fh.read(max_bytes + 1)
    except _READ_ERRORS as exc:
        raise _unreadable(name, exc, what) from exc
    if len(data) > max_bytes:
        raise InputError(_end(f"{name} is larger than its directory says; refusing it.", what))
    return data


def copy_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, dest: Path, *, where: str, max_bytes: int,
                what: str = "", max_ratio: float = MAX_RATIO) -> int:
    """Stream a member to ``dest`` (atomically, in 1 MiB pieces: memory stays flat); returns its size.

    The same checks as :func:`read_member`; ``dest`` appears only once the whole member was read
    and its CRC checked, and never holds more than ``max_bytes`` (or what the directory declared).
    """
    check_member(info, where=where, max_bytes=max_bytes, what=what, max_ratio=max_ratio)
    name = f'"{_short(info.filename)}" in {where}'
    cap = min(max_bytes, info.file_size)
    written = 0
    with atomic_file(dest) as out:
        try:
            with zf.open(info) as src:
                while True:
                    piece = src.read(min(_CHUNK, cap + 1 - written))
                    if not piece:
                        break
                    written += len(piece)
                    if written > cap:
                        raise InputError(_end(f"{name} is larger than its directory says; refusing it.", what))
                    out.write(piece)
        except InputError:
            raise
        except _READ_ERRORS as exc:
            raise _unreadable(name, exc, what) from exc
    return written


class _Window(io.RawIOBase):
    """Read-only, seekable view of ``length`` bytes of ``fh`` from ``start``."""

    def __init__(self, fh: IO[bytes], start: int, length: int):
        super().__init__()
        self._fh, self._start, self._len, self._pos = fh, start, length, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._len}.get(whence)
        if base is None:
            raise ValueError(f"invalid whence {whence}")
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        n = min(len(view), self._len - self._pos)
        if n <= 0:
            return 0
        self._fh.seek(self._start + self._pos)
        got = self._fh.readinto(view[:n]) or 0
        self._pos += got
        return got


def stored_member(fh: IO[bytes], info: zipfile.ZipInfo, *, where: str, advice: str = "") -> io.RawIOBase:
    """A seekable, read-only window onto a *stored* (uncompressed) member's bytes in ``fh``.

    For readers that need random access without copying the member into memory (h5py on the
    weights inside a ``.keras`` file). The local header must name the same file as the directory.
    """
    name = f'"{_short(info.filename)}" in {where}'
    if info.compress_type != zipfile.ZIP_STORED:
        raise InputError(_end(f"{name} is compressed; it cannot be read in place.", advice))
    size = _size_of(fh)
    fh.seek(info.header_offset)
    header = fh.read(30)
    if len(header) < 30 or header[:4] != _LOCAL:
        raise InputError(_end(f"The entry for {name} is corrupt.", advice))
    flags = struct.unpack("<H", header[6:8])[0]
    n_name, n_extra = struct.unpack("<2H", header[26:30])
    try:
        local = fh.read(n_name).decode("utf-8" if flags & 0x800 else "cp437")
    except UnicodeDecodeError:
        local = None
    if local != info.orig_filename:
        raise InputError(_end(f"The entry for {name} names a different file.", advice))
    start = info.header_offset + 30 + n_name + n_extra
    if start + info.file_size > size:
        raise InputError(_end(f"{name} extends past the end of the file (truncated?).", advice))
    return _Window(fh, start, info.file_size)


def write_zip(members: Iterable[tuple[str, bytes]], *, compress: bool = True) -> bytes:
    """A ZIP archive of ``(name, bytes)`` members, deflated (what :func:`open_zip` reads back)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as zf:
        for name, content in members:
            zf.writestr(name, content)
    return buf.getvalue()


# --------------------------------------------------------------------------- .npy / .npz


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


def _read_npy(fh: IO[bytes], stored: int, *, where: str, max_bytes: int, limit: int, advice: str) -> np.ndarray:
    """One ``.npy`` of ``stored`` bytes from ``fh``: header checked, then exactly its array read."""
    head = fh.read(MAX_NPY_HEADER + 16)
    dtype, shape, fortran, offset = npy_header(head, where=where)
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > max_bytes:
        raise InputError(_end(f"{where} declares a {'x'.join(map(str, shape)) or 'scalar'} array of "
                              f"{fmt_bytes(nbytes)}, over the {fmt_bytes(limit)} limit.", advice))
    if stored != offset + nbytes:
        raise InputError(f"{where} holds {fmt_bytes(max(stored - offset, 0))} of data for an array "
                         f"that needs {fmt_bytes(nbytes)}; it is corrupt.")
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
    # Read to the end, so that a CRC is checked and nothing follows the array.
    extra = len(head) > offset + nbytes or bool(fh.read(1))
    if got != nbytes or extra:
        raise InputError(f"{where} does not hold the array its header declares; it is corrupt.")
    return array


def read_npz(blob: bytes, *, where: str, max_bytes: int, max_arrays: int = 4096) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` (a ZIP of ``.npy`` files) read from an untrusted upload.

    Each member gets the archive rules (size, ratio, encryption) and its header
    is checked before its data is read: numeric dtype, and ``shape x itemsize``
    equal to the bytes stored and within what is left of ``max_bytes`` (for all
    arrays together). Nothing is unpickled. ``where`` names the ``.npz`` mid-sentence.
    """
    advice = "That is more than the arrays of one upload may hold. Export fewer layers."
    zf = open_zip(blob, label=where[:1].upper() + where[1:], max_entries=max_arrays,
                  max_directory_bytes=max(64 * 2**10, 512 * max_arrays), what=".npz archive")
    out: dict[str, np.ndarray] = {}
    left = max_bytes
    with zf:
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                continue
            member = f'"{_short(info.filename)}" in {where}'
            # The header alone decides what may be allocated.
            check_member(info, where=where, max_bytes=left + MAX_NPY_HEADER + 16, limit=max_bytes, what=advice)
            try:
                with zf.open(info) as fh:
                    array = _read_npy(fh, info.file_size, where=member, max_bytes=left, limit=max_bytes,
                                      advice="That is more than the arrays of one upload may hold. "
                                             "Export fewer layers.")
            except InputError:
                raise
            except _READ_ERRORS as exc:  # bad CRC, zlib.error, truncated data ...
                raise InputError(f"{member} could not be read ({_reason(exc)}).") from exc
            left -= array.nbytes
            out[info.filename[: -len(".npy")]] = array
    return out


def load_npy(path: str | os.PathLike[str], *, max_bytes: int, dtype: Optional[np.dtype | str] = None,
             shape: Optional[tuple[int, ...]] = None) -> np.ndarray:
    """A ``.npy`` file from disk (a cache entry), its header checked against the file before allocating.

    Refused (InputError): not a ``.npy``, a non-numeric dtype, a header declaring more than
    ``max_bytes`` or other than the file's length, and (when given) another ``dtype`` or
    ``shape``. So a corrupted or crafted entry costs a read of its header, never a MemoryError.
    """
    where = f"The file {Path(path).name}"
    try:
        with open(path, "rb") as fh:
            stored = os.fstat(fh.fileno()).st_size
            head = fh.read(MAX_NPY_HEADER + 16)
            want_dtype, want_shape, _, _ = npy_header(head, where=where)
            if dtype is not None and want_dtype != np.dtype(dtype):
                raise InputError(f"{where} holds {want_dtype} values, not {np.dtype(dtype)}.")
            if shape is not None and tuple(want_shape) != tuple(shape):
                raise InputError(f"{where} holds an array of shape {tuple(want_shape)}, not {tuple(shape)}.")
            fh.seek(0)
            return _read_npy(fh, stored, where=where, max_bytes=max_bytes, limit=max_bytes, advice="")
    except InputError:
        raise
    except _READ_ERRORS as exc:
        raise InputError(f"{where} could not be read ({_reason(exc)}).") from exc
