"""Arrow IPC files within budgets: the footer and every record batch's metadata parsed from their
flatbuffers (rows, field nodes, buffer sizes, the uncompressed length of compressed buffers) before a
batch is read.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, Optional

from vizlib import tables
from vizlib.errors import InputError
from vizlib.tables import Group, TableReader, _label, _reason
from vizlib.units import fmt_bytes



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
    compressed: bool = False


def _read_message(source: Any, offset: int, meta_len: int, body_len: int, size: int, label: str) -> _Batch:
    """Rows, field nodes and decoded body bytes of the record batch (or dictionary batch) at ``offset``."""
    if meta_len <= 0 or meta_len > tables.MAX_MESSAGE_BYTES or body_len < 0 or offset < 0 \
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
    nodes = header.structs(1, 16, "qq", 10 * tables.MAX_COLUMNS)
    buffers = header.structs(2, 16, "qq", 30 * tables.MAX_COLUMNS)
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
    return _Batch(int(rows), [(int(a), int(b)) for a, b in nodes], int(decoded), compressed)


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


def open_ipc(source: Any, label: str, columns: Optional[list[str]], null_column: Optional[str],
             max_rows: Optional[int], max_group_bytes: int, mapped: bool = False) -> TableReader:
    """A :class:`~vizlib.tables.TableReader` over an Arrow IPC file, every batch sized from its metadata.

    ``mapped``: the file is memory-mapped, so uncompressed buffers are the file's own
    bytes (read in place, nothing allocated); compressed ones are decoded, and sized."""
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
    if footer_len > tables.MAX_FOOTER_BYTES:
        raise InputError(f"{_label(label)} has a footer of {fmt_bytes(footer_len)}, over the "
                         f"{fmt_bytes(tables.MAX_FOOTER_BYTES)} limit.")
    source.seek(size - 10 - footer_len)
    footer_bytes = source.read(footer_len)
    try:
        footer = _root(footer_bytes)
        dictionaries = footer.structs(2, 24, "qi4xq", tables.MAX_GROUPS)
        blocks = footer.structs(3, 24, "qi4xq", tables.MAX_GROUPS)
    except (ValueError, struct.error, IndexError) as exc:
        raise InputError(f"{_label(label)} is damaged: its footer can't be read ({exc}).") from exc
    try:
        schema = pa.ipc.open_file(source).schema
        included = None if columns is None else [schema.get_field_index(c) for c in columns if c in schema.names]
        source.seek(0)
        reader = pa.ipc.open_file(source, options=pa.ipc.IpcReadOptions(included_fields=included, use_threads=False))
    except Exception as exc:
        raise InputError(f"{_label(label)} is not a readable Arrow IPC file ({_reason(exc)}).") from exc
    if sum(_node_count(f.type) for f in schema) > tables.MAX_COLUMNS:
        raise InputError(f"{_label(label)} has more than {tables.MAX_COLUMNS:,} columns.")
    if columns is not None:
        missing = [c for c in columns if c not in schema.names]
        if missing:
            raise InputError(f"{_label(label)} has no column {missing[0]!r}: not the columns expected.")
    if len(blocks) != reader.num_record_batches:
        raise InputError(f"{_label(label)} is damaged: its footer and its reader disagree.")
    null_node = _node_index(schema, null_column) if null_column else None
    parent_node = _node_index(schema, null_column.split(".")[0]) if null_column and "." in null_column else None
    try:
        dict_infos = [_read_message(source, o, m, b, size, label) for o, m, b in dictionaries]
        dict_bytes = sum(d.decoded for d in dict_infos)
        dict_alloc = sum(d.decoded for d in dict_infos if d.compressed or not mapped)
        if dict_alloc > max_group_bytes:
            raise InputError(f"{_label(label)} has dictionaries of {fmt_bytes(dict_bytes)} decoded, over the "
                             f"{fmt_bytes(max_group_bytes)} limit.")
        groups: list[Group] = []
        start = 0
        for o, m, b in blocks:
            info = _read_message(source, o, m, b, size, label)
            if max_rows is not None and start + info.rows > max_rows:
                raise InputError(f"{_label(label)} declares more than {max_rows:,} rows; the limit is {max_rows:,}.")
            alloc = (info.decoded if info.compressed or not mapped else 0) + dict_alloc
            if alloc > max_group_bytes:
                raise InputError(f"{_label(label)} has a record batch of {fmt_bytes(alloc)} decoded, over the "
                                 f"{fmt_bytes(max_group_bytes)} limit: write it in smaller batches.")
            nulls = None
            if null_node is not None and null_node < len(info.nodes):
                nulls = info.nodes[null_node][1]
                if parent_node is not None and parent_node < len(info.nodes):
                    nulls = max(nulls, info.nodes[parent_node][1])
            groups.append(Group(rows=info.rows, nbytes=max(info.decoded + dict_bytes, info.rows * 8),
                                nulls=nulls, start=start, alloc=alloc))
            start += info.rows
    except InputError:
        raise
    except (ValueError, struct.error, IndexError) as exc:
        raise InputError(f"{_label(label)} is damaged: a record batch's metadata can't be read ({exc}).") from exc
    budget = max(tables.BATCH_BYTES, max_group_bytes)
    return TableReader("arrow", label, source, schema, groups, columns, budget, ipc=reader)
