"""What the explain modules share: the Keras model behind any model, its per-model cache and run lock."""

from __future__ import annotations

from typing import Any, Callable

from vizlib import permodel
from vizlib.permodel import run_lock

__all__ = ["activation_name", "cached", "keras_model", "run_lock"]

_SLOT = permodel.Slot("explain")


def keras_model(m: Any) -> Any:
    """The ``keras.Model`` of a loaded model (or the Keras model itself)."""
    return getattr(m, "model", m)


def cached(km: Any, key: Any, build: Callable[[], Any]) -> Any:
    """``build()`` once per Keras model and ``key`` (kept in :mod:`vizlib.permodel`, dies with the model)."""
    return permodel.cached(km, _SLOT, key, build)


def activation_name(fn: Any) -> str:
    """A Keras activation function's name, lower case ("relu", "softmax", ...)."""
    return str(getattr(fn, "__name__", type(fn).__name__)).lower()
