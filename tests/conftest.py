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


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """An empty Keras cache and no network, whatever the machine has."""
    from vizlib import models

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(models, "network_available", lambda *a, **k: False)


@pytest.fixture
def downloads(monkeypatch):
    """The callables behind download buttons, by label: exactly what Streamlit runs on a click."""
    from streamlit.runtime.media_file_manager import MediaFileManager

    registered: dict[str, object] = {}
    real = MediaFileManager.add_deferred

    def spy(self, data_callable, *args, **kwargs):
        file_id = real(self, data_callable, *args, **kwargs)
        registered[file_id] = data_callable
        return file_id

    monkeypatch.setattr(MediaFileManager, "add_deferred", spy)

    def get(at) -> dict[str, bytes]:
        out = {}
        for button in at.get("download_button"):
            make = registered[button.proto.deferred_file_id]
            data = make()
            out[button.proto.label] = data if isinstance(data, bytes) else data.encode()
        return out

    return get
