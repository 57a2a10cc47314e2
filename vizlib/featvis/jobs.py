"""Renders as background jobs: a page polls their progress instead of waiting for them."""

from __future__ import annotations

import threading
import time
from typing import Any, Optional, Sequence

from vizlib.featvis.cache import DiskCache
from vizlib.featvis.engine import DEFAULT_STEPS
from vizlib.featvis.rendering import Cancelled, FeatureVisualization, render


_EXECUTOR: Any = None
_EXECUTOR_LOCK = threading.Lock()


def _executor() -> Any:
    """One worker thread for all renders: on a small server they would only fight over the cores."""
    global _EXECUTOR
    with _EXECUTOR_LOCK:
        if _EXECUTOR is None:
            from concurrent.futures import ThreadPoolExecutor

            _EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vizlib-featvis")
        return _EXECUTOR


class Job:
    """A :func:`render` running in a background thread: poll ``progress``, take ``result()`` when ``done``.

    For a page that must stay responsive while the optimisation runs::

        job = Job(model, "conv2d_7", [0, 1, 2])
        while not job.done:
            show(job.fraction)          # e.g. a progress bar, polled
        vis = job.result()              # FeatureVisualization (or the render's exception)

    Jobs run one at a time in a shared worker thread (``state`` is
    ``"queued"`` until theirs starts); ``cancel()`` stops one between chunks
    of steps. With ``abandon_after`` (seconds), a job that nobody has
    ``touch()``-ed for that long stops by itself (``state`` ``"abandoned"``):
    a page whose visitor left does not keep the worker busy.
    """

    def __init__(self, model: Any, layer: str, channels: Sequence[int], *, size: Any = None,
                 steps: Optional[int] = None, seed: int = 0, cache: "bool | DiskCache | None" = True,
                 abandon_after: Optional[float] = None, cell: Any = None):
        self.layer = layer
        self.channels = [int(c) for c in channels]
        self.steps_done, self.steps_total = 0, max(1, len(self.channels)) * (steps or DEFAULT_STEPS)
        self.state = "queued"
        self.created = time.monotonic()
        self.started: Optional[float] = None
        self.finished: Optional[float] = None
        self.abandon_after = abandon_after
        self._seen = time.monotonic()
        self._stop = threading.Event()
        #: The images so far (uint8 (K, H, W, C) for ``preview_channels``), refined while the job runs.
        self.preview: Optional[Any] = None
        self.preview_channels: list[int] = []
        self._ended = threading.Event()

        def progress(done: int, total: int) -> None:
            self.steps_done, self.steps_total = int(done), max(1, int(total))

        def on_preview(chans: list[int], images: Any) -> None:
            self.preview, self.preview_channels = images, list(chans)

        def should_stop() -> bool:
            if self._stop.is_set():
                return True
            if self.abandon_after is not None and time.monotonic() - self._seen > self.abandon_after:
                self.state = "abandoned"
                return True
            return False

        def work() -> FeatureVisualization:
            if should_stop():  # cancelled or abandoned while queued
                self.finished = time.monotonic()
                self._ended.set()
                raise Cancelled()
            self.state = "running"
            self.started = time.monotonic()
            try:
                out = render(model, layer, self.channels, size=size, steps=steps, seed=seed, cache=cache,
                             progress=progress, should_stop=should_stop, cell=cell, preview=on_preview)
                self.state = "done"
                return out
            except Cancelled:
                if self.state != "abandoned":
                    self.state = "cancelled"
                raise
            except BaseException:
                self.state = "failed"
                raise
            finally:
                self.finished = time.monotonic()
                self._ended.set()

        self._future = _executor().submit(work)

    @property
    def done(self) -> bool:
        """Finished: a result, an error, or cancelled."""
        return self._ended.is_set()

    def touch(self) -> None:
        """Someone still wants the result (with ``abandon_after``, a job nobody touches stops)."""
        self._seen = time.monotonic()

    def seconds_left(self) -> Optional[float]:
        """A rough estimate from the pace so far (None until a few steps have run)."""
        if self.started is None or self.steps_done < 8 or self.done:
            return None
        rate = (time.monotonic() - self.started) / self.steps_done
        return rate * max(0, self.steps_total - self.steps_done)

    @property
    def fraction(self) -> float:
        """Share of the optimisation steps done, 0..1."""
        return 1.0 if self.state == "done" else min(1.0, self.steps_done / max(1, self.steps_total))

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Block up to ``timeout`` seconds; True when finished."""
        return self._ended.wait(timeout)

    def result(self, timeout: Optional[float] = None) -> FeatureVisualization:
        """The :class:`FeatureVisualization` (waits); re-raises the render's exception."""
        return self._future.result(timeout)

    def error(self) -> Optional[BaseException]:
        """The exception the render raised, once finished (None on success or while running)."""
        if not self.done:
            return None
        return self._future.exception()

    def cancel(self) -> None:
        """Stop at the next chunk of steps (or before starting, if still queued)."""
        self._stop.set()
        if self._future.cancel():
            self.state = "cancelled"
            self.finished = time.monotonic()
            self._ended.set()
