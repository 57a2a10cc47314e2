"""A thread-safe cache bounded by bytes, not by entries.

A cache that counts entries bounds nothing when entries differ in size: the
activations of one image are 0.1 MB for the bundled model and ~256 MB for an
uploaded model with a 1024x1024 input, so "24 entries" is anywhere between
2 MB and 6 GB. :class:`ByteLRU` holds at most ``max_bytes`` (each entry's
size measured when it is stored, see :func:`nbytes_of`), evicts the least
recently used entries first, and computes each missing key once even when
several sessions ask for it at the same time (:meth:`ByteLRU.get_or_compute`).

One instance is meant to be shared by every session of a server (e.g. made
once with ``st.cache_resource``), so the budget is a budget for the process::

    results = ByteLRU(512 * 2**20, name="activations")
    acts = results.get_or_compute((model_key, image_key, layers), lambda: forward(m, [img], layers))

Values are shared, not copied: treat what :meth:`~ByteLRU.get` returns as
read-only. No Streamlit here; the page decides where the instance lives.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import threading
from collections import OrderedDict
from typing import Any, Callable, Generic, Hashable, Optional, TypeVar

import numpy as np

__all__ = ["ByteLRU", "nbytes_of"]

V = TypeVar("V")

#: What an entry costs besides its value (key, bookkeeping): so a flood of tiny entries is bounded too.
ENTRY_OVERHEAD = 256
#: Containers deeper than this are counted by ``sys.getsizeof`` only.
_MAX_DEPTH = 16
_MISSING = object()


def _pil_nbytes(image: Any) -> Optional[int]:
    """Bytes of a PIL image's pixels (Pillow keeps 1, 2 or 4 bytes per pixel), or None if not one."""
    mode = getattr(image, "mode", None)
    size = getattr(image, "size", None)
    if not isinstance(mode, str) or not (isinstance(size, tuple) and len(size) == 2):
        return None
    if not hasattr(image, "getbands"):
        return None
    per_pixel = 1 if mode in ("1", "L", "P") else 2 if mode.startswith("I;16") else 4
    return int(size[0]) * int(size[1]) * per_pixel


def nbytes_of(value: Any) -> int:
    """Approximate bytes held by ``value``, looking inside containers.

    Counts numpy arrays (a view counts the array it views, once however many
    views share it), PIL images (their pixels), bytes and strings, objects with
    an integer ``nbytes`` or with ``shape`` and ``dtype`` (tensors), and
    recurses into tuples, lists, sets, dicts (keys and values) and dataclasses;
    anything else counts ``sys.getsizeof``. Shared objects are counted once.
    """
    seen: set[int] = set()

    def walk(obj: Any, depth: int) -> int:
        if id(obj) in seen:
            return 0
        seen.add(id(obj))
        if isinstance(obj, np.ndarray):
            root = obj
            while isinstance(root.base, np.ndarray):
                root = root.base
            if root is not obj:
                if id(root) in seen:
                    return 0
                seen.add(id(root))
            return int(root.nbytes)
        if isinstance(obj, (bytes, bytearray)):
            return len(obj)
        if isinstance(obj, memoryview):
            return obj.nbytes
        if isinstance(obj, str):
            return sys.getsizeof(obj)
        if obj is None or isinstance(obj, (bool, int, float, complex)):
            return sys.getsizeof(obj)
        pil = _pil_nbytes(obj)
        if pil is not None:
            return pil
        if depth >= _MAX_DEPTH:
            return sys.getsizeof(obj)
        if isinstance(obj, dict):
            return sys.getsizeof(obj) + sum(walk(k, depth + 1) + walk(v, depth + 1) for k, v in obj.items())
        if isinstance(obj, (list, tuple, set, frozenset)):
            return sys.getsizeof(obj) + sum(walk(v, depth + 1) for v in obj)
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            return sys.getsizeof(obj) + sum(walk(getattr(obj, f.name, None), depth + 1)
                                            for f in dataclasses.fields(obj))
        nbytes = getattr(obj, "nbytes", None)
        if isinstance(nbytes, int) and not isinstance(nbytes, bool):
            return nbytes
        shape, dtype = getattr(obj, "shape", None), getattr(obj, "dtype", None)
        itemsize = getattr(dtype, "itemsize", None) or getattr(dtype, "size", None)
        if shape is not None and isinstance(itemsize, int):
            try:
                return math.prod(int(d) for d in shape) * itemsize
            except (TypeError, ValueError):
                pass
        return sys.getsizeof(obj)

    return walk(value, 0)


class _Pending:
    """A computation in flight: later callers for the same key wait for it."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: Any = None
        self.error: Optional[BaseException] = None


class ByteLRU(Generic[V]):
    """A least-recently-used cache holding at most ``max_bytes`` (thread-safe).

    ``max_bytes``: the budget for all entries together (each entry also costs
    :data:`ENTRY_OVERHEAD`). ``max_entry_bytes``: larger values are returned by
    :meth:`get_or_compute` but never stored (default: ``max_bytes``), so one huge
    result cannot flush everything else. ``sizeof``: how an entry's size is
    measured when it is given none (default :func:`nbytes_of`). ``name`` labels
    the cache in :meth:`stats`.
    """

    def __init__(self, max_bytes: int, *, max_entry_bytes: Optional[int] = None,
                 sizeof: Callable[[Any], int] = nbytes_of, name: str = "") -> None:
        if max_bytes < 0:
            raise ValueError("max_bytes must be >= 0")
        self.max_bytes = int(max_bytes)
        self.max_entry_bytes = self.max_bytes if max_entry_bytes is None else min(int(max_entry_bytes), self.max_bytes)
        self.name = name
        self._sizeof = sizeof
        self._lock = threading.Lock()
        self._data: OrderedDict[Hashable, tuple[V, int]] = OrderedDict()
        self._pending: dict[Hashable, _Pending] = {}
        self._bytes = 0
        self.hits = self.misses = self.evictions = self.refused = 0

    # -- reading ---------------------------------------------------------

    def get(self, key: Hashable, default: Any = None) -> Any:
        """The value stored under ``key`` (now the most recently used), else ``default``."""
        with self._lock:
            item = self._data.get(key, _MISSING)
            if item is _MISSING:
                self.misses += 1
                return default
            self._data.move_to_end(key)
            self.hits += 1
            return item[0]

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._data

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)

    @property
    def nbytes(self) -> int:
        """Bytes held now (values plus :data:`ENTRY_OVERHEAD` each)."""
        with self._lock:
            return self._bytes

    def stats(self) -> dict[str, Any]:
        """Counters for logs and benchmarks: entries, bytes, budget, hits, misses, evictions, refused."""
        with self._lock:
            return {"name": self.name, "entries": len(self._data), "nbytes": self._bytes,
                    "max_bytes": self.max_bytes, "hits": self.hits, "misses": self.misses,
                    "evictions": self.evictions, "refused": self.refused}

    # -- writing ---------------------------------------------------------

    def put(self, key: Hashable, value: V, nbytes: Optional[int] = None) -> bool:
        """Store ``value`` under ``key``, evicting least recently used entries to stay in budget.

        ``nbytes`` is the value's size if the caller knows it (else it is measured).
        Returns False, storing nothing (and dropping an older value under ``key``),
        when the value alone is over ``max_entry_bytes``.
        """
        size = (self._sizeof(value) if nbytes is None else int(nbytes)) + ENTRY_OVERHEAD
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            if size > self.max_entry_bytes:
                self.refused += 1
                return False
            self._data[key] = (value, size)
            self._bytes += size
            while self._bytes > self.max_bytes and self._data:
                _, (_, dropped) = self._data.popitem(last=False)
                self._bytes -= dropped
                self.evictions += 1
            return True

    def pop(self, key: Hashable, default: Any = None) -> Any:
        """Remove ``key`` and return its value (else ``default``)."""
        with self._lock:
            item = self._data.pop(key, None)
            if item is None:
                return default
            self._bytes -= item[1]
            return item[0]

    def clear(self) -> None:
        """Drop every entry (computations in flight still finish and are stored)."""
        with self._lock:
            self._data.clear()
            self._bytes = 0

    def get_or_compute(self, key: Hashable, compute: Callable[[], V], nbytes: Optional[int] = None) -> V:
        """The value under ``key``, computing and storing it if missing -- once.

        While one caller computes ``key``, other callers asking for the same key
        wait for that result instead of computing it again (two sessions opening
        the same view run one forward pass). If ``compute`` raises, the waiting
        callers get the same exception and nothing is stored. A result over
        ``max_entry_bytes`` is returned but not stored.
        """
        with self._lock:
            item = self._data.get(key, _MISSING)
            if item is not _MISSING:
                self._data.move_to_end(key)
                self.hits += 1
                return item[0]
            pending = self._pending.get(key)
            owner = pending is None
            if owner:
                pending = self._pending[key] = _Pending()
                self.misses += 1
        assert pending is not None
        if not owner:
            pending.done.wait()
            if pending.error is not None:
                raise pending.error
            with self._lock:
                self.hits += 1
            return pending.value
        try:
            value = compute()
        except BaseException as exc:
            pending.error = exc
            raise
        else:
            pending.value = value
            self.put(key, value, nbytes)
            return value
        finally:
            with self._lock:
                self._pending.pop(key, None)
            pending.done.set()

    def __repr__(self) -> str:
        s = self.stats()
        return (f"ByteLRU({s['name']!r}, {s['entries']} entries, {s['nbytes']:,} of {s['max_bytes']:,} bytes, "
                f"{s['hits']} hits, {s['misses']} misses, {s['evictions']} evictions)")
