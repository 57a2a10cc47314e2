"""Capabilities written once: named operations on a model, run wherever the model lives.

A capability (a forward pass, one channel over images, a Grad-CAM, a feature
visualisation, an atlas batch) is a plain function of an in-process
:class:`vizlib.models.LoadedModel` and a preprocessed batch, registered under a
name qualified by the vizlib module that defines it::

    from vizlib.ops import op

    @op("explain.gradcam")                      # defined in vizlib/explain.py
    def _gradcam(m, batch, *, layer, class_index):
        ...
        return {"cam": cam, "class_index": class_index}

Every model kind runs it through :meth:`vizlib.contract.VizModel.run`:
``LoadedModel.run`` calls the function here; an uploaded model's
``IsolatedModel.run`` sends the name and the JSON-able parameters to its child
process, which looks the same function up and calls it on its own
``LoadedModel``. So a new capability is one function and one public wrapper,
never a second code path per kind of model.

Results are dicts whose values are numpy arrays or JSON-able values (they
cross the process boundary with no pickle).
"""

from __future__ import annotations

import importlib
import re
from typing import Any, Callable, Optional

import numpy as np

from vizlib.errors import InputError

OpFn = Callable[..., dict]

_OPS: dict[str, OpFn] = {}
_NAME = re.compile(r"[a-z_][a-z0-9_]*\.[a-z_][a-z0-9_]*")


def op(name: str) -> Callable[[OpFn], OpFn]:
    """Register ``fn(m: LoadedModel, batch: ndarray | None, **params) -> dict`` under ``name``.

    ``name`` is ``"<module>.<capability>"`` where ``vizlib.<module>`` is the
    module holding the function, so a fresh process can find it by importing
    that module.
    """
    if not _NAME.fullmatch(name):
        raise ValueError(f"op names look like 'module.capability', not {name!r}")

    def register(fn: OpFn) -> OpFn:
        _OPS[name] = fn
        return fn

    return register


def get(name: str) -> OpFn:
    """The function registered as ``name``, importing ``vizlib.<module>`` on first use."""
    found = _OPS.get(name)
    if found is not None:
        return found
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise InputError(f"Unknown operation {name!r}.")
    module = name.split(".", 1)[0]
    try:
        importlib.import_module(f"vizlib.{module}")
    except ModuleNotFoundError as exc:
        raise InputError(f"Unknown operation {name!r}.") from exc
    found = _OPS.get(name)
    if found is None:
        raise InputError(f"Unknown operation {name!r}.")
    return found


def call(m: Any, name: str, batch: Optional[np.ndarray], params: dict) -> dict:
    """Run ``name`` on the in-process model ``m`` (``batch`` already preprocessed)."""
    result = get(name)(m, batch, **params)
    if not isinstance(result, dict):
        raise TypeError(f"operation {name} returned {type(result).__name__}, not a dict")
    return result


def split(result: dict) -> tuple[dict, list[str], list[np.ndarray]]:
    """A result dict -> (JSON-able part, array names, arrays), for the wire."""
    plain: dict = {}
    names: list[str] = []
    arrays: list[np.ndarray] = []
    for key, value in result.items():
        if isinstance(value, np.ndarray):
            names.append(str(key))
            arrays.append(np.ascontiguousarray(value))
        elif isinstance(value, np.generic):
            plain[str(key)] = value.item()
        else:
            plain[str(key)] = value
    return plain, names, arrays


def join(plain: dict, names: list[str], arrays: list[np.ndarray]) -> dict:
    """The inverse of :func:`split`."""
    result = dict(plain)
    result.update(zip(names, arrays))
    return result
