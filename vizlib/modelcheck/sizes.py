"""Sizes of what Keras would build from a layer config: hyper-parameter caps, geometry bounds, variable counts.

Plain arithmetic on the parsed config (never Keras): how many variables each weighted layer creates at
build time, and the parameters that multiply activation sizes at inference time.
"""

from __future__ import annotations

import math
from typing import Any

from vizlib.errors import InputError
from vizlib.modelcheck.rules import (LOCAL_HINT, MAX_DEPTH_MULTIPLIER, MAX_DIM, MAX_HEADS, MAX_KERNEL_ELEMENTS,
                                     MAX_PADDING, MAX_RESIZE_SIDE, MAX_UNITS, MAX_UPSAMPLING, MAX_WINDOW)
from vizlib.modelcheck.tables import CONV, CONV_T, DEPTHWISE, SEPARABLE




def _as_int(value: Any) -> int | None:
    if type(value) is int and value >= 0:
        return value
    return None


def _ints(value: Any, rank: int | None = None) -> list[int] | None:
    """An int or a list of ints, as Keras accepts for kernel_size etc."""
    if type(value) is int:
        return [value] * (rank or 1) if value >= 0 else None
    if isinstance(value, list) and value and all(type(v) is int and v >= 0 for v in value):
        return list(value)
    return None


def _hp_error(cls: str, key: str, where: str | None, file_name: str, limit: int) -> InputError:
    return InputError(
        f"Layer '{where or cls}' ({cls}) in '{file_name}' sets {key} beyond {limit:,} (or to a "
        f"non-integer), which is far outside what the dashboard can handle. Upload a smaller "
        f"model, {LOCAL_HINT}."
    )


def check_hyperparameters(cls: str, cfg: dict, where: str | None, file_name: str) -> None:
    checks: list[tuple[str, int]] = []
    if cls in CONV or cls in CONV_T or cls in SEPARABLE:
        checks.append(("filters", MAX_UNITS))
    if cls == "Dense":
        checks.append(("units", MAX_UNITS))
    if cls == "LayerScale":
        checks.append(("projection_dim", MAX_UNITS))
    if cls in SEPARABLE or cls in DEPTHWISE:
        checks.append(("depth_multiplier", MAX_DEPTH_MULTIPLIER))
    if cls == "MultiHeadAttention":
        checks += [("num_heads", MAX_HEADS), ("key_dim", MAX_UNITS)]
        if cfg.get("value_dim") is not None:
            checks.append(("value_dim", MAX_UNITS))
    for key, limit in checks:
        value = _as_int(cfg.get(key))
        if value is None or value > limit:
            raise _hp_error(cls, key, where, file_name, limit)
    if cls in CONV or cls in CONV_T or cls in SEPARABLE or cls in DEPTHWISE:
        kernel = _ints(cfg.get("kernel_size"))
        if kernel is None or math.prod(kernel) > MAX_KERNEL_ELEMENTS:
            raise _hp_error(cls, "kernel_size", where, file_name, MAX_KERNEL_ELEMENTS)


def check_geometry(
    cls: str, cfg: dict, where: str | None, file_name: str, max_input_elements: int
) -> None:
    """Bound parameters that multiply activation sizes at inference time."""

    def refuse(key: str, limit: int) -> InputError:
        return _hp_error(cls, key, where, file_name, limit)

    # Windows, strides and dilations on any axis: beyond MAX_WINDOW nothing is a CNN any more, and the
    # receptive-field arithmetic (vizlib.receptive, the same bound) would refuse the model later anyway.
    for key in ("kernel_size", "strides", "pool_size", "dilation_rate"):
        value = cfg.get(key)
        if value is not None and (_ints(value) is None or max(_ints(value) or [0]) > MAX_WINDOW):
            raise refuse(key, MAX_WINDOW)
    if cls.startswith("UpSampling"):
        size = _ints(cfg.get("size"))
        if size is None or math.prod(size) > MAX_UPSAMPLING:
            raise refuse("size", MAX_UPSAMPLING)
    elif cls in CONV_T:
        strides = _ints(cfg.get("strides", 1))
        if strides is None or math.prod(strides) > MAX_UPSAMPLING:
            raise refuse("strides", MAX_UPSAMPLING)
    elif cls.startswith("ZeroPadding"):
        flat = _flatten_ints(cfg.get("padding"))
        if flat is None or any(p > MAX_PADDING for p in flat):
            raise refuse("padding", MAX_PADDING)
    elif cls in ("Resizing", "CenterCrop", "RandomCrop"):
        h, w = _as_int(cfg.get("height")), _as_int(cfg.get("width"))
        if h is None or h > MAX_RESIZE_SIDE:
            raise refuse("height", MAX_RESIZE_SIDE)
        if w is None or w > MAX_RESIZE_SIDE:
            raise refuse("width", MAX_RESIZE_SIDE)


def _flatten_ints(value: Any) -> list[int] | None:
    out: list[int] = []
    stack = [value]
    while stack:
        v = stack.pop()
        if type(v) is int and v >= 0:
            out.append(v)
        elif isinstance(v, list) and len(out) + len(v) < 64:
            stack.extend(v)
        else:
            return None
    return out


def build_input_shape(build_config: dict) -> Any:
    if "input_shape" in build_config:
        return build_config["input_shape"]
    shapes = build_config.get("shapes_dict")
    if isinstance(shapes, dict):
        return shapes
    return None


def valid_shape(value: Any) -> list[int | None] | None:
    if isinstance(value, list) and all(
        d is None or (type(d) is int and 0 <= d <= MAX_DIM) for d in value
    ):
        return value
    return None


def _dim(shape: list[int | None], axis: int) -> int:
    try:
        d = shape[axis]
    except IndexError:
        return 0
    return d if isinstance(d, int) else 0


def _channels(cfg: dict, shape: list[int | None]) -> int:
    axis = 1 if cfg.get("data_format") == "channels_first" else -1
    return _dim(shape, axis)


def _axis_product(shape: list[int | None], axis: Any) -> int:
    axes = [axis] if type(axis) is int else axis if isinstance(axis, list) else [-1]
    total = 1
    for a in axes:
        if type(a) is not int:
            return 0
        total *= _dim(shape, a)
    return total


def estimate_params(cls: str, cfg: dict, raw_shape: Any, build_config: dict) -> int | None:
    """Number of variables ``cls`` creates when built with ``raw_shape``.

    Returns None when the recorded shape is unusable.
    """
    if cls == "MultiHeadAttention":
        shapes = raw_shape if isinstance(raw_shape, dict) else {}
        q = valid_shape(shapes.get("query_shape"))
        v = valid_shape(shapes.get("value_shape"))
        k = valid_shape(shapes.get("key_shape")) or v
        if q is None or v is None or k is None:
            return None
        heads, kdim = cfg["num_heads"], cfg["key_dim"]
        vdim = cfg.get("value_dim") or kdim
        out = _dim(q, -1)
        out_shape = cfg.get("output_shape")
        if type(out_shape) is int:
            out = out_shape
        elif isinstance(out_shape, list) and _ints(out_shape):
            out = math.prod(out_shape)
        return (
            _dim(q, -1) * heads * kdim + heads * kdim
            + _dim(k, -1) * heads * kdim + heads * kdim
            + _dim(v, -1) * heads * vdim + heads * vdim
            + heads * vdim * out + out
        )
    if isinstance(raw_shape, list) and raw_shape and isinstance(raw_shape[0], list):
        raw_shape = raw_shape[0]  # several inputs: the first decides
    shape = valid_shape(raw_shape)
    if shape is None:
        return None
    bias = 1 if cfg.get("use_bias", True) else 0
    if cls in CONV:
        rank = CONV[cls]
        k = math.prod(_ints(cfg["kernel_size"], rank) or [0])
        groups = _as_int(cfg.get("groups", 1)) or 1
        filters = cfg["filters"]
        return k * (_channels(cfg, shape) // groups) * filters + bias * filters
    if cls in CONV_T:
        rank = CONV_T[cls]
        k = math.prod(_ints(cfg["kernel_size"], rank) or [0])
        filters = cfg["filters"]
        return k * _channels(cfg, shape) * filters + bias * filters
    if cls in SEPARABLE:
        rank = SEPARABLE[cls]
        k = math.prod(_ints(cfg["kernel_size"], rank) or [0])
        dm, filters, c = cfg["depth_multiplier"], cfg["filters"], _channels(cfg, shape)
        return k * c * dm + c * dm * filters + bias * filters
    if cls in DEPTHWISE:
        rank = DEPTHWISE[cls]
        k = math.prod(_ints(cfg["kernel_size"], rank) or [0])
        dm, c = cfg["depth_multiplier"], _channels(cfg, shape)
        return k * c * dm + bias * c * dm
    if cls == "Dense":
        units = cfg["units"]
        return _dim(shape, -1) * units + bias * units
    if cls == "BatchNormalization":
        return 4 * _axis_product(shape, cfg.get("axis", -1))
    if cls in ("LayerNormalization", "GroupNormalization"):
        return 2 * _axis_product(shape, cfg.get("axis", -1))
    if cls == "Normalization":
        return 3 * _axis_product(shape, cfg.get("axis", -1)) + 1
    if cls == "PReLU":
        return math.prod(d or 1 for d in shape[1:])
    if cls == "LayerScale":
        return cfg["projection_dim"]
    return 0


def dtype_name(cfg: dict) -> str | None:
    dtype = cfg.get("dtype")
    if isinstance(dtype, str):
        return dtype
    if isinstance(dtype, dict) and isinstance(dtype.get("config"), dict):
        name = dtype["config"].get("name")
        return name if isinstance(name, str) else None
    return None
