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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from vizlib import archives, tables
from vizlib.errors import InputError
from vizlib.images import MAX_COMPRESSION_RATIO, MAX_IMAGE_BYTES, limits

#: File name extensions treated as images in folders and ZIPs.
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".bmp", ".gif", ".tif",
                              ".tiff", ".mpo"})
#: Extensions read as tables of image bytes.
TABLE_EXTENSIONS = frozenset({".parquet", ".pq", ".arrow", ".feather", ".ipc"})
#: Names of the image column looked for in a table (else: the only binary column).
IMAGE_COLUMNS = ("image", "bytes", "img", "data", "content", "jpeg", "png")
#: A Parquet row group of image bytes bigger than this is refused (a reader holds one at a time).
MAX_ROW_GROUP_BYTES = 512 * 2**20
#: Largest decoded Parquet page of an image column: one image at most, plus room (writers make 1 MB pages;
#: a value never spans pages), so no single row can decode to more, whatever its row group declares.
MAX_PAGE_BYTES = 2 * MAX_IMAGE_BYTES + 2**20
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
    keys: tuple[tuple[int, str], ...] = ()  # folders: (id, real name) of files whose names are not UTF-8


@dataclass
class Listing:
    """A source's items in id order, and a fingerprint of the listing (names and sizes)."""

    ref: SourceRef
    names: list[str]
    digest: str
    #: ZIPs: members left out that a user may have meant as images, by reason (a few names each; see
    #: :data:`IGNORED_REASONS`). Plain non-image files (a README) are not listed.
    ignored: dict[str, list[str]] = field(default_factory=dict)

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


_NOT_REGULAR = ("{} is not a regular file (a pipe, a device or a socket can't be read as a dataset): give a folder "
                "of images, a ZIP, or a Parquet/Arrow file.")


def _kind_of(location: str) -> str:
    if _is_uri(location):
        import pyarrow.fs as pafs

        fs, path = _fs_and_path(location)
        try:
            info = fs.get_file_info(path)
        except Exception as exc:  # permissions, unreachable buckets
            raise InputError(f"Can't look at {display_name(location)} ({exc}).") from exc
        if info.type == pafs.FileType.Directory:
            return "folder"
        if info.type == pafs.FileType.NotFound:
            raise InputError(f"There is nothing at {display_name(location)}.")
        if info.type != pafs.FileType.File:
            raise InputError(_NOT_REGULAR.format(display_name(location)))
        suffix = posixpath.splitext(path)[1].lower()
    else:
        p = Path(location)
        if p.is_dir():
            return "folder"
        if not p.exists():
            raise InputError(f"There is nothing at {display_name(location)}: give a folder of images, a ZIP, or a "
                             "Parquet/Arrow file.")
        if not p.is_file():  # a pipe, a device or a socket: reading it could block for ever
            raise InputError(_NOT_REGULAR.format(display_name(location)))
        suffix = p.suffix.lower()
    if suffix == ".zip":
        return "zip"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix in (".arrow", ".feather", ".ipc"):
        return "arrow"
    raise InputError(
        f"{display_name(location)} is not a folder, a .zip, or a .parquet/.arrow table of images; "
        "give one of those as the images."
    )


def display_name(name: str) -> str:
    """``name`` fit to show and store: undecodable bytes (kept by ``os.fsdecode`` as surrogates) become U+FFFD."""
    try:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:  # a lone surrogate that no file name decoded to
        return name.encode("utf-8", "replace").decode("utf-8")


def list_source(location: str | os.PathLike[str], *, max_images: Optional[int] = None) -> Listing:
    """List the images at ``location`` in a fixed order (sorted paths; table rows in order).

    At most ``max_images`` items (default :data:`vizlib.images.limits.MAX_DATASET_IMAGES`) are
    accepted: the count is checked while listing (and, for tables, from the metadata) before a
    name is made per item. Names are shown with replacement characters where a file name is not
    UTF-8; such files are still read by their real names.
    """
    location = os.fsdecode(location)
    cap = int(max_images) if max_images is not None else limits.MAX_DATASET_IMAGES
    kind = _kind_of(location)
    if kind == "folder":
        raw, sizes = _list_folder(location, cap)
        names, keys = _display_names(raw)
        ref = SourceRef("folder", location, keys=keys)
    elif kind == "zip":
        names, sizes, ignored = _list_zip(location)
        _check_count(len(names), cap, location)
        ref = SourceRef("zip", location)
    else:
        ref, rows, sizes = _list_table(kind, location, cap)
        names = [str(i) for i in rows]
    if kind != "zip":
        ignored = {}
    h = hashlib.sha256(f"{kind}\n".encode())
    for name, size in zip(names, sizes):
        h.update(f"{name}\0{size}\n".encode("utf-8", "surrogateescape"))
    if not names:
        why = "".join(f" It holds {describe_ignored(reason, len(found), found)}." for reason, found in ignored.items())
        raise InputError(f"No images found in {display_name(location)}.{why}")
    return Listing(ref=ref, names=names, digest=h.hexdigest(), ignored=ignored)


#: Why a ZIP member that looks meant as an image is left out (``Listing.ignored``): one, many, and what to do.
IGNORED_REASONS = {
    "nested": ("a ZIP inside the ZIP", "{n} ZIPs inside the ZIP",
               "archives inside the archive are not opened; unzip them and zip their images together"),
    "unsafe": ("an image whose path leaves the archive", "{n} images whose paths leave the archive",
               "paths with '..' are refused"),
}
#: Names kept per reason (for the message; the count is complete).
IGNORED_EXAMPLES = 3


def describe_ignored(reason: str, count: int, examples: Sequence[str]) -> str:
    """One reason of ``Listing.ignored`` in words, with its count and first names."""
    one, many, advice = IGNORED_REASONS[reason]
    n = int(count)
    shown = ", ".join(display_name(x) for x in examples[:IGNORED_EXAMPLES]) + (", …" if n > IGNORED_EXAMPLES else "")
    return f"{one if n == 1 else many.format(n=n)} ({shown}): {advice}"


def _check_count(n: int, cap: int, location: str) -> None:
    if n > cap:
        raise InputError(f"{display_name(location)} holds more than {cap:,} images, the limit for one atlas: "
                         "split the dataset, or build from a part of it.")


def _display_names(raw: list[str]) -> tuple[list[str], tuple[tuple[int, str], ...]]:
    """Shown names (valid UTF-8, unique) and, for those that differ, the real names readers open."""
    names: list[str] = []
    keys: list[tuple[int, str]] = []
    seen: set[str] = set()
    for i, name in enumerate(raw):
        shown = display_name(name)
        if shown != name:
            base, k = shown, 2
            while shown in seen:  # two names that differ only in undecodable bytes
                shown = f"{base} ({k})"
                k += 1
            keys.append((i, name))
        seen.add(shown)
        names.append(shown)
    return names, tuple(keys)


#: Entries (files, folders, anything) a folder listing looks at, per image allowed: a folder of
#: millions of other files is refused instead of walked.
_SCAN_FACTOR = 4
#: Folder levels a listing descends.
MAX_DEPTH = 32


def _local_root(location: str) -> Optional[str]:
    """The local path behind ``location`` (a path, or a ``file://`` URI / any URI on the local filesystem)."""
    if not _is_uri(location):
        return location
    import pyarrow.fs as pafs

    fs, path = _fs_and_path(location)
    return path if isinstance(fs, pafs.LocalFileSystem) else None


def walk_files(location: str, *, max_count: int, max_depth: int = MAX_DEPTH) -> list[tuple[str, str]]:
    """Image files under the folder ``location`` as sorted ``(relative name, size:mtime)``: ONE rule for every path.

    Local folders and ``file://`` URIs (anything on the local filesystem) are walked
    without following links to folders (no loops, no escapes); a link to a file counts
    only when it resolves to a regular file inside the folder. Other ``pyarrow.fs``
    filesystems (object stores: no links) are listed level by level. Either way at most
    ``max_depth`` levels and ``max_count`` images; hidden files and folders are skipped.
    """
    found: list[tuple[str, str]] = []
    budget = [max(1000, _SCAN_FACTOR * max_count)]

    def seen_one() -> None:
        budget[0] -= 1
        if budget[0] < 0:
            raise InputError(f"{display_name(location)} holds too many files to list (over "
                             f"{_SCAN_FACTOR * max_count:,}): give a folder of images.")

    def add(rel: str, size: str) -> None:
        found.append((rel, size))
        if len(found) > max_count:
            _check_count(len(found), max_count, location)

    local = _local_root(location)
    if local is not None:
        root = os.path.realpath(local)
        if not os.path.isdir(root):
            raise InputError(f"{display_name(location)} is not a folder.")
        stack = [(root, "", 0)]
        while stack:
            path, rel, depth = stack.pop()
            try:
                with os.scandir(path) as it:
                    entries = list(it)
            except OSError:
                continue  # an unreadable subfolder is not part of the dataset
            for entry in entries:
                seen_one()
                if _hidden(entry.name):
                    continue
                sub = f"{rel}/{entry.name}" if rel else entry.name
                try:
                    if entry.is_symlink():
                        target = os.path.realpath(entry.path)
                        if os.path.commonpath([root, target]) != root or not os.path.isfile(target):
                            continue  # a link out of the folder, to a folder, or dangling: not part of the dataset
                        st = os.stat(target)
                    elif entry.is_dir(follow_symlinks=False):
                        if depth + 1 < max_depth:
                            stack.append((entry.path, sub, depth + 1))
                        continue
                    elif entry.is_file(follow_symlinks=False):
                        st = entry.stat(follow_symlinks=False)
                    else:
                        continue  # sockets, devices, fifos
                except (OSError, ValueError):
                    continue
                if os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS:
                    add(sub, f"{st.st_size}:{st.st_mtime_ns}")
    else:
        import pyarrow.fs as pafs

        fs, base = _fs_and_path(location)
        base = base.rstrip("/")
        stack2 = [(base, 0)]
        while stack2:
            path, depth = stack2.pop()
            try:
                infos = fs.get_file_info(pafs.FileSelector(path, recursive=False))
            except Exception as exc:
                raise InputError(f"Can't list {display_name(location)} ({exc}).") from exc
            for info in infos:
                seen_one()
                rel = info.path[len(base):].lstrip("/")
                if not rel or any(_hidden(p) or p == ".." for p in rel.split("/")):
                    continue
                if info.type == pafs.FileType.Directory:
                    if depth + 1 < max_depth:
                        stack2.append((info.path, depth + 1))
                elif info.type == pafs.FileType.File and posixpath.splitext(rel)[1].lower() in IMAGE_EXTENSIONS:
                    add(rel, f"{info.size}:{info.mtime_ns}")
    found.sort(key=lambda t: t[0])
    return found


def _list_folder(location: str, cap: int) -> tuple[list[str], list[Any]]:
    found = walk_files(location, max_count=cap)
    return [n for n, _ in found], [s for _, s in found]


def _zip_members(zf: zipfile.ZipFile, ignored: Optional[dict[str, list[str]]] = None,
                 ) -> list[tuple[str, zipfile.ZipInfo]]:
    """The image members (name, info), sorted; ``ignored`` collects the ones left out that look meant (a nested ZIP,
    an image whose path leaves the archive), for the listing to say so instead of dropping them without a word."""
    members = []
    seen = set()
    for info in zf.infolist():
        if info.is_dir():
            continue
        parts = [p for p in info.filename.replace("\\", "/").split("/") if p not in ("", ".")]
        if not parts:
            continue
        ext = os.path.splitext(parts[-1])[1].lower()
        if any(_hidden(p) for p in parts if p != ".."):
            continue
        if ignored is not None and (ext in IMAGE_EXTENSIONS or ext == ".zip"):
            reason = "unsafe" if ".." in parts else ("nested" if ext == ".zip" else None)
            if reason:
                ignored.setdefault(reason, []).append(info.filename)
                continue
        if ".." in parts or ext not in IMAGE_EXTENSIONS:
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


def _list_zip(location: str) -> tuple[list[str], list[Any], dict[str, list[str]]]:
    ignored: dict[str, list[str]] = {}
    try:
        with _open_binary(location) as fh, _open_zip(fh, location) as zf:
            members = _zip_members(zf, ignored)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{location} is not a readable ZIP archive ({exc}).") from exc
    return [n for n, _ in members], [f"{i.file_size}:{i.CRC:08x}" for _, i in members], ignored


def _image_column(schema: Any, location: str) -> tuple[str, Optional[str]]:
    import pyarrow as pa

    def binary(t: Any) -> bool:
        if pa.types.is_dictionary(t):
            t = t.value_type
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


#: Fewer declared bytes than this per image row means the rows repeat or hold nothing (a dictionary
#: value referenced by every row, null rows): refused before anything is read per row.
MIN_BYTES_PER_IMAGE = 64


def _open_source_table(ref: SourceRef, *, max_rows: Optional[int] = None) -> Any:
    """The image column of a table source, sized from its metadata (:func:`vizlib.tables.open_table`)."""
    return tables.open_table(ref.location, ref.kind, label=f"The table {display_name(ref.location)}",
                             columns=[ref.column] if ref.column else None,
                             null_column=f"{ref.column}.{ref.field}" if ref.field else ref.column,
                             max_rows=max_rows, max_group_bytes=MAX_ROW_GROUP_BYTES,
                             max_page_bytes=MAX_PAGE_BYTES)


def _list_table(kind: str, location: str, cap: int) -> tuple[SourceRef, Any, list[Any]]:
    """(ref, row numbers that may hold an image, layout for the digest): counted and capped from the metadata."""
    label = f"The table {display_name(location)}"
    probe = tables.open_table(location, kind, label=label, columns=[], max_group_bytes=MAX_ROW_GROUP_BYTES,
                              check_pages=False)
    try:
        column, fld = _image_column(probe.schema, display_name(location))
    finally:
        probe.close()
    ref = SourceRef(kind, location, column, fld)
    with _open_source_table(ref) as table:
        groups = table.groups
    # Groups whose image column the metadata declares all null hold nothing: no row of theirs is listed.
    kept = [g for g in groups if g.rows and (g.nulls is None or g.nulls < g.rows)]
    n = sum(g.rows for g in kept)
    _check_count(n, cap, location)
    images = sum(g.rows - (g.nulls or 0) for g in kept)
    data_bytes = sum(g.nbytes for g in kept)
    if images and data_bytes < MIN_BYTES_PER_IMAGE * images:
        raise InputError(f"{label} declares {images:,} images in {data_bytes:,} bytes: fewer than "
                         f"{MIN_BYTES_PER_IMAGE} bytes an image, so its rows repeat one value or hold nothing. "
                         "Give a table with one encoded image per row.")
    if len(kept) == len(groups):
        rows: Any = range(n)
    else:
        rows = [r for g in kept for r in range(g.start, g.start + g.rows)]
    sizes = [f"rg{i}:{g.rows}:{g.nbytes}" if kind == "parquet" else f"b{i}:{g.rows}" for i, g in enumerate(groups)]
    return ref, rows, sizes + [""] * max(0, n - len(sizes))


class ItemReader:
    """Reads items of one source by id; keeps the archive / current table chunk open between reads.

    Not thread-safe: give each thread its own (:func:`thread_reader`).
    """

    def __init__(self, ref: SourceRef):
        self.ref = ref
        self._zip: Optional[zipfile.ZipFile] = None
        self._zip_fh: Any = None
        self._members: Optional[dict[str, zipfile.ZipInfo]] = None
        self._table: Any = None  # a vizlib.tables.TableReader
        self._batches: Any = None  # the batches of the current row group, being read forward
        self._group: Optional[int] = None
        self._chunk: Optional[tuple[int, Any]] = None  # (first row, record batch) last read
        self._keys: Optional[dict[int, str]] = None

    def close(self) -> None:
        for obj in (self._zip, self._zip_fh, self._table):
            try:
                if obj is not None:
                    obj.close()
            except Exception:
                pass
        self._zip = self._zip_fh = self._table = self._chunk = self._batches = None

    def read(self, index: int, name: str) -> bytes:
        """The bytes of item ``index`` (named ``name`` in the listing); InputError if it can't be had."""
        kind = self.ref.kind
        if kind == "folder":
            return self._read_file(index, name)
        if kind == "zip":
            return self._read_member(name)
        return self._read_row(int(name))  # a table item's name is its row number

    # ---------------------------------------------------------------- folders

    def _key(self, index: int, name: str) -> str:
        """The real name of item ``index`` (differs from the shown ``name`` when it is not UTF-8)."""
        if self._keys is None:
            self._keys = dict(self.ref.keys)
        return self._keys.get(int(index), name)

    def _read_file(self, index: int, name: str) -> bytes:
        key = self._key(index, name)
        shown = display_name(name)
        local = _local_root(self.ref.location)
        if local is None:
            fs, base = _fs_and_path(self.ref.location)
            path = base.rstrip("/") + "/" + key
            try:
                with fs.open_input_file(path) as fh:
                    if fh.size() > MAX_IMAGE_BYTES:
                        raise InputError(f'"{shown}" is {fh.size() / 2**20:.1f} MB, over the '
                                         f"{MAX_IMAGE_BYTES // 2**20} MB limit per image.")
                    return fh.read()
            except InputError:
                raise
            except Exception as exc:
                raise InputError(f'"{shown}" could not be read ({exc}).') from exc
        root = os.path.realpath(local)
        target = os.path.realpath(os.path.join(root, key))
        if os.path.commonpath([root, target]) != root:
            raise InputError(f'"{shown}" now points outside the folder; skipped.')
        try:
            size = os.stat(target).st_size
            if size > MAX_IMAGE_BYTES:
                raise InputError(f'"{shown}" is {size / 2**20:.1f} MB, over the {MAX_IMAGE_BYTES // 2**20} MB '
                                 "limit per image.")
            with open(target, "rb") as fh:
                data = fh.read(MAX_IMAGE_BYTES + 1)
        except InputError:
            raise
        except (OSError, ValueError) as exc:
            raise InputError(f'"{shown}" could not be read ({getattr(exc, "strerror", None) or exc}).') from exc
        if len(data) > MAX_IMAGE_BYTES:
            raise InputError(f'"{shown}" is over the {MAX_IMAGE_BYTES // 2**20} MB limit per image.')
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

    def _read_row(self, row: int) -> bytes:
        """Row ``row`` of the image column: read batch by batch (each within the tabular budget), kept for the next."""
        try:
            if self._table is None:
                self._table = _open_source_table(self.ref)
            if self._chunk is not None and self._chunk[0] <= row < self._chunk[0] + self._chunk[1].num_rows:
                start, batch = self._chunk
            else:
                group, _ = self._table.locate(row)
                if self._batches is None or self._group != group or self._chunk is None or row < self._chunk[0]:
                    self._batches = self._table.batches([group])
                    self._group = group
                for start, batch in self._batches:
                    self._chunk = (start, batch)
                    if row < start + batch.num_rows:
                        break
                else:
                    self._batches = None
                    raise InputError(f"Row {row} is not in the table any more.")
                if not start <= row:
                    raise InputError(f"Row {row} could not be found in the table.")
            arr = batch.column(self.ref.column)
            if self.ref.field:
                arr = arr.field(self.ref.field)
            value = arr[row - start]
        except InputError:
            raise
        except Exception as exc:
            raise InputError(f"Row {row} could not be read ({exc}).") from exc
        if not value.is_valid:
            raise InputError(f"Row {row} has no image (null).")
        data = value.as_py()
        if not data:
            raise InputError(f"Row {row} is empty (0 bytes).")
        if len(data) > MAX_IMAGE_BYTES:
            raise InputError(f"Row {row} is {len(data) / 2**20:.1f} MB, over the "
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
