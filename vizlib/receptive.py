"""Receptive fields, exactly: which input pixels a cell of a layer's map depends on.

The one receptive-field engine of vizlib: explanations (:func:`vizlib.explain.receptive_field`,
the depth profile, the convolution arithmetic), feature visualisation (how big an image to
optimise) and the atlas (the crop stored for each top-k row) all ask here.

The traced Keras graph (:func:`vizlib.layers.trace`) is walked once per model
(:func:`layer_graph`), so branches (residual adds, concatenations) and nested models are
handled. Two answers:

* :func:`dependence_masks`: the rows and columns of the input one cell reads, walked back
  layer by layer through kernels, strides, "same" padding offsets, dilation, pooling,
  transposed convolutions, up-sampling, zero-padding and cropping (exact, per cell);
* :func:`affines` / :func:`theoretical` / :func:`receptive_fields`: the same geometry as
  exact fractions, one affine map per axis (cell ``i`` covers ``[jump*i + start, jump*i + end)``),
  for the size of a layer's field and for boxes of many cells at once.

Window sizes, strides, dilations and the accumulated jump are capped
(:data:`MAX_WINDOW`, :data:`MAX_JUMP`): a model with absurd geometry gets an
:class:`~vizlib.errors.InputError`, never arrays or fractions that grow without bound.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Optional, Sequence

import numpy as np

from vizlib import permodel
from vizlib.errors import InputError
from vizlib.layers import trace

__all__ = [
    "Affine", "CONV_KINDS", "GEOMETRY_KINDS", "Graph", "MAX_JUMP", "MAX_WINDOW", "POOL_KINDS", "ReceptiveField",
    "Window", "affines", "box_of", "check_channels_last", "dependence_masks", "geometry_kind", "layer_graph",
    "pair", "producer", "receptive_fields", "same_pad", "spatial_shape", "theoretical", "windows",
]

#: Largest kernel, pool, stride, dilation, up-sampling factor, padding or cropping accepted on one axis.
MAX_WINDOW = 4096
#: Largest jump (input pixels between neighbouring cells) and denominator a layer may reach.
MAX_JUMP = 2**24

_SLOT = permodel.Slot("receptive")


def _cached(km: Any, key: Any, build: Any) -> Any:
    return permodel.cached(km, _SLOT, key, build)


def _checked(value: int, what: str, operation: Any) -> int:
    if not 0 <= value <= MAX_WINDOW:
        raise InputError(f"Layer '{getattr(operation, 'name', '?')}' has a {what} of {value}; receptive fields are "
                         f"computed for values from 0 to {MAX_WINDOW:,}. Use a model with ordinary geometry.")
    return value


@dataclass
class Graph:
    """The traced graph as tensors and their producers, in topological order (inputs first)."""

    order: list  # tensor ids
    tensor: dict  # id -> KerasTensor
    inputs: dict  # id -> [input tensor ids] of its producer
    op: dict  # id -> producing operation (None for the model input)
    pos: dict  # id -> position in order
    input_id: int


def producer(t: Any) -> tuple[Any, list]:
    """(the operation that made tensor ``t``, its input tensors); (None, []) for a graph input."""
    hist = getattr(t, "_keras_history", None)
    if hist is None:
        return None, []
    operation = hist.operation
    try:
        node = operation._inbound_nodes[hist.node_index]
    except (AttributeError, IndexError):
        return operation, []
    return operation, list(node.input_tensors)


def _build_graph(tr: Any) -> Graph:
    from keras import tree

    roots = list(tr.outputs.values()) + list(tree.flatten(tr.final))
    tensor: dict = {}
    inputs: dict = {}
    ops_: dict = {}
    order: list = []
    input_id = id(tr.input)
    state: dict = {}
    for root in roots:
        stack = [(root, False)]
        while stack:
            t, done = stack.pop()
            tid = id(t)
            if done:
                if state.get(tid) != 2:
                    state[tid] = 2
                    order.append(tid)
                continue
            if tid in state:
                continue
            state[tid] = 1
            tensor[tid] = t
            if tid == input_id:
                ops_[tid], inputs[tid] = None, []
            else:
                operation, ins = producer(t)
                ops_[tid] = operation
                inputs[tid] = [id(i) for i in ins]
                for i in ins:
                    tensor.setdefault(id(i), i)
            stack.append((t, True))
            for i in reversed([tensor[j] for j in inputs[tid]]):
                if id(i) not in state:
                    stack.append((i, False))
    return Graph(order=order, tensor=tensor, inputs=inputs, op=ops_, pos={t: i for i, t in enumerate(order)},
                  input_id=input_id)


def layer_graph(km: Any) -> Graph:
    """The traced graph of a Keras model as tensors and producers (built once per model)."""
    return _cached(km, "graph", lambda: _build_graph(trace(km)))


def spatial_shape(t: Any) -> Optional[tuple[int, int]]:
    """(height, width) of a 4-D channels-last tensor with a fixed size, else None."""
    shape = tuple(getattr(t, "shape", ()) or ())
    if len(shape) != 4 or shape[1] is None or shape[2] is None:
        return None
    return int(shape[1]), int(shape[2])


def geometry_kind(operation: Any) -> str:
    """The first Keras layer class in ``operation``'s ancestry we know the geometry of."""
    for cls in type(operation).__mro__:
        if cls.__name__ in GEOMETRY_KINDS:
            return cls.__name__
    return type(operation).__name__


CONV_KINDS = {"Conv2D", "Convolution2D", "DepthwiseConv2D", "SeparableConv2D", "SeparableConvolution2D"}
POOL_KINDS = {"MaxPooling2D", "AveragePooling2D", "MaxPool2D", "AvgPool2D"}
GEOMETRY_KINDS = CONV_KINDS | POOL_KINDS | {"Conv2DTranspose", "Convolution2DTranspose", "ZeroPadding2D",
                                               "Cropping2D", "UpSampling2D"}


def pair(v: Any) -> tuple[int, int]:
    """A Keras size argument (an int or a 1- or 2-tuple) as (height, width)."""
    if isinstance(v, int):
        return int(v), int(v)
    v = tuple(v)
    return (int(v[0]), int(v[0])) if len(v) == 1 else (int(v[0]), int(v[1]))


def check_channels_last(operation: Any) -> None:
    """InputError for a channels-first layer (the geometry here is for (height, width, channels) maps)."""
    if getattr(operation, "data_format", "channels_last") == "channels_first":
        raise InputError("Receptive fields are computed for channels-last models (height, width, channels); "
                         f"layer '{operation.name}' is channels-first.")


def same_pad(n_in: int, k_eff: int, s: int) -> int:
    """Padding before the first cell, as TensorFlow's "SAME" pads (the extra one goes after)."""
    out = -(-n_in // s)
    return max((out - 1) * s + k_eff - n_in, 0) // 2


@dataclass(frozen=True)
class Window:
    """One spatial axis of a sliding-window layer: kernel, stride, dilation, padding before."""

    k: int
    s: int
    d: int
    p: int

    @property
    def k_eff(self) -> int:
        return (self.k - 1) * self.d + 1


def windows(operation: Any, kind: str, in_hw: tuple[int, int], out_hw: tuple[int, int]) -> Optional[list]:
    """Per-axis windows of a conv / pooling / transposed conv layer (None for other kinds)."""
    if kind in CONV_KINDS or kind in POOL_KINDS or kind in ("Conv2DTranspose", "Convolution2DTranspose"):
        check_channels_last(operation)
        if kind in POOL_KINDS:
            ks = pair(operation.pool_size)
            ss = pair(operation.strides if operation.strides is not None else operation.pool_size)
            ds = (1, 1)
        else:
            ks, ss, ds = pair(operation.kernel_size), pair(operation.strides), pair(operation.dilation_rate)
        padding = str(operation.padding).lower()
        out = []
        for axis in range(2):
            k = _checked(ks[axis], "window size", operation)
            s = _checked(ss[axis], "stride", operation)
            d = _checked(ds[axis], "dilation", operation)
            if k < 1 or s < 1 or d < 1:
                raise InputError(f"Layer '{getattr(operation, 'name', '?')}' has a window, stride or dilation of 0.")
            k_eff = (k - 1) * d + 1
            if padding != "same":
                p = 0
            elif kind.startswith("Conv2DTranspose") or kind.startswith("Convolution2DTranspose"):
                # The transpose of a SAME conv from out_hw to in_hw: same padding before.
                p = max((in_hw[axis] - 1) * s + k_eff - out_hw[axis], 0) // 2
            else:
                p = same_pad(in_hw[axis], k_eff, s)
            out.append(Window(k, s, d, p))
        return out
    return None


def _back_axis(kind: str, operation: Any, axis: int, win: Optional[Window], need: np.ndarray, n_in: int) -> np.ndarray:
    """Which input cells (along one axis) the needed output cells read."""
    idx = np.flatnonzero(need)
    res = np.zeros(n_in, dtype=bool)
    if idx.size == 0:
        return res
    # One vector operation per kernel tap that can land inside the tensor: memory stays linear in the
    # map size however large the kernel or dilation (taps that only ever read padding are skipped).
    if kind in ("Conv2DTranspose", "Convolution2DTranspose"):
        j = np.arange(n_in)
        first = max(0, -(-(win.p - (n_in - 1) * win.s) // win.d))
        last = min(win.k - 1, (len(need) - 1 + win.p) // win.d)
        for t in range(first, last + 1):
            pos = j * win.s - win.p + t * win.d
            ok = (pos >= 0) & (pos < len(need))
            res[ok] |= need[pos[ok]]
        return res
    if win is not None:
        first = max(0, -(-(win.p - int(idx[-1]) * win.s) // win.d))
        last = min(win.k - 1, (n_in - 1 + win.p - int(idx[0]) * win.s) // win.d)
        for t in range(first, last + 1):
            pos = idx * win.s - win.p + t * win.d
            res[pos[(pos >= 0) & (pos < n_in)]] = True
        return res
    if kind == "ZeroPadding2D":
        pos = idx - _checked(pair(operation.padding[axis])[0], "padding", operation)
    elif kind == "Cropping2D":
        pos = idx + _checked(pair(operation.cropping[axis])[0], "cropping", operation)
    elif kind == "UpSampling2D":
        u = max(1, _checked(pair(operation.size)[axis], "up-sampling factor", operation))
        if str(getattr(operation, "interpolation", "nearest")) == "nearest":
            pos = idx // u
        else:  # bilinear and friends: the two (or more) source cells around the half-pixel centre
            src = (idx + 0.5) / u - 0.5
            pos = np.concatenate([np.floor(src) - 1, np.floor(src), np.floor(src) + 1, np.floor(src) + 2])
            pos = pos.astype(int)
    else:
        raise AssertionError(kind)
    pos = pos[(pos >= 0) & (pos < n_in)]
    res[pos] = True
    return res


@dataclass
class _Box:
    rows: np.ndarray
    cols: np.ndarray


def dependence_masks(km: Any, layer: str, row: int, col: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """Rows and columns of the model input that cell (row, col) of ``layer`` depends on, exactly."""
    tr = trace(km)
    g = layer_graph(km)
    target = tr.outputs[layer]
    hw = spatial_shape(target)
    need: dict[int, _Box] = {}
    rows = np.zeros(hw[0], dtype=bool)
    cols = np.zeros(hw[1], dtype=bool)
    rows[row] = True
    cols[col] = True
    need[id(target)] = _Box(rows, cols)
    info = {"global_context": False, "assumed_pointwise": set(), "unknown": set()}
    for tid in reversed(g.order[: g.pos[id(target)] + 1]):
        box = need.pop(tid, None)
        if box is None or tid == g.input_id:
            if box is not None:
                need[tid] = box
            continue
        operation = g.op[tid]
        t = g.tensor[tid]
        out_hw = spatial_shape(t)
        kind = geometry_kind(operation) if operation is not None else ""
        for iid in g.inputs[tid]:
            it = g.tensor[iid]
            in_hw = spatial_shape(it)
            if in_hw is None:
                info["global_context"] = True  # a non-spatial input (e.g. squeeze-and-excitation gates)
                continue
            if kind in GEOMETRY_KINDS:
                wins = windows(operation, kind, in_hw, out_hw)
                r = _back_axis(kind, operation, 0, wins[0] if wins else None, box.rows, in_hw[0])
                c = _back_axis(kind, operation, 1, wins[1] if wins else None, box.cols, in_hw[1])
            elif in_hw == out_hw:
                r, c = box.rows.copy(), box.cols.copy()
                if not _known_pointwise(operation):
                    info["assumed_pointwise"].add(getattr(operation, "name", kind))
            elif in_hw == (1, 1):
                info["global_context"] = info["global_context"] or out_hw != (1, 1)
                r, c = np.ones(1, dtype=bool), np.ones(1, dtype=bool)
            else:  # a layer we don't know the geometry of: assume it may read anything
                info["unknown"].add(getattr(operation, "name", kind))
                r, c = np.ones(in_hw[0], dtype=bool), np.ones(in_hw[1], dtype=bool)
            if not (r.any() and c.any()):
                continue
            old = need.get(iid)
            need[iid] = _Box(r, c) if old is None else _Box(old.rows | r, old.cols | c)
    box = need.get(g.input_id)
    in_hw = spatial_shape(tr.input)
    if box is None:
        box = _Box(np.zeros(in_hw[0], dtype=bool), np.zeros(in_hw[1], dtype=bool))
    info["assumed_pointwise"] = sorted(info["assumed_pointwise"])
    info["unknown"] = sorted(info["unknown"])
    return box.rows, box.cols, info


#: Layers that compute each position from the same position only (channels mix, space doesn't).
_POINTWISE = frozenset({
    "Activation", "ReLU", "LeakyReLU", "PReLU", "ELU", "Softmax", "ThresholdedReLU", "BatchNormalization",
    "LayerNormalization", "GroupNormalization", "UnitNormalization", "Normalization", "Rescaling", "Dropout",
    "SpatialDropout2D", "GaussianDropout", "GaussianNoise", "AlphaDropout", "Add", "Subtract", "Multiply",
    "Average", "Maximum", "Minimum", "Concatenate", "Dense", "EinsumDense", "Identity", "Lambda",
    "LayerScale", "StochasticDepth",
})


def _known_pointwise(operation: Any) -> bool:
    if operation is None:
        return True
    names = {c.__name__ for c in type(operation).__mro__}
    if names & _POINTWISE:
        return True
    module = type(operation).__module__
    return module.startswith("keras.src.ops")  # keras.ops used in a functional graph (add, multiply, ...)


def box_of(rows: np.ndarray, cols: np.ndarray) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) around the True rows and columns of :func:`dependence_masks`, exclusive."""
    r = np.flatnonzero(rows)
    c = np.flatnonzero(cols)
    if r.size == 0 or c.size == 0:
        return (0, 0, 0, 0)
    return int(r[0]), int(c[0]), int(r[-1]) + 1, int(c[-1]) + 1


@dataclass(frozen=True)
class Affine:
    """Cell i of a tensor covers input pixels [jump*i + start, jump*i + end) along one axis (unclipped)."""

    jump: Fraction
    start: Fraction
    end: Fraction
    #: False where paths with different jumps joined: then only the size is meaningful (a bound for
    #: cell 0), not the box of every cell.
    sound: bool = True

    @property
    def size(self) -> Fraction:
        return self.end - self.start

    @property
    def lo(self) -> Fraction:
        """First input pixel cell 0 sees (inclusive; may lie in the padding, i.e. below 0)."""
        return self.start

    @property
    def hi(self) -> Fraction:
        """Last input pixel cell 0 sees (inclusive)."""
        return self.end - 1


def _bounded(a: Affine, operation: Any) -> Affine:
    big = max(a.jump, 1 / a.jump, abs(a.start), abs(a.end))
    dens = max(a.jump.denominator, a.start.denominator, a.end.denominator)
    if big > MAX_JUMP * MAX_WINDOW or dens > MAX_JUMP:
        raise InputError(f"At layer '{getattr(operation, 'name', '?')}' the model's strides and windows add up to "
                         "a geometry too extreme to compute receptive fields for (a jump of "
                         f"{float(a.jump):.3g} input pixels per cell). Use a model with ordinary geometry.")
    return a


def _through(kind: str, operation: Any, axis: int, win: Optional[Window], a: Affine) -> Affine:
    return _bounded(_step(kind, operation, axis, win, a), operation)


def _step(kind: str, operation: Any, axis: int, win: Optional[Window], a: Affine) -> Affine:
    j, s, e = a.jump, a.start, a.end
    if kind in ("Conv2DTranspose", "Convolution2DTranspose"):
        st = Fraction(win.s)
        return Affine(j / st, s + j * Fraction(win.p - win.k_eff + 1) / st, e + j * Fraction(win.p) / st, a.sound)
    if win is not None:
        return Affine(j * win.s, s - j * win.p, e + j * (win.k_eff - 1 - win.p), a.sound)
    if kind == "ZeroPadding2D":
        t = _checked(pair(operation.padding[axis])[0], "padding", operation)
        return Affine(j, s - j * t, e - j * t, a.sound)
    if kind == "Cropping2D":
        t = _checked(pair(operation.cropping[axis])[0], "cropping", operation)
        return Affine(j, s + j * t, e + j * t, a.sound)
    if kind == "UpSampling2D":
        u = Fraction(max(1, _checked(pair(operation.size)[axis], "up-sampling factor", operation)))
        extra = Fraction(0) if str(getattr(operation, "interpolation", "nearest")) == "nearest" else j
        return Affine(j / u, s - j * (u - 1) / u - extra, e + extra, a.sound)
    raise AssertionError(kind)


def affines(km: Any) -> dict:
    """Theoretical receptive field of every traced tensor: id -> (row Affine, col Affine) or None."""

    def build() -> dict:
        g = layer_graph(km)
        out: dict = {}
        for tid in g.order:
            t = g.tensor[tid]
            hw = spatial_shape(t)
            if tid == g.input_id:
                out[tid] = (Affine(Fraction(1), Fraction(0), Fraction(1)),) * 2
                continue
            if hw is None:
                out[tid] = None
                continue
            operation = g.op[tid]
            kind = geometry_kind(operation) if operation is not None else ""
            found: list = []
            for iid in g.inputs[tid]:
                prev = out.get(iid)
                in_hw = spatial_shape(g.tensor[iid])
                if prev is None or in_hw is None or (in_hw == (1, 1) and hw != (1, 1)):
                    continue  # non-spatial or broadcast (global) inputs: not part of the local field
                if kind in GEOMETRY_KINDS:
                    wins = windows(operation, kind, in_hw, hw)
                    found.append(tuple(_through(kind, operation, ax, wins[ax] if wins else None, prev[ax])
                                       for ax in range(2)))
                elif in_hw == hw:
                    found.append(prev)
                else:
                    found.append(None)
            if not found or any(f is None for f in found):
                out[tid] = None
                continue
            merged = []
            for ax in range(2):
                parts = [f[ax] for f in found]
                sound = all(p.sound for p in parts) and len({p.jump for p in parts}) == 1
                merged.append(Affine(max(p.jump for p in parts), min(p.start for p in parts),
                                     max(p.end for p in parts), sound))
            out[tid] = tuple(merged)
        return out

    return _cached(km, "affines", build)


def theoretical(km: Any, layer: str) -> Optional[dict]:
    """Size (pixels, per axis and the larger) and jump of ``layer``'s receptive field, or None if unknown."""
    aff = affines(km).get(id(trace(km).outputs[layer]))
    if aff is None:
        return None
    size = tuple(int(math.ceil(a.size)) for a in aff)
    jump = tuple(float(a.jump) for a in aff)
    return {"size_hw": size, "size": max(size), "jump_hw": jump}


# --------------------------------------------------------------------------- boxes of many cells (the atlas)


def _fraction(v: Any) -> Fraction:
    f = Fraction(v).limit_denominator(MAX_JUMP) if isinstance(v, float) else Fraction(v)
    if abs(f) > MAX_JUMP * MAX_WINDOW:
        raise ValueError("receptive field out of range")
    return f


@dataclass(frozen=True)
class ReceptiveField:
    """A layer's receptive field along y and x (``None``: the whole image), on an input of ``input_size``.

    Sound for every cell: pixels outside :meth:`box` never change the cell's value.
    """

    y: Optional[Affine]
    x: Optional[Affine]
    input_size: tuple[int, int]

    def box(self, row: int, col: int) -> tuple[int, int, int, int]:
        """(top, left, bottom, right) in input pixels, bottom/right exclusive, clipped to the image."""
        h, w = self.input_size
        top, bottom = _span(self.y, int(row), h)
        left, right = _span(self.x, int(col), w)
        return top, left, bottom, right

    def boxes(self, rows: Any, cols: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`box` for arrays of rows and columns: (top, left, bottom, right) int32 arrays."""
        h, w = self.input_size
        rows, cols = np.asarray(rows, dtype=np.int64).ravel(), np.asarray(cols, dtype=np.int64).ravel()
        out = []
        for f, idx, n in ((self.y, rows, h), (self.x, cols, w)):
            uniq, inv = np.unique(idx, return_inverse=True)  # one exact computation per distinct row / column
            spans = np.array([_span(f, int(i), n) for i in uniq], dtype=np.int32).reshape(-1, 2)
            out.append(spans[inv.reshape(-1)])
        return out[0][:, 0], out[1][:, 0], out[0][:, 1], out[1][:, 1]

    def to_json(self) -> dict:
        """As stored in an atlas manifest: per axis [jump, lo, hi] (cell i sees lo + i*jump .. hi + i*jump)."""

        def one(a: Optional[Affine]) -> Optional[list[float]]:
            return None if a is None else [float(a.jump), float(a.lo), float(a.hi)]

        return {"y": one(self.y), "x": one(self.x), "input_size": list(self.input_size)}

    @classmethod
    def from_json(cls, data: dict) -> "ReceptiveField":
        """Read :meth:`to_json` (also what atlases built before the engines were merged stored); ValueError if bad."""

        def one(v: Any) -> Optional[Affine]:
            if v is None:
                return None
            jump, lo, hi = (float(t) for t in v)
            if not all(math.isfinite(t) for t in (jump, lo, hi)) or jump <= 0 or hi + 1 < lo:
                raise ValueError("bad receptive field")
            return Affine(_fraction(jump), _fraction(lo), _fraction(hi) + 1)

        h, w = (int(v) for v in data["input_size"])
        if not (0 < h <= 2**16 and 0 < w <= 2**16):
            raise ValueError("bad input size")
        return cls(one(data.get("y")), one(data.get("x")), (h, w))


def _span(a: Optional[Affine], i: int, n: int) -> tuple[int, int]:
    if a is None:
        return 0, n
    lo = math.floor(a.start + i * a.jump)
    hi = math.ceil(a.end + i * a.jump)
    lo, hi = max(0, lo), min(n, hi)
    if hi <= lo:  # a cell computed only from padding: show where it sits
        c = min(max(int(round(a.start + i * a.jump)), 0), n - 1)
        return c, c + 1
    return int(lo), int(hi)


def receptive_fields(model: Any, layers: Sequence[str]) -> dict[str, ReceptiveField]:
    """The receptive field of each named spatial layer of ``model`` (a keras.Model or a loaded model).

    An axis whose field is not one affine map for every cell (paths with different
    jumps joined, or a layer whose geometry is unknown) is the whole image: a box is
    never smaller than what the cell sees.
    """
    km = getattr(model, "model", model)
    tr = trace(km)
    size = spatial_shape(tr.input) or (1, 1)
    table = affines(km)
    out: dict[str, ReceptiveField] = {}
    for name in layers:
        aff = table.get(id(tr.outputs[name]))
        y, x = (None, None) if aff is None else tuple(a if a.sound else None for a in aff)
        out[name] = ReceptiveField(y, x, size)
    return out
