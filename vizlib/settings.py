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
| ``CNN_VIZ_FEATVIS_CACHE_MB``| see featvis.cache | disk for cached feature visualisations                   |
| ``CNN_VIZ_LIVE_STREAMS``   | ``4``            | live camera streams one process runs at once (:mod:`vizlib.live`) |
| ``CNN_VIZ_ICE_SERVERS``    | ``[]`` (none)    | WebRTC ICE servers (STUN/TURN) as JSON, for the live view off localhost/LAN (or ``{"iceServers": [...], "iceTransportPolicy": "relay"}``) |
| ``CNN_VIZ_ALLOW_ONEDNN_GRADIENTS`` | unset    | ``1``: allow gradients although oneDNN is on (at your risk) |
| ``CNN_VIZ_DEBUG``          | unset            | ``1``: command lines show the traceback of an unexpected error |
| ``TF_ENABLE_ONEDNN_OPTS``  | ``0`` (set by vizlib) | TensorFlow's oneDNN kernels (:mod:`vizlib.tfsetup`)   |
| ``OMP_NUM_THREADS``        | unset            | copied from the driver into Ray workers (:mod:`vizlib.tfsetup`) |
| ``PYTHONPATH``, ``RAY_AUTH_MODE`` | unset     | read by the Ray engine to start workers / word a hint      |

Uploaded models' child processes get a filtered copy of the environment (:mod:`vizlib.isolation`).
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


#: The variables :mod:`vizlib.tfsetup` sets for TensorFlow.
ONEDNN_VAR = "TF_ENABLE_ONEDNN_OPTS"
THREADS_VAR = "OMP_NUM_THREADS"
#: TensorFlow's C++ log threshold (2: warnings and errors only); the command lines set it unless the user did.
TF_LOG_VAR = "TF_CPP_MIN_LOG_LEVEL"


def env(name: str) -> Optional[str]:
    """The raw value of one of the variables in the table above (None if unset): one place that reads them."""
    return os.environ.get(name)


def environment_subset(names: frozenset[str], prefixes: tuple[str, ...]) -> dict[str, str]:
    """The variables of this process named in ``names`` or starting with ``prefixes`` (what a child inherits)."""
    return {k: v for k, v in os.environ.items() if k in names or k.startswith(prefixes)}


def onednn_requested() -> bool:
    """Whether the environment asks TensorFlow for oneDNN kernels (TensorFlow's own default is on)."""
    return (env(ONEDNN_VAR) or "") not in ("0", "false", "False")


def allow_onednn_gradients() -> bool:
    """``CNN_VIZ_ALLOW_ONEDNN_GRADIENTS=1``: run gradients even with oneDNN on."""
    return env("CNN_VIZ_ALLOW_ONEDNN_GRADIENTS") == "1"


def debug() -> bool:
    """``CNN_VIZ_DEBUG=1``: command lines re-raise an unexpected error (traceback) instead of one line."""
    return env("CNN_VIZ_DEBUG") == "1"


def omp_num_threads() -> Optional[str]:
    """``OMP_NUM_THREADS`` of this process, or None."""
    return env(THREADS_VAR)


def featvis_cache_mb() -> str:
    """``CNN_VIZ_FEATVIS_CACHE_MB`` as given ("" if unset; :mod:`vizlib.featvis.cache` parses it)."""
    return (env("CNN_VIZ_FEATVIS_CACHE_MB") or "").strip()


def live_streams() -> int:
    """``CNN_VIZ_LIVE_STREAMS``: live camera streams one process runs at once (0 switches the live view off)."""
    return int(_number("CNN_VIZ_LIVE_STREAMS", 4.0, 0.0, 1000.0))


def ice_servers() -> list[dict]:
    """``CNN_VIZ_ICE_SERVERS``: a JSON list of WebRTC ICE servers (``{"urls": ..., "username": ..., "credential": ...}``).

    Default none: on localhost or a LAN the browser and the server reach each other
    directly, and no STUN lookup leaves the machine. Invalid JSON -> none, with a warning.
    """
    import json

    raw = (env("CNN_VIZ_ICE_SERVERS") or "").strip()
    if not raw:
        return []
    try:
        value = json.loads(raw)
    except ValueError:
        log.warning("CNN_VIZ_ICE_SERVERS is not JSON; using no ICE servers")
        return []
    if isinstance(value, dict):  # one server, or a whole configuration (see rtc_configuration)
        value = value.get("iceServers", [value]) if "urls" not in value else [value]
    if not isinstance(value, list) or not all(isinstance(v, dict) and "urls" in v for v in value):
        log.warning("CNN_VIZ_ICE_SERVERS must be a list of {\"urls\": ...} objects; using no ICE servers")
        return []
    return value


def rtc_configuration() -> dict:
    """The live view's WebRTC configuration: ``{"iceServers": ice_servers()}``, plus ``"iceTransportPolicy":
    "relay"`` when ``CNN_VIZ_ICE_SERVERS`` is an object asking for it (``{"iceServers": [...],
    "iceTransportPolicy": "relay"}``: media only through the TURN servers, e.g. where direct UDP is blocked)."""
    import json

    config: dict = {"iceServers": ice_servers()}
    try:
        value = json.loads((env("CNN_VIZ_ICE_SERVERS") or "").strip() or "null")
    except ValueError:
        return config
    if isinstance(value, dict) and value.get("iceTransportPolicy") == "relay" and config["iceServers"]:
        config["iceTransportPolicy"] = "relay"
    return config


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
