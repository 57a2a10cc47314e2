"""JSON from uploads: parsed within bounds, then checked against a schema.

An uploaded manifest is data from a stranger: ``json.loads`` alone turns
100,000 nested brackets into a ``RecursionError``, a 5,000-digit number into
a ``ValueError`` (Python's integer-conversion limit), and a list where a
dict was expected into an ``AttributeError`` three calls later.
:func:`parse_json` refuses deep nesting before parsing (and never lets a
``RecursionError`` out), numbers longer than 20 digits, ``NaN``/``Infinity``
and duplicate keys; :func:`validate` then checks the value against a small
declarative schema (:class:`Str`, :class:`Int`, :class:`List`, :class:`Obj`,
:class:`Map`, ...) with types, lengths and counts, and names the offending
field in its message. Both raise only :class:`~vizlib.errors.InputError`.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence

from vizlib.errors import InputError
from vizlib.units import fmt_bytes

__all__ = ["Any_", "Bool", "Int", "List", "Map", "Null", "Num", "Obj", "OneOf", "Str", "parse_json", "validate"]

#: Longest run of digits a JSON number may have (int64 has 19).
MAX_NUMBER_DIGITS = 20

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKET = re.compile(r"[\[\]{}]")


def nesting_depth(text: str, stop: int) -> int:
    """How deeply ``[``/``{`` nest in JSON ``text`` (strings skipped); stops counting past ``stop``."""
    depth = best = 0
    for m in _BRACKET.finditer(_STRING.sub('""', text)):
        if m.group() in "[{":
            depth += 1
            if depth > best:
                best = depth
                if best > stop:
                    break
        else:
            depth -= 1
    return best


def parse_json(raw: bytes | str, *, what: str, max_bytes: int, max_depth: int = 32, advice: str = "") -> Any:
    """Parse untrusted JSON ``raw`` or raise InputError (``what`` starts the message, ``advice`` ends it).

    The one reader of JSON a user controls (bundle and atlas manifests, model configs).
    Refused: more than ``max_bytes``, not UTF-8, nesting deeper than
    ``max_depth``, numbers of more than :data:`MAX_NUMBER_DIGITS` digits,
    ``NaN``/``Infinity``, duplicate keys, and invalid JSON.
    """
    try:
        return _parse_json(raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else bytes(raw),
                           what=what, max_bytes=max_bytes, max_depth=max_depth)
    except InputError as exc:
        if not advice:
            raise
        raise InputError(f"{exc} {advice}") from exc


def _parse_json(raw: bytes, *, what: str, max_bytes: int, max_depth: int) -> Any:
    if len(raw) > max_bytes:
        raise InputError(f"{what} is {fmt_bytes(len(raw))}, over the {fmt_bytes(max_bytes)} limit.")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{what} is not UTF-8 text, so not JSON.") from exc
    depth = nesting_depth(text, max_depth)
    if depth > max_depth:
        raise InputError(f"{what} nests more than {max_depth} levels deep (nested too deeply); "
                         "it was not made by this app.")

    def bounded_int(s: str) -> int:
        if len(s.lstrip("-")) > MAX_NUMBER_DIGITS:
            raise InputError(f"{what} holds a {len(s.lstrip('-')):,}-digit number; it was not made by this app.")
        return int(s)

    def bounded_float(s: str) -> float:
        if len(s) > 64:
            raise InputError(f"{what} holds a {len(s):,}-character number; it was not made by this app.")
        value = float(s)
        if not math.isfinite(value):
            raise InputError(f"{what} holds a number out of range ({s[:20]}).")
        return value

    def no_constants(s: str) -> Any:
        raise InputError(f"{what} holds {s}, which is not valid JSON.")

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict:
        out: dict = {}
        for key, value in pairs:
            if key in out:
                raise InputError(f'{what} defines "{key[:60]}" twice.')
            out[key] = value
        return out

    try:
        return json.loads(text, parse_int=bounded_int, parse_float=bounded_float, parse_constant=no_constants,
                          object_pairs_hook=no_duplicates)
    except InputError:
        raise
    except RecursionError as exc:  # the pre-check should make this unreachable
        raise InputError(f"{what} nests too deeply; it was not made by this app.") from exc
    except (ValueError, TypeError, MemoryError) as exc:
        raise InputError(f"{what} is not valid JSON ({str(exc)[:100]}).") from exc


# --------------------------------------------------------------------------- schema


class Spec:
    """A schema node: ``check(value, path)`` returns None or the reason the value does not fit."""

    def check(self, value: Any, path: str) -> Optional[tuple[str, str]]:  # pragma: no cover - interface
        raise NotImplementedError

    def describe(self) -> str:  # pragma: no cover - interface
        raise NotImplementedError


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, float):
        return "a number with a fraction"
    if isinstance(value, int):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


@dataclass(frozen=True)
class Str(Spec):
    """Text of at most ``max_len`` characters (optionally matching ``pattern``)."""

    max_len: int = 1000
    pattern: Optional[str] = None

    def check(self, value, path):
        if not isinstance(value, str):
            return path, f"should be text, not {_kind(value)}"
        if len(value) > self.max_len:
            return path, f"is {len(value):,} characters long (at most {self.max_len:,})"
        if self.pattern is not None and not re.fullmatch(self.pattern, value):
            return path, "is not in the expected form"
        return None

    def describe(self):
        return "text"


@dataclass(frozen=True)
class Int(Spec):
    """A whole number in ``lo..hi`` (JSON ``true``/``false`` are not numbers here)."""

    lo: int = -(2**53)
    hi: int = 2**53

    def check(self, value, path):
        if isinstance(value, bool) or not isinstance(value, int):
            return path, f"should be a whole number, not {_kind(value)}"
        if not self.lo <= value <= self.hi:
            return path, f"is out of range ({self.lo} to {self.hi})"
        return None

    def describe(self):
        return "a whole number"


@dataclass(frozen=True)
class Num(Spec):
    """Any finite number."""

    def check(self, value, path):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return path, f"should be a number, not {_kind(value)}"
        if isinstance(value, int) and abs(value) > 2**63:
            return path, "is out of range"
        return None

    def describe(self):
        return "a number"


@dataclass(frozen=True)
class Bool(Spec):
    def check(self, value, path):
        return None if isinstance(value, bool) else (path, f"should be true or false, not {_kind(value)}")

    def describe(self):
        return "true/false"


@dataclass(frozen=True)
class Null(Spec):
    def check(self, value, path):
        return None if value is None else (path, f"should be null, not {_kind(value)}")

    def describe(self):
        return "null"


@dataclass(frozen=True)
class OneOf(Spec):
    """Any one of ``options``."""

    options: tuple[Spec, ...] = ()

    def check(self, value, path):
        problems = [o.check(value, path) for o in self.options]
        if any(p is None for p in problems):
            return None
        # A value of a right type that is wrong in its content (deeper down, or too long):
        # say what is wrong with it.
        typed = [p for p in problems if p is not None and (p[0] != path or not p[1].startswith("should be"))]
        if typed:
            return typed[0]
        return path, f"should be {' or '.join(o.describe() for o in self.options)}, not {_kind(value)}"

    def describe(self):
        return " or ".join(o.describe() for o in self.options)


@dataclass(frozen=True)
class List(Spec):
    """A list of at most ``max_items`` items, each fitting ``item``."""

    item: Spec = field(default_factory=lambda: Any_())
    max_items: int = 1000

    def check(self, value, path):
        if not isinstance(value, list):
            return path, f"should be a list, not {_kind(value)}"
        if len(value) > self.max_items:
            return path, f"has {len(value):,} items (at most {self.max_items:,})"
        for i, v in enumerate(value):
            problem = self.item.check(v, f"{path}[{i}]")
            if problem:
                return problem
        return None

    def describe(self):
        return "a list"


@dataclass(frozen=True)
class Obj(Spec):
    """An object with known ``fields`` (all optional unless in ``required``); other keys must fit ``extra``
    (``None``: other keys are refused), at most ``max_keys`` keys in all."""

    fields: Mapping[str, Spec] = field(default_factory=dict)
    required: tuple[str, ...] = ()
    extra: Optional[Spec] = None
    max_keys: int = 100

    def check(self, value, path):
        if not isinstance(value, dict):
            return path, f"should be an object, not {_kind(value)}"
        if len(value) > self.max_keys:
            return path, f"has {len(value):,} keys (at most {self.max_keys:,})"
        for key in self.required:
            if key not in value:
                return _join(path, key), "is missing"
        for key, v in value.items():
            spec = self.fields.get(key, self.extra)
            if spec is None:
                return _join(path, key), "is not expected here"
            problem = spec.check(v, _join(path, key))
            if problem:
                return problem
        return None

    def describe(self):
        return "an object"


@dataclass(frozen=True)
class Map(Spec):
    """An object used as a dictionary: keys of at most ``key_len`` characters, values fitting ``value``."""

    value: Spec = field(default_factory=lambda: Any_())
    key_len: int = 200
    max_keys: int = 1000

    def check(self, value, path):
        if not isinstance(value, dict):
            return path, f"should be an object, not {_kind(value)}"
        if len(value) > self.max_keys:
            return path, f"has {len(value):,} keys (at most {self.max_keys:,})"
        for key, v in value.items():
            if len(key) > self.key_len:
                return path, f"has a key {len(key):,} characters long (at most {self.key_len:,})"
            problem = self.value.check(v, _join(path, key))
            if problem:
                return problem
        return None

    def describe(self):
        return "an object"


@dataclass(frozen=True)
class Any_(Spec):
    """Any JSON value (its size is bounded by the parse: bytes and depth)."""

    def check(self, value, path):
        return None

    def describe(self):
        return "anything"


def _join(path: str, key: str) -> str:
    key = key if len(key) <= 40 else key[:37] + "..."
    return f"{path}.{key}" if path else key


def validate(value: Any, spec: Spec, *, what: str,
             advice: str = "The file was not made by this app, or was changed.") -> None:
    """Raise InputError naming the first field of ``value`` that does not fit ``spec``."""
    problem = spec.check(value, "")
    if problem:
        where, why = problem
        field_name = f'"{where}"' if where else "its top level"
        raise InputError(f"{what}: {field_name} {why}. {advice}".strip())


def fields(spec: Obj) -> Sequence[str]:
    """The known field names of an object schema (for documentation and tests)."""
    return tuple(spec.fields)
