"""Receptive fields for the explain API, as a model operation (the engine is :mod:`vizlib.receptive`)."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from vizlib.errors import InputError
from vizlib.explain.common import keras_model
from vizlib.layers import find_layer, trace
from vizlib.ops import op
from vizlib.receptive import box_of, dependence_masks, spatial_shape, theoretical


@op("explain.receptive_field")
def _receptive_field_op(m: Any, batch: Optional[np.ndarray], *, layer: str, row: int, col: int) -> dict:
    km = keras_model(m)
    info = find_layer(km, str(layer))
    h, w, _ = info.output_shape
    row, col = int(row), int(col)
    if not (0 <= row < h and 0 <= col < w):
        raise InputError(f"Layer '{layer}' is {h} x {w}; there is no cell at row {row}, column {col}.")
    rows, cols, extra = dependence_masks(km, info.name, row, col)
    theo = theoretical(km, info.name)
    return {
        "box": list(box_of(rows, cols)), "layer": info.name, "row": row, "col": col,
        "size": theo["size"] if theo else None, "size_hw": list(theo["size_hw"]) if theo else None,
        "jump_hw": list(theo["jump_hw"]) if theo else None, "global_context": bool(extra["global_context"]),
        "assumed_pointwise": extra["assumed_pointwise"], "unknown_layers": extra["unknown"],
        "input_size": list(spatial_shape(trace(km).input)),
    }

