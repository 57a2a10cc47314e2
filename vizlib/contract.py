"""One contract for a model: what vizlib and the page may ask of any model they hold.

The bundled model, a Keras Applications model, a notebook's ``keras.Model``
(all :class:`vizlib.models.LoadedModel`, in this process) and an uploaded file
running in its own process (:class:`vizlib.isolation.IsolatedModel`) all
satisfy :class:`VizModel`. Code above this line never asks which kind it
holds: it reads the plain facts (input size, layers, class names) and runs
named operations (:mod:`vizlib.ops`) with :meth:`VizModel.run`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from vizlib.layers import LayerInfo


@runtime_checkable
class VizModel(Protocol):
    """Any model the dashboard can show."""

    #: Identifies the model's content (catalogue name + weights, or a file's SHA-256): the cache key.
    key: str
    #: Short name, e.g. "VGG16" or the uploaded file's name.
    title: str
    #: "imagenet", "untrained", "bundled", "file" or "in-memory".
    weights: str
    #: (height, width) the model takes.
    input_size: tuple[int, int]
    #: 1 for greyscale, 3 for RGB.
    channels: int
    #: One name per output unit of a classifier, or None.
    class_names: Optional[list[str]]
    #: How pixels are scaled before the model, as shown to users.
    preprocess_name: str
    #: Where the model came from, as shown to users.
    source: str

    @property
    def label(self) -> str:
        """Title plus weights, as shown wherever the model is named."""

    @property
    def untrained(self) -> bool:
        """True for randomly initialised weights."""

    @property
    def is_classifier(self) -> bool:
        """True when the model has one output of class scores."""

    @property
    def layers(self) -> "list[LayerInfo]":
        """Every layer in forward order, nested models flattened as ``outer/inner``."""

    def raw_batch(self, images: Any) -> np.ndarray:
        """float32 (N, H, W, C) pixels 0..255 at the model's size, from PIL images or an array."""

    def run(self, op: str, batch: Optional[np.ndarray] = None, **params: Any) -> dict:
        """Run the operation ``op`` (see :mod:`vizlib.ops`) on a raw batch, where the model lives."""

    def weights_digest(self) -> str:
        """A fingerprint of the weights (SHA-256 hex), for caches and manifests."""

    def untrained_copy(self, seed: int = 0) -> "VizModel":
        """The same architecture with randomly initialised weights (deterministic for ``seed``)."""


def as_model(model: Any, **kwargs: Any) -> VizModel:
    """Anything :func:`vizlib.load_model` accepts (or returns) as a :class:`VizModel`."""
    if isinstance(model, VizModel) and not isinstance(model, (str, bytes)):
        return model
    from vizlib.models import load_model

    return load_model(model, **kwargs)
