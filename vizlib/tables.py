"""Reading untrusted Parquet and Arrow IPC tables within budgets: the one tabular reader.

A small table file can declare a huge one: 300 million null rows in half a
megabyte, a dictionary page whose one value every row repeats, a zstd page
that inflates a thousandfold, an Arrow record batch of compressed buffers.
Every Parquet or Arrow read in the project goes through :func:`open_table`,
which sizes the table from what its metadata declares *before* anything is
decoded, and then reads it in batches of bounded bytes:

* Parquet: the footer's length is read first (from the file's last 8 bytes)
  and capped; then rows, row groups, columns, and each column chunk's
  declared uncompressed size; the page headers of every column chunk read are
  walked (a few bytes each) so a page cannot declare more than its chunk did;
  binary columns are read as dictionaries (a value repeated by every row is
  held once) and prefix-shared encodings (``DELTA_BYTE_ARRAY``) of binary
  columns are refused; batches of at most :data:`BATCH_BYTES` declared bytes
  are read with only the columns asked for.
* Arrow IPC files: the footer and every record batch's metadata (row count,
  buffer sizes, and for compressed buffers the uncompressed length each one
  declares) are parsed from their flatbuffers before a batch is read, and a
  batch is read only when its decoded size fits the budget.

Everything that goes wrong is an :class:`~vizlib.errors.InputError` naming the
file and what to do.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional, Sequence

from vizlib.errors import InputError
from vizlib.units import fmt_bytes

__all__ = ["BATCH_BYTES", "Group", "TableReader", "open_input", "open_table", "plain"]

#: Decoded bytes one batch may hold (what a reader keeps in memory at a time).
BATCH_BYTES = 64 * 2**20
#: Largest Parquet footer / Arrow footer parsed (bytes).
MAX_FOOTER_BYTES = 64 * 2**20
#: Largest Arrow message metadata (one record batch's flatbuffer).
MAX_MESSAGE_BYTES = 16 * 2**20
#: Most columns (leaf columns for Parquet, fields for Arrow) a table may have.
MAX_COLUMNS = 10_000
#: Most row groups / record batches a table may have.
MAX_GROUPS = 100_000
#: Largest decoded size a single Parquet page may declare.
MAX_PAGE_BYTES = 256 * 2**20
#: Rows per batch at most, whatever their size (each row costs offsets and validity bits).
MAX_BATCH_ROWS = 65_536


@dataclass
class Group:
    """One Parquet row group or Arrow record batch, as its metadata declares it."""

    rows: int
    nbytes: int  # declared decoded bytes of the columns read
    nulls: Optional[int] = None  # declared nulls of the ``null_column`` (None: not declared)
    start: int = 0  # index of its first row in the table


def _label(label: str) -> str:
    return label or "The table"


def open_input(location: str | os.PathLike[str], *, memory_map: bool = False) -> Any:
    """A pyarrow input file for a local path or a ``pyarrow.fs`` URI (``s3://``, ``file://`` ...)."""
    import pyarrow as pa

    text = os.fspath(location)
    try:
        if "://" in text:
            import pyarrow.fs as pafs

            fs, path = pafs.FileSystem.from_uri(text)
            return fs.open_input_file(path)
        return pa.memory_map(text, "r") if memory_map else pa.OSFile(text, "r")
    except Exception as exc:  # ArrowInvalid for unknown schemes, OSError / FileNotFoundError
        raise InputError(f"Can't open {text!r} ({_reason(exc)}).") from exc


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _binary(t: Any) -> bool:
    import pyarrow as pa

    return (pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_binary_view(t)
            or pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t))


def _leaves(schema: Any, names: Optional[Sequence[str]]) -> list[str]:
    """Dotted paths of the binary/string leaves under the top-level ``names`` (all when None)."""
    out: list[str] = []

    def walk(prefix: str, t: Any) -> None:
        if _binary(t):
            out.append(prefix)
        for i in range(getattr(t, "num_fields", 0) or 0):
            f = t.field(i)
            walk(f"{prefix}.{f.name}", f.type)

    for f in schema:
        if names is None or f.name in names:
            walk(f.name, f.type)
    return out


class TableReader:
    """A table whose size was checked from its metadata; read it in bounded batches.

    ``groups`` are the row groups (Parquet) or record batches (Arrow) with their
    declared rows and decoded bytes of the columns asked for.
    """

    def __init__(self, kind: str, label: str, source: Any, schema: Any, groups: list[Group],
                 columns: Optional[list[str]], budget: int, parquet: Any = None, ipc: Any = None):
        self.kind = kind
        self.label = label
        self.schema = schema
        self.groups = groups
        self.columns = columns
        self.budget = int(budget)
        self._source = source
        self._parquet = parquet
        self._ipc = ipc
        self.num_rows = sum(g.rows for g in groups)

    def close(self) -> None:
        """Release the file."""
        try:
            self._source.close()
        except Exception:
            pass

    def __enter__(self) -> "TableReader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @property
    def declared_bytes(self) -> int:
        """Decoded bytes of the columns read, over the whole table, as declared."""
        return sum(g.nbytes for g in self.groups)

    def _batch_rows(self, g: Group) -> int:
        per_row = max(1.0, g.nbytes / max(g.rows, 1))
        return int(max(1, min(MAX_BATCH_ROWS, g.rows, self.budget // per_row)))

    def batches(self, groups: Optional[Sequence[int]] = None) -> Iterator[tuple[int, Any]]:
        """``(index of the first row, record batch)`` over ``groups`` (default all), each within the budget."""
        wanted = range(len(self.groups)) if groups is None else groups
        for gi in wanted:
            g = self.groups[gi]
            if g.rows == 0:
                continue
            try:
                if self.kind == "parquet":
                    start = g.start
                    for batch in self._parquet.iter_batches(batch_size=self._batch_rows(g), row_groups=[gi],
                                                            columns=self.columns, use_threads=False):
                        yield start, batch
                        start += batch.num_rows
                else:
                    if g.nbytes > self.budget:
                        raise InputError(
                            f"{_label(self.label)} has a record batch of {fmt_bytes(g.nbytes)} decoded, over the "
                            f"{fmt_bytes(self.budget)} a reader holds at a time: write it in smaller batches "
                            "(pyarrow: max_chunksize=...).")
                    batch = self._ipc.get_batch(gi)
                    if batch.num_rows != g.rows:
                        raise InputError(f"{_label(self.label)} is damaged: a record batch has another row count "
                                         "than its metadata says.")
                    yield g.start, batch
            except InputError:
                raise
            except MemoryError as exc:
                raise InputError(f"{_label(self.label)} needs more memory to read than is allowed.") from exc
            except Exception as exc:  # ArrowInvalid, OSError, ParquetException ... on damaged data
                raise InputError(f"{_label(self.label)} could not be read ({_reason(exc)}).") from exc

    def read(self, max_bytes: int) -> Any:
        """The whole table (the columns asked for), refused when it declares more than ``max_bytes``."""
        import pyarrow as pa

        if self.declared_bytes > max_bytes:
            raise InputError(f"{_label(self.label)} holds {fmt_bytes(self.declared_bytes)} of data, over the "
                             f"{fmt_bytes(max_bytes)} limit for it.")
        parts = [b for _, b in self.batches()]
        schema = parts[0].schema if parts else self._empty_schema()
        try:
            return pa.Table.from_batches(parts, schema=schema)
        except Exception as exc:
            raise InputError(f"{_label(self.label)} could not be read ({_reason(exc)}).") from exc

    def _empty_schema(self) -> Any:
        import pyarrow as pa

        if self.columns is None:
            return self.schema
        return pa.schema([self.schema.field(c) for c in self.columns])

    def locate(self, row: int) -> tuple[int, int]:
        """(group, row within it) of table row ``row``."""
        import bisect

        starts = [g.start for g in self.groups]
        gi = bisect.bisect_right(starts, row) - 1
        if not 0 <= row < self.num_rows or gi < 0:
            raise InputError(f"Row {row} is not in {_label(self.label).lower()}.")
        return gi, row - self.groups[gi].start

    def row_values(self, row: int, column: str) -> Any:
        """The value of ``column`` in table row ``row`` (a pyarrow scalar), reading only its group, batch by batch."""
        return self.take([row], column)[row]

    def take(self, rows: Sequence[int], column: str) -> dict[int, Any]:
        """``{row: value of column}`` for ``rows``: each group holding one is read once, batch by batch,
        and only up to the last row wanted in it (never more than the batches that hold them)."""
        by_group: dict[int, list[int]] = {}
        for row in rows:
            gi, _ = self.locate(int(row))
            by_group.setdefault(gi, []).append(int(row))
        out: dict[int, Any] = {}
        for gi in sorted(by_group):
            wanted = sorted(set(by_group[gi]))
            last = wanted[-1]
            for start, batch in self.batches([gi]):
                stop = start + batch.num_rows
                col = batch.column(column)
                for row in wanted:
                    if start <= row < stop:
                        out[row] = col[row - start]
                if stop > last:
                    break
            missing = [r for r in wanted if r not in out]
            if missing:
                raise InputError(f"{_label(self.label)} is damaged: row {missing[0]} is missing.")
        return out


# --------------------------------------------------------------------------- values


def plain(table: Any, max_bytes: int, label: str = "") -> Any:
    """``table`` with its dictionary columns decoded, refused when they would expand past ``max_bytes``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    total = 0
    cols = []
    fields = []
    for i, name in enumerate(table.column_names):
        col = table.column(name)
        fld = table.schema.field(i)
        if pa.types.is_dictionary(col.type):
            for chunk in col.chunks:
                if _binary(chunk.type.value_type) and len(chunk) and len(chunk.dictionary):
                    lengths = pc.binary_length(chunk.dictionary).fill_null(0)
                    total += int(pc.sum(pc.take(lengths, chunk.indices.fill_null(0))).as_py() or 0)
            if total > max_bytes:
                raise InputError(f"{_label(label)} repeats its values to more than {fmt_bytes(max_bytes)}.")
            fld = fld.with_type(col.type.value_type)
            col = col.cast(col.type.value_type)
        cols.append(col)
        fields.append(fld)
    return pa.Table.from_arrays(cols, schema=pa.schema(fields, metadata=table.schema.metadata))


# --------------------------------------------------------------------------- Parquet


def _parquet_footer(source: Any, label: str) -> None:
    """Check the footer's declared length before pyarrow parses it."""
    size = source.size()
    if size < 12:
        raise InputError(f"{_label(label)} is not a Parquet file (too short).")
    source.seek(size - 8)
    tail = source.read(8)
    if tail[4:] != b"PAR1":
        raise InputError(f"{_label(label)} is not a Parquet file (no PAR1 footer).")
    (footer,) = struct.unpack("<i", tail[:4])
    if footer <= 0 or footer > size - 12:
        raise InputError(f"{_label(label)} is damaged: its footer length is impossible.")
    if footer > MAX_FOOTER_BYTES:
        raise InputError(f"{_label(label)} has a footer of {fmt_bytes(footer)}, over the "
                         f"{fmt_bytes(MAX_FOOTER_BYTES)} limit: rewrite it with fewer row groups or columns.")
    source.seek(0)


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def _zigzag(n: int) -> int:
    return (n >> 1) ^ -(n & 1)


def _skip(buf: bytes, pos: int, ctype: int, depth: int = 0) -> int:
    """Skip one Thrift compact value of type ``ctype``."""
    if depth > 16:
        raise ValueError("nested too deeply")
    if ctype in (1, 2):
        return pos
    if ctype == 3:
        return pos + 1
    if ctype in (4, 5, 6):
        return _varint(buf, pos)[1]
    if ctype == 7:
        return pos + 8
    if ctype == 8:
        n, pos = _varint(buf, pos)
        return pos + n
    if ctype in (9, 10):
        head = buf[pos]
        pos += 1
        n, et = head >> 4, head & 0x0F
        if n == 15:
            n, pos = _varint(buf, pos)
        for _ in range(n):
            pos = _skip(buf, pos, et, depth + 1)
        return pos
    if ctype == 11:
        n, pos = _varint(buf, pos)
        if n:
            kv = buf[pos]
            pos += 1
            for _ in range(n):
                pos = _skip(buf, pos, kv >> 4, depth + 1)
                pos = _skip(buf, pos, kv & 0x0F, depth + 1)
        return pos
    if ctype == 12:
        return _struct(buf, pos, depth + 1)[1]
    raise ValueError(f"unknown thrift type {ctype}")


def _struct(buf: bytes, pos: int, depth: int = 0) -> tuple[dict[int, int], int]:
    """A Thrift compact struct: its top-level integer fields {id: value} and the position after it."""
    fields: dict[int, int] = {}
    last = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated struct")
        head = buf[pos]
        pos += 1
        if head == 0:
            return fields, pos
        ctype, delta = head & 0x0F, head >> 4
        if delta:
            fid = last + delta
        else:
            raw, pos = _varint(buf, pos)
            fid = _zigzag(raw)
        last = fid
        if ctype in (4, 5, 6):
            raw, pos = _varint(buf, pos)
            fields[fid] = _zigzag(raw)
        elif ctype == 12 and depth == 0:
            sub, pos = _struct(buf, pos, depth + 1)
            for k, v in sub.items():
                fields[100 * fid + k] = v  # nested header fields: 501 = data page num_values, ...
        else:
            pos = _skip(buf, pos, ctype, depth)


def _page_header(source: Any, pos: int, end: int, label: str) -> tuple[dict[int, int], int]:
    """The page header at ``pos`` (read 4 KB first, more only when it is longer: statistics can be)."""
    for size in (4096, 64 * 1024, 2**20, 16 * 2**20):
        source.seek(pos)
        head = source.read(min(size, end - pos))
        try:
            return _struct(head, 0)
        except (ValueError, IndexError) as exc:
            short = isinstance(exc, IndexError) or "truncated" in str(exc)
            if len(head) < min(size, end - pos) or size == 16 * 2**20 or not short:
                raise InputError(f"{_label(label)} is damaged: a page header can't be read ({exc}).") from exc
    raise AssertionError("unreachable")


def _check_pages(source: Any, chunk: Any, label: str, max_page: int = MAX_PAGE_BYTES) -> None:
    """Walk the page headers of one column chunk: no page may declare more than its chunk did."""
    start = chunk.data_page_offset
    if chunk.has_dictionary_page and chunk.dictionary_page_offset is not None and chunk.dictionary_page_offset > 0:
        start = min(start, chunk.dictionary_page_offset)
    end = start + chunk.total_compressed_size
    size = source.size()
    if start < 0 or end > size:
        raise InputError(f"{_label(label)} is damaged: a column chunk lies outside the file.")
    pos = start
    declared = chunk.total_uncompressed_size
    total = 0
    pages = 0
    while pos < end:
        fields, used = _page_header(source, pos, end, label)
        unc, comp = fields.get(2, -1), fields.get(3, -1)
        if unc < 0 or comp < 0:
            raise InputError(f"{_label(label)} is damaged: a page header has no sizes.")
        # Data pages hold whole values, so their cap bounds one value; a dictionary page is read once per
        # column chunk and kept as it is (never expanded per row), bounded by the chunk's own limit.
        if fields.get(1) != 2 and unc > max_page:
            raise InputError(f"{_label(label)} has a page of {fmt_bytes(unc)} decoded, over the "
                             f"{fmt_bytes(max_page)} limit per page.")
        total += unc + used
        pages += 1
        if total > declared + 1024 + 64 * pages:
            raise InputError(f"{_label(label)} is damaged: its pages hold more ({fmt_bytes(total)}) than its "
                             f"metadata declares ({fmt_bytes(declared)}).")
        pos += used + comp


def _open_parquet(source: Any, label: str, columns: Optional[list[str]], null_column: Optional[str],
                  max_rows: Optional[int], max_group_bytes: int, check_pages: bool,
                  max_page: int = MAX_PAGE_BYTES) -> TableReader:
    import pyarrow.parquet as pq

    _parquet_footer(source, label)
    try:
        pf0 = pq.ParquetFile(source, thrift_string_size_limit=MAX_FOOTER_BYTES, thrift_container_size_limit=10**6)
        meta = pf0.metadata
        schema = pf0.schema_arrow
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{_label(label)} is not a readable Parquet file ({_reason(exc)}).") from exc
    if meta.num_columns > MAX_COLUMNS:
        raise InputError(f"{_label(label)} has {meta.num_columns:,} columns; the limit is {MAX_COLUMNS:,}.")
    if meta.num_row_groups > MAX_GROUPS:
        raise InputError(f"{_label(label)} has {meta.num_row_groups:,} row groups; the limit is {MAX_GROUPS:,}: "
                         "rewrite it with bigger row groups.")
    if max_rows is not None and meta.num_rows > max_rows:
        raise InputError(f"{_label(label)} declares {meta.num_rows:,} rows; the limit is {max_rows:,}.")
    if columns is not None:
        missing = [c for c in columns if c not in schema.names]
        if missing:
            raise InputError(f"{_label(label)} has no column {missing[0]!r}: not the columns expected.")
    binary_leaves = set(_leaves(schema, columns))
    groups: list[Group] = []
    start = 0
    for gi in range(meta.num_row_groups):
        rg = meta.row_group(gi)
        if rg.num_rows < 0:
            raise InputError(f"{_label(label)} is damaged: a row group has a negative row count.")
        nbytes = 0
        nulls: Optional[int] = None
        for ci in range(rg.num_columns):
            chunk = rg.column(ci)
            path = chunk.path_in_schema
            top = path.split(".")[0]
            if columns is not None and top not in columns:
                continue
            unc = chunk.total_uncompressed_size
            if unc < 0 or chunk.total_compressed_size < 0:
                raise InputError(f"{_label(label)} is damaged: a column declares a negative size.")
            if unc > max_group_bytes:
                raise InputError(
                    f"{_label(label)} has a row group whose column {path!r} is {fmt_bytes(unc)} decoded, over "
                    f"the {fmt_bytes(max_group_bytes)} limit: rewrite it with smaller row groups "
                    "(pyarrow: row_group_size=...).")
            if path in binary_leaves and "DELTA_BYTE_ARRAY" in (chunk.encodings or ()):
                raise InputError(f"{_label(label)} stores {path!r} with DELTA_BYTE_ARRAY (shared prefixes), which "
                                 "can expand without bound; rewrite it with pyarrow's default encodings.")
            if check_pages:
                _check_pages(source, chunk, label, max_page)
            nbytes += unc
            if null_column is not None and path == null_column:
                st = chunk.statistics
                if st is not None and getattr(st, "has_null_count", False):
                    nulls = int(st.null_count)
        # Every row costs offsets and validity bits, whatever the pages declare.
        nbytes = max(nbytes, rg.num_rows * 8 * max(1, len(columns) if columns is not None else rg.num_columns))
        groups.append(Group(rows=int(rg.num_rows), nbytes=int(nbytes), nulls=nulls, start=start))
        start += int(rg.num_rows)
    try:
        pf = pq.ParquetFile(source, metadata=meta, read_dictionary=sorted(binary_leaves) or None,
                            buffer_size=1 << 20, pre_buffer=False)
    except Exception as exc:
        raise InputError(f"{_label(label)} is not a readable Parquet file ({_reason(exc)}).") from exc
    return TableReader("parquet", label, source, schema, groups, columns, BATCH_BYTES, parquet=pf)


# --------------------------------------------------------------------------- Arrow IPC (flatbuffers)


class _FB:
    """A flatbuffer table at ``pos`` in ``buf`` (just what the Arrow footer and messages need)."""

    def __init__(self, buf: memoryview, pos: int):
        self.buf = buf
        self.pos = pos
        (soff,) = struct.unpack_from("<i", buf, pos)
        self.vt = pos - soff
        self.vt_len = struct.unpack_from("<H", buf, self.vt)[0]
        if self.vt < 0 or self.vt + self.vt_len > len(buf) or self.vt_len < 4:
            raise ValueError("bad vtable")

    def _off(self, i: int) -> int:
        o = 4 + 2 * i
        return 0 if o + 2 > self.vt_len else struct.unpack_from("<H", self.buf, self.vt + o)[0]

    def scalar(self, i: int, fmt: str, default: int = 0) -> int:
        o = self._off(i)
        return default if o == 0 else struct.unpack_from("<" + fmt, self.buf, self.pos + o)[0]

    def table(self, i: int) -> Optional["_FB"]:
        o = self._off(i)
        if o == 0:
            return None
        p = self.pos + o
        return _FB(self.buf, p + struct.unpack_from("<I", self.buf, p)[0])

    def structs(self, i: int, size: int, fmt: str, limit: int) -> list[tuple]:
        o = self._off(i)
        if o == 0:
            return []
        p = self.pos + o
        start = p + struct.unpack_from("<I", self.buf, p)[0]
        (n,) = struct.unpack_from("<I", self.buf, start)
        if n > limit or start + 4 + n * size > len(self.buf):
            raise ValueError("vector too long")
        return [struct.unpack_from("<" + fmt, self.buf, start + 4 + k * size) for k in range(n)]


def _root(buf: bytes) -> _FB:
    view = memoryview(buf)
    return _FB(view, struct.unpack_from("<I", view, 0)[0])


@dataclass
class _Batch:
    rows: int
    nodes: list[tuple[int, int]] = field(default_factory=list)  # (length, null count) per field node
    decoded: int = 0


def _read_message(source: Any, offset: int, meta_len: int, body_len: int, size: int, label: str) -> _Batch:
    """Rows, field nodes and decoded body bytes of the record batch (or dictionary batch) at ``offset``."""
    if meta_len <= 0 or meta_len > MAX_MESSAGE_BYTES or body_len < 0 or offset < 0 \
            or offset + meta_len + body_len > size:
        raise ValueError("a record batch lies outside the file")
    source.seek(offset)
    head = source.read(meta_len)
    pos = 4
    (first,) = struct.unpack_from("<I", head, 0)
    if first == 0xFFFFFFFF:
        pos = 8
    message = _root(head[pos:])
    header_type = message.scalar(1, "B")
    header = message.table(2)
    if header is None or header_type not in (2, 3):
        raise ValueError("not a record batch")
    if header_type == 2:  # a dictionary batch: its data is a record batch
        header = header.table(1)
        if header is None:
            raise ValueError("an empty dictionary batch")
    rows = header.scalar(0, "q")
    nodes = header.structs(1, 16, "qq", 10 * MAX_COLUMNS)
    buffers = header.structs(2, 16, "qq", 30 * MAX_COLUMNS)
    compressed = header.table(3) is not None
    body = offset + meta_len
    decoded = 0
    for boff, blen in buffers:
        if boff < 0 or blen < 0 or boff + blen > body_len:
            raise ValueError("a buffer lies outside its record batch")
        if compressed and blen >= 8:
            source.seek(body + boff)
            (unc,) = struct.unpack("<q", source.read(8))
            decoded += blen - 8 if unc == -1 else unc
        else:
            decoded += blen
    if rows < 0 or any(n < 0 or nc < 0 or nc > n for n, nc in nodes):
        raise ValueError("negative lengths")
    return _Batch(int(rows), [(int(a), int(b)) for a, b in nodes], int(decoded))


def _node_count(t: Any) -> int:
    return 1 + sum(_node_count(t.field(i).type) for i in range(getattr(t, "num_fields", 0) or 0))


def _node_index(schema: Any, path: str) -> Optional[int]:
    """Index of the field node of a dotted path (``image`` or ``image.bytes``) in a record batch."""
    parts = path.split(".")
    index = 0
    fields = list(schema)
    for depth, name in enumerate(parts):
        for f in fields:
            if f.name == name:
                if depth == len(parts) - 1:
                    return index
                index += 1
                fields = [f.type.field(i) for i in range(getattr(f.type, "num_fields", 0) or 0)]
                break
            index += _node_count(f.type)
        else:
            return None
    return None


def _open_ipc(source: Any, label: str, columns: Optional[list[str]], null_column: Optional[str],
              max_rows: Optional[int], max_group_bytes: int) -> TableReader:
    import pyarrow as pa

    size = source.size()
    source.seek(0)
    if size < 18 or source.read(6) != b"ARROW1":
        raise InputError(f"{_label(label)} is not an Arrow IPC file (the random-access format; streams are not "
                         "supported): write it with pyarrow.ipc.new_file or feather.write_feather.")
    source.seek(size - 10)
    tail = source.read(10)
    (footer_len,) = struct.unpack_from("<i", tail, 0)
    if tail[4:] != b"ARROW1" or footer_len <= 0 or footer_len > size - 18:
        raise InputError(f"{_label(label)} is damaged: its footer can't be found.")
    if footer_len > MAX_FOOTER_BYTES:
        raise InputError(f"{_label(label)} has a footer of {fmt_bytes(footer_len)}, over the "
                         f"{fmt_bytes(MAX_FOOTER_BYTES)} limit.")
    source.seek(size - 10 - footer_len)
    footer_bytes = source.read(footer_len)
    try:
        footer = _root(footer_bytes)
        dictionaries = footer.structs(2, 24, "qi4xq", MAX_GROUPS)
        blocks = footer.structs(3, 24, "qi4xq", MAX_GROUPS)
    except (ValueError, struct.error, IndexError) as exc:
        raise InputError(f"{_label(label)} is damaged: its footer can't be read ({exc}).") from exc
    try:
        schema = pa.ipc.open_file(source).schema
        included = None if columns is None else [schema.get_field_index(c) for c in columns if c in schema.names]
        source.seek(0)
        reader = pa.ipc.open_file(source, options=pa.ipc.IpcReadOptions(included_fields=included, use_threads=False))
    except Exception as exc:
        raise InputError(f"{_label(label)} is not a readable Arrow IPC file ({_reason(exc)}).") from exc
    if sum(_node_count(f.type) for f in schema) > MAX_COLUMNS:
        raise InputError(f"{_label(label)} has more than {MAX_COLUMNS:,} columns.")
    if columns is not None:
        missing = [c for c in columns if c not in schema.names]
        if missing:
            raise InputError(f"{_label(label)} has no column {missing[0]!r}: not the columns expected.")
    if len(blocks) != reader.num_record_batches:
        raise InputError(f"{_label(label)} is damaged: its footer and its reader disagree.")
    null_node = _node_index(schema, null_column) if null_column else None
    parent_node = _node_index(schema, null_column.split(".")[0]) if null_column and "." in null_column else None
    try:
        dict_bytes = sum(_read_message(source, o, m, b, size, label).decoded for o, m, b in dictionaries)
        if dict_bytes > max_group_bytes:
            raise InputError(f"{_label(label)} has dictionaries of {fmt_bytes(dict_bytes)} decoded, over the "
                             f"{fmt_bytes(max_group_bytes)} limit.")
        groups: list[Group] = []
        start = 0
        for o, m, b in blocks:
            info = _read_message(source, o, m, b, size, label)
            if max_rows is not None and start + info.rows > max_rows:
                raise InputError(f"{_label(label)} declares more than {max_rows:,} rows; the limit is {max_rows:,}.")
            if info.decoded > max_group_bytes:
                raise InputError(f"{_label(label)} has a record batch of {fmt_bytes(info.decoded)} decoded, over the "
                                 f"{fmt_bytes(max_group_bytes)} limit: write it in smaller batches.")
            nulls = None
            if null_node is not None and null_node < len(info.nodes):
                nulls = info.nodes[null_node][1]
                if parent_node is not None and parent_node < len(info.nodes):
                    nulls = max(nulls, info.nodes[parent_node][1])
            groups.append(Group(rows=info.rows, nbytes=max(info.decoded + dict_bytes, info.rows * 8),
                                nulls=nulls, start=start))
            start += info.rows
    except InputError:
        raise
    except (ValueError, struct.error, IndexError) as exc:
        raise InputError(f"{_label(label)} is damaged: a record batch's metadata can't be read ({exc}).") from exc
    budget = max(BATCH_BYTES, max_group_bytes)
    return TableReader("arrow", label, source, schema, groups, columns, budget, ipc=reader)


# --------------------------------------------------------------------------- the entry point


def open_table(location: str | os.PathLike[str], kind: str, *, label: str = "", columns: Optional[Sequence[str]] = None,
               null_column: Optional[str] = None, max_rows: Optional[int] = None,
               max_group_bytes: int = 512 * 2**20, check_pages: bool = True,
               batch_bytes: int = BATCH_BYTES, max_page_bytes: Optional[int] = None) -> TableReader:
    """Open a Parquet (``kind="parquet"``) or Arrow IPC (``"arrow"``) table, checked from its metadata.

    ``columns``: the top-level columns that will be read (None: all); only
    those are sized and decoded. ``null_column``: a dotted column path whose
    declared null count each :class:`Group` reports (to skip rows that hold
    nothing without reading them). ``max_rows``: refuse a table declaring more
    rows. ``max_group_bytes``: refuse a row group / record batch whose columns
    declare more decoded bytes (one column chunk, for Parquet). ``batch_bytes``:
    the declared bytes one Parquet batch may hold (small for one-picture fetches).
    ``max_page_bytes``: the decoded size one Parquet page may declare (a value never
    spans pages, so this bounds one value; default :data:`MAX_PAGE_BYTES`). Raises
    :class:`InputError` for anything unreadable or over a limit.
    """
    label = label or f"The table {os.path.basename(os.fspath(location))}"
    source = open_input(location, memory_map=(kind == "arrow" and "://" not in os.fspath(location)))
    try:
        cols = list(columns) if columns is not None else None
        if kind == "parquet":
            reader = _open_parquet(source, label, cols, null_column, max_rows, max_group_bytes, check_pages,
                                   int(max_page_bytes or MAX_PAGE_BYTES))
            reader.budget = int(batch_bytes)
            return reader
        if kind == "arrow":
            return _open_ipc(source, label, cols, null_column, max_rows, max_group_bytes)
        raise InputError(f"Unknown table kind {kind!r}.")
    except InputError:
        source.close()
        raise
    except MemoryError as exc:
        source.close()
        raise InputError(f"{_label(label)} needs more memory to open than is allowed.") from exc
    except Exception as exc:
        source.close()
        raise InputError(f"{_label(label)} could not be read ({_reason(exc)}).") from exc
