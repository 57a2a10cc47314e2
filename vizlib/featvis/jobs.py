"""Renders as background jobs: a page polls their progress instead of waiting for them."""

from __future__ import annotations

import heapq
import threading
import time
from concurrent.futures import Future
from typing import Any, Callable, Optional, Sequence

from vizlib.featvis.cache import DiskCache
from vizlib.featvis.engine import DEFAULT_STEPS
from vizlib.featvis.rendering import Cancelled, FeatureVisualization, render


#: Fairness: a job that has waited this long (seconds) goes before newer jobs whatever their size, and a running
#: job stops yielding to smaller ones once it has been paused this much longer than it has run. Smallest first
#: would otherwise let a steady stream of one-channel clicks (a busy hosted page) hold a grid back for ever.
MAX_WAIT_S = 30.0


class _Scheduler:
    """One worker thread for all renders (on a small server they would only fight over the cores), shortest first.

    Jobs wait in order of their size (optimisation steps in all, then arrival):
    a visitor's one channel does not wait minutes behind a grid of 49. A job
    already running yields to a shorter one that arrives: between two chunks
    of its steps it runs the shorter job to the end, then carries on where it
    was (its optimisation state stays where the model lives). Nothing starves:
    a job that has waited :data:`MAX_WAIT_S` goes next (the oldest such first),
    and a running job gets at least about half the worker (:class:`Job`).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._heap: list = []
        self._seq = 0
        self._thread: Optional[threading.Thread] = None

    def submit(self, size: int, fn: Callable[[], Any]) -> Future:
        future: Future = Future()
        with self._lock:
            self._seq += 1
            heapq.heappush(self._heap, (int(size), self._seq, fn, future, time.monotonic()))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="vizlib-featvis", daemon=True)
                self._thread.start()
            self._wake.notify()
        return future

    def _take(self, below: Optional[int]) -> Optional[tuple]:
        """The next item (lock held): the oldest that waited :data:`MAX_WAIT_S`, else the smallest."""
        limit = time.monotonic() - MAX_WAIT_S
        overdue = [i for i in self._heap if i[4] <= limit and (below is None or i[0] < below)]
        if overdue:
            item = min(overdue, key=lambda i: i[1])
            self._heap.remove(item)
            heapq.heapify(self._heap)
            return item
        if not self._heap or (below is not None and self._heap[0][0] >= below):
            return None
        return heapq.heappop(self._heap)

    def _pop(self, below: Optional[int] = None) -> Optional[tuple]:
        with self._lock:
            while True:
                item = self._take(below)
                if item is None:
                    return None
                if item[3].set_running_or_notify_cancel():  # False: cancelled while it waited
                    return item

    @staticmethod
    def _run(item: tuple) -> None:
        _, _, fn, future, _ = item
        try:
            future.set_result(fn())
        except BaseException as exc:  # noqa: BLE001 - handed to whoever waits on the job
            future.set_exception(exc)

    def waiting_below(self, size: int) -> bool:
        """A job smaller than ``size`` is waiting."""
        with self._lock:
            return bool(self._heap) and self._heap[0][0] < size

    def run_shorter(self, size: int, until: float = float("inf")) -> None:
        """Run waiting jobs smaller than ``size`` now, in this (the worker's) thread; none started after ``until``
        (``time.monotonic()``)."""
        while time.monotonic() < until:
            item = self._pop(below=size)
            if item is None:
                return
            self._run(item)

    def _loop(self) -> None:
        while True:
            with self._lock:
                while not self._heap:
                    self._wake.wait()
            item = self._pop()
            if item is not None:
                self._run(item)


_SCHEDULER = _Scheduler()


class Job:
    """A :func:`render` running in a background thread: poll ``progress``, take ``result()`` when ``done``.

    For a page that must stay responsive while the optimisation runs::

        job = Job(model, "conv2d_7", [0, 1, 2])
        while not job.done:
            show(job.fraction)          # e.g. a progress bar, polled
        vis = job.result()              # FeatureVisualization (or the render's exception)

    Jobs run one at a time in a shared worker thread, the smallest first
    (``state`` is ``"queued"`` until theirs starts; a running job pauses for
    a smaller one that arrives: ``"paused"``; none waits for ever, see
    :data:`MAX_WAIT_S`); ``cancel()`` stops one between chunks
    of steps. With ``abandon_after`` (seconds), a job that nobody has
    ``touch()``-ed for that long stops by itself (``state`` ``"abandoned"``):
    a page whose visitor left does not keep the worker busy.
    """

    def __init__(self, model: Any, layer: str, channels: Sequence[int], *, size: Any = None,
                 steps: Optional[int] = None, seed: int = 0, cache: "bool | DiskCache | None" = True,
                 abandon_after: Optional[float] = None, cell: Any = None, method: str = "default"):
        self.layer = layer
        self.channels = [int(c) for c in channels]
        self.steps_done, self.steps_total = 0, max(1, len(self.channels)) * (steps or DEFAULT_STEPS)
        #: Its place in the queue: optimisation steps in all (the smaller runs first, see :class:`_Scheduler`).
        self.size = self.steps_total
        self.state = "queued"
        self.created = time.monotonic()
        self.started: Optional[float] = None
        self.finished: Optional[float] = None
        self.abandon_after = abandon_after
        self._seen = time.monotonic()
        self._paused = 0.0  # seconds spent paused for smaller jobs
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
            if self.state == "running" and _SCHEDULER.waiting_below(self.size):  # a smaller job arrived: it first,
                # within a budget: paused at most MAX_WAIT_S longer than it has run (at least ~half the worker)
                now = time.monotonic()
                budget = (now - (self.started or now) - self._paused) + MAX_WAIT_S - self._paused
                if budget > 0:
                    self.state = "paused"
                    try:
                        _SCHEDULER.run_shorter(self.size, until=now + budget)
                    finally:
                        self._paused += time.monotonic() - now
                        self.state = "running"
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
                             progress=progress, should_stop=should_stop, cell=cell, preview=on_preview,
                             method=method)
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

        self._future = _SCHEDULER.submit(self.size, work)

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
