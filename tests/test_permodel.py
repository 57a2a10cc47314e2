"""The one per-model store (issue #19): entries die with their model, clear() forgets all, LRU per slot."""

from __future__ import annotations

import gc
import threading

import numpy as np

import vizlib
from vizlib import permodel


class _Model:  # anything weakly referenceable stands for a Keras model
    pass


def test_slots_are_per_model_bounded_and_die_with_the_model():
    slot = permodel.Slot("test.slot")
    a, b = _Model(), _Model()
    built = []

    def build(key):
        built.append(key)
        return f"value-{key}"

    for key in (1, 2, 1, 3, 4):
        assert permodel.cached(a, slot, key, lambda: build(key), max_entries=3) == f"value-{key}"
    assert built == [1, 2, 3, 4]  # the second 1 came from the store
    assert list(slot.get(a)) == [1, 3, 4]  # 2 was the least recently used
    assert slot.get(b) is None
    ref_count = len(permodel._STORE)
    del a
    gc.collect()
    assert len(permodel._STORE) == ref_count - 1


def test_clear_forgets_everything_and_the_library_rebuilds(bundled):
    img = vizlib.load_sample("cat")
    first = vizlib.activations(bundled, [img], ["conv2d_1"])["conv2d_1"]
    assert permodel.Slot("layers.trace").get(bundled.model) is not None
    permodel.clear()
    assert permodel.Slot("layers.trace").get(bundled.model) is None
    again = vizlib.activations(bundled, [img], ["conv2d_1"])["conv2d_1"]
    np.testing.assert_array_equal(first, again)


def test_racing_builds_share_one_value():
    slot = permodel.Slot("test.race")
    model = _Model()
    start = threading.Barrier(4)
    got = []

    def worker(i):
        start.wait()
        got.append(permodel.cached(model, slot, "k", lambda: object()))

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(v) for v in got}) == 1
