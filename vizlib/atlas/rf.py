"""Receptive fields: which input pixels a unit of a layer's map can see, from the layers' kernels and strides.

Computed once per layer by walking the traced Keras graph back to the input
(:func:`vizlib.layers.trace`), so branches (residual adds, concatenations) and
nested models are handled: where paths join, the field is the union of the
paths' fields. A unit at ``(row, col)`` of the layer sees input rows
``lo_y + row * jump_y .. hi_y + row * jump_y`` (and the same for columns),
clipped to the image. Paths through a global pooling (squeeze-and-excitation
gates) see the whole image by construction and are left out: the crop shows
the local field the unit's spatial pattern comes from. A layer the walk does
not understand (a reshape, an up-sampling) gives the whole image, never a
wrong crop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

#: Layer classes with a kernel (size, strides, padding, dilation) walked exactly.
_KERNEL_LAYERS = {
    "Conv2D": "kernel_size", "Convolution2D": "kernel_size", "SeparableConv2D": "kernel_size",
    "SeparableConvolution2D": "kernel_size", "DepthwiseConv2D": "kernel_size",
    "MaxPooling2D": "pool_size", "AveragePooling2D": "pool_size", "MaxPool2D": "pool_size",
    "AvgPool2D": "pool_size",
}


@dataclass(frozen=True)
class Field:
    """Unit ``i`` along one axis sees input pixels ``lo + i * jump`` .. ``hi + i * jump`` (inclusive)."""

    jump: float
    lo: float
    hi: float


@dataclass(frozen=True)
class ReceptiveField:
    """A layer's receptive field along y and x (``None``: the whole image), on an input of ``input_size``."""

    y: Optional[Field]
    x: Optional[Field]
    input_size: tuple[int, int]

    def box(self, row: int, col: int) -> tuple[int, int, int, int]:
        """(top, left, bottom, right) in input pixels, bottom/right exclusive, clipped to the image."""
        h, w = self.input_size
        top, bottom = _span(self.y, row, h)
        left, right = _span(self.x, col, w)
        return top, left, bottom, right

    def boxes(self, rows: Any, cols: Any) -> tuple[Any, Any, Any, Any]:
        """:meth:`box` for arrays of rows and columns: (top, left, bottom, right) int32 arrays."""
        import numpy as np

        rows, cols = np.asarray(rows), np.asarray(cols)
        out = np.array([self.box(int(r), int(c)) for r, c in zip(rows.ravel(), cols.ravel())], dtype=np.int32)
        out = out.reshape(-1, 4)
        return out[:, 0], out[:, 1], out[:, 2], out[:, 3]

    def to_json(self) -> dict:
        def one(f: Optional[Field]) -> Optional[list[float]]:
            return None if f is None else [f.jump, f.lo, f.hi]

        return {"y": one(self.y), "x": one(self.x), "input_size": list(self.input_size)}

    @classmethod
    def from_json(cls, data: dict) -> "ReceptiveField":
        def one(v: Any) -> Optional[Field]:
            if v is None:
                return None
            jump, lo, hi = (float(t) for t in v)
            if not all(math.isfinite(t) for t in (jump, lo, hi)) or jump <= 0 or hi < lo:
                raise ValueError("bad receptive field")
            return Field(jump, lo, hi)

        h, w = (int(v) for v in data["input_size"])
        return cls(one(data.get("y")), one(data.get("x")), (h, w))


def _span(f: Optional[Field], i: int, n: int) -> tuple[int, int]:
    if f is None:
        return 0, n
    lo = int(math.floor(f.lo + i * f.jump))
    hi = int(math.ceil(f.hi + i * f.jump)) + 1
    lo, hi = max(0, lo), min(n, hi)
    if hi <= lo:  # a unit computed only from padding: show where it sits
        c = min(max(int(round(f.lo + i * f.jump)), 0), n - 1)
        return c, c + 1
    return lo, hi


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, (list, tuple)):
        return int(v[0]), int(v[-1])
    return int(v), int(v)


def _spatial(tensor: Any) -> Optional[tuple[int, int]]:
    shape = tuple(getattr(tensor, "shape", ()) or ())
    if len(shape) != 4 or shape[1] is None or shape[2] is None:
        return None
    return int(shape[1]), int(shape[2])


def _through_kernel(f: Field, k: int, s: int, d: int, pad: str, n: int) -> Field:
    eff = d * (k - 1) + 1
    if pad == "same":
        out = -(-n // s)
        p = max((out - 1) * s + eff - n, 0) // 2
    else:
        p = 0
    return Field(f.jump * s, f.lo - p * f.jump, f.hi + (eff - 1 - p) * f.jump)


class _Unknown(Exception):
    pass


def receptive_fields(model: Any, layers: list[str]) -> dict[str, ReceptiveField]:
    """The receptive field of each named layer (spatial layers of ``model``, a keras.Model or LoadedModel)."""
    from vizlib.layers import trace

    tr = trace(model)
    inp = tr.input
    size = _spatial(inp) or (1, 1)
    memo: dict[int, tuple[Optional[Field], Optional[Field]]] = {}

    def walk(t: Any) -> tuple[Optional[Field], Optional[Field]]:
        key = id(t)
        if key in memo:
            return memo[key]
        if t is inp:
            res: tuple[Optional[Field], Optional[Field]] = (Field(1.0, 0.0, 0.0), Field(1.0, 0.0, 0.0))
        else:
            try:
                res = step(t)
            except _Unknown:
                res = (None, None)
        memo[key] = res
        return res

    def step(t: Any) -> tuple[Optional[Field], Optional[Field]]:
        hist = getattr(t, "_keras_history", None)
        if hist is None:
            raise _Unknown
        op = hist.operation
        nodes = getattr(op, "_inbound_nodes", None) or []
        if hist.node_index >= len(nodes):
            raise _Unknown
        node = nodes[hist.node_index]
        ins = [x for x in node.input_tensors]
        kind = type(op).__name__
        out_hw = _spatial(t)
        if out_hw is None:
            raise _Unknown
        if kind in _KERNEL_LAYERS:
            src = ins[0]
            in_hw = _spatial(src)
            if in_hw is None:
                raise _Unknown
            fy, fx = walk(src)
            ky, kx = _pair(getattr(op, _KERNEL_LAYERS[kind]))
            sy, sx = _pair(getattr(op, "strides", None) or (ky, kx))
            dy, dx = _pair(getattr(op, "dilation_rate", 1) or 1)
            pad = str(getattr(op, "padding", "valid")).lower()
            if pad not in ("same", "valid"):
                raise _Unknown
            if getattr(op, "data_format", "channels_last") != "channels_last":
                raise _Unknown
            return (None if fy is None else _through_kernel(fy, ky, sy, dy, pad, in_hw[0]),
                    None if fx is None else _through_kernel(fx, kx, sx, dx, pad, in_hw[1]))
        if kind in ("ZeroPadding2D", "Cropping2D"):
            src = ins[0]
            fy, fx = walk(src)
            attr = "padding" if kind == "ZeroPadding2D" else "cropping"
            (top, _), (left, _) = getattr(op, attr)
            sign = -1 if kind == "ZeroPadding2D" else 1
            return (None if fy is None else Field(fy.jump, fy.lo + sign * top * fy.jump, fy.hi + sign * top * fy.jump),
                    None if fx is None else Field(fx.jump, fx.lo + sign * left * fx.jump,
                                                  fx.hi + sign * left * fx.jump))
        # Anything else must keep the spatial size: element-wise layers, normalisation, add, concatenate.
        spatial_ins = [x for x in ins if _spatial(x) is not None and _spatial(x) != (1, 1)]
        if not spatial_ins or any(_spatial(x) != out_hw for x in spatial_ins):
            raise _Unknown
        fields = [walk(x) for x in spatial_ins]
        return _union([f[0] for f in fields]), _union([f[1] for f in fields])

    # Walk every traced output in forward order first: each step then finds its inputs done, so the
    # recursion stays shallow however deep the model is.
    wanted = set(layers)
    for name, t in tr.outputs.items():
        if not wanted:
            break
        walk(t)
        wanted.discard(name)
    out: dict[str, ReceptiveField] = {}
    for name in layers:
        t = tr.outputs[name]
        try:
            fy, fx = walk(t)
        except RecursionError:
            fy, fx = None, None
        out[name] = ReceptiveField(fy, fx, size)
    return out


def _union(fields: list[Optional[Field]]) -> Optional[Field]:
    if any(f is None for f in fields):
        return None
    jumps = {f.jump for f in fields}  # type: ignore[union-attr]
    if len(jumps) != 1:
        return None
    return Field(fields[0].jump, min(f.lo for f in fields), max(f.hi for f in fields))  # type: ignore[union-attr]
