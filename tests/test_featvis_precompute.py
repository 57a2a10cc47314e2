"""The hosts' command (issue 20): ``python -m vizlib.featvis precompute`` fills the disk cache the page reads.

Run for real, as a host would, in child processes (the optimisation takes input gradients, which must never
run in the pytest process): the local engine and the Ray engine (a local Ray instance, two tasks) on the
bundled model, a few channels and steps. Both must give the same entries, and the page's render must then
serve every channel from the cache without optimising anything.

Ray is optional for the app, required here in CI (``CI`` set): without it the Ray test fails there and
skips elsewhere.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from optional import require_ray

import vizlib
from vizlib import featvis

ROOT = Path(__file__).resolve().parent.parent
LAYER, CHANNELS, STEPS = "conv2d_7", [0, 1, 2, 5], 12
CMD = [sys.executable, "-m", "vizlib.featvis", "precompute", "--model", "emotion_cnn", "--layers", LAYER,
       "--channels", "0-2,5", "--steps", str(STEPS), "--quiet"]


def _env(cache: Path) -> dict:
    env = {**os.environ, "CNN_VIZ_CACHE_DIR": str(cache), "TF_CPP_MIN_LOG_LEVEL": "2",
           "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("TF_ENABLE_ONEDNN_OPTS", None)  # `import vizlib` turns oneDNN off in the child
    return env


def _run(cache: Path, *extra: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([*CMD, *extra], capture_output=True, text=True, timeout=timeout, cwd=str(ROOT),
                          env=_env(cache))


@pytest.fixture(scope="module")
def local_cache(tmp_path_factory):
    cache = tmp_path_factory.mktemp("fv-local")
    proc = _run(cache)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"{LAYER}: 4 channels (0 already cached)" in proc.stdout and "(local)" in proc.stdout
    return cache


def _entries(cache: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((cache / "featvis").glob("*.npy"))}


def _served(cache: Path, monkeypatch) -> featvis.FeatureVisualization:
    """The page's render with the page's settings, counting optimisations (there must be none)."""
    calls = []
    original = vizlib.ops._OPS["featvis.optimise"]

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setitem(vizlib.ops._OPS, "featvis.optimise", counting)
    monkeypatch.setenv("CNN_VIZ_CACHE_DIR", str(cache))
    vis = featvis.render(vizlib.load_model("emotion_cnn"), LAYER, CHANNELS, steps=STEPS)
    assert calls == []  # nothing optimised: all from disk
    return vis


def test_local_engine_fills_the_cache_and_runs_again_from_it(local_cache, monkeypatch):
    assert len(_entries(local_cache)) == 2 * len(CHANNELS)  # image + statistics per channel
    again = _run(local_cache)
    assert f"{LAYER}: 4 channels (4 already cached)" in again.stdout  # what the page would get: from disk
    vis = _served(local_cache, monkeypatch)
    assert vis.cached == [True] * 4 and vis.images.shape == (4, 64, 64, 1)
    assert vis.rank("fired") == [1, 1, 1, 1]


def test_bad_input_is_one_line_without_traceback(tmp_path):
    bad = subprocess.run([*CMD[:6], "--layers", "no_such_layer"], capture_output=True, text=True, timeout=300,
                         cwd=str(ROOT), env=_env(tmp_path))
    errors = [line for line in bad.stderr.splitlines() if line.startswith("error: ")]
    assert bad.returncode == 2 and len(errors) == 1 and "no layer named" in errors[0]
    assert "Traceback" not in bad.stderr


def test_a_cache_it_cannot_fill_is_an_error_not_a_silent_success(tmp_path):
    """The page's cache is only an optimisation (a write that fails is skipped), but filling it is this
    command's point: an unwritable folder, or the cache switched off, is exit 2 and one line."""
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    r = _run(blocker / "cache", timeout=300)
    assert r.returncode == 2 and "error: cannot use" in r.stderr and "a_file" in r.stderr, r.stderr
    off = subprocess.run(CMD, capture_output=True, text=True, timeout=300, cwd=str(ROOT),
                         env={**_env(tmp_path / "c"), "CNN_VIZ_FEATVIS_CACHE_MB": "0"})
    assert off.returncode == 2 and "switched off" in off.stderr, off.stderr
    assert "Traceback" not in r.stderr + off.stderr


def test_ray_engine_fills_the_same_cache_the_page_serves(local_cache, tmp_path, monkeypatch):
    require_ray()
    cache = tmp_path / "ray"
    proc = _run(cache, "--engine", "ray", "--workers", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"{LAYER}: 4 channels (0 already cached)" in proc.stdout and "(ray)" in proc.stdout
    # The same entries, byte for byte, as the local engine's (same chunk, same seed, same thread count).
    assert _entries(cache) == _entries(local_cache)
    vis = _served(cache, monkeypatch)
    assert vis.cached == [True] * 4
    assert np.all(vis.own("fired") > 0) and vis.rank("fired") == [1, 1, 1, 1]
