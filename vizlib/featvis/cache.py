"""The disk cache of finished visualisations, shared by processes and sessions (and pre-computed by hosts).

Entries are keyed by the weights' digest, the layer, the channel and the
settings (:func:`vizlib.featvis.rendering.cache_key`), so a restart, another
session or ``python -m vizlib.featvis precompute`` fills the same entries the
page reads.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
import time
from pathlib import Path
from typing import Any, Optional

import numpy as np

from vizlib import archives
from vizlib.errors import InputError
from vizlib.featvis.engine import STATS
from vizlib.files import atomic_write_bytes


def cache_dir() -> Path:
    """Where finished visualisations are kept: ``$CNN_VIZ_CACHE_DIR/featvis`` (default ``~/.cache/cnn-viz``)."""
    from vizlib.settings import settings

    return Path(settings().cache_dir) / "featvis"


#: Default bound of the disk cache (``CNN_VIZ_FEATVIS_CACHE_MB`` overrides it).
CACHE_MB = 256


class DiskCache:
    """Finished visualisations on disk, one channel per entry, least recently used evicted first.

    An entry is two ``.npy`` files (the image, and its statistics of every
    channel of the layer) named by the SHA-256 of the key. Files are written to
    a temporary name and renamed, so a reader never sees half a file; reads
    check each header (dtype, shape, bytes) against the file before allocating
    (:func:`vizlib.archives.load_npy`), and a bad entry is deleted and counts
    as a miss (so it is recomputed). A hit touches the files' mtime; after each write the oldest entries go until the folder is under
    ``max_bytes``.
    """

    def __init__(self, folder: Optional[str | Path] = None, max_bytes: Optional[int] = None):
        self.folder = Path(folder) if folder is not None else cache_dir()
        if max_bytes is None:
            from vizlib.settings import featvis_cache_mb

            raw = featvis_cache_mb()
            try:
                max_bytes = int(float(raw) * 2**20) if raw else CACHE_MB * 2**20
            except ValueError:
                max_bytes = CACHE_MB * 2**20
        self.max_bytes = max(0, int(max_bytes))
        self._lock = threading.Lock()

    @staticmethod
    def key(*parts: Any) -> str:
        """A file-name-safe digest of the JSON of ``parts``."""
        text = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def _paths(self, key: str) -> tuple[Path, Path]:
        return self.folder / f"{key}.img.npy", self.folder / f"{key}.stats.npy"

    def get(self, key: str, shape: tuple[int, int, int], layer_channels: int,
            ) -> Optional[tuple[np.ndarray, np.ndarray]]:
        """(image uint8 ``shape``, stats float32 (len(STATS), layer_channels)) or None."""
        img_path, stats_path = self._paths(key)
        if not img_path.exists() and not stats_path.exists():
            return None
        want_stats = (len(STATS), int(layer_channels))
        try:
            # Headers are checked against the expected arrays and the files' lengths before anything is
            # allocated: a corrupted or crafted entry is dropped, never a MemoryError on every visit.
            want_img = tuple(int(d) for d in shape)
            img = archives.load_npy(img_path, dtype=np.uint8, shape=want_img, max_bytes=int(np.prod(want_img)))
            stats = archives.load_npy(stats_path, dtype=np.float32, shape=want_stats,
                                      max_bytes=4 * want_stats[0] * want_stats[1])
        except (InputError, OSError):
            self._drop(key)
            return None
        if not np.all(np.isfinite(stats)):
            self._drop(key)
            return None
        now = time.time()
        for p in (img_path, stats_path):
            try:
                os.utime(p, (now, now))
            except OSError:
                pass
        return img, stats

    def require_writable(self) -> None:
        """For a command whose purpose is filling the cache: raise unless entries can be stored here (the
        page's :meth:`put` is silent about it: for the page the cache is only an optimisation)."""
        if self.max_bytes <= 0:
            raise InputError("The feature-visualisation cache is switched off (CNN_VIZ_FEATVIS_CACHE_MB is 0): "
                             "nothing would be stored.")
        import tempfile

        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.folder):
                pass
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, str(self.folder)) from None

    def put(self, key: str, image: np.ndarray, stats: np.ndarray) -> None:
        """Store one entry (atomically), then trim the folder to ``max_bytes``."""
        if self.max_bytes <= 0:
            return
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            img_path, stats_path = self._paths(key)
            self._write(stats_path, np.ascontiguousarray(stats, dtype=np.float32))
            self._write(img_path, np.ascontiguousarray(image, dtype=np.uint8))
        except OSError:
            return  # a read-only or full disk: the cache is an optimisation, never an error
        self.trim()

    def _write(self, path: Path, arr: np.ndarray) -> None:
        buf = io.BytesIO()
        np.save(buf, arr, allow_pickle=False)
        atomic_write_bytes(path, buf.getvalue())

    def _drop(self, key: str) -> None:
        for p in self._paths(key):
            try:
                p.unlink()
            except OSError:
                pass

    def entries(self) -> list[tuple[str, float, int]]:
        """(key, last use, bytes) of every entry, oldest first."""
        found: dict[str, list[float]] = {}
        try:
            it = list(os.scandir(self.folder))
        except OSError:
            return []
        for e in it:
            name = e.name
            if not name.endswith(".npy") or name.startswith(".tmp-"):
                continue
            key = name.split(".", 1)[0]
            try:
                st = e.stat()
            except OSError:
                continue
            rec = found.setdefault(key, [0.0, 0])
            rec[0] = max(rec[0], st.st_mtime)
            rec[1] += st.st_size
        return sorted(((k, v[0], int(v[1])) for k, v in found.items()), key=lambda t: t[1])

    def size(self) -> int:
        """Bytes held."""
        return sum(b for _, _, b in self.entries())

    def trim(self) -> None:
        """Delete least recently used entries until the folder holds at most ``max_bytes``."""
        with self._lock:
            entries = self.entries()
            total = sum(b for _, _, b in entries)
            for key, _, nbytes in entries:
                if total <= self.max_bytes:
                    break
                self._drop(key)
                total -= nbytes
            cutoff = time.time() - 3600
            try:  # temporary files of writers that died
                for e in os.scandir(self.folder):
                    if e.name.startswith(".tmp-") and e.stat().st_mtime < cutoff:
                        os.unlink(e.path)
            except OSError:
                pass

    def clear(self) -> None:
        for key, _, _ in self.entries():
            self._drop(key)
