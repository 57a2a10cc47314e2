"""What :func:`vizlib.modelcheck.check_model_file` found in an accepted file."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelFileReport:
    """What :func:`check_model_file` found in an accepted file.

    Attributes:
        format: ``"keras"`` (Keras 3 zip archive) or ``"h5"`` (legacy HDF5
            full-model file).
        file_bytes: size of the file on disk.
        n_layers: number of layers in the config, counting those inside
            nested models (and the nested models themselves).
        class_names: sorted Keras class names the config uses.
        declared_weight_bytes: bytes the HDF5 weight datasets declare
            (shape x itemsize, read from metadata; no data was read).
        estimated_weight_bytes: bytes of variables the config makes Keras
            allocate while building the model, estimated from each weighted
            layer's config and recorded input shape; ``None`` for legacy
            ``.h5`` files, which record no input shapes.
        input_shapes: the declared input shapes (batch dimension included,
            ``None`` for unknown sizes).
        keras_version: the Keras version that wrote the file, if recorded.
        compiled: the file carries a compile/training config (optimizer,
            loss).  It was vetted too, but load with ``compile=False``.
    """

    format: str
    file_bytes: int
    n_layers: int
    class_names: tuple[str, ...]
    declared_weight_bytes: int
    estimated_weight_bytes: int | None
    input_shapes: tuple[tuple[int | None, ...], ...]
    keras_version: str | None
    compiled: bool
