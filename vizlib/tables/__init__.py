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
file and what to do. :func:`open_table` is the entry; :mod:`vizlib.tables.parquet`
and :mod:`vizlib.tables.ipc` size each format from its metadata.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterator, Optional, Sequence

from vizlib.errors import InputError
from vizlib.units import fmt_bytes

__all__ = ["BATCH_BYTES", "Group", "TableReader", "open_input", "open_table", "plain"]

#: Decoded bytes one batch may hold (what a reader keeps in memory at a time).
BATCH_BYTES = 64 * 2**20
#: Largest Parquet footer / Arrow footer parsed (bytes).
MAX_FOOTER_BYTES = 16 * 2**20
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
    alloc: Optional[int] = None  # bytes reading it allocates (None: nbytes; 0 for uncompressed mapped Arrow)


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
        self._starts: Optional[list[int]] = None

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
                    alloc = g.nbytes if g.alloc is None else g.alloc
                    if alloc > self.budget:
                        raise InputError(
                            f"{_label(self.label)} has a record batch of {fmt_bytes(alloc)} decoded, over the "
                            f"{fmt_bytes(self.budget)} a reader holds at a time: write it in smaller batches "
                            "(pyarrow: max_chunksize=...).")
                    batch = self._ipc.get_batch(gi)
                    if batch.num_rows != g.rows:
                        raise InputError(f"{_label(self.label)} is damaged: a record batch has another row count "
                                         "than its metadata says.")
                    batch.validate(full=True)  # offsets inside their buffers before any value is touched
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

        if self._starts is None:
            self._starts = [g.start for g in self.groups]
        gi = bisect.bisect_right(self._starts, row) - 1
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
            from vizlib.tables.parquet import open_parquet

            reader = open_parquet(source, label, cols, null_column, max_rows, max_group_bytes, check_pages,
                                   int(max_page_bytes or MAX_PAGE_BYTES))
            reader.budget = int(batch_bytes)
            return reader
        if kind == "arrow":
            from vizlib.tables.ipc import open_ipc

            return open_ipc(source, label, cols, null_column, max_rows, max_group_bytes,
                            mapped="://" not in os.fspath(location))
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
