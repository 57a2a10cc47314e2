"""Vet an uploaded Keras model file *before* anything deserialises it.

A Keras model file is code: its config names classes that Keras imports and
instantiates, a ``Lambda`` layer carries marshalled Python bytecode, some
layers read files from the server, and its weights file can declare arrays far
larger than the file itself.  :func:`check_model_file` inspects the file with
nothing but ``zipfile``, ``json`` and ``h5py`` metadata calls -- it never
imports Keras or TensorFlow, never unmarshals anything and never reads a weight
array -- and raises :class:`~vizlib.errors.InputError` (a message fit to show
the user) for anything it does not positively recognise as a plain, built-in
Keras model of sane size.

What is checked
---------------
* **Format by content, not by name.**  A ``.keras`` file must be a zip archive
  (``PK\\x03\\x04``), a ``.h5``/``.hdf5`` file an HDF5 file
  (``\\x89HDF\\r\\n\\x1a\\n``).  Keras picks its loader from the extension, so a
  mismatch is refused with a "rename it" message rather than guessed at.
* **Zip container** (``.keras``): the central directory is sized from the
  end-of-central-directory record before :mod:`zipfile` parses it; the archive
  must hold exactly ``metadata.json``, ``config.json`` and
  ``model.weights.h5`` once each (no ``../`` paths, absolute paths,
  duplicates, ``assets/``, ``.npz`` weights, encryption or exotic
  compression); every member and the total are size-capped and a member above
  1 MiB may not expand more than ``max_ratio`` times (zip bombs).
* **Config** (``config.json`` / the legacy ``model_config`` attribute): read
  size-capped, parsed with the bounded :func:`vizlib.schema.parse_json` (duplicate keys,
  deep nesting and overlong numbers refused),
  then every dict carrying a ``"class_name"`` is matched against
  :data:`ALLOWED_CLASSES` by ``(module, class_name)`` with ``registered_name``
  empty or equal to the class name.  ``Lambda``, ``__lambda__``,
  ``TFSMLayer``, lookup / text-vectorisation layers, Python functions other
  than Keras' named activations, and anything from a module outside Keras are
  refused by name.  Any ``safe_mode``/``unsafe`` key anywhere is refused.
* **Size of what Keras would allocate**: the HDF5 weights are walked with
  metadata calls only -- declared ``shape x itemsize`` is summed and capped
  (this catches a 2 KB file declaring 40 GB of weights); external datasets,
  virtual datasets, soft/external links, non-numeric dtypes and non-standard
  HDF5 filters (which would load plugins) are refused.  For ``.keras`` files the
  variables every weighted layer will create at build time are also estimated
  from its config and ``build_config`` and capped, and model input sizes and a
  few geometry parameters (up-sampling factors, resize targets) are bounded.

What is *not* checked: the legacy ``.h5`` format records no per-layer input
shapes, so for it the build-time estimate is skipped (its hyper-parameters are
still capped).  Load accepted files with
``keras.models.load_model(path, safe_mode=True, compile=False)``.
"""

from __future__ import annotations

import os
import stat
import struct
import zipfile
from pathlib import Path

from vizlib.errors import InputError
from vizlib.modelcheck.hdf5 import check_legacy_h5
from vizlib.modelcheck.keras_file import check_keras_archive
from vizlib.modelcheck.report import ModelFileReport
# Every limit stays importable as vizlib.modelcheck.MAX_... (hosts and tests read them here).
from vizlib.modelcheck.rules import (  # noqa: F401
    H5_EXTENSIONS, HDF5_SIGNATURE, KERAS_ARCHIVE_MEMBERS, KERAS_EXTENSIONS, LOCAL_HINT,
    MAX_CENTRAL_DIRECTORY_BYTES, MAX_CONFIG_BYTES, MAX_CONFIG_DEPTH, MAX_DEPTH_MULTIPLIER, MAX_DIM,
    MAX_HDF5_OBJECTS, MAX_HEADS, MAX_KERNEL_ELEMENTS, MAX_LAYERS, MAX_METADATA_BYTES, MAX_MODEL_NESTING,
    MAX_MODEL_DEPTH, MAX_PADDING, MAX_RESIZE_SIDE, MAX_SEQUENTIAL_COST, MAX_SEQUENTIAL_LAYERS, MAX_UNITS,
    MAX_UPSAMPLING, MAX_WINDOW, MiB,
    RATIO_FLOOR_BYTES, UNCHANGED, ZIP_LOCAL_MAGIC, damaged, not_a_model,
)
from vizlib.modelcheck.tables import ALLOWED_CLASSES
from vizlib.units import fmt_bytes

__all__ = [
    "ALLOWED_CLASSES",
    "ModelFileReport",
    "check_model_file",
]




def check_model_file(
    path: str | os.PathLike[str],
    *,
    max_file_bytes: int = 200 * MiB,
    max_weight_bytes: int = 600 * MiB,
    max_members: int = 16,
    max_ratio: float = 100,
    max_input_elements: int = 2**24,
) -> ModelFileReport:
    """Check an uploaded ``.keras`` / ``.h5`` model file without loading it.

    Args:
        path: the saved upload; its extension must be ``.keras``, ``.h5`` or
            ``.hdf5`` (Keras chooses its loader by extension) and must agree
            with the file's content.
        max_file_bytes: largest accepted file.
        max_weight_bytes: largest accepted total of declared weight bytes,
            both as stored in the HDF5 weights and as estimated from the
            config.
        max_members: most zip entries accepted before the archive's
            directory is even parsed (a valid archive has three).
        max_ratio: largest uncompressed/compressed ratio of a zip member
            above 1 MiB (Keras stores members uncompressed).
        max_input_elements: largest number of elements of one model input
            (batch dimension excluded, unknown sizes ignored).

    Returns:
        A :class:`ModelFileReport`.

    Raises:
        InputError: the file is refused; the message names the problem and
            what to do about it.
    """
    path = Path(path)
    try:
        return _check(
            path,
            max_file_bytes=max_file_bytes,
            max_weight_bytes=max_weight_bytes,
            max_members=max_members,
            max_ratio=max_ratio,
            max_input_elements=max_input_elements,
        )
    except InputError:
        raise
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError,
            OverflowError, RecursionError, EOFError, struct.error, zipfile.BadZipFile) as exc:
        # Fail closed: whatever a crafted file provokes, it is refused.
        raise damaged(path.name, f"it could not be inspected ({type(exc).__name__})") from None


def _check(
    path: Path,
    *,
    max_file_bytes: int,
    max_weight_bytes: int,
    max_members: int,
    max_ratio: float,
    max_input_elements: int,
) -> ModelFileReport:
    name = path.name
    try:
        st = path.stat()
    except OSError as exc:
        raise InputError(
            f"The model file '{name}' could not be read ({exc.strerror or exc}). "
            "Upload it again."
        ) from None
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"'{name}' is not a regular file. Upload a .keras or .h5 model file.")
    size = st.st_size
    if size == 0:
        raise InputError(f"The model file '{name}' is empty. Upload the file written by model.save().")
    if size > max_file_bytes:
        raise InputError(
            f"The model file '{name}' is {fmt_bytes(size)}; uploaded models are limited to "
            f"{fmt_bytes(max_file_bytes)}. Upload a smaller model, {LOCAL_HINT}."
        )

    suffix = path.suffix  # case-sensitive, as Keras' own dispatch is
    if suffix not in KERAS_EXTENSIONS + H5_EXTENSIONS:
        raise InputError(
            f"'{name}' does not end in .keras, .h5 or .hdf5, so Keras cannot load it. "
            "Upload a model saved with model.save('model.keras')."
        )

    with open(path, "rb") as fh:
        head = fh.read(8)
    is_zip = head[:4] == ZIP_LOCAL_MAGIC
    is_hdf5 = head == HDF5_SIGNATURE

    if suffix in KERAS_EXTENSIONS:
        if is_hdf5:
            raise InputError(
                f"'{name}' is named .keras but is really an HDF5 (legacy .h5) model file. "
                "Rename it to end in .h5 and try again."
            )
        if not is_zip:
            raise not_a_model(name, "a .keras file must be a zip archive written by model.save()")
        return check_keras_archive(
            path,
            size,
            max_weight_bytes=max_weight_bytes,
            max_members=max_members,
            max_ratio=max_ratio,
            max_input_elements=max_input_elements,
        )

    if is_zip:
        raise InputError(
            f"'{name}' is named {suffix} but is really a zip archive (a .keras model file). "
            "Rename it to end in .keras and try again."
        )
    if not is_hdf5:
        raise not_a_model(name, f"a {suffix} file must be an HDF5 file written by model.save()")
    return check_legacy_h5(
        path,
        size,
        max_weight_bytes=max_weight_bytes,
        max_input_elements=max_input_elements,
    )
