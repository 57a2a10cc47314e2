"""Where an atlas's images come from: a folder (recursively), a ZIP, or a Parquet / Arrow table of bytes.

A source is listed once, in a fixed order (so an image's id is its position,
the same in every engine and every resumed run), and then read one item at
a time by whoever decodes it: a thread of the local engine or a Ray task on
another machine. The listing lives on the driver; a reader gets only the
small :class:`SourceRef` (kind, location, column) and the items of its batch.

Reading enforces the per-image byte cap of uploads
(:data:`vizlib.images.MAX_IMAGE_BYTES`) and, for ZIPs, the zip-bomb and
encryption checks; a bad item raises :class:`InputError`, which the pipeline
records as a skipped image (never fatal). Folder and table locations may be
URIs that ``pyarrow.fs`` understands (``s3://``, ``gs://``, ``file://``).
"""

from __future__ import annotations

import hashlib
import io
import os
import posixpath
import threading
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from vizlib import archives
from vizlib.errors import InputError
from vizlib.images import MAX_COMPRESSION_RATIO, MAX_IMAGE_BYTES

#: File name extensions treated as images in folders and ZIPs.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".bmp", ".gif", ".tif",
                              ".tiff", ".mpo"})
#: Extensions read as tables of image bytes.
TABLE_EXTENSIONS = frozenset({".parquet", ".pq", ".arrow", ".feather", ".ipc"})
#: Names of the image column looked for in a table (else: the only binary column).
IMAGE_COLUMNS = ("image", "bytes", "img", "data", "content", "jpeg", "png")
#: A Parquet row group of image bytes bigger than this is refused (a reader holds one at a time).
MAX_ROW_GROUP_BYTES = 512 * 2**20
#: Most entries a dataset ZIP's directory may list (counted from its end record before it is parsed:
#: every listed entry costs memory while the listing is built).
MAX_ZIP_ENTRIES = 1_000_000
#: Largest central directory of a dataset ZIP (bytes).
MAX_ZIP_DIRECTORY_BYTES = 128 * 2**20


@dataclass(frozen=True)
class SourceRef:
    """What a reader needs to open a source anywhere: small and picklable."""

    kind: str  # "folder", "zip", "parquet" or "arrow"
    location: str  # a local path or a URI
    column: Optional[str] = None  # tables: the image bytes column
    field: Optional[str] = None  # tables: the struct field holding the bytes (Hugging Face "image" columns)


@dataclass
class Listing:
    """A source's items in id order, and a fingerprint of the listing (names and sizes)."""

    ref: SourceRef
    names: list[str]
    digest: str

    def __len__(self) -> int:
        return len(self.names)


def _is_uri(location: str) -> bool:
    return "://" in location


def _fs_and_path(location: str) -> tuple[Any, str]:
    import pyarrow.fs as pafs

    try:
        return pafs.FileSystem.from_uri(location)
    except Exception as exc:  # pyarrow raises ArrowInvalid / OSError for unknown schemes or buckets
        raise InputError(f"Can't open {location!r}: {exc}") from exc


def _hidden(part: str) -> bool:
    return part.startswith(".") or part == "__MACOSX"


def _kind_of(location: str) -> str:
    if _is_uri(location):
        import pyarrow.fs as pafs

        fs, path = _fs_and_path(location)
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.Directory:
            return "folder"
        if info.type == pafs.FileType.NotFound:
            raise InputError(f"There is nothing at {location}.")
        suffix = posixpath.splitext(path)[1].lower()
    else:
        p = Path(location)
        if p.is_dir():
            return "folder"
        if not p.exists():
            raise InputError(f"There is nothing at {location}: give a folder of images, a ZIP, or a Parquet/Arrow file.")
        suffix = p.suffix.lower()
    if suffix == ".zip":
        return "zip"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix in (".arrow", ".feather", ".ipc"):
        return "arrow"
    raise InputError(
        f"{location} is not a folder, a .zip, or a .parquet/.arrow table of images; "
        "give one of those as the images."
    )


def list_source(location: str | os.PathLike[str]) -> Listing:
    """List the images at ``location`` in a fixed order (sorted paths; table rows in order)."""
    location = os.fspath(location)
    kind = _kind_of(location)
    if kind == "folder":
        names, sizes = _list_folder(location)
        ref = SourceRef("folder", location)
    elif kind == "zip":
        names, sizes = _list_zip(location)
        ref = SourceRef("zip", location)
    else:
        ref, n, sizes = _list_table(kind, location)
        names = [str(i) for i in range(n)]
    h = hashlib.sha256(f"{kind}\n".encode())
    for name, size in zip(names, sizes):
        h.update(f"{name}\0{size}\n".encode())
    if not names:
        raise InputError(f"No images found in {location}.")
    return Listing(ref=ref, names=names, digest=h.hexdigest())


def _list_folder(location: str) -> tuple[list[str], list[Any]]:
    found: list[tuple[str, Any]] = []
    if _is_uri(location):
        import pyarrow.fs as pafs

        fs, base = _fs_and_path(location)
        base = base.rstrip("/")
        for info in fs.get_file_info(pafs.FileSelector(base, recursive=True)):
            if info.type != pafs.FileType.File:
                continue
            rel = info.path[len(base):].lstrip("/")
            parts = rel.split("/")
            if any(_hidden(p) for p in parts):
                continue
            if posixpath.splitext(rel)[1].lower() in IMAGE_EXTENSIONS:
                found.append((rel, f"{info.size}:{info.mtime_ns}"))
    else:
        root = Path(location).resolve()
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            dirnames[:] = sorted(d for d in dirnames if not _hidden(d))
            for fname in filenames:
                if _hidden(fname) or os.path.splitext(fname)[1].lower() not in IMAGE_EXTENSIONS:
                    continue
                full = Path(dirpath) / fname
                if full.is_symlink():
                    target = full.resolve()
                    if not target.is_relative_to(root) or not target.is_file():
                        continue  # a link out of the folder is not part of the dataset
                try:
                    st = full.stat()
                except OSError:
                    continue
                found.append((full.relative_to(root).as_posix(), f"{st.st_size}:{st.st_mtime_ns}"))
    found.sort(key=lambda t: t[0])
    return [n for n, _ in found], [s for _, s in found]


def _zip_members(zf: zipfile.ZipFile) -> list[tuple[str, zipfile.ZipInfo]]:
    members = []
    seen = set()
    for info in zf.infolist():
        if info.is_dir():
            continue
        parts = [p for p in info.filename.replace("\\", "/").split("/") if p not in ("", ".")]
        if not parts or any(_hidden(p) or p == ".." for p in parts):
            continue
        if os.path.splitext(parts[-1])[1].lower() not in IMAGE_EXTENSIONS:
            continue
        name = "/".join(parts)
        if name in seen:
            continue  # a duplicated member name: the first one counts
        seen.add(name)
        members.append((name, info))
    members.sort(key=lambda t: t[0])
    return members


def _open_binary(location: str) -> Any:
    if _is_uri(location):
        fs, path = _fs_and_path(location)
        return fs.open_input_file(path)
    return open(location, "rb")


def _open_zip(fh: Any, location: str) -> zipfile.ZipFile:
    """The dataset ZIP in ``fh`` through the one archive reader (directory sized and vetted first)."""
    return archives.open_zip(fh, label=f"The ZIP {location}", max_entries=MAX_ZIP_ENTRIES,
                             max_directory_bytes=MAX_ZIP_DIRECTORY_BYTES,
                             advice="Zip the folder of images again and give that .zip.")


def _list_zip(location: str) -> tuple[list[str], list[Any]]:
    try:
        with _open_binary(location) as fh, _open_zip(fh, location) as zf:
            members = _zip_members(zf)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{location} is not a readable ZIP archive ({exc}).") from exc
    return [n for n, _ in members], [f"{i.file_size}:{i.CRC:08x}" for _, i in members]


def _image_column(schema: Any, location: str) -> tuple[str, Optional[str]]:
    import pyarrow as pa

    def binary(t: Any) -> bool:
        return pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_binary_view(t)

    candidates = []
    for f in schema:
        if binary(f.type):
            candidates.append((f.name, None))
        elif pa.types.is_struct(f.type):
            for sub in f.type:
                if sub.name == "bytes" and binary(sub.type):
                    candidates.append((f.name, "bytes"))
    for want in IMAGE_COLUMNS:
        for name, fld in candidates:
            if name.lower() == want:
                return name, fld
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise InputError(f"{location} has no column of image bytes (a binary column such as 'image').")
    raise InputError(
        f"{location} has several binary columns ({', '.join(n for n, _ in candidates)}); "
        "name the image column 'image'."
    )


def _list_table(kind: str, location: str) -> tuple[SourceRef, int, list[Any]]:
    import pyarrow.parquet as pq

    try:
        if kind == "parquet":
            with _open_binary(location) as fh:
                meta = pq.ParquetFile(fh).metadata
                schema = meta.schema.to_arrow_schema()
                column, fld = _image_column(schema, location)
                for g in range(meta.num_row_groups):
                    rg = meta.row_group(g)
                    if rg.total_byte_size > MAX_ROW_GROUP_BYTES:
                        raise InputError(
                            f"{location} has a row group of {rg.total_byte_size / 2**20:.0f} MB; rewrite it with "
                            f"row groups under {MAX_ROW_GROUP_BYTES // 2**20} MB (pyarrow: row_group_size=...)."
                        )
                n = meta.num_rows
                sizes = [f"rg{g}:{meta.row_group(g).num_rows}:{meta.row_group(g).total_byte_size}"
                         for g in range(meta.num_row_groups)]
        else:
            reader = _ipc_reader(location)
            schema = reader.schema
            column, fld = _image_column(schema, location)
            n = sum(reader.get_batch(i).num_rows for i in range(reader.num_record_batches))
            sizes = [f"b{i}:{reader.get_batch(i).num_rows}" for i in range(reader.num_record_batches)]
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{location} is not a readable {kind} table ({exc}).") from exc
    # The listing digest covers the table's layout; row contents are fingerprinted as they are read.
    return SourceRef(kind, location, column, fld), n, sizes + [""] * max(0, n - len(sizes))


def _ipc_reader(location: str) -> Any:
    import pyarrow as pa

    if _is_uri(location):
        fs, path = _fs_and_path(location)
        return pa.ipc.open_file(fs.open_input_file(path))
    try:
        return pa.ipc.open_file(pa.memory_map(location, "r"))
    except pa.ArrowInvalid as exc:
        raise InputError(f"{location} is not an Arrow IPC file (the random-access format; streams are not "
                         "supported): write it with pyarrow.ipc.new_file or feather.write_feather.") from exc


class ItemReader:
    """Reads items of one source by id; keeps the archive / current table chunk open between reads.

    Not thread-safe: give each thread its own (:func:`thread_reader`).
    """

    def __init__(self, ref: SourceRef):
        self.ref = ref
        self._zip: Optional[zipfile.ZipFile] = None
        self._zip_fh: Any = None
        self._members: Optional[dict[str, zipfile.ZipInfo]] = None
        self._table: Any = None  # pyarrow ParquetFile or IPC reader
        self._offsets: Optional[list[int]] = None
        self._chunk: Optional[tuple[int, Any]] = None  # (chunk index, pyarrow array)

    def close(self) -> None:
        for obj in (self._zip, self._zip_fh):
            try:
                if obj is not None:
                    obj.close()
            except Exception:
                pass
        self._zip = self._zip_fh = self._table = self._chunk = None

    def read(self, index: int, name: str) -> bytes:
        """The bytes of item ``index`` (named ``name`` in the listing); InputError if it can't be had."""
        kind = self.ref.kind
        if kind == "folder":
            return self._read_file(name)
        if kind == "zip":
            return self._read_member(name)
        return self._read_row(int(index))

    # ---------------------------------------------------------------- folders

    def _read_file(self, name: str) -> bytes:
        if _is_uri(self.ref.location):
            fs, base = _fs_and_path(self.ref.location)
            path = base.rstrip("/") + "/" + name
            try:
                with fs.open_input_file(path) as fh:
                    if fh.size() > MAX_IMAGE_BYTES:
                        raise InputError(f'"{name}" is {fh.size() / 2**20:.1f} MB, over the '
                                         f"{MAX_IMAGE_BYTES // 2**20} MB limit per image.")
                    return fh.read()
            except InputError:
                raise
            except Exception as exc:
                raise InputError(f'"{name}" could not be read ({exc}).') from exc
        root = Path(self.ref.location)
        path = root / name
        try:
            size = path.stat().st_size
            if size > MAX_IMAGE_BYTES:
                raise InputError(f'"{name}" is {size / 2**20:.1f} MB, over the {MAX_IMAGE_BYTES // 2**20} MB '
                                 "limit per image.")
            with open(path, "rb") as fh:
                data = fh.read(MAX_IMAGE_BYTES + 1)
        except InputError:
            raise
        except OSError as exc:
            raise InputError(f'"{name}" could not be read ({exc.strerror or exc}).') from exc
        if len(data) > MAX_IMAGE_BYTES:
            raise InputError(f'"{name}" is over the {MAX_IMAGE_BYTES // 2**20} MB limit per image.')
        return data

    # ---------------------------------------------------------------- ZIPs

    def _read_member(self, name: str) -> bytes:
        if self._zip is None:
            try:
                self._zip_fh = _open_binary(self.ref.location)
                self._zip = _open_zip(self._zip_fh, self.ref.location)
                self._members = dict(_zip_members(self._zip))
            except Exception as exc:
                self.close()
                if isinstance(exc, InputError):
                    raise
                raise InputError(f"The ZIP {self.ref.location} could not be opened ({exc}).") from exc
        assert self._members is not None
        info = self._members.get(name)
        if info is None:
            raise InputError(f'"{name}" is no longer in the ZIP.')
        # Size, zip-bomb ratio, encryption, damaged data: the one archive policy.
        return archives.read_member(self._zip, info, where="the ZIP", max_bytes=MAX_IMAGE_BYTES,
                                    max_ratio=MAX_COMPRESSION_RATIO, what="Skipped.")

    # ---------------------------------------------------------------- tables

    def _open_table(self) -> None:
        import pyarrow.parquet as pq

        if self.ref.kind == "parquet":
            self._zip_fh = _open_binary(self.ref.location)
            self._table = pq.ParquetFile(self._zip_fh)
            counts = [self._table.metadata.row_group(g).num_rows for g in range(self._table.num_row_groups)]
        else:
            self._table = _ipc_reader(self.ref.location)
            counts = [self._table.get_batch(i).num_rows for i in range(self._table.num_record_batches)]
        offsets = [0]
        for c in counts:
            offsets.append(offsets[-1] + c)
        self._offsets = offsets

    def _column_chunk(self, chunk: int) -> Any:
        if self._chunk is not None and self._chunk[0] == chunk:
            return self._chunk[1]
        col = self.ref.column
        if self.ref.kind == "parquet":
            arr = self._table.read_row_group(chunk, columns=[col]).column(0).combine_chunks()
        else:
            arr = self._table.get_batch(chunk).column(col)
        if self.ref.field:
            arr = arr.field(self.ref.field)
        self._chunk = (chunk, arr)
        return arr

    def _read_row(self, index: int) -> bytes:
        import bisect

        try:
            if self._table is None:
                self._open_table()
            assert self._offsets is not None
            if not 0 <= index < self._offsets[-1]:
                raise InputError(f"Row {index} is not in the table any more.")
            chunk = bisect.bisect_right(self._offsets, index) - 1
            arr = self._column_chunk(chunk)
            value = arr[index - self._offsets[chunk]]
        except InputError:
            raise
        except Exception as exc:
            raise InputError(f"Row {index} could not be read ({exc}).") from exc
        if not value.is_valid:
            raise InputError(f"Row {index} has no image (null).")
        data = value.as_py()
        if not data:
            raise InputError(f"Row {index} is empty (0 bytes).")
        if len(data) > MAX_IMAGE_BYTES:
            raise InputError(f"Row {index} is {len(data) / 2**20:.1f} MB, over the "
                             f"{MAX_IMAGE_BYTES // 2**20} MB limit per image.")
        return bytes(data)


_LOCAL = threading.local()


def thread_reader(ref: SourceRef) -> ItemReader:
    """This thread's reader for ``ref`` (one open archive / table chunk per thread and source)."""
    readers = getattr(_LOCAL, "readers", None)
    if readers is None:
        readers = _LOCAL.readers = {}
    reader = readers.get(ref)
    if reader is None:
        for old in readers.values():
            old.close()
        readers.clear()
        reader = readers[ref] = ItemReader(ref)
    return reader


def read_bytes(ref: SourceRef, index: int, name: str) -> bytes:
    """One item's bytes, through this thread's reader."""
    return thread_reader(ref).read(index, name)


def zip_bytes_source(data: bytes) -> io.BytesIO:  # pragma: no cover - convenience for callers with bytes
    return io.BytesIO(data)
