"""One convolution, by hand: the numbers behind one output value of a Conv2D, for teaching."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from vizlib.errors import InputError
from vizlib.explain.common import activation_name, cached, keras_model, run_lock
from vizlib.layers import find_layer, trace
from vizlib.ops import op
from vizlib.receptive import box_of, check_channels_last, dependence_masks, layer_graph, windows


def _first_plain_conv(km: Any) -> str:
    """The first Conv2D in forward order (depthwise / separable / transposed ones are skipped)."""
    import keras

    tr = trace(km)
    g = layer_graph(km)
    for info in tr.layers:
        if info.is_spatial and isinstance(g.op.get(id(tr.outputs[info.name])), keras.layers.Conv2D):
            return info.name
    raise InputError("This model has no plain Conv2D layer, so there is no convolution arithmetic to show.")


def input_channel_order(m: Any, channels: int) -> str:
    """The order of a model's input colour channels: "BGR" for models fed 'caffe'-style (VGG, ResNet50),
    "RGB" for other 3-channel inputs, "" otherwise (the conv arithmetic and the kernel pictures use it)."""
    pre_name = str(getattr(m, "preprocess_name", ""))
    bgr = channels == 3 and any(k in pre_name for k in ("caffe", "vgg16", "vgg19", "resnet50", "resnet."))
    return "BGR" if bgr else ("RGB" if channels == 3 else "")


@op("explain.conv_arithmetic")
def _conv_arithmetic_op(m: Any, batch: np.ndarray, *, row: int, col: int, channel: int = 0,
                        layer: Optional[str] = None) -> dict:
    """The numbers behind one output value of a Conv2D: input patch, kernel, bias, sum, activation."""
    import keras

    if batch is None or len(batch) != 1:
        raise InputError("Give exactly one image.")
    km = keras_model(m)
    tr = trace(km)
    g = layer_graph(km)
    name = _first_plain_conv(km) if layer in (None, "") else str(layer)
    info = find_layer(km, name)
    out_t = tr.outputs[name]
    conv = g.op.get(id(out_t))
    if not isinstance(conv, keras.layers.Conv2D) or isinstance(conv, keras.layers.Conv2DTranspose):
        raise InputError(f"Layer '{name}' is a {info.kind}; the arithmetic is shown for Conv2D layers.")
    check_channels_last(conv)
    h, w, c_out = info.output_shape
    row, col, channel = int(row), int(col), int(channel)
    if not (0 <= row < h and 0 <= col < w):
        raise InputError(f"Layer '{name}' is {h} x {w}; there is no cell at row {row}, column {col}.")
    if not 0 <= channel < c_out:
        raise InputError(f"Layer '{name}' has channels 0 to {c_out - 1}; there is no channel {channel}.")
    in_t = g.tensor[g.inputs[id(out_t)][0]]
    ext = cached(km, ("arith", name), lambda: keras.Model(tr.input, [in_t, out_t], name="vizlib_conv_arith"))
    with run_lock(km):
        x_in, y = ext(batch, training=False)
    x_in = np.asarray(x_in, dtype=np.float32)[0]
    y = np.asarray(y, dtype=np.float32)[0]
    in_hw = x_in.shape[:2]
    wins = windows(conv, "Conv2D", in_hw, (h, w))
    rows = row * wins[0].s - wins[0].p + np.arange(wins[0].k) * wins[0].d
    cols = col * wins[1].s - wins[1].p + np.arange(wins[1].k) * wins[1].d
    kernel = np.asarray(conv.kernel, dtype=np.float32)  # (kh, kw, c_in / groups, c_out)
    groups = int(getattr(conv, "groups", 1) or 1)
    per_group = kernel.shape[2]
    group = channel // (c_out // groups)
    in_channels = list(range(group * per_group, (group + 1) * per_group))
    patch = np.zeros((len(rows), len(cols), per_group), dtype=np.float32)
    r_ok = (rows >= 0) & (rows < in_hw[0])
    c_ok = (cols >= 0) & (cols < in_hw[1])
    sub = x_in[np.clip(rows, 0, in_hw[0] - 1)][:, np.clip(cols, 0, in_hw[1] - 1)][:, :, in_channels]
    patch[:] = sub * (r_ok[:, None, None] & c_ok[None, :, None])
    weights = kernel[:, :, :, channel]
    bias = float(np.asarray(conv.bias)[channel]) if conv.use_bias and conv.bias is not None else 0.0
    products = patch.astype(np.float64) * weights.astype(np.float64)
    pre = float(products.sum() + bias)
    act_name = activation_name(conv.activation)
    post = float(np.asarray(keras.ops.convert_to_numpy(conv.activation(np.array([pre], dtype=np.float32))))[0])
    rows_rf, cols_rf, _ = dependence_masks(km, name, row, col)
    between = [i.kind for i in tr.layers if i.index < info.index]
    followed = []
    for i in tr.layers[info.index + 1:]:
        if i.is_conv or not i.is_spatial or len(followed) == 3:
            break
        followed.append(i.kind)
    pre_name = str(getattr(m, "preprocess_name", ""))
    order = input_channel_order(m, x_in.shape[-1])
    source = (f"Input values: the image's pixels after the model's preprocessing ({pre_name})" if pre_name
              else "Input values: the image as the model receives it")
    if between:
        source += f", then {', '.join(between)}"
    return {
        "layer": name, "row": row, "col": col, "channel": channel,
        "patch": patch, "kernel": weights, "products": products.astype(np.float32),
        "per_input_channel": products.sum(axis=(0, 1)).astype(np.float32),
        "bias": bias, "pre_activation": pre, "activation": act_name, "value": post,
        "model_value": float(y[row, col, channel]),
        "input_rows": [int(r) if ok else -1 for r, ok in zip(rows, r_ok)],
        "input_cols": [int(c) if ok else -1 for c, ok in zip(cols, c_ok)],
        "input_channels": in_channels, "strides": [wins[0].s, wins[1].s], "dilation": [wins[0].d, wins[1].d],
        "padding": str(conv.padding), "pad_before": [wins[0].p, wins[1].p],
        "input_is_model_input": id(in_t) == id(tr.input), "input_source": source,
        "channel_order": order, "followed_by": followed,
        "input_layer": getattr(g.op.get(id(in_t)), "name", "input"),
        "box": list(box_of(rows_rf, cols_rf)),
    }

