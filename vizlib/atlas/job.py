"""Building an atlas: plan the job, run an engine over the missing shards, merge, store the pictures.

The job is planned from the listing (image ids = positions in it), the model,
the layers and k; shards of ``shard_size`` consecutive images, each cut into
batches of ``batch_size``, are the unit of work and of commitment. Whatever
engine runs them, shards are committed by this process as atomic Parquet
files; a rerun on the same directory finds the committed shards, runs only
the others, and the merge (always from the committed files, in shard order)
then gives exactly the result of an uninterrupted run.
"""

from __future__ import annotations

import datetime as _dt
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np

from vizlib.atlas import store
from vizlib.atlas.pipeline import (
    DECODE_MAX_SIDE, DEFAULT_SHARD_BATCHES, LayerStats, TopK, crop_bytes, default_batch_size, view_and_thumbnail,
    view_bytes, VIEW_FORMAT,
)
from vizlib.atlas.sources import IGNORED_EXAMPLES, Listing, list_source, read_bytes
from vizlib.errors import InputError

#: The default number of top images kept per channel.
DEFAULT_TOP = 49
ENGINES = ("local", "ray")

ProgressFn = Callable[[int, int], None]


@dataclass
class Job:
    """What is computed: fixed at the first run, checked on every resume."""

    listing: Listing
    layers: list[str]
    shapes: list[tuple[int, int, int]]
    top_k: int
    batch_size: int
    shard_size: int
    input_size: tuple[int, int]
    channels: int

    @property
    def n_images(self) -> int:
        return len(self.listing)

    @property
    def n_shards(self) -> int:
        return -(-self.n_images // self.shard_size)

    @property
    def layer_channels(self) -> list[int]:
        return [s[2] for s in self.shapes]

    def shard_ids(self, shard: int) -> range:
        return range(shard * self.shard_size, min(self.n_images, (shard + 1) * self.shard_size))

    def batches(self, shard: int) -> list[range]:
        ids = self.shard_ids(shard)
        return [range(s, min(ids.stop, s + self.batch_size)) for s in range(ids.start, ids.stop, self.batch_size)]

    def names(self, ids: range) -> list[str]:
        return self.listing.names[ids.start:ids.stop]


class ShardCollector:
    """Gathers a shard's batches (in any order) into a :class:`store.ShardResult`."""

    def __init__(self, job: Job, shard: int):
        self.job = job
        self.shard = shard
        ids = job.shard_ids(shard)
        n = len(ids)
        self.start = ids.start
        self.ids = np.arange(ids.start, ids.stop, dtype=np.int64)
        self.digests: list[Optional[str]] = [None] * n
        self.errors: list[Optional[str]] = ["not processed"] * n
        self.max = [np.zeros((n, c), np.float32) for c in job.layer_channels]
        self.argmax = [np.zeros((n, c), np.int32) for c in job.layer_channels]
        self.mean = [np.zeros((n, c), np.float32) for c in job.layer_channels]
        self.pending = {b.start for b in job.batches(shard)}

    def add(self, ids: np.ndarray, digests: Sequence[str], failures: Sequence[tuple[int, str]],
            stats: Sequence[LayerStats], *, batch_start: int) -> None:
        """One batch's results (a batch seen twice, as a retried task may deliver it, counts once)."""
        if batch_start not in self.pending:
            return
        rows = np.asarray(ids, dtype=np.int64) - self.start
        for r, d in zip(rows, digests):
            self.digests[r] = d
            self.errors[r] = None
        for i, reason in failures:
            self.errors[i - self.start] = reason
        for li, st in enumerate(stats):
            self.max[li][rows] = st.max
            self.argmax[li][rows] = st.argmax
            self.mean[li][rows] = st.mean
        self.pending.discard(batch_start)

    @property
    def done(self) -> bool:
        return not self.pending

    def result(self) -> store.ShardResult:
        names = self.job.listing.names[self.start:self.start + len(self.ids)]
        return store.ShardResult(self.shard, self.ids, list(names), self.digests, self.errors,
                                 self.max, self.argmax, self.mean)


# --------------------------------------------------------------------------- models


def _load(model: Any, weights: Optional[str], preprocess: Any) -> Any:
    from vizlib.contract import VizModel, as_model

    if isinstance(model, VizModel):
        return model
    kwargs: dict = {}
    if preprocess is not None:
        kwargs["preprocess"] = preprocess
    w = None if weights in (None, "untrained") else weights
    return as_model(model, weights=w, **kwargs)


def model_spec(model: Any, m: Any, weights: Optional[str], preprocess: Any) -> dict:
    """How another process (a Ray actor) loads the same model: a catalogue name or a file's bytes."""
    from vizlib.models import BUNDLED_NAME, CATALOGUE

    if isinstance(model, (str, os.PathLike)):
        text = os.fspath(model)
        if text == BUNDLED_NAME or text in CATALOGUE:
            return {"name": text, "weights": weights or "untrained", "digest": m.weights_digest()}
        if Path(text).is_file():
            return {"file": str(Path(text).resolve()), "weights": weights or "untrained",
                    "preprocess": preprocess if isinstance(preprocess, str) else "auto",
                    "digest": m.weights_digest()}
    raise InputError("The Ray engine loads the model in every worker: give a catalogue name, "
                     "'emotion_cnn', or a .keras/.h5 file (not an in-memory model).")


# --------------------------------------------------------------------------- planning and resuming


def _layer_entries(m: Any, layers: Sequence[str]) -> tuple[list[str], list[tuple[int, int, int]], list[dict]]:
    from vizlib.receptive import receptive_fields
    from vizlib.layers import find_layer

    infos = [find_layer(m, name) for name in layers]
    names = [i.name for i in infos]
    if len(set(names)) != len(names):
        raise InputError("A layer is named twice in --layers.")
    shapes = [tuple(int(v) for v in i.output_shape) for i in infos]
    try:
        fields = receptive_fields(m.model, names)
    except Exception:  # a model without an in-process graph (isolated): whole-image boxes
        fields = {}
    entries = []
    for info, shape in zip(infos, shapes):
        rf = fields.get(info.name)
        entries.append({"name": info.name, "index": int(info.index), "kind": info.kind, "shape": list(shape),
                        "receptive_field": rf.to_json() if rf is not None else None})
    return names, shapes, entries  # type: ignore[return-value]


def default_layers(m: Any) -> list[str]:
    """The first and the last convolution layer (one name if they are the same)."""
    from vizlib.layers import first_conv, last_conv

    names = [first_conv(m).name, last_conv(m).name]
    return list(dict.fromkeys(names))


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _job_section(job: Job, images: str) -> dict:
    return {"batch_size": job.batch_size, "shard_size": job.shard_size, "shards": job.n_shards,
            "listing_digest": job.listing.digest, "source": images, "source_kind": job.listing.ref.kind}


def _same_job(old: dict, new: dict) -> Optional[str]:
    checks = [
        ("model", old["model"].get("weights_digest"), new["model"]["weights_digest"]),
        ("model", old["model"].get("key"), new["model"]["key"]),
        ("layers", [layer["name"] for layer in old["layers"]], [layer["name"] for layer in new["layers"]]),
        ("k (--top)", old["top_k"], new["top_k"]),
        ("images", old["job"].get("listing_digest"), new["job"]["listing_digest"]),
        ("batch size", old["job"].get("batch_size"), new["job"]["batch_size"]),
        ("shard size", old["job"].get("shard_size"), new["job"]["shard_size"]),
        ("decoding (built by an older vizlib)", old.get("decode"), new["decode"]),
    ]
    for what, a, b in checks:
        if a != b:
            return what
    return None


# --------------------------------------------------------------------------- the build


def build(model: Any, images: str | os.PathLike[str], out: str | os.PathLike[str], *,
          layers: Optional[Sequence[str]] = None, top: int = DEFAULT_TOP, engine: str = "local",
          address: Optional[str] = None, weights: Optional[str] = "imagenet", preprocess: Any = None,
          batch_size: Optional[int] = None, shard_size: Optional[int] = None, workers: Optional[int] = None,
          max_images: Optional[int] = None, progress: Optional[ProgressFn] = None,
          ray_init: Optional[dict] = None, featvis: "bool | Sequence[str] | None" = None,
          featvis_steps: Optional[int] = None, featvis_size: Any = None, featvis_seed: int = 0,
          featvis_progress: Optional[ProgressFn] = None) -> "store.Atlas":
    """Build (or resume) the atlas of ``images`` for ``model`` in ``out``; returns it opened.

    ``model``: a catalogue name (with ``weights="imagenet"`` or ``"untrained"``),
    ``"emotion_cnn"``, a ``.keras``/``.h5`` path, or any model vizlib holds.
    ``images``: a folder (recursively), a ``.zip``, or a ``.parquet``/``.arrow``
    table with a column of image bytes; local paths or ``pyarrow.fs`` URIs.
    ``layers``: default the first and last convolution layer. ``top``: k.
    ``engine``: ``"local"`` (this process, all cores) or ``"ray"`` (a local Ray
    instance, or the cluster at ``address``). ``progress(done, total)`` is
    called as images finish. Running it again on the same ``out`` resumes.
    ``featvis``: True (every atlas layer) or layer names: also store the
    feature visualisation of every channel of those layers
    (:mod:`vizlib.atlas.bulk_featvis`; ``featvis_steps``/``featvis_size``/
    ``featvis_seed`` as for :func:`vizlib.featvis.feature_visualization`).
    """
    if engine not in ENGINES:
        raise InputError(f"Unknown engine {engine!r}; use one of {', '.join(ENGINES)}.")
    k = int(top)
    if not 1 <= k <= store.MAX_TOP_K:
        raise InputError(f"--top must be between 1 and {store.MAX_TOP_K}.")
    started = time.time()
    m = _load(model, weights, preprocess)
    spec = model_spec(model, m, weights, preprocess) if engine == "ray" else None
    names, shapes, layer_entries = _layer_entries(m, list(layers) if layers else default_layers(m))
    listing = list_source(images, max_images=max_images)
    if max_images is not None and len(listing) > max_images:
        raise InputError(f"{len(listing)} images; the limit here is {max_images}.")
    bs = int(batch_size) if batch_size else default_batch_size(m)
    ss = int(shard_size) if shard_size else bs * DEFAULT_SHARD_BATCHES
    if bs < 1 or ss < 1:
        raise InputError("Batch and shard sizes must be positive.")
    ss = max(bs, ss // bs * bs)  # whole batches per shard
    job = Job(listing, names, shapes, k, bs, ss, tuple(int(v) for v in m.input_size), int(m.channels))

    directory = Path(out)
    directory.mkdir(parents=True, exist_ok=True)
    manifest = {
        "format": store.FORMAT, "version": store.VERSION, "status": "building",
        "model": {"key": m.key, "title": m.title, "label": m.label, "weights": m.weights,
                  "weights_digest": m.weights_digest(), "preprocess": m.preprocess_name,
                  "input_size": list(job.input_size), "channels": job.channels, "source": m.source},
        "layers": layer_entries, "top_k": k,
        "images": {"source": os.fspath(images), "kind": listing.ref.kind, "count": job.n_images},
        "job": _job_section(job, os.fspath(images)),
        "counts": {}, "failures": [], "runs": [],
        "ignored": {reason: {"count": len(found), "examples": found[:IGNORED_EXAMPLES]}
                    for reason, found in listing.ignored.items()},
        "decode": {"max_side": DECODE_MAX_SIDE, "draft": "as vizlib.load_image: JPEG at the smallest scale >= max_side",
                   "view": VIEW_FORMAT},
    }
    if (directory / store.MANIFEST).exists():
        old = store.read_manifest(directory)
        differs = _same_job(old, manifest)
        if differs:
            raise InputError(
                f"{directory} holds an atlas of another job (its {differs} differ). Choose another --out, "
                "or delete that directory to start over."
            )
        manifest["runs"] = list(old.get("runs", []))
        if isinstance(old.get("featvis"), dict):
            manifest["featvis"] = old["featvis"]
        manifest["started"] = old.get("started", _now())
    else:
        if any(directory.iterdir()):
            raise InputError(f"{directory} is not empty and holds no atlas: choose an empty or new --out directory.")
        manifest["started"] = _now()
    store.clean_temporaries(directory)
    store.write_manifest(directory, manifest)

    todo = []
    committed_images = 0
    for s in range(job.n_shards):
        ids = job.shard_ids(s)
        try:
            store.read_shard(directory, s, job.layer_channels, expect_ids=np.arange(ids.start, ids.stop))
            committed_images += len(ids)
        except InputError:
            todo.append(s)

    done = [committed_images]

    def tick(n: int) -> None:
        done[0] += n
        if progress:
            progress(done[0], job.n_images)

    if progress:
        progress(done[0], job.n_images)

    def commit(collector: ShardCollector) -> None:
        store.write_shard(directory, collector.result(), job.layer_channels)

    run_started = time.time()
    engine_info: dict = {}
    if todo:
        if engine == "local":
            from vizlib.atlas.local import run_local

            run_local(job, m, todo, commit, tick, workers=workers)
        else:
            from vizlib.atlas.ray_engine import run_ray

            engine_info = run_ray(job, spec, todo, commit, tick, address=address, workers=workers,
                                  init_kwargs=ray_init)
    run_seconds = time.time() - run_started
    merge_started = time.time()
    summary = merge(directory, job, layer_entries, workers=workers)
    finished = time.time()
    manifest["runs"].append({"engine": engine, "address": address, "started": _dt.datetime.fromtimestamp(
        started, _dt.timezone.utc).isoformat(timespec="seconds"), "shards": len(todo),
        "images": sum(len(job.shard_ids(s)) for s in todo), "seconds": round(finished - started, 3),
        "pass_seconds": round(run_seconds, 3), "merge_seconds": round(finished - merge_started, 3),
        **({"ray": engine_info} if engine_info else {})})
    manifest.update(summary)
    manifest["engine"] = engine
    manifest["status"] = "complete"
    manifest["finished"] = _now()
    manifest["time"] = {"seconds": round(sum(r["seconds"] for r in manifest["runs"]), 3)}
    store.write_manifest(directory, manifest)
    if featvis:
        from vizlib.atlas.bulk_featvis import compute

        fv_layers = names if featvis is True else list(featvis)  # type: ignore[arg-type]
        fv_spec = spec
        if fv_spec is None:
            try:
                fv_spec = model_spec(model, m, weights, preprocess)
            except InputError:  # an in-memory model: computed in this process
                fv_spec = None
        compute(directory, m, fv_layers, steps=featvis_steps, size=featvis_size, seed=featvis_seed,
                engine=engine, spec=fv_spec, workers=workers, address=address, ray_init=ray_init,
                progress=featvis_progress, manifest=manifest)
    return store.load(directory)


def add_featvis(model: Any, out: str | os.PathLike[str], *, layers: Optional[Sequence[str]] = None,
                steps: Optional[int] = None, size: Any = None, seed: int = 0, engine: str = "local",
                address: Optional[str] = None, weights: Optional[str] = "imagenet", preprocess: Any = None,
                workers: Optional[int] = None, progress: Optional[ProgressFn] = None,
                ray_init: Optional[dict] = None) -> "store.Atlas":
    """Add (or resume) stored feature visualisations to the finished atlas in ``out``.

    ``model`` must be the atlas's model (its weights fingerprint is checked);
    ``layers`` default to the atlas's layers.
    """
    from vizlib.atlas.bulk_featvis import compute

    if engine not in ENGINES:
        raise InputError(f"Unknown engine {engine!r}; use one of {', '.join(ENGINES)}.")
    directory = Path(out)
    atlas = store.load(directory)
    m = _load(model, weights, preprocess)
    mismatch = atlas.model_mismatch(m)
    if mismatch:
        raise InputError(mismatch)
    try:
        spec: Optional[dict] = model_spec(model, m, weights, preprocess)
    except InputError:
        if engine == "ray":
            raise
        spec = None
    compute(directory, m, list(layers) if layers else atlas.layers, steps=steps, size=size, seed=seed,
            engine=engine, spec=spec, workers=workers, address=address, ray_init=ray_init, progress=progress,
            manifest=atlas.manifest)
    return store.load(directory)


def merge(directory: Path, job: Job, layer_entries: list[dict], *, workers: Optional[int] = None) -> dict:
    """From the committed shards: the top-k table, the pictures, the counts and the fingerprint."""
    import hashlib

    import pyarrow as pa

    from vizlib.receptive import ReceptiveField

    tops = [TopK(c, job.top_k) for c in job.layer_channels]
    fingerprint = hashlib.sha256()
    failures: list[dict] = []
    n_failed = 0
    for s in range(job.n_shards):
        ids = job.shard_ids(s)
        table = store.read_shard(directory, s, job.layer_channels, expect_ids=np.arange(ids.start, ids.stop))
        ok_ids, per_layer = store.shard_stats(table, job.layer_channels, job.shapes)
        for t, st in zip(tops, per_layer):
            t.add(ok_ids, st)
        for path, digest, error in zip(table.column("path").to_pylist(), table.column("sha256").to_pylist(),
                                       table.column("error").to_pylist()):
            if error is None:
                fingerprint.update(f"{path}\0{digest}\n".encode())
            else:
                n_failed += 1
                if len(failures) < store.MAX_LISTED_FAILURES:
                    failures.append({"path": path, "error": error})
    names = np.asarray(job.listing.names, dtype=object)
    parts: dict[str, list] = {c: [] for c in store.top_schema().names}
    for entry, t, shape in zip(layer_entries, tops, job.shapes):
        rf = ReceptiveField.from_json(entry["receptive_field"]) if entry["receptive_field"] else None
        h, w, c = shape
        kk = t.value.shape[1]
        ids = t.id.reshape(-1)
        rows, cols_ = np.divmod(t.pos.reshape(-1).astype(np.int64), w)
        if rf is not None:
            box = rf.boxes(rows, cols_)
        else:
            n = len(ids)
            box = (np.zeros(n, np.int32), np.zeros(n, np.int32), np.full(n, job.input_size[0], np.int32),
                   np.full(n, job.input_size[1], np.int32))
        for key, value in zip(store.top_schema().names,
                              (np.full(c * kk, entry["name"], dtype=object), np.repeat(np.arange(c), kk),
                               np.tile(np.arange(kk), c), ids, names[ids] if len(ids) else np.array([], object),
                               t.value.reshape(-1), rows, cols_, t.mean.reshape(-1), *box)):
            parts[key].append(value)
    cols = {k: np.concatenate(v) if v else np.array([]) for k, v in parts.items()}
    top_table = pa.table(cols, schema=store.top_schema())
    store.write_table(directory / store.TOP, top_table)
    pictures = write_pictures(directory, job, top_table, workers=workers)
    return {
        "counts": {"images": job.n_images, "decoded": job.n_images - n_failed, "failed": n_failed},
        "failures": failures, "failures_listed": len(failures),
        "images": {"source": os.fspath(job.listing.ref.location), "kind": job.listing.ref.kind,
                   "count": job.n_images, "fingerprint": fingerprint.hexdigest(),
                   "listing_digest": job.listing.digest},
        "tables": {"top": {"file": store.TOP, "rows": top_table.num_rows},
                   "thumbs": {"file": store.THUMBS, "rows": pictures["thumbs"]},
                   "crops": {"file": store.CROPS, "rows": pictures["crops"]},
                   "stats": {"dir": store.STATS_DIR, "files": job.n_shards}},
        **({"warnings": pictures["warnings"]} if pictures["warnings"] else {}),
    }


def _ordered_map(fn: Callable[[Any], Any], items: Sequence[Any], workers: int, window: int) -> Iterator[Any]:
    """``map(fn, items)`` on a thread pool, results in order, at most ``window`` in flight."""
    if workers <= 1:
        for item in items:
            yield fn(item)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="atlas-pictures") as pool:
        futures: list = []
        it = iter(items)
        for item in it:
            futures.append(pool.submit(fn, item))
            if len(futures) >= window:
                break
        while futures:
            head = futures.pop(0)
            nxt = next(it, None)
            if nxt is not None:
                futures.append(pool.submit(fn, nxt))
            yield head.result()


def write_pictures(directory: Path, job: Job, top_table: Any, *, workers: Optional[int] = None) -> dict:
    """Thumbnails of the images in any top-k list and the crops around their maxima, in image order."""
    import hashlib

    import pyarrow as pa

    entries: dict[int, list[tuple[str, int, int, tuple[int, int, int, int]]]] = {}
    cols = {c: top_table.column(c).to_numpy(zero_copy_only=False)
            for c in ("layer", "channel", "rank", "image_id", "top", "left", "bottom", "right")}
    for i in range(top_table.num_rows):
        entries.setdefault(int(cols["image_id"][i]), []).append(
            (str(cols["layer"][i]), int(cols["channel"][i]), int(cols["rank"][i]),
             (int(cols["top"][i]), int(cols["left"][i]), int(cols["bottom"][i]), int(cols["right"][i]))))
    digests = _digests_of(directory, job, set(entries))
    ref, names = job.listing.ref, job.listing.names

    def render(image_id: int) -> tuple[int, Optional[tuple], Optional[str]]:
        try:
            data = read_bytes(ref, image_id, names[image_id])
            if hashlib.sha256(data).hexdigest() != digests.get(image_id):
                return image_id, None, f"{names[image_id]} changed during the build; no picture kept."
            view, thumb, size = view_and_thumbnail(data, names[image_id], job.input_size, job.channels)
            whole = (0, 0, job.input_size[0], job.input_size[1])
            crops = [(layer, ch, rank, crop_bytes(view, box)) for layer, ch, rank, box in entries[image_id]
                     if box != whole]  # a field covering the whole image is the stored view
            return image_id, (thumb, size, view_bytes(view), crops), None
        except InputError as exc:
            return image_id, None, f"{names[image_id]}: {exc}"

    thumbs = store.AtomicParquet(directory / store.THUMBS, store.thumbs_schema())
    crops = store.AtomicParquet(directory / store.CROPS, store.crops_schema())
    warnings: list[str] = []
    tbuf: dict[str, list] = {c: [] for c in store.thumbs_schema().names}
    cbuf: dict[str, list] = {c: [] for c in store.crops_schema().names}

    def flush(force: bool = False) -> None:
        if tbuf["image_id"] and (force or len(tbuf["image_id"]) >= store.PICTURE_ROWS):
            thumbs.write(pa.table(tbuf, schema=store.thumbs_schema()))
            for v in tbuf.values():
                v.clear()
        while len(cbuf["image"]) >= store.PICTURE_ROWS or (force and cbuf["image"]):
            n = min(store.PICTURE_ROWS, len(cbuf["image"]))
            crops.write(pa.table({c: v[:n] for c, v in cbuf.items()}, schema=store.crops_schema()))
            for v in cbuf.values():
                del v[:n]

    n_workers = max(1, int(workers or os.cpu_count() or 1))
    try:
        for image_id, pics, warning in _ordered_map(render, sorted(entries), n_workers, 4 * n_workers):
            if pics is None:
                if len(warnings) < 100:
                    warnings.append(str(warning))
                continue
            thumb, size, view, crop_list = pics
            for key, value in zip(store.thumbs_schema().names,
                                  (image_id, names[image_id], digests[image_id], size[0], size[1], thumb, view)):
                tbuf[key].append(value)
            for layer, ch, rank, blob in crop_list:
                for key, value in zip(store.crops_schema().names, (layer, ch, rank, image_id, blob)):
                    cbuf[key].append(value)
            flush()
        flush(force=True)
        thumbs.commit()
        crops.commit()
    except BaseException:
        thumbs.abort()
        crops.abort()
        raise
    return {"thumbs": thumbs.rows, "crops": crops.rows, "warnings": warnings}


def _digests_of(directory: Path, job: Job, wanted: set[int]) -> dict[int, str]:
    out: dict[int, str] = {}
    for s in range(job.n_shards):
        ids = job.shard_ids(s)
        if not any(i in wanted for i in ids):
            continue
        table = store.read_shard(directory, s, job.layer_channels, columns=["id", "sha256"])
        for i, d in zip(table.column("id").to_pylist(), table.column("sha256").to_pylist()):
            if i in wanted and d is not None:
                out[int(i)] = d
    return out


def build_from_images(model: Any, images: Sequence[tuple[str, Any]], workdir: str | os.PathLike[str], *,
                      max_images: int = 200, max_total_bytes: int = 200 * 2**20, **kwargs: Any) -> "store.Atlas":
    """A small atlas of given images (the page's uploads): ``(name, bytes or PIL image)`` pairs.

    The images are written to ``workdir/images`` (names made safe and unique,
    in the given order) and the atlas to ``workdir/atlas``; the same call again
    reuses a finished atlas. Count and size are capped, as for uploads.
    """
    import io
    import re

    if not images:
        raise InputError("No images to build an atlas from: upload some first.")
    if len(images) > max_images:
        raise InputError(f"{len(images)} images; an atlas built in the page takes at most {max_images}.")
    root = Path(workdir)
    folder = root / "images"
    folder.mkdir(parents=True, exist_ok=True)
    total = 0
    for i, (name, image) in enumerate(images):
        if isinstance(image, (bytes, bytearray, memoryview)):
            data = bytes(image)
            suffix = Path(str(name)).suffix.lower() or ".img"
        else:
            buf = io.BytesIO()
            image.convert("RGB").save(buf, format="PNG", compress_level=1)
            data, suffix = buf.getvalue(), ".png"
        total += len(data)
        if total > max_total_bytes:
            raise InputError(f"The images add up to more than {max_total_bytes // 2**20} MB, the limit here.")
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(str(name)).stem)[:60] or "image"
        if suffix not in (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"):
            suffix = ".png" if data.startswith(b"\x89PNG") else ".jpg"
        target = folder / f"{i:04d}_{stem}{suffix}"
        if not target.exists() or target.read_bytes() != data:
            store.atomic_write_bytes(target, data)
    return build(model, folder, root / "atlas", max_images=max_images, **kwargs)
