"""HDF5: legacy ``.h5`` full-model files, and the metadata walk of every weights file (never reads dataset data)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from vizlib.errors import InputError
from vizlib.modelcheck.audit import ConfigAudit, parse_json
from vizlib.modelcheck.report import ModelFileReport
from vizlib.modelcheck.rules import LOCAL_HINT, MAX_CONFIG_BYTES, MAX_HDF5_OBJECTS, damaged
from vizlib.modelcheck.tables import HDF5_FILTERS
from vizlib.units import fmt_bytes




def check_legacy_h5(
    path: Path, size: int, *, max_weight_bytes: int, max_input_elements: int
) -> ModelFileReport:
    name = path.name
    try:
        f = h5py.File(path, "r")
    except (OSError, ValueError, RuntimeError) as exc:
        raise damaged(name, f"the HDF5 file cannot be opened ({exc})") from None
    with f:
        try:
            attrs = set(f.attrs.keys())
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            raise damaged(name, f"its attributes cannot be read ({exc})") from None
        if "model_config" not in attrs:
            raise InputError(
                f"'{name}' holds no model architecture (it looks like a weights-only file). "
                "Save the whole model with model.save('model.keras') and upload that."
            )
        config = parse_json(_read_text_attr(f, "model_config", name), name, "model_config")
        audit = ConfigAudit(
            name,
            legacy=True,
            max_weight_bytes=max_weight_bytes,
            max_input_elements=max_input_elements,
        )
        audit.run_model(config)
        if "training_config" in attrs:
            training = parse_json(
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
        declared = scan_hdf5_file(f, name, "weights", max_weight_bytes)
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
        raise damaged(name, f"its '{key}' attribute cannot be read ({exc})") from None
    text = _attr_text(value)
    if text is None:
        raise damaged(name, f"its '{key}' attribute is not text")
    data = text.encode("utf-8", "surrogatepass")
    if len(data) > MAX_CONFIG_BYTES:
        raise InputError(
            f"The model description in '{name}' is larger than the "
            f"{fmt_bytes(MAX_CONFIG_BYTES)} allowed. Upload a smaller model, {LOCAL_HINT}."
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




def scan_hdf5_source(source, name: str, label: str, max_weight_bytes: int) -> int:
    try:
        f = h5py.File(source, "r")
    except (OSError, ValueError, RuntimeError) as exc:
        raise damaged(name, f"its {label} is not a readable HDF5 file ({exc})") from None
    with f:
        return scan_hdf5_file(f, name, label, max_weight_bytes)


def scan_hdf5_file(f: h5py.File, name: str, label: str, max_weight_bytes: int) -> int:
    try:
        return _walk_hdf5(f, name, label, max_weight_bytes)
    except InputError:
        raise
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as exc:
        raise damaged(name, f"its {label} is corrupt ({exc})") from None


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
                    f"{LOCAL_HINT}."
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
                        f"The weights in '{name}' declare at least {fmt_bytes(total)} of "
                        f"arrays, more than the {fmt_bytes(max_weight_bytes)} allowed for "
                        f"uploaded models. Upload a smaller model, {LOCAL_HINT}."
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
        if code not in HDF5_FILTERS:
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
            f"{fmt_bytes(max_weight_bytes)}. Upload the file written by model.save() unchanged."
        )
    return declared
