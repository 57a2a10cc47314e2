"""``.keras`` files: a ZIP of exactly metadata.json, config.json and model.weights.h5, read through
:mod:`vizlib.archives` (the one ZIP reader) and checked member by member."""

from __future__ import annotations

import io
import struct
import zipfile
from pathlib import Path

from vizlib import archives
from vizlib.errors import InputError
from vizlib.modelcheck.audit import ConfigAudit, parse_json, refuse_safe_mode_keys
from vizlib.modelcheck.hdf5 import scan_hdf5_source
from vizlib.modelcheck.report import ModelFileReport
from vizlib.modelcheck.rules import (KERAS_ARCHIVE_MEMBERS, LOCAL_HINT, MAX_CENTRAL_DIRECTORY_BYTES, MAX_CONFIG_BYTES,
                                     MAX_METADATA_BYTES, MiB, RATIO_FLOOR_BYTES, UNCHANGED, damaged)
from vizlib.units import fmt_bytes




def check_keras_archive(
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
            raise damaged(name, f"the zip archive cannot be read ({exc})") from None
        if n_entries > max_members:
            raise InputError(
                f"The archive '{name}' holds {n_entries} files; a .keras model holds exactly "
                f"{len(KERAS_ARCHIVE_MEMBERS)} (metadata.json, config.json, model.weights.h5). "
                "Upload the file written by model.save('model.keras') unchanged."
            )
        zf = archives.open_zip(fh, label=f"'{name}'", what="usable Keras model file", advice=UNCHANGED,
                               max_entries=max_members, max_directory_bytes=MAX_CENTRAL_DIRECTORY_BYTES)
        with zf:
            infos = _vet_zip_members(zf, name, size, max_weight_bytes=max_weight_bytes,
                                     max_ratio=max_ratio)
            metadata_raw = _read_member(zf, infos["metadata.json"], MAX_METADATA_BYTES, name)
            config_raw = _read_member(zf, infos["config.json"], MAX_CONFIG_BYTES, name)

            metadata = parse_json(metadata_raw, name, "metadata.json")
            if not isinstance(metadata, dict):
                raise damaged(name, "its metadata.json is not a JSON object")
            refuse_safe_mode_keys(metadata, name, "metadata.json")
            keras_version = metadata.get("keras_version")
            if not isinstance(keras_version, str):
                keras_version = None

            config = parse_json(config_raw, name, "config.json")
            audit = ConfigAudit(
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
                f"'{member}' in '{name}' unpacks to {fmt_bytes(info.file_size)}, more than "
                f"the {fmt_bytes(caps[member])} allowed for uploaded models. Upload a smaller "
                f"model, {LOCAL_HINT}."
            )
        if info.file_size > RATIO_FLOOR_BYTES and (
            info.compress_size == 0 or info.file_size > max_ratio * info.compress_size
        ):
            raise InputError(
                f"'{member}' in '{name}' would expand from {fmt_bytes(info.compress_size)} to "
                f"{fmt_bytes(info.file_size)} (a 'zip bomb'); real model files do not "
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
            f"'{name}' unpacks to {fmt_bytes(total)}, more than uploaded models may. "
            f"Upload a smaller model, {LOCAL_HINT}."
        )
    return infos


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, cap: int, name: str) -> bytes:
    return archives.read_member(zf, info, where=f"'{name}'", max_bytes=cap, what=UNCHANGED)


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
            window = archives.stored_member(raw, info, where=f"'{name}'", advice=UNCHANGED)
            return scan_hdf5_source(window, name, "model.weights.h5", max_weight_bytes)
    data = _read_member(zf, info, info.file_size, name)
    return scan_hdf5_source(io.BytesIO(data), name, "model.weights.h5", max_weight_bytes)
