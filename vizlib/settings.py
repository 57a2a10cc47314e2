"""Every environment variable the app and vizlib read, in one place.

Read on each call (cheap), so a test or a host can change them; a value that
does not parse falls back to its default with a warning in the server log,
never an exception at import.

| variable                   | default          | meaning                                                    |
|----------------------------|------------------|------------------------------------------------------------|
| ``CNN_VIZ_MODEL_UPLOAD``   | ``on``           | ``off``: no "Your own model" on the page                   |
| ``CNN_VIZ_MODEL_MEMORY_GB``| ``3``            | memory an uploaded model's process may use                 |
| ``CNN_VIZ_OFFLINE``        | unset            | ``1``: never download ImageNet weights                     |
| ``KERAS_HOME``             | ``~/.keras``     | where ImageNet weights are cached (``models/`` below it)    |
| ``CNN_VIZ_CACHE_DIR``      | ``~/.cache/cnn-viz`` | on-disk caches (feature visualisations)                |
| ``CNN_VIZ_ATLAS_ROOT``     | unset            | folder under which the page may open dataset atlases       |
| ``CNN_VIZ_RESULTS_CACHE_MB``| ``1024``        | memory for cached activations, shared by all sessions      |
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

log = logging.getLogger("vizlib")

_FALSE = ("0", "off", "false", "no")
_TRUE = ("1", "on", "true", "yes")


def _flag(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    log.warning("%s=%r is not on/off; using %s", name, raw, "on" if default else "off")
    return default


def _number(name: str, default: float, low: float, high: float) -> float:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        value = float(raw)
    except ValueError:
        log.warning("%s=%r is not a number; using %g", name, raw, default)
        return default
    if not low <= value <= high:
        log.warning("%s=%r is outside %g..%g; using %g", name, raw, low, high, default)
        return default
    return value


def _home_dir() -> Path:
    base = Path(os.path.expanduser("~"))
    return base if os.access(base, os.W_OK) else Path("/tmp")


@dataclass(frozen=True)
class Settings:
    model_upload: bool
    model_memory_bytes: int
    offline: bool
    keras_home: Path
    cache_dir: Path
    atlas_root: Optional[Path]
    results_cache_bytes: int


def settings() -> Settings:
    """The settings now in force."""
    keras_home = os.environ.get("KERAS_HOME", "").strip()
    cache = os.environ.get("CNN_VIZ_CACHE_DIR", "").strip()
    atlas = os.environ.get("CNN_VIZ_ATLAS_ROOT", "").strip()
    return Settings(
        model_upload=_flag("CNN_VIZ_MODEL_UPLOAD", True),
        model_memory_bytes=int(_number("CNN_VIZ_MODEL_MEMORY_GB", 3.0, 0.5, 1024.0) * 2**30),
        offline=_flag("CNN_VIZ_OFFLINE", False),
        keras_home=Path(keras_home) if keras_home else _home_dir() / ".keras",
        cache_dir=Path(cache) if cache else _home_dir() / ".cache" / "cnn-viz",
        atlas_root=Path(atlas).resolve() if atlas else None,
        results_cache_bytes=int(_number("CNN_VIZ_RESULTS_CACHE_MB", 1024.0, 64.0, 1024.0 * 1024) * 2**20),
    )
