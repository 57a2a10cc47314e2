"""Reading a finished atlas: top-k per channel, crops, thumbnails, stored feature visualisations, statistics.

Nothing is trusted: the directory is confined under a root (no '..', no links out,
no loops), the manifest is validated (:func:`vizlib.atlas.store.read_manifest`),
every table is sized from its metadata and schema-checked before it is decoded
(:func:`vizlib.atlas.store.read_parquet`, :mod:`vizlib.tables`), one picture is
fetched without decoding its row group, and stored pictures are decoded by the one
image decoder within a per-request pixel budget (:class:`vizlib.images.budget.PixelBudget`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np

from vizlib.atlas.store import (
    CROPS, MAX_PICTURE_GROUP_BYTES, MAX_PICTURE_KEY_BYTES, MAX_PICTURES_BYTES, MAX_TOP_BYTES, MAX_TOP_DECODED,
    MAX_TOP_ROWS, PICTURE_BATCH_BYTES, STATS_DIR, THUMBS, TOP, _SHARD_RE, _need, crops_schema, open_parquet,
    read_manifest, read_parquet, read_shard, shard_stats, thumbs_schema, top_schema,
)
from vizlib.errors import InputError


def _confine(path: str | os.PathLike[str], root: Optional[str | os.PathLike[str]]) -> Path:
    """``path`` as a directory confined under ``root`` (when given): relative, no '..', no symlink out."""
    if root is None:
        p = Path(path)
        if not p.is_dir():
            raise InputError(f"There is no atlas directory at {p}.")
        return _resolve(p)
    text = os.fspath(path)
    if "\x00" in text:
        raise InputError("An atlas name can't contain NUL.")
    rel = Path(text)
    if rel.is_absolute() or text.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", text):
        raise InputError("Give the atlas as a folder name under the atlas root, not an absolute path.")
    if any(part == ".." for part in re.split(r"[\\/]", text)):
        raise InputError("An atlas name can't contain '..'.")
    base = _resolve(Path(root))
    full = _resolve(base / rel)
    if not full.is_relative_to(base):
        raise InputError("That atlas is outside the atlas root.")
    if not full.is_dir():
        raise InputError(f"There is no atlas called {text!r} under the atlas root.")
    return full


def _resolve(p: Path) -> Path:
    """``p`` with its links resolved; a symlink loop (RuntimeError before Python 3.13) is a refusal."""
    try:
        return p.resolve()
    except (OSError, RuntimeError) as exc:
        raise InputError(f"The atlas path {p.name!r} is a loop of links or can't be resolved.") from exc


def _float(v: Any) -> float:
    return float(v)


def _binary_type() -> Any:
    import pyarrow as pa

    return pa.binary()


class Atlas:
    """A finished atlas, read-only: top-k per channel, crops, thumbnails, per-image statistics.

    Open one with :func:`load`. Rows of :meth:`top` are dicts, highest first, with
    ``path`` (relative to the images root; a ZIP member; a table row id),
    ``value`` (the channel's maximum over that image), ``row`` and ``col`` of
    the maximum in the layer's map, ``mean``, ``rank``, ``image_id`` and the
    receptive-field box ``top``/``left``/``bottom``/``right`` in the model's
    input pixels.
    """

    def __init__(self, directory: Path, manifest: dict):
        self.directory = directory
        self.manifest = manifest
        self._index: Optional[dict[tuple[str, int], tuple[int, int]]] = None
        self._cols: dict[str, np.ndarray] = {}
        self._crop_index: Optional[dict[tuple[str, int, int], int]] = None
        self._thumb_index: Optional[dict[str, int]] = None
        self._crop_readers: dict = {}
        self._thumb_readers: dict = {}
        self._featvis: Any = None

    # ------------------------------------------------------------ facts

    @property
    def layers(self) -> list[str]:
        return [layer["name"] for layer in self.manifest["layers"]]

    def layer(self, name: str) -> dict:
        for layer in self.manifest["layers"]:
            if layer["name"] == name:
                return layer
        raise InputError(f"This atlas has no layer {name!r}; it has {', '.join(self.layers)}.")

    @property
    def top_k(self) -> int:
        return int(self.manifest["top_k"])

    @property
    def model(self) -> dict:
        return self.manifest["model"]

    @property
    def complete(self) -> bool:
        return self.manifest.get("status") == "complete"

    def __repr__(self) -> str:
        return (f"Atlas({str(self.directory)!r}, model={self.model['key']!r}, layers={self.layers}, "
                f"k={self.top_k}, images={self.manifest['images']['count']})")

    # ------------------------------------------------------------ top-k

    def _max_top_rows(self) -> int:
        """Rows a top table of this manifest can have: k per channel of every layer (capped)."""
        return int(min(MAX_TOP_ROWS, self.top_k * sum(int(layer["shape"][2]) for layer in self.manifest["layers"])))

    def _load_top(self) -> None:
        path = self.directory / TOP
        table = read_parquet(self.directory, path, MAX_TOP_BYTES, top_schema(), what="top-k",
                             max_bytes=MAX_TOP_DECODED, max_rows=self._max_top_rows())
        cols = {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}
        n = table.num_rows
        expect = self.manifest.get("tables", {}).get("top", {}).get("rows")
        _need(expect is None or expect == n, "top.parquet's row count differs from the manifest")
        shapes = {layer["name"]: layer["shape"] for layer in self.manifest["layers"]}
        k = self.top_k
        index: dict[tuple[str, int], tuple[int, int]] = {}
        layer_col = cols["layer"]
        start = 0
        in_size = self.model["input_size"]
        while start < n:
            name = str(layer_col[start])
            ch = int(cols["channel"][start])
            stop = start
            while stop < n and layer_col[stop] == name and cols["channel"][stop] == ch:
                stop += 1
            shape = shapes.get(name)
            _need(shape is not None, f"top.parquet names an unknown layer {name!r}")
            _need(0 <= ch < shape[2], "a channel in top.parquet is out of range")
            _need((name, ch) not in index, "top.parquet is not sorted by layer and channel")
            ranks = cols["rank"][start:stop]
            _need(stop - start <= k and np.array_equal(ranks, np.arange(stop - start)), "bad ranks in top.parquet")
            vals = cols["value"][start:stop].astype(np.float64)
            key = np.where(np.isnan(vals), -np.inf, vals)
            _need(bool(np.all(key[1:] <= key[:-1])), "top.parquet is not ordered highest first")  # inf ties too
            rows, cs = cols["row"][start:stop], cols["col"][start:stop]
            _need(bool(np.all((rows >= 0) & (rows < shape[0]) & (cs >= 0) & (cs < shape[1]))),
                  "a position in top.parquet is outside the layer's map")
            t, lft, b, r = (cols[c][start:stop] for c in ("top", "left", "bottom", "right"))
            _need(bool(np.all((t >= 0) & (lft >= 0) & (b <= in_size[0]) & (r <= in_size[1]) & (t < b) & (lft < r))),
                  "a crop box in top.parquet is outside the image")
            index[(name, ch)] = (start, stop)
            start = stop
        self._cols = cols
        self._index = index

    def top(self, layer: str, channel: int) -> list[dict]:
        """The top-k images of ``layer``'s ``channel``, highest maximum first (ties: earlier image first)."""
        if self._index is None:
            self._load_top()
        info = self.layer(layer)
        c = int(channel)
        if not 0 <= c < info["shape"][2]:
            raise InputError(f"Layer {layer!r} has channels 0 to {info['shape'][2] - 1}; there is no channel {c}.")
        assert self._index is not None
        start, stop = self._index.get((layer, c), (0, 0))
        rows = []
        for i in range(start, stop):
            rows.append({
                "rank": int(self._cols["rank"][i]), "path": str(self._cols["path"][i]),
                "image_id": int(self._cols["image_id"][i]), "value": _float(self._cols["value"][i]),
                "row": int(self._cols["row"][i]), "col": int(self._cols["col"][i]),
                "mean": _float(self._cols["mean"][i]),
                "top": int(self._cols["top"][i]), "left": int(self._cols["left"][i]),
                "bottom": int(self._cols["bottom"][i]), "right": int(self._cols["right"][i]),
            })
        return rows

    # ------------------------------------------------------------ pictures

    def _picture_index(self, name: str, key_cols: Sequence[str], schema: Any) -> tuple[dict, dict]:
        """({key: table row}, {picture column: bounded reader}) of a picture table; only the keys are read."""
        path = self.directory / name
        max_rows = self._max_top_rows()
        keys = read_parquet(self.directory, path, MAX_PICTURES_BYTES, schema, what="pictures",
                            max_bytes=MAX_PICTURE_KEY_BYTES, columns=list(key_cols), max_rows=max_rows)
        arrays = [keys.column(c).to_pylist() for c in key_cols]
        index: dict = {}
        for j, key in enumerate(zip(*arrays)):
            index.setdefault(key if len(key) > 1 else key[0], j)
        readers = {}
        for column in schema.names:
            if schema.field(column).type == _binary_type():
                readers[column] = open_parquet(self.directory, path, MAX_PICTURES_BYTES, schema, what="pictures",
                                               columns=[column], max_rows=max_rows,
                                               max_group_bytes=MAX_PICTURE_GROUP_BYTES,
                                               batch_bytes=PICTURE_BATCH_BYTES)
        return index, readers

    def _pictures(self, readers: dict, wanted: dict[int, str], column: str, budget: Any, max_side: int,
                  max_pixels: Optional[int] = None) -> dict[int, Any]:
        """{row: PIL image} of the rows ``wanted`` ({row: name}), fetched without decoding whole row groups
        and decoded by the one image decoder within ``budget``."""
        values = readers[column].take(sorted(wanted), column)
        out = {}
        for row, name in wanted.items():
            blob = values[row].as_py()
            out[row] = budget.decode(blob, name, max_side=max_side, max_pixels=max_pixels)
        return out

    def crops(self, layer: str, channel: int) -> list[Any]:
        """The receptive-field crops of :meth:`top`'s rows (PIL images of the model's view), in rank order.

        Decoded within one pixel budget (:class:`vizlib.images.budget.PixelBudget`): a damaged
        atlas whose pictures declare more raises :class:`InputError`."""
        from vizlib.atlas.pipeline import CROP_SIDE
        from vizlib.images.budget import PixelBudget

        rows = self.top(layer, channel)
        if self._crop_index is None:
            self._crop_index, self._crop_readers = self._picture_index(CROPS, ("layer", "channel", "rank"),
                                                                       crops_schema())
        h, w = self.model["input_size"]
        budget = PixelBudget(what="the atlas's stored pictures")
        views = {}
        crops = {}
        for r in rows:
            if (r["top"], r["left"], r["bottom"], r["right"]) == (0, 0, h, w):
                views[r["rank"]] = r["path"]  # the field is the whole image
            else:
                where = self._crop_index.get((layer, int(channel), r["rank"]))
                if where is not None:
                    crops[where] = r["rank"]
        got = self._pictures(self._crop_readers, {row: f"crop {rank + 1}" for row, rank in crops.items()}, "image",
                             budget, CROP_SIDE)
        by_rank = {rank: got[row] for row, rank in crops.items()}
        for rank, path in views.items():
            by_rank[rank] = self._thumb(path, "view", budget)
        return [by_rank.get(r["rank"]) for r in rows]

    def view(self, path: str) -> Any:
        """The model's view of an image in some top-k list (PIL image at the model's input size)."""
        return self._thumb(path, "view")

    @property
    def exact_views(self) -> bool:
        """Whether the model's views are stored losslessly (atlases built since the page and the atlas
        share one decode path): then :meth:`picture` gives exactly the pixels each value was measured on."""
        decode = self.manifest.get("decode")
        return isinstance(decode, dict) and decode.get("view") == "png"

    def picture(self, path: str) -> Any:
        """The picture to open an atlas image with in the page: the exact model view where the atlas stores
        it losslessly (the page then reproduces the row's value), else the stored thumbnail."""
        return self.view(path) if self.exact_views else self.image(path)

    def image(self, path: str) -> Any:
        """The stored thumbnail (RGB PIL image, longest side 256) of an image in some top-k list."""
        return self._thumb(path, "jpeg")

    def _thumb(self, path: str, column: str, budget: Any = None) -> Any:
        from vizlib.atlas.pipeline import THUMB_SIDE
        from vizlib.images.budget import PixelBudget

        if self._thumb_index is None:
            self._thumb_index, self._thumb_readers = self._picture_index(THUMBS, ("path",), thumbs_schema())
        row = self._thumb_index.get(str(path))
        if row is None:
            raise InputError(f"The atlas has no picture of {path!r} (only images in some top-k list are kept).")
        h, w = self.model["input_size"]
        side, pixels = (max(h, w), h * w) if column == "view" else (THUMB_SIDE, None)
        budget = budget or PixelBudget(what="the atlas's stored pictures")
        return self._pictures(self._thumb_readers, {row: str(path)}, column, budget, side, pixels)[row]

    # ------------------------------------------------------------ stored feature visualisations

    def _featvis_reader(self) -> Any:
        if self._featvis is None:
            from vizlib.atlas.bulk_featvis import Reader

            self._featvis = Reader(self.directory, self.manifest)
        return self._featvis

    @property
    def featvis_layers(self) -> list[str]:
        """Layers whose every channel has a stored feature visualisation (``build --featvis``)."""
        return self._featvis_reader().layers

    def feature_visualization(self, layer: str, channel: int) -> Optional[np.ndarray]:
        """The stored feature visualisation of ``layer``'s ``channel`` (uint8 (H, W, C)), or None if not stored.

        Validated when read (schema, sizes, PNG size and mode); InputError if the file is damaged.
        """
        return self._featvis_reader().get(layer, channel)

    def feature_visualization_settings(self, layer: str) -> Optional[dict]:
        """``size``, ``channels``, ``steps`` and ``seed`` the stored images of ``layer`` were made with."""
        return self._featvis_reader().settings(layer)

    # ------------------------------------------------------------ per-image statistics

    def shard_files(self) -> list[Path]:
        d = self.directory / STATS_DIR
        if not d.is_dir():
            return []
        return sorted(p for p in d.iterdir() if _SHARD_RE.match(p.name))

    def stats(self, layer: str) -> Iterator[dict]:
        """Per-image statistics of ``layer``, shard by shard: dicts of ``id``, ``path`` (n,) and
        ``max``, ``mean`` (n, C) float32 and ``row``, ``col`` (n, C) int32, decoded images only."""
        names = self.layers
        i = names.index(self.layer(layer)["name"])
        shapes = [tuple(layer_["shape"]) for layer_ in self.manifest["layers"]]
        channels = [s[2] for s in shapes]
        for path in self.shard_files():
            shard = int(_SHARD_RE.match(path.name).group(1))  # type: ignore[union-attr]
            ss = int(self.manifest["job"]["shard_size"])
            expect = np.arange(shard * ss, min(int(self.manifest["images"]["count"]), (shard + 1) * ss))
            table = read_shard(self.directory, shard, channels, expect_ids=expect)
            ids, per_layer = shard_stats(table, channels, shapes)
            ok = np.asarray(table.column("error").is_null().to_numpy(zero_copy_only=False), bool)
            paths = np.asarray(table.column("path").to_pylist(), dtype=object)[ok]
            st = per_layer[i]
            w = shapes[i][1]
            yield {"id": ids, "path": paths, "max": st.max, "mean": st.mean,
                   "row": st.argmax // w, "col": st.argmax % w}

    # ------------------------------------------------------------ the model it belongs to

    def model_mismatch(self, model: Any) -> Optional[str]:
        """None if ``model`` is the one this atlas was built with; else a message saying what differs."""
        want = self.model
        key = getattr(model, "key", None)
        try:
            digest = model.weights_digest()
        except Exception:
            digest = None
        label = getattr(model, "label", key)
        if digest != want["weights_digest"]:
            same_arch = str(key).split(":")[0] == want["key"].split(":")[0]
            return (f"This atlas was built with {want.get('label') or want['title']} (weights "
                    f"{want['weights_digest'][:12]}), but the page shows {label}"
                    + (" with different weights" if same_arch else "")
                    + f". Switch the model to {want.get('label') or want['title']}, or build an atlas for this one.")
        if [int(v) for v in getattr(model, "input_size", ())] != list(want["input_size"]) \
                or int(getattr(model, "channels", 0)) != int(want["channels"]):
            return "This atlas was built for another input size or colour mode than the model's."
        try:
            from vizlib.layers import find_layer

            for layer in self.manifest["layers"]:
                info = find_layer(model, layer["name"])
                if list(info.output_shape) != list(layer["shape"]):
                    return f"Layer {layer['name']!r} has another shape in this model than in the atlas."
        except InputError as exc:
            return f"The atlas's layers don't match this model: {exc}"
        return None


def load(directory: str | os.PathLike[str], *, root: Optional[str | os.PathLike[str]] = None) -> Atlas:
    """Open the atlas in ``directory`` (confined under ``root`` when given), validated.

    Raises :class:`InputError` for anything that is not a complete, well-formed
    atlas: a path outside ``root``, a missing or malformed manifest, tables
    with other columns or out-of-range values.
    """
    path = _confine(directory, root)
    manifest = read_manifest(path)
    if manifest["status"] != "complete":
        raise InputError("This atlas is not finished yet: run the same build command again to complete it.")
    atlas = Atlas(path, manifest)
    atlas._load_top()
    return atlas
