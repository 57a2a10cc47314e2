"""The wire format between the server and an uploaded model's process: JSON and raw arrays, no pickle.

One message is a length-prefixed JSON header, then one length-prefixed frame
of raw bytes per numpy array; the header lists each array's dtype and shape.
The receiver checks every declared array (known dtype, rank, total size)
*before* allocating, then reads each frame straight into its array. Both
sides use these two functions; each supplies how bytes move (a blocking
socket in the child, a polling, deadline-checking reader in the parent).
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any, Callable, Sequence

import numpy as np

LEN = struct.Struct("<Q")
#: dtypes a receiver accepts.
DTYPES = frozenset({"<f4", "<f8", "<f2", "<i4", "<i8", "|u1", "|b1"})


class Malformed(ValueError):
    """The bytes received are not a well-formed message (or declare more than the receiver takes)."""


def byte_view(arr: np.ndarray) -> memoryview:
    return memoryview(arr.reshape(-1).view(np.uint8))


def check_specs(specs: Any, max_bytes: int) -> list[tuple[str, tuple]]:
    """Declared arrays ``[[dtype, shape], ...]`` -> checked ``(dtype, shape)``; Malformed when off or too big."""
    if not isinstance(specs, list) or len(specs) > 10_000:
        raise Malformed("it sent a malformed reply")
    out, total = [], 0
    for spec in specs:
        if (not isinstance(spec, list) or len(spec) != 2 or spec[0] not in DTYPES
                or not isinstance(spec[1], list) or len(spec[1]) > 8
                or not all(type(d) is int and 0 <= d < 2**40 for d in spec[1])):
            raise Malformed("it sent a malformed reply")
        total += int(np.dtype(spec[0]).itemsize) * math.prod(spec[1])
        if total > max_bytes:
            raise Malformed(f"it sent more than {max_bytes / 2**20:.0f} MB")
        out.append((spec[0], tuple(spec[1])))
    return out


def send(write: Callable[[memoryview], None], header: dict, arrays: Sequence[np.ndarray] = ()) -> None:
    """Write one message with ``write`` (which must write all it is given)."""
    arrays = [np.ascontiguousarray(a) for a in arrays]
    data = json.dumps(dict(header, arrays=[[a.dtype.str, list(a.shape)] for a in arrays]),
                      allow_nan=False).encode("utf-8")
    write(memoryview(LEN.pack(len(data)) + data))
    for arr in arrays:
        view = byte_view(arr)
        write(memoryview(LEN.pack(len(view))))
        if len(view):
            write(view)


def receive(read_into: Callable[[memoryview], None], *, max_header: int,
            max_bytes: int) -> tuple[dict, list[np.ndarray]]:
    """Read one message with ``read_into`` (which fills the whole view, or raises at end of stream)."""
    head = bytearray(LEN.size)
    read_into(memoryview(head))
    n = LEN.unpack(head)[0]
    if n > max_header:
        raise Malformed("it sent a malformed reply")
    raw = bytearray(n)
    read_into(memoryview(raw))
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise Malformed("it sent a malformed reply") from exc
    if not isinstance(header, dict):
        raise Malformed("it sent a malformed reply")
    arrays = []
    for dtype, shape in check_specs(header.pop("arrays", []), max_bytes):
        arr = np.empty(shape, dtype=np.dtype(dtype))
        size = bytearray(LEN.size)
        read_into(memoryview(size))
        if LEN.unpack(size)[0] != arr.nbytes:
            raise Malformed("it sent a malformed reply")
        if arr.nbytes:
            read_into(byte_view(arr))
        arrays.append(arr)
    return header, arrays
