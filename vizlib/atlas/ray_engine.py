"""The Ray engine: the same pipeline on Ray Data, on a local Ray instance or an existing cluster.

One row per batch (a fixed run of image ids, as in the local engine) flows
through two Ray Data stages:

1. ``map_batches(_decode)`` in tasks: read the batch's images wherever the
   source is (a path every node sees, or a bucket URI), decode them with the
   upload caps and make the model's view (uint8);
2. ``map_batches(_Infer)`` in a pool of actors, each of which loads the model
   once (checking that its weights fingerprint is the driver's) and reduces
   the batch to per-image, per-channel statistics (the per-batch reduction).

The driver gathers the rows of each shard, commits it (the same atomic
Parquet files as the local engine) and, at the end, runs the one merge. The
numbers are those of the local engine, because every batch has the same
images and goes through the same functions.

Ray is optional (``pip install "ray[data]"``): nothing imports this module
unless ``--engine ray`` is asked for.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from vizlib import tfsetup
from vizlib.errors import InputError
from vizlib.settings import env as read_env

#: Ray's logical CPUs reserved by one decode task. A model actor reserves 3/4 of the smallest
#: node's CPUs (see :func:`actor_cpus`): two never share a node, so the pool spreads over the
#: cluster, and decode tasks keep a quarter of every node. TensorFlow in an actor uses all its node's cores.
DECODE_CPUS = 0.25
ACTOR_SHARE = 0.75
_REPO = Path(__file__).resolve().parent.parent.parent
#: Not shipped to a cluster with the code.
_EXCLUDES = [".git", ".venv*", "venv", "tests", "benchmarks", "docs", "deploy", "**/__pycache__", "*.pyc",
             ".pytest_cache", ".hypothesis", ".benchmarks", "test-artifacts", "node_modules", "*.parquet", "*.zip"]


def _import_ray() -> Any:
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as exc:
        raise InputError('The Ray engine needs Ray: pip install "ray[data]" (see requirements-dev.txt for the '
                         "tested version), or use --engine local.") from exc
    return ray


def runtime_env(extra_excludes: Sequence[str] = ()) -> dict:
    """Workers get vizlib (and its assets) from this checkout, and TensorFlow's settings."""
    env: dict = {"env_vars": {"TF_ENABLE_ONEDNN_OPTS": "0", "TF_CPP_MIN_LOG_LEVEL": "2"}}
    if (_REPO / "vizlib" / "__init__.py").is_file() and (_REPO / "assets").is_dir():
        env["working_dir"] = str(_REPO)
        env["excludes"] = _EXCLUDES + [e for e in extra_excludes if e]
    return env


def _excluded(path: str) -> str:
    """A path inside the checkout, as an exclude pattern (so an --out or images folder there isn't shipped)."""
    try:
        rel = Path(path).resolve().relative_to(_REPO)
    except (ValueError, OSError):
        return ""
    return "/" + rel.as_posix() if rel.parts else ""


# --------------------------------------------------------------------------- the two stages


def actor_cpus(node_cpus: Sequence[float], actors: int) -> float:
    """Logical CPUs per model actor: one actor per node, unless more actors than nodes are asked for."""
    smallest = min(node_cpus) if node_cpus else 1.0
    share = ACTOR_SHARE * smallest * max(1, len(node_cpus)) / max(1, actors)
    return round(max(DECODE_CPUS, min(ACTOR_SHARE * smallest, share)), 3)


def _decode(batch: dict, *, ref: Any, size: tuple[int, int], channels: int) -> dict:
    from vizlib.atlas.pipeline import decode_batch

    import ray

    node = ray.get_runtime_context().get_node_id()
    out: dict[str, list] = {k: [] for k in ("shard", "start", "stop", "n", "ids", "pixels", "digests", "failures",
                                            "decode_node")}
    for shard, start, stop, names in zip(batch["shard"], batch["start"], batch["stop"], batch["names"]):
        ids = list(range(int(start), int(stop)))
        decoded = decode_batch(ref, ids, json.loads(str(names)), size, channels)
        out["shard"].append(int(shard))
        out["start"].append(int(start))
        out["stop"].append(int(stop))
        out["n"].append(len(decoded.ids))
        out["ids"].append(decoded.ids.astype(np.int64).tobytes())
        out["pixels"].append(np.ascontiguousarray(decoded.pixels).tobytes())
        out["digests"].append(json.dumps(decoded.digests))
        out["failures"].append(json.dumps(decoded.failures))
        out["decode_node"].append(node)
    return {k: np.array(v, dtype=object if k in ("ids", "pixels", "digests", "failures", "decode_node") else np.int64)
            for k, v in out.items()}


class _Infer:
    """A model actor: loads the model once, then turns decoded batches into per-image statistics."""

    def __init__(self, spec: dict, model_bytes: Any, layers: list[str], size: tuple[int, int], channels: int):
        import ray

        # Ray sets OMP_NUM_THREADS from the actor's CPU share; TensorFlow would then run single-threaded
        # (and, with another thread count, its sums may round differently). Take the driver's setting.
        import vizlib  # noqa: F401  (TensorFlow's environment before TensorFlow: vizlib.tfsetup)

        tfsetup.use_thread_count(spec.get("omp_num_threads"))
        from vizlib.contract import as_model

        if isinstance(model_bytes, ray.ObjectRef):
            model_bytes = ray.get(model_bytes)
        self._tmp = None
        weights = None if spec.get("weights") == "untrained" else "imagenet"
        if "file" in spec:
            import tempfile

            fd, self._tmp = tempfile.mkstemp(suffix=Path(spec["file"]).suffix)
            with os.fdopen(fd, "wb") as fh:
                fh.write(model_bytes)
            self.model = as_model(self._tmp, weights=weights, preprocess=spec.get("preprocess") or "auto")
        else:
            self.model = as_model(spec["name"], weights=weights)
        digest = self.model.weights_digest()
        if digest != spec["digest"]:
            raise RuntimeError(f"The model loaded on node {ray.get_runtime_context().get_node_id()} has other weights "
                               f"({digest[:12]}) than the driver's ({spec['digest'][:12]}).")
        self.layers = list(layers)
        self.size = tuple(size)
        self.channels = int(channels)
        self.node = ray.get_runtime_context().get_node_id()

    def __call__(self, batch: dict) -> dict:
        from vizlib.atlas.pipeline import batch_stats

        out: dict[str, list] = {k: [] for k in ("shard", "start", "stop", "n", "ids", "digests", "failures",
                                                "decode_node", "stats", "node", "model_seconds", "t_start", "t_end")}
        h, w = self.size
        for i in range(len(batch["shard"])):
            n = int(batch["n"][i])
            pixels = np.frombuffer(batch["pixels"][i], dtype=np.uint8).reshape(n, h, w, self.channels)
            t0, wall0 = time.perf_counter(), time.time()
            stats = batch_stats(self.model, pixels, self.layers) if n else []
            out["model_seconds"].append(time.perf_counter() - t0)
            out["t_start"].append(wall0)
            out["t_end"].append(time.time())
            payload = b"".join(a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
                               for st in stats for a in (st.max, st.argmax, st.mean))
            for key in ("shard", "start", "stop", "n", "ids", "digests", "failures", "decode_node"):
                out[key].append(batch[key][i])
            out["stats"].append(payload)
            out["node"].append(self.node)
        return {k: np.array(v, dtype=object if k in ("ids", "digests", "failures", "decode_node", "stats", "node")
                            else np.float64 if k in ("model_seconds", "t_start", "t_end") else np.int64)
                for k, v in out.items()}


def _unpack(row: dict, channels: Sequence[int]) -> tuple[np.ndarray, list[str], list[tuple[int, str]], list]:
    from vizlib.atlas.pipeline import LayerStats

    n = int(row["n"])
    ids = np.frombuffer(row["ids"], dtype=np.int64)
    buf = memoryview(row["stats"])
    stats, off = [], 0
    for c in channels:
        parts = []
        for dtype in (np.dtype("<f4"), np.dtype("<i4"), np.dtype("<f4")):
            size = n * int(c) * dtype.itemsize
            parts.append(np.frombuffer(buf[off:off + size], dtype=dtype).reshape(n, int(c)))
            off += size
        stats.append(LayerStats(*parts))
    failures = [(int(i), str(r)) for i, r in json.loads(row["failures"])]
    return ids, json.loads(row["digests"]), failures, stats


# --------------------------------------------------------------------------- the engine


def connect(address: Optional[str] = None, init_kwargs: Optional[dict] = None,
            excludes: Sequence[str] = ()) -> tuple[Any, bool]:
    """Ray, initialised for the atlas: a new local instance, or the cluster at ``address``; and
    whether this call started it (then the caller shuts it down).

    A local instance runs on this machine: its workers import this checkout directly. A cluster
    gets the checkout shipped (Ray's working_dir, less ``excludes``), so nothing needs installing
    on its nodes.
    """
    ray = _import_ray()
    if ray.is_initialized():
        return ray, False
    env = runtime_env(list(excludes))
    if not address:
        env.pop("working_dir", None)
        env.pop("excludes", None)
        env["env_vars"]["PYTHONPATH"] = os.pathsep.join(
            [str(_REPO)] + ([read_env("PYTHONPATH")] if read_env("PYTHONPATH") else []))
    kwargs = {"include_dashboard": False, "logging_level": "ERROR", "log_to_driver": False, "runtime_env": env}
    kwargs.update(init_kwargs or {})
    try:
        ray.init(address=address or "local", **kwargs)  # "local": a new instance, never a stray one
    except (ConnectionError, RuntimeError, ValueError) as exc:
        hint = ("" if not address or read_env("RAY_AUTH_MODE") else
                " A cluster started with `ray start` may require token authentication: set RAY_AUTH_MODE=token "
                "(the token is read from ~/.ray/auth_token or RAY_AUTH_TOKEN).")
        raise InputError(f"Could not connect to Ray{' at ' + address if address else ''}: {exc}.{hint}") from exc
    return ray, True


def run_ray(job: Any, spec: Optional[dict], todo: Sequence[int], commit: Callable[[Any], None],
            tick: Callable[[int], None], *, address: Optional[str] = None, workers: Optional[int] = None,
            init_kwargs: Optional[dict] = None) -> dict:
    """Run the shards ``todo`` of ``job`` on Ray; returns what the manifest records about the run."""
    from vizlib.atlas.job import ShardCollector

    if spec is None:
        raise InputError("The Ray engine needs a model it can load by name or from a file.")
    ray, started_here = connect(address, init_kwargs, excludes=[_excluded(job.listing.ref.location)])
    try:
        import logging

        import ray.data

        logging.getLogger("ray.data").setLevel(logging.ERROR)
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.execution_options.preserve_order = False
        if hasattr(ctx, "print_on_execution_start"):
            ctx.print_on_execution_start = False
        nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) >= 1]
        n_actors = max(1, int(workers or len(nodes) or 1))
        cpus = actor_cpus([float(n["Resources"]["CPU"]) for n in nodes], n_actors)
        spec = dict(spec, omp_num_threads=tfsetup.thread_count())
        model_ref = None
        if "file" in spec:
            model_ref = ray.put(Path(spec["file"]).read_bytes())
        rows = [{"shard": s, "start": b.start, "stop": b.stop, "names": json.dumps(job.names(b))}
                for s in todo for b in job.batches(s)]
        ds = ray.data.from_items(rows, override_num_blocks=len(rows))
        ds = ds.map_batches(_decode, batch_size=1, batch_format="numpy", num_cpus=DECODE_CPUS,
                            fn_kwargs={"ref": job.listing.ref, "size": tuple(job.input_size),
                                       "channels": job.channels})
        ds = ds.map_batches(_Infer, batch_size=1, batch_format="numpy", num_cpus=cpus,
                            compute=ray.data.ActorPoolStrategy(size=n_actors),
                            fn_constructor_kwargs={"spec": spec, "model_bytes": model_ref, "layers": list(job.layers),
                                                   "size": tuple(job.input_size), "channels": job.channels})
        collectors: dict[int, ShardCollector] = {}
        t_start = time.perf_counter()
        t_first: Optional[float] = None
        driver_s = 0.0
        model_s = 0.0
        window = [float("inf"), float("-inf")]
        per_node: dict[str, int] = {}
        decoded_per_node: dict[str, int] = {}
        for batch in ds.iter_batches(batch_size=1, batch_format="numpy", prefetch_batches=1):
            t_row = time.perf_counter()
            if t_first is None:
                t_first = t_row
            for i in range(len(batch["shard"])):
                row = {k: batch[k][i] for k in batch}
                shard = int(row["shard"])
                collector = collectors.get(shard)
                if collector is None:
                    collector = collectors[shard] = ShardCollector(job, shard)
                ids, digests, failures, stats = _unpack(row, job.layer_channels)
                collector.add(ids, digests, failures, stats, batch_start=int(row["start"]))
                node = str(row["node"])
                per_node[node] = per_node.get(node, 0) + int(row["stop"]) - int(row["start"])
                model_s += float(row["model_seconds"])
                window[0] = min(window[0], float(row["t_start"]))
                window[1] = max(window[1], float(row["t_end"]))
                dnode = str(row["decode_node"])
                decoded_per_node[dnode] = decoded_per_node.get(dnode, 0) + int(row["stop"]) - int(row["start"])
                if collector.done:
                    commit(collector)
                    del collectors[shard]
                tick(int(row["stop"]) - int(row["start"]))
            driver_s += time.perf_counter() - t_row
        t_end = time.perf_counter()
        if collectors:
            raise RuntimeError(f"Ray returned incomplete shards {sorted(collectors)}.")
        images = sum(len(job.shard_ids(s)) for s in todo)
        busy = window[1] - window[0] if window[1] > window[0] else None
        return {"address": address or "local", "actors": n_actors, "actor_cpus": cpus, "nodes": len(nodes),
                "first_result_seconds": round((t_first or t_end) - t_start, 3), "batches": len(rows),
                "model_window_seconds": round(busy, 3) if busy else None,
                "images_per_second_while_running": round(images / busy, 3) if busy else None,
                "driver_seconds": round(driver_s, 3), "model_seconds": round(model_s, 3),
                "images_per_node": dict(sorted(per_node.items())),
                "decoded_per_node": dict(sorted(decoded_per_node.items()))}
    finally:
        if started_here:
            ray.shutdown()
