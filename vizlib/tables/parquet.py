"""Parquet within budgets: the footer length, row groups, column chunks and page headers, before decoding.

Page headers are Thrift compact structs; the few fields needed (page type and sizes) are read here
without a Thrift library, so a page cannot declare more than its column chunk did.
"""

from __future__ import annotations

import struct
from typing import Any, Optional

from vizlib import tables
from vizlib.errors import InputError
from vizlib.tables import Group, TableReader, _label, _leaves, _reason
from vizlib.units import fmt_bytes



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
    if footer > tables.MAX_FOOTER_BYTES:
        raise InputError(f"{_label(label)} has a footer of {fmt_bytes(footer)}, over the "
                         f"{fmt_bytes(tables.MAX_FOOTER_BYTES)} limit: rewrite it with fewer row groups or columns.")
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


def _check_pages(source: Any, chunk: Any, label: str, max_page: Optional[int] = None) -> None:
    """Walk the page headers of one column chunk: no page may declare more than its chunk did."""
    max_page = tables.MAX_PAGE_BYTES if max_page is None else max_page
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


def open_parquet(source: Any, label: str, columns: Optional[list[str]], null_column: Optional[str],
                  max_rows: Optional[int], max_group_bytes: int, check_pages: bool,
                  max_page: Optional[int] = None) -> TableReader:
    """A :class:`~vizlib.tables.TableReader` over a Parquet file, every chunk of ``columns`` sized from the footer
    (and its page headers, with ``check_pages``) before anything is decoded."""
    import pyarrow.parquet as pq

    _parquet_footer(source, label)
    try:
        pf0 = pq.ParquetFile(source, thrift_string_size_limit=tables.MAX_FOOTER_BYTES, thrift_container_size_limit=10**6)
        meta = pf0.metadata
        schema = pf0.schema_arrow
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{_label(label)} is not a readable Parquet file ({_reason(exc)}).") from exc
    if meta.num_columns > tables.MAX_COLUMNS:
        raise InputError(f"{_label(label)} has {meta.num_columns:,} columns; the limit is {tables.MAX_COLUMNS:,}.")
    if meta.num_row_groups > tables.MAX_GROUPS:
        raise InputError(f"{_label(label)} has {meta.num_row_groups:,} row groups; the limit is {tables.MAX_GROUPS:,}: "
                         "rewrite it with bigger row groups.")
    if max_rows is not None and meta.num_rows > max_rows:
        raise InputError(f"{_label(label)} declares {meta.num_rows:,} rows; the limit is {max_rows:,}.")
    if columns is not None:
        missing = [c for c in columns if c not in schema.names]
        if missing:
            raise InputError(f"{_label(label)} has no column {missing[0]!r}: not the columns expected.")
    binary_leaves = set(_leaves(schema, columns))
    # The leaf columns read, found once: each row group then costs only those.
    wanted = [ci for ci in range(meta.num_columns)
              if columns is None or pf0.schema.column(ci).path.split(".")[0] in columns]
    groups: list[Group] = []
    start = 0
    for gi in range(meta.num_row_groups):
        rg = meta.row_group(gi)
        if rg.num_rows < 0:
            raise InputError(f"{_label(label)} is damaged: a row group has a negative row count.")
        nbytes = 0
        nulls: Optional[int] = None
        if rg.num_columns != meta.num_columns:
            raise InputError(f"{_label(label)} is damaged: a row group has another number of columns.")
        for ci in wanted:
            chunk = rg.column(ci)
            path = chunk.path_in_schema
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
    return TableReader("parquet", label, source, schema, groups, columns, tables.BATCH_BYTES, parquet=pf)
