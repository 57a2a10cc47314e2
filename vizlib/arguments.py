"""Arguments of the public API checked against their type hints, so a wrong type is an InputError.

A notebook user who passes a number where a layer name belongs, or a dict
where a list of images belongs, should read what was wrong -- not a
``TypeError`` or ``AttributeError`` from three calls down. :func:`checked`
wraps a function so that, before it runs, every argument is compared with the
parameter's type hint; :func:`check_namespace` wraps every public function of
a module's namespace at once (``vizlib``'s own, :mod:`vizlib.links`, ...).

Only hints that can be checked exactly are: ``str``, ``bytes``, ``int``,
``float``, ``bool``, ``None``, unions and ``Optional``, ``Literal``, lists,
tuples, sequences, mappings and iterables of those, callables, path-likes,
PIL images and vizlib's own classes. A hint the checker cannot judge
(``Any``, arrays -- array-likes are welcome -- or a class from elsewhere)
accepts anything, so the check never refuses a value the function takes.
"""

from __future__ import annotations

import collections.abc as cabc
import functools
import inspect
import os
import types
import typing
from typing import Any, Callable, Iterable, Optional

from vizlib.errors import InputError

__all__ = ["check_namespace", "check_seed", "checked", "fits", "hints", "require", "require_result"]

#: Items of a list, tuple or mapping looked at (a wrong type is almost always in the first few).
MAX_ITEMS_CHECKED = 1000
_UNKNOWN = object()


def _kind(value: Any) -> str:
    if value is None:
        return "None"
    if isinstance(value, bool):
        return f"{value!r} (true/false)"
    if isinstance(value, (int, float)):
        return f"the number {value!r}"[:60]
    if isinstance(value, str):
        return f"the text {value[:40]!r}"
    if isinstance(value, (list, tuple)) and value:
        import reprlib

        short = reprlib.Repr()  # (keyword arguments only from Python 3.12)
        short.maxlist = short.maxtuple = 6
        short.maxstring = short.maxother = 20
        short.maxlevel = 2
        return f"the {type(value).__name__} {short.repr(value)}"
    return f"a {type(value).__name__}"


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if hint is type(None) or hint is None:
        return "None"
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(h) for h in typing.get_args(hint))
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(hint))
    if isinstance(hint, typing.ForwardRef):  # e.g. "os.PathLike[str]" inside a Union
        return "a path" if "PathLike" in hint.__forward_arg__ else hint.__forward_arg__
    if origin in (list, tuple, cabc.Sequence, cabc.Iterable, cabc.Collection):
        args = typing.get_args(hint)
        inner = _describe(args[0]) if args and args[0] is not Ellipsis else ""
        inner = inner[2:] + "s" if inner.startswith("a ") and " or " not in inner else inner  # "whole numbers"
        return f"a list{' of ' + inner if inner else ''}"
    if origin in (dict, cabc.Mapping):
        return "a dict"
    if hint is cabc.Callable or origin is cabc.Callable:
        return "a function"
    if hint is os.PathLike or origin is os.PathLike:
        return "a path"
    if hint is float:
        return "a number"
    if hint is int:
        return "a whole number"
    if hint is str:
        return "text"
    if hint is bool:
        return "True or False"
    return getattr(hint, "__name__", str(hint))


def _fits(value: Any, hint: Any) -> Any:
    """True / False, or _UNKNOWN when the hint is not one this checker judges."""
    import numpy as np

    if hint is Any or hint is object or hint is inspect.Parameter.empty:
        return _UNKNOWN
    if hint is np.ndarray:  # array-likes are welcome, as long as they hold numbers
        return _numeric(value)
    if hint in (typing.BinaryIO, typing.IO) or typing.get_origin(hint) is typing.IO:
        return callable(getattr(value, "read", None))
    if hint is None or hint is type(None):
        return value is None
    if isinstance(hint, typing.ForwardRef):  # e.g. "os.PathLike[str]" inside a Union
        try:
            hint = eval(hint.__forward_arg__, {"os": os, "typing": typing, "np": np})  # noqa: S307
        except Exception:
            return _UNKNOWN
        return _fits(value, hint)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        results = [_fits(value, h) for h in typing.get_args(hint)]
        if any(r is True for r in results):
            return True
        return _UNKNOWN if any(r is _UNKNOWN for r in results) else False
    if origin is typing.Literal:
        return any(value == a and type(value) is type(a) for a in typing.get_args(hint))
    if hint is str:
        return isinstance(value, str)
    if hint in (bytearray, memoryview):
        return isinstance(value, (bytes, bytearray, memoryview))
    if hint is bytes:
        return isinstance(value, (bytes, bytearray, memoryview))
    if hint is bool:
        return isinstance(value, (bool, np.bool_))
    if hint is int:
        return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
    if hint is float:
        return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
    if hint is os.PathLike or origin is os.PathLike:
        return isinstance(value, os.PathLike)
    if hint is cabc.Callable or origin is cabc.Callable:
        return callable(value)
    if origin in (list, tuple, cabc.Sequence, cabc.Collection, cabc.Iterable) or hint in (list, tuple):
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        if isinstance(value, (str, bytes, bytearray)):
            return False  # text where a list belongs (a layer name instead of a list of names)
        if value is None or isinstance(value, (bool, int, float, complex, cabc.Mapping)) and origin is not cabc.Iterable:
            return False
        if isinstance(value, (cabc.Set, cabc.Mapping, cabc.KeysView)):
            value = tuple(value)[:MAX_ITEMS_CHECKED]  # finite containers: their items are what is iterated
        elif not isinstance(value, (list, tuple)):
            # Arrays, ranges, generators: not judged (and never consumed here).
            return False if not isinstance(value, cabc.Iterable) else _UNKNOWN
        if origin is tuple and len(args) > 1 and Ellipsis not in typing.get_args(hint):
            if len(value) != len(args):
                return False
            pairs = list(zip(value, args))
        else:
            pairs = [(v, args[0]) for v in value[:MAX_ITEMS_CHECKED]] if args else []
        results = [_fits(v, h) for v, h in pairs]
        return False if any(r is False for r in results) else True
    if origin in (dict, cabc.Mapping) or hint in (dict, cabc.Mapping):
        if not isinstance(value, cabc.Mapping):
            return False
        args = typing.get_args(hint)
        if len(args) == 2:
            for k, v in list(value.items())[:MAX_ITEMS_CHECKED]:
                if _fits(k, args[0]) is False or _fits(v, args[1]) is False:
                    return False
        return True
    if isinstance(hint, type):
        from PIL import Image

        if getattr(hint, "_is_protocol", False):
            return _UNKNOWN  # a Protocol (VizModel): as_model says what is wrong
        if hint.__module__.startswith("vizlib."):
            return isinstance(value, hint)
        if hint is Image.Image:  # a PIL image (an array may be welcome too)
            return True if isinstance(value, Image.Image) else _UNKNOWN if isinstance(value, np.ndarray) else False
    return _UNKNOWN


def _numeric(value: Any) -> bool:
    """Whether ``value`` is an array, a number or a (nested) list of numbers."""
    import numpy as np

    if isinstance(value, np.ndarray):
        return value.dtype.kind in "biufc"
    if isinstance(value, (bool, int, float, np.number)):
        return True
    if not isinstance(value, (list, tuple)):
        return False
    try:
        return np.asarray(value).dtype.kind in "biufc"
    except (ValueError, TypeError, OverflowError, RecursionError, MemoryError):
        return False


#: Parameters named like this hold a model whatever their hint says: text (a catalogue name or a
#: model file's path), a path, or a model object -- never a number, bytes or a container.
MODEL_PARAMETERS = ("model", "km", "m")


def _model_like(value: Any) -> bool:
    """A catalogue name or a model file (text, a path), a vizlib model, or a keras.Model."""
    if isinstance(value, (str, os.PathLike)):
        return True
    from vizlib.contract import VizModel

    if isinstance(value, VizModel):
        return True
    import keras

    return isinstance(value, keras.Model)


def _hints(fn: Callable) -> dict[str, Any]:
    """The function's parameter hints that can be resolved (a hint naming an unimportable type is skipped)."""
    target = inspect.unwrap(fn)
    raw = getattr(target, "__annotations__", {}) or {}
    glob = getattr(target, "__globals__", {})
    out = {}
    for name, hint in raw.items():
        if name == "return":
            continue
        if isinstance(hint, str):
            try:
                hint = eval(hint, dict(glob), {})  # noqa: S307 - the library's own annotations
            except Exception:
                continue
        out[name] = hint
    return out


def fits(value: Any, hint: Any) -> Optional[bool]:
    """Whether ``value`` fits the type ``hint``; None when the hint is not one this checker judges."""
    result = _fits(value, hint)
    return None if result is _UNKNOWN else bool(result)


def hints(fn: Callable) -> dict[str, Any]:
    """The parameter hints of ``fn`` this module can resolve (what :func:`checked` checks)."""
    return _hints(fn)


def require(value: Any, hint: Any, name: str, where: str = "") -> None:
    """Raise InputError unless ``value`` fits the type ``hint`` (a hint it cannot judge accepts anything)."""
    if _fits(value, hint) is False:
        place = f" of {where}()" if where else ""
        raise InputError(f"The argument {name!r}{place} should be {_describe(hint)}, not {_kind(value)}.")


def require_result(value: Any, keys: Iterable[str], made_by: str, name: str) -> None:
    """Raise InputError unless ``value`` is a dict holding ``keys``: what ``made_by`` returns, passed on."""
    missing = [k for k in keys if not isinstance(value, cabc.Mapping) or k not in value]
    if missing:
        raise InputError(f"The argument {name!r} should be what {made_by} returns"
                         + (f" (it lacks {', '.join(map(repr, missing[:4]))})." if isinstance(value, cabc.Mapping)
                            else f", not {_kind(value)}."))


#: Seeds reach numpy's and TensorFlow's generators, which take 0 .. 2**32 - 1.
MAX_SEED = 2**32 - 1


def check_seed(value: Any, name: str = "seed") -> int:
    """``value`` as a plain int if it is a whole number 0 .. :data:`MAX_SEED`, else InputError (every public
    function's ``seed`` goes through here, through :func:`checked`; numpy said "expected non-negative integer")."""
    import numpy as np

    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InputError(f"{name} must be a whole number from 0 to {MAX_SEED:,}, not {_kind(value)}.")
    if not 0 <= int(value) <= MAX_SEED:
        raise InputError(f"{name} must be a whole number from 0 to {MAX_SEED:,}, not {int(value)}.")
    return int(value)


def checked(fn: Callable) -> Callable:
    """``fn`` with its arguments checked against its type hints first (InputError naming the argument)."""
    if getattr(fn, "__vizlib_checked__", False):
        return fn
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return fn
    hints = {k: v for k, v in _hints(fn).items() if k in signature.parameters}
    models = [k for k in MODEL_PARAMETERS if k in signature.parameters]
    seeded = "seed" in signature.parameters
    if not hints and not models and not seeded:
        return fn

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise InputError(f"{fn.__name__}(): {exc}.") from None
        for name in models:
            value = bound.arguments.get(name, signature.parameters[name].default)
            if not _model_like(value) and not (value is None and signature.parameters[name].default is None):
                raise InputError(f"The argument {name!r} of {fn.__name__}() should be a model (a catalogue name, "
                                 f"a .keras/.h5 file, a keras.Model or what vizlib.load_model returns), not "
                                 f"{_kind(value)}.")
        for name, value in bound.arguments.items():
            hint = hints.get(name)
            if hint is None:
                continue
            kind = signature.parameters[name].kind
            if kind is inspect.Parameter.VAR_POSITIONAL:
                for v in value:
                    require(v, hint, name, fn.__name__)
            elif kind is inspect.Parameter.VAR_KEYWORD:
                for v in value.values():
                    require(v, hint, name, fn.__name__)
            else:
                require(value, hint, name, fn.__name__)
        if seeded and "seed" in bound.arguments:
            check_seed(bound.arguments["seed"])
        return fn(*args, **kwargs)

    wrapper.__vizlib_checked__ = True  # type: ignore[attr-defined]
    return wrapper


def check_namespace(namespace: dict[str, Any], names: Optional[Iterable[str]] = None) -> None:
    """Wrap the public functions of a module's ``namespace`` (``globals()``) with :func:`checked`, in place."""
    for name in list(names if names is not None else namespace.get("__all__", ())):
        fn = namespace.get(name)
        if inspect.isfunction(fn):
            namespace[name] = checked(fn)
