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

import io
import math
import os
import re
import stat
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from vizlib import archives, schema
from vizlib.errors import InputError
from vizlib.units import fmt_bytes as _fmt_bytes

__all__ = [
    "ALLOWED_CLASSES",
    "ModelFileReport",
    "check_model_file",
]

MiB = 2**20

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
ZIP_LOCAL_MAGIC = b"PK\x03\x04"
ZIP_EMPTY_MAGIC = b"PK\x05\x06"

KERAS_EXTENSIONS = (".keras",)
H5_EXTENSIONS = (".h5", ".hdf5")

#: The members a Keras 3 ``.keras`` archive must contain, each exactly once.
KERAS_ARCHIVE_MEMBERS = frozenset({"metadata.json", "config.json", "model.weights.h5"})

MAX_METADATA_BYTES = 64 * 1024
MAX_CONFIG_BYTES = 16 * MiB
#: Members above this size must not expand more than ``max_ratio`` times.
RATIO_FLOOR_BYTES = 1 * MiB
MAX_CENTRAL_DIRECTORY_BYTES = 1 * MiB
MAX_CONFIG_DEPTH = 200
#: Layers in a model, counting those inside nested models (and the nested models themselves).
#: The largest Keras Applications model (NASNetLarge) has ~1,040; loading costs ~2 ms a layer.
MAX_LAYERS = 2000
#: Layers of one Sequential: loading a Sequential rebuilds it after every layer it adds, so its
#: load time grows with the square of its length (measured: 100 layers 3 s, 150 layers 7 s,
#: 400 layers 72 s; functional models load 800 layers in 1.6 s).
MAX_SEQUENTIAL_LAYERS = 150
#: ... and the sum of the squares of all Sequentials' lengths (two nested 150-layer Sequentials
#: would cost twice one).
MAX_SEQUENTIAL_COST = MAX_SEQUENTIAL_LAYERS**2
#: Models inside models (a Sequential holding a Functional holding a Sequential is 3 deep).
MAX_MODEL_NESTING = 8
MAX_HDF5_OBJECTS = 200_000

#: Caps on single hyper-parameters (defence in depth; real CNNs are far below).
MAX_UNITS = 2**17  # Dense units, Conv filters, projection dims
MAX_KERNEL_ELEMENTS = 2**12  # product of kernel_size
MAX_DEPTH_MULTIPLIER = 2**10
MAX_HEADS = 2**10
MAX_UPSAMPLING = 256  # product of UpSampling size / transposed-conv strides
MAX_PADDING = 4096
MAX_RESIZE_SIDE = 8192
MAX_DIM = 2**31  # any single tensor dimension

from vizlib.modelcheck_tables import (
    ALLOWED_CLASSES,
    _ACTIVATION_NAMES,
    _BARE_NAMES,
    _COMPILE_BARE_NAMES,
    _COMPILE_CLASSES,
    _CONV,
    _CONV_T,
    _DATA_MARKERS,
    _DEPTHWISE,
    _FUNCTION_MODULES,
    _HDF5_FILTERS,
    _LOSS_METRIC_FUNCTIONS,
    _MODELS,
    _REFUSED_CLASSES,
    _SEPARABLE,
    _WEIGHTED,
)

_UNCHANGED = "Upload the file written by model.save('model.keras') unchanged."
_LOCAL_HINT = (
    "or run the dashboard locally and pass your model to vizlib as a keras.Model"
)
_SAFE_MODE_KEY = re.compile(r"safe_?mode|unsafe", re.IGNORECASE)
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


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


# --------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------


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
        raise _damaged(path.name, f"it could not be inspected ({type(exc).__name__})") from None


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
            f"The model file '{name}' is {_fmt_bytes(size)}; uploaded models are limited to "
            f"{_fmt_bytes(max_file_bytes)}. Upload a smaller model, {_LOCAL_HINT}."
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
                "Rename it to end in .h5 and upload it again."
            )
        if not is_zip:
            raise _not_a_model(name, "a .keras file must be a zip archive written by model.save()")
        return _check_keras_archive(
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
            "Rename it to end in .keras and upload it again."
        )
    if not is_hdf5:
        raise _not_a_model(name, f"a {suffix} file must be an HDF5 file written by model.save()")
    return _check_legacy_h5(
        path,
        size,
        max_weight_bytes=max_weight_bytes,
        max_input_elements=max_input_elements,
    )


# --------------------------------------------------------------------------
# .keras archives
# --------------------------------------------------------------------------


def _check_keras_archive(
    path: Path,
    size: int,
    *,
    max_weight_bytes: int,
    max_members: int,
    max_ratio: float,
    max_input_elements: int,
) -> ModelFileReport:
    name = path.name
    with open(path, "rb") as fh:
        try:
            n_entries, _ = archives.directory_stats(fh, size)
        except (ValueError, OSError, struct.error) as exc:
            raise _damaged(name, f"the zip archive cannot be read ({exc})") from None
        if n_entries > max_members:
            raise InputError(
                f"The archive '{name}' holds {n_entries} files; a .keras model holds exactly "
                f"{len(KERAS_ARCHIVE_MEMBERS)} (metadata.json, config.json, model.weights.h5). "
                "Upload the file written by model.save('model.keras') unchanged."
            )
        zf = archives.open_zip(fh, label=f"'{name}'", what="usable Keras model file", advice=_UNCHANGED,
                               max_entries=max_members, max_directory_bytes=MAX_CENTRAL_DIRECTORY_BYTES)
        with zf:
            infos = _vet_zip_members(zf, name, size, max_weight_bytes=max_weight_bytes,
                                     max_ratio=max_ratio)
            metadata_raw = _read_member(zf, infos["metadata.json"], MAX_METADATA_BYTES, name)
            config_raw = _read_member(zf, infos["config.json"], MAX_CONFIG_BYTES, name)

            metadata = _parse_json(metadata_raw, name, "metadata.json")
            if not isinstance(metadata, dict):
                raise _damaged(name, "its metadata.json is not a JSON object")
            _refuse_safe_mode_keys(metadata, name, "metadata.json")
            keras_version = metadata.get("keras_version")
            if not isinstance(keras_version, str):
                keras_version = None

            config = _parse_json(config_raw, name, "config.json")
            audit = _ConfigAudit(
                name,
                legacy=False,
                max_weight_bytes=max_weight_bytes,
                max_input_elements=max_input_elements,
            )
            audit.run_model(config)

            declared = _scan_weights_member(
                path, zf, infos["model.weights.h5"], size, name, max_weight_bytes
            )

    return ModelFileReport(
        format="keras",
        file_bytes=size,
        n_layers=audit.n_layers,
        class_names=tuple(sorted(audit.class_names)),
        declared_weight_bytes=declared,
        estimated_weight_bytes=audit.estimated_bytes,
        input_shapes=tuple(audit.input_shapes),
        keras_version=keras_version,
        compiled=audit.compiled,
    )


def _vet_zip_members(
    zf: zipfile.ZipFile, name: str, size: int, *, max_weight_bytes: int, max_ratio: float
) -> dict[str, zipfile.ZipInfo]:
    caps = {
        "metadata.json": MAX_METADATA_BYTES,
        "config.json": MAX_CONFIG_BYTES,
        # HDF5 overhead on top of the arrays is small; 64 MiB is generous.
        "model.weights.h5": max_weight_bytes + 64 * MiB,
    }
    infos: dict[str, zipfile.ZipInfo] = {}
    total = 0
    for info in zf.infolist():
        member = info.filename
        if info.orig_filename != member or member not in KERAS_ARCHIVE_MEMBERS:
            shown = info.orig_filename.replace("\x00", "\\0")[:120]
            raise InputError(
                f"The archive '{name}' contains an unexpected file '{shown}'; a .keras model "
                "holds only metadata.json, config.json and model.weights.h5. Upload the file "
                "written by model.save('model.keras') unchanged."
            )
        if member in infos:
            raise InputError(
                f"The archive '{name}' contains '{member}' more than once, so different "
                "programs could read different models from it. Upload the file written by "
                "model.save('model.keras') unchanged."
            )
        if info.file_size > caps[member]:
            raise InputError(
                f"'{member}' in '{name}' unpacks to {_fmt_bytes(info.file_size)}, more than "
                f"the {_fmt_bytes(caps[member])} allowed for uploaded models. Upload a smaller "
                f"model, {_LOCAL_HINT}."
            )
        if info.file_size > RATIO_FLOOR_BYTES and (
            info.compress_size == 0 or info.file_size > max_ratio * info.compress_size
        ):
            raise InputError(
                f"'{member}' in '{name}' would expand from {_fmt_bytes(info.compress_size)} to "
                f"{_fmt_bytes(info.file_size)} (a 'zip bomb'); real model files do not "
                "compress like that. Upload the file written by model.save('model.keras')."
            )
        total += info.file_size
        infos[member] = info
    missing = sorted(KERAS_ARCHIVE_MEMBERS - set(infos))
    if missing:
        raise InputError(
            f"'{name}' is a zip archive but not a Keras model: it lacks {', '.join(missing)}. "
            "Upload the file written by model.save('model.keras')."
        )
    if total > max_weight_bytes + 96 * MiB:
        raise InputError(
            f"'{name}' unpacks to {_fmt_bytes(total)}, more than uploaded models may. "
            f"Upload a smaller model, {_LOCAL_HINT}."
        )
    return infos


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, cap: int, name: str) -> bytes:
    return archives.read_member(zf, info, where=f"'{name}'", max_bytes=cap, what=_UNCHANGED)


def _scan_weights_member(
    path: Path,
    zf: zipfile.ZipFile,
    info: zipfile.ZipInfo,
    size: int,
    name: str,
    max_weight_bytes: int,
) -> int:
    if info.compress_type == zipfile.ZIP_STORED:
        # Keras stores members uncompressed: give h5py a bounded, seekable
        # window onto the archive instead of copying the weights into memory.
        with open(path, "rb") as raw:
            window = archives.stored_member(raw, info, where=f"'{name}'", advice=_UNCHANGED)
            return _scan_hdf5_source(window, name, "model.weights.h5", max_weight_bytes)
    data = _read_member(zf, info, info.file_size, name)
    return _scan_hdf5_source(io.BytesIO(data), name, "model.weights.h5", max_weight_bytes)


# --------------------------------------------------------------------------
# Legacy HDF5 full-model files
# --------------------------------------------------------------------------


def _check_legacy_h5(
    path: Path, size: int, *, max_weight_bytes: int, max_input_elements: int
) -> ModelFileReport:
    name = path.name
    try:
        f = h5py.File(path, "r")
    except (OSError, ValueError, RuntimeError) as exc:
        raise _damaged(name, f"the HDF5 file cannot be opened ({exc})") from None
    with f:
        try:
            attrs = set(f.attrs.keys())
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            raise _damaged(name, f"its attributes cannot be read ({exc})") from None
        if "model_config" not in attrs:
            raise InputError(
                f"'{name}' holds no model architecture (it looks like a weights-only file). "
                "Save the whole model with model.save('model.keras') and upload that."
            )
        config = _parse_json(_read_text_attr(f, "model_config", name), name, "model_config")
        audit = _ConfigAudit(
            name,
            legacy=True,
            max_weight_bytes=max_weight_bytes,
            max_input_elements=max_input_elements,
        )
        audit.run_model(config)
        if "training_config" in attrs:
            training = _parse_json(
                _read_text_attr(f, "training_config", name), name, "training_config"
            )
            audit.run_compile(training)
        keras_version = None
        if "keras_version" in attrs:
            try:
                keras_version = _attr_text(f.attrs["keras_version"])
            except (OSError, ValueError, TypeError, RuntimeError):
                keras_version = None
        if isinstance(keras_version, str) and len(keras_version) > 64:
            keras_version = None
        declared = _scan_hdf5_file(f, name, "weights", max_weight_bytes)
    return ModelFileReport(
        format="h5",
        file_bytes=size,
        n_layers=audit.n_layers,
        class_names=tuple(sorted(audit.class_names)),
        declared_weight_bytes=declared,
        estimated_weight_bytes=None,
        input_shapes=tuple(audit.input_shapes),
        keras_version=keras_version,
        compiled=audit.compiled,
    )


def _read_text_attr(f: h5py.File, key: str, name: str) -> bytes:
    try:
        value = f.attrs[key]
    except (OSError, ValueError, TypeError, RuntimeError, KeyError) as exc:
        raise _damaged(name, f"its '{key}' attribute cannot be read ({exc})") from None
    text = _attr_text(value)
    if text is None:
        raise _damaged(name, f"its '{key}' attribute is not text")
    data = text.encode("utf-8", "surrogatepass")
    if len(data) > MAX_CONFIG_BYTES:
        raise InputError(
            f"The model description in '{name}' is larger than the "
            f"{_fmt_bytes(MAX_CONFIG_BYTES)} allowed. Upload a smaller model, {_LOCAL_HINT}."
        )
    return data


def _attr_text(value: Any) -> str | None:
    if isinstance(value, np.ndarray):
        if value.shape != ():
            return None
        value = value.item()
    if isinstance(value, np.bytes_):
        value = bytes(value)
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return None
    if isinstance(value, str):
        return value
    return None


# --------------------------------------------------------------------------
# HDF5 metadata walk (never reads dataset data)
# --------------------------------------------------------------------------


def _scan_hdf5_source(source, name: str, label: str, max_weight_bytes: int) -> int:
    try:
        f = h5py.File(source, "r")
    except (OSError, ValueError, RuntimeError) as exc:
        raise _damaged(name, f"its {label} is not a readable HDF5 file ({exc})") from None
    with f:
        return _scan_hdf5_file(f, name, label, max_weight_bytes)


def _scan_hdf5_file(f: h5py.File, name: str, label: str, max_weight_bytes: int) -> int:
    try:
        return _walk_hdf5(f, name, label, max_weight_bytes)
    except InputError:
        raise
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as exc:
        raise _damaged(name, f"its {label} is corrupt ({exc})") from None


def _walk_hdf5(root: h5py.Group, name: str, label: str, max_weight_bytes: int) -> int:
    total = 0
    n_objects = 0
    seen = {root.id}
    stack: list[h5py.Group] = [root]
    while stack:
        group = stack.pop()
        for key in group:
            n_objects += 1
            if n_objects > MAX_HDF5_OBJECTS:
                raise InputError(
                    f"The weights in '{name}' consist of more than {MAX_HDF5_OBJECTS} HDF5 "
                    f"objects, far more than any supported model. Upload a smaller model, "
                    f"{_LOCAL_HINT}."
                )
            where = f"{group.name.rstrip('/')}/{key}"
            link = group.get(key, getlink=True)
            if isinstance(link, h5py.ExternalLink):
                raise InputError(
                    f"The weights in '{name}' contain a link to another file "
                    f"('{where}' -> '{link.filename}'), which could read files on the server. "
                    "Upload the file written by model.save() unchanged."
                )
            if not isinstance(link, h5py.HardLink):
                raise InputError(
                    f"The weights in '{name}' contain a {type(link).__name__} at '{where}'; "
                    "model files written by Keras contain none. Upload the file written by "
                    "model.save() unchanged."
                )
            obj = group.get(key)
            if isinstance(obj, h5py.Group):
                if obj.id not in seen:
                    seen.add(obj.id)
                    stack.append(obj)
            elif isinstance(obj, h5py.Dataset):
                if obj.id in seen:
                    continue
                seen.add(obj.id)
                total += _dataset_bytes(obj, where, name, max_weight_bytes)
                if total > max_weight_bytes:
                    raise InputError(
                        f"The weights in '{name}' declare at least {_fmt_bytes(total)} of "
                        f"arrays, more than the {_fmt_bytes(max_weight_bytes)} allowed for "
                        f"uploaded models. Upload a smaller model, {_LOCAL_HINT}."
                    )
            # Committed datatypes carry no data; anything else is ignored too.
    return total


def _dataset_bytes(dset: h5py.Dataset, where: str, name: str, max_weight_bytes: int) -> int:
    if dset.external:
        raise InputError(
            f"The weights in '{name}' store '{where}' in an external file "
            f"('{dset.external[0][0]}'), which could read files on the server. "
            "Upload the file written by model.save() unchanged."
        )
    if dset.is_virtual:
        raise InputError(
            f"The weights in '{name}' contain a virtual dataset ('{where}') that points into "
            "other files, which could read files on the server. Upload the file written by "
            "model.save() unchanged."
        )
    dtype = dset.dtype
    if dtype.kind not in "fiub" or dtype.subdtype is not None or dtype.names is not None:
        raise InputError(
            f"The weights in '{name}' contain '{where}' of type {dtype}, which is not a "
            "numeric array. Upload the file written by model.save() unchanged."
        )
    plist = dset.id.get_create_plist()
    for i in range(plist.get_nfilters()):
        code = plist.get_filter(i)[0]
        if code not in _HDF5_FILTERS:
            raise InputError(
                f"The weights in '{name}' compress '{where}' with HDF5 filter {code}, which "
                "would need a plugin library on the server. Save the model with "
                "model.save() and upload that."
            )
    shape = dset.shape
    elements = 0 if shape is None else math.prod(int(d) for d in shape)
    declared = elements * dtype.itemsize
    chunks = dset.chunks
    if chunks is not None and math.prod(chunks) * dtype.itemsize > max_weight_bytes:
        raise InputError(
            f"The weights in '{name}' declare storage blocks for '{where}' larger than "
            f"{_fmt_bytes(max_weight_bytes)}. Upload the file written by model.save() unchanged."
        )
    return declared


# --------------------------------------------------------------------------
# Config audit
# --------------------------------------------------------------------------


class _ConfigAudit:
    """Walks a parsed config, refusing anything not on the allowlist."""

    def __init__(self, file_name: str, *, legacy: bool, max_weight_bytes: int,
                 max_input_elements: int):
        self.file_name = file_name
        self.legacy = legacy
        self.max_weight_bytes = max_weight_bytes
        self.max_input_elements = max_input_elements
        self.class_names: set[str] = set()
        self.n_layers = 0
        self.sequential_cost = 0
        self.estimated_bytes = 0
        self.input_shapes: list[tuple[int | None, ...]] = []
        self.compiled = False

    # -- entry points -----------------------------------------------------

    def run_model(self, config: Any) -> None:
        if not isinstance(config, dict) or not isinstance(config.get("class_name"), str):
            raise _damaged(self.file_name, "its model description is not a Keras model config")
        top = config["class_name"]
        if top not in _MODELS:
            raise InputError(
                f"'{self.file_name}' describes a '{top[:80]}', not a model. Upload a file "
                "written by model.save() for a keras.Model or keras.Sequential."
            )
        self._walk(config, in_compile=False)

    def run_compile(self, training_config: Any) -> None:
        self._walk(training_config, in_compile=True, owner=None)
        self.compiled = True

    # -- traversal --------------------------------------------------------

    def _walk(self, root: Any, *, in_compile: bool, owner: str | None = None) -> None:
        # Iterative, so a deeply nested config cannot exhaust Python's stack.
        # Each entry: (node, depth, compiling, owner, is_layer, models it is inside).
        stack: list[tuple[Any, int, bool, str | None, bool, int]] = [
            (root, 0, in_compile, owner, False, 0)
        ]
        while stack:
            node, depth, compiling, owner, is_layer, models = stack.pop()
            if depth > MAX_CONFIG_DEPTH:
                raise _damaged(self.file_name, "its model description is nested too deeply")
            if isinstance(node, list):
                for item in node:
                    stack.append((item, depth + 1, compiling, owner, is_layer, models))
                continue
            if not isinstance(node, dict):
                continue
            for key in node:
                if _SAFE_MODE_KEY.search(key):
                    raise self._safe_mode_error(owner)
            if "class_name" in node:
                owner = self._check_object(node, compiling, owner)
                if is_layer:
                    self.n_layers += 1
                    if self.n_layers > MAX_LAYERS:
                        raise self._too_many_layers()
                if not compiling and node.get("class_name") in _MODELS:
                    models += 1
                    self._check_model_shape(node, models, owner)
            for key, value in node.items():
                if key == "compile_config" and value:
                    self.compiled = True
                child_compiling = compiling or key in ("compile_config", "training_config")
                child_is_layer = key == "layers" or (
                    key == "config" and node.get("class_name") == "Sequential"
                    and isinstance(value, list)
                )
                if isinstance(value, (dict, list)):
                    stack.append((value, depth + 1, child_compiling, owner, child_is_layer, models))
            # Plain strings (activation names, padding modes, ...) are resolved by
            # Keras against its own tables only, so they need no check here.

    # -- model structure (what loading costs) ------------------------------

    def _check_model_shape(self, node: dict, models: int, where: str | None) -> None:
        """Bound nesting and Sequential lengths before Keras rebuilds anything."""
        if models > MAX_MODEL_NESTING:
            raise InputError(
                f"'{self.file_name}' nests models more than {MAX_MODEL_NESTING} deep (a model inside a "
                f"model inside a model ...). Rebuild it as one functional model, {_LOCAL_HINT}."
            )
        if node.get("class_name") != "Sequential":
            return
        inner = node.get("config")
        layers = inner.get("layers") if isinstance(inner, dict) else inner
        n = sum(1 for layer in layers if not (isinstance(layer, dict) and layer.get("class_name") == "InputLayer")
                ) if isinstance(layers, list) else 0
        self.sequential_cost += n * n
        if n > MAX_SEQUENTIAL_LAYERS or self.sequential_cost > MAX_SEQUENTIAL_COST:
            what = (f"Sequential '{where}'" if where else "a Sequential") + f" of {n:,} layers"
            raise InputError(
                f"'{self.file_name}' holds {what}"
                + ("" if n > MAX_SEQUENTIAL_LAYERS else " (with its other Sequentials)")
                + f". Keras rebuilds a Sequential after every layer it adds while loading it, so "
                f"its load time grows with the square of its length; uploaded models may have "
                f"Sequentials of at most {MAX_SEQUENTIAL_LAYERS} layers in all. Rebuild it as a "
                f"functional model (keras.Model(inputs, outputs)), which loads in linear time, "
                f"{_LOCAL_HINT}."
            )

    def _too_many_layers(self) -> InputError:
        return InputError(
            f"'{self.file_name}' has more than {MAX_LAYERS:,} layers (counting those inside nested "
            f"models); uploaded models may have at most {MAX_LAYERS:,}, more than the largest Keras "
            f"Applications model. Upload a smaller model, {_LOCAL_HINT}."
        )

    # -- one Keras object -------------------------------------------------

    def _check_object(self, d: dict, compiling: bool, owner: str | None) -> str | None:
        cls = d["class_name"]
        if not isinstance(cls, str):
            raise _damaged(self.file_name, "an object in its model description has a non-text class name")
        module = d.get("module")
        registered = d.get("registered_name")
        inner = d.get("config")
        obj_name = _object_name(d)
        where = obj_name or owner

        if cls in _DATA_MARKERS:
            return owner
        if cls == "__lambda__":
            raise InputError(
                f"This model contains a Python lambda{_in_layer(owner)}, which is code; "
                "uploaded models may only use built-in Keras layers. Rebuild it without "
                f"Lambda layers or Python functions, {_LOCAL_HINT}."
            )
        if cls == "__typespec__":
            raise self._not_allowed(cls, module, where)
        if cls in _REFUSED_CLASSES:
            what = _REFUSED_CLASSES[cls].format(where=f" ('{where}')" if where else "")
            vocab = inner.get("vocabulary") if isinstance(inner, dict) else None
            extra = f" (vocabulary file '{vocab[:200]}')" if isinstance(vocab, str) else ""
            raise InputError(
                f"This model uses {what}{extra}; uploaded models may only use built-in "
                f"Keras layers. Rebuild it without {cls} layers, {_LOCAL_HINT}."
            )
        if cls == "function":
            self._check_function(d, compiling, owner)
            return owner

        if not _IDENTIFIER.match(cls) and not (compiling and cls == "Custom>Adam"):
            raise self._not_allowed(cls, module, where)

        if module is not None:
            if not isinstance(module, str):
                raise self._not_allowed(cls, module, where)
            if module != "keras" and not module.startswith("keras."):
                raise InputError(
                    f"This model refers to '{module}.{cls}'{_in_layer(where)}, which is not "
                    "part of Keras; uploaded models may only use built-in Keras layers. "
                    f"Rebuild the model from keras.layers only, {_LOCAL_HINT}."
                )
            pair = (module, cls)
            ok = pair in ALLOWED_CLASSES or (compiling and pair in _COMPILE_CLASSES)
            if not ok:
                raise self._not_allowed(cls, module, where)
        else:
            ok = cls in _BARE_NAMES or (compiling and cls in _COMPILE_BARE_NAMES)
            if not ok:
                raise self._not_allowed(cls, module, where)

        if registered is not None and registered != cls:
            shown = str(registered)[:80]
            raise InputError(
                f"This model asks for '{cls}'{_in_layer(where)} under the registered name "
                f"'{shown}', which would be looked up among custom (non-Keras) objects; "
                "uploaded models may only use built-in Keras layers. Save the model again "
                f"without custom objects, {_LOCAL_HINT}."
            )

        self.class_names.add(cls)
        if isinstance(inner, dict):
            self._check_layer_config(cls, d, inner, where)
        elif inner is not None and not (cls == "Sequential" and isinstance(inner, list)):
            raise _damaged(self.file_name, f"the config of '{cls}' is not an object")
        return obj_name or owner

    def _check_function(self, d: dict, compiling: bool, owner: str | None) -> None:
        fn = d.get("config")
        module = d.get("module")
        registered = d.get("registered_name")
        allowed = _ACTIVATION_NAMES | (_LOSS_METRIC_FUNCTIONS if compiling else frozenset())
        if (
            isinstance(fn, str)
            and fn in allowed
            and isinstance(module, str)
            and module in _FUNCTION_MODULES
            and registered in (None, "function", fn)
        ):
            self.class_names.add(fn)
            return
        shown = f"{module}.{fn}" if isinstance(module, str) and isinstance(fn, str) else repr(fn)[:80]
        raise InputError(
            f"This model calls the Python function '{shown[:120]}'{_in_layer(owner)}, which is "
            "not one of Keras' built-in activations; uploaded models may only use built-in "
            f"Keras layers and activations. Rebuild it with activation names such as 'relu', "
            f"{_LOCAL_HINT}."
        )

    # -- sizes ------------------------------------------------------------

    def _check_layer_config(self, cls: str, d: dict, cfg: dict, where: str | None) -> None:
        for key in ("batch_shape", "batch_input_shape"):
            if key in cfg and cfg[key] is not None:
                self._record_input_shape(cfg[key], where)
        _check_geometry(cls, cfg, where, self.file_name, self.max_input_elements)
        if cls not in _WEIGHTED:
            return
        _check_hyperparameters(cls, cfg, where, self.file_name)
        if self.legacy:
            return
        build_config = d.get("build_config")
        if not isinstance(build_config, dict):
            raise InputError(
                f"Layer '{where or cls}' in '{self.file_name}' has no recorded input shape, "
                "so its size cannot be checked (the model was probably saved before it was "
                "built). Build the model (give it a keras.Input) and save it again."
            )
        shape = _build_input_shape(build_config)
        params = _estimate_params(cls, cfg, shape, build_config)
        if params is None:
            raise _damaged(
                self.file_name, f"the recorded input shape of layer '{where or cls}' is malformed"
            )
        itemsize = 8 if _dtype_name(cfg) == "float64" else 4
        self.estimated_bytes += params * itemsize
        if self.estimated_bytes > self.max_weight_bytes:
            raise InputError(
                f"Building this model would allocate at least "
                f"{_fmt_bytes(self.estimated_bytes)} of weights (layer '{where or cls}' alone "
                f"needs {_fmt_bytes(params * itemsize)}), more than the "
                f"{_fmt_bytes(self.max_weight_bytes)} allowed for uploaded models. Upload a "
                f"smaller model, {_LOCAL_HINT}."
            )

    def _record_input_shape(self, shape: Any, where: str | None) -> None:
        if _shape(shape) is None:
            raise _damaged(self.file_name, f"the input shape of '{where}' is malformed")
        elements = math.prod(d for d in shape[1:] if d is not None)
        if elements > self.max_input_elements:
            raise InputError(
                f"Input '{where}' of this model takes {elements:,} values per example "
                f"(shape {tuple(shape)}), more than the {self.max_input_elements:,} the "
                "dashboard can visualise. Use a model with a smaller input size."
            )
        self.input_shapes.append(tuple(shape))

    # -- errors -----------------------------------------------------------

    def _not_allowed(self, cls: Any, module: Any, where: str | None) -> InputError:
        full = f"{module}.{cls}" if isinstance(module, str) else str(cls)
        return InputError(
            f"This model uses '{full[:160]}'{_in_layer(where)}, which is not among the built-in "
            "Keras layers this dashboard accepts in uploaded models (convolution, pooling, "
            "dense, normalisation, activation, merging, reshaping and image-preprocessing "
            f"layers). Rebuild the model from those layers, {_LOCAL_HINT}."
        )

    def _safe_mode_error(self, owner: str | None) -> InputError:
        place = f" (in '{owner}')" if owner else ""
        return InputError(
            f"'{self.file_name}' tries to switch off Keras' safe mode{place}, which would let "
            "the file run code; uploaded models cannot do that. Upload the file written by "
            "model.save() unchanged."
        )


def _refuse_safe_mode_keys(obj: Any, name: str, label: str) -> None:
    stack = [(obj, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_CONFIG_DEPTH:
            raise _damaged(name, f"its {label} is nested too deeply")
        if isinstance(node, dict):
            for key, value in node.items():
                if _SAFE_MODE_KEY.search(key):
                    raise InputError(
                        f"'{name}' tries to switch off Keras' safe mode (in {label}), which would "
                        "let the file run code; uploaded models cannot do that. Upload the file "
                        "written by model.save() unchanged."
                    )
                stack.append((value, depth + 1))
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)


# --------------------------------------------------------------------------
# Layer size estimates
# --------------------------------------------------------------------------


def _as_int(value: Any) -> int | None:
    if type(value) is int and value >= 0:
        return value
    return None


def _ints(value: Any, rank: int | None = None) -> list[int] | None:
    """An int or a list of ints, as Keras accepts for kernel_size etc."""
    if type(value) is int:
        return [value] * (rank or 1) if value >= 0 else None
    if isinstance(value, list) and value and all(type(v) is int and v >= 0 for v in value):
        return list(value)
    return None


def _hp_error(cls: str, key: str, where: str | None, file_name: str, limit: int) -> InputError:
    return InputError(
        f"Layer '{where or cls}' ({cls}) in '{file_name}' sets {key} beyond {limit:,} (or to a "
        f"non-integer), which is far outside what the dashboard can handle. Upload a smaller "
        f"model, {_LOCAL_HINT}."
    )


def _check_hyperparameters(cls: str, cfg: dict, where: str | None, file_name: str) -> None:
    checks: list[tuple[str, int]] = []
    if cls in _CONV or cls in _CONV_T or cls in _SEPARABLE:
        checks.append(("filters", MAX_UNITS))
    if cls == "Dense":
        checks.append(("units", MAX_UNITS))
    if cls == "LayerScale":
        checks.append(("projection_dim", MAX_UNITS))
    if cls in _SEPARABLE or cls in _DEPTHWISE:
        checks.append(("depth_multiplier", MAX_DEPTH_MULTIPLIER))
    if cls == "MultiHeadAttention":
        checks += [("num_heads", MAX_HEADS), ("key_dim", MAX_UNITS)]
        if cfg.get("value_dim") is not None:
            checks.append(("value_dim", MAX_UNITS))
    for key, limit in checks:
        value = _as_int(cfg.get(key))
        if value is None or value > limit:
            raise _hp_error(cls, key, where, file_name, limit)
    if cls in _CONV or cls in _CONV_T or cls in _SEPARABLE or cls in _DEPTHWISE:
        kernel = _ints(cfg.get("kernel_size"))
        if kernel is None or math.prod(kernel) > MAX_KERNEL_ELEMENTS:
            raise _hp_error(cls, "kernel_size", where, file_name, MAX_KERNEL_ELEMENTS)


def _check_geometry(
    cls: str, cfg: dict, where: str | None, file_name: str, max_input_elements: int
) -> None:
    """Bound parameters that multiply activation sizes at inference time."""

    def refuse(key: str, limit: int) -> InputError:
        return _hp_error(cls, key, where, file_name, limit)

    if cls.startswith("UpSampling"):
        size = _ints(cfg.get("size"))
        if size is None or math.prod(size) > MAX_UPSAMPLING:
            raise refuse("size", MAX_UPSAMPLING)
    elif cls in _CONV_T:
        strides = _ints(cfg.get("strides", 1))
        if strides is None or math.prod(strides) > MAX_UPSAMPLING:
            raise refuse("strides", MAX_UPSAMPLING)
    elif cls.startswith("ZeroPadding"):
        flat = _flatten_ints(cfg.get("padding"))
        if flat is None or any(p > MAX_PADDING for p in flat):
            raise refuse("padding", MAX_PADDING)
    elif cls in ("Resizing", "CenterCrop", "RandomCrop"):
        h, w = _as_int(cfg.get("height")), _as_int(cfg.get("width"))
        if h is None or h > MAX_RESIZE_SIDE:
            raise refuse("height", MAX_RESIZE_SIDE)
        if w is None or w > MAX_RESIZE_SIDE:
            raise refuse("width", MAX_RESIZE_SIDE)


def _flatten_ints(value: Any) -> list[int] | None:
    out: list[int] = []
    stack = [value]
    while stack:
        v = stack.pop()
        if type(v) is int and v >= 0:
            out.append(v)
        elif isinstance(v, list) and len(out) + len(v) < 64:
            stack.extend(v)
        else:
            return None
    return out


def _build_input_shape(build_config: dict) -> Any:
    if "input_shape" in build_config:
        return build_config["input_shape"]
    shapes = build_config.get("shapes_dict")
    if isinstance(shapes, dict):
        return shapes
    return None


def _shape(value: Any) -> list[int | None] | None:
    if isinstance(value, list) and all(
        d is None or (type(d) is int and 0 <= d <= MAX_DIM) for d in value
    ):
        return value
    return None


def _dim(shape: list[int | None], axis: int) -> int:
    try:
        d = shape[axis]
    except IndexError:
        return 0
    return d if isinstance(d, int) else 0


def _channels(cfg: dict, shape: list[int | None]) -> int:
    axis = 1 if cfg.get("data_format") == "channels_first" else -1
    return _dim(shape, axis)


def _axis_product(shape: list[int | None], axis: Any) -> int:
    axes = [axis] if type(axis) is int else axis if isinstance(axis, list) else [-1]
    total = 1
    for a in axes:
        if type(a) is not int:
            return 0
        total *= _dim(shape, a)
    return total


def _estimate_params(cls: str, cfg: dict, raw_shape: Any, build_config: dict) -> int | None:
    """Number of variables ``cls`` creates when built with ``raw_shape``.

    Returns None when the recorded shape is unusable.
    """
    if cls == "MultiHeadAttention":
        shapes = raw_shape if isinstance(raw_shape, dict) else {}
        q = _shape(shapes.get("query_shape"))
        v = _shape(shapes.get("value_shape"))
        k = _shape(shapes.get("key_shape")) or v
        if q is None or v is None or k is None:
            return None
        heads, kdim = cfg["num_heads"], cfg["key_dim"]
        vdim = cfg.get("value_dim") or kdim
        out = _dim(q, -1)
        out_shape = cfg.get("output_shape")
        if type(out_shape) is int:
            out = out_shape
        elif isinstance(out_shape, list) and _ints(out_shape):
            out = math.prod(out_shape)
        return (
            _dim(q, -1) * heads * kdim + heads * kdim
            + _dim(k, -1) * heads * kdim + heads * kdim
            + _dim(v, -1) * heads * vdim + heads * vdim
            + heads * vdim * out + out
        )
    if isinstance(raw_shape, list) and raw_shape and isinstance(raw_shape[0], list):
        raw_shape = raw_shape[0]  # several inputs: the first decides
    shape = _shape(raw_shape)
    if shape is None:
        return None
    bias = 1 if cfg.get("use_bias", True) else 0
    if cls in _CONV:
        rank = _CONV[cls]
        k = math.prod(_ints(cfg["kernel_size"], rank) or [0])
        groups = _as_int(cfg.get("groups", 1)) or 1
        filters = cfg["filters"]
        return k * (_channels(cfg, shape) // groups) * filters + bias * filters
    if cls in _CONV_T:
        rank = _CONV_T[cls]
        k = math.prod(_ints(cfg["kernel_size"], rank) or [0])
        filters = cfg["filters"]
        return k * _channels(cfg, shape) * filters + bias * filters
    if cls in _SEPARABLE:
        rank = _SEPARABLE[cls]
        k = math.prod(_ints(cfg["kernel_size"], rank) or [0])
        dm, filters, c = cfg["depth_multiplier"], cfg["filters"], _channels(cfg, shape)
        return k * c * dm + c * dm * filters + bias * filters
    if cls in _DEPTHWISE:
        rank = _DEPTHWISE[cls]
        k = math.prod(_ints(cfg["kernel_size"], rank) or [0])
        dm, c = cfg["depth_multiplier"], _channels(cfg, shape)
        return k * c * dm + bias * c * dm
    if cls == "Dense":
        units = cfg["units"]
        return _dim(shape, -1) * units + bias * units
    if cls == "BatchNormalization":
        return 4 * _axis_product(shape, cfg.get("axis", -1))
    if cls in ("LayerNormalization", "GroupNormalization"):
        return 2 * _axis_product(shape, cfg.get("axis", -1))
    if cls == "Normalization":
        return 3 * _axis_product(shape, cfg.get("axis", -1)) + 1
    if cls == "PReLU":
        return math.prod(d or 1 for d in shape[1:])
    if cls == "LayerScale":
        return cfg["projection_dim"]
    return 0


def _dtype_name(cfg: dict) -> str | None:
    dtype = cfg.get("dtype")
    if isinstance(dtype, str):
        return dtype
    if isinstance(dtype, dict) and isinstance(dtype.get("config"), dict):
        name = dtype["config"].get("name")
        return name if isinstance(name, str) else None
    return None


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------


def _parse_json(raw: bytes, name: str, label: str) -> Any:
    """The one bounded JSON reader (size, nesting, number digits, duplicate keys), with this file's advice."""
    return schema.parse_json(raw, what=f"The {label} in '{name}'", max_bytes=MAX_CONFIG_BYTES,
                             max_depth=MAX_CONFIG_DEPTH, advice=_UNCHANGED)


def _object_name(d: dict) -> str | None:
    inner = d.get("config")
    name = inner.get("name") if isinstance(inner, dict) else None
    if not isinstance(name, str):
        name = d.get("name")
    if isinstance(name, str) and name:
        return name[:80]
    return None


def _in_layer(where: str | None) -> str:
    return f" (in '{where}')" if where else ""


def _damaged(name: str, why: str) -> InputError:
    return InputError(
        f"'{name}' is not a usable Keras model file: {why}. Upload the file written by "
        "model.save('model.keras') (or a legacy .h5 model) unchanged."
    )


def _not_a_model(name: str, why: str) -> InputError:
    return InputError(
        f"'{name}' is not a Keras model file: {why}. Upload the file written by "
        "model.save('model.keras')."
    )


