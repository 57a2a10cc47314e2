"""What each layer sees over the whole depth: per-layer statistics from ONE forward pass."""

from __future__ import annotations

from typing import Any

import numpy as np

from vizlib.errors import InputError
from vizlib.explain.common import cached, keras_model, run_lock
from vizlib.layers import spatial_layers, trace
from vizlib.ops import op
from vizlib.receptive import layer_graph, spatial_shape, theoretical

#: Statistics computed inside the graph per spatial layer, in this order.
PROFILE_STATS = ("mean", "mean_abs", "sparsity", "dead_fraction", "max")


def profile_extractor(m: Any) -> tuple[Any, list[str], bool]:
    """(fn(batch) -> [per-layer stats..., output], layer names, with output?), built and traced once per model.

    The statistics are reduced inside the graph, so one call returns a few numbers per
    layer instead of every activation; and the whole graph runs as one ``tf.function``
    (a few hundred small reductions op by op in eager mode would cost more than the
    forward pass itself on a small model).
    """
    km = keras_model(m)

    def build() -> tuple[Any, list[str], bool]:
        import keras
        import tensorflow as tf
        from keras import ops

        tr = trace(km)
        names = [i.name for i in tr.layers if i.is_spatial]
        outs = []
        for name in names:
            x = ops.cast(tr.outputs[name], "float32")
            ax = (1, 2, 3)
            channel_peak = ops.max(ops.abs(x), axis=(1, 2))
            outs.append(ops.stack([
                ops.mean(x, axis=ax),
                ops.mean(ops.abs(x), axis=ax),
                ops.mean(ops.cast(ops.equal(x, 0.0), "float32"), axis=ax),
                ops.mean(ops.cast(ops.equal(channel_peak, 0.0), "float32"), axis=-1),
                ops.max(x, axis=ax),
            ], axis=-1))
        with_pred = len(km.outputs) == 1
        if with_pred:
            from vizlib.extract import final_output

            outs.append(final_output(m))
        model = keras.Model(tr.input, outs, name="vizlib_depth_profile")
        spec = tf.TensorSpec((None,) + tuple(int(d) for d in tr.input.shape[1:]), tr.input.dtype)
        fn = tf.function(lambda x: model(x, training=False), input_signature=[spec])
        return fn, names, with_pred

    return cached(km, "profile", build)


@op("explain.depth_profile")
def _depth_profile_op(m: Any, batch: np.ndarray) -> dict:
    """Per spatial layer statistics for every image of ``batch``: ONE forward pass for all layers."""
    if batch is None or len(batch) == 0:
        raise InputError("No image given.")
    km = keras_model(m)
    spatial_layers(km)  # a model without feature maps has no profile: say so (numpy's "need at least one array")
    ext, names, with_pred = profile_extractor(m)
    with run_lock(km):
        out = ext(np.asarray(batch, dtype=np.float32))
    out = list(out) if isinstance(out, (list, tuple)) else [out]
    stats = np.stack([np.asarray(o, dtype=np.float32) for o in out[: len(names)]], axis=1)  # (N, L, S)
    tr = trace(km)
    infos = {i.name: i for i in tr.layers}
    rf_sizes, rf_hw, jumps, global_ctx = [], [], [], []
    reaches_global = _global_context_flags(km)
    for name in names:
        theo = theoretical(km, name)
        rf_sizes.append(theo["size"] if theo else None)
        rf_hw.append(list(theo["size_hw"]) if theo else None)
        jumps.append(list(theo["jump_hw"]) if theo else None)
        global_ctx.append(bool(reaches_global.get(id(tr.outputs[name]), False)))
    result = {
        "names": names, "kinds": [infos[n].kind for n in names], "indices": [infos[n].index for n in names],
        "shapes": [list(infos[n].output_shape) for n in names], "stats": stats, "stat_names": list(PROFILE_STATS),
        "receptive_field": rf_sizes, "receptive_field_hw": rf_hw, "jump_hw": jumps, "global_context": global_ctx,
        "input_size": list(m.input_size),
    }
    if with_pred:
        result["output"] = np.asarray(out[-1], dtype=np.float32)
    return result


def _global_context_flags(km: Any) -> dict:
    """id -> whether a tensor depends on the whole input through a global pooling branch."""

    def build() -> dict:
        g = layer_graph(km)
        flags: dict = {}
        for tid in g.order:
            hw = spatial_shape(g.tensor[tid])
            flag = False
            for iid in g.inputs[tid]:
                in_hw = spatial_shape(g.tensor[iid])
                if flags.get(iid):
                    flag = True
                elif hw is not None and hw != (1, 1) and (in_hw is None or in_hw == (1, 1)) and iid != g.input_id:
                    flag = True
            flags[tid] = flag and hw is not None
        return flags

    return cached(km, "global_flags", build)

