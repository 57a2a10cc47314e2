"""Feature visualisations in bulk: every channel of chosen layers, computed once, stored in the atlas.

The page would otherwise optimise an image per channel on demand (seconds
each); an atlas built with ``--featvis`` holds them all. Channels are computed
in chunks of :data:`CHUNK` (one optimisation batch each, through
:func:`vizlib.featvis.render` with no disk cache), in parallel: local worker
processes (each loads the model once) or Ray tasks. Every chunk is committed
as its own atomic Parquet file (``featvis/<layer>.partNNNNN.parquet``), so a
killed run resumes after the finished chunks; when a layer is complete its
chunks are merged into ``featvis/<layer>.parquet`` and the manifest records
it. Images are stored as PNG (lossless): what is read back is exactly what
the optimisation produced. Randomness depends only on ``seed`` and the
channel (see :mod:`vizlib.featvis`), so the result does not depend on the
chunking or on the engine.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from vizlib import tfsetup
from vizlib.errors import InputError

FEATVIS_DIR = "featvis"
#: Channels optimised together (one batch, one committed file).
CHUNK = 16
#: Caps applied when reading.
MAX_FEATVIS_BYTES = 512 * 2**20
MAX_SIDE = 512
MAX_PNG_BYTES = 4 * 2**20

ProgressFn = Callable[[int, int], None]


def safe_name(layer: str) -> str:
    """A file stem for ``layer`` (nested names have '/'): readable, collision-free, never a path."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", layer)[:80]
    return f"{stem}-{hashlib.sha256(layer.encode()).hexdigest()[:8]}"


def layer_path(directory: Path, layer: str) -> Path:
    return directory / FEATVIS_DIR / f"{safe_name(layer)}.parquet"


def part_path(directory: Path, layer: str, chunk: int) -> Path:
    return directory / FEATVIS_DIR / f"{safe_name(layer)}.part{int(chunk):05d}.parquet"


def schema() -> Any:
    import pyarrow as pa

    return pa.schema([
        pa.field("layer", pa.string(), nullable=False), pa.field("channel", pa.int32(), nullable=False),
        pa.field("height", pa.int32(), nullable=False), pa.field("width", pa.int32(), nullable=False),
        pa.field("channels", pa.int32(), nullable=False), pa.field("steps", pa.int32(), nullable=False),
        pa.field("seed", pa.int64(), nullable=False), pa.field("png", pa.binary(), nullable=False),
    ])


# --------------------------------------------------------------------------- computing one chunk


def png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    arr = np.asarray(image, dtype=np.uint8)
    pil = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr, mode="L" if arr.shape[-1] == 1 else "RGB")
    buf = io.BytesIO()
    pil.save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


def compute_arrays(model: Any, layer: str, channels: Sequence[int], size: tuple[int, int], steps: int,
                   seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The feature visualisations of ``channels`` (one batch, no disk cache): images uint8 (K, H, W, C) and
    their statistics of every channel, float32 (K, len(STATS), layer channels): a disk-cache entry each."""
    from vizlib.featvis import STATS, render

    vis = render(model, layer, [int(c) for c in channels], size=tuple(size), steps=int(steps), seed=int(seed),
                 cache=False, score=False)
    return vis.images, np.stack([vis.stats[name] for name in STATS], axis=1).astype(np.float32)


def compute_chunk(model: Any, layer: str, channels: Sequence[int], size: tuple[int, int], steps: int,
                  seed: int, arrays: bool = False) -> Any:
    """PNGs of the feature visualisations of ``channels`` (one batch), no disk cache; with ``arrays``, the
    images and statistics of :func:`compute_arrays` (what the disk cache stores)."""
    images, stats = compute_arrays(model, layer, channels, size, steps, seed)
    return (images, stats) if arrays else [png_bytes(img) for img in images]


_WORKER_MODEL: dict = {}


def load_spec(spec: dict, model_bytes: Optional[bytes] = None) -> Any:
    """The model described by :func:`vizlib.atlas.job.model_spec`, loaded once per process, digest-checked."""
    import vizlib  # noqa: F401  (TensorFlow's environment before TensorFlow)
    from vizlib.contract import as_model

    key = (spec.get("name"), spec.get("file"), spec["digest"])
    if key in _WORKER_MODEL:
        return _WORKER_MODEL[key]
    weights = None if spec.get("weights") == "untrained" else "imagenet"
    if "file" in spec:
        path = spec["file"]
        if model_bytes is not None:
            import tempfile

            fd, path = tempfile.mkstemp(suffix=Path(spec["file"]).suffix)
            with os.fdopen(fd, "wb") as fh:
                fh.write(model_bytes)
        m = as_model(path, weights=weights, preprocess=spec.get("preprocess") or "auto")
    else:
        m = as_model(spec["name"], weights=weights)
    if m.weights_digest() != spec["digest"]:
        raise RuntimeError(f"The model loaded in a worker has other weights ({m.weights_digest()[:12]}) "
                           f"than the driver's ({spec['digest'][:12]}).")
    _WORKER_MODEL[key] = m
    return m


def _worker_chunk(spec: dict, layer: str, channels: list[int], size: tuple[int, int], steps: int,
                  seed: int, arrays: bool = False) -> Any:
    return compute_chunk(load_spec(spec), layer, channels, size, steps, seed, arrays)


# --------------------------------------------------------------------------- committing and reading


def _chunk_table(layer: str, channels: Sequence[int], pngs: Sequence[bytes], size: tuple[int, int], c: int,
                 steps: int, seed: int) -> Any:
    import pyarrow as pa

    n = len(channels)
    return pa.table({"layer": [layer] * n, "channel": [int(v) for v in channels], "height": [int(size[0])] * n,
                     "width": [int(size[1])] * n, "channels": [int(c)] * n, "steps": [int(steps)] * n,
                     "seed": [int(seed)] * n, "png": list(pngs)}, schema=schema())


#: Rows a featvis table may declare (one per channel) and the decoded bytes it may declare.
MAX_FEATVIS_ROWS = 1 << 16
MAX_FEATVIS_DECODED = 512 * 2**20
#: The columns read to index a table (the PNGs are fetched one at a time).
_SETTINGS = ("layer", "channel", "height", "width", "channels", "steps", "seed")


def read_table(directory: Path, path: Path, layer: str, *, expect: Optional[dict] = None,
               columns: Optional[Sequence[str]] = None) -> Any:
    """A featvis table, validated: schema, size cap, one layer, settings in range (and as expected).

    Sized from its metadata before anything is decoded (:func:`vizlib.atlas.store.read_parquet`);
    ``columns``: read only these (the settings, without the PNGs)."""
    from vizlib.atlas.store import read_parquet

    table = read_parquet(directory, path, MAX_FEATVIS_BYTES, schema(), what="featvis", max_bytes=MAX_FEATVIS_DECODED,
                         columns=columns, max_rows=MAX_FEATVIS_ROWS)
    cols = {k: table.column(k).to_pylist() for k in ("layer", "height", "width", "channels", "steps", "seed")}
    if table.num_rows and any(len(set(v)) != 1 for v in cols.values()):
        raise InputError(f"{path.name} mixes layers or settings.")
    if table.num_rows:
        h, w, c = cols["height"][0], cols["width"][0], cols["channels"][0]
        if cols["layer"][0] != layer or not (1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE) or c not in (1, 3):
            raise InputError(f"{path.name} holds another layer or out-of-range sizes.")
        if expect is not None:
            got = {"size": [h, w], "channels": c, "steps": cols["steps"][0], "seed": cols["seed"][0]}
            if any(got[k] != expect[k] for k in got):
                raise InputError(f"{path.name} was made with other settings.")
    return table


def decode_png(blob: bytes, size: Sequence[int], c: int, budget: Any = None) -> np.ndarray:
    """A stored PNG as uint8 (H, W, C), checked against the recorded size, decoded by the one image
    decoder within a pixel budget (:class:`vizlib.images.budget.PixelBudget`; no decompression bombs)."""
    from vizlib.images.budget import PixelBudget
    from vizlib.images.decode import declared_size

    if not isinstance(blob, (bytes, bytearray)) or len(blob) > MAX_PNG_BYTES or not bytes(blob).startswith(b"\x89PNG"):
        raise InputError("A stored feature visualisation is not a PNG of an allowed size.")
    h, w = int(size[0]), int(size[1])
    label = "A stored feature visualisation"
    if declared_size(bytes(blob), label, MAX_SIDE * MAX_SIDE) != (w, h):
        raise InputError("A stored feature visualisation has another size than recorded.")
    budget = budget or PixelBudget(what="the stored feature visualisations")
    image = budget.decode(bytes(blob), label, max_side=MAX_SIDE, max_pixels=MAX_SIDE * MAX_SIDE)
    arr = np.asarray(image.convert("L") if c == 1 else image, dtype=np.uint8)
    return arr[..., None] if arr.ndim == 2 else arr


class Reader:
    """Stored feature visualisations of an atlas (what :meth:`vizlib.atlas.Atlas.feature_visualization` uses)."""

    def __init__(self, directory: Path, manifest: dict):
        self.directory = directory
        section = manifest.get("featvis")
        entries = section.get("layers") if isinstance(section, dict) else None
        self.entries: dict[str, dict] = {}
        if isinstance(entries, dict):
            for name, e in entries.items():
                if (isinstance(name, str) and isinstance(e, dict) and e.get("status") == "complete"
                        and isinstance(e.get("channels_count"), int) and 0 < e["channels_count"] <= 1 << 16):
                    self.entries[name] = e
        self._tables: dict[str, tuple[dict[int, int], Any, dict]] = {}

    @property
    def layers(self) -> list[str]:
        return list(self.entries)

    def _load(self, layer: str) -> tuple[dict[int, int], Any, dict]:
        if layer not in self._tables:
            e = self.entries[layer]
            from vizlib.atlas.store import MAX_PICTURE_GROUP_BYTES, PICTURE_BATCH_BYTES, open_parquet

            path = layer_path(self.directory, layer)
            table = read_table(self.directory, path, layer, columns=list(_SETTINGS))
            channels = table.column("channel").to_pylist()
            if channels != list(range(e["channels_count"])):
                raise InputError(f"The stored feature visualisations of {layer!r} don't cover its channels in order.")
            info = {"size": [table.column("height")[0].as_py(), table.column("width")[0].as_py()],
                    "channels": table.column("channels")[0].as_py(), "steps": table.column("steps")[0].as_py(),
                    "seed": table.column("seed")[0].as_py()}
            # The PNGs are fetched one at a time, never a whole row group decoded for one channel.
            pngs = open_parquet(self.directory, path, MAX_FEATVIS_BYTES, schema(), what="featvis", columns=["png"],
                                max_rows=MAX_FEATVIS_ROWS, max_group_bytes=MAX_PICTURE_GROUP_BYTES,
                                batch_bytes=PICTURE_BATCH_BYTES)
            self._tables[layer] = ({c: i for i, c in enumerate(channels)}, pngs, info)
        return self._tables[layer]

    def get(self, layer: str, channel: int) -> Optional[np.ndarray]:
        if layer not in self.entries:
            return None
        index, pngs, info = self._load(layer)
        i = index.get(int(channel))
        if i is None:
            return None
        return decode_png(pngs.row_values(i, "png").as_py(), info["size"], info["channels"])

    def settings(self, layer: str) -> Optional[dict]:
        return None if layer not in self.entries else dict(self._load(layer)[2])


# --------------------------------------------------------------------------- the run


def compute(directory: str | os.PathLike[str], model: Any, layers: Sequence[str], *, steps: Optional[int] = None,
            size: Any = None, seed: int = 0, chunk: int = CHUNK, engine: str = "local",
            spec: Optional[dict] = None, workers: Optional[int] = None, address: Optional[str] = None,
            ray_init: Optional[dict] = None, progress: Optional[ProgressFn] = None,
            manifest: Optional[dict] = None) -> dict:
    """Compute (or resume) the feature visualisations of every channel of ``layers`` into the atlas.

    ``model`` is the loaded model (used in this process when no worker
    process can load it: one worker, or an in-memory model). ``spec`` (from
    :func:`vizlib.atlas.job.model_spec`) lets worker processes or Ray tasks
    load it. Returns the manifest's ``featvis`` section (also written into
    ``manifest.json`` after every finished layer).
    """
    from vizlib import featvis
    from vizlib.atlas import store
    from vizlib.layers import find_layer

    directory = Path(directory)
    steps = featvis.DEFAULT_STEPS if steps is None else int(steps)
    if not 1 <= steps <= featvis.MAX_STEPS:
        raise InputError(f"--featvis-steps must lie between 1 and {featvis.MAX_STEPS}.")
    chunk = max(1, int(chunk))
    names = list(dict.fromkeys(find_layer(model, name).name for name in layers))
    if manifest is None:
        manifest = store.read_manifest(directory)
    section = manifest.get("featvis") if isinstance(manifest.get("featvis"), dict) else {}
    # Images made by another algorithm are never kept beside new ones: an older atlas is recomputed whole.
    stale = section.get("algorithm", featvis.ALGORITHM) != featvis.ALGORITHM
    section = {"algorithm": featvis.ALGORITHM, "chunk": chunk,
               "layers": {} if stale else dict(section.get("layers", {}))}
    plans = []
    c = int(model.channels)
    for name in names:
        hw = tuple(int(v) for v in (featvis.default_size(model, name) if size is None else
                                    featvis.resolve_size(size)))  # the same resolution as render
        n_ch = int(find_layer(model, name).channels)
        expect = {"size": list(hw), "channels": c, "steps": steps, "seed": int(seed)}
        entry = {"file": f"{FEATVIS_DIR}/{layer_path(directory, name).name}", "channels_count": n_ch,
                 "size": list(hw), "steps": steps, "seed": int(seed), "chunk": chunk, "status": "building"}
        final = layer_path(directory, name)
        if final.exists() and not stale:
            try:
                t = read_table(directory, final, name, expect=expect)
                if t.column("channel").to_pylist() == list(range(n_ch)):
                    entry["status"] = "complete"
            except InputError:
                pass
        chunks = [list(range(s, min(n_ch, s + chunk))) for s in range(0, n_ch, chunk)]
        todo = []
        if stale:
            todo = list(range(len(chunks)))
        elif entry["status"] != "complete":
            for i, chans in enumerate(chunks):
                try:
                    t = read_table(directory, part_path(directory, name, i), name, expect=expect)
                    if t.column("channel").to_pylist() != chans:
                        raise InputError("other channels")
                except InputError:
                    todo.append(i)
        section["layers"][name] = entry
        plans.append((name, hw, chunks, todo, expect))
    manifest["featvis"] = section
    store.write_manifest(directory, manifest)

    total = sum(len(p[2][-1]) + chunk * (len(p[2]) - 1) for p in plans if p[2])
    done = [total - sum(len(p[2][i]) for p in plans for i in p[3])]
    if progress:
        progress(done[0], total)
    jobs = [(name, hw, i, chunks[i], expect) for name, hw, chunks, todo, expect in plans for i in todo]

    def commit(job: tuple, pngs: list[bytes]) -> None:
        name, hw, i, chans, expect = job
        if len(pngs) != len(chans):
            raise RuntimeError("A feature-visualisation worker returned the wrong number of images.")
        store.write_table(part_path(directory, name, i), _chunk_table(name, chans, pngs, hw, c, steps, seed))
        done[0] += len(chans)
        if progress:
            progress(done[0], total)

    if jobs:
        if engine == "ray":
            _run_ray(jobs, spec, steps, seed, commit, address=address, workers=workers, init_kwargs=ray_init)
        else:
            _run_local(jobs, model, spec, steps, seed, commit, workers=workers)

    for name, hw, chunks, _todo, expect in plans:
        entry = section["layers"][name]
        if entry["status"] != "complete":
            import pyarrow as pa

            tables = [read_table(directory, part_path(directory, name, i), name, expect=expect)
                      for i in range(len(chunks))]
            store.write_table(layer_path(directory, name), pa.concat_tables(tables).combine_chunks())
            for i in range(len(chunks)):
                try:
                    part_path(directory, name, i).unlink()
                except OSError:
                    pass
            entry["status"] = "complete"
        manifest["featvis"] = section
        store.write_manifest(directory, manifest)
    return section


def _run_local(jobs: list, model: Any, spec: Optional[dict], steps: int, seed: int,
               commit: Callable[[tuple, Any], None], *, workers: Optional[int], arrays: bool = False) -> None:
    """Run ``jobs`` ((layer, size, index, channels, ...) each) here or in worker processes; ``commit`` each
    result (PNGs, or with ``arrays`` images and statistics) in this process."""
    n = max(1, int(workers or os.cpu_count() or 1))
    if n == 1 or spec is None or len(jobs) == 1:
        for job in jobs:
            name, hw, _i, chans, _e = job
            commit(job, compute_chunk(model, name, chans, hw, steps, seed, arrays))
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    # Worker processes start afresh ("spawn": no forked TensorFlow state) and load the model once each.
    with ProcessPoolExecutor(max_workers=min(n, len(jobs)), mp_context=mp.get_context("spawn")) as pool:
        futures: list[tuple[tuple, Future]] = [
            (job, pool.submit(_worker_chunk, spec, job[0], job[3], job[1], steps, seed, arrays)) for job in jobs]
        try:
            for job, fut in futures:  # committed in order as they finish (the order does not matter)
                commit(job, fut.result())
        except BaseException:
            for _, fut in futures:
                fut.cancel()
            raise


def _run_ray(jobs: list, spec: Optional[dict], steps: int, seed: int,
             commit: Callable[[tuple, Any], None], *, address: Optional[str], workers: Optional[int],
             init_kwargs: Optional[dict], arrays: bool = False) -> None:
    """Run ``jobs`` as Ray tasks (at most ``workers`` at a time, each loading the model once per worker);
    ``commit`` each result in this process as it arrives (a cluster's disks need not be shared)."""
    from vizlib.atlas.ray_engine import connect

    if spec is None:
        raise InputError("The Ray engine needs a model it can load by name or from a file.")
    ray, started_here = connect(address, init_kwargs)
    try:
        model_ref = ray.put(Path(spec["file"]).read_bytes()) if "file" in spec else None
        spec = dict(spec, omp_num_threads=tfsetup.thread_count())
        task = ray.remote(num_cpus=1, max_retries=2)(_ray_chunk)
        limit = max(1, int(workers or 0) or int(ray.cluster_resources().get("CPU", 1)))
        pending: dict = {}
        it = iter(jobs)
        for job in it:
            pending[task.remote(spec, model_ref, job[0], job[3], list(job[1]), steps, seed, arrays)] = job
            if len(pending) >= limit:
                break
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                commit(pending.pop(ref), ray.get(ref))
                nxt = next(it, None)
                if nxt is not None:
                    pending[task.remote(spec, model_ref, nxt[0], nxt[3], list(nxt[1]), steps, seed, arrays)] = nxt
    finally:
        if started_here:
            ray.shutdown()


def _ray_chunk(spec: dict, model_bytes: Any, layer: str, channels: list[int], size: list[int], steps: int,
               seed: int, arrays: bool = False) -> Any:
    # As in the atlas's model actors: the driver's thread setting, so sums round the same way.
    tfsetup.use_thread_count(spec.get("omp_num_threads"))
    return compute_chunk(load_spec(spec, model_bytes), layer, channels, tuple(size), steps, seed, arrays)


# --------------------------------------------------------------------------- the page's disk cache


def fill_cache(model: Any, layers: Sequence[str], channels: Optional[Sequence[int]] = None, *,
               steps: Optional[int] = None, size: Any = None, seed: int = 0, cache: Any = None,
               engine: str = "local", spec: Optional[dict] = None, workers: Optional[int] = None,
               address: Optional[str] = None, ray_init: Optional[dict] = None, chunk: int = CHUNK,
               progress: Optional[ProgressFn] = None) -> dict:
    """Pre-compute feature visualisations into the page's disk cache (``python -m vizlib.featvis precompute``).

    The same engines as the atlas's bulk visualisations (in-process or local
    worker processes, or Ray tasks with ``engine="ray"``), the same chunks,
    but each channel lands in :class:`vizlib.featvis.DiskCache` under the key
    the page's :func:`vizlib.featvis.render` looks up (model digest, layer,
    channel, size, steps, seed), written by this process as results arrive.
    Channels already cached are skipped. ``channels`` (default: all) applies
    to every layer. Returns ``{layer: {"channels": n, "cached_before": k}}``.
    """
    from vizlib import featvis
    from vizlib.featvis.engine import check_layer_channels
    from vizlib.featvis.rendering import cache_key
    from vizlib.layers import find_layer

    from vizlib.arguments import check_seed

    seed = check_seed(seed)
    steps = featvis.DEFAULT_STEPS if steps is None else int(steps)
    if not 1 <= steps <= featvis.MAX_STEPS:
        raise InputError(f"--steps must lie between 1 and {featvis.MAX_STEPS}.")
    if engine not in ("local", "ray"):
        raise InputError(f"engine must be 'local' or 'ray', not {engine!r}.")
    store = cache if cache is not None else featvis.DiskCache()
    store.require_writable()  # filling it is the point: an unwritable or switched-off cache is an error here
    digest = model.weights_digest()
    c = int(model.channels)
    jobs, keys, report = [], {}, {}
    for name in dict.fromkeys(find_layer(model, layer).name for layer in layers):
        n_ch = int(find_layer(model, name).channels)
        wanted = list(dict.fromkeys(check_layer_channels(model, name, range(n_ch) if channels is None else channels)))
        hw = tuple(int(v) for v in (featvis.default_size(model, name) if size is None else
                                    featvis.resolve_size(size)))  # the size render resolves
        missing = []
        for ch in wanted:
            keys[(name, ch)] = cache_key(model, digest, name, ch, hw, steps, seed)
            if store.get(keys[(name, ch)], (hw[0], hw[1], c), n_ch) is None:
                missing.append(ch)
        report[name] = {"channels": len(wanted), "cached_before": len(wanted) - len(missing)}
        jobs += [(name, hw, i, missing[s:s + chunk], None) for i, s in enumerate(range(0, len(missing), chunk))]
    total, done = sum(len(j[3]) for j in jobs), [0]
    if progress:
        progress(0, total)

    def commit(job: tuple, result: Any) -> None:
        name, _hw, _i, chans, _e = job
        images, stats = result
        if len(images) != len(chans) or len(stats) != len(chans):
            raise RuntimeError("A feature-visualisation worker returned the wrong number of images.")
        for ch, img, st in zip(chans, images, stats):
            store.put(keys[(name, ch)], img, st)
        done[0] += len(chans)
        if progress:
            progress(done[0], total)

    if jobs:
        if engine == "ray":
            _run_ray(jobs, spec, steps, seed, commit, address=address, workers=workers, init_kwargs=ray_init,
                     arrays=True)
        else:
            _run_local(jobs, model, spec, steps, seed, commit, workers=workers, arrays=True)
    return report
