"""Shared fixtures: real models, small and offline."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def bundled():
    """The bundled facial-expression CNN (real pretrained weights, 64x64 greyscale)."""
    from vizlib.models import load_bundled_model

    return load_bundled_model()


@pytest.fixture(scope="session")
def nested_vgg():
    """The usual transfer-learning shape: a VGG16 base (untrained) inside a Sequential."""
    import keras

    base = keras.applications.VGG16(weights=None, include_top=False, input_shape=(32, 32, 3))
    model = keras.Sequential([
        keras.Input((32, 32, 3)), base, keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(4, activation="softmax"),
    ], name="transfer")
    return model, base


@pytest.fixture(scope="session")
def mobilenet():
    """A real architecture with branches (residual adds), untrained, at a small input size."""
    import keras

    return keras.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3), alpha=0.35)
