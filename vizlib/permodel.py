"""One per-model store: what vizlib builds for a Keras model (traces, extractors, graphs, plans) lives here.

Everything cached per model (the traced graph, compiled extractors, Grad-CAM
plans, the atlas's statistics model, feature-visualisation graphs, the run
lock) dies with the model (weak keys), sits behind one lock, and is forgotten
at once by :func:`clear` (tests and benchmarks that measure a first visit).

Each user of the store takes a named slot (:class:`Slot`) and reads and writes
it like a dictionary keyed by the model; :func:`cached` is the usual
"build once, keep at most N" on top of it.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from typing import Any, Callable, Optional

__all__ = ["LOCK", "Slot", "cached", "clear", "run_lock"]

#: The one lock of the store. Reentrant, so a builder may look up another slot; builds run outside it.
LOCK = threading.RLock()
_STORE: "weakref.WeakKeyDictionary[Any, dict[str, Any]]" = weakref.WeakKeyDictionary()


def _key(model: Any) -> Any:
    return getattr(model, "model", model)  # a VizModel's Keras model, or the Keras model itself


class Slot:
    """One named part of the store, used like a ``WeakKeyDictionary`` from model to value."""

    def __init__(self, name: str):
        self.name = name

    def get(self, model: Any, default: Any = None) -> Any:
        with LOCK:
            per = _STORE.get(_key(model))
            return default if per is None else per.get(self.name, default)

    def setdefault(self, model: Any, default: Any) -> Any:
        with LOCK:
            per = _STORE.setdefault(_key(model), {})
            return per.setdefault(self.name, default)

    def __getitem__(self, model: Any) -> Any:
        found = self.get(model, _MISSING)
        if found is _MISSING:
            raise KeyError(model)
        return found

    def __setitem__(self, model: Any, value: Any) -> None:
        with LOCK:
            _STORE.setdefault(_key(model), {})[self.name] = value

    def __contains__(self, model: Any) -> bool:
        return self.get(model, _MISSING) is not _MISSING

    def pop(self, model: Any, default: Any = None) -> Any:
        with LOCK:
            per = _STORE.get(_key(model))
            return default if per is None else per.pop(self.name, default)

    def clear(self) -> None:
        """Forget this slot for every model."""
        with LOCK:
            for per in list(_STORE.values()):
                per.pop(self.name, None)


_MISSING = object()


def cached(model: Any, slot: Slot, key: Any, build: Callable[[], Any], *, max_entries: Optional[int] = None) -> Any:
    """``slot``'s value for (``model``, ``key``), built once by ``build()`` (outside the lock).

    With ``max_entries`` the slot keeps the most recently used entries per model only.
    Two threads may build the same entry at once; the first stored wins and both get it.
    """
    with LOCK:
        per = slot.setdefault(model, OrderedDict())
        if key in per:
            per.move_to_end(key)
            return per[key]
    value = build()
    with LOCK:
        per = slot.setdefault(model, OrderedDict())
        value = per.setdefault(key, value)
        per.move_to_end(key)
        while max_entries is not None and len(per) > max_entries:
            per.popitem(last=False)
        return value


_RUN_LOCKS = Slot("run_lock")


def run_lock(model: Any) -> threading.Lock:
    """One lock per Keras model: sessions share cached models; calls on one model run one at a time."""
    with LOCK:
        return _RUN_LOCKS.setdefault(model, threading.Lock())


def clear() -> None:
    """Forget everything built for every model (run locks included; use when no model call is running)."""
    with LOCK:
        _STORE.clear()
