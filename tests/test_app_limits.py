"""Issue #13 on the page: the activation cache is bounded in bytes, whatever the model and images."""

from __future__ import annotations

import dataclasses

from test_app import assert_clean, make_app


def test_results_cache_holds_to_its_byte_budget(offline, monkeypatch):
    from ui import caches
    from vizlib import settings as settings_mod

    budget = 1_000_000  # several forward passes of the bundled model's first layer (62x62x8 floats: ~123 KB each)
    real = settings_mod.settings
    monkeypatch.setattr(caches, "settings", lambda: dataclasses.replace(real(), results_cache_bytes=budget))
    caches.results_cache.clear()
    try:
        at = make_app(view="explore", layer="conv2d_1").run()
        assert_clean(at)
        cache = caches.results_cache()
        assert cache.max_bytes == budget
        for name in ["cat", "coffee", "horse", "brick", "grass", "gravel", "hubble", "rocket", "coins", "camera"]:
            at.selectbox(key="image").set_value(name).run()
            assert_clean(at)
            assert cache.nbytes <= budget
        stats = cache.stats()
        assert stats["evictions"] >= 2 and 2 <= stats["entries"] <= 8, stats
        at.selectbox(key="image").set_value("coins").run()  # still cached: served from memory
        assert cache.stats()["hits"] > stats["hits"]
    finally:
        caches.results_cache.clear()


def test_settings_parse_the_budget_and_survive_garbage(monkeypatch):
    from vizlib.settings import settings

    monkeypatch.setenv("CNN_VIZ_RESULTS_CACHE_MB", "256")
    assert settings().results_cache_bytes == 256 * 2**20
    for bad in ("lots", "-5", "1e30", ""):
        monkeypatch.setenv("CNN_VIZ_RESULTS_CACHE_MB", bad)
        assert settings().results_cache_bytes == 1024 * 2**20
    monkeypatch.setenv("CNN_VIZ_MODEL_MEMORY_GB", "abc")
    assert settings().model_memory_bytes == 3 * 2**30
    monkeypatch.setenv("CNN_VIZ_MODEL_UPLOAD", "maybe")
    assert settings().model_upload is True
    monkeypatch.setenv("CNN_VIZ_MODEL_UPLOAD", "OFF")
    assert settings().model_upload is False
