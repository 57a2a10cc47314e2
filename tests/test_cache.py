"""vizlib.cache: a cache bounded by bytes (issue #13), under generated workloads and threads."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from vizlib.cache import ENTRY_OVERHEAD, ByteLRU, nbytes_of

MB = 2**20


def arrays(*sizes: int) -> dict[str, np.ndarray]:
    """A forward-pass-like result: {layer: float32 array} of the given byte sizes."""
    return {f"layer{i}": np.zeros(n // 4, np.float32) for i, n in enumerate(sizes)}


# --------------------------------------------------------------------------- sizes


def test_nbytes_of_counts_arrays_inside_tuples_dicts_and_lists():
    acts = arrays(4 * MB, 1 * MB)
    preds = np.zeros((1, 1000), np.float32)
    value = (acts, preds, [np.zeros(10, np.uint8), "label"])
    n = nbytes_of(value)
    assert 5 * MB + 4000 + 10 <= n < 5 * MB + 4000 + 10 + 4096


def test_nbytes_of_counts_a_shared_base_once_and_views_by_their_base():
    base = np.zeros(MB // 4, np.float32)  # 1 MB
    assert MB <= nbytes_of([base[:10], base[10:20], base]) < MB + 1024
    assert nbytes_of(base[:1]) >= MB  # a tiny view keeps the whole array alive


def test_nbytes_of_images_dataclasses_and_bytes():
    @dataclass
    class Result:
        image: Image.Image
        blob: bytes
        arrays: dict

    r = Result(Image.new("RGB", (100, 50)), b"x" * 1000, arrays(MB))
    assert nbytes_of(r) >= 100 * 50 * 4 + 1000 + MB
    assert nbytes_of(Image.new("L", (100, 100))) == 10_000
    assert nbytes_of(Image.new("I;16", (10, 10))) == 200


def test_nbytes_of_survives_cycles_and_deep_nesting():
    a: list = [np.zeros(100, np.uint8)]
    a.append(a)
    assert nbytes_of(a) >= 100
    deep: list = []
    node = deep
    for _ in range(1000):
        node.append([])
        node = node[0]
    assert nbytes_of(deep) > 0


# --------------------------------------------------------------------------- budget


@pytest.mark.parametrize("budget_mb, sizes_mb", [
    (10, [1, 2, 3, 4, 5, 6]),
    (64, [8] * 20),
    (100, [60, 30, 20, 90, 1]),
    (1, [0.1] * 50),
])
def test_bytes_never_exceed_the_budget_and_lru_entries_go_first(budget_mb, sizes_mb):
    cache = ByteLRU(int(budget_mb * MB))
    for i, size in enumerate(sizes_mb):
        cache.put(i, arrays(int(size * MB)))
        assert cache.nbytes <= cache.max_bytes
        assert i in cache  # the newest entry is always kept (each fits alone)
    kept = [i for i in range(len(sizes_mb)) if i in cache]
    assert kept == list(range(kept[0], len(sizes_mb)))  # a suffix: the least recently used went first
    assert cache.stats()["evictions"] == len(sizes_mb) - len(kept)


def test_get_refreshes_recency():
    cache = ByteLRU(3 * MB + 3 * ENTRY_OVERHEAD + 100)
    for k in "abc":
        cache.put(k, None, nbytes=MB)
    assert cache.get("a") is None and "a" in cache  # stored value None, and a hit
    cache.put("d", None, nbytes=MB)
    assert "b" not in cache and {"a", "c", "d"} <= {k for k in "abcd" if k in cache}


def test_value_over_the_entry_limit_is_returned_not_stored():
    cache = ByteLRU(10 * MB, max_entry_bytes=4 * MB)
    cache.put("small", arrays(MB))
    big = cache.get_or_compute("big", lambda: arrays(5 * MB))
    assert big["layer0"].nbytes == 5 * MB
    assert "big" not in cache and "small" in cache
    assert cache.stats()["refused"] == 1
    assert cache.put("huge", None, nbytes=11 * MB) is False


def test_replacing_a_key_updates_the_byte_count():
    cache = ByteLRU(100 * MB)
    cache.put("k", arrays(10 * MB))
    cache.put("k", arrays(2 * MB))
    assert len(cache) == 1 and 2 * MB <= cache.nbytes < 2 * MB + 4096
    assert cache.pop("k") is not None and cache.nbytes == 0 and len(cache) == 0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["put", "get", "pop", "compute"]), st.integers(0, 15),
                          st.integers(0, 3000)), max_size=80),
       st.integers(0, 10_000))
def test_generated_workloads_keep_the_books_exact(ops, budget):
    cache = ByteLRU(budget)
    for op, key, size in ops:
        if op == "put":
            cache.put(key, size, nbytes=size)
        elif op == "get":
            got = cache.get(key)
            assert got is None or got == cache.get(key)
        elif op == "pop":
            cache.pop(key)
        else:
            assert cache.get_or_compute(key, lambda s=size: s, nbytes=size) in (size, cache.get(key))
        stored = {k: cache.get(k) for k in range(16) if k in cache}
        assert cache.nbytes == sum(v + ENTRY_OVERHEAD for v in stored.values())
        assert cache.nbytes <= budget


# --------------------------------------------------------------------------- threads


def test_concurrent_callers_compute_a_key_once():
    cache = ByteLRU(100 * MB)
    started, release = threading.Event(), threading.Event()
    calls: list[int] = []

    def compute():
        calls.append(1)
        started.set()
        release.wait(10)
        return arrays(MB)

    results: list = []
    threads = [threading.Thread(target=lambda: results.append(cache.get_or_compute("view", compute)))
               for _ in range(8)]
    threads[0].start()
    assert started.wait(10)
    for t in threads[1:]:
        t.start()
    release.set()
    for t in threads:
        t.join(10)
    assert len(calls) == 1 and len(results) == 8
    assert all(r is results[0] for r in results)


def test_a_failed_computation_reaches_every_waiter_and_is_not_stored():
    cache = ByteLRU(MB)
    started, release = threading.Event(), threading.Event()

    def compute():
        started.set()
        release.wait(10)
        raise ValueError("bad image")

    errors: list = []

    def call():
        try:
            cache.get_or_compute("k", compute)
        except ValueError as exc:
            errors.append(str(exc))

    threads = [threading.Thread(target=call) for _ in range(4)]
    threads[0].start()
    assert started.wait(10)
    for t in threads[1:]:
        t.start()
    release.set()
    for t in threads:
        t.join(10)
    assert errors == ["bad image"] * 4 and "k" not in cache
    assert cache.get_or_compute("k", lambda: 7) == 7  # a later call computes afresh


def test_many_threads_hammering_one_cache_keep_it_in_budget():
    cache = ByteLRU(8 * MB)
    rng = np.random.default_rng(0)
    plan = rng.integers(0, 40, size=(8, 300))
    failures: list = []

    def worker(keys):
        try:
            for k in keys:
                cache.get_or_compute(int(k), lambda k=k: np.zeros(int(k) * 16_384, np.uint8))
                if cache.nbytes > cache.max_bytes:
                    failures.append(cache.nbytes)
        except Exception as exc:  # pragma: no cover - reported below
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(row,)) for row in plan]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not failures
    stats = cache.stats()
    assert stats["nbytes"] <= 8 * MB and stats["hits"] + stats["misses"] == plan.size


def test_caches_real_model_activations_by_bytes(bundled):
    """The use it was written for: forward-pass results of a real model, many images, one budget."""
    import vizlib

    samples = sorted(vizlib.SAMPLES)[:6]
    layers = [info.name for info in vizlib.spatial_layers(bundled)][:2]
    one = vizlib.forward(bundled, [vizlib.load_sample(samples[0])], layers)
    per_entry = nbytes_of(one)
    assert per_entry >= sum(a.nbytes for a in one[0].values())
    cache = ByteLRU(3 * per_entry + 3 * ENTRY_OVERHEAD)
    for name in samples:
        img = vizlib.load_sample(name)
        cache.get_or_compute(("bundled", name, tuple(layers)), lambda img=img: vizlib.forward(bundled, [img], layers))
    assert len(cache) == 3 and cache.nbytes <= cache.max_bytes
    assert [k[1] for k in list(cache._data)] == samples[-3:]
