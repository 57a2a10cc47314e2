"""Which layers of a model have (H, W, C) maps, in forward order; the first and last conv.

Layers inside nested models (a VGG16 base inside a Sequential, the usual
transfer-learning shape) are listed too, named ``base/layer``. To reach them,
the model's graph is traced once onto a fresh input: every layer is called
again on symbolic tensors (sharing its weights), so each one's output becomes
addressable from the outer input. The trace is cached per model object.
"""

from __future__ import annotations

import os

from dataclasses import dataclass
from typing import Any

from vizlib import permodel
from vizlib.errors import InputError

#: Input height / width used for models that leave them open (None).
DEFAULT_SIZE = 224

#: Layer classes that count as convolutions for "first" and "last" conv layer.
CONV_KINDS = frozenset({
    "Conv2D", "SeparableConv2D", "DepthwiseConv2D", "Conv2DTranspose", "Convolution2D",
    "SeparableConvolution2D",
})


@dataclass(frozen=True)
class LayerInfo:
    """One layer as the dashboard lists it (what the tutorial prints, plus where it sits)."""

    index: int  # position in forward order over the whole (flattened) model
    name: str  # unique; "outer_model/inner_layer" for layers of nested models
    kind: str  # the layer's class name, e.g. "Conv2D"
    output_shape: tuple  # without the batch axis, e.g. (224, 224, 64)

    @property
    def is_spatial(self) -> bool:
        return len(self.output_shape) == 3 and all(d is not None for d in self.output_shape)

    @property
    def is_conv(self) -> bool:
        return self.kind in CONV_KINDS

    @property
    def channels(self) -> int:
        return int(self.output_shape[-1]) if self.output_shape else 0

    def describe(self) -> str:
        shape = " x ".join(str(d) for d in self.output_shape)
        return f"#{self.index} {self.name} ({self.kind}, {shape})"


@dataclass
class Trace:
    """A model's graph re-traced from one fresh input: every layer output addressable."""

    input: Any
    outputs: dict[str, Any]  # layer name -> symbolic output tensor, forward order
    layers: list[LayerInfo]
    final: Any = None  # the model's own output(s), reached through the traced graph


_TRACES = permodel.Slot("layers.trace")


def _keras_model(model: Any) -> Any:
    """The ``keras.Model`` of an in-process model (``LoadedModel.model``), or the model itself."""
    from vizlib.models import LoadedModel

    return model.model if isinstance(model, LoadedModel) else model


def _is_graph_model(layer: Any) -> bool:
    import keras

    return isinstance(layer, keras.Model) and (
        isinstance(layer, keras.Sequential) or hasattr(layer, "_nodes_by_depth")
    )


def _trace(model: Any) -> Trace:
    import keras
    from keras import tree

    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    if not inputs:
        raise InputError("This model has no defined input; build it with keras.Input(shape=...) first.")
    if len(inputs) != 1:
        raise InputError(f"This model has {len(inputs)} inputs; the dashboard needs a model with one image input.")
    shape = tuple(inputs[0].shape)
    if len(shape) == 4 and (shape[1] is None or shape[2] is None):
        # A fully convolutional model: trace at the size vizlib feeds it (see models.describe_keras_model).
        shape = (None, shape[1] or DEFAULT_SIZE, shape[2] or DEFAULT_SIZE, shape[3])
    fresh = keras.Input(batch_shape=shape, dtype=inputs[0].dtype, name="vizlib_input")
    outputs: dict[str, Any] = {}
    order: list[tuple[str, Any, Any]] = []

    def record(name: str, layer: Any, out: Any) -> None:
        unique, n = name, 2
        while unique in outputs:
            unique, n = f"{name}#{n}", n + 1
        outputs[unique] = out
        order.append((unique, layer, out))

    def run(m: Any, x: Any, prefix: str) -> Any:
        if isinstance(m, keras.Sequential):
            for layer in m.layers:
                x = call(layer, prefix)(x)
            return x

        def operation_fn(op: Any) -> Any:
            return call(op, prefix)

        return m._run_through_graph(x, operation_fn=operation_fn)

    def call(layer: Any, prefix: str) -> Any:
        def fn(*args: Any, **kwargs: Any) -> Any:
            if _is_graph_model(layer) and len(layer.inputs) == 1:
                arg = args[0] if args else next(iter(kwargs.values()))
                out = run(layer, arg, prefix + layer.name + "/")
            else:
                out = layer(*args, **kwargs)
            record(prefix + layer.name, layer, out)
            return out

        return fn

    final: Any = None
    try:
        final = run(model, fresh, "")
    except InputError:
        raise
    except Exception as exc:  # an exotic graph we can't re-trace: fall back to the top level only
        outputs.clear()
        order.clear()
        for layer in model.layers:
            try:
                record(layer.name, layer, layer.output)
            except (AttributeError, ValueError):
                continue
        fresh = inputs[0]
        final = model.outputs
        if not order:
            raise InputError(f"Could not read this model's layers ({exc}).") from exc

    infos = []
    for i, (name, layer, out) in enumerate(order):
        flat = tree.flatten(out)
        shape = tuple(flat[0].shape[1:]) if len(flat) == 1 else ()
        infos.append(LayerInfo(index=i, name=name, kind=type(layer).__name__, output_shape=shape))
    return Trace(input=fresh, outputs=outputs, layers=infos, final=final)


def trace(model: Any) -> Trace:
    """The cached :class:`Trace` of ``model`` (a ``keras.Model`` or a ``LoadedModel``)."""
    km = _keras_model(model)
    # Built outside the store's lock; if two threads race, the first stored trace is the one everyone gets.
    return permodel.cached(km, _TRACES, "trace", lambda: _trace(km))


def _infos(model: Any) -> list[LayerInfo]:
    """Layer list of a model: a :class:`vizlib.contract.VizModel` says it; a bare ``keras.Model`` is traced."""
    from vizlib.contract import VizModel, as_model

    if isinstance(model, (str, os.PathLike)):  # a catalogue name or a model file, as every vizlib function takes
        model = as_model(model)
    if isinstance(model, VizModel):
        return list(model.layers)
    return trace(model).layers


def all_layers(model: Any) -> list[LayerInfo]:
    """Every layer in forward order, nested models flattened, with output shapes."""
    return list(_infos(model))


def spatial_layers(model: Any) -> list[LayerInfo]:
    """Layers whose output is a 2D spatial map stack (H, W, C), in forward order.

    Raises :class:`InputError` when the model has none (e.g. a dense-only model).
    """
    found = [info for info in _infos(model) if info.is_spatial]
    if not found:
        raise InputError(
            "This model has no layers with 2D spatial output (height x width x channels), "
            "so there are no feature maps to show. Use a convolutional image model."
        )
    return found


def conv_layers(model: Any) -> list[LayerInfo]:
    """Spatial convolution layers in forward order (falls back to all spatial layers)."""
    spatial = spatial_layers(model)
    convs = [info for info in spatial if info.is_conv]
    return convs or spatial


def first_conv(model: Any) -> LayerInfo:
    """The first convolution layer: edges and colours, still recognisably the image."""
    return conv_layers(model)[0]


def last_conv(model: Any) -> LayerInfo:
    """The "last conv layer" as users mean it: the final feature map, closest to the prediction.

    That is :func:`final_feature_map`: the last ``Conv2D`` itself for VGG-style
    models, the last block's output where the last ``Conv2D`` is a layer inside
    a block (DenseNet, ResNet, ConvNeXt, Inception). The literal last
    convolution is ``conv_layers(model)[-1]``.
    """
    return final_feature_map(model)


def find_layer(model: Any, name: str, *, spatial: bool = True) -> LayerInfo:
    """Look a layer up by name (``InputError`` naming close matches when absent or not spatial)."""
    for info in _infos(model):
        if info.name == name:
            if spatial and not info.is_spatial:
                raise InputError(
                    f"Layer '{name}' ({info.kind}) outputs shape {info.output_shape}, not a 2D map "
                    "stack (height x width x channels); pick a convolution or pooling layer."
                )
            return info
    import difflib

    names = [i.name for i in _infos(model)]
    close = difflib.get_close_matches(name, names, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise InputError(f"This model has no layer named '{name}'.{hint}")


def layer_table(model: Any) -> list[dict[str, Any]]:
    """Rows for a table of all layers: index, name, type, output shape, spatial or not."""
    return [
        {
            "index": i.index,
            "name": i.name,
            "type": i.kind,
            "output shape": "(" + ", ".join(str(d) for d in i.output_shape) + ")",
            "maps": "yes" if i.is_spatial else "",
        }
        for i in _infos(model)
    ]


# --------------------------------------------------------------------------- the final feature map

#: Layer kinds that pass maps on (pool, pad, crop, drop, reshape) rather than make the final feature map.
_PASS_ON_MARKS = ("Pool", "Padding", "Cropping", "Dropout", "Noise", "Reshape", "Flatten", "Permute",
                  "RepeatVector", "UpSampling", "Resizing", "Rescaling", "ActivityRegularization", "Masking",
                  "InputLayer")
_NORM_MARK = "Normalization"
_ACTIVATION_KINDS = frozenset({"Activation", "ReLU", "LeakyReLU", "PReLU", "ELU", "Softmax", "ThresholdedReLU"})


def _passes_on(kind: str) -> bool:
    return any(mark in kind for mark in _PASS_ON_MARKS)


def container_names(infos: list[LayerInfo]) -> set[str]:
    """Names of nested models: "base" when "base/conv1" is listed (its output is its last layer's)."""
    out: set[str] = set()
    for info in infos:
        parts = info.name.split("/")
        out.update("/".join(parts[:k]) for k in range(1, len(parts)))
    return out


def final_feature_map(model: Any) -> LayerInfo:
    """The final feature map: the last layer with (H, W, C) maps that the classifier reads.

    Worked out from the layer list alone (so it holds for a model that only
    reports its :class:`LayerInfo` list, as an uploaded model's child process
    does): the last spatial layer that is not pooling, padding, cropping,
    dropout, noise or reshaping, nor a nested model's own entry, preferring maps
    larger than 1x1 (a head that reshapes pooled features to 1x1 is not a
    map). VGG16 gives ``block5_conv3``, ResNet50 ``conv5_block3_out``,
    DenseNet121 the final 7x7x1024 ``relu``, MobileNetV2 ``out_relu``,
    ConvNeXtTiny its last block's output. Grad-CAM needs this layer.
    """
    infos = list(_infos(model))
    spatial = spatial_layers(model)
    containers = container_names(infos)
    found = [i for i in spatial if not _passes_on(i.kind) and i.name not in containers]
    maps = [i for i in found if int(i.output_shape[0]) * int(i.output_shape[1]) > 1]
    return (maps or found or conv_layers(model))[-1]


def final_feature_map_reason(model: Any) -> str | None:
    """One line saying why :func:`final_feature_map` is not the last convolution; None when it is."""
    final = final_feature_map(model)
    convs = [i for i in spatial_layers(model) if i.is_conv]
    if not convs or convs[-1].name == final.name:
        return None
    last = convs[-1]

    def shape(info: LayerInfo) -> str:
        return "×".join(str(d) for d in info.output_shape)

    if final.index < last.index:
        return (f"{final.name} ({final.kind}, {shape(final)}) is the final feature map the classifier reads; "
                f"the convolution {last.name} comes after it on a side branch.")
    between = [i for i in _infos(model) if last.index < i.index <= final.index]
    norm = any(_NORM_MARK in i.kind for i in between)
    act = any(i.kind in _ACTIVATION_KINDS for i in between)
    if between and all(_NORM_MARK in i.kind or i.kind in _ACTIVATION_KINDS for i in between):
        what = ("normalisation and activation" if norm and act else "its activation" if act
                else "normalisation")
        return (f"{final.name} ({shape(final)}) is the last convolution, {last.name}, after {what}: "
                "the map the classifier reads.")
    return (f"{final.name} ({final.kind}, {shape(final)}) is the final feature map, the one the classifier "
            f"reads; the last convolution, {last.name} ({shape(last)}), is a layer inside the last block.")
