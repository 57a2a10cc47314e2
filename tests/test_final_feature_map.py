""""Last conv layer" means the final feature map the classifier reads (issue #8).

For VGG-style models that is the last Conv2D; for architectures whose last
Conv2D is a layer inside a block (DenseNet, ResNet, ConvNeXt, Inception) it is
the block's output. Checked on every catalogue architecture (untrained, built
offline), the bundled model, a nested transfer-learning model, and an uploaded
model that only reports its layer list from a child process.
"""

from __future__ import annotations

import os
import re

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

import vizlib  # noqa: E402  (before keras: sets TF_ENABLE_ONEDNN_OPTS)
from vizlib.layers import (  # noqa: E402
    conv_layers, final_feature_map, final_feature_map_reason, last_conv, spatial_layers,
)
from vizlib.models import CATALOGUE  # noqa: E402

#: name -> (final feature map, its output shape, the literal last convolution or None when the same),
#: names as regular expressions: Keras numbers unnamed layers per process ("add_29", "add_60").
EXPECTED = {
    "vgg16": ("block5_conv3", (14, 14, 512), None),
    "vgg19": ("block5_conv4", (14, 14, 512), None),
    "resnet50": ("conv5_block3_out", (7, 7, 2048), "conv5_block3_3_conv"),
    "mobilenet_v2": ("out_relu", (7, 7, 1280), "Conv_1"),
    "efficientnet_b0": ("top_activation", (7, 7, 1280), "top_conv"),
    "inception_v3": ("mixed10", (8, 8, 2048), r"conv2d(_\d+)?"),
    "densenet121": ("relu", (7, 7, 1024), "conv5_block16_2_conv"),
    "xception": ("block14_sepconv2_act", (10, 10, 2048), "block14_sepconv2"),
    "convnext_tiny": (r"add(_\d+)?", (7, 7, 768), "convnext_tiny_stage_3_block_2_depthwise_conv"),
}


def test_every_catalogue_architecture_is_listed():
    assert set(EXPECTED) == set(CATALOGUE)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_catalogue_final_feature_map(name):
    m = vizlib.load_model(name, weights=None)
    want, shape, inner = EXPECTED[name]
    final = final_feature_map(m)
    assert re.fullmatch(want, final.name) and final.output_shape == shape, final
    assert last_conv(m) == final
    literal = conv_layers(m)[-1]
    reason = final_feature_map_reason(m)
    if inner is None:  # VGG-style: the last Conv2D is the final feature map, nothing to explain
        assert literal == final and reason is None
    else:  # the inner layer stays reachable (it's in the layer list) and the reason names both
        assert re.fullmatch(inner, literal.name) and literal in spatial_layers(m)
        assert reason and final.name in reason and literal.name in reason and "\n" not in reason
    # It is what the classifier's pooling / flatten reads: every later layer passes maps on or is the head.
    later = [i for i in spatial_layers(m) if i.index > final.index]
    assert all("Pool" in i.kind or "Dropout" in i.kind or "Reshape" in i.kind for i in later), later


def test_bundled_model_keeps_its_last_conv(bundled):
    final = final_feature_map(bundled)
    assert (final.name, final.output_shape) == ("conv2d_7", (4, 4, 7))  # one map per emotion, then pooling
    assert last_conv(bundled) == final and final_feature_map_reason(bundled) is None


def test_nested_transfer_model_reads_the_base_output(nested_vgg):
    """The nested model's own entry ("vgg16", its pooled 1x1 output) is not a layer of its own."""
    model, _ = nested_vgg
    m = vizlib.load_model(model)
    assert final_feature_map(m).name == "vgg16/block5_conv3"
    assert final_feature_map_reason(m) is None


def test_reason_for_activation_after_the_last_conv():
    import keras

    inp = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, name="c1")(inp)
    x = keras.layers.Conv2D(6, 3, name="c2")(x)
    x = keras.layers.BatchNormalization(name="c2_bn")(x)
    x = keras.layers.ReLU(name="c2_relu")(x)
    x = keras.layers.ZeroPadding2D(name="pad")(x)
    x = keras.layers.MaxPooling2D(name="pool")(x)
    out = keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(x))
    m = vizlib.load_model(keras.Model(inp, out), preprocess="raw")
    assert final_feature_map(m).name == "c2_relu"  # padding and pooling pass the map on
    reason = final_feature_map_reason(m)
    assert reason and "c2_relu" in reason and "c2" in reason and "normalisation and activation" in reason


def test_a_1x1_head_is_not_the_final_map():
    """MobileNet (v1) style: pooled features reshaped to 1x1 and a 1x1 conv classifier."""
    import keras

    inp = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, activation="relu", name="features")(inp)
    x = keras.layers.GlobalAveragePooling2D(keepdims=True, name="gap")(x)
    x = keras.layers.Dropout(0.1, name="drop")(x)
    x = keras.layers.Conv2D(5, 1, name="conv_preds")(x)  # (1, 1, 5): the classifier, not a map
    out = keras.layers.Activation("softmax")(keras.layers.Reshape((5,))(x))
    m = vizlib.load_model(keras.Model(inp, out), preprocess="raw")
    assert [i.name for i in spatial_layers(m)][-1] == "conv_preds"
    assert final_feature_map(m).name == "features"


@pytest.fixture(scope="module")
def block_model_path(tmp_path_factory):
    """A small residual CNN whose last Conv2D is inside its last block, saved as an upload would be."""
    import keras

    inp = keras.Input((24, 24, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="stem")(inp)
    y = keras.layers.Conv2D(8, 3, padding="same", name="block_conv")(x)
    y = keras.layers.BatchNormalization(name="block_bn")(y)
    x = keras.layers.Add(name="block_add")([x, y])
    x = keras.layers.Activation("relu", name="block_out")(x)
    out = keras.layers.Dense(4, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x))
    path = tmp_path_factory.mktemp("upload") / "block_model.keras"
    keras.Model(inp, out).save(path)
    return path


def test_uploaded_model_in_a_child_process(block_model_path):
    """An isolated model reports only LayerInfos; the rule works from those alone."""
    from vizlib.isolation import IsolatedModel

    with IsolatedModel(block_model_path, preprocess="unit") as m:
        final = final_feature_map(m)
        assert (final.name, final.output_shape) == ("block_out", (24, 24, 8))
        assert conv_layers(m)[-1].name == "block_conv"
        reason = final_feature_map_reason(m)
        assert reason and "block_out" in reason and "block_conv" in reason
