"""An atlas on disk: Parquet tables and a JSON manifest, written atomically, read back validated.

Layout of an atlas directory::

    manifest.json        what was built from what (model, layers, dataset, counts, time), status
    stats/000000.parquet per-image, per-channel maximum / position / mean, one file per committed shard
    top.parquet          per layer and channel: the top-k images, highest first, with position and crop box
    thumbs.parquet       a small JPEG of every image in some top-k list (the picture the page opens),
                         and the model's view of it (what it saw, at its input size)
    crops.parquet        the receptive-field crop of the model's view around each top-k maximum (when the
                         field is smaller than the image; a field covering it all is the stored view)

Every file is written to a temporary name and renamed into place
(``os.replace``), so a killed build leaves either the old file or the new one,
never half of one. Reading trusts nothing: file names are fixed here (never
taken from the manifest), paths are confined to the atlas directory (and, for
the page, to a configured root), files are size-capped, schemas must match
exactly, and values are range-checked. Only JSON and Parquet are parsed
(no pickle).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from vizlib.errors import InputError
from vizlib.files import atomic_write_bytes

FORMAT = "vizlib-atlas"
VERSION = 1
MANIFEST = "manifest.json"
STATS_DIR = "stats"
TOP = "top.parquet"
THUMBS = "thumbs.parquet"
CROPS = "crops.parquet"
_SHARD_RE = re.compile(r"^(\d{6})\.parquet$")

#: Caps applied when reading an atlas.
MAX_MANIFEST_BYTES = 16 * 2**20
MAX_TOP_BYTES = 256 * 2**20
MAX_PICTURES_BYTES = 4 * 2**30
MAX_SHARD_BYTES = 1 * 2**30
MAX_LAYERS = 64
MAX_CHANNELS = 1 << 16
MAX_TOP_K = 1000
#: Failures listed by name in the manifest (all are counted; all are in the stats tables).
MAX_LISTED_FAILURES = 10_000
#: Rows per Parquet row group of the picture tables (what one crop lookup reads at most; atlases
#: written with 64 stay readable).
PICTURE_ROWS = 16
#: Decoded bytes the tables of an atlas may declare when read (checked from their metadata first).
MAX_SHARD_DECODED = 512 * 2**20
MAX_TOP_DECODED = 256 * 2**20
MAX_TOP_ROWS = 2_000_000
#: Declared bytes of one row group's picture column (one picture fetch reads at most this, in
#: batches of :data:`PICTURE_BATCH_BYTES`), and of a picture table's key columns in all.
MAX_PICTURE_GROUP_BYTES = 32 * 2**20
PICTURE_BATCH_BYTES = 512 * 1024
MAX_PICTURE_KEY_BYTES = 64 * 2**20


# --------------------------------------------------------------------------- atomic writes


class AtomicParquet:
    """A Parquet file written row group by row group under a temporary name, renamed on :meth:`commit`."""

    def __init__(self, path: Path, schema: Any):
        import pyarrow.parquet as pq

        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, self.tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        self.writer = pq.ParquetWriter(self.tmp, schema, compression="zstd", write_statistics=False)
        self.rows = 0

    def write(self, table: Any) -> None:
        if table.num_rows:
            self.writer.write_table(table, row_group_size=max(1, table.num_rows))
            self.rows += table.num_rows

    def commit(self) -> None:
        self.writer.close()
        with open(self.tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(self.tmp, 0o644)
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        try:
            self.writer.close()
        except Exception:
            pass
        try:
            os.unlink(self.tmp)
        except OSError:
            pass


def write_table(path: Path, table: Any) -> None:
    """One whole Parquet table, atomically."""
    w = AtomicParquet(path, table.schema)
    try:
        w.write(table)
        w.commit()
    except BaseException:
        w.abort()
        raise


def clean_temporaries(directory: Path) -> None:
    """Remove the temporary files a killed build left behind."""
    for sub in (directory, directory / STATS_DIR, directory / "featvis"):
        if sub.is_dir():
            for p in sub.iterdir():
                if p.name.startswith(".") and p.name.endswith(".tmp") and p.is_file():
                    try:
                        p.unlink()
                    except OSError:
                        pass


def write_manifest(directory: Path, manifest: dict) -> None:
    atomic_write_bytes(directory / MANIFEST, (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode())


# --------------------------------------------------------------------------- schemas


def stats_schema(channels: Sequence[int]) -> Any:
    import pyarrow as pa

    fields = [pa.field("id", pa.int64(), nullable=False), pa.field("path", pa.string(), nullable=False),
              pa.field("sha256", pa.string()), pa.field("error", pa.string())]
    for i, c in enumerate(channels):
        fields += [pa.field(f"max_{i}", pa.list_(pa.float32(), int(c))),
                   pa.field(f"argmax_{i}", pa.list_(pa.int32(), int(c))),
                   pa.field(f"mean_{i}", pa.list_(pa.float32(), int(c)))]
    return pa.schema(fields)


def top_schema() -> Any:
    import pyarrow as pa

    return pa.schema([
        pa.field("layer", pa.string(), nullable=False), pa.field("channel", pa.int32(), nullable=False),
        pa.field("rank", pa.int32(), nullable=False), pa.field("image_id", pa.int64(), nullable=False),
        pa.field("path", pa.string(), nullable=False), pa.field("value", pa.float32(), nullable=False),
        pa.field("row", pa.int32(), nullable=False), pa.field("col", pa.int32(), nullable=False),
        pa.field("mean", pa.float32(), nullable=False),
        pa.field("top", pa.int32(), nullable=False), pa.field("left", pa.int32(), nullable=False),
        pa.field("bottom", pa.int32(), nullable=False), pa.field("right", pa.int32(), nullable=False),
    ])


def thumbs_schema() -> Any:
    import pyarrow as pa

    return pa.schema([
        pa.field("image_id", pa.int64(), nullable=False), pa.field("path", pa.string(), nullable=False),
        pa.field("sha256", pa.string(), nullable=False), pa.field("width", pa.int32(), nullable=False),
        pa.field("height", pa.int32(), nullable=False), pa.field("jpeg", pa.binary(), nullable=False),
        pa.field("view", pa.binary(), nullable=False),
    ])


def crops_schema() -> Any:
    import pyarrow as pa

    return pa.schema([
        pa.field("layer", pa.string(), nullable=False), pa.field("channel", pa.int32(), nullable=False),
        pa.field("rank", pa.int32(), nullable=False), pa.field("image_id", pa.int64(), nullable=False),
        pa.field("image", pa.binary(), nullable=False),
    ])


def shard_path(directory: Path, shard: int) -> Path:
    return directory / STATS_DIR / f"{int(shard):06d}.parquet"


# --------------------------------------------------------------------------- shards


@dataclass
class ShardResult:
    """Everything one shard of images produced, ready to commit."""

    shard: int
    ids: np.ndarray  # int64, every id of the shard in order
    names: list[str]
    digests: list[Optional[str]]  # None for failed images
    errors: list[Optional[str]]  # None for decoded images
    max: list[np.ndarray]  # per layer (n, C) float32, rows of failed images unused
    argmax: list[np.ndarray]
    mean: list[np.ndarray]


def shard_table(result: ShardResult, channels: Sequence[int]) -> Any:
    import pyarrow as pa

    # Rows of failed images hold zeros (their "error" says why): Parquet round-trips null
    # fixed-size lists badly, and zeros keep the bytes deterministic.
    cols: dict[str, Any] = {
        "id": pa.array(result.ids, pa.int64()),
        "path": pa.array(result.names, pa.string()),
        "sha256": pa.array(result.digests, pa.string()),
        "error": pa.array(result.errors, pa.string()),
    }
    failed = np.array([e is not None for e in result.errors], dtype=bool)
    for i, c in enumerate(channels):
        for name, arr, typ in (("max", result.max[i], pa.float32()), ("argmax", result.argmax[i], pa.int32()),
                               ("mean", result.mean[i], pa.float32())):
            arr = np.array(arr, dtype=typ.to_pandas_dtype())
            arr[failed] = 0
            cols[f"{name}_{i}"] = pa.FixedSizeListArray.from_arrays(pa.array(arr.reshape(-1), typ), int(c))
    return pa.table(cols, schema=stats_schema(channels))


def write_shard(directory: Path, result: ShardResult, channels: Sequence[int]) -> None:
    """Commit one shard: after this returns, a killed build resumes after it."""
    write_table(shard_path(directory, result.shard), shard_table(result, channels))


def _check_file(directory: Path, path: Path, limit: int) -> int:
    """Size of a regular file inside ``directory`` (no symlink out), or InputError."""
    try:
        st = os.lstat(path)
    except OSError as exc:
        raise InputError(f"The atlas is missing {path.name}.") from exc
    import stat

    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{path.name} in the atlas is not a regular file.")
    if not path.resolve().is_relative_to(directory.resolve()):
        raise InputError(f"{path.name} points outside the atlas.")
    if st.st_size > limit:
        raise InputError(f"{path.name} is {st.st_size / 2**20:.0f} MB, over the {limit / 2**20:.0f} MB limit.")
    return int(st.st_size)


def open_parquet(directory: Path, path: Path, file_limit: int, schema: Any, *, what: str,
                 columns: Optional[Sequence[str]] = None, max_rows: Optional[int] = None,
                 max_group_bytes: int = 512 * 2**20, batch_bytes: Optional[int] = None) -> Any:
    """A table of the atlas, opened through :func:`vizlib.tables.open_table` after the file checks,
    its schema checked before anything is decoded (a :class:`vizlib.tables.TableReader`)."""
    from vizlib import tables

    _check_file(directory, path, file_limit)
    reader = tables.open_table(path, "parquet", label=path.name, columns=columns, max_rows=max_rows,
                               max_group_bytes=max_group_bytes, batch_bytes=batch_bytes or tables.BATCH_BYTES)
    if not reader.schema.remove_metadata().equals(schema):
        reader.close()
        raise InputError(f"{path.name} does not have the columns of an atlas {what} table.")
    return reader


def read_parquet(directory: Path, path: Path, file_limit: int, schema: Any, *, what: str, max_bytes: int,
                 columns: Optional[Sequence[str]] = None, max_rows: Optional[int] = None) -> Any:
    """A (small) table of the atlas, whole: declared rows and decoded bytes checked before reading,
    read in bounded batches, dictionary columns decoded within ``max_bytes``."""
    from vizlib import tables

    with open_parquet(directory, path, file_limit, schema, what=what, columns=columns, max_rows=max_rows,
                      max_group_bytes=max_bytes) as reader:
        return tables.plain(reader.read(max_bytes), max_bytes, path.name)


def read_shard(directory: Path, shard: int, channels: Sequence[int], *, expect_ids: Optional[np.ndarray] = None,
               columns: Optional[Sequence[str]] = None) -> Any:
    """A committed shard's table, validated (schema, ids, positions); InputError if it is not usable.

    ``columns``: read only these (e.g. ``["id", "sha256"]``)."""
    path = shard_path(directory, shard)
    rows = len(expect_ids) if expect_ids is not None else None
    table = read_parquet(directory, path, MAX_SHARD_BYTES, stats_schema(channels), what="stats",
                         max_bytes=MAX_SHARD_DECODED, columns=columns, max_rows=rows)
    if expect_ids is not None:
        ids = table.column("id").to_numpy()
        if len(ids) != len(expect_ids) or not np.array_equal(ids, expect_ids):
            raise InputError(f"{path.name} does not hold the images of shard {shard}.")
    return table


def shard_stats(table: Any, channels: Sequence[int], layer_shapes: Sequence[tuple[int, int, int]]
                ) -> tuple[np.ndarray, list[Any]]:
    """(ids of decoded images, per layer LayerStats) from a shard table."""
    from vizlib.atlas.pipeline import LayerStats

    errors = table.column("error")
    ok = np.asarray(errors.is_null().to_numpy(zero_copy_only=False), dtype=bool)
    ids = table.column("id").to_numpy()[ok]
    out = []
    for i, c in enumerate(channels):
        def grab(name: str, dtype: Any) -> np.ndarray:
            col = table.column(f"{name}_{i}").combine_chunks()
            _need(col.null_count == 0, "an atlas stats table has null statistics")
            vals = col.flatten().to_numpy(zero_copy_only=False)
            return np.asarray(vals, dtype).reshape(-1, int(c))[ok]

        st = LayerStats(grab("max", np.float32), grab("argmax", np.int32), grab("mean", np.float32))
        h, w, _ = layer_shapes[i]
        if st.max.shape != (len(ids), int(c)) or (len(ids) and (st.argmax.min() < 0 or st.argmax.max() >= h * w)):
            raise InputError("An atlas stats table has values out of range.")
        out.append(st)
    return ids, out


# --------------------------------------------------------------------------- manifest validation


def _need(cond: bool, what: str) -> None:
    if not cond:
        raise InputError(f"This is not a valid atlas: {what}.")


def _manifest_schema() -> Any:
    """The type of every manifest field a reader relies on (unknown fields may be anything, bounded by the parse)."""
    from vizlib import schema as s

    text, name, count = s.Str(1000), s.Str(10_000), s.Int(0, 2**53)
    some = s.Obj(extra=s.Any_(), max_keys=64)  # an object whose contents nothing reads
    maybe = lambda spec: s.OneOf((spec, s.Null()))  # noqa: E731
    return s.Obj(
        fields={
            "format": s.Str(100), "version": s.Int(0, 10**6), "status": s.Str(32),
            "model": s.Obj(fields={"key": text, "title": text, "label": maybe(text), "weights": text,
                                   "weights_digest": s.Str(200), "preprocess": text,
                                   "input_size": s.List(s.Int(1, 4096), 2), "channels": s.Int(1, 4)},
                           required=("key", "title", "weights", "weights_digest", "preprocess", "input_size",
                                     "channels"), extra=s.Any_(), max_keys=64),
            "layers": s.List(s.Obj(fields={"name": text, "index": s.Int(0, 2**31), "kind": text,
                                           "shape": s.List(s.Int(1, 2**31), 3),
                                           "receptive_field": maybe(some)},
                                   required=("name", "shape"), extra=s.Any_(), max_keys=32), MAX_LAYERS),
            "top_k": s.Int(1, MAX_TOP_K),
            "images": s.Obj(fields={"count": count, "source": name, "kind": text, "fingerprint": text,
                                    "listing_digest": text}, required=("count",), extra=s.Any_(), max_keys=64),
            "job": s.Obj(fields={"batch_size": s.Int(1, 2**31), "shard_size": s.Int(1, 2**31), "shards": count,
                                 "listing_digest": text, "source": name, "source_kind": text},
                         required=("batch_size", "shard_size"), extra=s.Any_(), max_keys=64),
            "counts": s.Map(count, key_len=64, max_keys=64),
            "failures": s.List(s.Obj(fields={"path": name, "error": name}, required=("path", "error")),
                               MAX_LISTED_FAILURES),
            "failures_listed": count,
            "runs": s.List(s.Obj(fields={"seconds": s.Num()}, required=("seconds",), extra=s.Any_(), max_keys=64),
                           100_000),
            "tables": s.Map(s.Obj(fields={"file": text, "dir": text, "rows": count, "files": count},
                                  extra=s.Any_(), max_keys=64), key_len=64, max_keys=64),
            "featvis": s.Obj(fields={"algorithm": text, "chunk": count,
                                     "layers": s.Map(s.Obj(fields={"file": text, "channels_count": count,
                                                                   "status": text}, extra=s.Any_(), max_keys=64),
                                                     key_len=1000, max_keys=MAX_LAYERS * 16)},
                             extra=s.Any_(), max_keys=64),
            "decode": some, "time": some, "started": text, "finished": text, "engine": text,
            "warnings": s.List(name, 10_000),
        },
        required=("format", "version", "status", "model", "layers", "top_k", "images", "counts", "job"),
        extra=s.Any_(), max_keys=256)


def read_manifest(directory: Path) -> dict:
    """The manifest, parsed within bounds (:func:`vizlib.schema.parse_json`: size, nesting, number digits,
    duplicate keys) and checked for the type of every field the reader relies on."""
    from vizlib import schema

    path = directory / MANIFEST
    _check_file(directory, path, MAX_MANIFEST_BYTES)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"The atlas manifest could not be read ({exc.strerror or exc}).") from exc
    manifest = schema.parse_json(raw, what="The atlas manifest", max_bytes=MAX_MANIFEST_BYTES)
    validate_manifest(manifest)
    return manifest


def validate_manifest(m: Any) -> None:
    """Refuse a manifest whose fields are of the wrong type or out of range (InputError naming the field)."""
    from vizlib import schema

    _need(isinstance(m, dict), "the manifest is not a JSON object")
    _need(m.get("format") == FORMAT, f"the manifest's format is not {FORMAT!r}")
    schema.validate(m, _manifest_schema(), what="This is not a valid atlas manifest")
    _need(isinstance(m, dict), "the manifest is not a JSON object")
    _need(m.get("format") == FORMAT, f"the manifest's format is not {FORMAT!r}")
    _need(m.get("version") == VERSION, f"the manifest's version is not {VERSION}")
    _need(m.get("status") in ("building", "complete"), "unknown status")
    model = m.get("model")
    _need(isinstance(model, dict), "no model section")
    for key in ("key", "title", "weights", "weights_digest", "preprocess"):
        _need(isinstance(model.get(key), str), f"model.{key} missing")
    size = model.get("input_size")
    _need(isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and 0 < v <= 4096 for v in size),
          "bad model.input_size")
    _need(model.get("channels") in (1, 3), "bad model.channels")
    layers = m.get("layers")
    _need(isinstance(layers, list) and 0 < len(layers) <= MAX_LAYERS, "bad layers list")
    names = set()
    for layer in layers:
        _need(isinstance(layer, dict) and isinstance(layer.get("name"), str) and layer["name"], "bad layer entry")
        shape = layer.get("shape")
        _need(isinstance(shape, list) and len(shape) == 3 and all(isinstance(v, int) and v > 0 for v in shape)
              and shape[2] <= MAX_CHANNELS and shape[0] * shape[1] < 2**31, "bad layer shape")
        _need(layer["name"] not in names, "a layer is listed twice")
        names.add(layer["name"])
        rf = layer.get("receptive_field")
        if rf is not None:
            from vizlib.receptive import ReceptiveField

            try:
                ReceptiveField.from_json(rf)
            except Exception:
                _need(False, "bad receptive field")
    k = m.get("top_k")
    _need(isinstance(k, int) and 1 <= k <= MAX_TOP_K, "bad top_k")
    images = m.get("images")
    _need(isinstance(images, dict) and isinstance(images.get("count"), int) and images["count"] >= 0, "bad images")
    counts = m.get("counts")
    _need(isinstance(counts, dict), "no counts")
    failures = m.get("failures", [])
    _need(isinstance(failures, list) and all(isinstance(f, dict) and isinstance(f.get("path"), str)
                                             and isinstance(f.get("error"), str) for f in failures), "bad failures")
    job = m.get("job")
    _need(isinstance(job, dict) and isinstance(job.get("batch_size"), int) and isinstance(job.get("shard_size"), int)
          and job["batch_size"] > 0 and job["shard_size"] > 0, "bad job")


# --------------------------------------------------------------------------- zipped atlases

#: Caps of a zipped atlas uploaded to the page.
MAX_ZIP_MEMBERS = 10_000
MAX_UNZIPPED_BYTES = 1 * 2**30
_ZIP_RATIO = 200
_ATLAS_MEMBER = re.compile(r"^(manifest\.json|top\.parquet|thumbs\.parquet|crops\.parquet|stats/\d{6}\.parquet|featvis/[A-Za-z0-9_-]+-[0-9a-f]{8}\.parquet)$")


def extract_zip(data: bytes, into: str | os.PathLike[str]) -> Path:
    """Unpack a zipped atlas into ``into`` (a fresh directory the server chose) and open it, validated.

    Only the atlas's own file names are taken (at the top or under one folder);
    everything else in the archive is ignored. Member sizes, the total and the
    compression ratio are capped before anything is inflated; names never
    become paths outside ``into``.
    """
    from vizlib import archives

    advice = "Zip the atlas folder and upload the .zip."
    zf = archives.open_zip(data, label="That file", what="ZIP file", advice=advice, max_entries=MAX_ZIP_MEMBERS,
                           max_directory_bytes=16 * 2**20, too_many="An atlas has far fewer; zip its folder only.")
    with zf:
        infos = zf.infolist()
        names = [i.filename.replace("\\", "/") for i in infos if not i.is_dir()]
        prefix = ""
        if MANIFEST not in names:
            tops = [n[: -len(MANIFEST)] for n in names if n.endswith("/" + MANIFEST) and n.count("/") == 1]
            if len(tops) != 1:
                raise InputError("The ZIP holds no atlas: manifest.json must be at its top or in one folder.")
            prefix = tops[0]
        chosen = []
        taken: set[str] = set()
        total = 0
        for info in infos:
            name = info.filename.replace("\\", "/")
            if info.is_dir() or not name.startswith(prefix):
                continue
            rel = name[len(prefix):]
            if not _ATLAS_MEMBER.match(rel) or rel in taken:
                continue  # not an atlas file, or a name listed twice (the first one counts)
            limit = MAX_MANIFEST_BYTES if rel == MANIFEST else MAX_PICTURES_BYTES
            archives.check_member(info, where="the ZIP", max_bytes=limit, max_ratio=_ZIP_RATIO, what=advice)
            total += info.file_size
            taken.add(rel)
            chosen.append((rel, info))
        if total > MAX_UNZIPPED_BYTES:
            raise InputError(f"The atlas in the ZIP is {total / 2**20:.0f} MB unpacked; the limit is "
                             f"{MAX_UNZIPPED_BYTES / 2**20:.0f} MB.")
        dest = Path(into)
        dest.mkdir(parents=True, exist_ok=True)
        for rel, info in chosen:  # streamed to disk: memory stays flat whatever the members hold
            limit = MAX_MANIFEST_BYTES if rel == MANIFEST else MAX_PICTURES_BYTES
            archives.copy_member(zf, info, dest / rel, where="the ZIP", max_bytes=limit, max_ratio=_ZIP_RATIO,
                                 what=advice)
    return load(dest)


# The reading side (Atlas, load) lives in vizlib.atlas.reader, which imports this module.
from vizlib.atlas.reader import Atlas, load  # noqa: E402,F401
